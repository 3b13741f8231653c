"""Finding 1: the MI trends on clean and on adversarial inputs agree.

Claim (Zhang et al. 2022, arXiv:2207.05756): for normally trained (NT) and adversarially
trained (AT) CNNs alike, the mutual-information curves over training epochs measured on
original inputs and on adversarial inputs follow almost the same trend.

Data: the per-epoch measurements of :func:`jaxmi.experiment.train_and_measure` (I(X;T) and
I(T;Y) of every probe with every estimator, on one fixed draw of test images, clean and PGD
adversarial, paired), either computed here or read from a finding-2 run directory
(``--from-run``).

A *series* is one (estimator, regime, quantity, probe): its clean curve c_e, adversarial
curve a_e and control curve n_e (the clean images plus random-sign noise of the attack's ε)
over the measurements from epoch 1 on (epoch 0, the untrained network, would dominate every
correlation through the jump to epoch 1). An estimator that does not define a quantity (the
kNN estimator ``knn`` gives I(T;Y) only) has no series for it.

* **Informative series only**: a series counts when neither its clean nor its adversarial
  curve comes within 0.01 bits of the estimator's ceiling (log₂ N for I(X;T), Ĥ(Y) for
  I(T;Y)) at any of those measurements, and the clean curve's range exceeds ``noise_mult``
  (4) times its median bootstrap standard error. Saturated or flat series carry no trend and
  are never counted as agreeing.
* **Agreement** of a series: Lin's concordance correlation (CCC) between the epoch-to-epoch
  *changes* Δc and Δa, which is 1 only when the adversarial curve moves exactly as the clean
  one does (Pearson's r over levels rewards any shared drift; CCC also penalises a different
  scale of change). At least ``min_changes`` (3) changes are needed.
* **Control**: the same CCC between Δc and the changes of the noise curve Δn. A random
  perturbation of the same size says how much agreement any perturbation of that size keeps;
  the claim about adversarial examples is that they are no *less* concordant with clean
  inputs than that.

Per regime and seed, the effect is the mean CCC over the informative series; on every
bootstrap resample of the test draw (the same resamples for every epoch, regime and input
kind) the same mean is recomputed, and seeds are combined by :mod:`jaxmi.verdicts`.

Verdicts (records of :mod:`jaxmi.verdicts`):

* ``trends_agree_nt`` / ``trends_agree_at``: mean CCC(Δclean, Δadv) with its interval above
  ``ccc_high`` (0.5);
* ``adv_not_below_noise_nt`` / ``..._at``: mean [CCC(Δclean, Δadv) − CCC(Δclean, Δnoise)]
  with its interval above −``margin`` (0.1, a non-inferiority margin);
* ``trends_agree``: all four hold (untestable when any part is, false when any part fails).

Untestable: no informative series, fewer than ``min_changes`` changes, no bootstrap and one
seed, or a network that did not learn (:func:`jaxmi.verdicts.did_not_learn`).

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
from jaxmi.history import QUANTITIES, REGIMES
from jaxmi.results import is_local
from jaxmi.run import log_line
from jaxmi.verdicts import all_of, ccc_rows, format_record, record, untestable

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


def _changes(history: dict[str, Any], est: str, q: str, idx: list[int]) -> dict[str, tuple]:
    """Per measured input kind: the epoch-to-epoch changes over the measurements ``idx`` of
    every probe's point curve [P, M−1] and of its resample curves [P, R, M−1] (or None)."""
    out = {}
    for inputs, block in history["mi"][est].items():
        v = np.asarray(block[q], np.float64)[idx]  # [M, P]
        boot = (history.get("mi_boot") or {}).get(est, {}).get(inputs)
        b = None
        if boot is not None:
            b = np.diff(np.moveaxis(np.asarray(boot[q], np.float64)[idx], 0, -1), axis=-1)  # [P, R, M−1]
        out[inputs] = (np.diff(v, axis=0).T, b)
    return out


