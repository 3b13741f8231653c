"""Attribution maps: saliency vs finite differences, IG completeness, SmoothGrad vs an explicit mean."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
import pytest

from jaxmi import attribution as A
from jaxmi.models import apply_model, create_model, init_variables


def _smooth_model(seed=0, shape=(6, 6, 2), k=4):
    """A small smooth (tanh) network, so finite differences and the IG integral are accurate."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    w1 = jnp.asarray(rng.normal(0, 1 / np.sqrt(d), (d, 16)), jnp.float32)
    w2 = jnp.asarray(rng.normal(0, 0.5, (16, k)), jnp.float32)

    def f(x):
        return jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2

    return f


def _x(seed=1, b=3, shape=(6, 6, 2)):
    return np.random.default_rng(seed).uniform(0, 1, (b, *shape)).astype(np.float32)


def test_saliency_matches_central_finite_differences():
    f = _smooth_model()
    x = _x()
    y = np.array([0, 2, 3])
    g = np.asarray(A.saliency(f, x, y))
    assert g.shape == x.shape
    f64 = lambda z: np.asarray(jax.jit(f)(jnp.asarray(z, jnp.float32)), np.float64)  # noqa: E731
    rng = np.random.default_rng(2)
    h = 1e-2
    for b in range(3):
        for _ in range(6):
            idx = tuple(rng.integers(0, s) for s in x.shape[1:])
            xp, xm = x.copy(), x.copy()
            xp[(b, *idx)] += h
            xm[(b, *idx)] -= h
            fd = (f64(xp)[b, y[b]] - f64(xm)[b, y[b]]) / (2 * h)
            assert abs(fd - g[(b, *idx)]) < 2e-3 + 1e-2 * abs(fd)


def test_integrated_gradients_completeness_and_baseline():
    f = _smooth_model(3)
    x = _x(4)
    y = np.array([1, 0, 2])
    ig = np.asarray(A.integrated_gradients(f, x, y, steps=50))
    logits_x = np.asarray(f(jnp.asarray(x)))[np.arange(3), y]
    logits_0 = np.asarray(f(jnp.zeros_like(jnp.asarray(x))))[np.arange(3), y]
    np.testing.assert_allclose(ig.reshape(3, -1).sum(1), logits_x - logits_0, atol=1e-3, rtol=1e-3)
    # a grey baseline: completeness relative to it
    base = np.full_like(x, 0.5)
    ig2 = np.asarray(A.integrated_gradients(f, x, y, steps=50, baseline=base))
    np.testing.assert_allclose(ig2.reshape(3, -1).sum(1), logits_x - np.asarray(f(jnp.asarray(base)))[np.arange(3), y],
                               atol=1e-3, rtol=1e-3)
    # on a linear model IG is exactly (x - baseline) * weight, for any step count
    w = jnp.asarray(np.random.default_rng(5).normal(size=(72, 4)), jnp.float32)
    lin = lambda z: z.reshape(z.shape[0], -1) @ w  # noqa: E731
    ig_lin = np.asarray(A.integrated_gradients(lin, x, y, steps=3))
    np.testing.assert_allclose(ig_lin, x * np.asarray(w)[:, y].T.reshape(x.shape), rtol=1e-5, atol=1e-6)


def test_integrated_gradients_on_lenet_relu_is_nearly_complete():
    module = create_model("lenet")
    v = init_variables(module, jax.random.key(0), (28, 28, 1))
    f = lambda z: apply_model(module, v["params"], v["batch_stats"], z)[0]  # noqa: E731
    x = _x(6, b=2, shape=(28, 28, 1))
    y = np.array([3, 7])
    ig = np.asarray(A.integrated_gradients(f, x, y, steps=50))
    lx = np.asarray(f(jnp.asarray(x)))[np.arange(2), y]
    l0 = np.asarray(f(jnp.zeros((2, 28, 28, 1))))[np.arange(2), y]
    # piecewise-linear network: the trapezoid rule is approximate; 5% of the logit change
    assert np.all(np.abs(ig.reshape(2, -1).sum(1) - (lx - l0)) <= 0.05 * np.abs(lx - l0) + 1e-3)


def test_smoothgrad_is_the_mean_gradient_over_the_documented_noise():
    f = _smooth_model(7)
    x = _x(8, b=2)
    y = np.array([0, 1])
    key = jax.random.key(11)
    sg = np.asarray(A.smoothgrad(f, x, y, key, samples=7, noise_std=0.2, chunk=3))
    noise = np.asarray(A.smoothgrad_noise(key, x.shape, 7, 0.2))
    ref = np.mean([np.asarray(A.saliency(f, x + noise[s], y)) for s in range(7)], axis=0)
    np.testing.assert_allclose(sg, ref, rtol=1e-4, atol=1e-6)
    # zero noise is plain saliency
    np.testing.assert_allclose(np.asarray(A.smoothgrad(f, x, y, key, samples=2, noise_std=0.0)),
                               np.asarray(A.saliency(f, x, y)), rtol=1e-5, atol=1e-7)
    # noise std is honoured (empirical std of the draw)
    assert abs(float(np.asarray(A.smoothgrad_noise(key, (4000,), 5, 0.2)).std()) - 0.2) < 0.01


def test_heatmap_normalisation_and_validation():
    a = np.random.default_rng(9).normal(size=(2, 5, 5, 3)).astype(np.float32)
    a[1] = 0.0
    h = np.asarray(A.to_heatmap(a))
    ref = np.abs(a[0]).max(-1)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    np.testing.assert_allclose(h[0], ref, atol=1e-6)
    np.testing.assert_array_equal(h[1], 0.0)
    with pytest.raises(ValueError, match="samples must be"):
        A.smoothgrad(lambda z: z, np.zeros((1, 2, 2, 1)), np.zeros(1, int), jax.random.key(0), samples=0)
    with pytest.raises(ValueError, match="steps must be"):
        A.integrated_gradients(lambda z: z, np.zeros((1, 2, 2, 1)), np.zeros(1, int), steps=0)
    with pytest.raises(ValueError, match="unknown attribution"):
        A.attribute("gradcam", lambda z: z, np.zeros((1, 2, 2, 1)), np.zeros(1, int))


def test_edge_map_against_scipy_sobel():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 1, (2, 9, 7, 3))
    g = img.mean(-1)
    ref = np.stack([np.hypot(ndimage.sobel(gi, axis=0, mode="nearest"), ndimage.sobel(gi, axis=1, mode="nearest"))
                    for gi in g])  # per image (ndimage would also smooth across the batch axis)
    np.testing.assert_allclose(A.edge_map(img), ref, atol=1e-12)
