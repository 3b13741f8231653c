"""Finding 4: the KDE and binning estimators trace the geometry of a layer's output.

Claim (Zhang et al. 2022, arXiv:2207.05756): the values of the KDE and binning estimators are
determined by the geometry of the layer's output: how far the points spread relative to the
noise (σ²) or bin scale, how compact each class is and how far apart the classes are.

Two sources of layers T (N points, labels Y), measured with the statistics of
:mod:`jaxmi.geometry`:

* **Controlled cases**: K Gaussian class clusters (centres N(0, s_b² I_D), points around
  them N(0, s_w² I_D)), varied one factor at a time — ``scale`` (T ↦ c·T), ``separation``
  (s_b × f: classes moved apart), ``compactness`` (s_w × f: classes shrunk or spread),
  ``width`` (D, per-coordinate spreads fixed). One key, so only the varied factor changes.
* **Trained probes**: every probe of the trained NT and AT models on clean and adversarial
  test inputs (trained here, or loaded with ``--from-run``).

For each layer it records the estimates (KDE upper and lower bound, binning; I(X;T), I(T;Y),
bits) and geometry statistics, with s the kernel scale (2σ² upper, 8σ² lower bound):

* ``spread`` = median pairwise squared distance / s (all pairs, or a seeded sample of ``pairs``);
* ``separation`` = mean between-class squared distance / (mean within-class squared distance + s)
  (exact, from class sums): ≫ 1 when classes are far apart relative to their own size and to
  the kernel;
* ``occupied_bins``: the number of distinct bin vectors floor(t / bin_size).

Verdicts (Spearman rank correlations over all layers, controlled and trained; MI rounded to
1e-3 bits so values pinned at a ceiling tie):

* ``kde_ixt_tracks_spread``: ρ(KDE I(X;T), spread) ≥ ``min_corr`` for both bounds;
* ``kde_ity_tracks_separation``: ρ(KDE I(T;Y), separation) ≥ ``min_corr`` for both bounds;
* ``binning_tracks_occupied_bins``: ρ(binning I(X;T), log₂ occupied bins) ≥ ``min_corr``;
* ``estimators_trace_geometry``: all three.

The evidence also has the correlation within each controlled sweep. One limit shows there:
when the points spread far beyond the kernel scale, every point is its own kernel "cluster"
and the KDE I(T;Y) approaches H(Y) = ln N − Σ p_c ln N_c whatever the class structure (the
same holds for binning once every point has its own bin), so spreading the classes out
(the ``compactness`` sweep towards large s_w) *raises* I(T;Y) although the classes overlap.

Script: ``experiments/finding4_estimator_geometry.py`` (:func:`jaxmi.cli.main` with this module).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import estimators, plots, progress
from jaxmi.config import Config, check_minimums, normalize_identity, setting
from jaxmi.findings.common import (Finding, config_record, measurement_draw, model_passes, parse_options,
                                   trained_models, verdict_lines)
from jaxmi.geometry import SWEEPS, controlled_cases, geometry
from jaxmi.history import INPUTS, REGIMES
from jaxmi.results import prepare_run_dir, write_json
from jaxmi.run import log_line
from jaxmi.stats import spearman

__all__ = ["Options", "PRESETS", "decide", "verdict_table", "run", "measure_layer", "TITLE", "FINDING"]

TITLE = "4: the KDE and binning estimators trace the geometry of a layer's output"
KDE = ("kde_upper", "kde_lower")


@dataclasses.dataclass(frozen=True)
class Options:
    """Finding-4 settings beyond the shared configuration."""

    from_run: str | None = setting(None, "load the trained NT and AT models of a finished run directory instead "
                                         "of training", metavar="DIR")
    trained: bool = setting(True, "controlled cases only (no trained models)", flag="no-trained",
                            action="store_const", const=False)
    points: int = setting(2000, "N of every controlled case", minimum=2)
    classes: int = setting(10, "K of the controlled cases", minimum=2)
    width: int = setting(32, "D of the controlled cases (except the width sweep)", minimum=2)
    within_std: float = setting(0.056, "s_w: within-class distances ≈ 2 s_w² D ≈ 2σ² at D = 32")
    between_std: float = setting(0.17, "s_b: class centres ≈ 3 s_w apart per coordinate")
    steps: int = setting(9, "values per controlled sweep", minimum=2)
    pairs: int = setting(200_000, "sampled pairs for the median distance", minimum=2)
    min_corr: float = setting(0.8, "Spearman threshold of the verdicts")

    def __post_init__(self):
        check_minimums(self)
        if not (self.within_std > 0 and self.between_std > 0):
            raise ValueError("within_std and between_std must be > 0.")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"epochs": 5, "samples": 2000},  # LeNet/MNIST, 5 epochs at lr 0.025, 2,000-image probes
    "smoke": {"points": 200, "steps": 4, "pairs": 5000, "samples": 96},
}


def measure_layer(t, labels, num_classes, noise_var, bin_size, key, pairs) -> dict[str, Any]:
    """The three estimates (KDE upper, KDE lower, binning; bits) and the geometry of one layer."""
    mi = estimators.estimate(t, labels, methods=("kde_upper", "kde_lower", "binning"), num_classes=num_classes,
                             noise_var=noise_var, bin_size=bin_size)
    mi = {m: {"I_XT": float(mi[m]["I_XT"]), "I_TY": float(mi[m]["I_TY"])} for m in mi}
    return {"mi": mi, "geometry": geometry(t, labels, noise_var=noise_var, bin_size=bin_size, key=key, pairs=pairs,
                                           num_classes=num_classes)}


def decide(layers: list[dict[str, Any]], *, min_corr: float = 0.8) -> tuple[dict[str, bool], dict[str, Any]]:
    """Finding-4 verdicts from measured layers (each with ``mi``, ``geometry`` and ``source``)."""

    def r3(v):
        return round(v, 3)

    def corr(est, q, stat, subset):
        items = [lay for lay in layers if subset(lay)]
        return spearman([r3(lay["mi"][est][q]) for lay in items], [lay["geometry"][stat] for lay in items],
                        min_points=3)

    subsets = {"all": lambda lay: True, "controlled": lambda lay: lay["source"] == "controlled",
               "trained": lambda lay: lay["source"] == "trained"}
    for sweep in SWEEPS:  # within one sweep: does the statistic move with the estimate when one factor changes?
        subsets[f"sweep_{sweep}"] = lambda lay, sweep=sweep: lay.get("sweep") == sweep
    checks = {
        "kde_ixt_tracks_spread": [(est, "I_XT", f"spread_{est}") for est in KDE],
        "kde_ity_tracks_separation": [(est, "I_TY", f"separation_{est}") for est in KDE],
        "binning_tracks_occupied_bins": [("binning", "I_XT", "log2_occupied_bins")],
    }
    verdicts, evidence = {}, {}
    for name, items in checks.items():
        e = {"rule": f"Spearman ρ ≥ {min_corr} over all layers for " + ", ".join(f"{q} of {est} vs {stat}"
                                                                                    for est, q, stat in items)}
        ok = True
        for est, q, stat in items:
            vals = {s: corr(est, q, stat, f) for s, f in subsets.items()}
            e[f"{est}_{q}_vs_{stat}"] = {"spearman": vals,
                                         "layers": {s: sum(1 for lay in layers if f(lay)) for s, f in subsets.items()}}
            ok = ok and vals["all"] is not None and vals["all"] >= min_corr
        verdicts[name] = bool(ok)
        evidence[name] = e
    # Binning can never exceed log2 of the occupied bins (and equals it for uniform occupancy).
    gaps = [lay["geometry"]["log2_occupied_bins"] - lay["mi"]["binning"]["I_XT"] for lay in layers]
    evidence["binning_tracks_occupied_bins"]["max_bits_above_log2_bins"] = float(-min(gaps)) if gaps else None
    evidence["binning_tracks_occupied_bins"]["mean_log2_bins_minus_I_XT"] = float(np.mean(gaps)) if gaps else None
    verdicts["estimators_trace_geometry"] = all(verdicts.values())
    evidence["estimators_trace_geometry"] = {"min_corr": min_corr, "layers": len(layers)}
    return verdicts, evidence


def verdict_table(summary: dict[str, Any]) -> str:
    v, e = summary["verdicts"], summary["evidence"]
    rows = []
    for name in ("kde_ixt_tracks_spread", "kde_ity_tracks_separation", "binning_tracks_occupied_bins"):
        parts = []
        for key, val in e[name].items():
            if isinstance(val, dict) and "spearman" in val:
                s = val["spearman"]
                parts.append(f"{key.split('_vs_')[0]}: ρ all {_f(s['all'])} (controlled {_f(s['controlled'])}, "
                             f"trained {_f(s['trained'])})")
        rows.append((name, v[name], "; ".join(parts)))
    rows.append(("estimators_trace_geometry", v["estimators_trace_geometry"], "all three"))
    return verdict_lines(rows)


def _f(x) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def run(config: Config, workdir: str | Path, *, options: dict[str, Any] | None = None, overwrite: bool = False,
        show_progress: bool = True, log=log_line) -> dict[str, Any]:
    """Runs finding 4 and writes ``summary.json`` and figures into ``workdir``."""
    opts = parse_options(Options, options)
    t0 = time.perf_counter()
    workdir = prepare_run_dir(workdir, {**config.identity(), **dataclasses.asdict(opts)}, overwrite=overwrite,
                              normalize=normalize_identity)
    key = jax.random.fold_in(jax.random.key(config.seed), 5)
    mi_cfg = config.mi
    layers: list[dict[str, Any]] = []
    cases = controlled_cases(key, points=opts.points, classes=opts.classes, width=opts.width,
                             within_std=opts.within_std, between_std=opts.between_std, steps=opts.steps)
    progress.enabled(show_progress)
    with progress.bar(len(cases), "controlled cases") as bar:
        for i, c in enumerate(cases):
            res = measure_layer(c["t"], c["labels"], opts.classes, mi_cfg.noise_var, mi_cfg.bin_size,
                                jax.random.fold_in(key, 100 + i), opts.pairs)
            layers.append({"source": "controlled", "sweep": c["sweep"], "value": c["value"], **res})
            bar.update(1)
    log(f"measured {len(cases)} controlled layers")

    models_info, robust = None, {}
    if opts.trained:
        config, module, trained, info = trained_models(config, opts.from_run, log=log, show_progress=show_progress,
                                                       workdir=workdir)
        models_info = {k: v for k, v in info.items() if k != "history"}
        robust = {r: h["robust"] for r, h in (info.get("history") or {}).items() if h.get("robust")}
        x_host, y, num_classes, _ = measurement_draw(config)
        passes = model_passes(module, config, len(y), x_host.shape[1:])
        x, y_dev = jnp.asarray(x_host), jnp.asarray(y)
        names = list(module.probe_names)
        for regime in REGIMES:
            params, stats = trained[regime]
            sources = {"clean": x, "adv": passes.adversary(params, stats, x, y_dev)}
            for inputs in INPUTS:
                measured = {}
                for fn in passes.probes.values():  # one probe group's activations at a time
                    for name, a in fn(params, stats, sources[inputs], y_dev)["probes"].items():
                        j = names.index(name)
                        measured[name] = measure_layer(np.asarray(a), y, num_classes, mi_cfg.noise_var,
                                                       mi_cfg.bin_size, jax.random.fold_in(key, 1000 + j), opts.pairs)
                for name in names:
                    layers.append({"source": "trained", "mode": regime, "inputs": inputs, "probe": name,
                                   **measured[name]})
                log(f"[{regime.upper()}] measured the {inputs} probes")

    verdicts, evidence = decide(layers, min_corr=opts.min_corr)
    summary: dict[str, Any] = {
        "finding": TITLE,
        "config": config_record(config),
        "options": dataclasses.asdict(opts),
        "models": models_info,
        "noise_var": mi_cfg.noise_var, "bin_size": mi_cfg.bin_size,
        "layers_measured": layers,
        "verdicts": verdicts,
        "evidence": evidence,
    }
    if robust:  # the final robust evaluation of the models trained here
        summary["robust"] = robust
    figures = plots.plot_estimator_geometry(summary, workdir)
    summary["figures"] = [p.name for p in figures]
    write_json(workdir / "summary.json", summary)
    write_json(workdir / "timing.json", {"finding4_runtime_seconds": time.perf_counter() - t0})
    log(verdict_table(summary))
    return summary


FINDING = Finding(name="finding4", title=TITLE, run=run, presets=PRESETS, options=Options)
