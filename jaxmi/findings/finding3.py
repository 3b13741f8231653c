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

Verdicts (records of :mod:`jaxmi.verdicts`; clean inputs). Retention is measured *above
chance*, r = (acc − 1/K) / (acc₀ − 1/K), so a model that starts closer to the chance floor is
not credited for having less to lose; a level enters only when both models stay at least
``floor`` (0.05) above chance there (k = 8 shuffling drives LeNets to the floor, where no
preference can show). With Δ_d = mean over the used levels of (r_AT − r_NT) under distortion d:

* ``at_prefers_shape``: Δ_saturation (levels p ≥ ``strong_saturation``) above 0;
* ``nt_prefers_texture``: −Δ_shuffle (levels k ≥ 2) above 0;
* ``shape_texture_interaction`` (the primary endpoint): D = Δ_saturation − Δ_shuffle above 0.
  A model that is merely more robust to every distortion raises both Δs alike and leaves D
  near 0; only a preference for shape over texture makes it positive.

Guards and second readings (:mod:`jaxmi.findings.texture`, whose docstring gives the rules):
a level is testable only if it moves pixels by ≥ δ_px = 0.05 on average and some model's clean
accuracy by ≥ δ_acc = 0.02 (no testable level on a side: untestable, never "no");
``retention_information_{at_shape,nt_texture,interaction}`` repeat the three comparisons on
I(T;Y) of the last hidden probe at a relative σ² (``information_noise_var``);
``adv_other_class_texture`` (with its parts ``_nt_vs_at`` and ``_vs_noise``) tests whether NT's
adversarial wrong classes survive patch shuffling more often than AT's and than its own
wrong classes on random-sign noise. ``data_note`` flags JPEG test images.

Intervals: a paired bootstrap over the images (the same resampled images for NT and AT and
for every level; per-image correctness is stored in the summary), and seeds with ``--seeds``.
The evidence repeats D on the images both models classify correctly undistorted
(``interaction_on_jointly_correct``), lists the accuracies per level on adversarial inputs,
and says what saturation does to the images (``saturation_effect``: the mean absolute pixel
change of the clean images, and the share of the adversarial perturbation's L1 norm that
survives saturation). Untestable: no usable level on a side, or a network that did not learn.

Evidence also holds the true → predicted class matrix on adversarial inputs with the mean
confidence per cell, and, for the attribution maps (saliency, SmoothGrad, Integrated
Gradients on the same images under NT and AT), their correlation with the image's edge map
(Sobel magnitude) — a shape-alignment number, higher when a map follows object contours.

Script: ``experiments/finding3_texture_shape.py`` (:func:`jaxmi.cli.main` with this module).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import attribution, distortions, plots
from jaxmi.config import Config, check_minimums, setting
from jaxmi.data import DATASETS, class_names
from jaxmi.evaluation import confusion
from jaxmi import verdicts as verdict_lib
from jaxmi.findings import texture
from jaxmi.findings.common import ModelOptions, measurement_draw, model_passes, trained_models
from jaxmi.findings.runner import Finding, Measured
from jaxmi.findings.summary import config_record, final_train_acc, record_rows, verdict_lines
from jaxmi.history import INPUTS, REGIMES
from jaxmi.models import probe_widths
from jaxmi.plan import pgd_config
from jaxmi.run import log_line
from jaxmi.verdicts import format_record

__all__ = ["Options", "PRESETS", "decide", "verdict_table", "run", "TITLE", "FINDING", "ESTIMATOR"]

TITLE = "3: NT-CNNs rely on texture, AT-CNNs on shape"
ESTIMATOR = "kde_lower"  # the paper's estimator for this experiment


