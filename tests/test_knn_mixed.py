"""Ross's mixed kNN estimator of I(T;Y) (jaxmi.estimators.knn_mixed, method "knn"): exact counts
against a float64 brute force, bootstrap resamples against the materialised resamples, a
two-Gaussian-class case with I(T;Y) from numerical integration, scale invariance, the API's
None for I(X;T), and its place in runs, summaries, findings 1 and 2 and the figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxmi.estimators import estimate, estimate_mi
from jaxmi.estimators.bootstrap import bootstrap_weights
from jaxmi.estimators.knn_mixed import knn_compute, mixed_counts, mixed_knn_mi


def brute_force(t, y, k, w=None):
    """float64 Ross estimator on the (materialised) rows: (m per kept row, kept row indices, bits)."""
    from scipy.special import digamma
    t = np.asarray(t, np.float64).reshape(len(t), -1)
    y = np.asarray(y)
    idx = np.arange(len(t)) if w is None else np.repeat(np.arange(len(t)), np.asarray(w).astype(int))
    t, y = t[idx], y[idx]  # no rescaling: the counts depend only on the order of the distances
    cls, cnt = np.unique(y, return_counts=True)
    keep = np.isin(y, cls[cnt >= k + 1])
    t, y, idx = t[keep], y[keep], idx[keep]
    n = len(t)
    d = ((t[:, None, :] - t[None, :, :]) ** 2).sum(-1)
    m = np.empty(n, int)
    for i in range(n):
        same = y == y[i]
        same[i] = False
        di = np.sort(d[i, same])[k - 1]
        other = np.ones(n, bool)
        other[i] = False
        m[i] = np.sum(d[i, other] <= di)
    nc = np.array([np.sum(y == c) for c in y])
    bits = (digamma(n) - digamma(nc).mean() + digamma(k) - digamma(m).mean()) / math.log(2)
    return m, idx, bits


def _classes(n=300, d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    y[:3] = 4  # a class of 3 points: dropped for k ≥ 3
    t = rng.normal(size=(n, d)) + 0.7 * y[:, None]
    t[10] = t[11]  # an exact duplicate pair, same class
    y[10] = y[11]
    t[20] = t[21]  # and one across classes
    y[20], y[21] = 0, 1
    return t, y


@pytest.mark.parametrize("k", [1, 3, 7])
def test_counts_equal_float64_brute_force(k):
    pytest.importorskip("scipy")
    t, y = _classes(seed=k)
    m, idx, bits = brute_force(t, y, k)
    c = mixed_counts(t, y, k)
    np.testing.assert_array_equal(c.kept[0][idx], 1)
    assert c.kept[0].sum() == len(idx)  # the 3-point class is dropped for k ≥ 3, kept for k = 1
    assert bool((c.kept[0][:3] == 1).all()) == (k < 3) and bool((c.kept[0][:3] == 0).all()) == (k >= 3)
    np.testing.assert_array_equal(c.m[0][idx], m)
    assert mixed_knn_mi(t, y, k) == pytest.approx(bits, abs=1e-12)


@pytest.mark.parametrize("k", [1, 4])
def test_ties_and_duplicates_on_a_lattice(k):
    """Integer points: exact ties at d_i and many duplicates, all counted (≤) as the brute force does,
    for the full sample and for resamples."""
    pytest.importorskip("scipy")
    import jax
    rng = np.random.default_rng(10 + k)
    t = rng.integers(0, 6, size=(250, 2)).astype(np.float64)
    y = ((t.sum(1) + rng.integers(0, 3, 250)) % 3).astype(np.int64)
    m, idx, bits = brute_force(t, y, k)
    c = mixed_counts(t, y, k)
    np.testing.assert_array_equal(c.m[0][idx], m)
    assert c.recounted > 0 and c.tied > 0  # ties within rounding: counted in float64 from differences
    w = bootstrap_weights(jax.random.key(k), len(t), 3)
    i_ty = knn_compute(t, y, 3, np.concatenate([np.ones((1, len(t))), w]), knn_k=k)["knn"][1]
    assert i_ty[0] == pytest.approx(bits, abs=1e-12)
    for r in range(3):
        assert i_ty[r + 1] == pytest.approx(brute_force(t, y, k, w[r])[2], abs=1e-12)


def test_bootstrap_resamples_equal_the_materialised_resamples():
    pytest.importorskip("scipy")
    import jax
    t, y = _classes(n=200, d=3, seed=5)
    w = bootstrap_weights(jax.random.key(3), len(t), 4)
    i_xt, i_ty = knn_compute(t, y, int(y.max()) + 1, np.concatenate([np.ones((1, len(t))), w]), knn_k=3)["knn"]
    assert np.isnan(i_xt).all()
    for r in range(4):
        assert i_ty[r + 1] == pytest.approx(brute_force(t, y, 3, w[r])[2], abs=1e-12)
    assert i_ty[0] == pytest.approx(brute_force(t, y, 3)[2], abs=1e-12)


def test_two_gaussian_classes_match_numerical_integration():
    pytest.importorskip("scipy")
    from scipy import integrate, stats
    mu = 1.0  # T | Y = ±: N(±1, 1), P(Y) = 1/2

    def p(x):
        return 0.5 * (stats.norm.pdf(x, -mu) + stats.norm.pdf(x, mu))

    h_t = integrate.quad(lambda x: -p(x) * math.log(p(x)), -mu - 12, mu + 12, limit=200)[0]
    truth = (h_t - 0.5 * math.log(2 * math.pi * math.e)) / math.log(2)  # I = h(T) − h(T|Y), bits
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    t = (rng.normal(size=2000) + np.where(y == 1, mu, -mu))[:, None].astype(np.float32)
    r = estimate_mi(t, y, method="knn", bootstrap=30)
    assert abs(r["I_TY"] - truth) < 3 * r["I_TY_se"]
    assert 0.005 < r["I_TY_se"] < 0.05
    # a wrong truth is rejected: the test can fail
    assert abs(r["I_TY"] - 1.5 * truth) > 3 * r["I_TY_se"]


@pytest.mark.parametrize("c", [0.1, 10.0])
def test_scale_invariance(c):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    t = (rng.normal(size=(400, 6)) + y[:, None]).astype(np.float32)
    a = estimate_mi(t, y, method="knn", bootstrap=5)
    b = estimate_mi(t * np.float32(c), y, method="knn", bootstrap=5)
    assert b["I_TY"] == a["I_TY"]
    assert b["I_TY_resamples"] == a["I_TY_resamples"]


def test_api_returns_none_for_i_xt_and_ceilings_at_h_y():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 150)
    t = rng.normal(size=(150, 4)).astype(np.float32) + y[:, None]
    r = estimate_mi(t, y, method="knn", bootstrap=3)
    assert r["I_XT"] is None and r["saturated"] is None
    assert all(r[k] is None for k in ("I_XT_se", "I_XT_lo", "I_XT_hi", "I_XT_resamples", "I_XT_ceiling", "I_XT_gap"))
    p = np.bincount(y) / len(y)
    assert r["I_TY_ceiling"] == pytest.approx(float(-(p * np.log2(p)).sum()))
    assert r["I_TY_gap"] == pytest.approx(r["I_TY_ceiling"] - r["I_TY"])
    json.dumps(r, allow_nan=False)  # None, never NaN
    both = estimate(t, y, methods=("kde_upper", "knn"), knn_k=5)
    assert both["kde_upper"]["I_XT"] is not None and both["knn"]["I_XT"] is None
    assert both["knn"]["I_TY"] == pytest.approx(mixed_knn_mi(t, y, 5), abs=1e-12)
    assert mixed_knn_mi(t, y, 5) != pytest.approx(mixed_knn_mi(t, y, 3), abs=1e-6)


@pytest.mark.parametrize("call,msg", [
    (lambda t, y: estimate_mi(t, y, method="knn", knn_k=0), "knn_k must be an integer"),
    (lambda t, y: estimate_mi(t, y, method="knn", knn_k=2.5), "knn_k must be an integer"),
    (lambda t, y: estimate_mi(t, y, method="knn", noise_scale="x"), "unknown option"),
    (lambda t, y: mixed_knn_mi(t, y, 40), "no class has k + 1 = 41 points"),
    (lambda t, y: mixed_knn_mi(t[:, :, None], y), "2-D array"),
    (lambda t, y: mixed_knn_mi(t, y[:-1]), "labels must be [N]"),
])
def test_bad_input(call, msg):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 60)
    t = rng.normal(size=(60, 2))
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("+", r"\+")):
        call(t, y)


def test_small_class_is_dropped_like_removing_it():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    t = rng.normal(size=(200, 2)) + y[:, None]
    y2, t2 = np.concatenate([y, [2, 2]]), np.concatenate([t, rng.normal(size=(2, 2))])
    # the 2-point class is dropped for k = 3: the estimate is that of the other classes
    assert mixed_knn_mi(t2, y2, 3) == pytest.approx(mixed_knn_mi(t, y, 3), abs=1e-12)
    assert mixed_knn_mi(t2, y2, 1) != pytest.approx(mixed_knn_mi(t, y, 1), abs=1e-6)  # kept for k = 1
