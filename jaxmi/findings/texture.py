"""Finding 3's guards and second readings: no-op levels, information retention, adversarial texture.

Three additions to the accuracy verdicts of :mod:`jaxmi.findings.finding3`, each aimed at an
alternative explanation of "AT keeps shape, NT keeps texture":

* **The distortion is a no-op** (:func:`level_testability`). A level decides nothing when it
  barely changes the images or changes neither network's accuracy. A level is testable only
  if its mean absolute pixel change on the draw is at least :data:`DELTA_PX` (0.05 on the
  [0, 1] scale) *and* at least one model's clean accuracy drops by at least
  :data:`DELTA_ACC` (0.02) from the undistorted images. One model suffices: the claim is
  that one network keeps its accuracy where the other loses it, so requiring both to drop
  would make "AT retains accuracy under saturation" untestable by construction. A verdict
  with no testable level on a side is untestable (``holds`` None) with the per-level reasons,
  never "no".
* **The accuracy is a coarse read-out** (:func:`information_verdicts`). The same retention
  comparisons on I(T;Y) of the last hidden probe (the probe before the logits), KDE lower
  bound at a scale-free σ² (``noise_scale="relative"``, σ² = ``information_noise_var``
  relative units, default :data:`INFO_NOISE_VAR`): retention ρ = I_distorted / I_undistorted
  per model, on the levels the accuracy verdicts use, interval from :data:`INFO_RESAMPLES`
  bootstrap resamples shared by every level and both models (paired). A level whose kernel
  is self-dominated (over :data:`SELF_DOMINATED_MAX` of the rows see only themselves, where
  I(T;Y) counts labels instead of geometry) for either model is left out; a model whose
  undistorted probe carries under :data:`MIN_INFO_BITS` bits about the label makes the side
  untestable.
* **Adversarial examples carry another class's texture** (:func:`error_survival_verdicts`).
  Among a model's adversarial errors (prediction on the PGD image ≠ label), the share whose
  wrong class is still predicted after patch shuffling the adversarial image (k ∈
  :data:`SURVIVAL_LEVELS` that are testable, averaged): texture survives shuffling, shape
  does not. ``adv_other_class_texture_nt_vs_at``: share_NT − share_AT > 0;
  ``adv_other_class_texture_vs_noise``: NT's share on adversarial errors minus its share on
  the errors on random-sign noise of the attack's size (prediction on the noisy image ≠
  label) > 0 — if ordinary wrong classes survive shuffling as often, survival says nothing
  about adversarial texture; ``adv_other_class_texture``: both hold. Untestable with fewer
  than :data:`MIN_ERRORS` errors in any of the three groups. The evidence adds the share
  expected by chance (the shuffled predictions' class frequencies at the wrong classes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import distortions
from jaxmi import verdicts as verdict_lib
from jaxmi.estimators import estimate
from jaxmi.history import REGIMES

__all__ = ["DELTA_ACC", "DELTA_PX", "INFO_NAMES", "INFO_NOISE_VAR", "INFO_RESAMPLES", "MIN_ERRORS", "MIN_INFO_BITS",
           "SELF_DOMINATED_MAX", "SURVIVAL_LEVELS", "SURVIVAL_NAMES", "data_note", "decode_classes", "encode_classes",
           "error_survival_verdicts", "information_verdicts", "jpeg_quality", "last_hidden_probe", "level_testability",
           "measured_blocks", "pixel_change", "probe_label_information", "sign_noise", "survival_predictions",
           "table_lines", "untestable_reason"]

DELTA_PX = 0.05  # mean |Δpixel| on [0, 1]; MNIST saturation p = 8 … 1024 moves pixels by 0.016–0.027
DELTA_ACC = 0.02  # clean-accuracy drop of at least one model
MIN_ERRORS = 20  # errors per model (and NT's noise errors) for the survival shares
INFO_NOISE_VAR = 1e-2  # relative σ² of the information retention
INFO_RESAMPLES = 200
MIN_INFO_BITS = 0.05  # undistorted I(T;Y) below this: nothing to retain
SELF_DOMINATED_MAX = 0.5
SURVIVAL_LEVELS = (2, 4)
INFO_NAMES = ("retention_information_at_shape", "retention_information_nt_texture",
              "retention_information_interaction")
SURVIVAL_NAMES = ("adv_other_class_texture_nt_vs_at", "adv_other_class_texture_vs_noise", "adv_other_class_texture")


# --------------------------------------------------------------------------------------
# Measurement


def encode_classes(classes, num_classes: int) -> str:
    """Class indices as a hex string (one byte per image up to 256 classes, else two)."""
    dtype = ">u1" if num_classes <= 256 else ">u2"
    return np.asarray(classes).astype(dtype).tobytes().hex()


def decode_classes(text: str, n: int) -> np.ndarray:
    """The [n] class indices of :func:`encode_classes`."""
    width = len(text) // (2 * n) if n else 1
    return np.frombuffer(bytes.fromhex(text), ">u1" if width == 1 else ">u2").astype(np.int64)


def last_hidden_probe(widths: Mapping[str, int], num_classes: int) -> str:
    """The probe before the logits: the last probe, or the one before it when the last one is
    ``num_classes`` wide (the logits)."""
    names = list(widths)
    return names[-2] if len(names) > 1 and widths[names[-1]] == num_classes else names[-1]


def probe_label_information(passes, params, batch_stats, x, y_dev, y_host, *, probe: str, num_classes: int,
                            noise_var: float = INFO_NOISE_VAR, resamples: int = INFO_RESAMPLES) -> dict[str, Any]:
    """KDE-lower I(T;Y) of one probe at the relative σ² ``noise_var``, with ``resamples``
    bootstrap values (key 0: the same resamples for every call with the same N)."""
    fn = next(f for group, f in passes.probes.items() if probe in group)
    t = fn(params, batch_stats, x, y_dev)["probes"][probe]
    r = estimate(jnp.reshape(t, (t.shape[0], -1)), y_host, methods=("kde_lower",), num_classes=num_classes,
                 noise_var=noise_var, noise_scale="relative", bootstrap=resamples, key=jax.random.key(0),
                 precision=passes.kde_precision)["kde_lower"]
    return {"I_TY": float(r["I_TY"]), "resamples": np.round(np.asarray(r["I_TY_resamples"], np.float64), 6).tolist(),
            "self_dominated_share": float(r["self_dominated_share"]), "noise_var_absolute": float(r["noise_var"])}


def sign_noise(x, eps: float, key):
    """``clip(x + eps · s, 0, 1)`` with s = ±1 at random per pixel: noise of the attack's size."""
    s = jax.random.rademacher(key, jnp.shape(x), dtype=jnp.asarray(x).dtype)
    return jnp.clip(x + eps * s, 0.0, 1.0)


