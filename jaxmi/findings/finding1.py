"""Finding 1: the MI trends on clean and on adversarial inputs agree.

Claim (Zhang et al. 2022, arXiv:2207.05756): for normally trained (NT) and adversarially
trained (AT) CNNs alike, the mutual-information curves over training epochs measured on
original inputs and on adversarial inputs follow almost the same trend.

Data: the per-epoch measurements of :func:`jaxmi.experiment.train_and_measure` (I(X;T) and
I(T;Y) of every probe with every estimator, on one fixed draw of test images, clean and PGD
adversarial, paired), either computed here or read from a finding-2 run directory
(``--from-run``).

A *series* is one (estimator, regime, quantity, probe): its clean curve c_e, adversarial
curve a_e and two control curves over the measurements from epoch 1 on (epoch 0, the untrained
network, would dominate every correlation through the jump to epoch 1): the **noise** control
n_e (the clean images plus random-sign noise of the attack's ε) and the **unrelated-input**
control u_e (uniform-noise images U[0, 1] of the draw's shape, one fixed draw, unrelated to the
data and to the labels), measured every epoch for every probe and estimator like the others.
An estimator that does not define a quantity (the kNN estimator ``knn`` gives I(T;Y) only) has
no series for it.

* **Informative series only**: a series counts when neither its clean nor its adversarial
  curve comes within 0.01 bits of the estimator's ceiling (log₂ N for I(X;T), Ĥ(Y) for
  I(T;Y)) at any of those measurements, and the clean curve's range exceeds ``noise_mult``
  (4) times its median bootstrap standard error. Saturated or flat series carry no trend and
  are never counted as agreeing. Curves an estimator does not report (null) are skipped.
* **Agreement** of a series: Lin's concordance correlation (CCC) between the epoch-to-epoch
  *changes* Δc and Δa, which is 1 only when the adversarial curve moves exactly as the clean
  one does (Pearson's r over levels rewards any shared drift; CCC also penalises a different
  scale of change). At least ``min_changes`` (3) changes are needed.
* **Noise control**: the same CCC between Δc and Δn. A random perturbation of the same size
  says how much agreement any perturbation of that size keeps; the claim about adversarial
  examples is that they are no *less* concordant with clean inputs than that. It cannot rule
  out a drift common to every input (the weights grow, every curve moves together): the noisy
  images are nearly the clean ones.
* **Unrelated-input control**: CCC(Δc, Δu). Inputs unrelated to the data share only what the
  network does to every input; if the clean curves move because of such a common drift, the
  unrelated curve moves with them and the adversarial curve's agreement is no better than
  its. The null hypothesis is CCC(Δc, Δa) ≤ CCC(Δc, Δu). Only series whose unrelated curve
  stays more than 0.01 bits from 0 and from the ceiling count (a pinned curve cannot move, and
  its CCC of 0 would let the comparison pass by default); a free but flat unrelated curve
  counts with its CCC of about 0 (a common drift would have moved it).
* **Detrended series**: every curve divided, measurement by measurement, by the same model's
  unrelated-input curve (same estimator, quantity, probe): a drift that multiplies every
  input's estimate by one factor cancels. The same informative rule on the ratio scale (the
  SE is the standard deviation of the resampled ratios) and the same CCC. This divides by a
  reference rather than measuring at a scale-free σ²: a σ² in units of each layer's own spread
  would need a second KDE pass on clean and adversarial inputs every epoch (see
  docs/findings.md for the choice).

Per regime and seed, each effect is a mean over the series that count; on every bootstrap
resample of the test draw (the same resamples for every epoch, regime and input kind) the
same mean is recomputed, and seeds are combined by :mod:`jaxmi.verdicts`
(:func:`jaxmi.findings.trend_series.seed_regime` computes the series).

Verdicts (records of :mod:`jaxmi.verdicts`):

* ``trends_agree_nt`` / ``trends_agree_at``: mean CCC(Δclean, Δadv) with its interval above
  ``ccc_high`` (0.5), *and* ``beats_unrelated_control`` of the regime holds (otherwise it
  fails with it or is untestable with it; ``ccc_interval_above_null`` keeps the CCC part);
* ``adv_not_below_noise_nt`` / ``..._at``: mean [CCC(Δclean, Δadv) − CCC(Δclean, Δnoise)]
  with its interval above −``margin`` (0.1, a non-inferiority margin);
* ``beats_unrelated_control_nt`` / ``..._at``: mean [CCC(Δclean, Δadv) − CCC(Δclean,
  Δunrelated)] with its interval above 0;
* ``trends_agree_detrended_nt`` / ``..._at``: mean CCC of the detrended changes with its
  interval above ``ccc_high``;
* ``trends_agree``: all eight hold (untestable when any part is, false when any part fails).

Untestable: no informative series, fewer than ``min_changes`` changes, no bootstrap and one
seed, a network that did not learn (:func:`jaxmi.verdicts.did_not_learn`); the two
unrelated-control verdicts also when the run has no unrelated-input curves (summaries
written before the control existed) or every such curve is pinned at 0 or the ceiling.

Script: ``experiments/finding1_mi_trends.py`` (:func:`jaxmi.cli.main` with this module).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxmi import plots
from jaxmi.config import Config, setting
from jaxmi.estimators import SATURATION_GAP_BITS
from jaxmi.findings.common import measured_run
from jaxmi.findings.runner import Finding, Measured
from jaxmi.findings.summary import learn_reason, read_summary, seed_runs, verdict_lines
from jaxmi.findings.trend_series import seed_regime
from jaxmi.history import QUANTITIES, REGIMES
from jaxmi.results import is_local
from jaxmi.run import log_line
from jaxmi.verdicts import all_of, format_record, record, untestable

__all__ = ["decide", "verdict_table", "run", "Options", "PRESETS", "CCC_HIGH", "MARGIN",
           "NOISE_MULT", "MIN_CHANGES", "TITLE", "FINDING"]

TITLE = "1: MI trends on clean and on adversarial inputs agree"
CCC_HIGH = 0.5  # mean concordance of the changes above this: the adversarial curve follows the clean one
MARGIN = 0.1  # adversarial agreement may fall short of the noise control's by at most this
NOISE_MULT = 4.0  # a clean curve must range over more than this many bootstrap standard errors
MIN_CHANGES = 3  # epoch-to-epoch changes from epoch 1 on needed for a concordance


@dataclasses.dataclass(frozen=True)
class Options:
    """Finding-1 settings beyond the shared configuration."""

    from_run: str | None = setting(None, "reuse the per-epoch MI of a finished finding-2 run directory instead of "
                                         "training", metavar="DIR")
    ccc_high: float | None = setting(None, f"concordance of the changes the interval must exceed (default "
                                           f"{CCC_HIGH})")
    margin: float | None = setting(None, f"non-inferiority margin of adversarial vs noise agreement (default "
                                         f"{MARGIN})")
    noise_mult: float | None = setting(None, f"a clean curve must range over more than this many bootstrap "
                                             f"standard errors to be informative (default {NOISE_MULT})")

    def rule(self) -> dict[str, float]:
        """The verdict-rule overrides that were given."""
        return {k: float(v) for k in ("ccc_high", "margin", "noise_mult") if (v := getattr(self, k)) is not None}


# Finding-1 presets on top of jaxmi.config.PRESETS (same training presets as finding 2).
PRESETS: dict[str, dict[str, Any]] = {"paper": {}, "cpu": {}, "smoke": {"epochs": 2}}


def _gate(rec: dict[str, Any], gate: dict[str, Any], gate_name: str) -> dict[str, Any]:
    """``rec`` holding only where ``gate`` holds too: a CCC above its null that does not beat the
    unrelated control is no evidence for the claim (it fails with a failing gate, and is
    untestable with an untestable one)."""
    above = rec["holds"]
    out = {**rec, "ccc_interval_above_null": above, "gated_by": gate_name}
    if above is True and gate["holds"] is not True:
        out["holds"] = gate["holds"]
        if gate["holds"] is None:
            out["reason"] = f"its CCC interval lies above the null, but {gate_name} is untestable: {gate['reason']}"
    return out


def decide(summary: dict[str, Any], *, ccc_high: float = CCC_HIGH, margin: float = MARGIN,
           noise_mult: float = NOISE_MULT) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Finding-1 verdict records and their evidence from a summary whose ``run`` holds per-epoch
    MI (every seed's own histories when the run had several)."""
    run = summary["run"]
    layers = run["layers"]
    epochs = list(run["epochs_measured"])
    idx = [i for i, e in enumerate(epochs) if e >= 1]
    seeds = seed_runs(summary)
    k = len(seeds)
    sat = run.get("saturation") or {}
    ceilings = {"I_XT": sat.get("I_XT_ceiling", np.inf), "I_TY": sat.get("I_TY_ceiling", np.inf)}
    informative = (f"informative series (never within {SATURATION_GAP_BITS} bits of the ceiling, clean range > "
                   f"{noise_mult:g} bootstrap SE)")
    rules = {
        "agreement": (f"mean over {informative} of Lin's CCC between the epoch-to-epoch changes of the clean and the "
                      f"adversarial MI from epoch 1 on; holds when its 95% interval lies above {ccc_high:g} and "
                      "beats_unrelated_control of the regime holds"),
        "control": (f"mean over the same series of CCC(Δclean, Δadv) − CCC(Δclean, Δnoise), noise = random signs of "
                    f"the attack's ε; holds when its 95% interval lies above −{margin:g} (adversarial agreement not "
                    "below the noise control's)"),
        "beats_unrelated": ("mean over the same series, where the unrelated-input curve (uniform-noise images) stays "
                            f"more than {SATURATION_GAP_BITS} bits from 0 and from the ceiling, of CCC(Δclean, Δadv) − "
                            "CCC(Δclean, Δunrelated); holds when its 95% interval lies above 0 (adversarial inputs "
                            "follow the clean trend more closely than inputs unrelated to the data do)"),
        "detrended": ("the same mean CCC on every curve divided by the same model's unrelated-input curve at each "
                      f"measurement (series informative on that ratio scale); holds when its 95% interval lies above "
                      f"{ccc_high:g}"),
    }
    names = {"agreement": "trends_agree", "control": "adv_not_below_noise",
             "beats_unrelated": "beats_unrelated_control", "detrended": "trends_agree_detrended"}
    nulls = {"agreement": ccc_high, "control": -margin, "beats_unrelated": 0.0, "detrended": ccc_high}
    unit = "CCC"
    reason = learn_reason(summary)
    if reason is None and len(idx) - 1 < MIN_CHANGES:
        reason = (f"{len(idx)} measurements from epoch 1 on give {max(len(idx) - 1, 0)} changes; at least "
                  f"{MIN_CHANGES} are needed (train more epochs)")
    verdicts: dict[str, dict[str, Any]] = {}
    evidence: dict[str, Any] = {"measurements_used": [epochs[i] for i in idx], "ceilings": ceilings}
    for regime in REGIMES:
        per = [] if reason else [seed_regime(h[regime], layers, idx, ceilings, noise_mult) for h in seeds]
        evidence[regime] = {"per_seed": [p["counts"] for p in per], "mean_ccc_per_seed": [p["means"] for p in per],
                            "series": per[0]["series"] if per else []}
        recs = {}
        for key in ("agreement", "control", "beats_unrelated", "detrended"):
            got = [p[key] for p in per]
            if reason or not got or any(g is None for g in got):
                recs[key] = untestable(reason or _why_untestable(key, per), unit=unit, rule=rules[key], seeds=k,
                                       null_value=nulls[key])
            else:
                recs[key] = record([g[0] for g in got], [g[1] for g in got], unit=unit, rule=rules[key],
                                   null_value=nulls[key],
                                   bounds=(-1.0, 1.0) if key in ("agreement", "detrended") else (-2.0, 2.0))
        recs["agreement"] = _gate(recs["agreement"], recs["beats_unrelated"],
                                  f"beats_unrelated_control_{regime}")
        verdicts.update({f"{names[key]}_{regime}": r for key, r in recs.items()})
    verdicts["trends_agree"] = all_of({n: verdicts[n] for n in verdicts},
                                      rule="in both regimes the trends agree beyond the unrelated-input control, "
                                           "also on the detrended series, and not below the noise control")
    if reason:
        evidence["warning"] = reason
    return verdicts, evidence