@dataclasses.dataclass(frozen=True)
class Options(ModelOptions):
    """Finding-3 settings beyond the shared configuration (after ``from_run`` and ``from_seed``)."""

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
    information_noise_var: float = setting(texture.INFO_NOISE_VAR, "σ² of the I(T;Y) retention verdicts, relative "
                                                                  "to the layer's scale (noise_scale relative)")

    def __post_init__(self):
        if not (np.isfinite(self.information_noise_var) and self.information_noise_var > 0):
            raise ValueError(f"information_noise_var must be a finite number > 0 (a relative σ², e.g. "
                             f"{texture.INFO_NOISE_VAR}); got {self.information_noise_var}.")
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
              log, regime: str, eps: float, info_probe: str, info_noise_var: float) -> dict:
    """Accuracy, loss, probabilities and KDE-lower MI per (distortion, level, inputs) for one model.

    The adversarial inputs are PGD examples of the undistorted images, distorted afterwards;
    the shuffle key of level k is ``fold_in(key, k)``. Clean inputs also get I(T;Y) of
    ``info_probe`` at the relative σ² ``info_noise_var``; ``"error_survival"`` holds the
    predictions on adversarial and on random-sign-noise (size ``eps``) images shuffled at
    k = 0, 2, 4 (:mod:`jaxmi.findings.texture`).
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
                correct = probs.argmax(-1) == y
                cache[ck] = {"accuracy": float(np.mean(correct)), "loss": float(np.mean(out["loss"])),
                             "correct_bits": np.packbits(correct).tobytes().hex(),
                             "I_XT": [float(mi[p][ESTIMATOR]["I_XT"]) for p in layers],
                             "I_TY": [float(mi[p][ESTIMATOR]["I_TY"]) for p in layers], "_probs": probs}
                if inputs == "clean":
                    cache[ck]["_info"] = texture.probe_label_information(
                        passes, params, batch_stats, xd, y_dev, y, probe=info_probe, num_classes=num_classes,
                        noise_var=info_noise_var)
                log(f"[{regime.upper()}] {kind} {level:g} {inputs}: acc {cache[ck]['accuracy']:.4f} "
                    f"loss {cache[ck]['loss']:.4f}")
            results[(kind, level, inputs)] = cache[ck]
    # What saturation does: the mean absolute pixel change of the clean images, and the share of
    # the adversarial perturbation's L1 norm that survives it.
    pert = jnp.abs(sources["adv"] - x).sum()
    results["saturation_effect"] = {
        float(lv): {"mean_abs_pixel_change": float(jnp.mean(jnp.abs(distortions.saturate(x, lv) - x))),
                    "adv_perturbation_kept": float(jnp.abs(distortions.saturate(sources["adv"], lv)
                                                           - distortions.saturate(x, lv)).sum() / jnp.maximum(pert, 1e-12))}
        for kind, lv in conditions if kind == "saturation"}
    noisy = texture.sign_noise(x, eps, jax.random.fold_in(key, 5))  # the same noise for NT and AT
    ks = [lv for kind, lv in conditions if kind == "shuffle" and (lv in texture.SURVIVAL_LEVELS
                                                                  or distortions.is_identity(kind, lv))]
    results["error_survival"] = {"levels": ks, **texture.survival_predictions(
        passes.forward, params, batch_stats, {"adv": sources["adv"], "noise": noisy}, y_dev, ks, key, num_classes)}
    return results


FLOOR = 0.05  # a level enters only when both models' accuracy is at least this far above chance
RESAMPLES = 1000  # paired image bootstrap


def _correct(bits: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(bits), np.uint8))[:n].astype(bool)


def _side(dist, kind, select, chance, idx, subset=None, allowed=None):
    """Δ = mean over the usable levels of (r_AT − r_NT) with its resample values, the levels used
    and why others were not; retention above chance on the full draw or on ``subset``. Only
    levels in ``allowed`` (the testable ones, :func:`jaxmi.findings.texture.level_testability`)
    can be used; the others are listed as ``untestable``."""
    levels = dist["nt"][kind]["levels"]
    n = idx.shape[1]
    corr = {}
    for regime in REGIMES:
        bits = dist[regime][kind]["clean"].get("correct_bits")
        if bits is None:
            return None
        corr[regime] = np.stack([_correct(b, n) for b in bits])  # [L, N]
    ref = [i for i, lv in enumerate(levels) if distortions.is_identity(kind, lv)][0]
    keep = np.ones(n, bool) if subset is None else subset
    if not keep.any():
        return None
    used, skipped, noop, diffs, boots = [], [], [], [], []
    for i, lv in enumerate(levels):
        if i == ref or not select(lv):
            continue
        if allowed is not None and lv not in allowed:
            noop.append(lv)
            continue
        acc = {r: corr[r][i][keep].mean() for r in REGIMES}
        if min(acc.values()) < chance + FLOOR:
            skipped.append(lv)
            continue
        used.append(lv)
        d, b = 0.0, 0.0
        for sign, r in ((1, "at"), (-1, "nt")):
            c0, c = corr[r][ref], corr[r][i]
            a0, a = c0[keep].mean(), c[keep].mean()
            d += sign * (a - chance) / max(a0 - chance, 1e-9)
            w = keep[idx]  # [R, N] resampled images that are in the subset
            ab0 = (c0[idx] & w).sum(1) / np.maximum(w.sum(1), 1)
            ab = (c[idx] & w).sum(1) / np.maximum(w.sum(1), 1)
            # a resample whose undistorted accuracy falls to chance has no retention: NaN, dropped
            with np.errstate(divide="ignore", invalid="ignore"):
                b = b + sign * np.where(ab0 - chance > 1e-3, (ab - chance) / (ab0 - chance), np.nan)
        diffs.append(d)
        boots.append(b)
    if not used:
        return {"used": used, "skipped_at_floor": skipped, "untestable": noop}
    return {"used": used, "skipped_at_floor": skipped, "untestable": noop, "delta": float(np.mean(diffs)),
            "boot": np.mean(np.asarray(boots), axis=0)}


def decide(summary: dict[str, Any], *, strong_saturation: float = 64) -> tuple[dict[str, dict], dict[str, Any]]:
    """Finding-3 verdict records and evidence from the ``distortion`` block of a summary's ``results``."""
    res = summary["results"]
    dist = res["distortion"]
    chance = 1.0 / res["num_classes"]
    n = int(res["data"]["images"])
    idx = verdict_lib.point_bootstrap(n, RESAMPLES, seed=int((summary.get("config") or {}).get("seed") or 0))
    sides = {"saturation": lambda lv: lv >= strong_saturation, "shuffle": lambda lv: lv >= 2}
    final = final_train_acc(summary) or {
        r: dist[r]["saturation"]["clean"]["accuracy"][0] for r in REGIMES}  # else the undistorted test accuracy
    reason = verdict_lib.did_not_learn(final, res["num_classes"])
    both = None
    if all(dist[r]["saturation"]["clean"].get("correct_bits") for r in REGIMES):
        ref = lambda r: [i for i, lv in enumerate(dist[r]["saturation"]["levels"])  # noqa: E731
                         if distortions.is_identity("saturation", lv)][0]
        both = np.logical_and(*[_correct(dist[r]["saturation"]["clean"]["correct_bits"][ref(r)], n) for r in REGIMES])
    pixel = res.get("pixel_change") or {}
    tests = {k: texture.level_testability(dist, k, f, pixel.get(k)) for k, f in sides.items()}
    allowed = {k: {t["level"] for t in tests[k] if t["testable"]} for k in sides}
    sided = {k: _side(dist, k, f, chance, idx, allowed=allowed[k]) for k, f in sides.items()}
    sub = ({k: _side(dist, k, f, chance, idx, subset=both, allowed=allowed[k]) for k, f in sides.items()}
           if both is not None else None)
    unit = "retention above chance"
    rules = {
        "at_prefers_shape": f"mean over saturation levels p ≥ {strong_saturation:g} (testable: mean |Δpixel| ≥ "
                            f"{texture.DELTA_PX} and a model's clean accuracy drops ≥ {texture.DELTA_ACC}; both "
                            f"models ≥ {FLOOR} above chance) of above-chance retention AT − NT; holds when its 95% "
                            "interval lies above 0",
        "nt_prefers_texture": f"mean over patch-shuffle levels k ≥ 2 (testable as for saturation; both models ≥ "
                              f"{FLOOR} above chance) of above-chance retention NT − AT; holds when its 95% interval "
                              "lies above 0",
        "shape_texture_interaction": "D = (AT − NT retention)_saturation − (AT − NT retention)_shuffle; holds when "
                                     "its 95% interval lies above 0 (general robustness cancels in D)"}

    def make(r_sat, r_shuf, name):
        if reason:
            return verdict_lib.untestable(reason, unit=unit, rule=rules[name], seeds=1)
        rs = {"saturation": r_sat, "shuffle": r_shuf}
        need = {"at_prefers_shape": ("saturation",), "nt_prefers_texture": ("shuffle",)}.get(name, tuple(rs))
        if any(rs[k] is None for k in need):
            return verdict_lib.untestable("no per-image results", unit=unit, rule=rules[name], seeds=1)
        bad = [k for k in need if "delta" not in rs[k]]
        if bad:  # every level a no-op or at the chance floor: null with the per-level reasons, never "no"
            why = "; ".join(texture.untestable_reason(k, tests[k], rs[k]["skipped_at_floor"]) for k in bad)
            return verdict_lib.untestable(why, unit=unit, rule=rules[name], seeds=1)
        if name == "at_prefers_shape":
            e, b = r_sat["delta"], r_sat["boot"]
        elif name == "nt_prefers_texture":
            e, b = -r_shuf["delta"], -r_shuf["boot"]
        else:
            e, b = r_sat["delta"] - r_shuf["delta"], r_sat["boot"] - r_shuf["boot"]
        return verdict_lib.record([e], [b.tolist()], unit=unit, rule=rules[name])

    names = ("at_prefers_shape", "nt_prefers_texture", "shape_texture_interaction")
    verdicts = {name: make(sided["saturation"], sided["shuffle"], name) for name in names}
    used = {k: (sided[k] or {}).get("used") or [] for k in sides}
    info, info_ev = texture.information_verdicts(dist, used, reason=reason,
                                                 noise_var=(res.get("information_probe") or {}).get("noise_var"))
    surv, surv_ev = texture.error_survival_verdicts(res.get("error_survival"), n, sorted(allowed["shuffle"]), idx,
                                                    reason=reason)
    verdicts.update(info)
    verdicts.update(surv)
    ev: dict[str, Any] = {"chance_accuracy": chance, "floor": FLOOR, "resamples": RESAMPLES,
                          "data_note": (res.get("data") or {}).get("note"),
                          "noop_rule": {"delta_px": texture.DELTA_PX, "delta_acc": texture.DELTA_ACC}}
    for kind in sides:
        r = sided[kind] or {}
        ev[f"levels_{kind}"] = {"used": r.get("used"), "skipped_at_floor": r.get("skipped_at_floor"),
                                "untestable": r.get("untestable"), "testability": tests[kind]}
    ev["retention_information"] = {**info_ev, "probe": res.get("information_probe")}
    ev["adv_other_class_texture"] = surv_ev
    if sub is not None and not reason:
        rec = make(sub["saturation"], sub["shuffle"], "shape_texture_interaction")
        rec.pop("resamples", None)
        ev["interaction_on_jointly_correct"] = {"images": int(both.sum()), **rec}
    ev["accuracy"] = {r: {kind: {inp: dist[r][kind][inp]["accuracy"] for inp in INPUTS} | {"levels": dist[r][kind]["levels"]}
                          for kind in sides} for r in REGIMES}
    ev["saturation_effect"] = res.get("saturation_effect")
    ev["adversarial_confusion"] = res["adversarial_confusion"]
    ev["attribution_edge_alignment"] = res.get("attribution_edge_alignment")
    if reason:
        ev["warning"] = reason
    return verdicts, ev


