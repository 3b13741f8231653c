"""Finding 3: normally trained CNNs rely on texture, adversarially trained ones on shape.

Claim (Zhang et al. 2022, arXiv:2207.05756): removing texture but keeping shape (saturation)
hurts an AT-CNN less than an NT-CNN; destroying shape but keeping local texture (patch
shuffling) hurts the NT-CNN less than the AT-CNN. Adversarial examples may fool NT-CNNs
because they carry texture-like information of other classes.

Protocol (PAPER.md, "Texture vs shape"): trained NT and AT models (trained here, or loaded
from a finished run directory with ``--from-run``); one fixed draw of ``samples`` test images
(the MI draw of :func:`jaxmi.run.train_and_measure`). For every distortion level —
saturation p ∈ {2, 8, 16, 64, 1024}, patch shuffle k ∈ {0, 2, 4, 8} (p = 2 and k = 0 are the
undistorted images) — and for clean inputs and adversarial inputs (PGD on the *undistorted*
image against the model being measured, then distorted), it measures accuracy, cross-entropy
and the KDE-lower-bound I(X;T) and I(T;Y) of every probe. Shuffle permutations are keyed by
level only, so NT and AT, clean and adversarial see the same shuffled tiles.

Verdicts (clean inputs; retention = accuracy under the distortion / undistorted accuracy):

* ``at_prefers_shape``: AT's mean retention over the strong saturation levels (p ≥
  ``strong_saturation``, default 64) is higher than NT's.
* ``nt_prefers_texture``: NT's mean retention over the shuffle levels k ≥ 2 is higher than AT's.

Evidence also holds retention above chance ((acc − 1/K) / (acc₀ − 1/K)), the same numbers on
adversarial inputs, the true → predicted class matrix on adversarial inputs with the mean
confidence per cell, and, for the attribution maps (saliency, SmoothGrad, Integrated
Gradients on the same images under NT and AT), their correlation with the image's edge map
(Sobel magnitude) — a shape-alignment number, higher when a map follows object contours.

Script: ``experiments/finding3_texture_shape.py`` (:func:`jaxmi.cli.main` with this module).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import attribution, distortions, plots
from jaxmi.config import Config, check_minimums, normalize_identity, setting
from jaxmi.data import DATASETS, class_names
from jaxmi.evaluation import confusion
from jaxmi.findings.common import (Finding, config_record, measurement_draw, model_passes, parse_options,
                                   trained_models, verdict_lines)
from jaxmi.history import INPUTS, REGIMES
from jaxmi.results import prepare_run_dir, write_json
from jaxmi.run import log_line

__all__ = ["Options", "PRESETS", "decide", "verdict_table", "run", "TITLE", "FINDING", "ESTIMATOR"]

TITLE = "3: NT-CNNs rely on texture, AT-CNNs on shape"
ESTIMATOR = "kde_lower"  # the paper's estimator for this experiment


@dataclasses.dataclass(frozen=True)
class Options:
    """Finding-3 settings beyond the shared configuration."""

    from_run: str | None = setting(None, "load the trained NT and AT models of a finished run directory instead "
                                         "of training", metavar="DIR")
    saturation: tuple[float, ...] = setting(distortions.SATURATION_LEVELS, "saturation levels p (2 = undistorted)",
                                            nargs="+", type=float)
    shuffle: tuple[int, ...] | None = setting(None, "patch-shuffle grid sizes k (default 0 2 4 8, or the nearest "
                                                    "divisors of the image size)", nargs="+", type=int)
    strong_saturation: float = setting(64, "levels p ≥ this enter the at_prefers_shape verdict")
    attr_images: int = setting(8, "images with attribution maps (one per class where possible)", minimum=1)
    smoothgrad_samples: int = setting(100, "SmoothGrad noisy copies", minimum=1)
    smoothgrad_std: float = setting(0.2, "SmoothGrad noise std (pixel units in [0, 1])")
    ig_steps: int = setting(50, "Integrated-Gradients path steps (black baseline)", minimum=1)
    example_images: int = setting(4, "rows of the distortion example grid", minimum=1)

    def __post_init__(self):
        for p in self.saturation:
            distortions.check_saturation_level(p)
        if not self.saturation or 2 not in [float(p) for p in self.saturation]:
            raise ValueError(f"saturation levels must include 2 (the undistorted reference); got {self.saturation}.")
        if self.shuffle is not None:
            if 0 not in self.shuffle and 1 not in self.shuffle:
                raise ValueError(f"shuffle levels must include 0 (the undistorted reference); got {self.shuffle}.")
            for k in self.shuffle:
                if int(k) != k or k < 0:
                    raise ValueError(f"patch-shuffle level k must be a non-negative integer; got {k}.")
        check_minimums(self)


# Finding-3 presets on top of jaxmi.config.PRESETS.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # CIFAR-10 LeNet for 20 epochs at lr 0.025 (the shared cpu preset); 5,000 images per condition.
    "cpu": {},
    "smoke": {"samples": 96, "attr_images": 3, "smoothgrad_samples": 4, "ig_steps": 4,
              "example_images": 2},
}


def _evaluate(passes, params, batch_stats, x, y, *, conditions, key, num_classes: int, noise_var: float, layers,
              log, regime: str) -> dict:
    """Accuracy, loss, probabilities and KDE-lower MI per (distortion, level, inputs) for one model.

    The adversarial inputs are PGD examples of the undistorted images, distorted afterwards;
    the shuffle key of level k is ``fold_in(key, k)``.
    """
    y_dev = jnp.asarray(y)
    x = jnp.asarray(x)
    sources = {"clean": x, "adv": passes.adversary(params, batch_stats, x, y_dev)}
    cache: dict = {}
    results: dict = {}
    for kind, level in conditions:
        ident = distortions.is_identity(kind, level)
        for inputs in INPUTS:
            ck = ("identity", inputs) if ident else (kind, level, inputs)
            if ck not in cache:
                k_level = jax.random.fold_in(key, int(level) if kind == "shuffle" else 0)
                xd = sources[inputs] if ident else distortions.distort(sources[inputs], kind, level, k_level)
                out = passes.forward(params, batch_stats, xd, y_dev)
                mi = passes.information(params, batch_stats, xd, y_dev, y, methods=(ESTIMATOR,),
                                        num_classes=num_classes, noise_var=noise_var)
                probs = np.asarray(out["probs"])
                cache[ck] = {"accuracy": float(np.mean(probs.argmax(-1) == y)), "loss": float(np.mean(out["loss"])),
                             "I_XT": [float(mi[p][ESTIMATOR]["I_XT"]) for p in layers],
                             "I_TY": [float(mi[p][ESTIMATOR]["I_TY"]) for p in layers], "_probs": probs}
                log(f"[{regime.upper()}] {kind} {level:g} {inputs}: acc {cache[ck]['accuracy']:.4f} "
                    f"loss {cache[ck]['loss']:.4f}")
            results[(kind, level, inputs)] = cache[ck]
    return results


def _mean(values) -> float | None:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def decide(summary: dict[str, Any], *, strong_saturation: float = 64) -> tuple[dict[str, bool], dict[str, Any]]:
    """Finding-3 verdicts and evidence from the ``distortion`` block of a summary."""
    dist = summary["distortion"]
    chance = 1.0 / summary["num_classes"]

    def retention(regime, kind, inp):
        block = dist[regime][kind]
        levels = block["levels"]
        acc = block[inp]["accuracy"]
        ref = acc[[i for i, lv in enumerate(levels) if distortions.is_identity(kind, lv)][0]]
        rel = [a / ref if ref > 0 else None for a in acc]
        above = [(a - chance) / (ref - chance) if ref - chance > 1e-9 else None for a in acc]
        return levels, rel, above, ref

    ev: dict[str, Any] = {}
    verdicts: dict[str, bool] = {}
    for name, kind, select, winner, loser in (
            ("at_prefers_shape", "saturation", lambda lv: lv >= strong_saturation, "at", "nt"),
            ("nt_prefers_texture", "shuffle", lambda lv: lv >= 2, "nt", "at")):
        e: dict[str, Any] = {"distortion": kind, "chance_accuracy": chance}
        for inp in ("clean", "adv"):
            per = {}
            for regime in REGIMES:
                levels, rel, above, ref = retention(regime, kind, inp)
                sel = [i for i, lv in enumerate(levels) if select(lv)]
                per[regime] = {"levels": levels, "accuracy": dist[regime][kind][inp]["accuracy"],
                             "undistorted_accuracy": ref, "retention": rel, "retention_above_chance": above,
                             "levels_used": [levels[i] for i in sel],
                             "mean_retention": _mean(rel[i] for i in sel),
                             "mean_retention_above_chance": _mean(above[i] for i in sel),
                             "mean_accuracy_drop": _mean(ref - dist[regime][kind][inp]["accuracy"][i] for i in sel)}
            e[inp] = per
        w, lo = e["clean"][winner]["mean_retention"], e["clean"][loser]["mean_retention"]
        e["margin"] = None if w is None or lo is None else w - lo
        e["rule"] = (f"clean inputs: mean retention (accuracy / undistorted accuracy) of {winner.upper()} over "
                     f"{kind} levels {e['clean'][winner]['levels_used']} exceeds {loser.upper()}'s")
        verdicts[name] = bool(e["margin"] is not None and e["margin"] > 0)
        ev[name] = e
    ev["adversarial_confusion"] = summary["adversarial_confusion"]
    ev["attribution_edge_alignment"] = summary.get("attribution_edge_alignment")
    return verdicts, ev


def verdict_table(summary: dict[str, Any]) -> str:
    v, e = summary["verdicts"], summary["evidence"]
    rows = []
    for name in ("at_prefers_shape", "nt_prefers_texture"):
        c = e[name]["clean"]
        rows.append((name, v[name],
                     f"{e[name]['distortion']} {c['nt']['levels_used']}: mean retention NT {c['nt']['mean_retention']:.3f} "
                     f"vs AT {c['at']['mean_retention']:.3f} (undistorted acc NT {c['nt']['undistorted_accuracy']:.3f}, "
                     f"AT {c['at']['undistorted_accuracy']:.3f})"))
    lines = [verdict_lines(rows)]
    for regime in REGIMES:
        c = e["adversarial_confusion"][regime]
        mc = c["mean_confidence_wrong"]
        lines.append(f"adversarial inputs, {regime.upper()}: accuracy {c['accuracy']:.3f}, mean confidence of wrong "
                     f"predictions {'n/a' if mc is None else f'{mc:.3f}'}")
    return "\n".join(lines)


def _pick_images(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to n images, one per class first (in class order), then the next ones."""
    first = [int(np.flatnonzero(y == c)[0]) for c in np.unique(y)][:n]
    rest = [i for i in range(len(y)) if i not in first][: max(0, n - len(first))]
    return np.asarray(first + rest)


