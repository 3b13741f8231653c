"""Trustworthy MI: diagnostics, the scale identity, calibration against known answers, sweeps."""

import math

import jax
import numpy as np
import pytest

from jaxmi import estimators
from jaxmi.estimators import SATURATION_GAP_BITS, estimate, estimate_mi, sweep_bins, sweep_noise

KDE = ("kde_upper", "kde_lower")


def _layer(n=200, d=16, scale=1.0, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(n, d))).astype(np.float32), rng.integers(0, classes, n)


def _entropy_bits(y):
    p = np.bincount(y) / len(y)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _brute_kde(t, noise_var):
    """float64 reference: median nearest-neighbour squared distance and kernel row sums per bound."""
    t = np.asarray(t, np.float64)
    d = ((t[:, None] - t[None]) ** 2).sum(-1)
    off = d + np.diag(np.full(len(t), np.inf))
    sums = {m: np.exp(-d / s).sum(1) for m, s in (("kde_upper", 2 * noise_var), ("kde_lower", 8 * noise_var))}
    return float(np.median(off.min(1))), sums


@pytest.mark.parametrize("scale,d,saturated", [(30.0, 16, True), (0.03, 4, False)])
def test_diagnostics_on_saturated_and_unsaturated_layers(scale, d, saturated):
    t, y = _layer(scale=scale, d=d)
    res = estimate(t, y, methods=("kde_upper", "kde_lower", "binning"))
    med, sums = _brute_kde(t, 0.1)
    for m, r in res.items():
        assert r["I_XT_ceiling"] == pytest.approx(math.log2(len(y)))
        assert r["I_TY_ceiling"] == pytest.approx(_entropy_bits(y))
        assert r["I_XT_gap"] == pytest.approx(r["I_XT_ceiling"] - r["I_XT"])
        assert r["I_TY_gap"] == pytest.approx(r["I_TY_ceiling"] - r["I_TY"])
        assert r["saturated"] is saturated == (r["I_XT_gap"] < SATURATION_GAP_BITS)
    for m, width in (("kde_upper", 0.2), ("kde_lower", 0.8)):
        r = res[m]
        assert r["nn_sq_dist_over_width"] == pytest.approx(med / width, rel=1e-4)
        assert r["self_dominated_share"] == pytest.approx(np.mean(sums[m] < 1.01), abs=1e-9)
        assert r["noise_var"] == pytest.approx(0.1)
    if saturated:  # every point its own cluster: far beyond the kernel width, only its own term
        assert res["kde_upper"]["nn_sq_dist_over_width"] > 100 and res["kde_upper"]["self_dominated_share"] == 1.0
    else:
        assert res["kde_lower"]["I_XT_gap"] > 1.0 and res["kde_upper"]["self_dominated_share"] == 0.0
    single = estimate_mi(t, y, method="kde_upper")
    assert single["saturated"] is saturated and "I_XT" in single and "I_TY" in single


@pytest.mark.parametrize("c", [0.1, 3.0, 40.0])
def test_kde_scale_identity(c):
    """Î(cT, σ²) = Î(T, σ²/c²) for every KDE quantity (distances scale by c²)."""
    t, y = _layer(n=150, d=8, scale=0.5, seed=1)
    a = estimate(c * t, y, methods=KDE, noise_var=0.1)
    b = estimate(t, y, methods=KDE, noise_var=0.1 / c ** 2)
    for m in KDE:
        for q in ("I_XT", "I_TY"):
            assert a[m][q] == pytest.approx(b[m][q], abs=2e-4), (m, q)


def test_calibration_well_separated_points_reach_the_ceilings():
    t, y = _layer(n=300, d=10, scale=1e3, seed=2)
    res = estimate(t, y, methods=("kde_upper", "kde_lower", "binning"))
    for m, r in res.items():
        assert r["I_XT"] == pytest.approx(math.log2(300), abs=1e-4), m
        assert r["I_TY"] == pytest.approx(_entropy_bits(y), abs=1e-4), m


def test_calibration_identical_points_carry_nothing():
    y = np.arange(120) % 3
    t = np.tile(np.float32([[0.3, -1.2, 5.0]]), (120, 1))
    res = estimate(t, y, methods=("kde_upper", "kde_lower", "binning"))
    for m, r in res.items():
        assert r["I_XT"] == pytest.approx(0.0, abs=1e-5) and r["I_TY"] == pytest.approx(0.0, abs=1e-5), m
        assert not r["saturated"]


