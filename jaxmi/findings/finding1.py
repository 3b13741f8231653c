"""Finding 1: the MI trends on clean and on adversarial inputs agree.

Claim (Zhang et al. 2022, arXiv:2207.05756): for normally trained (NT) and adversarially
trained (AT) CNNs alike, the mutual-information curves over training epochs measured on
original inputs and on adversarial inputs follow almost the same trend.

Data: the per-epoch measurements of :func:`jaxmi.experiment.train_and_measure` (I(X;T) and
I(T;Y) of every probe with every estimator, on one fixed draw of test images, clean and PGD
adversarial, paired), either computed here or read from a finding-2 run directory
(``--from-run``).

For every (estimator, regime, quantity, probe) *series* — the clean curve c_e and the
adversarial curve a_e over the M measurements — the evidence records:

* Pearson's r and Spearman's ρ between c and a over epochs;
* the mean absolute gap (1/M) Σ_e |c_e − a_e| in bits (a level difference, not a trend one);
* the direction agreement: the fraction of epoch-to-epoch steps where c and a move the same
  way (steps where both move less than ``flat_bits`` count as agreeing);
* ``flat``: both curves vary by less than ``flat_bits`` over training (e.g. I(X;T) pinned at
  the log₂ N ceiling); a correlation is then undefined, and two flat curves trivially share
  their (absent) trend.

A series *agrees* when it is flat, or when r ≥ ``min_corr`` and ρ ≥ ``min_corr``.

Verdicts:

* ``trends_agree_nt`` / ``trends_agree_at``: at least ``min_fraction`` of that regime's series agree;
* ``trends_agree``: both hold.

Correlations over few measurements are weak evidence (with M = 2 every r is ±1); the paper
measures 200 epochs, the CPU preset 21 measurements.

Script: ``experiments/finding1_mi_trends.py`` (:func:`jaxmi.cli.main` with this module).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxmi import plots
from jaxmi.config import Config, normalize_identity, setting
from jaxmi.findings.common import Finding, across_seeds, load_run_summary, parse_options, run_summary, verdict_lines
from jaxmi.history import QUANTITIES, REGIMES
from jaxmi.results import is_local, prepare_run_dir, write_json
from jaxmi.run import log_line, train_and_measure
from jaxmi.stats import pearson, rank

__all__ = ["series_agreement", "decide", "verdict_table", "run", "Options", "PRESETS", "FLAT_BITS", "MIN_CORR",
           "MIN_FRACTION", "TITLE", "FINDING"]

TITLE = "1: MI trends on clean and on adversarial inputs agree"
FLAT_BITS = 0.05  # a curve varying less than this over training (bits) has no trend to follow
MIN_CORR = 0.7  # Pearson and Spearman both at least this: the adversarial curve follows the clean one
MIN_FRACTION = 0.75  # share of a regime's series that must agree


@dataclasses.dataclass(frozen=True)
class Options:
    """Finding-1 settings beyond the shared configuration."""

    from_run: str | None = setting(None, "reuse the per-epoch MI of a finished finding-2 run directory instead of "
                                         "training", metavar="DIR")
    min_corr: float | None = setting(None, f"Pearson and Spearman threshold for a series to agree (default "
                                           f"{MIN_CORR})")
    flat_bits: float | None = setting(None, f"curves varying less than this (bits) are flat (default {FLAT_BITS})")
    min_fraction: float | None = setting(None, f"share of a regime's series that must agree (default "
                                               f"{MIN_FRACTION})")


    def rule(self) -> dict[str, float]:
        """The verdict-rule overrides that were given."""
        return {k: float(v) for k in ("flat_bits", "min_corr", "min_fraction") if (v := getattr(self, k)) is not None}


# Finding-1 presets on top of jaxmi.config.PRESETS (same training presets as finding 2).
PRESETS: dict[str, dict[str, Any]] = {"paper": {}, "cpu": {}, "smoke": {"epochs": 2}}


def series_agreement(clean, adv, *, flat_bits: float = FLAT_BITS) -> dict[str, Any]:
    """Trend agreement of one clean and one adversarial MI curve (see the module docstring)."""
    c = np.asarray(clean, float)
    a = np.asarray(adv, float)
    ok = np.isfinite(c) & np.isfinite(a)
    c, a = c[ok], a[ok]
    out: dict[str, Any] = {"points": int(c.size)}
    if c.size == 0:
        return {**out, "pearson": None, "spearman": None, "mean_abs_gap_bits": None, "direction_agreement": None,
                "flat": False, "range_clean_bits": None, "range_adv_bits": None}
    out["mean_abs_gap_bits"] = float(np.mean(np.abs(c - a)))
    out["range_clean_bits"] = float(np.ptp(c))
    out["range_adv_bits"] = float(np.ptp(a))
    out["flat"] = bool(max(out["range_clean_bits"], out["range_adv_bits"]) < flat_bits)
    if c.size >= 2:
        dc, da = np.diff(c), np.diff(a)
        both_still = (np.abs(dc) < flat_bits) & (np.abs(da) < flat_bits)
        out["direction_agreement"] = float(np.mean(both_still | (np.sign(dc) == np.sign(da))))
        out["pearson"] = pearson(c, a)
        out["spearman"] = pearson(rank(c), rank(a))
    else:
        out["direction_agreement"] = out["pearson"] = out["spearman"] = None
    return out


def _agrees(s: dict[str, Any], min_corr: float) -> bool:
    if s["flat"]:
        return True
    return s["pearson"] is not None and s["spearman"] is not None and s["pearson"] >= min_corr \
        and s["spearman"] >= min_corr


def _median(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def decide(summary: dict[str, Any], *, flat_bits: float = FLAT_BITS, min_corr: float = MIN_CORR,
           min_fraction: float = MIN_FRACTION) -> tuple[dict[str, bool], dict[str, Any]]:
    """Finding-1 verdicts and their evidence from an NT-vs-AT summary with per-epoch MI."""
    layers = summary["layers"]
    series: dict[str, Any] = {}
    per_regime: dict[str, list[dict[str, Any]]] = {r: [] for r in REGIMES}
    per_quantity: dict[str, list[dict[str, Any]]] = {q: [] for q in QUANTITIES}
    for regime in REGIMES:
        series[regime] = {}
        for est, d in summary[regime]["mi"].items():
            series[regime][est] = {}
            for q in QUANTITIES:
                clean = np.asarray(d["clean"][q], float)
                adv = np.asarray(d["adv"][q], float)
                series[regime][est][q] = {}
                for j, layer in enumerate(layers):
                    s = series_agreement(clean[:, j], adv[:, j], flat_bits=flat_bits)
                    s["agrees"] = _agrees(s, min_corr)
                    series[regime][est][q][layer] = s
                    per_regime[regime].append(s)
                    per_quantity[q].append(s)

    def summarise(items):
        informative = [s for s in items if not s["flat"]]
        return {
            "series": len(items), "flat_series": len(items) - len(informative),
            "agreeing": int(sum(s["agrees"] for s in items)),
            "fraction_agreeing": float(np.mean([s["agrees"] for s in items])) if items else None,
            "median_pearson": _median(s["pearson"] for s in informative),
            "median_spearman": _median(s["spearman"] for s in informative),
            "min_pearson": min((s["pearson"] for s in informative if s["pearson"] is not None), default=None),
            "mean_abs_gap_bits": _median(s["mean_abs_gap_bits"] for s in items) if items else None,
            "median_direction_agreement": _median(s["direction_agreement"] for s in informative),
        }

    ev_regime = {r: summarise(per_regime[r]) for r in REGIMES}
    verdicts = {f"trends_agree_{r}": bool(ev_regime[r]["fraction_agreeing"] is not None
                                          and ev_regime[r]["fraction_agreeing"] >= min_fraction) for r in REGIMES}
    verdicts["trends_agree"] = all(verdicts[f"trends_agree_{r}"] for r in REGIMES)
    rule = {"flat_bits": flat_bits, "min_corr": min_corr, "min_fraction": min_fraction,
            "measurements": len(summary["epochs_measured"]),
            "rule": (f"a series (estimator, regime, quantity, probe) agrees when both curves vary < {flat_bits} bits "
                     f"or Pearson and Spearman over epochs are both ≥ {min_corr}; a regime's trends agree when "
                     f"≥ {min_fraction:.0%} of its series agree")}
    evidence = {
        "trends_agree": {**rule, "by_mode": ev_regime,
                         "by_quantity": {q: summarise(v) for q, v in per_quantity.items()}},
        **{f"trends_agree_{r}": ev_regime[r] for r in REGIMES},
        "series": series,
    }
    return verdicts, evidence


def verdict_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the verdicts and their key numbers."""
    v, e = summary["verdicts"], summary["evidence"]

    def fmt(x, spec="+.3f"):
        return "n/a" if x is None else format(x, spec)

    rows = []
    for r in REGIMES:
        s = e[f"trends_agree_{r}"]
        rows.append((f"trends_agree_{r}", v[f"trends_agree_{r}"],
                     f"{s['agreeing']}/{s['series']} series agree ({s['flat_series']} flat); median Pearson "
                     f"{fmt(s['median_pearson'])}, Spearman {fmt(s['median_spearman'])}; median |clean−adv| "
                     f"{fmt(s['mean_abs_gap_bits'], '.3f')} bits"))
    rows.append(("trends_agree", v["trends_agree"], "both regimes"))
    return verdict_lines(rows, summary)