def run(config: Config, workdir: str | Path, *, options: dict[str, Any] | None = None, overwrite: bool = False,
        show_progress: bool = True, log=log_line) -> dict[str, Any]:
    """Runs finding 3 and writes ``summary.json`` and figures into ``workdir``."""
    opts = parse_options(Options, options)
    t0 = time.perf_counter()

    def level_grid(shape):
        return {kind: distortions.levels(kind, shape, saturation=opts.saturation, shuffle=opts.shuffle)
                for kind in distortions.KINDS}

    if opts.from_run is None and config.data.dataset in DATASETS:  # bad shuffle levels fail before any training
        level_grid(DATASETS[config.data.dataset].image_shape)
    workdir = prepare_run_dir(workdir, {**config.identity(), **dataclasses.asdict(opts)}, overwrite=overwrite,
                              normalize=normalize_identity)
    config, module, trained, source = trained_models(config, opts.from_run, log=log, show_progress=show_progress,
                                                     workdir=workdir)
    x, y, num_classes, test_source = measurement_draw(config)
    conditions = [(kind, lv) for kind, lvs in level_grid(x.shape[1:]).items() for lv in lvs]
    key = jax.random.fold_in(jax.random.key(config.seed), 3)
    fns = model_passes(module, config, len(y), x.shape[1:])
    layers = list(module.probe_names)
    per_regime = {r: _evaluate(fns, *trained[r], x, y, conditions=conditions, key=key, num_classes=num_classes,
                               noise_var=config.mi.noise_var, layers=layers, log=log, regime=r) for r in REGIMES}

    dist: dict[str, Any] = {}
    for regime in REGIMES:
        dist[regime] = {}
        for kind in distortions.KINDS:
            levels = [lv for k, lv in conditions if k == kind]
            dist[regime][kind] = {"levels": levels}
            for inputs in INPUTS:
                rs = [per_regime[regime][(kind, lv, inputs)] for lv in levels]
                dist[regime][kind][inputs] = {q: [r[q] for r in rs] for q in ("accuracy", "loss", "I_XT", "I_TY")}
    conf = {r: confusion(y, per_regime[r][("saturation", 2.0, "adv")]["_probs"], num_classes) for r in REGIMES}

    # Attribution maps on the same clean images under NT and AT, for the true class.
    pick = _pick_images(y, opts.attr_images)
    xa, ya = x[pick], y[pick]
    k_attr = jax.random.fold_in(jax.random.key(config.seed), 4)
    edges = attribution.edge_map(xa)
    attr_fn = attribution.make_maps(module, smoothgrad_samples=opts.smoothgrad_samples,
                                    smoothgrad_std=opts.smoothgrad_std, ig_steps=opts.ig_steps)
    maps = {r: {m: np.asarray(h) for m, h in attr_fn(*trained[r], jnp.asarray(xa), jnp.asarray(ya), k_attr).items()}
            for r in REGIMES}
    alignment = {r: {m: attribution.edge_alignment(h, edges) for m, h in maps[r].items()} for r in REGIMES}

    summary: dict[str, Any] = {
        "finding": TITLE,
        "config": config_record(config),
        "options": dataclasses.asdict(opts),
        "models": {k: v for k, v in source.items() if k != "history"},
        "training": source.get("history"),
        "data": {"test": test_source, "images": int(len(y)),
                 "note": ("JPEG-recompressed CIFAR-10 copy (quality 75): results are close to, not identical with, "
                          "the original CIFAR-10") if "jpeg" in str(test_source).lower() else None},
        "layers": list(module.probe_names),
        "num_classes": num_classes,
        "estimator": ESTIMATOR,
        "distortion": dist,
        "adversarial_confusion": conf,
        "attribution_images": pick.tolist(),
        "attribution_edge_alignment": alignment,
    }
    verdicts, evidence = decide(summary, strong_saturation=opts.strong_saturation)
    summary["verdicts"] = verdicts
    summary["evidence"] = evidence

    names = class_names(config.data.dataset)
    dataset, model = config.data.dataset, config.model.name
    figures = plots.plot_distortion_accuracy(summary, workdir)
    figures += plots.plot_distortion_information(summary, workdir)
    figures += plots.plot_confusion(conf, workdir, class_names=names,
                                    title=f"True → predicted class on adversarial inputs ({dataset}, {model})")
    figures += plots.plot_attribution_maps(xa, ya, maps, workdir, class_names=names,
                                           title=f"Attribution maps, NT vs AT ({dataset}, {model})")
    ex = x[: opts.example_images]
    grid = {f"saturation p={lv:g}": np.asarray(distortions.saturate(ex, lv))
            for lv in dist["nt"]["saturation"]["levels"]}
    grid.update({f"shuffle k={lv}": np.asarray(distortions.distort(ex, "shuffle", lv, jax.random.fold_in(key, lv)))
                 for lv in dist["nt"]["shuffle"]["levels"]})
    figures += plots.plot_image_grid(grid, workdir / "distortion_examples.png",
                                     title=f"Distortions ({dataset})")
    summary["figures"] = [p.name for p in figures]
    write_json(workdir / "summary.json", summary)
    write_json(workdir / "timing.json", {"finding3_runtime_seconds": time.perf_counter() - t0})
    log(verdict_table(summary))
    return summary


FINDING = Finding(name="finding3", title=TITLE, run=run, presets=PRESETS, options=Options, default_dataset="cifar10")
