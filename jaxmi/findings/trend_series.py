"""Finding 1's series statistics: one seed and regime's concordances of epoch-to-epoch changes.

A *series* is one (estimator, quantity, probe) of one regime and seed. Its curves over the
measurements ``idx`` (from epoch 1 on) are taken on every measured kind of inputs: ``clean``,
``adv`` and the controls ``noise`` (clean + random-sign noise of the attack's ε) and
``unrelated`` (uniform-noise images U[0, 1], one fixed draw, unrelated to the data and the
labels). Each curve has its bootstrap resamples (the same resamples of the draw for every
measurement and kind of inputs, so every difference and ratio below is paired).

:func:`seed_regime` returns every series' numbers, the mean CCC of the clean changes with the
adversarial, the noise and the unrelated-input changes over the series each comparison counts
(``means``), and four pooled effects, each a mean over
the series that count and the same mean on every resample (``(effect, [R])`` or None):

* ``agreement``: CCC(Δclean, Δadv) over the *informative* series (neither clean nor
  adversarial curve within :data:`~jaxmi.estimators.SATURATION_GAP_BITS` of the ceiling at
  any measurement; the clean range above ``noise_mult`` median bootstrap SEs);
* ``control``: CCC(Δclean, Δadv) − CCC(Δclean, Δnoise) over the informative series;
* ``beats_unrelated``: CCC(Δclean, Δadv) − CCC(Δclean, Δunrelated) over the informative
  series whose unrelated curve *could move*: it stays more than the saturation gap away from
  both the ceiling and zero at every measurement. An unrelated curve pinned at the ceiling or
  at zero cannot follow any drift, so its CCC (0 when the curve is flat: its changes have no
  covariance with anything) would let the comparison pass by default; such series are left
  out, and a regime where every series is left out is untestable. An unrelated curve that is
  free to move but does not gets its CCC of about 0, and counts: a common drift would have
  moved it (``unrelated_flat`` marks such series, and the counts say how many there are).
* ``detrended``: CCC(Δ(clean/unrelated), Δ(adv/unrelated)): every curve divided, measurement
  by measurement, by the same model's unrelated-input curve of the same estimator, quantity and
  probe. A drift that multiplies every input's estimate by the same factor (the weights grow,
  every curve moves together) cancels. Series count when they are informative on the ratio
  scale: the unrelated curve can move (as above, so the ratio is finite), clean and adversarial
  curves are unsaturated, and the clean ratio's range exceeds ``noise_mult`` times its median
  bootstrap SE (the standard deviation of the resampled ratios).

Curves an estimator does not report (JSON null, e.g. the I(X;T) of an estimator without an
input term) are skipped, as are kinds of inputs the run did not measure (``has_noise``,
``has_unrelated`` say which were there).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxmi.estimators import SATURATION_GAP_BITS
from jaxmi.history import QUANTITIES
from jaxmi.verdicts import ccc_rows

__all__ = ["seed_regime", "POOLED"]

POOLED = ("agreement", "control", "beats_unrelated", "detrended")


def _array(value: Any) -> np.ndarray | None:
    """A stored (nested) list as float64 (None → NaN), or None when it is not rectangular."""
    if value is None:
        return None
    try:
        return np.asarray(value, np.float64)
    except (TypeError, ValueError):
        return None


def _curves(history: dict[str, Any], est: str, q: str, inputs: str, idx: list[int]):
    """``(values [M, P], resamples [M, P, R] or None, SE [M, P] or None)`` of one kind of
    inputs over the measurements ``idx``; None when not measured or not reported."""
    v = _array(((history["mi"].get(est) or {}).get(inputs) or {}).get(q))
    if v is None or v.ndim != 2 or np.all(np.isnan(v)):
        return None
    b = _array((((history.get("mi_boot") or {}).get(est) or {}).get(inputs) or {}).get(q))
    se = _array((((history.get("mi_se") or {}).get(est) or {}).get(inputs) or {}).get(q))
    b = b[idx] if b is not None and b.ndim == 3 else None
    se = se[idx] if se is not None and se.ndim == 2 else None
    return v[idx], b, se


def _diffs(v: np.ndarray, b: np.ndarray | None):
    """Changes of point curves [M, P] → [P, M−1] and of resamples [M, P, R] → [P, R, M−1]."""
    return np.diff(v, axis=0).T, None if b is None else np.diff(np.moveaxis(b, 0, -1), axis=-1)


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _pool(points: list[float], boots: list[np.ndarray]):
    if not points:
        return None
    with np.errstate(invalid="ignore"):
        return float(np.mean(points)), np.nanmean(np.asarray(boots), axis=0).tolist()


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den where den > the saturation gap, else NaN (a resample whose reference fell to 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > SATURATION_GAP_BITS, num / np.where(den > SATURATION_GAP_BITS, den, 1.0), np.nan)


def seed_regime(history: dict[str, Any], layers: list[str], idx: list[int], ceilings: dict[str, float],
                noise_mult: float) -> dict[str, Any]:
    """One seed and regime: every series' informativeness and concordances, and the pooled
    effects of :data:`POOLED` with their resample values (see the module docstring).

    Args:
      history: one regime's history (``mi``, ``mi_se``, ``mi_boot`` as in ``summary.json``).
      layers: the probe names, in the order of the per-probe lists.
      idx: the measurements used (from epoch 1 on).
      ceilings: ``{"I_XT": log2 N, "I_TY": Ĥ(Y)}``.
      noise_mult: a clean curve must range over more than this many bootstrap SEs.
    """
    series: list[dict[str, Any]] = []
    acc: dict[str, tuple[list, list]] = {k: ([], []) for k in POOLED}
    present = {i for blk in history["mi"].values() for i in blk}
    means: dict[str, list[float]] = {"noise": [], "unrelated": []}
    for est in history["mi"]:
        for q in QUANTITIES:
            got = {i: _curves(history, est, q, i, idx) for i in ("clean", "adv", "noise", "unrelated")}
            if got["clean"] is None or got["adv"] is None:
                continue  # not reported by this estimator (e.g. an I(X;T) of None)
            (c, bc_lev, se_c), (a, ba_lev, _) = got["clean"], got["adv"]
            dc, bc = _diffs(c, bc_lev)
            da, ba = _diffs(a, ba_lev)
            c_adv, b_adv = ccc_rows(dc, da), None if bc is None or ba is None else ccc_rows(bc, ba)
            ctrl = {}
            for kind in ("noise", "unrelated"):
                if got[kind] is None:
                    continue
                dk, bk = _diffs(got[kind][0], got[kind][1])
                ctrl[kind] = (ccc_rows(dc, dk), None if bc is None or bk is None else ccc_rows(bc, bk))
            se = None if se_c is None else np.median(se_c, axis=0)
            for j, layer in enumerate(layers):
                if np.any(np.isnan(c[:, j])) or np.any(np.isnan(a[:, j])):
                    continue
                gap = ceilings[q] - np.concatenate([c[:, j], a[:, j]])
                saturated = bool(np.any(gap < SATURATION_GAP_BITS))
                rng = float(np.ptp(c[:, j]))
                informative = bool(not saturated and se is not None and rng > noise_mult * float(se[j]))
                s = {"estimator": est, "quantity": q, "probe": layer, "saturated": saturated, "range_clean_bits": rng,
                     "median_se_bits": None if se is None else float(se[j]), "informative": informative,
                     "ccc_clean_adv": _value(c_adv[j]), "ccc_clean_noise": None, "ccc_clean_unrelated": None}
                for kind, (pt, _) in ctrl.items():
                    s[f"ccc_clean_{kind}"] = _value(pt[j])
                usable = None
                if "unrelated" in ctrl:
                    u = got["unrelated"][0][:, j]
                    usable = bool(np.all(u > SATURATION_GAP_BITS) and np.all(ceilings[q] - u >= SATURATION_GAP_BITS))
                    s["unrelated_can_move"] = usable
                    se_u = got["unrelated"][2]
                    s["unrelated_flat"] = None if se_u is None else bool(
                        np.ptp(u) <= noise_mult * float(np.median(se_u[:, j])))
                series.append(s)
                if usable:
                    s["detrended"] = _detrended(got, j, saturated, noise_mult)
                    d = s["detrended"]
                    if d["informative"] and d["boot"] is not None and d["ccc_clean_adv"] is not None:
                        acc["detrended"][0].append(d["ccc_clean_adv"])
                        acc["detrended"][1].append(d.pop("boot"))
                    else:
                        d.pop("boot")
                if not informative or s["ccc_clean_adv"] is None or b_adv is None:
                    continue
                acc["agreement"][0].append(s["ccc_clean_adv"])
                acc["agreement"][1].append(b_adv[j])
                for kind, key in (("noise", "control"), ("unrelated", "beats_unrelated")):
                    pt, bt = ctrl.get(kind, (None, None))
                    if bt is None or s.get(f"ccc_clean_{kind}") is None or (kind == "unrelated" and not usable):
                        continue
                    means[kind].append(s[f"ccc_clean_{kind}"])
                    acc[key][0].append(s["ccc_clean_adv"] - s[f"ccc_clean_{kind}"])
                    acc[key][1].append(b_adv[j] - bt[j])
    counts = {"series": len(series), "informative": int(sum(s["informative"] for s in series)),
              "saturated": int(sum(s["saturated"] for s in series)),
              "unrelated_can_move": int(sum(bool(s.get("unrelated_can_move")) for s in series)),
              "unrelated_flat": int(sum(bool(s.get("unrelated_can_move") and s.get("unrelated_flat")) for s in series)),
              "detrended_informative": int(sum(bool((s.get("detrended") or {}).get("informative")) for s in series))}
    out = {"series": series, "counts": counts, "has_noise": "noise" in present, "has_unrelated": "unrelated" in present}
    out.update({k: _pool(*acc[k]) for k in POOLED})
    out["means"] = {"ccc_clean_adv": float(np.mean(acc["agreement"][0])) if acc["agreement"][0] else None,
                    **{f"ccc_clean_{k}": float(np.mean(v)) if v else None for k, v in means.items()}}
    return out


def _detrended(got: dict[str, Any], j: int, saturated: bool, noise_mult: float) -> dict[str, Any]:
    """One probe's clean and adversarial curves divided by its unrelated-input curve: range,
    median SE of the clean ratio over resamples, informativeness and CCC of the changes (with
    the CCC on every resample under ``boot``, or None)."""
    u, bu, _ = got["unrelated"]
    c, bc, _ = got["clean"]
    a, ba, _ = got["adv"]
    cd, ad = c[:, j] / u[:, j], a[:, j] / u[:, j]
    point = _value(float(ccc_rows(np.diff(cd), np.diff(ad))))
    rng = float(np.ptp(cd))
    boot, se = None, None
    if bc is not None and ba is not None and bu is not None:
        bcd, bad = _ratio(bc[:, j], bu[:, j]), _ratio(ba[:, j], bu[:, j])  # [M, R]
        with np.errstate(invalid="ignore"):
            sd = np.nanstd(bcd, axis=1, ddof=1)
        se = float(np.median(sd)) if np.all(np.isfinite(sd)) else None
        boot = ccc_rows(np.diff(bcd.T, axis=-1), np.diff(bad.T, axis=-1))  # [R]
    informative = bool(not saturated and se is not None and rng > noise_mult * se)
    return {"range_clean_ratio": rng, "median_se_ratio": se, "informative": informative, "ccc_clean_adv": point,
            "boot": boot}