def test_kde_bounds_bracket_a_monte_carlo_mixture_entropy():
    """I(X;T) = H(T + Z) − H(Z) of the Gaussian mixture, by Monte Carlo in float64, lies between
    the Bhattacharyya (lower) and pairwise-KL (upper) estimates."""
    rng = np.random.default_rng(3)
    n, d, s2 = 40, 2, 0.3
    centres = rng.normal(size=(n, d))
    y = np.arange(n) % 2
    samples = 200_000
    z = centres[rng.integers(0, n, samples)] + math.sqrt(s2) * rng.normal(size=(samples, d))
    sq = ((z[:, None, :] - centres[None]) ** 2).sum(-1)  # [samples, n]
    log_p = np.logaddexp.reduce(-sq / (2 * s2), axis=1) - math.log(n) - d / 2 * math.log(2 * math.pi * s2)
    h_mix = -log_p.mean()
    se = log_p.std() / math.sqrt(samples)
    i_true = (h_mix - d / 2 * math.log(2 * math.pi * math.e * s2)) / math.log(2)
    res = estimate(centres.astype(np.float32), y, methods=KDE, noise_var=s2)
    margin = 4 * se / math.log(2)
    lo, hi = res["kde_lower"]["I_XT"], res["kde_upper"]["I_XT"]
    assert lo + 0.02 < hi  # the case is not degenerate: the bounds differ
    assert lo - margin <= i_true <= hi + margin, (lo, i_true, hi)


def test_sweep_noise_matches_single_calls_and_bins_match_binning():
    t, y = _layer(n=180, d=12, scale=0.7, seed=4)
    grid = [1e-3, 1e-2, 0.1, 1.0, 10.0]
    for m in KDE:
        sw = sweep_noise(t, y, grid, method=m)
        assert sw["noise_var"] == grid
        for v, ixt, ity in zip(grid, sw["I_XT"], sw["I_TY"]):
            ref = estimate_mi(t, y, method=m, noise_var=v)
            assert ixt == pytest.approx(ref["I_XT"], abs=1e-4) and ity == pytest.approx(ref["I_TY"], abs=1e-4)
    sizes = [0.01, 0.5, 4.0]
    sb = sweep_bins(t, y, sizes)
    for b, ixt, ity in zip(sizes, sb["I_XT"], sb["I_TY"]):
        ref = estimate_mi(t, y, method="binning", bin_size=b)
        assert ixt == ref["I_XT"] and ity == ref["I_TY"]
    with pytest.raises(ValueError, match="method must be 'kde_upper' or 'kde_lower'"):
        sweep_noise(t, y, grid, method="binning")
    with pytest.raises(ValueError, match="noise_var must be > 0"):
        sweep_noise(t, y, [0.1, -1.0])


def test_relative_noise_scale_is_scale_free():
    """σ² in units of the layer's spread (mean squared distance to the centroid): the estimate at
    σ² = v · spread, and the same at every activation scale."""
    t, y = _layer(n=160, d=6, scale=0.4, seed=5)
    t64 = np.asarray(t, np.float64)
    spread = float(np.mean(np.sum((t64 - t64.mean(0)) ** 2, axis=1)))
    rel = estimate(t, y, methods=KDE, noise_var=0.5, noise_scale="relative")
    ab = estimate(t, y, methods=KDE, noise_var=0.5 * spread)
    for m in KDE:
        assert rel[m]["noise_var"] == pytest.approx(0.5 * spread, rel=1e-4)
        assert rel[m]["I_XT"] == pytest.approx(ab[m]["I_XT"], abs=2e-4)
    scaled = estimate(25.0 * t, y, methods=KDE, noise_var=0.5, noise_scale="relative")
    for m in KDE:  # the same layer at another activation scale reads the same
        assert scaled[m]["I_XT"] == pytest.approx(rel[m]["I_XT"], abs=2e-4)
        assert scaled[m]["I_TY"] == pytest.approx(rel[m]["I_TY"], abs=2e-4)
    sw = sweep_noise(25.0 * t, y, [0.5, 2.0], noise_scale="relative")
    assert sw["I_XT"][0] == pytest.approx(rel["kde_upper"]["I_XT"], abs=2e-4)
    assert sw["noise_var_absolute"][0] == pytest.approx(0.5 * 625 * spread, rel=1e-4)
    with pytest.raises(ValueError, match="noise_scale must be one of"):
        estimate(t, y, methods=KDE, noise_scale="log")
    same = np.repeat(t[:1], 12, axis=0)
    with pytest.raises(ValueError, match="rows are not all equal"):
        estimate(same, np.arange(12) % 2, methods=KDE, noise_scale="relative")


def test_diagnostics_keep_bootstrap_and_registered_estimators_working():
    t, y = _layer(n=90, seed=6)
    r = estimate(t, y, methods=("kde_upper",), bootstrap=4, key=jax.random.key(1))["kde_upper"]
    assert {"I_XT_se", "I_XT_lo", "saturated", "I_XT_gap"} <= set(r)
    estimators.register_estimator("half_ceiling", lambda a, l, num_classes: {"I_XT": math.log2(len(l)) / 2,
                                                                                  "I_TY": 0.0}, overwrite=True)
    try:
        r = estimate(t, y, methods=("half_ceiling",))["half_ceiling"]
        assert r["I_XT_gap"] == pytest.approx(math.log2(90) / 2) and not r["saturated"]
    finally:
        estimators.unregister_estimator("half_ceiling")
