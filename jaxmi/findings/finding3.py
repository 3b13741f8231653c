"""Finding 3: normally trained CNNs rely on texture, adversarially trained ones on shape.

Claim (Zhang et al. 2022, arXiv:2207.05756): removing texture but keeping shape (saturation)
hurts an AT-CNN less than an NT-CNN; destroying shape but keeping local texture (patch
shuffling) hurts the NT-CNN less than the AT-CNN. Adversarial examples may fool NT-CNNs
because they carry texture-like information of other classes.

Protocol (PAPER.md, "Texture vs shape"): trained NT and AT models (trained here, or loaded
from a finished run directory with ``--from-run``); one fixed draw of ``samples`` test images
(the MI draw of :func:`jaxmi.experiment.train_and_measure`). For every distortion level —
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
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmi import attribution, distortions, estimators, plots
from jaxmi.data import DATASETS, class_names, to_float
from jaxmi.experiment import Config, log_line
from jaxmi.findings.common import load_test_split, mi_draw, trained_models
from jaxmi.models import apply_model
from jaxmi.attacks import pgd
from jaxmi.results import prepare_run_dir, write_json

__all__ = ["Options", "PRESETS", "decide", "verdict_table", "run", "confusion", "edge_map", "evaluate_model",
           "make_model_fns", "make_attribution_fn"]

ESTIMATOR = "kde_lower"  # the paper's estimator for this experiment


@dataclasses.dataclass(frozen=True)
class Options:
    """Finding-3 settings beyond the shared :class:`~jaxmi.experiment.Config`."""

    from_run: str | None = None  # run directory with trained models (jaxmi.experiment.load_trained); None: train here
    saturation: tuple[float, ...] = distortions.SATURATION_LEVELS  # p levels; 2 = undistorted
    shuffle: tuple[int, ...] | None = None  # k levels; None: (0, 2, 4, 8), or the nearest divisors of the image size
    strong_saturation: float = 64  # saturation levels ≥ this enter the at_prefers_shape verdict
    attr_images: int = 8  # images shown with attribution maps (one per class where possible)
    smoothgrad_samples: int = 100  # SmoothGrad noisy copies
    smoothgrad_std: float = 0.2  # SmoothGrad noise std (pixel units in [0, 1])
    ig_steps: int = 50  # Integrated-Gradients path steps (black baseline)
    example_images: int = 4  # rows of the distortion example grid

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
        for name in ("attr_images", "smoothgrad_samples", "ig_steps", "example_images"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be ≥ 1; got {getattr(self, name)}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Options":
        d = {k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__}
        for k in ("saturation", "shuffle"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


# Finding-3 presets on top of jaxmi.experiment.PRESETS.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # CIFAR-10 LeNet for 20 epochs at lr 0.025 (the shared cpu preset); 5,000 images per condition.
    "cpu": {},
    "smoke": {"samples": 96, "attr_images": 3, "smoothgrad_samples": 4, "ig_steps": 4,
              "example_images": 2},
}


def confusion(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> dict[str, Any]:
    """True → predicted class counts and the mean confidence (max softmax probability) per cell."""
    pred = probs.argmax(-1)
    conf = probs.max(-1)
    counts = np.zeros((num_classes, num_classes), np.int64)
    conf_sum = np.zeros((num_classes, num_classes))
    np.add.at(counts, (y_true, pred), 1)
    np.add.at(conf_sum, (y_true, pred), conf)
    mean_conf = np.where(counts > 0, conf_sum / np.maximum(counts, 1), np.nan)
    wrong = pred != y_true
    return {
        "counts": counts.tolist(), "mean_confidence": mean_conf.tolist(),
        "accuracy": float(np.mean(~wrong)),
        "mean_confidence_wrong": float(conf[wrong].mean()) if wrong.any() else None,
        "mean_confidence_right": float(conf[~wrong].mean()) if (~wrong).any() else None,
        "top_confusions": [
            {"true": int(t), "predicted": int(p), "count": int(counts[t, p]), "mean_confidence": float(mean_conf[t, p])}
            for t, p in sorted(((t, p) for t in range(num_classes) for p in range(num_classes) if t != p),
                               key=lambda tp: -counts[tp])[:5] if counts[t, p] > 0],
    }


def edge_map(images: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the grey-level image, [B, H, W] (edges = shape)."""
    g = np.asarray(images, np.float64).mean(-1)
    p = np.pad(g, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, 1:-1, :-2] + p[:, 2:, :-2])
    gy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, :-2, 1:-1] + p[:, :-2, 2:])
    return np.hypot(gx, gy)


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return None if den == 0 else float((a * b).sum() / den)


