"""Tests of jaxmi.estimators against independent float64 NumPy references.

The references below are written from the estimator definitions (all in bits), not from
the implementation: direct pairwise differences (no Gram trick), ``scipy.special.logsumexp``
over rows, the full entropy expressions with their Gaussian constants, class-conditional
entropies recomputed on each class's own rows, and ``np.unique(axis=0)`` for binning.
"""

import math
import re

import jax
import numpy as np
import pytest
from scipy.special import logsumexp

from jaxmi.estimators import METHODS, binning_mi, estimate, estimate_mi, kde_mi
from jaxmi.estimators import binning as est_binning
from jaxmi.estimators import kde_pass

NOISE_VAR = 0.1
BIN_SIZE = 0.5
LN2 = math.log(2.0)

# KDE tolerance against the float64 reference: |got − ref| ≤ 1e-3 bits + 1e-4·|ref|.
# Why not tighter: the implementation works in float32 and gets squared distances from
# the Gram identity D_ij = ‖t_i‖² + ‖t_j‖² − 2 t_i·t_j, whose rounding error is absolute,
# about ε₃₂·‖t‖² (ε₃₂ ≈ 1.2e-7), not relative to D_ij. The kernel exp(−D/2σ²) multiplies
# that error by 1/(2σ²) = 5, and row sums and logs are float32 too. Over the scales and
# widths tested here the largest deviation seen is ~2e-4 bits (scale 100, width 1) and
# ~1e-6 bits at scales ≤ 10, so this tolerance has a safety margin of ~5× while still
# catching any formula error (a wrong constant, 2σ² vs 8σ², a missing class weight, nats
# vs bits all move results by ≥ 1e-2 bits).
KDE_ATOL, KDE_RTOL = 1e-3, 1e-4
# Binning groups symbols exactly (integer comparisons), but the entropy arithmetic (ln of
# group sizes, a mean over N rows) is float32: ~1e-7 relative on values up to ln N, so
# results differ from the float64 reference by up to ~6e-6 bits (seen: N = 1000 identical
# rows → I_XT = −6.1e-6). A single wrongly grouped row moves H by ≳ 1/N bits ≫ 1e-5.
BIN_ATOL = 1e-5


# --------------------------------------------------------------------------------------
# Independent float64 references
# --------------------------------------------------------------------------------------


def _pairwise_sq_dists(t):
    """D_ij = Σ_k (t_ik − t_jk)², from direct differences, in row chunks (float64)."""
    t = np.asarray(t, np.float64)
    out = np.empty((len(t), len(t)))
    for s in range(0, len(t), 64):
        out[s:s + 64] = np.sum((t[s:s + 64, None, :] - t[None, :, :]) ** 2, axis=-1)
    return out


def _kde_entropy(t, scale, noise_var):
    """Ĥ(T) in nats: d/2 + (d/2) ln(2πσ²) + ln N − (1/N) Σ_i logsumexp_j(−D_ij / scale)."""
    n, d = t.shape
    dists = _pairwise_sq_dists(t)
    return (d / 2 + d / 2 * math.log(2 * math.pi * noise_var) + math.log(n)
            - np.mean(logsumexp(-dists / scale, axis=1)))


def ref_kde(t, labels, noise_var=NOISE_VAR):
    """{"kde_upper": {...}, "kde_lower": {...}}, I(X;T) and I(T;Y) in bits."""
    t = np.asarray(t, np.float64)
    labels = np.asarray(labels)
    d = t.shape[1]
    h_t_given_x = d / 2 * (math.log(2 * math.pi * noise_var) + 1)
    out = {}
    for name, factor in (("kde_upper", 2.0), ("kde_lower", 8.0)):
        scale = factor * noise_var
        h_t = _kde_entropy(t, scale, noise_var)
        h_t_given_y = sum(np.mean(labels == c) * _kde_entropy(t[labels == c], scale, noise_var)
                          for c in np.unique(labels))
        out[name] = {"I_XT": (h_t - h_t_given_x) / LN2, "I_TY": (h_t - h_t_given_y) / LN2}
    return out


