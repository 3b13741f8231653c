"""Finding 1: the MI trends on clean and on adversarial inputs agree.

Claim (Zhang et al. 2022, arXiv:2207.05756): for normally trained (NT) and adversarially
trained (AT) CNNs alike, the mutual-information curves over training epochs measured on
original inputs and on adversarial inputs follow almost the same trend.

Data: the per-epoch measurements of :func:`jaxmi.experiment.train_and_measure` (I(X;T) and
I(T;Y) of every probe with every estimator, on one fixed draw of test images, clean and PGD
adversarial, paired), either computed here or read from a finding-2 run directory
(``--from-run``).

For every (estimator, training mode, quantity, probe) *series* — the clean curve c_e and the
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

* ``trends_agree_nt`` / ``trends_agree_at``: at least ``min_fraction`` of that mode's series agree;
* ``trends_agree``: both hold.

Correlations over few measurements are weak evidence (with M = 2 every r is ±1); the paper
measures 200 epochs, the CPU preset 21 measurements.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxmi import plots
from jaxmi.experiment import MODES, Config, log_line, train_and_measure
from jaxmi.findings.common import across_seeds, load_run_summary, seed_table
from jaxmi.results import prepare_run_dir, write_json

__all__ = ["series_agreement", "decide", "verdict_table", "run", "PRESETS", "FLAT_BITS", "MIN_CORR", "MIN_FRACTION"]

FLAT_BITS = 0.05  # a curve varying less than this over training (bits) has no trend to follow
MIN_CORR = 0.7  # Pearson and Spearman both at least this: the adversarial curve follows the clean one
MIN_FRACTION = 0.75  # share of a mode's series that must agree

# Finding-1 presets on top of jaxmi.experiment.PRESETS (same training presets as finding 2).
PRESETS: dict[str, dict[str, Any]] = {"paper": {}, "cpu": {}, "smoke": {"epochs": 2}}


def _rank(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's ρ needs."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), float)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return None if den == 0 else float((a * b).sum() / den)


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
        out["pearson"] = _pearson(c, a)
        out["spearman"] = _pearson(_rank(c), _rank(a))
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
    per_mode: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    per_quantity: dict[str, list[dict[str, Any]]] = {"I_XT": [], "I_TY": []}
    for mode in MODES:
        for est, d in summary[mode]["mi"].items():
            for q in ("I_XT", "I_TY"):
                clean = np.asarray(d["clean"][q], float)
                adv = np.asarray(d["adv"][q], float)
                for j, layer in enumerate(layers):
                    s = series_agreement(clean[:, j], adv[:, j], flat_bits=flat_bits)
                    s["agrees"] = _agrees(s, min_corr)
                    series.setdefault(mode, {}).setdefault(est, {}).setdefault(q, {})[layer] = s
                    per_mode[mode].append(s)
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

    ev_mode = {m: summarise(per_mode[m]) for m in MODES}
    verdicts = {f"trends_agree_{m}": bool(ev_mode[m]["fraction_agreeing"] is not None
                                          and ev_mode[m]["fraction_agreeing"] >= min_fraction) for m in MODES}
    verdicts["trends_agree"] = all(verdicts[f"trends_agree_{m}"] for m in MODES)
    rule = {"flat_bits": flat_bits, "min_corr": min_corr, "min_fraction": min_fraction,
            "measurements": len(summary["epochs_measured"]),
            "rule": (f"a series (estimator, mode, quantity, probe) agrees when both curves vary < {flat_bits} bits "
                     f"or Pearson and Spearman over epochs are both ≥ {min_corr}; a mode's trends agree when "
                     f"≥ {min_fraction:.0%} of its series agree")}
    evidence = {
        "trends_agree": {**rule, "by_mode": ev_mode,
                         "by_quantity": {q: summarise(v) for q, v in per_quantity.items()}},
        **{f"trends_agree_{m}": ev_mode[m] for m in MODES},
        "series": series,
    }
    return verdicts, evidence


def verdict_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the verdicts and their key numbers."""
    v, e = summary["verdicts"], summary["evidence"]

    def fmt(x, spec="+.3f"):
        return "n/a" if x is None else format(x, spec)

    rows = []
    for m in MODES:
        s = e[f"trends_agree_{m}"]
        rows.append((f"trends_agree_{m}", v[f"trends_agree_{m}"],
                     f"{s['agreeing']}/{s['series']} series agree ({s['flat_series']} flat); median Pearson "
                     f"{fmt(s['median_pearson'])}, Spearman {fmt(s['median_spearman'])}; median |clean−adv| "
                     f"{fmt(s['mean_abs_gap_bits'], '.3f')} bits"))
    rows.append(("trends_agree", v["trends_agree"], "both modes"))
    w = max(len(r[0]) for r in rows)
    lines = [f"{'verdict':<{w}}  holds  evidence", "-" * (w + 70)]
    lines += [f"{name:<{w}}  {'yes' if ok else 'NO ':<5}  {text}" for name, ok, text in rows]
    seeds = seed_table(summary)
    return "\n".join(lines + ([seeds] if seeds else []))


