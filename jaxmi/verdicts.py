"""Verdict records: an effect size with a 95 % interval, decided against a null value.

Every verdict a finding writes into ``summary["verdicts"]`` is one record::

    {"holds": true | false | null, "effect": 0.12, "ci95": [0.05, 0.19], "unit": "bits",
     "seeds": 3, "rule": "one sentence", "null_value": 0.0, "direction": "greater",
     "reason": "...",            # only when holds is null (untestable)
     "per_seed": [...], "resamples": [...]}   # what the interval was computed from

* ``holds`` is true only when the interval excludes ``null_value`` on the claimed side
  (``direction`` "greater": lower end above it; "less": upper end below it), false when the
  effect was measured and the interval does not, and ``None`` when the data cannot decide
  (every informative series saturated, a run that did not learn, too few measurements). No
  rule passes by default.
* The interval combines the two sources of uncertainty: a paired bootstrap over the test
  draw in every run (the per-resample values of the effect are kept in ``resamples``), and
  with ``K`` seeds the spread across seeds. One seed: effect ± z₀.₉₇₅ · the standard
  deviation of the resample values (a resample duplicates points, which biases entropy
  estimates, so the resamples' percentiles are shifted from the estimate; only their spread
  is used). K seeds: effect = the seed mean e̅ and interval e̅ ± √(t² s²/K + z² v), with s²
  the variance of the seed effects, v the variance over the R resamples of the seed mean
  (resample r of every seed uses the same bootstrap indices when the seeds share their test
  draw), t = t₀.₉₇₅,K−1 and z = z₀.₉₇₅: each variance component is scaled by the quantile its
  own estimate warrants (s² rests on K seeds, v on R resamples), so three seeds that agree do
  not widen a one-seed interval 2.2-fold, and seeds that disagree get the full t interval.
  The seed variance already contains some draw noise, so the interval errs on the wide side.

:func:`interval` computes the interval, :func:`record` and :func:`untestable` build records,
:func:`all_of` composes verdicts, :func:`combine_seeds` merges the records of K separate runs
(findings 3 and 4). The statistics the rules use (:func:`ccc`, :func:`kendall_tau`,
:func:`permutation_p`, :func:`spearman_boot`) are here too, in float64 NumPy, row-wise over
resamples and permutations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sp_stats

from jaxmi.stats import pearson, rank

__all__ = ["CONFIDENCE", "interval", "record", "untestable", "all_of", "combine_seeds", "ccc", "ccc_rows",
           "kendall_tau", "kendall_rows",
           "permutation_p", "spearman_boot", "point_bootstrap", "did_not_learn", "LEARN_MARGIN", "format_record"]

CONFIDENCE = 0.95
LEARN_MARGIN = 0.05  # final training accuracy within this of chance: the network did not learn


def interval(per_seed: Sequence[float], resamples: Sequence[Sequence[float]] | None = None, *,
             confidence: float = CONFIDENCE) -> tuple[float, list[float] | None]:
    """``(effect, [lo, hi])`` from K seed effects and, optionally, their bootstrap resamples.

    Args:
      per_seed: the effect of every seed (K ≥ 1).
      resamples: per seed, R resample values of the effect, or None (unequal R: the first
        min R of each seed are paired; NaN values, resamples where the effect is undefined,
        are dropped).
      confidence: coverage of the interval.

    Returns:
      The seed mean and its interval (see the module docstring), or ``(effect, None)`` when
      there is neither a second seed nor resamples.
    """
    e = np.asarray(per_seed, np.float64)
    k = e.size
    effect = float(e.mean())
    boot = None
    if resamples is not None and len(resamples) and min(len(r) for r in resamples):
        m = min(len(r) for r in resamples)  # resamples where a statistic was undefined may be missing
        boot = np.stack([np.asarray(r, np.float64)[:m] for r in resamples]).mean(axis=0)
        boot = boot[np.isfinite(boot)]  # NaN: a resample on which the effect is undefined
    if k == 1:
        if boot is None or boot.size < 2:
            return effect, None
        half = float(sp_stats.norm.ppf(0.5 + confidence / 2) * boot.std(ddof=1))
        return effect, [effect - half, effect + half]
    a = float(e.var(ddof=1)) / k  # estimated from K seeds: K − 1 degrees of freedom
    v = float(boot.var(ddof=1)) if boot is not None and boot.size > 1 else 0.0  # from R resamples
    t = float(sp_stats.t.ppf(0.5 + confidence / 2, k - 1))
    z = float(sp_stats.norm.ppf(0.5 + confidence / 2))
    half = float(np.sqrt(t * t * a + z * z * v))
    return effect, [effect - half, effect + half]


def _decide(ci: list[float] | None, null_value: float, direction: str) -> bool | None:
    if ci is None:
        return None
    return bool(ci[0] > null_value) if direction == "greater" else bool(ci[1] < null_value)


def record(per_seed: Sequence[float], resamples: Sequence[Sequence[float]] | None = None, *, unit: str, rule: str,
           null_value: float = 0.0, direction: str = "greater", ci95: Sequence[float] | None = None,
           bounds: tuple[float, float] | None = None, **extra: Any) -> dict[str, Any]:
    """A verdict record from the seed effects (and their resamples); ``extra`` keys are kept.

    ``ci95`` supplies the interval of a single seed without resamples (an analytic one);
    ``bounds`` clips the interval to the statistic's range (e.g. [−1, 1] for a correlation).
    ``holds`` is None (untestable) when no interval can be formed (one seed, no resamples).
    """
    if direction not in ("greater", "less"):
        raise ValueError(f"direction must be 'greater' or 'less'; got {direction!r}.")
    effect, ci = interval(per_seed, resamples)
    if ci is None and ci95 is not None:
        ci = [float(ci95[0]), float(ci95[1])]
    if ci is not None and bounds is not None:
        ci = [max(ci[0], bounds[0]), min(ci[1], bounds[1])]
        extra = {"bounds": [float(bounds[0]), float(bounds[1])], **extra}
    holds = _decide(ci, null_value, direction)
    out: dict[str, Any] = {"holds": holds, "effect": effect, "ci95": ci, "unit": unit, "seeds": len(per_seed),
                           "rule": rule, "null_value": null_value, "direction": direction}
    if holds is None:
        out["reason"] = "no interval: one seed and no bootstrap resamples"
    out["per_seed"] = [float(v) for v in per_seed]
    if resamples is not None:
        out["resamples"] = [np.round(np.asarray(r, np.float64), 6).tolist() for r in resamples]
    out.update(extra)
    return out


def untestable(reason: str, *, unit: str, rule: str, seeds: int, null_value: float = 0.0,
               direction: str = "greater", **extra: Any) -> dict[str, Any]:
    """A record whose data cannot decide the claim: ``holds`` None, with the reason."""
    return {"holds": None, "effect": None, "ci95": None, "unit": unit, "seeds": seeds, "rule": rule,
            "null_value": null_value, "direction": direction, "reason": reason, **extra}


def all_of(records: Mapping[str, Mapping[str, Any]], *, rule: str, keep_parts: bool = False) -> dict[str, Any]:
    """A composite verdict: holds when every part holds, fails when a part fails, untestable
    when no part fails and some part is untestable. Its effect and interval are those of the
    weakest part that decides it (a failing part when it fails, an untestable one when it is
    untestable; otherwise the part whose interval end lies closest to its null value)."""
    parts = dict(records)
    states = [r["holds"] for r in parts.values()]
    holds = False if False in states else (None if None in states else True)

    def margin(r):
        if r["ci95"] is None:
            return -np.inf
        return r["ci95"][0] - r["null_value"] if r["direction"] == "greater" else r["null_value"] - r["ci95"][1]

    pool = [n for n, r in parts.items() if r["holds"] is holds] or list(parts)  # a failing / untestable part
    weakest_name = min(pool, key=lambda n: margin(parts[n]))
    w = parts[weakest_name]
    out = {"holds": holds, "effect": w["effect"], "ci95": w["ci95"], "unit": w["unit"], "seeds": w["seeds"],
           "rule": rule, "null_value": w["null_value"], "direction": w["direction"], "parts": list(parts),
           "weakest": weakest_name}
    if holds is None:
        out["reason"] = "untestable part(s): " + ", ".join(n for n, r in parts.items() if r["holds"] is None)
    if keep_parts:  # parts that are not verdicts of their own travel inside (combine_seeds needs them)
        out["part_records"] = parts
    return out


def combine_seeds(per_seed: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The verdicts of K separate runs (one per seed) as one set of records.

    Simple records are recombined from their ``per_seed`` effects and ``resamples``
    (:func:`interval`), over the seeds where they were testable; composites (``parts``) are
    recomposed from the combined parts (their own records, or the ``part_records`` a composite
    carries); a verdict untestable in every seed stays untestable.
    """
    names = list(per_seed[0])
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        recs = [s[name] for s in per_seed]
        if "parts" in recs[0]:
            continue
        ok = [r for r in recs if r.get("per_seed")]  # measured (untestable records carry no effect)
        base = {k: v for k, v in recs[0].items() if k not in ("holds", "effect", "ci95", "seeds", "reason",
                                                              "per_seed", "resamples")}
        if not ok:
            out[name] = untestable("untestable in every seed: " + "; ".join(str(r.get("reason")) for r in recs),
                                   unit=recs[0]["unit"], rule=recs[0]["rule"], seeds=len(recs),
                                   null_value=recs[0]["null_value"], direction=recs[0]["direction"])
            continue
        effects = [e for r in ok for e in r["per_seed"]]
        boots = None
        if all(r.get("resamples") for r in ok):
            boots = [b for r in ok for b in r["resamples"]]
        extra = {k: v for k, v in base.items() if k not in ("unit", "rule", "null_value", "direction")}
        out[name] = record(effects, boots, unit=base["unit"], rule=base["rule"], null_value=base["null_value"],
                           direction=base["direction"], **extra)
        if len(ok) < len(recs):
            out[name]["untestable_seeds"] = len(recs) - len(ok)
    for name in names:
        first = per_seed[0][name]
        if "parts" in first:
            if "part_records" in first:
                parts = combine_seeds([s[name]["part_records"] for s in per_seed])
                out[name] = all_of(parts, rule=first["rule"], keep_parts=True)
            else:
                out[name] = all_of({p: out[p] for p in first["parts"]}, rule=first["rule"])
            if "role" in first:  # a composite marked as a check stays one
                out[name]["role"] = first["role"]
    return {n: out[n] for n in names}