def _symbol_entropy_bits(sym):
    _, counts = np.unique(sym, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def ref_binning(t, labels, bin_size=BIN_SIZE):
    # The estimator sees float32 activations; floor(t / 0.5) of a float32 value is exact in
    # float64, so the reference bins are the true bins of the values the estimator gets.
    t = np.asarray(np.asarray(t, np.float32), np.float64)
    labels = np.asarray(labels)
    sym = np.floor(t / bin_size).astype(np.int64)
    h_t = _symbol_entropy_bits(sym)
    h_t_given_y = sum(np.mean(labels == c) * _symbol_entropy_bits(sym[labels == c]) for c in np.unique(labels))
    return {"I_XT": h_t, "I_TY": h_t - h_t_given_y}


def ref_all(t, labels):
    return {**ref_kde(t, labels), "binning": ref_binning(t, labels)}


def label_entropy_bits(labels):
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def _assert_kde_close(got, ref):
    for m in ("kde_upper", "kde_lower"):
        for k in ("I_XT", "I_TY"):
            np.testing.assert_allclose(got[m][k], ref[m][k], atol=KDE_ATOL, rtol=KDE_RTOL, err_msg=f"{m} {k}")


# --------------------------------------------------------------------------------------
# KDE bounds vs the reference
# --------------------------------------------------------------------------------------

N_KDE = 203  # a few hundred, and not a multiple of 8 or of any block size


@pytest.mark.parametrize("width", [1, 10, 300])
@pytest.mark.parametrize("scale", [0.03, 0.3, 1.0, 3.0, 10.0])
def test_kde_matches_float64_reference(scale, width):
    rng = np.random.default_rng(int(scale * 100) + width)
    num_classes = {1: 2, 10: 3, 300: 10}[width]
    t = (rng.standard_normal((N_KDE, width)) * scale).astype(np.float32)
    y = rng.integers(0, num_classes, N_KDE)
    ref = ref_kde(t, y)
    _assert_kde_close(kde_mi(t, y), ref)
    # Sanity on the reference itself: lower ≤ upper bound on I(X;T), both within [0, log2 N].
    assert -1e-9 <= ref["kde_lower"]["I_XT"] <= ref["kde_upper"]["I_XT"] + 1e-9 <= math.log2(N_KDE) + 2e-9


@pytest.mark.parametrize("width,num_classes", [(10, 2), (10, 10), (300, 3)])
def test_estimate_mi_single_method_matches_reference(width, num_classes):
    rng = np.random.default_rng(7 + width + num_classes)
    # Mixed scales per coordinate, class-dependent means: non-trivial I(T;Y) for every method.
    y = rng.integers(0, num_classes, N_KDE)
    means = rng.standard_normal((num_classes, width)) * 0.7
    t = (means[y] + rng.standard_normal((N_KDE, width)) * np.geomspace(0.05, 2.0, width)).astype(np.float32)
    ref = ref_all(t, y)
    for method in METHODS:
        got = estimate_mi(t, y, method=method)
        diag = {"saturated", "I_XT_ceiling", "I_TY_ceiling", "I_XT_gap", "I_TY_gap"}
        kde = {"nn_sq_dist_over_width", "self_dominated_share", "noise_var"} if method.startswith("kde") else set()
        assert set(got) == {"I_XT", "I_TY"} | diag | kde
        if method == "binning":
            np.testing.assert_allclose([got["I_XT"], got["I_TY"]], [ref[method]["I_XT"], ref[method]["I_TY"]],
                                       atol=BIN_ATOL, err_msg=method)
        else:
            np.testing.assert_allclose([got["I_XT"], got["I_TY"]], [ref[method]["I_XT"], ref[method]["I_TY"]],
                                       atol=KDE_ATOL, rtol=KDE_RTOL, err_msg=method)
    assert ref["kde_upper"]["I_TY"] > 0.05  # the labels are informative: a real I(T;Y) test


def test_kde_noise_var_enters_correctly():
    rng = np.random.default_rng(11)
    t = rng.standard_normal((150, 5)).astype(np.float32)
    y = rng.integers(0, 4, 150)
    for nv in (0.01, 1.0):
        _assert_kde_close(kde_mi(t, y, noise_var=nv), ref_kde(t, y, noise_var=nv))


# --------------------------------------------------------------------------------------
# Blockwise == dense
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [203, 256])
def test_blockwise_equals_single_block(n):
    rng = np.random.default_rng(n)
    t = (rng.standard_normal((n, 12)) * 0.8).astype(np.float32)
    y = rng.integers(0, 5, n)
    dense_block = -(-n // 8) * 8  # N rounded up to a multiple of 8: one block, no tiling
    dense = kde_mi(t, y, block_size=dense_block)
    for b in (8, 64, 100):  # 203 is divisible by none of them (so the last block is padded)
        got = kde_mi(t, y, block_size=b)
        for m in dense:
            for k in ("I_XT", "I_TY"):
                np.testing.assert_allclose(got[m][k], dense[m][k], rtol=1e-5, atol=1e-6,
                                           err_msg=f"block {b} {m} {k}")
    assert dense["kde_upper"]["I_TY"] > 0.01  # not trivially zero


# --------------------------------------------------------------------------------------
# Analytic cases
# --------------------------------------------------------------------------------------


def test_identical_points_give_zero_information():
    rng = np.random.default_rng(3)
    n = 120
    t = np.tile(np.array([[0.37, -1.2, 4.1, 0.0]], np.float32), (n, 1))
    y = rng.integers(0, 3, n)
    got = estimate(t, y)
    for m in METHODS:
        assert abs(got[m]["I_XT"]) < 1e-5, (m, got[m])
        assert abs(got[m]["I_TY"]) < 1e-5, (m, got[m])


def test_far_apart_points_give_log2_n():
    # Every pair is ~1e3·√(2d) apart: all kernels off the diagonal vanish, every bin holds one
    # sample. Then Ĥ(T) = log N and Ĥ(T|Y=y) = log N_y, so I(X;T) = log2 N and I(T;Y) = H(Y).
    rng = np.random.default_rng(4)
    n = 150
    t = (rng.standard_normal((n, 10)) * 1e3).astype(np.float32)
    y = rng.integers(0, 4, n)
    got = estimate(t, y)
    for m in METHODS:
        np.testing.assert_allclose(got[m]["I_XT"], math.log2(n), atol=1e-4, err_msg=m)
        np.testing.assert_allclose(got[m]["I_TY"], label_entropy_bits(y), atol=1e-4, err_msg=m)


@pytest.mark.parametrize("num_classes_arg", [None, 12])
def test_tight_separated_classes_give_label_entropy(num_classes_arg):
    # Each class is a tiny cloud (σ = 1e-4) around its own centre; centres are ≥ 4√2 apart, so
    # cross-class kernels are < e^-40 and all within-class kernels ≈ 1, and every centre sits
    # in the middle of a bin (x.25 + 0.25 in units of 0.5), so a class is exactly one symbol.
    # Then I(X;T) = I(T;Y) = H(Y), here with unequal class sizes (H(Y) ≠ log2 C) and, with
    # num_classes=12, classes absent from the sample.
    rng = np.random.default_rng(5)
    sizes = [5, 80, 40, 1, 60, 17]
    y = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(y)
    centres = 4.0 * np.eye(len(sizes), 8) + 0.25
    t = (centres[y] + rng.standard_normal((len(y), 8)) * 1e-4).astype(np.float32)
    h_y = label_entropy_bits(y)
    assert abs(h_y - math.log2(len(sizes))) > 0.2
    got = estimate(t, y, num_classes=num_classes_arg)
    for m in METHODS:
        np.testing.assert_allclose(got[m]["I_TY"], h_y, atol=1e-4, err_msg=m)
        np.testing.assert_allclose(got[m]["I_XT"], h_y, atol=1e-4, err_msg=m)


# --------------------------------------------------------------------------------------
# Binning: exact equality with np.unique
# --------------------------------------------------------------------------------------


def _binning_cases():
    rng = np.random.default_rng(6)
    cases = {}
    # Many duplicate rows (ties): few distinct symbols, repeated many times.
    base = rng.integers(-2, 3, (7, 5)) * 0.5 + 0.1
    cases["ties"] = (base[rng.integers(0, 7, 400)] + rng.uniform(0, 0.3, (400, 5)), rng.integers(0, 4, 400), None)
    # Negative values / negative bins, mixed magnitudes.
    cases["negative"] = (rng.standard_normal((300, 3)) * 1.5 - 2.0, rng.integers(0, 3, 300), None)
    # Values exactly on bin edges (multiples of 0.5, both signs, and ±0).
    edges = rng.integers(-6, 7, (250, 4)) * 0.5
    edges[:10, 0] = -0.0
    cases["edges"] = (edges, rng.integers(0, 5, 250), None)
    # Single-sample classes (labels 0..9 once each, then a big class) and absent classes.
    y = np.concatenate([np.arange(10), np.full(90, 11)])
    cases["singletons_absent"] = (rng.standard_normal((100, 2)), y, 20)
    # Wide layer, low variance: mostly duplicates in the high dims.
    cases["wide"] = (rng.standard_normal((200, 300)) * 0.2, rng.integers(0, 10, 200), None)
    # Wider than the ~256 columns that binning fingerprints first (est_binning.sampled_columns,
    # runs of adjacent columns spread over the layer): rows distinct on those columns (the
    # early exit), and rows equal on them but not elsewhere, with exact duplicates too (the
    # whole-row path).
    cases["wide_sample_distinct"] = (rng.standard_normal((300, 600)) * 3.0, rng.integers(0, 10, 300), None)
    shared = rng.integers(0, 3, (240, 600)) * 0.5 + 0.1
    sampled = est_binning.sampled_columns(600)
    shared[:, sampled] = shared[0, sampled]
    shared[200:] = shared[:40]
    cases["wide_sample_shared"] = (shared, rng.integers(0, 6, 240), None)
    # One sample only.
    cases["one_sample"] = (np.array([[0.3, -0.7]]), np.array([0]), None)
    return cases


@pytest.mark.parametrize("case", list(_binning_cases()))
def test_binning_equals_np_unique_reference(case):
    t, y, c = _binning_cases()[case]
    t = np.asarray(t, np.float32)
    ref = ref_binning(t, y)
    got = binning_mi(t, y, num_classes=c)
    np.testing.assert_allclose(got["I_XT"], ref["I_XT"], atol=BIN_ATOL)
    np.testing.assert_allclose(got["I_TY"], ref["I_TY"], atol=BIN_ATOL)


def test_binning_bin_edges_are_floor():
    # 0.5 belongs to bin 1, just below 0.5 to bin 0, −0.5 to bin −1, −0.0 to bin 0.
    below = np.nextafter(np.float32(0.5), np.float32(0))
    t = np.array([[0.5], [0.75], [below], [0.0], [-0.0], [-0.5], [-0.25]], np.float32)
    # bins: 1, 1, 0, 0, 0, -1, -1 → counts 2, 3, 2
    got = binning_mi(t, np.zeros(7, int))
    p = np.array([2, 3, 2]) / 7
    np.testing.assert_allclose(got["I_XT"], -np.sum(p * np.log2(p)), atol=BIN_ATOL)
    assert abs(got["I_TY"]) < BIN_ATOL


@pytest.fixture
def fresh_binning_cache():
    """Clears the compiled binning cache around a test that monkeypatches its helpers."""
    for f in (est_binning.binning_core, est_binning.binning_grouped_core):
        f.clear_cache()
    yield
    for f in (est_binning.binning_core, est_binning.binning_grouped_core):
        f.clear_cache()


def test_hash_collision_falls_back_to_exact(monkeypatch, fresh_binning_cache):
    import jax.numpy as jnp

    def constant_hashes(sym):
        z = jnp.zeros((sym.shape[0],), jnp.uint32)
        return [z, z]  # every row collides with every other row

    calls = []
    real_fallback = est_binning.binning_numpy

    def spy(*args, **kwargs):
        calls.append(1)
        return real_fallback(*args, **kwargs)

    monkeypatch.setattr(est_binning, "row_hashes", constant_hashes)
    monkeypatch.setattr(est_binning, "binning_numpy", spy)
    rng = np.random.default_rng(8)
    t = (rng.standard_normal((97, 6)) * 0.7).astype(np.float32)
    t[50:60] = t[0]  # some genuine duplicates too
    y = rng.integers(0, 4, 97)
    ref = ref_binning(t, y)
    got = binning_mi(t, y)
    assert calls, "the collision check did not trigger the exact fallback"
    np.testing.assert_allclose(got["I_XT"], ref["I_XT"], atol=BIN_ATOL)
    np.testing.assert_allclose(got["I_TY"], ref["I_TY"], atol=BIN_ATOL)
    # With constant hashes but all rows identical there is no collision: no fallback, H = 0.
    calls.clear()
    same = np.tile(t[:1], (97, 1))
    got = binning_mi(same, y)
    assert not calls
    assert abs(got["I_XT"]) < BIN_ATOL and abs(got["I_TY"]) < BIN_ATOL


def test_binning_first_hash_collisions_still_exact(monkeypatch, fresh_binning_cache):
    """Distinct rows whose first 32-bit hash coincides (the one-key uniqueness sort then
    sees ties) must still come out distinct through the two-key check, and, with real
    duplicates present, through the grouped path."""
    import jax.numpy as jnp

    real = est_binning.row_hashes

    def coarse_first_hash(sym):
        h1, h2 = real(sym)
        return [h1 & jnp.uint32(3), h2]  # only 4 values: many ties in h1 alone

    monkeypatch.setattr(est_binning, "row_hashes", coarse_first_hash)
    rng = np.random.default_rng(11)
    for width in (6, 400):  # whole-row hashes, and the sampled-columns early exit
        t = (rng.standard_normal((120, width)) * 2.0).astype(np.float32)
        y = rng.integers(0, 5, 120)
        for dup in (False, True):
            if dup:
                t[60:70] = t[0]
            ref = ref_binning(t, y)
            got = binning_mi(t, y)
            np.testing.assert_allclose(got["I_XT"], ref["I_XT"], atol=BIN_ATOL, err_msg=f"{width} {dup}")
            np.testing.assert_allclose(got["I_TY"], ref["I_TY"], atol=BIN_ATOL, err_msg=f"{width} {dup}")


@pytest.mark.parametrize("limit", [0, 1 << 24])
def test_binning_class_counts_by_sort_and_by_scatter_agree(limit, monkeypatch, fresh_binning_cache):
    """H(T|Y) counts come from a scatter into a (group, class) table when it is small and from
    a sort of the pairs otherwise (GROUPED_SCATTER_LIMIT); both must equal np.unique."""
    monkeypatch.setattr(est_binning, "GROUPED_SCATTER_LIMIT", limit)
    for case in ("ties", "singletons_absent", "wide_sample_shared"):
        t, y, c = _binning_cases()[case]
        t = np.asarray(t, np.float32)
        ref = ref_binning(t, y)
        got = binning_mi(t, y, num_classes=c)
        np.testing.assert_allclose(got["I_XT"], ref["I_XT"], atol=BIN_ATOL, err_msg=case)
        np.testing.assert_allclose(got["I_TY"], ref["I_TY"], atol=BIN_ATOL, err_msg=case)


# --------------------------------------------------------------------------------------
# Formerly known problems, fixed: huge bin indices, and float32 cancellation in the Gram distances
# --------------------------------------------------------------------------------------


def test_binning_huge_values_keep_distinct_bins():
    t = np.array([[3e9], [4e9], [5e9]], np.float32)
    got = binning_mi(t, np.array([0, 1, 2]))
    np.testing.assert_allclose(got["I_XT"], math.log2(3), atol=BIN_ATOL)


def test_binning_sum_overflow_is_not_mistaken_for_non_finite_input():
    # The fast finiteness check sums the activations; 2e38 + 3e38 overflows float32 to +Inf,
    # and the elementwise check must then clear the (finite) input instead of raising.
    t = np.array([[2e38], [3e38], [1.0]], np.float32)
    got = binning_mi(t, np.array([0, 1, 1]), bin_size=1.0)
    np.testing.assert_allclose(got["I_XT"], math.log2(3), atol=BIN_ATOL)
    h_y = -(math.log2(1 / 3) / 3 + 2 * math.log2(2 / 3) / 3)  # distinct symbols: I(T;Y) = H(Y)
    np.testing.assert_allclose(got["I_TY"], h_y, atol=BIN_ATOL)
    t[2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        binning_mi(t, np.array([0, 1, 1]), bin_size=1.0)
    # KDE checks finiteness through the summed squared row norms: 1e20² overflows float32,
    # the elementwise check clears the input, and the float64 host path gives the answer.
    far = np.array([[1e20], [2e20], [0.0]], np.float32)
    got = kde_mi(far, np.array([0, 1, 1]))
    for m in ("kde_upper", "kde_lower"):
        np.testing.assert_allclose(got[m]["I_XT"], math.log2(3), atol=1e-4, err_msg=m)


def test_kde_tight_clusters_far_from_mean():
    rng = np.random.default_rng(1)
    n, d, c = 150, 10, 3
    y = rng.integers(0, c, n)
    centres = rng.standard_normal((c, d)) * 1e3
    t = (centres[y] + rng.standard_normal((n, d)) * 0.3).astype(np.float32)
    _assert_kde_close(kde_mi(t, y), ref_kde(t, y))


def test_kde_float64_path_only_when_float32_would_lose_precision(monkeypatch):
    calls = []
    real = kde_pass.kde_sums_float64

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(kde_pass, "kde_sums_float64", spy)
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 120)
    typical = rng.standard_normal((120, 50)).astype(np.float32)  # |t|² ≈ 50: float32 is exact enough
    _assert_kde_close(kde_mi(typical, y), ref_kde(typical, y))
    assert not calls
    far = typical * 0.05 + rng.standard_normal((3, 50)).astype(np.float32)[y] * 500
    _assert_kde_close(kde_mi(far, y), ref_kde(far, y))
    assert calls  # the float64 host path took over


def test_binning_information_is_never_negative():
    rng = np.random.default_rng(5)
    for _ in range(20):
        t = rng.standard_normal((97, 3)).astype(np.float32) * 0.1  # few symbols, labels independent
        got = binning_mi(t, rng.integers(0, 4, 97))
        assert got["I_TY"] >= 0.0 and got["I_XT"] >= 0.0
    one_symbol = binning_mi(np.full((1000, 4), 0.3, np.float32), rng.integers(0, 10, 1000))
    assert 0.0 <= one_symbol["I_XT"] < 1e-6 and 0.0 <= one_symbol["I_TY"] < 1e-6  # never −1e-7


# --------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------

_GOOD_T = np.zeros((6, 3), np.float32)
_GOOD_Y = np.array([0, 1, 2, 0, 1, 2])


def _bad_inputs():
    nan_t = _GOOD_T.copy()
    nan_t[2, 1] = np.nan
    inf_t = _GOOD_T.copy()
    inf_t[0, 0] = -np.inf
    return {
        "1d": (np.zeros(6, np.float32), _GOOD_Y, {}, "2-D"),
        "3d": (np.zeros((6, 2, 2), np.float32), _GOOD_Y, {}, "2-D"),
        "empty_rows": (np.zeros((0, 3), np.float32), np.zeros(0, int), {}, "empty"),
        "empty_cols": (np.zeros((6, 0), np.float32), _GOOD_Y, {}, "empty"),
        "labels_len": (_GOOD_T, _GOOD_Y[:5], {}, "one entry per row"),
        "labels_2d": (_GOOD_T, _GOOD_Y[:, None], {}, "1-D"),
        "labels_negative": (_GOOD_T, np.array([0, 1, -1, 0, 1, 2]), {}, "non-negative"),
        "labels_too_big": (_GOOD_T, _GOOD_Y, {"num_classes": 2}, "num_classes"),
        "labels_float": (_GOOD_T, _GOOD_Y.astype(np.float32), {}, "integers"),
        "nan": (nan_t, _GOOD_Y, {}, "NaN or Inf"),
        "inf": (inf_t, _GOOD_Y, {}, "NaN or Inf"),
    }


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_raises_helpful_value_error(case, method):
    t, y, kwargs, match = _bad_inputs()[case]
    with pytest.raises(ValueError, match=match):
        estimate_mi(t, y, method=method, **kwargs)


def test_bad_parameters_raise_value_error():
    with pytest.raises(ValueError, match="unknown estimator"):
        estimate_mi(_GOOD_T, _GOOD_Y, method="kde")
    with pytest.raises(ValueError, match="unknown estimator"):
        estimate(_GOOD_T, _GOOD_Y, methods=("binning", "mine"))
    for nv in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="noise_var"):
            kde_mi(_GOOD_T, _GOOD_Y, noise_var=nv)
        with pytest.raises(ValueError, match="noise_var"):
            estimate_mi(_GOOD_T, _GOOD_Y, method="kde_upper", noise_var=nv)
    for bs in (0.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="bin_size"):
            binning_mi(_GOOD_T, _GOOD_Y, bin_size=bs)
        with pytest.raises(ValueError, match="bin_size"):
            estimate_mi(_GOOD_T, _GOOD_Y, method="binning", bin_size=bs)
    with pytest.raises(ValueError, match="probes is empty"):
        estimate({}, _GOOD_Y)
    with pytest.raises(ValueError, match="probe 'bad'"):
        estimate({"ok": _GOOD_T, "bad": _GOOD_T[:4]}, _GOOD_Y)