def _levels(kind: str, options: Options, shape) -> list:
    if kind == "saturation":
        return [float(p) for p in options.saturation]
    h, w = shape[0], shape[1]
    levels = options.shuffle if options.shuffle is not None else distortions.default_shuffle_levels(h, w)
    for k in levels:
        distortions.check_shuffle_level(k, h, w)
    return [int(k) for k in levels]


def make_model_fns(module, attack):
    """Compiled ``attack(params, stats, x, y)`` (evaluation PGD) and ``forward(params, stats, x, y)``
    (per-example loss, softmax, probes), compiled once and shared by NT and AT."""

    @jax.jit
    def attack_batch(params, batch_stats, xb, yb):
        def logits_fn(xx):
            return apply_model(module, params, batch_stats, xx, train=False)[0]

        return pgd(logits_fn, xb, yb, eps=attack.eps, step_size=attack.step_size, steps=attack.steps)

    @jax.jit
    def forward(params, batch_stats, xb, yb):
        logits, probes, _ = apply_model(module, params, batch_stats, xb, train=False)
        return (optax.softmax_cross_entropy_with_integer_labels(logits, yb), jax.nn.softmax(logits), probes)

    return attack_batch, forward


def _batched(fn, xs, ys, batch_size: int):
    outs = []
    n = xs.shape[0]
    for s in range(0, n, batch_size):
        xb, yb = xs[s:s + batch_size], ys[s:s + batch_size]
        pad = batch_size - xb.shape[0]
        if pad:  # one compiled shape
            xb = jnp.pad(xb, [(0, pad)] + [(0, 0)] * (xb.ndim - 1))
            yb = jnp.pad(yb, (0, pad))
        outs.append(fn(xb, yb))
    return jax.tree.map(lambda *o: jnp.concatenate(o)[:n], *outs)


def evaluate_model(fns, params, batch_stats, x: np.ndarray, y: np.ndarray, *, conditions, key, num_classes: int,
                   batch_size: int, noise_var: float, log=log_line, mode: str = "") -> dict:
    """Accuracy, loss, probabilities and KDE-lower MI per (distortion, level, input kind) for one model.

    ``fns`` comes from :func:`make_model_fns`. The adversarial inputs are PGD examples of the
    undistorted images, distorted afterwards; the shuffle key of level k is ``fold_in(key, k)``.
    """
    attack_batch, forward = fns
    batch_size = min(batch_size, int(x.shape[0]))
    x = jnp.asarray(x)
    y_dev = jnp.asarray(y)
    x_adv = _batched(lambda xb, yb: attack_batch(params, batch_stats, xb, yb), x, y_dev, batch_size)
    inputs = {"clean": x, "adv": x_adv}
    cache: dict = {}
    results: dict = {}
    for kind, level in conditions:
        ident = distortions.is_identity(kind, level)
        for inp in ("clean", "adv"):
            ck = ("identity", inp) if ident else (kind, level, inp)
            if ck not in cache:
                k_level = jax.random.fold_in(key, int(level) if kind == "shuffle" else 0)
                xd = inputs[inp] if ident else distortions.distort(inputs[inp], kind, level, k_level)
                loss, probs, probes = _batched(lambda xb, yb: forward(params, batch_stats, xb, yb), xd, y_dev,
                                               batch_size)
                mi = estimators.measure_probes(probes, y, methods=(ESTIMATOR,), num_classes=num_classes,
                                               noise_var=noise_var)[ESTIMATOR]
                probs = np.asarray(probs)
                cache[ck] = {"accuracy": float(np.mean(probs.argmax(-1) == y)), "loss": float(np.mean(loss)),
                             "I_XT": [float(v) for v in mi["I_XT"]], "I_TY": [float(v) for v in mi["I_TY"]],
                             "_probs": probs}
                log(f"[{mode.upper()}] {kind} {level:g} {inp}: acc {cache[ck]['accuracy']:.4f} "
                    f"loss {cache[ck]['loss']:.4f}")
            results[(kind, level, inp)] = cache[ck]
    return results


