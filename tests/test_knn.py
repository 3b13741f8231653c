"""The KSG estimator (jaxmi.estimators.knn): exact counts against a float64 brute force, the
closed form for correlated Gaussians, the bmi package's KSG, invariances, bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from jaxmi.estimators import knn, ksg_mi
from jaxmi.estimators.knn import ksg_counts


def _standardize(a):
    a = np.asarray(a, np.float64)
    a = a.reshape(len(a), -1)
    return (a - a.mean(0)) / a.std(0)


def brute_force(x, y, k, metric, standardize=True):
    """float64 KSG estimator 1 with the full N × N distance matrices: (n_x, n_y, MI in nats)."""
    x = _standardize(x) if standardize else np.asarray(x, np.float64).reshape(len(x), -1)
    y = _standardize(y) if standardize else np.asarray(y, np.float64).reshape(len(y), -1)
    n = len(x)

    def dist(a):
        diff = a[:, None, :] - a[None, :, :]
        return np.sqrt((diff ** 2).sum(-1)) if metric == "euclidean" else np.abs(diff).max(-1)

    dx, dy = dist(x), dist(y)
    joint = np.maximum(dx, dy)
    np.fill_diagonal(joint, np.inf)
    eps = np.sort(joint, axis=1)[:, k - 1]  # k-th smallest distance to another point
    off = ~np.eye(n, dtype=bool)
    nx = ((dx < eps[:, None]) & off).sum(1)
    ny = ((dy < eps[:, None]) & off).sum(1)
    from scipy.special import digamma
    mi = digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1))
    return nx, ny, mi


def _gaussian_pairs(n, dim, rho, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    y = rho * x + math.sqrt(1 - rho ** 2) * rng.normal(size=(n, dim))
    return x, y


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_counts_equal_float64_brute_force(metric, k):
    pytest.importorskip("scipy")
    x, y = _gaussian_pairs(300, 3, 0.7, seed=k)
    y = np.concatenate([y, np.exp(x[:, :1])], axis=1)  # widths 3 and 4, a skewed column
    nx, ny, nats = brute_force(x, y, k, metric)
    c = ksg_counts(x, y, k, metric)
    np.testing.assert_array_equal(c.n_x, nx)
    np.testing.assert_array_equal(c.n_y, ny)
    assert ksg_mi(x, y, k, metric) == pytest.approx(nats / math.log(2), abs=1e-12)


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
@pytest.mark.parametrize("kind", ["cauchy", "wide", "offset"])
def test_counts_exact_where_float32_is_hard(metric, kind):
    """Heavy tails (a tiny standardised core against huge tails), 40 + 40 dimensions (large
    Gram rounding), and unstandardised data far from the origin: still the float64 counts."""
    pytest.importorskip("scipy")
    rng = np.random.default_rng(11)
    if kind == "cauchy":
        x = rng.standard_cauchy(size=(300, 2))
        y = x + rng.standard_cauchy(size=(300, 2))
    elif kind == "wide":
        x, y = _gaussian_pairs(300, 40, 0.8, seed=11)
    else:
        x, y = _gaussian_pairs(300, 3, 0.8, seed=11)
        x, y = x + 1e4, y * 1e-3 - 7.0
    standardize = kind != "offset"
    for k in (1, 3):
        nx, ny, _ = brute_force(x, y, k, metric, standardize=standardize)
        c = ksg_counts(x, y, k, metric, standardize=standardize)
        np.testing.assert_array_equal(c.n_x, nx)
        np.testing.assert_array_equal(c.n_y, ny)


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
def test_counts_with_ties_and_duplicates(metric):
    """Integer data with mean exactly 0 (every value and its negative): all distances are exact
    in float32 and float64, so ties at ε are real; duplicated points sit at distance 0."""
    pytest.importorskip("scipy")
    rng = np.random.default_rng(5)
    half = rng.integers(-4, 5, size=(140, 2))
    x = np.concatenate([half, -half, half[:10], -half[:10]]).astype(np.float64)  # 20 exact duplicates
    y = np.concatenate([x[:, :1] + rng.integers(-1, 2, size=(len(x), 1)), rng.integers(-3, 4, size=(len(x), 1))],
                       axis=1)
    y = np.concatenate([y[: len(y) // 2], -y[: len(y) // 2]])
    assert np.all(x.mean(0) == 0) and np.all(y.mean(0) == 0)
    for k in (1, 4):
        nx, ny, _ = brute_force(x, y, k, metric, standardize=False)
        c = ksg_counts(x, y, k, metric, standardize=False)
        np.testing.assert_array_equal(c.n_x, nx)
        np.testing.assert_array_equal(c.n_y, ny)
        assert c.recounted > 0  # ties are decided in float64


def test_selections_block_sizes_and_direct_agree():
    """top_k, the threshold passes and the chunked selection give the same float32 counts, for
    any block size (padded last block), from Gram or direct distances; the counts of rows
    whose band is 1 are exact."""
    import jax.numpy as jnp

    x, y = _gaussian_pairs(203, 2, 0.5, seed=1)
    xs = jnp.asarray(knn.standardized(x, True), jnp.float32)
    ys = jnp.asarray(knn.standardized(y, True), jnp.float32)
    nx, ny, _ = brute_force(x, y, 3, "euclidean")
    for selection in ("top_k", "threshold", "chunked"):
        for block in (7, 203):
            for direct in (False, True):
                rows = np.minimum(np.arange(-(-203 // block) * block), 202).astype(np.int32)
                out = [np.asarray(a)[:203] for a in knn.device_counts(
                    xs, ys, jnp.asarray(rows), k=3, metric="euclidean", block_size=block, selection=selection,
                    direct=direct)]
                sure = out[2] == 1
                assert sure.mean() > 0.9
                np.testing.assert_array_equal(out[0][sure], nx[sure])
                np.testing.assert_array_equal(out[1][sure], ny[sure])
    a, b = ksg_counts(x, y, 3, block_size=7), ksg_counts(x, y, 3)
    np.testing.assert_array_equal(a.n_x, b.n_x)
    np.testing.assert_array_equal(a.n_y, b.n_y)


_DEVICES_SCRIPT = r'''
import jax
import numpy as np
from jaxmi.estimators.knn import ksg_counts, ksg_mi, padded_rows

assert len(jax.devices()) == 3, jax.devices()
rng = np.random.default_rng(3)
cases = {"gauss": (rng.normal(size=(997, 3)), None), "cauchy": (rng.standard_cauchy(size=(400, 2)), None),
         "ties": (rng.integers(-3, 4, size=(300, 2)).astype(float), None)}
for name, (x, _) in cases.items():
    y = x[:, :1] + rng.integers(-1, 2, size=(len(x), 1)) if name == "ties" else x + rng.normal(size=x.shape)
    xs, ys = [(a - a.mean(0)) / a.std(0) for a in (x, y)]
    dx, dy = [((a[:, None, :] - a[None, :, :]) ** 2).sum(-1) for a in (xs, ys)]
    joint = np.maximum(dx, dy)
    np.fill_diagonal(joint, np.inf)
    eps = np.sort(joint, axis=1)[:, 2]
    off = ~np.eye(len(x), dtype=bool)
    ref = [((d < eps[:, None]) & off).sum(1) for d in (dx, dy)]
    outs = [ksg_counts(x, y, 3, devices=jax.devices()[:m], block_size=64) for m in (1, 2, 3)]
    for c in outs:
        np.testing.assert_array_equal(c.n_x, ref[0])
        np.testing.assert_array_equal(c.n_y, ref[1])
        assert (c.direct, c.recounted) == (outs[0].direct, outs[0].recounted)
    assert ksg_mi(x, y, 3) == ksg_mi(x, y, 3, devices=jax.devices()[:1])
    print(name, outs[0].direct, outs[0].recounted)
idx = padded_rows(np.arange(10), 100, 4, 3)  # a subset: a power-of-two number of blocks per device
assert len(idx) == 3 * 4 * 1 and list(idx[10:]) == [9, 9]
assert len(padded_rows(np.arange(100), 100, 4, 3)) == 3 * 4 * 9  # all rows: whole blocks per device
print("OK")
'''


def test_devices_give_the_one_device_counts():
    """With three forced CPU devices: the rows split over 1, 2 or 3 of them give the float64
    brute-force counts (Gaussian, heavy-tailed and tied data, so that the direct and host
    recounts run too) and the same estimate (a subprocess: XLA_FLAGS must be set before JAX
    starts)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=3", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _DEVICES_SCRIPT], capture_output=True, text=True, timeout=600,
                          check=False, cwd=Path(__file__).resolve().parents[1], env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-2000:] + proc.stderr[-4000:]