def test_unknown_option_and_bad_probe_give_the_documented_messages():
    # An option no chosen estimator takes names the accepted ones (catches typos).
    msg = "unknown option(s) ['alpah'] for estimator(s) ['binning', 'kde_upper']; they accept " \
          "['bin_size', 'block_size', 'devices', 'noise_scale', 'noise_var', 'precision', 'rows']."
    for x in (_GOOD_T, {"p": _GOOD_T}):
        with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
            estimate(x, _GOOD_Y, methods=("binning", "kde_upper"), alpah=2.0)
    # A bad layer: the raw message for one array, prefixed with the probe's name in a mapping.
    raw = "labels must be a 1-D array with one entry per row of activations: got shape (6,) for 4 rows."
    with pytest.raises(ValueError, match=f"^{re.escape(raw)}$"):
        estimate(_GOOD_T[:4], _GOOD_Y)
    with pytest.raises(ValueError, match=f"^{re.escape('probe ' + repr('bad') + ': ' + raw)}$"):
        estimate({"ok": _GOOD_T, "bad": _GOOD_T[:4]}, _GOOD_Y)
    # One array must be [N, D]; probes of a mapping are flattened per sample.
    with pytest.raises(ValueError, match="^activations must be a 2-D array"):
        estimate(np.zeros((6, 2, 2), np.float32), _GOOD_Y)
    nan_t = _GOOD_T.copy()
    nan_t[1, 1] = np.nan
    with pytest.raises(ValueError, match="^probe 'conv': activations contain NaN or Inf"):
        estimate({"conv": nan_t.reshape(6, 3, 1)}, _GOOD_Y, methods=("binning",))


