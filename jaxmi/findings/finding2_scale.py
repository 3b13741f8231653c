"""Finding 2, scale-free: does an AT layer carry less information about X, or only smaller activations?

A KDE estimate at one absolute σ² (the paper's 0.1) mixes information with activation scale:
the estimate of c·T at σ² equals that of T at σ²/c². This module decides, from the scale-free
sweep of every run (:mod:`jaxmi.estimators.scale_free`: σ² = v · spread(T), spread the mean
squared distance of the layer's rows to their centroid, measured on the clean MI draw at the
last measurement for the full sample and every bootstrap resample of the run):

* ``at_less_information_scale_free`` (pre-registered primary endpoint of the question). The
  effect is ΔI = I_NT − I_AT of clean I(X;T), pooled (an unweighted mean) over the *cells*
  (KDE bound ∈ {upper, lower}) × probe × v ∈ :data:`jaxmi.estimators.scale_free.BAND`
  (v = 2^-8 … 2^0 of the spread, ratio 2). A cell is excluded only when both networks are
  within :data:`jaxmi.estimators.SATURATION_GAP_BITS` of log₂ N (both at the ceiling) or
  both below that many bits (both at the floor): there the estimator cannot tell them apart.
  A cell where only one side is at the ceiling is kept, with the ceiling value as a censored
  estimate: NT at the ceiling makes ΔI too small (conservative), AT at the ceiling makes it
  too large; both counts, and the effect without the AT-censored cells and without any
  censored cell, are in the evidence. Paired bootstrap (the same resamples for NT and AT, and
  the same cells on every resample) and seed interval (:func:`jaxmi.verdicts.record`); holds
  when the interval lies above 0. Untestable when a network did not learn, when the run has no
  scale-free sweep, or when every cell of some seed is excluded.
* Shift alignment (evidence): per bound and probe, the factor ĉ that best maps AT's curve of
  I(X;T) against log σ² onto NT's (least squares over NT's grid points of
  I_NT(x) − I_AT(x + log₂ ĉ²), AT's curve linearly interpolated in x = log₂ σ² and held
  constant past its ends), refitted on every resample; ĉ reads as "AT's activations are ĉ
  times NT's". The residual ΔI curve after the shift is reported with its intervals, with its
  mean over the band (``residual_band``, interval; ``residual_sign`` positive / negative / none)
  and its root mean square there (``residual_band_rms``): a residual near 0 at every σ² means
  the two layers differ by scale alone; a residual away from 0 means they differ in geometry
  (the least-squares shift centres the residual, so a difference in shape often leaves one
  of mixed sign: the band mean then says which side dominates in the band).
* Temperature control of the logits (evidence): the τ at which NT's NLL on the MI draw, with
  its logits divided by τ, equals AT's (the root on the softening side of NT's NLL minimum,
  from the measured NLL curve interpolated in log τ), and I(X;T), I(T;Y) of NT's logits/τ
  against AT's logits at the paper's σ².
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxmi.estimators import SATURATION_GAP_BITS
from jaxmi.estimators.scale_free import BAND
from jaxmi.verdicts import interval, record, untestable

__all__ = ["BOUNDS", "band_cells", "pooled_scale_free", "decide_scale_free", "fit_shift", "shift_alignment",
           "temperature_match", "temperature_evidence", "scale_free_lines", "RULE"]

BOUNDS = ("kde_upper", "kde_lower")
RULE = ("clean I(X;T) NT − AT at the last measurement, σ² in units of each layer's mean squared distance to its "
        "centroid, pooled over (KDE bound × probe × relative σ² = 2^-8 … 2^0); cells where both networks are at "
        f"log2 N or both below {SATURATION_GAP_BITS} bits excluded, one-sided ceiling cells kept as censored "
        "values; holds when its 95% interval lies above 0")


def _band_index(grid, band) -> np.ndarray | None:
    g = np.log2(np.asarray(grid, np.float64))
    idx = [int(np.argmin(np.abs(g - np.log2(v)))) for v in band]
    return np.asarray(idx) if np.allclose(g[idx], np.log2(band), atol=1e-9) else None


def band_cells(nt_sf: dict[str, Any], at_sf: dict[str, Any], ceiling: float, band=BAND) -> dict[str, np.ndarray] | None:
    """Every (bound, probe, v) cell of the band for one seed: ``{"nt", "at": [K], "nt_boot", "at_boot": [K, R]
    or None, "status": [K] str, "bound", "probe": [K] int, "v": [K]}``; None when a grid lacks the band."""
    i_nt, i_at = _band_index(nt_sf["noise_var"], band), _band_index(at_sf["noise_var"], band)
    if i_nt is None or i_at is None:
        return None
    cols: dict[str, list] = {k: [] for k in ("nt", "at", "nt_boot", "at_boot", "bound", "probe", "v")}
    for m in BOUNDS:
        if m not in nt_sf or m not in at_sf:
            continue
        nt = np.asarray(nt_sf[m]["I_XT"], np.float64)[:, i_nt]  # [P, V]
        at = np.asarray(at_sf[m]["I_XT"], np.float64)[:, i_at]
        for p in range(nt.shape[0]):
            for k, v in enumerate(band):
                cols["nt"].append(nt[p, k])
                cols["at"].append(at[p, k])
                for side, sf, idx in (("nt_boot", nt_sf, i_nt), ("at_boot", at_sf, i_at)):
                    b = sf[m].get("I_XT_resamples")
                    cols[side].append(np.asarray(b[p][idx[k]], np.float64) if b is not None and len(b[p][idx[k]])
                                      else None)
                cols["bound"].append(m)
                cols["probe"].append(p)
                cols["v"].append(float(v))
    if not cols["nt"]:
        return None
    nt, at = np.asarray(cols["nt"]), np.asarray(cols["at"])
    top_nt, top_at = ceiling - nt < SATURATION_GAP_BITS, ceiling - at < SATURATION_GAP_BITS
    low_nt, low_at = nt < SATURATION_GAP_BITS, at < SATURATION_GAP_BITS
    status = np.where(top_nt & top_at, "both_ceiling", np.where(
        low_nt & low_at, "both_floor", np.where(top_nt, "nt_ceiling", np.where(top_at, "at_ceiling", "informative"))))
    has_boot = all(b is not None for b in cols["nt_boot"] + cols["at_boot"])
    return {"nt": nt, "at": at, "status": status, "bound": np.asarray(cols["bound"]),
            "probe": np.asarray(cols["probe"]), "v": np.asarray(cols["v"]),
            "nt_boot": np.stack(cols["nt_boot"]) if has_boot else None,
            "at_boot": np.stack(cols["at_boot"]) if has_boot else None}


def pooled_scale_free(cells: dict[str, np.ndarray]) -> dict[str, Any]:
    """The pooled ΔI of one seed's cells: ``{"effect", "resamples" [R] or None, "counts", "effect_informative",
    "effect_without_at_censored"}``; the effect is None when every cell is excluded."""
    status = cells["status"]
    kept = (status != "both_ceiling") & (status != "both_floor")
    counts = {s: int(np.sum(status == s)) for s in ("informative", "nt_ceiling", "at_ceiling", "both_ceiling",
                                                    "both_floor")}
    if not kept.any():
        return {"effect": None, "resamples": None, "counts": counts, "effect_informative": None,
                "effect_without_at_censored": None}
    d = cells["nt"] - cells["at"]
    boot = None
    if cells["nt_boot"] is not None:
        boot = (cells["nt_boot"][kept] - cells["at_boot"][kept]).mean(axis=0)

    def sub(mask):
        return float(d[mask].mean()) if mask.any() else None

    return {"effect": float(d[kept].mean()), "resamples": None if boot is None else boot.tolist(), "counts": counts,
            "effect_informative": sub(status == "informative"),
            "effect_without_at_censored": sub(kept & (status != "at_ceiling"))}


def decide_scale_free(seeds: list[dict[str, Any]], ceiling: float, reason: str | None, band=BAND
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(record, evidence)`` of ``at_less_information_scale_free`` from every seed's ``{"nt", "at"}`` history."""
    k = len(seeds)
    band_note = [float(v) for v in band]
    if reason:
        return untestable(reason, unit="bits", rule=RULE, seeds=k), {"band": band_note}
    sfs = [(h["nt"].get("scale_free"), h["at"].get("scale_free")) for h in seeds]
    if not sfs or not all(a and b for a, b in sfs):
        return untestable("the run has no scale-free sweep (it runs with the σ² sweep, --sweep, when a KDE bound is "
                          "measured)", unit="bits", rule=RULE, seeds=k), {"band": band_note}
    per_seed = []
    for nt_sf, at_sf in sfs:
        cells = band_cells(nt_sf, at_sf, ceiling, band)
        if cells is None:
            return untestable("the scale-free sweep does not cover the pre-registered band", unit="bits", rule=RULE,
                              seeds=k), {"band": band_note}
        per_seed.append(pooled_scale_free(cells))
    evidence = {"band": band_note, "spread": {"nt": [a["spread"] for a, _ in sfs], "at": [b["spread"] for _, b in sfs]},
                "cells": [p["counts"] for p in per_seed],
                "effect_informative": [p["effect_informative"] for p in per_seed],
                "effect_without_at_censored": [p["effect_without_at_censored"] for p in per_seed]}
    if any(p["effect"] is None for p in per_seed):
        return untestable("every cell of the band is saturated on both sides (at log2 N or at 0) in some seed",
                          unit="bits", rule=RULE, seeds=k), evidence
    boots = [p["resamples"] for p in per_seed]
    rec = record([p["effect"] for p in per_seed], None if any(b is None for b in boots) else boots, unit="bits",
                 rule=RULE)
    return rec, evidence