def survival_predictions(forward: Callable, params, batch_stats, sources: Mapping[str, Any], y_dev,
                         levels: Sequence[int], key, num_classes: int) -> dict[str, list[str]]:
    """Per source (e.g. adversarial, noisy images), the predicted classes after patch shuffling
    at every level (hex, :func:`encode_classes`); level k's shuffle key is ``fold_in(key, k)``."""
    out: dict[str, list[str]] = {}
    for name, xs in sources.items():
        out[name] = []
        for k in levels:
            xd = distortions.distort(xs, "shuffle", k, jax.random.fold_in(key, int(k)))
            pred = np.asarray(forward(params, batch_stats, xd, y_dev)["probs"]).argmax(-1)
            out[name].append(encode_classes(pred, num_classes))
    return out


def measured_blocks(per_regime: Mapping, conditions: Sequence[tuple[str, Any]], dist: dict, *, probe: str,
                    noise_var: float, eps: float, y, num_classes: int) -> dict[str, Any]:
    """Finding 3's summary blocks of this module from the per-model measurements: adds the
    probe's I(T;Y) (``I_TY_last_hidden``, its resamples, ``self_dominated_last_hidden``) to
    each clean block of ``dist`` and returns ``information_probe`` and ``error_survival``."""
    absolute = {}
    for r in REGIMES:
        for kind in distortions.KINDS:
            info = [per_regime[r][(kind, lv, "clean")]["_info"] for k, lv in conditions if k == kind]
            dist[r][kind]["clean"].update({"I_TY_last_hidden": [i["I_TY"] for i in info],
                                           "I_TY_last_hidden_resamples": [i["resamples"] for i in info],
                                           "self_dominated_last_hidden": [i["self_dominated_share"] for i in info]})
            absolute.setdefault(r, {})[kind] = [i["noise_var_absolute"] for i in info]
    survival = {r: {k: v for k, v in per_regime[r]["error_survival"].items() if k != "levels"} for r in REGIMES}
    return {"information_probe": {"probe": probe, "estimator": "kde_lower", "noise_scale": "relative",
                                  "noise_var": noise_var, "resamples": INFO_RESAMPLES, "noise_var_absolute": absolute},
            "error_survival": {"levels": per_regime["nt"]["error_survival"]["levels"], "eps": eps,
                               "labels": encode_classes(y, num_classes), **survival}}