# --------------------------------------------------------------------------------------
# estimate over a mapping of probes, and compilation caching
# --------------------------------------------------------------------------------------


def by_method(per_probe):
    """{probe: {method: {key: v}}} re-indexed as {method: {key: [v per probe, in order]}}."""
    first = next(iter(per_probe.values()))
    return {m: {k: [per_probe[p][m][k] for p in per_probe] for k in first[m]} for m in first}


def test_estimate_on_probes_matches_single_layers_in_probe_order():
    rng = np.random.default_rng(9)
    n = 90
    y = rng.integers(0, 10, n)
    probes = {  # deliberately not in alphabetical or width order; one 4-D probe to flatten
        "zeta": rng.standard_normal((n, 40)).astype(np.float32),
        "alpha": (rng.standard_normal((n, 1)) * 3).astype(np.float32),
        "conv": rng.standard_normal((n, 3, 2, 2)).astype(np.float32) * 0.4,
        "mid": rng.standard_normal((n, 7)).astype(np.float32),
    }
    per_probe = estimate(probes, y, num_classes=10)
    assert list(per_probe) == list(probes)
    got = by_method(per_probe)
    assert list(got) == list(METHODS)
    for m in METHODS:
        assert len(got[m]["I_XT"]) == len(got[m]["I_TY"]) == len(probes)
    for i, (name, act) in enumerate(probes.items()):
        single = estimate(act.reshape(n, -1), y, num_classes=10)
        for m in METHODS:
            for k in ("I_XT", "I_TY"):
                np.testing.assert_allclose(got[m][k][i], single[m][k], rtol=1e-6, atol=1e-7,
                                           err_msg=f"{name} {m} {k}")
    sub = by_method(estimate(probes, y, methods=("binning",)))
    assert list(sub) == ["binning"] and sub["binning"]["I_XT"] == got["binning"]["I_XT"]


