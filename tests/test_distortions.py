"""Distortions against NumPy references: saturation formula, patch shuffling tile by tile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmi import distortions as D


def _saturate_ref(v, p):
    v = np.asarray(v, np.float64)
    u = 2 * v - 1
    return np.clip(0.5 + 0.5 * np.sign(u) * np.abs(u) ** (2.0 / p), 0, 1)


@pytest.mark.parametrize("p", [2, 8, 16, 64, 1024, 0.5])
def test_saturation_matches_the_formula(p):
    x = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
    x[0, 0, 0] = [0.0, 0.5, 1.0]  # the fixed points of every level
    out = np.asarray(D.saturate(x, p))
    np.testing.assert_allclose(out, _saturate_ref(x, p), atol=2e-6)
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 0.5, 1.0], atol=1e-6)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_saturation_p2_is_identity_and_large_p_is_almost_binary():
    x = np.random.default_rng(1).uniform(0, 1, (64,)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(D.saturate(x, 2)), x, atol=1e-6)
    hard = np.asarray(D.saturate(x, 1024))
    far = np.abs(x - 0.5) > 0.05  # away from the midpoint the level-1024 map is within 1% of 0 or 1
    assert np.all(np.minimum(hard[far], 1 - hard[far]) < 0.01)
    # monotone in v, and further from 0.5 as p grows
    s8, s64 = np.asarray(D.saturate(x, 8)), np.asarray(D.saturate(x, 64))
    assert np.all(np.abs(s64 - 0.5) >= np.abs(s8 - 0.5) - 1e-6)
    order = np.argsort(x)
    assert np.all(np.diff(s8[order]) >= -1e-7)


def test_saturation_is_jit_and_vmap_friendly():
    x = jnp.asarray(np.random.default_rng(2).uniform(0, 1, (4, 6, 6, 1)), jnp.float32)
    ps = jnp.asarray([2.0, 8.0, 64.0])
    out = jax.jit(jax.vmap(D.saturate, in_axes=(None, 0)))(x, ps)
    for i, p in enumerate([2, 8, 64]):
        np.testing.assert_allclose(np.asarray(out[i]), _saturate_ref(np.asarray(x), p), atol=2e-6)


@pytest.mark.parametrize("p", [0, -1, float("nan"), float("inf")])
def test_saturation_rejects_non_positive_levels(p):
    with pytest.raises(ValueError, match="saturation level p must be"):
        D.saturate(jnp.zeros((2, 2)), p)


def _shuffle_ref(img, k, perm):
    """Explicit tile loop: output tile t (row-major) is input tile perm[t]."""
    h, w, _ = img.shape
    th, tw = h // k, w // k
    tiles = [img[r * th:(r + 1) * th, c * tw:(c + 1) * tw] for r in range(k) for c in range(k)]
    out = np.empty_like(img)
    for t in range(k * k):
        r, c = divmod(t, k)
        out[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tiles[perm[t]]
    return out


@pytest.mark.parametrize("k", [2, 4, 8])
def test_patch_shuffle_matches_a_tile_loop(k):
    x = np.random.default_rng(3).uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
    key = jax.random.key(7)
    out = np.asarray(D.patch_shuffle(key, x, k))
    keys = jax.random.split(key, 3)
    for b in range(3):
        perm = np.asarray(jax.random.permutation(keys[b], k * k))
        assert sorted(perm.tolist()) == list(range(k * k))
        np.testing.assert_array_equal(out[b], _shuffle_ref(x[b], k, perm))
    # a permutation of tiles keeps the multiset of pixel values of every image
    np.testing.assert_allclose(np.sort(out.reshape(3, -1), 1), np.sort(x.reshape(3, -1), 1))
    # different images get different permutations, and the result depends on the key only
    np.testing.assert_array_equal(out, np.asarray(jax.jit(D.patch_shuffle, static_argnums=2)(key, x, k)))
    assert not np.array_equal(out, np.asarray(D.patch_shuffle(jax.random.key(8), x, k)))


def test_patch_shuffle_single_image_and_identity_levels():
    x = np.random.default_rng(4).uniform(0, 1, (28, 28, 1)).astype(np.float32)
    key = jax.random.key(0)
    perm = np.asarray(jax.random.permutation(key, 49))
    np.testing.assert_array_equal(np.asarray(D.patch_shuffle(key, x, 7)), _shuffle_ref(x, 7, perm))
    for k in (0, 1):
        np.testing.assert_array_equal(np.asarray(D.patch_shuffle(key, x, k)), x)
    np.testing.assert_array_equal(np.asarray(D.distort(x, "shuffle", 0)), x)


@pytest.mark.parametrize("k,msg", [(8, "does not divide the 28×28 image"), (3, "does not divide"),
                                   (-1, "non-negative integer"), (2.5, "non-negative integer")])
def test_patch_shuffle_rejects_bad_levels(k, msg):
    with pytest.raises(ValueError, match=msg):
        D.patch_shuffle(jax.random.key(0), jnp.zeros((28, 28, 1)), k)


def test_distort_dispatch_and_default_levels():
    x = jnp.asarray(np.random.default_rng(5).uniform(0, 1, (2, 8, 8, 1)), jnp.float32)
    np.testing.assert_allclose(np.asarray(D.distort(x, "saturation", 16)), _saturate_ref(np.asarray(x), 16), atol=2e-6)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        D.distort(x, "shuffle", 2)
    with pytest.raises(ValueError, match="unknown distortion"):
        D.distort(x, "blur", 2)
    assert D.default_shuffle_levels(32, 32) == (0, 2, 4, 8)
    assert D.default_shuffle_levels(96, 96) == (0, 2, 4, 8)
    assert D.default_shuffle_levels(28, 28) == (0, 2, 4, 7)
    assert D.is_identity("saturation", 2) and D.is_identity("shuffle", 0) and not D.is_identity("shuffle", 2)
