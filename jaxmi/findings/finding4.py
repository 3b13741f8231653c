"""Finding 4: the KDE and binning estimators trace the geometry of a layer's output.

Claim (Zhang et al. 2022, arXiv:2207.05756): the values of the KDE and binning estimators are
determined by the geometry of the layer's output: how far the points spread relative to the
noise (σ²) or bin scale, how compact each class is and how far apart the classes are.

Two sources of layers T (N points, labels Y):

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
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import estimators, plots
from jaxmi.data import to_float
from jaxmi.experiment import Config, log_line
from jaxmi.findings.common import load_test_split, mi_draw, trained_models
from jaxmi.findings.finding3 import _batched, make_model_fns
from jaxmi.results import prepare_run_dir, write_json

__all__ = ["Options", "PRESETS", "geometry", "controlled_cases", "decide", "verdict_table", "run", "spearman"]

SWEEPS = ("scale", "separation", "compactness", "width")
KDE = ("kde_upper", "kde_lower")


@dataclasses.dataclass(frozen=True)
class Options:
    """Finding-4 settings beyond the shared :class:`~jaxmi.experiment.Config`."""

    from_run: str | None = None  # run directory with trained models; None: train here
    trained: bool = True  # also measure the trained NT/AT probes
    points: int = 2000  # N of every controlled case
    classes: int = 10  # K of the controlled cases
    width: int = 32  # D of the controlled cases (except the width sweep)
    within_std: float = 0.056  # s_w: within-class distances ≈ 2 s_w² D ≈ 2σ² at D = 32
    between_std: float = 0.17  # s_b: class centres ≈ 3 s_w apart per coordinate
    steps: int = 9  # values per sweep
    pairs: int = 200_000  # sampled pairs for the median distance
    min_corr: float = 0.8  # Spearman threshold of the verdicts

    def __post_init__(self):
        for name in ("points", "classes", "width", "steps", "pairs"):
            if int(getattr(self, name)) < 2:
                raise ValueError(f"{name} must be ≥ 2; got {getattr(self, name)}.")
        if not (self.within_std > 0 and self.between_std > 0):
            raise ValueError("within_std and between_std must be > 0.")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Options":
        return cls(**{k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__})


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"epochs": 5, "samples": 2000},  # LeNet/MNIST, 5 epochs at lr 0.025, 2,000-image probes
    "smoke": {"points": 200, "steps": 4, "pairs": 5000, "samples": 96},
}


def spearman(a, b) -> float | None:
    """Spearman's ρ with average ranks for ties; None when either side is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3:
        return None

    def rank(x):
        order = np.argsort(x, kind="mergesort")
        xs = x[order]
        r = np.empty(x.size)
        i = 0
        while i < x.size:
            j = i
            while j + 1 < x.size and xs[j + 1] == xs[i]:
                j += 1
            r[order[i:j + 1]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = rank(a) - (a.size - 1) / 2, rank(b) - (b.size - 1) / 2
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return None if den == 0 else float((ra * rb).sum() / den)


def geometry(t, labels, *, noise_var: float = 0.1, bin_size: float = 0.5, key=None, pairs: int = 200_000,
             num_classes: int | None = None) -> dict[str, Any]:
    """Geometry statistics of one layer output ``t`` [N, D] with labels [N] (see the module docstring)."""
    t = np.asarray(t, np.float64).reshape(len(t), -1)
    y = np.asarray(labels)
    n = t.shape[0]
    k = int(num_classes or y.max() + 1)
    tc = t - t.mean(0)
    sq = np.einsum("nd,nd->n", tc, tc)
    # Σ_{i,j} ‖t_i − t_j‖² over a set S = 2|S| Σ‖t‖² − 2‖Σ t‖².
    total = 2 * n * sq.sum() - 2 * float(np.sum(tc.sum(0) ** 2))
    within_sum, within_pairs = 0.0, 0
    for c in range(k):
        m = y == c
        nc = int(m.sum())
        if nc < 2:
            continue
        within_sum += 2 * nc * sq[m].sum() - 2 * float(np.sum(tc[m].sum(0) ** 2))
        within_pairs += nc * (nc - 1)
    between_pairs = n * (n - 1) - within_pairs
    mean_within = within_sum / max(within_pairs, 1)
    mean_between = (total - within_sum) / max(between_pairs, 1)
    if n * (n - 1) // 2 <= int(pairs):  # every pair: the exact median
        i, j = np.triu_indices(n, 1)
    else:  # a seeded random sample of pairs i ≠ j
        rng = np.random.default_rng(0 if key is None else int(np.asarray(jax.random.key_data(key)).ravel()[-1]))
        i = rng.integers(0, n, int(pairs))
        j = (i + rng.integers(1, n, int(pairs))) % n
    d = np.einsum("nd,nd->n", tc[i] - tc[j], tc[i] - tc[j])
    med = float(np.median(d))
    sym = np.floor(t / bin_size)
    occupied = int(np.unique(sym, axis=0).shape[0])
    out = {"mean_sq_dist": float(total / (n * (n - 1))), "median_sq_dist": med,
           "mean_within_sq_dist": float(mean_within), "mean_between_sq_dist": float(mean_between),
           "occupied_bins": occupied, "log2_occupied_bins": math.log2(occupied), "points": n, "width": t.shape[1]}
    for est, s in (("kde_upper", 2 * noise_var), ("kde_lower", 8 * noise_var)):
        out[f"spread_{est}"] = med / s
        out[f"separation_{est}"] = float(mean_between / (mean_within + s))
        out[f"frac_pairs_within_scale_{est}"] = float(np.mean(d < s))
    return out


def controlled_cases(opts: Options, key) -> list[dict[str, Any]]:
    """The controlled layers: ``{"sweep", "value", "t" [N, D], "labels"}`` per case."""
    n, k = opts.points, opts.classes
    labels = np.arange(n) % k
    k_c, k_w = jax.random.split(key)
    max_width = max(opts.width, 2 ** opts.steps)
    centres = np.asarray(jax.random.normal(k_c, (k, max_width)))  # unit normal, scaled below
    noise = np.asarray(jax.random.normal(k_w, (n, max_width)))

    def make(s_b, s_w, d):
        return (s_b * centres[labels, :d] + s_w * noise[:, :d]).astype(np.float32)

    base = (opts.between_std, opts.within_std, opts.width)
    cases = []
    grid = np.logspace(-1, 1, opts.steps)
    for c in np.logspace(-1, 2, opts.steps):
        cases.append({"sweep": "scale", "value": float(c), "t": c * make(*base)})
    for f in grid:
        cases.append({"sweep": "separation", "value": float(f * opts.between_std),
                      "t": make(f * opts.between_std, opts.within_std, opts.width)})
    for f in grid:
        cases.append({"sweep": "compactness", "value": float(f * opts.within_std),
                      "t": make(opts.between_std, f * opts.within_std, opts.width)})
    for p in range(1, opts.steps + 1):
        cases.append({"sweep": "width", "value": 2 ** p, "t": make(opts.between_std, opts.within_std, 2 ** p)})
    for c in cases:
        c["labels"] = labels
    return cases


def _measure(t, labels, num_classes, noise_var, bin_size, key, pairs) -> dict[str, Any]:
    mi = estimators.estimate_all(t, labels, methods=("kde_upper", "kde_lower", "binning"), num_classes=num_classes,
                                 noise_var=noise_var, bin_size=bin_size)
    mi = {m: {"I_XT": float(mi[m]["I_XT"]), "I_TY": float(mi[m]["I_TY"])} for m in ("kde_upper", "kde_lower",
                                                                                       "binning")}
    return {"mi": mi, "geometry": geometry(t, labels, noise_var=noise_var, bin_size=bin_size, key=key, pairs=pairs,
                                           num_classes=num_classes)}


def decide(layers: list[dict[str, Any]], *, min_corr: float = 0.8) -> tuple[dict[str, bool], dict[str, Any]]:
    """Finding-4 verdicts from measured layers (each with ``mi``, ``geometry`` and ``source``)."""

    def r3(v):
        return round(v, 3)

    def corr(est, q, stat, subset):
        items = [lay for lay in layers if subset(lay)]
        return spearman([r3(lay["mi"][est][q]) for lay in items], [lay["geometry"][stat] for lay in items])

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
    w = max(len(r[0]) for r in rows)
    lines = [f"{'verdict':<{w}}  holds  evidence", "-" * (w + 70)]
    lines += [f"{name:<{w}}  {'yes' if ok else 'NO ':<5}  {text}" for name, ok, text in rows]
    return "\n".join(lines)


def _f(x) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def run(config: Config, workdir: str | Path, *, options: dict[str, Any] | None = None, overwrite: bool = False,
        show_progress: bool = True, log=log_line) -> dict[str, Any]:
    """Runs finding 4 and writes ``summary.json`` and figures into ``workdir``."""
    opts = Options.from_dict(options)
    t0 = time.perf_counter()
    workdir = prepare_run_dir(workdir, {**config.to_dict(), **dataclasses.asdict(opts)}, overwrite=overwrite)
    key = jax.random.fold_in(jax.random.key(config.seed), 5)
    layers: list[dict[str, Any]] = []
    cases = controlled_cases(opts, key)
    from jaxmi import progress

    progress.enabled(show_progress)
    with progress.bar(len(cases), "controlled cases") as bar:
        for i, c in enumerate(cases):
            res = _measure(c["t"], c["labels"], opts.classes, config.noise_var, config.bin_size,
                           jax.random.fold_in(key, 100 + i), opts.pairs)
            layers.append({"source": "controlled", "sweep": c["sweep"], "value": c["value"], **res})
            bar.update(1)
    log(f"measured {len(cases)} controlled layers")

    models_info = None
    if opts.trained:
        config, module, trained, info = trained_models(config, opts.from_run, log=log, show_progress=show_progress,
                                                       workdir=workdir)
        models_info = {k: v for k, v in info.items() if k != "history"}
        test = load_test_split(config)
        idx = mi_draw(config, len(test))
        x = to_float(jnp.asarray(test.images[idx]))
        y = test.labels[idx].astype(np.int32)
        attack_batch, forward = make_model_fns(module, config.attack())
        bs = min(config.eval_batch_size, len(y))
        for mode in ("nt", "at"):
            params, stats = trained[mode]
            x_adv = _batched(lambda xb, yb: attack_batch(params, stats, xb, yb), x, jnp.asarray(y), bs)
            for kind, xin in (("clean", x), ("adv", x_adv)):
                _, _, probes = _batched(lambda xb, yb: forward(params, stats, xb, yb), xin, jnp.asarray(y), bs)
                for j, name in enumerate(module.probe_names):
                    res = _measure(np.asarray(probes[name]), y, test.num_classes, config.noise_var, config.bin_size,
                                   jax.random.fold_in(key, 1000 + j), opts.pairs)
                    layers.append({"source": "trained", "mode": mode, "inputs": kind, "probe": name, **res})
                log(f"[{mode.upper()}] measured the {kind} probes")

    verdicts, evidence = decide(layers, min_corr=opts.min_corr)
    summary: dict[str, Any] = {
        "finding": "4: the KDE and binning estimators trace the geometry of a layer's output",
        "config": {**config.to_dict(), "attack": vars(config.attack())},
        "options": dataclasses.asdict(opts),
        "models": models_info,
        "noise_var": config.noise_var, "bin_size": config.bin_size,
        "layers_measured": layers,
        "verdicts": verdicts,
        "evidence": evidence,
    }
    figures = plots.plot_estimator_geometry(summary, workdir)
    summary["figures"] = [p.name for p in figures]
    write_json(workdir / "summary.json", summary)
    write_json(workdir / "timing.json", {"finding4_runtime_seconds": time.perf_counter() - t0})
    log(verdict_table(summary))
    return summary