def test_packed_counts_equal_separate_sums():
    """The one-pass counts (four masks packed in an int32 per column, float32 chunk sums) equal
    NumPy's sums, up to the largest packed value (every mask true in every column)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    masks = rng.random(size=(4, 6, 5 * knn.CHUNK)) < np.array([0.5, 0.1, 0.9, 0.02])[:, None, None]
    masks[:, 0] = True  # the largest chunk sums: 64, 64 and 128
    masks[:, 1] = False
    nx, ny, band = (np.asarray(a) for a in knn.packed_counts(*(jnp.asarray(m) for m in masks)))
    sums = masks.sum(axis=2)
    np.testing.assert_array_equal(nx, sums[0])
    np.testing.assert_array_equal(ny, sums[1])
    np.testing.assert_array_equal(band, sums[2] + sums[3])
    assert nx[0] == ny[0] == 5 * knn.CHUNK and band[0] == 10 * knn.CHUNK and band[1] == 0


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_kth_smallest_with_ties(k):
    """Every selection returns the k-th smallest with multiplicity on rows full of ties (values
    0 … 4, +∞ padding), including rows with fewer chunks than k."""
    import jax.numpy as jnp

    rng = np.random.default_rng(k)
    a = rng.integers(0, 5, size=(16, 192)).astype(np.float32)
    a[:, 150:] = np.inf
    a[0, :] = 3.0  # one value everywhere
    ref = np.sort(a, axis=1)[:, k - 1]
    for selection in ("top_k", "threshold", "chunked"):
        np.testing.assert_array_equal(np.asarray(knn.kth_smallest(jnp.asarray(a), k, selection)), ref)


@pytest.mark.parametrize("rho", [0.6, 0.9])
def test_correlated_gaussians_closed_form(rho):
    """d = 2 + 2, coordinate pairs with correlation ρ: I = −2 · ½ ln(1 − ρ²) nats. The mean of
    R = 8 independent draws at N = 2,000 lies within 3 standard errors of it (the draws' spread
    over √R; measured: 1.9 SE at ρ = 0.6, 0.4 SE at ρ = 0.9), and every draw within 3 of its own."""
    truth = -math.log(1 - rho ** 2) / math.log(2)  # bits
    est = np.array([ksg_mi(*_gaussian_pairs(2000, 2, rho, seed=100 + r), k=3) for r in range(8)])
    se = est.std(ddof=1)  # the standard error of one N = 2,000 estimate
    assert se < 0.1
    assert abs(est.mean() - truth) < 3 * se / math.sqrt(len(est)), (est, truth)
    assert np.all(np.abs(est - truth) < 3 * se), (est, truth)


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_equals_bmi_ksg(metric, k):
    try:  # skipped without bmi, or where it is installed but does not import with this jax
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its dependencies' deprecation warnings
            import bmi
    except Exception as e:  # noqa: BLE001 (ImportError; AttributeError from an old tensorflow-probability)
        pytest.skip(f"bmi (benchmark-mi) is not available: {e!r}")
    x, y = _gaussian_pairs(800, 3, 0.6, seed=k)
    y = np.tanh(y)
    est = bmi.estimators.KSGEnsembleFirstEstimator(neighborhoods=(k,), standardize=True, metric_x=metric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = est.estimate(x, y)  # nats, clipped at 0
    assert ref > 0.1
    assert ksg_mi(x, y, k, metric) * math.log(2) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("c", [0.1, 10.0])
def test_scale_invariance(c):
    x, y = _gaussian_pairs(500, 2, 0.8, seed=3)
    base = ksg_mi(x, y)
    assert ksg_mi(c * x, y) == pytest.approx(base, abs=1e-12)  # standardised per column
    assert ksg_mi(x, c * y, metric="chebyshev") == pytest.approx(ksg_mi(x, y, metric="chebyshev"), abs=1e-12)
    raw = ksg_mi(x, y, standardize=False)
    assert ksg_mi(c * x, c * y, standardize=False) == pytest.approx(raw, abs=1e-12)  # both spaces: invariant
    assert ksg_mi(c * x, y, standardize=False) != pytest.approx(raw, abs=1e-3)  # one space: not


def test_one_dimensional_input_and_return_type():
    x, y = _gaussian_pairs(200, 1, 0.7, seed=0)
    out = ksg_mi(x[:, 0], y[:, 0])
    assert isinstance(out, float) and out == ksg_mi(x, y)


@pytest.mark.parametrize("args, kwargs, words", [
    ((np.zeros((10, 2, 2)), np.zeros((10, 1))), {}, ["x", "(10, 2, 2)", "reshape"]),
    ((np.zeros((10, 2)), np.zeros((9, 1))), {}, ["x", "y", "10", "9"]),
    ((np.zeros((10, 2)), np.zeros((10, 1))), {"k": 0}, ["k", "k=0", "1 ≤ k < N = 10"]),
    ((np.zeros((10, 2)), np.zeros((10, 1))), {"k": 10}, ["k", "k=10", "smaller k"]),
    ((np.zeros((10, 2)), np.zeros((10, 1))), {"k": 2.5}, ["k", "2.5", "integer"]),
    ((np.zeros((10, 2)), np.zeros((10, 1))), {"k": True}, ["k", "True", "integer"]),
    ((np.zeros((10, 2)), np.zeros((10, 1))), {"metric": "manhattan"}, ["metric", "manhattan", "euclidean"]),
    ((np.zeros((10, 2)), np.full((10, 1), np.nan)), {}, ["y", "10 NaN", "finite"]),
    ((np.zeros((0, 2)), np.zeros((0, 1))), {}, ["x", "empty"]),
    ((np.zeros((10, 2)), np.array(["a"] * 10)), {}, ["y", "dtype", "float32"]),
    ((np.zeros((10, 2)), np.zeros((10, 1))), {"block_size": 0}, ["block_size", "0", "None"]),
    ((np.zeros((10, 2)), np.zeros((10, 1))), {"devices": []}, ["devices", "empty", "jax.devices()[:1]"]),
])
def test_bad_input(args, kwargs, words):
    with pytest.raises(ValueError) as e:
        ksg_mi(*args, **kwargs)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
