"""Tests of the full-strength estimator features: memory-sized blocks, multi-device KDE,
bootstrap error bars, the estimator registry, estimate over probes and the matrix-based Rényi
estimator.

Every value is checked against an independent reference: the float64 direct-difference
KDE and ``np.unique`` binning references of ``test_estimators.py`` applied to explicitly
materialised resamples (rows repeated), a dense float64 NumPy row-sum computation, a float64
NumPy matrix-Rényi reference written from Giraldo et al.'s definitions (full
eigendecompositions, k-NN widths by sorting), and analytic cases.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxmi import backend, estimators
from jaxmi.estimators import (bootstrap_weights, estimate, estimate_mi, kde_mi, register_estimator, renyi_mi,
                              unregister_estimator)
from jaxmi.estimators import binning as est_binning
from jaxmi.estimators import kde as est_kde
from jaxmi.estimators import kde_pass
from jaxmi.estimators import renyi as est_renyi
from jaxmi.estimators.validation import validate
from test_estimators import BIN_ATOL, KDE_ATOL, KDE_RTOL, by_method, ref_binning, ref_kde

# --------------------------------------------------------------------------------------
# Block size from memory; blockwise row sums equal the dense float64 computation
# --------------------------------------------------------------------------------------


def test_available_memory_is_positive_and_block_size_obeys_budget():
    assert backend.available_memory_bytes() > 0
    auto = estimators.choose_block_size(60_000, 3456)
    assert auto % 8 == 0 and 8 <= auto <= 1024
    for budget in (1 << 20, 16 << 20, 256 << 20):
        b = estimators.choose_block_size(60_000, 3456, memory_bytes=budget)
        assert b % 8 == 0 and b >= 8
        # The step's working set fits the budget (or B is already the minimum of 8 rows).
        assert b == 8 or 4 * (2 * b * 3456 + 8 * b * b + 4 * b * 11) <= budget * 1.02
    assert estimators.choose_block_size(100, 10, max_block=64) == 56  # 2 balanced blocks of ≤ 64
    assert estimators.choose_block_size(1000, 10, memory_bytes=1 << 12) == 8


def _dense_row_sums_float64(t, labels, noise_var):
    """Σ_j exp(−D_ij/s) over all j and over j in i's class, s = 2σ², 8σ²; D by direct differences."""
    t = np.asarray(t, np.float64)
    d = np.sum((t[:, None, :] - t[None, :, :]) ** 2, axis=-1)
    same = labels[:, None] == labels[None, :]
    out = []
    for s in (2 * noise_var, 8 * noise_var):
        k = np.exp(-d / s)
        out.append((k.sum(1), (k * same).sum(1)))
    return out


@pytest.mark.parametrize("block", [8, 48, None])
def test_blockwise_row_sums_equal_dense_float64(block):
    # The quantity every KDE estimate is built from; relative difference ≤ 1e-5 in float32.
    rng = np.random.default_rng(0)
    n, d, c = 203, 24, 4
    y = rng.integers(0, c, n)
    t = (rng.standard_normal((n, d)) * 0.25 + rng.standard_normal((c, d))[y] * 0.3).astype(np.float32)
    b = block or estimators.choose_block_size(n, d)
    sums, finite, _, nn = kde_pass.kde_sums(jax.numpy.asarray(t), jax.numpy.asarray(y, np.int32),
                                               jax.numpy.ones((1, n)), np.float32(0.1), num_classes=c,
                                               block_size=b)
    sums = np.asarray(sums)  # [N, 2, 2]: over all points, over the row's class
    ref = _dense_row_sums_float64(t, y, 0.1)
    for s, (total, same) in enumerate(ref):
        np.testing.assert_allclose(sums[:, s, 0], total, rtol=1e-5)
        np.testing.assert_allclose(sums[:, s, 1], same, rtol=1e-5)
    assert bool(finite) and total.min() > 1.5  # the kernel sums are not just the diagonal
    # every row's nearest-neighbour squared distance (padded rows never count)
    t64 = t.astype(np.float64)
    d = ((t64[:, None] - t64[None]) ** 2).sum(-1) + np.diag(np.full(n, np.inf))
    np.testing.assert_allclose(np.asarray(nn), d.min(1), rtol=1e-4)
    # the same pass at several scales (a sweep) gives each scale's sums
    swept, *_ = kde_pass.kde_sums(jax.numpy.asarray(t), jax.numpy.asarray(y, np.int32), jax.numpy.ones((1, n)),
                                  np.asarray([0.2, 0.8], np.float32), num_classes=c, block_size=b, paired=False)
    np.testing.assert_allclose(np.asarray(swept), sums, rtol=1e-5)