def did_not_learn(final_train_acc: Mapping[str, float], num_classes: int, *,
                  margin: float = LEARN_MARGIN) -> str | None:
    """A reason string when a network's final training accuracy is within ``margin`` of chance
    (1/K), else None: such a run is no evidence for or against any claim."""
    chance = 1.0 / num_classes
    bad = {r: a for r, a in final_train_acc.items() if a is None or not np.isfinite(a) or a < chance + margin}
    if not bad:
        return None
    fix = "train longer or lower the learning rate"
    if "at" in bad:  # PGD-AT from scratch can settle on the constant prediction; a radius warm-up avoids it
        fix += ", and for AT ramp the training radius up over the first epochs (--eps-warmup 2)"
    return ("did not learn: final training accuracy " + ", ".join(f"{r.upper()} {a:.4f}" for r, a in bad.items())
            + f" is within {margin} of chance ({chance:.3f}); every verdict is untestable ({fix})")


# --------------------------------------------------------------------------------------
# Statistics


def ccc_rows(a, b) -> np.ndarray:
    """Lin's concordance correlation of matching rows of [..., M] arrays (NaN where
    undefined): 2·cov(a, b) / (var a + var b + (ā − b̄)²), population moments."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ma, mb = a.mean(-1, keepdims=True), b.mean(-1, keepdims=True)
    den = a.var(-1) + b.var(-1) + (ma - mb)[..., 0] ** 2
    num = 2 * np.mean((a - ma) * (b - mb), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def ccc(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Lin's concordance correlation (:func:`ccc_rows` of one pair); 1 only when b = a,
    penalising scale and offset differences that Pearson's r ignores. ``None`` for fewer
    than 2 points or when both are constant."""
    if np.size(a) < 2:
        return None
    v = float(ccc_rows(a, b))
    return None if np.isnan(v) else v


