"""A finished run's record: the histories of every seed, seed means, saturation and sweep reports.

:class:`RunResult` is what :func:`jaxmi.run.train_and_measure` returns; its
:meth:`~RunResult.summary_fields` are the run part of ``summary.json`` (the layout is in
:mod:`jaxmi.history`). With several seeds the regimes are the seed means with standard
deviations beside them (:func:`aggregate_seeds`), and every seed's own history follows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxmi.estimators import SATURATION_GAP_BITS
from jaxmi.history import DIAGNOSTICS, INPUTS, METRICS, REGIMES, History, MIBlock, robust_summary
from jaxmi.stats import mean_sd

__all__ = ["RunResult", "aggregate_seeds", "saturation_report", "sweep_separation"]


def _mean_tree(trees: Sequence[Any]) -> Any:
    """The elementwise mean of equally shaped nested dicts of number lists."""
    if isinstance(trees[0], Mapping):
        return {k: _mean_tree([t[k] for t in trees]) for k in trees[0]}
    if trees[0] and isinstance(trees[0], list) and isinstance(trees[0][0], int):  # sweep epochs
        return list(trees[0])
    return np.mean(np.asarray(trees, dtype=float), axis=0).tolist()


def _mean_diagnostics(mi: MIBlock, hs: Sequence[History], ceilings: Mapping[str, float]) -> MIBlock:
    """Diagnostics of seed-mean estimates: gaps and saturation from the mean, the KDE
    geometry statistics averaged over seeds."""
    out: MIBlock = {}
    for est, per_input in mi.items():
        out[est] = {}
        for inputs, per_q in per_input.items():
            gap_xt = ceilings["I_XT"] - np.asarray(per_q["I_XT"], float)
            saturated = np.where(np.isnan(gap_xt), None, gap_xt < SATURATION_GAP_BITS)  # None: no I(X;T) (knn)
            d = {"saturated": saturated.tolist(), "I_XT_gap": gap_xt.tolist(),
                 "I_TY_gap": (ceilings["I_TY"] - np.asarray(per_q["I_TY"], float)).tolist()}
            for key in DIAGNOSTICS[3:]:
                if key in hs[0].diagnostics.get(est, {}).get(inputs, {}):
                    d[key] = mean_sd([h.diagnostics[est][inputs][key] for h in hs])[0]
            out[est][inputs] = d
    return out


def aggregate_seeds(histories: Sequence[Mapping[str, History]], ceilings: Mapping[str, float]) -> dict[str, Any]:
    """Seed-mean histories, with standard deviations across seeds (ddof 1), as JSON.

    Args:
      histories: one ``{regime: History}`` per seed.
      ceilings: ``{"I_XT": log₂ N, "I_TY": Ĥ(Y)}`` of the MI draw.

    Returns:
      ``{regime: {metric: mean, "<metric>_sd": sd, ..., "mi": mean, "mi_sd": sd,
      "diagnostics": ...}}``; the diagnostics are those of the mean estimates, and a sweep
      (if any) is the seed mean.
    """
    out: dict[str, Any] = {}
    for regime in REGIMES:
        hs = [h[regime] for h in histories]
        agg: dict[str, Any] = {}
        for k in METRICS:
            agg[k], agg[f"{k}_sd"] = mean_sd([h.metrics[k] for h in hs])
        mi: MIBlock = {}
        mi_sd: MIBlock = {}
        for est, per_input in hs[0].mi.items():
            mi[est], mi_sd[est] = {}, {}
            for inputs, per_q in per_input.items():
                mi[est][inputs], mi_sd[est][inputs] = {}, {}
                for q in per_q:
                    mi[est][inputs][q], mi_sd[est][inputs][q] = mean_sd([h.mi[est][inputs][q] for h in hs])
        agg["mi"], agg["mi_sd"] = mi, mi_sd
        agg["diagnostics"] = _mean_diagnostics(mi, hs, ceilings)
        if hs[0].sweep is not None:
            agg["sweep"] = _mean_tree([h.sweep for h in hs])
        out[regime] = agg
    return out


def saturation_report(summary: Mapping[str, Any], ceilings: Mapping[str, float]) -> dict[str, Any]:
    """How many of the last measurement's I(X;T) estimates (estimator × inputs × probe × regime,
    clean and adversarial inputs) sit at the log₂ N ceiling, with a one-line warning when most do."""
    by_est: dict[str, dict[str, int]] = {}
    for regime in REGIMES:
        for est, per_input in (summary[regime].get("diagnostics") or {}).items():
            for d in (per_input[i] for i in INPUTS if i in per_input):  # not the noise control
                last = d["saturated"][-1]
                if any(v is None for v in last):  # an estimator without I(X;T) (knn)
                    continue
                c = by_est.setdefault(est, {"saturated": 0, "estimates": 0})
                c["saturated"] += int(sum(last))
                c["estimates"] += len(last)
    sat = sum(c["saturated"] for c in by_est.values())
    total = sum(c["estimates"] for c in by_est.values())
    warning = None
    if total and sat * 2 > total:
        warning = (f"{sat} of {total} final I(X;T) estimates sit within {SATURATION_GAP_BITS} bits of log2 N = "
                   f"{ceilings['I_XT']:.2f} (saturated): they report the activation scale, not information. "
                   "See the sweep (--sweep) and try --noise-var, --bin-size or --noise-scale relative.")
    return {"threshold_bits": SATURATION_GAP_BITS, "I_XT_ceiling": ceilings["I_XT"],
            "I_TY_ceiling": ceilings["I_TY"], "final_saturated": sat, "final_estimates": total,
            "by_estimator": by_est, "warning": warning}


def sweep_separation(sweep: Mapping[str, Any], layers: Sequence[str], *, min_bits: float = 0.1) -> dict[str, Any]:
    """Where NT and AT separate along a sweep, per estimator, inputs and probe, at the last
    swept measurement: the largest |NT − AT| (bits), the grid value where it occurs, NT − AT
    at every grid value, and the grid values where |NT − AT| ≥ ``min_bits``."""
    out: dict[str, Any] = {}
    for est in sweep["estimators"]:
        grid = sweep["bin_size" if est == "binning" else "noise_var"]
        out[est] = {}
        for inputs in INPUTS:
            per_probe = {}
            for j, layer in enumerate(layers):
                try:
                    nt = np.asarray(sweep["nt"][inputs][est]["I_XT"][-1][j], float)
                    at = np.asarray(sweep["at"][inputs][est]["I_XT"][-1][j], float)
                except (KeyError, IndexError):
                    continue
                diff = nt - at
                k = int(np.argmax(np.abs(diff)))
                per_probe[layer] = {"max_abs_nt_minus_at_bits": float(abs(diff[k])), "at": float(grid[k]),
                                    "nt_minus_at_bits": diff.tolist(),
                                    "separated_at": [float(g) for g, v in zip(grid, diff) if abs(v) >= min_bits]}
            out[est][inputs] = per_probe
    return {"min_bits": min_bits, **out}


@dataclasses.dataclass
class RunResult:
    """Everything an NT-vs-AT run measured.

    Attributes:
      layers: probe names, in order.
      epochs_measured: the epoch of every measurement (0 = the initial weights).
      num_classes: number of classes.
      data: where the data came from and how much was used.
      seeds: the seed of every stacked run.
      histories: one ``{regime: History}`` per seed.
      timing: wall-clock seconds and execution details (kept out of the summary so that it
        is reproducible).
      ceilings: ``{"I_XT": log₂ N, "I_TY": Ĥ(Y)}`` of the MI draw.
      sweep_grid: ``{"noise_var": [...], "bin_size": [...], "estimators": [...],
        "noise_scale": ...}`` when the run swept, else None.
      robust: ``{regime: [one report per seed]}`` of the final models' robust evaluation
        (:func:`jaxmi.evaluation.robust_report`), empty when it was off.
    """

    layers: list[str]
    epochs_measured: list[int]
    num_classes: int
    data: dict[str, Any]
    seeds: list[int]
    histories: list[dict[str, History]]
    timing: dict[str, Any]
    ceilings: dict[str, float] = dataclasses.field(default_factory=dict)
    sweep_grid: dict[str, Any] | None = None
    robust: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)

    def summary_fields(self) -> dict[str, Any]:
        """The run's part of ``summary.json``: layers, epochs, data, ``nt``/``at`` (seed means
        with ``_sd`` entries when there are several seeds), every seed's own, the saturation
        report and the sweep (with where NT and AT separate)."""
        out: dict[str, Any] = {"layers": list(self.layers), "epochs_measured": list(self.epochs_measured),
                               "data": dict(self.data), "num_classes": int(self.num_classes)}
        if len(self.histories) == 1:
            out.update({r: self.histories[0][r].to_dict() for r in REGIMES})
        else:
            out.update(aggregate_seeds(self.histories, self.ceilings))
            out["seeds"] = [{"seed": s, **{r: h[r].to_dict() for r in REGIMES}}
                            for s, h in zip(self.seeds, self.histories)]
        sweeps = {r: out[r].pop("sweep", None) for r in REGIMES}
        if self.ceilings:
            out["saturation"] = saturation_report(out, self.ceilings)
        if self.sweep_grid is not None and all(sweeps.values()):
            sweep = {**self.sweep_grid, "epochs": sweeps["nt"]["epochs"],
                     **{r: {k: v for k, v in sweeps[r].items() if k != "epochs"} for r in REGIMES}}
            sweep["separation"] = sweep_separation(sweep, self.layers)
            out["sweep"] = sweep
        if self.robust:
            out["robust"] = {r: robust_summary(v) for r, v in self.robust.items()}
        return out

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary_fields` plus ``timing``."""
        return {**self.summary_fields(), "timing": self.timing}