def test_kde_estimates_equal_dense_float64_within_1e_5_relative():
    rng = np.random.default_rng(1)
    n, d, c = 203, 24, 4
    y = rng.integers(0, c, n)
    t = (rng.standard_normal((n, d)) * 0.25 + rng.standard_normal((c, d))[y] * 0.3).astype(np.float32)
    ref = ref_kde(t, y)
    for b in (8, 48, None):
        got = kde_mi(t, y, block_size=b)
        for m in ref:
            for k in ("I_XT", "I_TY"):
                np.testing.assert_allclose(got[m][k], ref[m][k], rtol=1e-5, atol=1e-6, err_msg=f"{b} {m} {k}")
    assert ref["kde_upper"]["I_TY"] > 0.1


# --------------------------------------------------------------------------------------
# Bootstrap: every resample equals the estimator on the materialised resample
# --------------------------------------------------------------------------------------


def _materialise(x, w):
    return x[np.repeat(np.arange(len(w)), np.asarray(w, np.int64))]


def test_bootstrap_weights_are_multinomial_counts():
    w = bootstrap_weights(jax.random.key(3), 50, 400)
    assert w.shape == (400, 50) and np.all(w >= 0) and np.all(w == np.round(w))
    np.testing.assert_array_equal(w.sum(1), 50)
    # Each count is Binomial(50, 1/50): mean 1, variance 49/50; P(absent) = (49/50)^50 ≈ 0.364.
    assert abs(w.mean() - 1) < 1e-6 and abs(w.var() - 0.98) < 0.05
    assert abs(np.mean(w == 0) - (49 / 50) ** 50) < 0.02
    np.testing.assert_array_equal(w, bootstrap_weights(jax.random.key(3), 50, 400))


def test_kde_bootstrap_resamples_match_reference_on_materialised_resamples():
    rng = np.random.default_rng(4)
    n, c = 70, 3
    y = rng.integers(0, c, n)
    t = (rng.standard_normal((n, 6)) * 0.4 + rng.standard_normal((c, 6))[y] * 0.5).astype(np.float32)
    w = np.concatenate([np.ones((1, n), np.float32), bootstrap_weights(jax.random.key(5), n, 3)])
    tj, yj, cc = validate(t, y, None)
    got = est_kde.kde_compute(tj, yj, cc, w, block_size=16)
    for r in range(len(w)):
        ref = ref_kde(_materialise(t, w[r]), _materialise(y, w[r]))
        for m in ("kde_upper", "kde_lower"):
            np.testing.assert_allclose(got[m][0][r], ref[m]["I_XT"], atol=KDE_ATOL, rtol=KDE_RTOL)
            np.testing.assert_allclose(got[m][1][r], ref[m]["I_TY"], atol=KDE_ATOL, rtol=KDE_RTOL)