# --------------------------------------------------------------------------------------
# Shift alignment


def _interp_rows(x: np.ndarray, curves: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear interpolation of every row of ``curves`` [R, S] (ascending ``x`` [S]) at ``q`` [...],
    held constant past the ends: [R, ...]."""
    qc = np.clip(q, x[0], x[-1])
    j = np.clip(np.searchsorted(x, qc, side="right") - 1, 0, len(x) - 2)
    w = (qc - x[j]) / (x[j + 1] - x[j])
    return curves[:, j] * (1.0 - w) + curves[:, j + 1] * w


def fit_shift(x_nt, i_nt, x_at, i_at, *, ceiling: float, step: float = 1.0 / 32) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares shift s (in log₂ σ²) with I_NT(x) ≈ I_AT(x + s), for every row (resample).

    The loss is the mean squared difference over NT's grid points x whose shifted point x + s
    lies on AT's grid (AT linearly interpolated in x); a shift that leaves fewer than half of
    NT's points on AT's grid is not considered.

    Args:
      x_nt, x_at: [S] ascending log₂ σ² of the two grids.
      i_nt, i_at: [R, S] curves (row 0: the full sample).
      ceiling: log₂ N.
      step: resolution of the search in log₂ σ² (then refined by a parabola through the best three).

    Returns:
      ``(s [R], residual [R, S])`` with residual = I_NT(x) − I_AT(x + s) (NaN off AT's grid); s
      and the residual are NaN for a row where either curve has no point between the floor
      and the ceiling (every shift fits a flat curve equally well).
    """
    x_nt, x_at = np.asarray(x_nt, np.float64), np.asarray(x_at, np.float64)
    i_nt, i_at = np.atleast_2d(np.asarray(i_nt, np.float64)), np.atleast_2d(np.asarray(i_at, np.float64))
    need = max(3, -(-len(x_nt) // 2))
    cand = np.arange(x_at[0] - x_nt[-1], x_at[-1] - x_nt[0] + step, step)  # [C]
    q = x_nt[None, :] + cand[:, None]  # [C, S]
    on = (q >= x_at[0] - 1e-12) & (q <= x_at[-1] + 1e-12)
    count = on.sum(axis=1)
    shifted = _interp_rows(x_at, i_at, q)  # [R, C, S]
    sq = np.where(on[None], np.square(i_nt[:, None, :] - shifted), 0.0)
    loss = np.where(count[None] >= need, sq.sum(axis=2) / np.maximum(count, 1)[None], np.inf)  # [R, C]
    b = np.clip(np.argmin(loss, axis=1), 1, len(cand) - 2)
    r = np.arange(len(b))
    l0, l1, l2 = loss[r, b - 1], loss[r, b], loss[r, b + 1]
    den = l0 - 2 * l1 + l2
    good = np.isfinite(den) & (den > 0)
    off = np.where(good, 0.5 * (l0 - l2) / np.where(good, den, 1.0), 0.0)
    s = cand[b] + np.clip(off, -1.0, 1.0) * step
    qs = x_nt[None, :] + s[:, None]  # [R, S]
    residual = i_nt - np.stack([_interp_rows(x_at, i_at[k:k + 1], qs[k])[0] for k in range(len(s))])
    residual[(qs < x_at[0] - 1e-9) | (qs > x_at[-1] + 1e-9)] = np.nan

    def informative(c):
        return ((ceiling - c >= SATURATION_GAP_BITS) & (c >= SATURATION_GAP_BITS)).any(axis=1)

    ok = informative(i_nt) & informative(i_at) & np.isfinite(loss[r, b])
    s = np.where(ok, s, np.nan)
    residual[~ok] = np.nan
    return s, residual


def _band_mean(residual: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Mean of every row of ``residual`` [R, S] over the band's finite points (NaN where none)."""
    ok = band[None, :] & np.isfinite(residual)
    n = ok.sum(axis=1)
    return np.where(n > 0, np.where(ok, residual, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)


def _curves(sf: dict[str, Any], m: str, p: int) -> tuple[np.ndarray, np.ndarray]:
    """log₂ σ² (absolute) and [1 + R, S] I(X;T) of one probe's scale-free sweep."""
    x = np.log2(np.asarray(sf["noise_var"], np.float64) * float(sf["spread"][p]))
    full = np.asarray(sf[m]["I_XT"][p], np.float64)[None, :]
    boot = sf[m].get("I_XT_resamples")
    if boot is not None and len(boot[p]) and len(boot[p][0]):
        full = np.concatenate([full, np.asarray(boot[p], np.float64).T], axis=0)
    return x, full


def shift_alignment(seeds: list[dict[str, Any]], layers: list[str], ceiling: float) -> dict[str, Any] | None:
    """Per bound and probe: ĉ (AT's activation scale relative to NT's) with its interval, the spread ratio
    √(spread_AT / spread_NT) for comparison, and the residual ΔI curve after the shift with intervals."""
    sfs = [(h["nt"].get("scale_free"), h["at"].get("scale_free")) for h in seeds]
    if not sfs or not all(a and b for a, b in sfs):
        return None
    out: dict[str, Any] = {}
    for m in BOUNDS:
        if not all(m in a and m in b for a, b in sfs):
            continue
        rows = []
        for p, probe in enumerate(layers):
            fits = []
            for nt_sf, at_sf in sfs:
                x_nt, c_nt = _curves(nt_sf, m, p)
                x_at, c_at = _curves(at_sf, m, p)
                r = min(len(c_nt), len(c_at))
                s, res = fit_shift(x_nt, c_nt[:r], x_at, c_at[:r], ceiling=ceiling)
                fits.append((s, res, 0.5 * np.log2(at_sf["spread"][p] / nt_sf["spread"][p])))
            row: dict[str, Any] = {"probe": probe, "v": [float(v) for v in sfs[0][0]["noise_var"]],
                                   "log2_spread_ratio": [float(f[2]) for f in fits]}
            if any(not np.isfinite(f[0][0]) for f in fits):
                row.update(c=None, reason="a curve is flat (at the ceiling or the floor) at every σ²")
                rows.append(row)
                continue
            log2_c = [0.5 * f[0] for f in fits]  # s = log₂ c²
            effect, ci = interval([lc[0] for lc in log2_c], [lc[1:] for lc in log2_c] if len(log2_c[0]) > 1 else None)
            row.update(log2_c=effect, log2_c_ci95=ci, c=float(2.0 ** effect),
                       c_ci95=None if ci is None else [float(2.0 ** ci[0]), float(2.0 ** ci[1])])
            mean, cis = [], []
            for j in range(len(row["v"])):
                if not all(np.isfinite(f[1][0, j]) for f in fits):
                    mean.append(None)
                    cis.append(None)
                    continue
                e, c = interval([f[1][0, j] for f in fits], [f[1][1:, j] for f in fits] if fits[0][1].shape[0] > 1
                                else None)
                mean.append(e)
                cis.append(c)
            row["residual"], row["residual_ci95"] = mean, cis
            # The residual pooled over NT's grid points in the band (where it is defined): its sign
            # with the interval says whether a shift alone explains the difference.
            band = np.isin(np.round(np.log2(row["v"]), 9), np.round(np.log2(BAND), 9))
            pooled = [_band_mean(f[1], band) for f in fits]  # [1 + R] per seed
            if any(not np.isfinite(p[0]) for p in pooled):
                row["residual_band"], row["residual_band_ci95"], row["residual_sign"] = None, None, "undefined"
            else:
                e, c = interval([p[0] for p in pooled], [p[1:][np.isfinite(p[1:])] for p in pooled]
                                if len(pooled[0]) > 1 else None)
                row["residual_band"], row["residual_band_ci95"] = e, c
                row["residual_band_rms"] = float(np.mean([np.sqrt(_band_mean(np.square(f[1][:1]), band)[0])
                                                          for f in fits]))
                row["residual_sign"] = ("undefined" if c is None else "positive" if c[0] > 0 else
                                        "negative" if c[1] < 0 else "none")
            rows.append(row)
        out[m] = rows
    return out or None


# --------------------------------------------------------------------------------------
# Temperature control of the logits


def temperature_match(nt_curve: dict[str, Any], target_nll: float) -> float | None:
    """τ with NLL_NT(τ) = ``target_nll``, on the softening side (τ ≥ the NLL minimum) of NT's NLL curve,
    interpolated linearly in log τ; None when the curve does not reach the target there."""
    lt = np.log(np.asarray(nt_curve["tau"], np.float64))
    nll = np.asarray(nt_curve["nll"], np.float64) - float(target_nll)
    k0 = int(np.argmin(nll))
    if nll[k0] > 0:
        return None
    for k in range(k0, len(lt) - 1):
        if nll[k] <= 0 <= nll[k + 1]:
            if nll[k + 1] == nll[k]:
                return float(np.exp(lt[k]))
            w = -nll[k] / (nll[k + 1] - nll[k])
            return float(np.exp(lt[k] + w * (lt[k + 1] - lt[k])))
    return None


def temperature_evidence(seeds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per seed: τ̂, the NLLs, and for both bounds I(X;T), I(T;Y) of NT's logits/τ̂, NT's and AT's logits (bits)."""
    curves = [((h["nt"].get("scale_free") or {}).get("temperature"), (h["at"].get("scale_free") or {}).get("temperature"))
              for h in seeds]
    if not curves or not all(a and b for a, b in curves):
        return None
    out = []
    for nt, at in curves:
        lt_nt, lt_at = np.log(nt["tau"]), np.log(at["tau"])
        target = float(np.interp(0.0, lt_at, at["nll"]))
        tau = temperature_match(nt, target)
        row: dict[str, Any] = {"tau": tau, "at_nll": target, "nt_nll": float(np.interp(0.0, lt_nt, nt["nll"]))}
        if tau is None:
            row["reason"] = "NT's NLL does not reach AT's on the softening side of its minimum within the τ grid"
        for m in BOUNDS:
            row[m] = {}
            for q in ("I_XT", "I_TY"):
                row[m][q] = {"nt": float(np.interp(0.0, lt_nt, nt[m][q])), "at": float(np.interp(0.0, lt_at, at[m][q])),
                             "nt_tempered": None if tau is None else float(np.interp(np.log(tau), lt_nt, nt[m][q]))}
        out.append(row)
    return {"per_seed": out, "tau_grid": [float(curves[0][0]["tau"][0]), float(curves[0][0]["tau"][-1])]}


def scale_free_lines(ev: dict[str, Any]) -> list[str]:
    """Plain-text lines of the scale-free evidence: cell counts, ĉ per probe, the tempered logits."""
    lines = []
    if ev.get("cells"):
        c = ev["cells"][0]
        lines.append(f"scale-free band v = {ev['band'][0]:g} … {ev['band'][-1]:g} of the spread (seed 0 cells): "
                     f"{c['informative']} informative, {c['nt_ceiling']} NT at log2 N, {c['at_ceiling']} AT at log2 N "
                     f"(kept, censored), {c['both_ceiling'] + c['both_floor']} saturated on both sides (excluded)")
    for m, rows in (ev.get("shift_alignment") or {}).items():
        cells = [f"{r['probe']} " + ("n/a" if r.get("c") is None else
                                     f"{r['c']:.3g}" + (f" [{r['c_ci95'][0]:.3g}, {r['c_ci95'][1]:.3g}]" if r.get(
                                         "c_ci95") else "") + f" residual {r['residual_sign']}") for r in rows]
        lines.append(f"  shift alignment {m}, ĉ (AT scale / NT scale): " + "; ".join(cells))
    for k, row in enumerate((ev.get("logit_temperature") or {}).get("per_seed") or []):
        if row["tau"] is None:
            lines.append(f"  logits, seed {k}: no temperature matches NT's NLL to AT's ({row['at_nll']:.3f} nats)")
            continue
        i = row["kde_lower"]["I_XT"]
        lines.append(f"  logits, seed {k}: τ = {row['tau']:.3g} matches NT's NLL to AT's {row['at_nll']:.3f} nats; "
                     f"kde_lower I(X;T) NT/τ {i['nt_tempered']:.2f}, NT {i['nt']:.2f}, AT {i['at']:.2f} bits")
    return lines
