"""Scale-free KDE (σ² in units of a layer's spread) and finding 2's scale-free rules, against
float64 NumPy references and constructed inputs."""

import math

import jax
import numpy as np
import pytest

from jaxmi.estimators import estimate
from jaxmi.estimators.bootstrap import resample_weights
from jaxmi.estimators.kde import kde_compute, kde_sweep, spread
from jaxmi.estimators.scale_free import (BAND, RELATIVE_GRID, nll_at_temperatures, scale_free_sweep,
                                         temperature_curve)
from jaxmi.estimators.validation import validate
from jaxmi.findings.finding2_scale import (decide_scale_free, fit_shift, shift_alignment, temperature_evidence,
                                           temperature_match)

KDE = ("kde_upper", "kde_lower")


def _layer(n=120, d=5, seed=0, k=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3.0, (k, d))
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(0, 1.0, (n, d))).astype(np.float32), y.astype(np.int32)


def _kde_ref(t, noise_var):
    """I(X;T) of both bounds, float64 NumPy (dense)."""
    t = np.asarray(t, np.float64)
    d = ((t[:, None, :] - t[None, :, :]) ** 2).sum(-1)
    n = len(t)
    return {m: (math.log(n) - np.mean(np.log(np.exp(-d / (s * noise_var)).sum(1)))) / math.log(2)
            for m, s in (("kde_upper", 2.0), ("kde_lower", 8.0))}


def test_spread_is_the_mean_squared_distance_to_the_centroid_and_scale_covariant():
    t, _ = _layer()
    ref = float(np.mean(np.sum((t.astype(np.float64) - t.mean(0, dtype=np.float64)) ** 2, axis=1)))
    assert spread(t) == pytest.approx(ref, rel=1e-5)
    for c in (0.1, 10.0):
        assert spread(c * t) == pytest.approx(c * c * ref, rel=1e-5)
    with pytest.raises(ValueError, match=r"spread: t must be an \[N, D\] array"):
        spread(np.zeros(5))


def test_relative_noise_scale_means_units_of_the_spread_and_is_scale_free():
    t, y = _layer()
    s = spread(t)
    for c in (1.0, 0.1, 10.0):
        rel = estimate(c * t, y, methods=KDE, noise_var=0.05, noise_scale="relative")
        ref = _kde_ref(t, 0.05 * s)  # the unscaled layer at the absolute σ² = 0.05 · spread
        for m in KDE:
            assert rel[m]["noise_var"] == pytest.approx(0.05 * c * c * s, rel=1e-5)
            assert rel[m]["I_XT"] == pytest.approx(ref[m], abs=2e-4)
    const = np.ones((10, 3), np.float32)
    with pytest.raises(ValueError, match="spread .* is 0.0; use noise_scale='absolute'"):
        estimate(const, np.arange(10) % 2, methods=KDE, noise_scale="relative")