@pytest.mark.parametrize("distinct", [False, True])
def test_binning_bootstrap_resamples_match_np_unique_on_materialised_resamples(distinct):
    rng = np.random.default_rng(6)
    n = 90
    y = np.concatenate([np.arange(5), rng.integers(5, 8, n - 5)])  # five single-sample classes
    if distinct:  # every row its own symbol (binning's closed-form path), wide and narrow
        t = (rng.standard_normal((n, 300)) * 3.0).astype(np.float32)
    else:
        t = (rng.standard_normal((n, 3)) * 0.8 - 0.6).astype(np.float32)  # negative bins, ties
        t[40:50] = t[0]
    w = np.concatenate([np.ones((1, n), np.float32), bootstrap_weights(jax.random.key(7), n, 4)])
    tj, yj, cc = validate(t, y, None)
    got = est_binning.binning_compute(tj, yj, cc, w)["binning"]
    exact = est_binning.binning_numpy(t, y, 0.5, w)  # the host fallback, weighted
    for r in range(len(w)):
        ref = ref_binning(_materialise(t, w[r]), _materialise(y, w[r]))
        np.testing.assert_allclose([got[0][r], got[1][r]], [ref["I_XT"], ref["I_TY"]], atol=BIN_ATOL)
        np.testing.assert_allclose([exact[0][r], exact[1][r]], [ref["I_XT"], ref["I_TY"]], atol=1e-9)


def test_estimate_bootstrap_summary():
    rng = np.random.default_rng(8)
    n = 80
    y = rng.integers(0, 4, n)
    t = (rng.standard_normal((n, 5)) * 0.3 + rng.standard_normal((4, 5))[y]).astype(np.float32)
    key = jax.random.key(9)
    got = estimate(t, y, bootstrap=20, key=key, confidence=0.9)
    plain = estimate(t, y)
    w = np.concatenate([np.ones((1, n), np.float32), bootstrap_weights(key, n, 20)])
    tj, yj, cc = validate(t, y, None)
    per = {**est_kde.kde_compute(tj, yj, cc, w), **est_binning.binning_compute(tj, yj, cc, w)}
    for m in plain:
        assert got[m]["I_XT"] == pytest.approx(plain[m]["I_XT"], abs=1e-6)
        assert got[m]["I_TY"] == pytest.approx(plain[m]["I_TY"], abs=1e-6)
        for i, k in enumerate(("I_XT", "I_TY")):
            boot = np.asarray(per[m][i][1:], np.float64)
            assert got[m][f"{k}_se"] == pytest.approx(np.std(boot, ddof=1), rel=1e-6, abs=1e-9)
            lo, hi = np.percentile(boot, [5, 95])
            assert got[m][f"{k}_lo"] == pytest.approx(lo, abs=1e-6)
            assert got[m][f"{k}_hi"] == pytest.approx(hi, abs=1e-6)
            assert got[m][f"{k}_lo"] <= got[m][f"{k}_hi"]
        assert got[m]["I_XT_se"] > 0
    assert estimate(t, y, bootstrap=20, key=key) == estimate(t, y, bootstrap=20, key=key)
    with pytest.raises(ValueError, match="bootstrap"):
        estimate(t, y, bootstrap=1)
    with pytest.raises(ValueError, match="confidence"):
        estimate(t, y, bootstrap=5, confidence=1.0)


# --------------------------------------------------------------------------------------
# estimate over a mapping of probes: many layers and classes in one call
# --------------------------------------------------------------------------------------


def test_estimate_on_probes_structure_and_agreement():
    rng = np.random.default_rng(10)
    n = 64
    y = rng.integers(0, 10, n)
    probes = {"wide": rng.standard_normal((n, 4, 4, 3)).astype(np.float32) * 0.3,
              "narrow": rng.standard_normal((n, 2)).astype(np.float32)}
    got = estimate(probes, y, methods=("binning", "kde_lower"), num_classes=10, bootstrap=4)
    assert list(got) == ["wide", "narrow"]
    flat = by_method(estimate(probes, y, methods=("binning", "kde_lower"), num_classes=10, bootstrap=4))
    for p, act in probes.items():
        assert list(got[p]) == ["binning", "kde_lower"]
        single = estimate(act.reshape(n, -1), y, methods=("binning", "kde_lower"), num_classes=10, bootstrap=4)
        assert got[p] == single  # same default key: the same resamples for every probe
    for m in ("binning", "kde_lower"):
        errors = {f"I_{q}{s}" for q in ("XT", "TY") for s in ("", "_se", "_lo", "_hi", "_resamples")}
        diagnostics = {"saturated", "I_XT_ceiling", "I_TY_ceiling", "I_XT_gap", "I_TY_gap"}
        kde = {"nn_sq_dist_over_width", "self_dominated_share", "noise_var"} if m.startswith("kde") else set()
        assert set(flat[m]) == errors | diagnostics | kde
        assert flat[m]["I_XT_se"] == [got[p][m]["I_XT_se"] for p in probes]