def run(config: Config, workdir: str | Path, *, options: dict[str, Any] | None = None, overwrite: bool = False,
        show_progress: bool = True, log=log_line) -> dict[str, Any]:
    """Runs finding 1 and writes ``summary.json`` and figures into ``workdir``.

    Args:
      config: the NT-vs-AT run to train and measure (ignored with ``options["from_run"]``).
      workdir: output directory.
      options: :class:`Options` as a dict: ``from_run`` reuses a finding-2 run's measurements
        instead of training; ``flat_bits``, ``min_corr``, ``min_fraction`` override the rule.
    """
    opts = parse_options(Options, options)
    rule = opts.rule()
    t0 = time.perf_counter()
    timing = None
    if opts.from_run:
        src = load_run_summary(opts.from_run)
        run_cfg = {k: v for k, v in src["config"].items() if k != "attack"}
        source = os.path.abspath(opts.from_run) if is_local(opts.from_run) else str(opts.from_run)
        workdir = prepare_run_dir(workdir, {"from_run": source, **rule},
                                  overwrite=overwrite)
        log(f"finding 1 from the measurements in {opts.from_run} ({run_cfg.get('dataset')}, {run_cfg.get('model')}, "
            f"{len(src['epochs_measured'])} measurements)")
        summary: dict[str, Any] = {"config": src["config"], "layers": src["layers"], "epochs_measured": src["epochs_measured"],
                   "data": src.get("data"), "nt": src["nt"], "at": src["at"], "source": {"from_run": str(opts.from_run)}}
        if src.get("seeds"):
            summary["seeds"] = src["seeds"]
    else:
        workdir = prepare_run_dir(workdir, {**config.identity(), **rule}, overwrite=overwrite,
                                  normalize=normalize_identity)
        result = train_and_measure(config, log=log, show_progress=show_progress, workdir=workdir)
        timing = result.timing
        fields = run_summary(config, result)
        seeds = fields.pop("seeds", None)
        summary = {**fields, "source": {"trained": True}, **({"seeds": seeds} if seeds else {})}
    summary = {"finding": TITLE, **summary}
    verdicts, evidence = decide(summary, **rule)
    summary["verdicts"] = verdicts
    summary["evidence"] = evidence
    if summary.get("seeds"):  # --seeds K: verdicts above on the seed means; here per seed, mean ± sd
        evidence["across_seeds"] = across_seeds(summary, lambda s: decide(s, **rule))
    figures = plots.plot_trend_agreement(summary, workdir)
    figures += plots.plot_information_planes(summary, workdir)
    for q in QUANTITIES:
        figures += plots.plot_mi_trajectories(summary, workdir, quantity=q)
    figures += plots.plot_training_curves(summary, workdir)
    summary["figures"] = [p.name for p in figures]
    write_json(workdir / "summary.json", summary)
    write_json(workdir / "timing.json", {**(timing or {}), "finding1_runtime_seconds": time.perf_counter() - t0})
    log(verdict_table(summary))
    return summary


FINDING = Finding(name="finding1", title=TITLE, run=run, presets=PRESETS, options=Options, seeds_native=True)