@pytest.mark.parametrize("kwargs", [{}, {"methods": ("binning", "kde_lower", "renyi"), "bootstrap": 3}])
def test_estimate_on_one_array_equals_estimate_on_a_one_probe_mapping(kwargs):
    rng = np.random.default_rng(12)
    y = rng.integers(0, 4, 70)
    t = (rng.standard_normal((70, 6)) * 0.5 + rng.standard_normal((4, 6))[y]).astype(np.float32)
    single = estimate(t, y, **kwargs)
    assert single == estimate({"p": t}, y, **kwargs)["p"]
    assert list(single) == list(kwargs.get("methods", METHODS))


def test_kde_does_not_recompile_for_same_shapes():
    rng = np.random.default_rng(10)
    t = rng.standard_normal((77, 9)).astype(np.float32)
    y = rng.integers(0, 3, 77)
    first = kde_mi(t, y)
    size = kde_pass.kde_sums._cache_size()
    # New values, new noise_var (a traced argument) and new bin_size: same compiled programs.
    second = kde_mi(t * 2 + 1, y[::-1].copy(), noise_var=0.3)
    binning_mi(t, y)
    bsize = est_binning.binning_core._cache_size()
    binning_mi(t * 3, y, bin_size=0.25)
    assert kde_pass.kde_sums._cache_size() == size
    assert est_binning.binning_core._cache_size() == bsize
    assert first != second