def run(config: Config, workdir: str | Path, *, options: dict[str, Any] | None = None, overwrite: bool = False,
        show_progress: bool = True, log=log_line) -> dict[str, Any]:
    """Runs finding 1 and writes ``summary.json`` and figures into ``workdir``.

    Args:
      config: the NT-vs-AT run to train and measure (ignored with ``options["from_run"]``).
      workdir: output directory.
      options: ``{"from_run": DIR}`` reuses a finding-2 run's measurements instead of
        training; ``flat_bits``, ``min_corr``, ``min_fraction`` override the verdict rule.
    """
    options = dict(options or {})
    from_run = options.get("from_run")
    rule = {k: float(options[k]) for k in ("flat_bits", "min_corr", "min_fraction") if options.get(k) is not None}
    t0 = time.perf_counter()
    timing = None
    if from_run:
        src = load_run_summary(from_run)
        run_cfg = {k: v for k, v in src["config"].items() if k != "attack"}
        workdir = prepare_run_dir(workdir, {"from_run": str(Path(from_run).resolve()), **rule}, overwrite=overwrite)
        log(f"finding 1 from the measurements in {from_run} ({run_cfg.get('dataset')}, {run_cfg.get('model')}, "
            f"{len(src['epochs_measured'])} measurements)")
        summary: dict[str, Any] = {"config": src["config"], "layers": src["layers"],
                                   "epochs_measured": src["epochs_measured"], "data": src.get("data"),
                                   "nt": src["nt"], "at": src["at"], "source": {"from_run": str(from_run)}}
        if src.get("seeds"):
            summary["seeds"] = src["seeds"]
    else:
        workdir = prepare_run_dir(workdir, {**config.to_dict(), **rule}, overwrite=overwrite)
        kwargs = {}
        if "workdir" in inspect.signature(train_and_measure).parameters:
            kwargs["workdir"] = workdir  # checkpoints and the trained models (reusable by findings 3 and 4)
        result = train_and_measure(config, log=log, show_progress=show_progress, **kwargs)
        timing = result.get("timing")
        summary = {"config": {**config.to_dict(), "attack": vars(config.attack())}, "layers": result["layers"],
                   "epochs_measured": result["epochs_measured"], "data": result["data"], "nt": result["nt"],
                   "at": result["at"], "source": {"trained": True}}
        if "seeds" in result:
            summary["seeds"] = result["seeds"]
    summary = {"finding": "1: MI trends on clean and on adversarial inputs agree", **summary}
    verdicts, evidence = decide(summary, **{k: v for k, v in rule.items()})
    summary["verdicts"] = verdicts
    summary["evidence"] = evidence
    if summary.get("seeds"):  # --seeds K: verdicts above on the seed means; here per seed, mean ± sd
        evidence["across_seeds"] = across_seeds(summary, lambda s: decide(s, **rule))
    figures = plots.plot_trend_agreement(summary, workdir)
    figures += plots.plot_information_planes(summary, workdir)
    for q in ("I_XT", "I_TY"):
        figures += plots.plot_mi_trajectories(summary, workdir, quantity=q)
    figures += plots.plot_training_curves(summary, workdir)
    summary["figures"] = [p.name for p in figures]
    write_json(workdir / "summary.json", summary)
    write_json(workdir / "timing.json", {**(timing or {}), "finding1_runtime_seconds": time.perf_counter() - t0})
    log(verdict_table(summary))
    return summary