def test_the_spread_keeps_compression_that_the_nearest_neighbour_distance_normalises_away():
    """Tighter class clusters at the same centres: at σ² relative to the spread I(X;T) drops by
    more than a bit (the clusters merge); in units of the nearest-neighbour distance, which
    shrinks with the clusters, it would barely move."""
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 10.0, (4, 6))
    y = np.repeat(np.arange(4), 50)
    noise = rng.normal(0, 1.0, (200, 6))
    loose, tight = centres[y] + noise, centres[y] + 0.05 * noise
    rel = [estimate(a.astype(np.float32), y, methods=("kde_upper",), noise_var=2 ** -9,
                    noise_scale="relative")["kde_upper"]["I_XT"] for a in (loose, tight)]
    assert rel[0] - rel[1] > 1.0

    def nn_relative(a, v):
        d = ((a[:, None] - a[None]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        return _kde_ref(a, v * np.median(d.min(1)))["kde_upper"]

    assert abs(nn_relative(loose, 1.0) - nn_relative(tight, 1.0)) < 0.3


def test_kde_sweep_with_bootstrap_weights_equals_kde_compute_per_sigma2():
    t, y = _layer(n=90)
    tt, yy, c = validate(t, y, None)
    w = resample_weights(90, 5, jax.random.key(2))
    nv = [0.05, 0.1, 0.2, 0.4]
    sw = kde_sweep(tt, yy, c, nv, weights=w)
    assert sw["kde_upper_I_XT"].shape == (4, 6)
    for k, v in enumerate(nv):
        one = kde_compute(tt, yy, c, w, noise_var=v)
        for m in KDE:
            np.testing.assert_allclose(sw[f"{m}_I_XT"][k], one[m][0], atol=2e-4)
            np.testing.assert_allclose(sw[f"{m}_I_TY"][k], one[m][1], atol=2e-4)


def test_scale_free_sweep_is_invariant_under_scaling_and_checks_its_weights():
    t, y = _layer(n=100)
    w = resample_weights(100, 4, jax.random.key(0))
    base = scale_free_sweep(t, y, w)
    assert base["kde_lower"]["I_XT"].shape == (len(RELATIVE_GRID), 5) and set(BAND) <= set(RELATIVE_GRID)
    ref = _kde_ref(t, RELATIVE_GRID[8] * base["spread"])
    assert base["kde_upper"]["I_XT"][8, 0] == pytest.approx(ref["kde_upper"], abs=2e-4)
    for c in (0.1, 10.0):
        other = scale_free_sweep(c * t, y, w)
        for m in KDE:
            np.testing.assert_allclose(other[m]["I_XT"], base[m]["I_XT"], atol=1e-3)
    with pytest.raises(ValueError, match=r"weights must be \[R, N\] with N = 100"):
        scale_free_sweep(t, y, w[:, :50])
    with pytest.raises(ValueError, match="grid must be a non-empty list"):
        scale_free_sweep(t, y, w, grid=[0.1, -1.0])


def test_scale_free_sweep_uses_the_resamples_of_the_main_estimates():
    """A run's scale-free sweep takes resample_weights(N, R, key) with the run's key: the same
    resamples as estimate(..., bootstrap=R, key=key), so NT − AT is paired across both."""
    t, y = _layer(n=90, seed=4)
    key = jax.random.key(7)
    main = estimate(t, y, methods=KDE, noise_var=0.125, noise_scale="relative", bootstrap=6, key=key)
    sw = scale_free_sweep(t, y, resample_weights(90, 6, key), grid=[0.125])
    for m in KDE:
        np.testing.assert_allclose(sw[m]["I_XT"][0, 1:], main[m]["I_XT_resamples"], atol=2e-4)
        assert sw[m]["I_XT"][0, 0] == pytest.approx(main[m]["I_XT"], abs=2e-4)


# ----------------------------------------------------------------------------- the verdict

CEIL = math.log2(128)
P = 3


def _sf(levels, *, r=30, se=0.02, rng=None, shared=None):
    """A scale-free sweep whose curve for probe p is ``levels[p](log2 v)``; resamples with a shared jitter."""
    g = np.asarray(RELATIVE_GRID)
    out = {"noise_var": g.tolist(), "spread": [1.0] * P}
    for m in KDE:
        full = np.array([[min(CEIL, max(0.0, levels[p](np.log2(v)))) for v in g] for p in range(P)])
        boot = full[..., None] + shared + rng.normal(0, 0.002, shared.shape)
        out[m] = {"I_XT": full.tolist(), "I_TY": (0.3 * full).tolist(), "I_XT_resamples": boot.tolist()}
    return out


def _seeds(nt_levels, at_levels, k=1, r=30, se=0.02):
    rng = np.random.default_rng(1)
    out = []
    for _ in range(k):
        shared = rng.normal(0, se, (P, len(RELATIVE_GRID), r))
        out.append({"nt": {"scale_free": _sf(nt_levels, rng=rng, shared=shared)},
                    "at": {"scale_free": _sf(at_levels, rng=rng, shared=shared)}})
    return out


def _curve(offset, top=CEIL):
    """Decreasing in log2 v: the ceiling at small v, 0 at large v."""
    return [lambda x, p=p: top - 0.8 * (x + 12 - offset - p) for p in range(P)]


def test_scale_free_verdict_holds_fails_and_is_untestable():
    nt, at = _curve(0.0), _curve(-1.0)  # AT reaches each value one octave of v earlier: 0.8 bits less
    rec, ev = decide_scale_free(_seeds(nt, at), CEIL, None)
    assert rec["holds"] is True and rec["effect"] > 0.3 and rec["ci95"][0] > 0
    assert ev["band"] == list(BAND) and sum(ev["cells"][0].values()) == 2 * P * len(BAND)
    rec, _ = decide_scale_free(_seeds(at, nt), CEIL, None)  # reversed: fails
    assert rec["holds"] is False and rec["effect"] < 0
    rec, _ = decide_scale_free(_seeds(nt, nt), CEIL, None)  # equal: not a pass
    assert rec["holds"] is False and rec["effect"] == pytest.approx(0.0, abs=1e-9)
    rec, ev = decide_scale_free(_seeds(nt, at, k=3), CEIL, None)  # three seeds: the seed interval
    assert rec["holds"] is True and rec["seeds"] == 3
    sat = [lambda x: CEIL] * P  # every cell at the ceiling on both sides
    rec, ev = decide_scale_free(_seeds(sat, sat), CEIL, None)
    assert rec["holds"] is None and "saturated on both sides" in rec["reason"]
    assert ev["cells"][0]["both_ceiling"] == 2 * P * len(BAND)
    rec, _ = decide_scale_free(_seeds(nt, at), CEIL, "the networks did not learn")
    assert rec["holds"] is None and rec["reason"] == "the networks did not learn"
    rec, _ = decide_scale_free([{"nt": {}, "at": {}}], CEIL, None)
    assert rec["holds"] is None and "no scale-free sweep" in rec["reason"]
    coarse = _seeds(nt, at)
    for h in coarse[0].values():
        h["scale_free"]["noise_var"] = [v * 3 for v in h["scale_free"]["noise_var"]]
    rec, _ = decide_scale_free(coarse, CEIL, None)
    assert rec["holds"] is None and "does not cover the pre-registered band" in rec["reason"]


def test_one_sided_ceiling_cells_are_kept_and_counted():
    nt = [lambda x: CEIL] * P  # NT at the ceiling everywhere, AT below it: kept, counted as NT-censored
    at = _curve(-2.0)
    rec, ev = decide_scale_free(_seeds(nt, at), CEIL, None)
    c = ev["cells"][0]
    assert c["nt_ceiling"] > 0 and c["at_ceiling"] == 0 and rec["holds"] is True
    band_at = np.array([[at[p](np.log2(v)) for v in BAND] for p in range(P)])
    kept = np.clip(band_at, 0, CEIL) < CEIL - 0.01
    expected = np.mean(np.where(kept, CEIL - np.clip(band_at, 0, CEIL), 0.0)[kept])
    assert rec["effect"] == pytest.approx(expected, abs=1e-9)
    assert ev["effect_without_at_censored"][0] == pytest.approx(rec["effect"])
    assert ev["effect_informative"][0] is None  # no cell informative on both sides


# ----------------------------------------------------------------------------- shift alignment


def _logistic(x, mid, top=7.0, width=1.5):
    return top / (1.0 + np.exp((x - mid) / width))


def test_fit_shift_recovers_a_pure_scale_with_zero_residual():
    x = np.arange(-14, 3, 1.0) + 2.0
    nt = _logistic(x, 0.0)[None, :]
    x_at = np.arange(-14, 3, 1.0) - 3.3  # another spread: another absolute grid
    at = _logistic(x_at, -2.6)[None, :]  # AT = NT's curve at σ² · 2^-2.6: activations 2^-1.3 times NT's
    s, res = fit_shift(x, nt, x_at, at, ceiling=CEIL)
    assert s[0] == pytest.approx(-2.6, abs=0.02)
    assert np.nanmax(np.abs(res)) < 0.05  # linear interpolation of the logistic between octaves


def test_fit_shift_leaves_a_residual_of_one_sign_for_a_geometry_difference():
    x = np.arange(-14, 3, 1.0)
    nt = _logistic(x, 0.0, top=7.0)[None, :]
    at = _logistic(x, -1.0, top=5.0)[None, :]  # fewer bits at every scale: no shift maps it onto NT
    s, res = fit_shift(x, nt, x, at, ceiling=CEIL)
    assert np.isfinite(s[0]) and np.nanmin(res[0][x < -4]) > 0.5
    flat = np.full((1, len(x)), CEIL)
    s, res = fit_shift(x, flat, x, at, ceiling=CEIL)  # NT flat at the ceiling: every shift fits
    assert np.isnan(s[0]) and np.all(np.isnan(res))


def test_shift_alignment_reports_c_and_the_residual_with_intervals():
    nt, at = _curve(0.0, top=CEIL + 1), _curve(-1.0, top=CEIL + 1)  # clipped to the ceiling: AT is NT shifted one octave
    ev = shift_alignment(_seeds(nt, at), ["a", "b", "c"], CEIL)
    row = ev["kde_upper"][0]
    assert row["c"] == pytest.approx(2 ** -0.5, rel=0.02) and row["c_ci95"][0] <= row["c"] <= row["c_ci95"][1]
    assert row["residual_sign"] == "none" and len(row["residual"]) == len(RELATIVE_GRID)
    assert row["residual_band_ci95"][0] < 0 < row["residual_band_ci95"][1]
    assert row["residual_band_rms"] < 0.01  # the full sample: an exact shift (up to the search resolution)
    weaker = _seeds(nt, [lambda x, p=p: 0.6 * min(CEIL, max(0.0, nt[p](x))) for p in range(P)])
    ev = shift_alignment(weaker, ["a", "b", "c"], CEIL)  # 0.6 times NT's bits: no shift maps it onto NT
    assert all(r["residual_band_rms"] > 0.3 and r["residual_sign"] != "none" for r in ev["kde_lower"])
    sat = [lambda x: CEIL] * P
    ev = shift_alignment(_seeds(sat, at), ["a", "b", "c"], CEIL)
    assert all(r["c"] is None and "flat" in r["reason"] for r in ev["kde_upper"])


# ----------------------------------------------------------------------------- logits


def test_nll_at_temperatures_matches_a_direct_float64_cross_entropy():
    rng = np.random.default_rng(0)
    z, y = rng.normal(0, 3, (50, 10)), rng.integers(0, 10, 50)
    for tau in (0.5, 1.0, 4.0):
        p = np.exp(z / tau) / np.exp(z / tau).sum(1, keepdims=True)
        assert nll_at_temperatures(z, y, [tau])[0] == pytest.approx(-np.mean(np.log(p[np.arange(50), y])), rel=1e-12)


def test_temperature_curve_is_the_kde_of_the_tempered_logits():
    rng = np.random.default_rng(1)
    z, y = (rng.normal(0, 2, (80, 10))).astype(np.float32), rng.integers(0, 10, 80)
    cur = temperature_curve(z, y, 0.1, taus=[0.5, 1.0, 2.0])
    for k, tau in enumerate((0.5, 1.0, 2.0)):
        ref = _kde_ref(z / tau, 0.1)
        assert cur["kde_lower"]["I_XT"][k] == pytest.approx(ref["kde_lower"], abs=2e-4)


def test_temperature_match_finds_the_softening_root_or_none():
    tau = 2.0 ** (np.arange(-32, 33) / 8)
    nll = 1.0 + (np.log(tau) - np.log(2.0)) ** 2  # minimum 1.0 at τ = 2
    curve = {"tau": tau.tolist(), "nll": nll.tolist()}
    assert temperature_match(curve, 1.0 + np.log(2.0) ** 2) == pytest.approx(4.0, rel=1e-2)  # not the root at 1
    assert temperature_match(curve, 0.5) is None  # below NT's best NLL
    info = {m: {"I_XT": (5.0 - np.log2(tau)).tolist(), "I_TY": [1.0] * len(tau)} for m in KDE}
    at = {"tau": tau.tolist(), "nll": (1.0 + np.log(2.0) ** 2 + 0 * tau).tolist(),
          **{m: {"I_XT": [2.0] * len(tau), "I_TY": [1.0] * len(tau)} for m in KDE}}
    ev = temperature_evidence([{"nt": {"scale_free": {"temperature": {**curve, **info}}},
                                "at": {"scale_free": {"temperature": at}}}])
    row = ev["per_seed"][0]
    assert row["tau"] == pytest.approx(4.0, rel=1e-2) and row["at_nll"] == pytest.approx(1.0 + np.log(2.0) ** 2)
    assert row["kde_lower"]["I_XT"]["nt_tempered"] == pytest.approx(3.0, abs=0.02)
    assert row["kde_lower"]["I_XT"]["nt"] == pytest.approx(5.0) and row["kde_lower"]["I_XT"]["at"] == 2.0