def _why_untestable(key: str, per: list[dict[str, Any]]) -> str:
    """Why a pooled effect is missing in some seed."""
    if any(p["agreement"] is None for p in per) and key in ("agreement", "control", "beats_unrelated"):
        return "no informative series (all saturated, flat within their bootstrap noise, or without resamples)"
    if key == "control":
        return "no informative series with a noise control (run with --noise-control)"
    if not all(p["has_unrelated"] for p in per):
        return ("the unrelated-input control is absent from this run (measured by runs with the noise control on; "
                "measure again to decide this verdict)")
    if key == "beats_unrelated":
        return ("in every informative series the unrelated-input curve touches 0 or the ceiling: it could not move, "
                "so it cannot fail")
    return ("no series informative after detrending (the unrelated-input curve touches 0 or the ceiling, or the "
            "ratio's range is within its bootstrap noise)")


def verdict_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the verdicts and their key numbers."""
    e = summary["evidence"]
    rows = []
    for name, r in summary["verdicts"].items():
        text = format_record(r)
        regime = name.rsplit("_", 1)[-1]
        if regime in REGIMES and e.get(regime, {}).get("per_seed"):
            c = e[regime]["per_seed"][0]
            text += f"; {c['informative']}/{c['series']} series informative ({c['saturated']} saturated)"
            mean_u = (e[regime].get("mean_ccc_per_seed") or [{}])[0].get("ccc_clean_unrelated")
            if name.startswith("beats_unrelated") and mean_u is not None:
                text += (f"; first seed: mean CCC with the unrelated input {mean_u:+.3f} over "
                         f"{c['unrelated_can_move']} series whose control can move ({c['unrelated_flat']} flat)")
        rows.append((name, r["holds"], text))
    return verdict_lines(rows, summary)


def _identity(config: Config, opts: Options) -> dict[str, Any]:
    """A run directory's identity: the source directory with ``--from-run``, else the
    configuration; and the rule overrides."""
    if opts.from_run:
        return {"from_run": os.path.abspath(opts.from_run) if is_local(opts.from_run) else str(opts.from_run),
                **opts.rule()}
    return {**config.identity(), **opts.rule()}


_RUN_KEYS = ("layers", "epochs_measured", "data", "nt", "at")  # what finding 1 takes from a --from-run run
_RUN_OPTIONAL = ("seeds", "num_classes", "saturation", "robust")


def _measure(config: Config, opts: Options, workdir, *, log=log_line, show_progress: bool = True) -> Measured:
    """The per-epoch measurements: read from ``--from-run`` (no training), or measured here."""
    if not opts.from_run:
        return measured_run(config, opts, workdir, log=log, show_progress=show_progress)
    src = read_summary(opts.from_run, require_mi=True)
    run_cfg = {k: v for k, v in src["config"].items() if k != "attack"}
    log(f"finding 1 from the measurements in {opts.from_run} ({run_cfg.get('dataset')}, {run_cfg.get('model')}, "
        f"{len(src['run']['epochs_measured'])} measurements)")
    run = {k: src["run"].get(k) for k in _RUN_KEYS}
    run.update({k: src["run"][k] for k in _RUN_OPTIONAL if src["run"].get(k)})
    return Measured(src["config"], {}, source={"from_run": str(opts.from_run)}, run=run)


def _figures(summary: dict[str, Any], workdir: Path, artifacts) -> list[Path]:
    figures = plots.plot_trend_agreement(summary, workdir)
    figures += plots.plot_information_planes(summary, workdir)
    for q in QUANTITIES:
        figures += plots.plot_mi_trajectories(summary, workdir, quantity=q)
    return figures + plots.plot_training_curves(summary, workdir)


def _check(config: Config, opts: Options) -> None:
    if opts.from_run:  # an unusable --from-run fails before the run directory is written
        read_summary(opts.from_run, require_mi=True)


FINDING = Finding(name="finding1", title=TITLE, measure=_measure,
                  decide=lambda summary, opts: decide(summary, **opts.rule()), table=verdict_table,
                  figures=_figures, presets=PRESETS, options=Options, identity=_identity, check=_check,
                  seeds_native=True)


def run(config: Config, workdir: str | Path, *, options: dict[str, Any] | None = None, overwrite: bool = False,
        show_progress: bool = True, log=log_line) -> dict[str, Any]:
    """Runs finding 1 and writes ``summary.json`` and figures into ``workdir``
    (:func:`jaxmi.findings.runner.run`).

    Args:
      config: the NT-vs-AT run to train and measure (ignored with ``options["from_run"]``).
      workdir: output directory.
      options: :class:`Options` as a dict: ``from_run`` reuses a finding-2 run's measurements
        instead of training; ``ccc_high``, ``margin``, ``noise_mult`` override the rule.
    """
    return FINDING.run(config, workdir, options=options, overwrite=overwrite, show_progress=show_progress, log=log)