def table_lines(evidence: Mapping) -> list[str]:
    """Lines for finding 3's verdict table: the no-op levels, the information probe, the
    survival shares and the data note."""
    lines = []
    for kind in ("saturation", "shuffle"):
        tests = (evidence.get(f"levels_{kind}") or {}).get("testability") or []
        bad = [f"{t['level']:g} ({t['reason']})" for t in tests if not t["testable"]]
        if bad:
            lines.append(f"{kind} levels untestable: " + "; ".join(bad))
    probe = (evidence.get("retention_information") or {}).get("probe") or {}
    if probe:
        lines.append(f"I(T;Y) retention on probe {probe.get('probe')} (KDE lower bound, relative σ² "
                     f"{probe.get('noise_var')})")
    shares = (evidence.get("adv_other_class_texture") or {}).get("shares") or {}
    if shares:
        chance = {g: "n/a" if s["chance_share"] is None else f"{s['chance_share']:.3f}" for g, s in shares.items()}
        lines.append("errors whose class survives shuffling: " + ", ".join(
            f"{g} {s['share']:.3f} of {s['errors']} (chance {chance[g]})" for g, s in shares.items()))
    if evidence.get("data_note"):
        lines.append(f"data: {evidence['data_note']}")
    return lines


def pixel_change(x, conditions: Sequence[tuple[str, Any]], key) -> dict[str, list[float]]:
    """Mean absolute pixel change of the images ``x`` at every (kind, level), per kind in level order."""
    out: dict[str, list[float]] = {}
    for kind, lv in conditions:
        xd = distortions.distort(x, kind, lv, jax.random.fold_in(key, int(lv)) if kind == "shuffle" else None)
        out.setdefault(kind, []).append(float(jnp.mean(jnp.abs(xd - jnp.asarray(x)))))
    return out


_IJG_LUMA = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                      14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
                      92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64)