def test_kde_exact_fallback_on_the_device(monkeypatch):
    """Accelerators redo a layer whose float32 Gram distances could be too coarse on the device,
    with direct differences (forced here on CPU): the float64 reference, and no host pass."""
    from jaxmi import backend

    monkeypatch.setattr(backend, "exact_kde_on_device", lambda: True)
    monkeypatch.setattr(kde_pass, "kde_sums_float64", lambda *a, **k: pytest.fail("the host float64 path ran"))
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 120)
    far = (rng.standard_normal((120, 50)) * 0.05 + rng.standard_normal((3, 50))[y] * 500).astype(np.float32)
    _assert_kde_close(kde_mi(far, y), ref_kde(far, y))
    wide = (rng.standard_normal((60, 700)) * 0.02 + rng.standard_normal((3, 700))[y[:60]] * 300).astype(np.float32)
    _assert_kde_close(kde_mi(wide, y[:60], block_size=16), ref_kde(wide, y[:60]))
    d = kde_pass.direct_distances(jax.numpy.asarray(wide[:16]), jax.numpy.asarray(wide[16:32]),
                                  chunk_bytes=4 * 16 * 16 * 37)
    ref = ((wide[:16, None].astype(np.float64) - wide[None, 16:32]) ** 2).sum(-1)
    np.testing.assert_allclose(np.asarray(d), ref, rtol=1e-5)