# --------------------------------------------------------------------------------------
# Multi-device: 1 vs 8 forced CPU devices, in a fresh process
# --------------------------------------------------------------------------------------

_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, numpy as np
    from jaxmi import estimators
    from jaxmi.estimators import kde_pass
    assert jax.local_device_count() == 8, jax.local_devices()
    assert kde_pass.kde_mesh(None).size == 8
    rng = np.random.default_rng(0)
    n = 203
    y = rng.integers(0, 5, n)
    t = (rng.standard_normal((n, 12)) * 0.6 + rng.standard_normal((5, 12))[y] * 0.4).astype(np.float32)
    out = {}
    for name, devs in (("one", jax.local_devices()[:1]), ("eight", None), ("three", jax.local_devices()[:3])):
        out[name] = estimators.estimate(t, y, methods=("kde_upper", "kde_lower"), block_size=32,
                                        devices=devs, bootstrap=3)
    size = kde_pass.kde_sums._cache_size()
    estimators.estimate(t * 2, y, methods=("kde_upper",), block_size=32, bootstrap=3)  # a fresh Mesh
    assert kde_pass.kde_sums._cache_size() == size, "the sharded KDE pass recompiled"
    print(json.dumps(out))
""")


def test_kde_one_device_equals_eight_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for other in ("eight", "three"):  # 28 block pairs: 8 devices get 4 each (4 padded), 3 get 10
        for m, vals in res["one"].items():
            for k, v in vals.items():
                np.testing.assert_allclose(res[other][m][k], v, rtol=1e-5, atol=1e-6, err_msg=f"{other} {m} {k}")
    assert res["one"]["kde_upper"]["I_TY"] > 0.05


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


def _label_entropy_bits(y):
    _, counts = np.unique(np.asarray(y), return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def test_registered_estimator_is_used_everywhere_and_bootstraps():
    calls = []

    def label_entropy(activations, labels, *, num_classes, scale=1.0):
        calls.append(activations.shape)
        return {"I_XT": 0.0, "I_TY": scale * _label_entropy_bits(labels)}

    register_estimator("label_entropy", label_entropy)
    try:
        assert "label_entropy" in estimators.available_methods()
        rng = np.random.default_rng(11)
        y = rng.integers(0, 3, 40)
        t = rng.standard_normal((40, 3)).astype(np.float32)
        got = estimate_mi(t, y, method="label_entropy", scale=2.0)
        assert got["I_TY"] == pytest.approx(2 * _label_entropy_bits(y))
        res = estimate(t, y, methods=("binning", "label_entropy"), bootstrap=5, key=jax.random.key(1))
        w = bootstrap_weights(jax.random.key(1), 40, 5)
        boot = [_label_entropy_bits(_materialise(y, wr)) for wr in w]
        assert res["label_entropy"]["I_TY_se"] == pytest.approx(np.std(boot, ddof=1), rel=1e-9)
        assert calls[-1] == (40, 3)
        assert estimate({"a": t}, y, methods=("label_entropy",))["a"]["label_entropy"]["I_TY"] == \
            pytest.approx(_label_entropy_bits(y))
        with pytest.raises(ValueError, match="already registered"):
            register_estimator("label_entropy", label_entropy)
        with pytest.raises(ValueError, match="unknown option"):
            estimate(t, y, methods=("binning",), alpah=2.0)
    finally:
        unregister_estimator("label_entropy")
    assert "label_entropy" not in estimators.available_methods()
    with pytest.raises(ValueError, match="built-in"):
        register_estimator("binning", label_entropy)


# --------------------------------------------------------------------------------------
# Matrix-based Rényi α-entropy
# --------------------------------------------------------------------------------------


def _ref_gram(x, width=None, k=10):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    d2 = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    if width is None:
        dist = np.sqrt(np.sort(d2, axis=1)[:, 1:k + 1])
        width = dist.mean()
    return np.exp(-d2 / (2 * width ** 2))


def _ref_entropy(k, alpha):
    a = k / np.trace(k)
    lam = np.clip(np.linalg.eigvalsh(a), 0, None)
    lam = lam[lam > 1e-300]
    if alpha == 1:
        return float(-np.sum(lam * np.log2(lam)))
    return float(np.log2(np.sum(lam ** alpha)) / (1 - alpha))


def ref_renyi(t, y, alpha, inputs=None, width=None):
    k_t = _ref_gram(t, width)
    k_y = (np.asarray(y)[:, None] == np.asarray(y)[None, :]).astype(float)
    s_t = _ref_entropy(k_t, alpha)
    i_ty = s_t + _ref_entropy(k_y, alpha) - _ref_entropy(k_t * k_y, alpha)
    if inputs is None:
        return {"I_XT": s_t, "I_TY": i_ty}
    k_x = _ref_gram(inputs)
    return {"I_XT": _ref_entropy(k_x, alpha) + s_t - _ref_entropy(k_x * k_t, alpha), "I_TY": i_ty}


def _renyi_data(seed=12, n=90):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 4, 4)).astype(np.float32)
    w = rng.standard_normal((16, 5)).astype(np.float32)
    t = (np.tanh(x.reshape(n, -1) @ w) + rng.standard_normal((3, 5))[y]).astype(np.float32)
    return x, t, y


@pytest.mark.parametrize("alpha", [0.5, 1.01, 2.0, 3.0])
def test_renyi_matches_float64_reference(alpha):
    x, t, y = _renyi_data()
    ref = ref_renyi(t, y, alpha, inputs=x)
    got = renyi_mi(t, y, alpha=alpha, inputs=x)
    np.testing.assert_allclose([got["I_XT"], got["I_TY"]], [ref["I_XT"], ref["I_TY"]], atol=2e-4)
    no_x = renyi_mi(t, y, alpha=alpha)  # without inputs: I(X;T) = S_α(T)
    ref_no_x = ref_renyi(t, y, alpha)
    np.testing.assert_allclose([no_x["I_XT"], no_x["I_TY"]], [ref_no_x["I_XT"], ref_no_x["I_TY"]], atol=2e-4)
    assert ref["I_TY"] > 0.1


def test_renyi_analytic_cases():
    rng = np.random.default_rng(13)
    n = 60
    y = np.repeat(np.arange(4), [5, 10, 15, 30])
    p = np.array([5, 10, 15, 30]) / n
    for alpha in (1.01, 2.0):
        h_y = float(np.log2(np.sum(p ** alpha)) / (1 - alpha))
        # Identical points: S(T) = 0, and T says nothing about Y.
        same = renyi_mi(np.ones((n, 3), np.float32), y, alpha=alpha)
        assert abs(same["I_XT"]) < 1e-6 and abs(same["I_TY"]) < 1e-6
        # Far-apart points with a fixed narrow width: A = I/N, S(T) = log2 N, I(T;Y) = S_α(Y).
        far = renyi_mi(rng.standard_normal((n, 8)).astype(np.float32) * 100, y, alpha=alpha, kernel_width=0.1)
        assert far["I_XT"] == pytest.approx(math.log2(n), abs=1e-6)
        assert far["I_TY"] == pytest.approx(h_y, abs=1e-6)
        # Each class one tight cloud far from the others: T is a copy of Y, I(T;Y) = S(T) = S_α(Y).
        # (Tiny spread: at α near 1 the factor 1/(1−α) magnifies the within-class spectrum.)
        t = (np.eye(4, 8)[y] * 5 + rng.standard_normal((n, 8)) * 1e-5).astype(np.float32)
        tight = renyi_mi(t, y, alpha=alpha, kernel_width=0.5)
        assert tight["I_XT"] == pytest.approx(h_y, abs=1e-5)
        assert tight["I_TY"] == pytest.approx(h_y, abs=1e-5)


def test_renyi_alpha_to_one_limit_and_invariances():
    x, t, y = _renyi_data(seed=14, n=70)
    shannon = ref_renyi(t, y, 1)  # von Neumann entropy of the same matrices
    near = renyi_mi(t, y, alpha=1.0 + 1e-4)
    assert near["I_XT"] == pytest.approx(shannon["I_XT"], abs=2e-3)
    assert near["I_TY"] == pytest.approx(shannon["I_TY"], abs=2e-3)
    base = renyi_mi(t, y)
    rng = np.random.default_rng(15)
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    perm = rng.permutation(len(y))
    variants = {
        "scaled": (t * 7.5, y),  # k-NN width scales with the data
        "rotated+shifted": (t @ q.astype(np.float32) + 3.0, y),
        "permuted": (t[perm], y[perm]),
        "relabelled": (t, (y + 1) % 3),
    }
    for name, (tv, yv) in variants.items():
        got = renyi_mi(tv, yv)
        np.testing.assert_allclose([got["I_XT"], got["I_TY"]], [base["I_XT"], base["I_TY"]], atol=1e-4,
                                   err_msg=name)


def test_renyi_in_estimate_with_bootstrap():
    x, t, y = _renyi_data(seed=16, n=50)
    res = estimate(t, y, methods=("renyi",), inputs=x, alpha=2.0, bootstrap=3, key=jax.random.key(2))
    single = renyi_mi(t, y, inputs=x, alpha=2.0)
    assert res["renyi"]["I_XT"] == pytest.approx(single["I_XT"], abs=1e-9)
    # A resample's value equals the reference on the materialised resample with the full
    # sample's kernel width (the weighted Gram matrix W^½ K W^½ has the resample's spectrum).
    w = np.concatenate([np.ones((1, 50), np.float32), bootstrap_weights(jax.random.key(2), 50, 3)])
    tj, yj, cc = validate(t, y, None)
    per = est_renyi.renyi_compute(tj, yj, cc, w, alpha=2.0, inputs=x)["renyi"]
    width = np.mean(np.sqrt(np.sort(np.sum((t[:, None].astype(np.float64) - t[None]) ** 2, -1), 1)[:, 1:11]))
    ref = ref_renyi(_materialise(t, w[1]), _materialise(y, w[1]), 2.0, width=width)
    assert per[1][1] == pytest.approx(ref["I_TY"], abs=2e-4)
    assert res["renyi"]["I_TY_lo"] <= res["renyi"]["I_TY_hi"]


def test_float64_path_skipped_when_large_norms_have_no_close_neighbours(monkeypatch):
    # ‖t‖² ≈ 5·10⁴: float32 distances are off by ~0.06 of 2σ², but every point is far from
    # every other, so all row sums are 1 + ~0 and the float32 result is exact enough.
    calls = []
    real = kde_pass.kde_sums_float64
    monkeypatch.setattr(kde_pass, "kde_sums_float64", lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(17)
    n = 120
    y = rng.integers(0, 3, n)
    t = (rng.standard_normal((n, 20)) * 50).astype(np.float32)
    assert 2 * 1.19e-7 * np.max(np.sum((t - t.mean(0)) ** 2, 1)) / 0.2 > est_kde.MAX_KERNEL_ROUNDING
    got = kde_mi(t, y)
    assert not calls
    ref = ref_kde(t, y)
    for m in ref:
        for k in ("I_XT", "I_TY"):
            np.testing.assert_allclose(got[m][k], ref[m][k], atol=KDE_ATOL, rtol=KDE_RTOL)