def _seed_regime(history: dict[str, Any], layers: list[str], idx: list[int], ceilings: dict[str, float],
                 noise_mult: float) -> dict[str, Any]:
    """One seed and regime: every series' informativeness and concordances, and the pooled
    effects with their resample values."""
    series, ca, cn, ca_b, diff_b = [], [], [], [], []
    se_block = history.get("mi_se") or {}
    for est in history["mi"]:
        for q in QUANTITIES:
            if np.isnan(np.asarray(history["mi"][est]["clean"][q], np.float64)).all():
                continue  # a quantity the estimator does not define (knn's I(X;T)): no series
            clean = np.asarray(history["mi"][est]["clean"][q], np.float64)[idx]
            adv = np.asarray(history["mi"][est]["adv"][q], np.float64)[idx]
            se = (np.median(np.asarray(se_block[est]["clean"][q], np.float64)[idx], axis=0)
                  if se_block.get(est, {}).get("clean") else None)
            d = _changes(history, est, q, idx)
            dc, bc = d["clean"]
            da, ba = d["adv"]
            dn, bn = d.get("noise", (None, None))
            c_adv = ccc_rows(dc, da)  # [P]
            c_noise = None if dn is None else ccc_rows(dc, dn)
            b_adv = None if bc is None or ba is None else ccc_rows(bc, ba)  # [P, R]
            b_noise = None if bc is None or bn is None else ccc_rows(bc, bn)
            for j, layer in enumerate(layers):
                gap = ceilings[q] - np.concatenate([clean[:, j], adv[:, j]])
                saturated = bool(np.any(gap < SATURATION_GAP_BITS))
                rng = float(np.ptp(clean[:, j]))
                above_noise = se is not None and rng > noise_mult * float(se[j])
                s = {"estimator": est, "quantity": q, "probe": layer, "saturated": saturated,
                     "range_clean_bits": rng, "median_se_bits": None if se is None else float(se[j]),
                     "informative": bool(not saturated and above_noise),
                     "ccc_clean_adv": None if np.isnan(c_adv[j]) else float(c_adv[j]),
                     "ccc_clean_noise": None if c_noise is None or np.isnan(c_noise[j]) else float(c_noise[j])}
                series.append(s)
                if not s["informative"] or s["ccc_clean_adv"] is None or b_adv is None:
                    continue
                ca.append(s["ccc_clean_adv"])
                ca_b.append(b_adv[j])
                if b_noise is not None and s["ccc_clean_noise"] is not None:
                    cn.append(s["ccc_clean_adv"] - s["ccc_clean_noise"])
                    diff_b.append(b_adv[j] - b_noise[j])
    out = {"series": series, "counts": {"series": len(series), "informative": int(sum(s["informative"] for s in series)),
                                        "saturated": int(sum(s["saturated"] for s in series))}}
    out["agreement"] = (float(np.mean(ca)), np.nanmean(np.asarray(ca_b), axis=0).tolist()) if ca else None
    out["control"] = (float(np.mean(cn)), np.nanmean(np.asarray(diff_b), axis=0).tolist()) if cn else None
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
    rule_agree = (f"mean over informative series (never within {SATURATION_GAP_BITS} bits of the ceiling, clean "
                  f"range > {noise_mult:g} bootstrap SE) of Lin's CCC between the epoch-to-epoch changes of the clean "
                  f"and the adversarial MI from epoch 1 on; holds when its 95% interval lies above {ccc_high:g}")
    rule_control = (f"mean over the same series of CCC(Δclean, Δadv) − CCC(Δclean, Δnoise), noise = random signs of "
                    f"the attack's ε; holds when its 95% interval lies above −{margin:g} (adversarial agreement not "
                    "below the noise control's)")
    unit = "CCC"
    reason = learn_reason(summary)
    if reason is None and len(idx) - 1 < MIN_CHANGES:
        reason = (f"{len(idx)} measurements from epoch 1 on give {max(len(idx) - 1, 0)} changes; at least "
                  f"{MIN_CHANGES} are needed (train more epochs)")
    verdicts: dict[str, dict[str, Any]] = {}
    evidence: dict[str, Any] = {"measurements_used": [epochs[i] for i in idx], "ceilings": ceilings}
    for regime in REGIMES:
        per = [] if reason else [_seed_regime(h[regime], layers, idx, ceilings, noise_mult) for h in seeds]
        evidence[regime] = {"per_seed": [p["counts"] for p in per], "series": per[0]["series"] if per else []}
        for name, key, rule, null in ((f"trends_agree_{regime}", "agreement", rule_agree, ccc_high),
                                      (f"adv_not_below_noise_{regime}", "control", rule_control, -margin)):
            got = [p[key] for p in per]
            if reason or not got or any(g is None for g in got):
                no_series = key == "agreement" or any(p["agreement"] is None for p in per)
                why = reason or ("no informative series (all saturated, flat within their bootstrap noise, or "
                                 "without resamples)" if no_series else
                                 "no informative series with a noise control (run with --noise-control)")
                verdicts[name] = untestable(why, unit=unit, rule=rule, seeds=k, null_value=null)
            else:
                verdicts[name] = record([g[0] for g in got], [g[1] for g in got], unit=unit, rule=rule,
                                        null_value=null, bounds=(-1.0, 1.0) if key == "agreement" else (-2.0, 2.0))
    verdicts["trends_agree"] = all_of({n: verdicts[n] for n in verdicts},
                                      rule="both regimes' trends agree and neither falls below its noise control")
    if reason:
        evidence["warning"] = reason
    return verdicts, evidence


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