def make_attribution_fn(module, opts: "Options"):
    """Compiled ``maps(params, stats, x, y, key) -> {method: [B, H, W] heatmap}`` for the three methods."""

    @jax.jit
    def maps(params, batch_stats, x, y, key):
        def logits_fn(xx):
            return apply_model(module, params, batch_stats, xx, train=False)[0]

        raw = {
            "saliency": attribution.saliency(logits_fn, x, y),
            "smoothgrad": attribution.smoothgrad(logits_fn, x, y, key, samples=opts.smoothgrad_samples,
                                                 noise_std=opts.smoothgrad_std),
            "integrated_gradients": attribution.integrated_gradients(logits_fn, x, y, steps=opts.ig_steps),
        }
        return {m: attribution.to_heatmap(a) for m, a in raw.items()}

    return maps


def _mean(values) -> float | None:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def decide(summary: dict[str, Any], *, strong_saturation: float = 64) -> tuple[dict[str, bool], dict[str, Any]]:
    """Finding-3 verdicts and evidence from the ``distortion`` block of a summary."""
    dist = summary["distortion"]
    chance = 1.0 / summary["num_classes"]

    def retention(mode, kind, inp):
        block = dist[mode][kind]
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
            for mode in ("nt", "at"):
                levels, rel, above, ref = retention(mode, kind, inp)
                sel = [i for i, lv in enumerate(levels) if select(lv)]
                per[mode] = {"levels": levels, "accuracy": dist[mode][kind][inp]["accuracy"],
                             "undistorted_accuracy": ref, "retention": rel, "retention_above_chance": above,
                             "levels_used": [levels[i] for i in sel],
                             "mean_retention": _mean(rel[i] for i in sel),
                             "mean_retention_above_chance": _mean(above[i] for i in sel),
                             "mean_accuracy_drop": _mean(ref - dist[mode][kind][inp]["accuracy"][i] for i in sel)}
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
    w = max(len(r[0]) for r in rows)
    lines = [f"{'verdict':<{w}}  holds  evidence", "-" * (w + 70)]
    lines += [f"{name:<{w}}  {'yes' if ok else 'NO ':<5}  {text}" for name, ok, text in rows]
    conf = e["adversarial_confusion"]
    for mode in ("nt", "at"):
        c = conf[mode]
        mc = c["mean_confidence_wrong"]
        lines.append(f"adversarial inputs, {mode.upper()}: accuracy {c['accuracy']:.3f}, mean confidence of wrong "
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
    opts = Options.from_dict(options)
    t0 = time.perf_counter()
    if opts.from_run is None and config.dataset in DATASETS:  # bad shuffle levels fail before any training
        for kind in distortions.KINDS:
            _levels(kind, opts, DATASETS[config.dataset].image_shape)
    workdir = prepare_run_dir(workdir, {**config.to_dict(), **dataclasses.asdict(opts)}, overwrite=overwrite)
    config, module, trained, source = trained_models(config, opts.from_run, log=log, show_progress=show_progress,
                                                     workdir=workdir)
    test = load_test_split(config)
    idx = mi_draw(config, len(test))
    x = np.asarray(to_float(jnp.asarray(test.images[idx])))
    y = test.labels[idx].astype(np.int32)
    num_classes = test.num_classes
    shape = x.shape[1:]
    conditions = [(kind, lv) for kind in distortions.KINDS for lv in _levels(kind, opts, shape)]
    key = jax.random.fold_in(jax.random.key(config.seed), 3)
    attack = config.attack()

    per_mode: dict[str, Any] = {}
    fns = make_model_fns(module, attack)
    for mode in ("nt", "at"):
        params, stats = trained[mode]
        per_mode[mode] = evaluate_model(fns, params, stats, x, y, conditions=conditions, key=key,
                                        num_classes=num_classes, batch_size=config.eval_batch_size,
                                        noise_var=config.noise_var, log=log, mode=mode)

    dist: dict[str, Any] = {}
    for mode in ("nt", "at"):
        dist[mode] = {}
        for kind in distortions.KINDS:
            levels = [lv for k, lv in conditions if k == kind]
            dist[mode][kind] = {"levels": levels}
            for inp in ("clean", "adv"):
                rs = [per_mode[mode][(kind, lv, inp)] for lv in levels]
                dist[mode][kind][inp] = {q: [r[q] for r in rs] for q in ("accuracy", "loss", "I_XT", "I_TY")}
    conf = {mode: confusion(y, per_mode[mode][("saturation", 2.0, "adv")]["_probs"], num_classes)
            for mode in ("nt", "at")}

    # Attribution maps on the same clean images under NT and AT, for the true class.
    pick = _pick_images(y, opts.attr_images)
    xa, ya = x[pick], y[pick]
    k_attr = jax.random.fold_in(jax.random.key(config.seed), 4)
    maps: dict[str, dict[str, np.ndarray]] = {}
    alignment: dict[str, Any] = {}
    edges = edge_map(xa)
    attr_fn = make_attribution_fn(module, opts)
    for mode in ("nt", "at"):
        params, stats = trained[mode]
        maps[mode] = {m: np.asarray(h) for m, h in attr_fn(params, stats, jnp.asarray(xa), jnp.asarray(ya),
                                                             k_attr).items()}
        alignment[mode] = {m: _mean(_corr(h[i], edges[i]) for i in range(len(pick))) for m, h in maps[mode].items()}

    summary: dict[str, Any] = {
        "finding": "3: NT-CNNs rely on texture, AT-CNNs on shape",
        "config": {**config.to_dict(), "attack": vars(attack)},
        "options": dataclasses.asdict(opts),
        "models": {k: v for k, v in source.items() if k != "history"},
        "training": source.get("history"),
        "data": {"test": test.source, "images": int(len(y)),
                 "note": ("JPEG-recompressed CIFAR-10 copy (quality 75): results are close to, not identical with, "
                          "the original CIFAR-10") if "jpeg" in str(test.source).lower() else None},
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

    names = class_names(config.dataset)
    figures = plots.plot_distortion_accuracy(summary, workdir)
    figures += plots.plot_distortion_information(summary, workdir)
    figures += plots.plot_confusion(conf, workdir, class_names=names,
                                    title=f"True → predicted class on adversarial inputs ({config.dataset}, {config.model})")
    figures += plots.plot_attribution_maps(xa, ya, maps, workdir, class_names=names,
                                           title=f"Attribution maps, NT vs AT ({config.dataset}, {config.model})")
    ex = x[: opts.example_images]
    grid = {f"saturation p={lv:g}": np.asarray(distortions.saturate(ex, lv))
            for lv in dist["nt"]["saturation"]["levels"]}
    grid.update({f"shuffle k={lv}": np.asarray(distortions.distort(ex, "shuffle", lv, jax.random.fold_in(key, lv)))
                 for lv in dist["nt"]["shuffle"]["levels"]})
    figures += plots.plot_image_grid(grid, workdir / "distortion_examples.png",
                                     title=f"Distortions ({config.dataset})")
    summary["figures"] = [p.name for p in figures]
    write_json(workdir / "summary.json", summary)
    write_json(workdir / "timing.json", {"finding3_runtime_seconds": time.perf_counter() - t0})
    log(verdict_table(summary))
    return summary