@pytest.mark.parametrize("case", ["shuffled", "every_pair_shares", "contiguous"])
def test_kde_sums_class_order_equals_the_unsorted_pass_and_float64(case):
    """The pass reads the rows in class order and skips the same-class products of block pairs
    that share no class: with bootstrap weights, the sums, nearest neighbours and bits equal the
    unsorted pass (every pair computes both) and the float64 host pass, up to float32 rounding.
    Cases: shuffled labels (most pairs skip); one class spanning every block, so that every pair
    shares it (none skips); classes already contiguous (the order is the identity)."""
    from jaxmi.estimators.bootstrap import resample_weights
    from jaxmi.estimators.joint_pass import class_blocks
    from jaxmi.estimators.kde import kde_from_sums

    rng = np.random.default_rng(5)
    n, d, b = 150, 6, 24  # 7 blocks, the last one padded
    y = {"shuffled": rng.integers(0, 5, n),
         "every_pair_shares": np.r_[0, np.ones(n - 2, int), 2][rng.permutation(n)],
         "contiguous": np.repeat(np.arange(5), n // 5)}[case].astype(np.int32)
    c = int(y.max()) + 1
    t = (rng.normal(0, 0.5, (c, d))[y] + 0.3 * rng.normal(0, 1, (n, d))).astype(np.float32)
    order, _, cross = class_blocks(y, b)
    assert (len(cross) == 0) == (case == "every_pair_shares")  # the case holds: pairs skip, or none does
    if case == "contiguous":
        assert order[:n].tolist() == list(range(n))
    w = resample_weights(n, 4, jax.random.key(3))
    args = (jax.numpy.asarray(t), jax.numpy.asarray(y), jax.numpy.asarray(w), np.float32(NOISE_VAR))
    new = kde_pass.kde_sums(*args, num_classes=c, block_size=b)
    old = kde_pass.kde_sums(*args, num_classes=c, block_size=b, class_order=False)
    ref, nn64 = kde_pass.kde_sums_float64(t, y, w, (2 * NOISE_VAR, 8 * NOISE_VAR), c, b)
    assert float(new[2]) == pytest.approx(float(old[2]), rel=1e-6) and bool(new[1])
    for sums, nn in ((new[0], new[3]), (old[0], old[3])):
        np.testing.assert_allclose(np.asarray(sums), ref, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(nn), nn64, rtol=1e-4)
    r = w.shape[0]  # at 8σ² the same-class sums hold neighbours (not just the diagonal), the others more
    assert np.mean(ref[:, 1, r:]) > 2.0 and np.max(ref[:, 1, :r] - ref[:, 1, r:]) > 0.5
    bits = [np.asarray(kde_from_sums(s, args[1], args[2], num_classes=c)) for s in (new[0], old[0])]
    np.testing.assert_allclose(bits[0], bits[1], rtol=0, atol=1e-5 * max(1.0, float(np.abs(bits[1]).max())))