def verdict_table(summary: dict[str, Any]) -> str:
    """The verdict table, the distortion levels used, and the adversarial confusion in brief."""
    lines = [verdict_lines(record_rows(summary["verdicts"]), summary)]
    e = summary["evidence"]
    for kind in ("saturation", "shuffle"):
        lv = e.get(f"levels_{kind}") or {}
        lines.append(f"{kind} levels used {lv.get('used')}, at the chance floor {lv.get('skipped_at_floor')}")
    j = e.get("interaction_on_jointly_correct")
    if j:
        lines.append(f"D on the {j['images']} images both models classify correctly undistorted: {format_record(j)}")
    for regime in REGIMES:
        c = e["adversarial_confusion"][regime]
        mc = c["mean_confidence_wrong"]
        lines.append(f"adversarial inputs, {regime.upper()}: accuracy {c['accuracy']:.3f}, mean confidence of wrong "
                     f"predictions {'n/a' if mc is None else f'{mc:.3f}'}")
    return "\n".join(lines + texture.table_lines(e))


def _pick_images(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to n images, one per class first (in class order), then the next ones."""
    first = [int(np.flatnonzero(y == c)[0]) for c in np.unique(y)][:n]
    rest = [i for i in range(len(y)) if i not in first][: max(0, n - len(first))]
    return np.asarray(first + rest)


def _level_grid(opts: Options, shape) -> dict[str, list]:
    return {kind: distortions.levels(kind, shape, saturation=opts.saturation, shuffle=opts.shuffle)
            for kind in distortions.KINDS}


def _check(config: Config, opts: Options) -> None:
    if opts.from_run is None and config.data.dataset in DATASETS:  # bad shuffle levels fail before any training
        _level_grid(opts, DATASETS[config.data.dataset].image_shape)


def _measure(config: Config, opts: Options, workdir, *, log=log_line, show_progress: bool = True) -> Measured:
    """NT and AT (trained here or loaded) under every distortion level, and their attribution maps."""
    models = trained_models(config, opts.from_run, log=log, show_progress=show_progress, workdir=workdir,
                            from_seed=opts.from_seed)
    config, module, trained = models.config, models.module, models.trained
    x, y, num_classes, test_source = measurement_draw(config)
    conditions = [(kind, lv) for kind, lvs in _level_grid(opts, x.shape[1:]).items() for lv in lvs]
    key = jax.random.fold_in(jax.random.key(config.seed), 3)
    fns = model_passes(module, config, len(y), x.shape[1:])
    layers = list(module.probe_names)
    info_probe = texture.last_hidden_probe(probe_widths(module, x.shape[1:]), num_classes)
    eps = float(pgd_config(config).eps)
    per_regime = {r: _evaluate(fns, *trained[r], x, y, conditions=conditions, key=key, num_classes=num_classes,
                               noise_var=config.mi.noise_var, layers=layers, log=log, regime=r, eps=eps,
                               info_probe=info_probe, info_noise_var=opts.information_noise_var) for r in REGIMES}

    dist: dict[str, Any] = {}
    for regime in REGIMES:
        dist[regime] = {}
        for kind in distortions.KINDS:
            levels = [lv for k, lv in conditions if k == kind]
            dist[regime][kind] = {"levels": levels}
            for inputs in INPUTS:
                rs = [per_regime[regime][(kind, lv, inputs)] for lv in levels]
                dist[regime][kind][inputs] = {q: [r[q] for r in rs] for q in ("accuracy", "loss", "I_XT", "I_TY",
                                                                              "correct_bits")}
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

    extra = texture.measured_blocks(per_regime, conditions, dist, probe=info_probe,  # also fills dist's probe I(T;Y)
                                    noise_var=opts.information_noise_var, eps=eps, y=y, num_classes=num_classes)
    results: dict[str, Any] = {
        "data": {"test": test_source, "images": int(len(y)), "note": texture.data_note(test_source)},
        "pixel_change": texture.pixel_change(x, conditions, key),
        **extra,
        "layers": layers,
        "num_classes": num_classes,
        "estimator": ESTIMATOR,
        "distortion": dist,
        "adversarial_confusion": conf,
        "saturation_effect": {r: {f"{lv:g}": v for lv, v in per_regime[r]["saturation_effect"].items()}
                              for r in REGIMES},
        "attribution_images": pick.tolist(),
        "attribution_edge_alignment": alignment,
    }
    return Measured(config_record(config), results, source=models.source, run=models.run,
                    artifacts={"x": x, "xa": xa, "ya": ya, "maps": maps, "key": key})


def _figures(summary: dict[str, Any], workdir: Path, a) -> list[Path]:
    res = summary["results"]
    dataset, model = summary["config"]["dataset"], summary["config"]["model"]
    names = class_names(dataset)
    figures = plots.plot_distortion_accuracy(summary, workdir)
    figures += plots.plot_distortion_information(summary, workdir)
    figures += plots.plot_confusion(res["adversarial_confusion"], workdir, class_names=names,
                                    title=f"True → predicted class on adversarial inputs ({dataset}, {model})")
    figures += plots.plot_attribution_maps(a["xa"], a["ya"], a["maps"], workdir, class_names=names,
                                           title=f"Attribution maps, NT vs AT ({dataset}, {model})")
    ex = a["x"][: summary["options"]["example_images"]]
    grid = {f"saturation p={lv:g}": np.asarray(distortions.saturate(ex, lv))
            for lv in res["distortion"]["nt"]["saturation"]["levels"]}
    grid.update({f"shuffle k={lv}": np.asarray(distortions.distort(ex, "shuffle", lv, jax.random.fold_in(a["key"], lv)))
                 for lv in res["distortion"]["nt"]["shuffle"]["levels"]})
    return figures + plots.plot_image_grid(grid, workdir / "distortion_examples.png",
                                           title=f"Distortions ({dataset})")


FINDING = Finding(name="finding3", title=TITLE, measure=_measure,
                  decide=lambda summary, opts: decide(summary, strong_saturation=opts.strong_saturation),
                  table=verdict_table, figures=_figures, presets=PRESETS, options=Options, check=_check,
                  default_dataset="cifar10",
                  from_run_fields=("samples", "estimators", "data_dir"))


def run(config: Config, workdir: str | Path, *, options: dict[str, Any] | None = None, overwrite: bool = False,
        show_progress: bool = True, log=log_line) -> dict[str, Any]:
    """Runs finding 3 and writes ``summary.json`` and figures into ``workdir``
    (:func:`jaxmi.findings.runner.run`)."""
    return FINDING.run(config, workdir, options=options, overwrite=overwrite, show_progress=show_progress, log=log)