def kendall_rows(x, y) -> np.ndarray:
    """Kendall's τ_b (ties in either variable corrected) of matching rows of [..., n] arrays;
    NaN where either row is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    i, j = np.triu_indices(x.shape[-1], 1)
    sx, sy = np.sign(x[..., i] - x[..., j]), np.sign(y[..., i] - y[..., j])
    den = np.sqrt((i.size - np.sum(sx == 0, -1)) * (i.size - np.sum(sy == 0, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, np.sum(sx * sy, -1) / np.where(den > 0, den, 1.0), np.nan)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ_b of two series (:func:`kendall_rows`); ``None`` when either is constant."""
    v = float(kendall_rows(x, y))
    return None if np.isnan(v) else v


def permutation_p(x: Sequence[float], y: Sequence[float], *, direction: str = "greater", permutations: int = 10_000,
                  seed: int = 0) -> float | None:
    """One-sided permutation p-value of Kendall's τ in ``direction`` (Monte Carlo, with the
    observed arrangement counted: (1 + #{τ_perm ≥ τ}) / (1 + permutations)); all
    permutations in one array operation."""
    tau = kendall_tau(x, y)
    if tau is None:
        return None
    y = np.asarray(y, np.float64)
    perms = np.random.default_rng(seed).permuted(np.broadcast_to(y, (int(permutations), y.size)), axis=1)
    t = kendall_rows(np.asarray(x, np.float64)[None], perms)
    sign = 1.0 if direction == "greater" else -1.0
    return (1 + int(np.sum(sign * t >= sign * tau - 1e-12))) / (1 + int(permutations))


def point_bootstrap(n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """[R, n] indices of R bootstrap resamples of n points (NumPy, seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(int(resamples), int(n)))


def spearman_boot(x: Sequence[float], y: Sequence[float], idx: np.ndarray) -> tuple[float | None, list[float]]:
    """Spearman's ρ of (x, y) and its value on every resample in ``idx`` ([R, n] point indices;
    resamples where ρ is undefined are dropped): Pearson's r of average ranks, row-wise."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    rho = pearson(rank(x), rank(y)) if x.size >= 3 else None
    rx, ry = (sp_stats.rankdata(v[idx], axis=1) for v in (x, y))
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    den = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    ok = den > 0
    return rho, ((rx * ry).sum(1)[ok] / den[ok]).tolist()


def format_record(r: Mapping[str, Any], spec: str = "+.3f") -> str:
    """``effect [lo, hi] unit`` of a record, or the reason when it is untestable."""
    if r.get("effect") is None:
        return f"untestable: {r.get('reason')}"
    ci = r.get("ci95")
    text = format(r["effect"], spec) + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else " [no interval]")
    return f"{text} {r['unit']} (null {r['null_value']:g}, {r['seeds']} seed{'s' if r['seeds'] != 1 else ''})"