def jpeg_quality(path) -> int | None:
    """The IJG quality (1–100) a JPEG file was written with, estimated from its luminance
    quantisation table (order-free: sorted tables are compared); None if not a JPEG."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            tables = getattr(im, "quantization", None)
            if im.format != "JPEG" or not tables:
                return None
            q = np.sort(np.asarray(tables[0], np.float64))
    except OSError:
        return None
    scale = float(np.median(100.0 * q / np.sort(_IJG_LUMA)))
    return round((200.0 - scale) / 2.0 if scale <= 100 else 5000.0 / scale)


def data_note(source: str | None) -> str | None:
    """A note for the evidence when the test images are JPEG files (an image-folder copy):
    JPEG quantisation removes part of the fine texture this finding probes. None otherwise."""
    root = Path(str(source)) / "test" if source else None
    if root is None or not root.is_dir():
        return None
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(folder.iterdir())[:1]:
            if f.suffix.lower() in (".jpg", ".jpeg"):
                q = jpeg_quality(f)
                return (f"the test images are JPEG files (quality {q if q is not None else 'unknown'}, estimated from "
                        "their quantisation tables): JPEG removes part of the fine texture that patch shuffling keeps "
                        "and saturation removes, so texture reliance is measured on images with less texture than "
                        "the original dataset's; results are close to, not identical with, the original's")
        return None
    return None


# --------------------------------------------------------------------------------------
# Rules


def _ref(levels, kind) -> int:
    return next(i for i, lv in enumerate(levels) if distortions.is_identity(kind, lv))


def level_testability(dist: Mapping, kind: str, select: Callable, pixel: Sequence[float] | None) -> list[dict]:
    """Per non-identity level of ``kind`` passing ``select``: its mean absolute pixel change,
    each model's clean-accuracy drop, whether it is testable (change ≥ δ_px and some drop ≥
    δ_acc) and why not."""
    levels = dist["nt"][kind]["levels"]
    ref = _ref(levels, kind)
    out = []
    for i, lv in enumerate(levels):
        if i == ref or not select(lv):
            continue
        drop = {r: float(dist[r][kind]["clean"]["accuracy"][ref] - dist[r][kind]["clean"]["accuracy"][i])
                for r in REGIMES}
        px = None if pixel is None else float(pixel[i])
        why = []
        if px is None:
            why.append("no pixel-change measurement")
        elif px < DELTA_PX:
            why.append(f"mean |Δpixel| {px:.3f} < δ_px {DELTA_PX}")
        if max(drop.values()) < DELTA_ACC:
            why.append(f"neither model's clean accuracy drops by δ_acc {DELTA_ACC} (NT {drop['nt']:+.3f}, "
                       f"AT {drop['at']:+.3f})")
        out.append({"level": lv, "mean_abs_pixel_change": px, "accuracy_drop": drop, "testable": not why,
                    "reason": "; ".join(why) or None})
    return out


def untestable_reason(kind: str, tests: Sequence[dict], skipped_at_floor: Sequence = ()) -> str:
    """Why no level of ``kind`` is usable: each level's no-op reason, or the chance floor."""
    parts = [f"{t['level']:g}: {t['reason']}" for t in tests if not t["testable"]]
    parts += [f"{lv:g}: a model within the chance floor" for lv in skipped_at_floor]
    return f"no testable {kind} level ({'; '.join(parts) or 'none selected'})"


def _side_information(dist, kind: str, levels_used: Sequence) -> dict[str, Any]:
    """Δ_I = mean over usable levels of (ρ_AT − ρ_NT), its resamples, and the levels left out."""
    levels = dist["nt"][kind]["levels"]
    ref = _ref(levels, kind)
    blocks = {r: dist[r][kind]["clean"] for r in REGIMES}
    if any("I_TY_last_hidden" not in b for b in blocks.values()):
        return {"reason": "no last-hidden-probe information in the summary"}
    low = {r: b["I_TY_last_hidden"][ref] for r, b in blocks.items() if b["I_TY_last_hidden"][ref] < MIN_INFO_BITS}
    if low:
        return {"reason": "the undistorted last hidden probe carries under "
                          f"{MIN_INFO_BITS} bits about the label ("
                          + ", ".join(f"{r.upper()} {v:.3f}" for r, v in low.items()) + ")"}
    used, dominated, diffs, boots = [], [], [], []
    for lv in levels_used:
        i = levels.index(lv)
        if max(b["self_dominated_last_hidden"][j] for b in blocks.values() for j in (ref, i)) > SELF_DOMINATED_MAX:
            dominated.append(lv)
            continue
        used.append(lv)
        d, bt = 0.0, 0.0
        for sign, r in ((1, "at"), (-1, "nt")):
            b = blocks[r]
            d += sign * b["I_TY_last_hidden"][i] / b["I_TY_last_hidden"][ref]
            b0, bi = (np.asarray(b["I_TY_last_hidden_resamples"][j], np.float64) for j in (ref, i))
            with np.errstate(divide="ignore", invalid="ignore"):
                bt = bt + sign * np.where(b0 > 1e-9, bi / b0, np.nan)
        diffs.append(d)
        boots.append(bt)
    out: dict[str, Any] = {"used": used, "self_dominated": dominated}
    if not used:
        out["reason"] = (f"no self-dominated-free {kind} level among those of the accuracy verdict "
                         f"({list(levels_used)})" if levels_used else
                         f"no {kind} level is testable and above the chance floor (evidence: levels_{kind})")
        return out
    return {**out, "delta": float(np.mean(diffs)), "boot": np.mean(np.asarray(boots), axis=0)}


def information_verdicts(dist: Mapping, levels_used: Mapping[str, Sequence], *, reason: str | None,
                         noise_var: float | None = None) -> tuple[dict[str, dict], dict[str, Any]]:
    """The three ``retention_information_*`` records (clean inputs) and their evidence.

    ``levels_used``: per kind, the levels the accuracy verdicts use (testable, above the
    chance floor). ``reason``: a run-wide reason for every record to be untestable.
    """
    unit = "I(T;Y) retention (distorted / undistorted)"
    sv = f"σ² = {noise_var:g} relative" if noise_var is not None else "a relative σ²"
    rules = {
        INFO_NAMES[0]: f"mean over the saturation levels of the accuracy verdict of I(T;Y) retention AT − NT (last "
                       f"hidden probe, KDE lower bound, {sv}); holds when its 95% interval lies above 0",
        INFO_NAMES[1]: "mean over the patch-shuffle levels of the accuracy verdict of I(T;Y) retention NT − AT; "
                       "holds when its 95% interval lies above 0",
        INFO_NAMES[2]: "D_I = (AT − NT I(T;Y) retention)_saturation − (AT − NT)_shuffle; holds when its 95% "
                       "interval lies above 0 (general robustness cancels in D_I)"}
    sides = {k: _side_information(dist, k, levels_used.get(k) or []) for k in ("saturation", "shuffle")}
    need = {INFO_NAMES[0]: ("saturation",), INFO_NAMES[1]: ("shuffle",), INFO_NAMES[2]: ("saturation", "shuffle")}
    out = {}
    for name in INFO_NAMES:
        if reason:
            out[name] = verdict_lib.untestable(reason, unit=unit, rule=rules[name], seeds=1)
            continue
        missing = [k for k in need[name] if "delta" not in sides[k]]
        if missing:
            out[name] = verdict_lib.untestable("; ".join(f"{k}: {sides[k]['reason']}" for k in missing), unit=unit,
                                               rule=rules[name], seeds=1)
            continue
        s, h = sides["saturation"], sides["shuffle"]
        if name == INFO_NAMES[0]:
            e, b = s["delta"], s["boot"]
        elif name == INFO_NAMES[1]:
            e, b = -h["delta"], -h["boot"]
        else:
            e, b = s["delta"] - h["delta"], s["boot"] - h["boot"]
        out[name] = verdict_lib.record([e], [b.tolist()], unit=unit, rule=rules[name])
    ev = {k: {q: v for q, v in sides[k].items() if q not in ("boot",)} for k in sides}
    return out, ev


def _survival(y, p0, pk: Sequence[np.ndarray], idx) -> dict[str, Any]:
    """Share of the errors (p0 ≠ y) whose class p0 survives in every pk (averaged over k), its
    resamples over the image indices ``idx`` [R, N], the error count and the chance share."""
    err = p0 != y
    surv = np.stack([p == p0 for p in pk])  # [K, N]
    n_err = int(err.sum())
    share = float(np.mean([(s & err).sum() / max(n_err, 1) for s in surv]))
    e = err[idx]  # [R, N]
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.mean([(s[idx] & e).sum(1) / e.sum(1) for s in surv], axis=0)  # NaN: no error drawn
    freq = [np.bincount(p, minlength=int(max(p0.max(), p.max())) + 1) / len(p) for p in pk]
    chance = float(np.mean([f[p0[err]].mean() for f in freq])) if n_err else None
    return {"share": share, "boot": boot, "errors": n_err, "chance_share": chance}


def error_survival_verdicts(surv: Mapping | None, n: int, testable_shuffle: Sequence, idx, *,
                            reason: str | None) -> tuple[dict[str, dict], dict[str, Any]]:
    """The ``adv_other_class_texture*`` records and their evidence from ``results["error_survival"]``.

    ``testable_shuffle``: the shuffle levels that pass :func:`level_testability`; ``idx``: the
    [R, n] image indices of the paired bootstrap.
    """
    unit = "share of errors whose class survives shuffling"
    ks = "k ∈ {" + ", ".join(map(str, SURVIVAL_LEVELS)) + "}"
    rules = {
        SURVIVAL_NAMES[0]: f"share of adversarial errors whose wrong class is still predicted after patch shuffling "
                           f"({ks}, testable levels, averaged), NT − AT; holds when its 95% interval lies above 0",
        SURVIVAL_NAMES[1]: "the same share for NT's adversarial errors minus for its errors on random-sign noise of "
                           "the attack's size; holds when its 95% interval lies above 0 (else ordinary wrong classes "
                           "survive as often and survival says nothing about adversarial texture)",
        SURVIVAL_NAMES[2]: f"holds when {SURVIVAL_NAMES[0]} and {SURVIVAL_NAMES[1]} both hold"}
    ev: dict[str, Any] = {"min_errors": MIN_ERRORS}
    why = reason
    levels = []
    if why is None and not surv:
        why = "no error-survival measurement in the summary"
    if why is None:
        levels = [k for k in surv["levels"] if k in SURVIVAL_LEVELS and k in set(testable_shuffle)]
        if not levels:
            why = f"no testable shuffle level among {list(SURVIVAL_LEVELS)}"
    stats: dict[str, dict] = {}
    if why is None:
        y = decode_classes(surv["labels"], n)
        ref = surv["levels"].index(0) if 0 in surv["levels"] else surv["levels"].index(1)
        for r in REGIMES:
            for src in ("adv", "noise"):
                preds = [decode_classes(h, n) for h in surv[r][src]]
                stats[f"{r}_{src}"] = _survival(y, preds[ref], [preds[surv["levels"].index(k)] for k in levels], idx)
        ev.update(levels=levels, eps=surv.get("eps"),
                  shares={g: {q: v for q, v in s.items() if q != "boot"} for g, s in stats.items()})
        few = {g: s["errors"] for g, s in stats.items() if g != "at_noise" and s["errors"] < MIN_ERRORS}
        if few:
            why = f"fewer than {MIN_ERRORS} errors: " + ", ".join(f"{g} {c}" for g, c in few.items())
    out: dict[str, dict] = {}
    if why is not None:
        for name in SURVIVAL_NAMES[:2]:
            out[name] = verdict_lib.untestable(why, unit=unit, rule=rules[name], seeds=1)
    else:
        for name, (a, b) in zip(SURVIVAL_NAMES[:2], (("nt_adv", "at_adv"), ("nt_adv", "nt_noise"))):
            out[name] = verdict_lib.record([stats[a]["share"] - stats[b]["share"]],
                                           [(stats[a]["boot"] - stats[b]["boot"]).tolist()], unit=unit,
                                           rule=rules[name])
    out[SURVIVAL_NAMES[2]] = verdict_lib.all_of({k: out[k] for k in SURVIVAL_NAMES[:2]}, rule=rules[SURVIVAL_NAMES[2]])
    return out, ev
