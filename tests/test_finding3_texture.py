"""Finding 3's no-op rule, information-retention and adversarial-texture verdicts on constructed inputs.

Every rule is shown to hold, to fail and to be untestable; effects are checked against direct
NumPy computations of their definitions (jaxmi.findings.texture).
"""

import numpy as np
import pytest

from jaxmi import distortions
from jaxmi.findings import finding3, texture

LEVELS = {"saturation": [2.0, 64.0, 1024.0], "shuffle": [0, 2, 4]}
R = 300


def _bits(acc, n, rng):
    c = np.zeros(n, bool)
    c[rng.choice(n, round(acc * n), replace=False)] = True
    return np.packbits(c).tobytes().hex()


def _info_block(values, rng, dominated=None):
    """I(T;Y) per level with R resamples (±1 % independent noise per level)."""
    v = np.asarray(values, float)
    return {"I_TY_last_hidden": v.tolist(),
            "I_TY_last_hidden_resamples": (v[:, None] * (1 + 0.01 * rng.normal(size=(v.size, R)))).tolist(),
            "self_dominated_last_hidden": list(dominated or [0.0] * v.size)}


def _summary(acc, *, pixel=None, info=None, dominated=None, survival=None, n=400, train_acc=0.95):
    """acc[regime][kind] = clean accuracies per level (first = undistorted); info likewise I(T;Y)."""
    rng = np.random.default_rng(7)
    dist = {}
    for r in acc:
        dist[r] = {}
        for k, a in acc[r].items():
            clean = {"accuracy": a, "correct_bits": [_bits(x, n, rng) for x in a]}
            if info is not None:
                clean.update(_info_block(info[r][k], rng, (dominated or {}).get((r, k))))
            dist[r][k] = {"levels": LEVELS[k], "clean": clean, "adv": {"accuracy": [0.0] * 3}}
        dist[r]["shuffle"]["clean"]["correct_bits"][0] = dist[r]["saturation"]["clean"]["correct_bits"][0]
    pixel = pixel or {"saturation": [0.0, 0.2, 0.3], "shuffle": [0.0, 0.2, 0.3]}
    res = {"num_classes": 10, "data": {"images": n, "note": None}, "distortion": dist, "adversarial_confusion": {},
           "pixel_change": pixel, "information_probe": {"probe": "fc2", "noise_var": 0.01}}
    if survival is not None:
        res["error_survival"] = survival
    return {"results": res, "run": {r: {"train_acc": [train_acc]} for r in acc}}


SHAPE = {"nt": {"saturation": [0.9, 0.4, 0.3], "shuffle": [0.9, 0.7, 0.6]},
         "at": {"saturation": [0.8, 0.7, 0.6], "shuffle": [0.8, 0.4, 0.3]}}


# ----------------------------------------------------------------------------- the no-op rule


def test_a_level_that_barely_changes_the_pixels_is_untestable_and_all_such_levels_give_null_not_no():
    pixel = {"saturation": [0.0, 0.02, 0.2], "shuffle": [0.0, 0.2, 0.3]}
    v, e = finding3.decide(_summary(SHAPE, pixel=pixel))
    t = {x["level"]: x for x in e["levels_saturation"]["testability"]}
    assert t[64.0]["testable"] is False and "δ_px" in t[64.0]["reason"] and t[1024.0]["testable"] is True
    assert t[64.0]["mean_abs_pixel_change"] == pytest.approx(0.02)
    assert e["levels_saturation"]["used"] == [1024.0] and e["levels_saturation"]["untestable"] == [64.0]
    ret = lambda a, a0: (a - 0.1) / (a0 - 0.1)  # noqa: E731
    assert v["at_prefers_shape"]["effect"] == pytest.approx(ret(0.6, 0.8) - ret(0.3, 0.9))
    # MNIST-like saturation (0.016–0.027 per pixel) at every level: untestable, not "does not hold"
    pixel["saturation"] = [0.0, 0.016, 0.027]
    v, _ = finding3.decide(_summary(SHAPE, pixel=pixel))
    for name in ("at_prefers_shape", "shape_texture_interaction", "retention_information_at_shape"):
        assert v[name]["holds"] is None and v[name]["effect"] is None
    assert "no testable saturation level" in v["at_prefers_shape"]["reason"] and "0.016" in v["at_prefers_shape"]["reason"]
    assert v["nt_prefers_texture"]["holds"] is True  # the shuffle side is unaffected


def test_a_level_that_changes_neither_models_accuracy_is_untestable_but_one_model_dropping_suffices():
    acc = {"nt": {"saturation": [0.9, 0.89, 0.4], "shuffle": [0.9, 0.7, 0.6]},
           "at": {"saturation": [0.8, 0.8, 0.8], "shuffle": [0.8, 0.4, 0.3]}}
    v, e = finding3.decide(_summary(acc))
    t = {x["level"]: x for x in e["levels_saturation"]["testability"]}
    assert t[64.0]["testable"] is False and "δ_acc" in t[64.0]["reason"]
    assert t[64.0]["accuracy_drop"] == pytest.approx({"nt": 0.01, "at": 0.0})
    # AT loses nothing at p = 1024 and NT loses 0.5: testable (requiring both to drop would forbid this)
    assert t[1024.0]["testable"] is True and v["at_prefers_shape"]["holds"] is True
    acc["nt"]["saturation"] = [0.9, 0.9, 0.89]
    v, _ = finding3.decide(_summary(acc))
    assert v["at_prefers_shape"]["holds"] is None and "δ_acc" in v["at_prefers_shape"]["reason"]


def test_pixel_change_matches_the_saturation_formula_and_counts_moved_tiles():
    x = np.full((2, 4, 4, 1), 0.25, np.float32)
    x[:, :2] = 0.75  # top half bright: shuffling 2 × 2 tiles moves brightness
    key = distortions.jax.random.key(0)
    pc = texture.pixel_change(x, [("saturation", 2.0), ("saturation", 4.0), ("shuffle", 0), ("shuffle", 2)], key)
    assert pc["saturation"][0] == pytest.approx(0.0, abs=1e-7)
    assert pc["saturation"][1] == pytest.approx(abs(0.5 - 0.5 * 0.5 ** 0.5 - 0.25), abs=1e-6)
    xs = np.asarray(distortions.patch_shuffle(distortions.jax.random.fold_in(key, 2), x, 2))
    assert pc["shuffle"] == pytest.approx([0.0, float(np.abs(xs - x).mean())], abs=1e-7)


# ----------------------------------------------------------------------------- information retention


INFO_SHAPE = {"nt": {"saturation": [2.0, 1.0, 0.8], "shuffle": [2.0, 1.8, 1.6]},
              "at": {"saturation": [1.5, 1.35, 1.2], "shuffle": [1.5, 0.75, 0.6]}}


def _delta(info, kind, levels=(1, 2)):
    return np.mean([info["at"][kind][i] / info["at"][kind][0] - info["nt"][kind][i] / info["nt"][kind][0]
                    for i in levels])


def test_information_retention_holds_for_a_shape_preference_with_the_defined_effect_and_interval():
    v, e = finding3.decide(_summary(SHAPE, info=INFO_SHAPE))
    d_sat, d_shuf = _delta(INFO_SHAPE, "saturation"), _delta(INFO_SHAPE, "shuffle")
    assert v["retention_information_at_shape"]["effect"] == pytest.approx(d_sat)
    assert v["retention_information_nt_texture"]["effect"] == pytest.approx(-d_shuf)
    rec = v["retention_information_interaction"]
    assert rec["effect"] == pytest.approx(d_sat - d_shuf)
    boot = np.asarray(rec["resamples"][0])
    half = 1.959964 * boot.std(ddof=1)
    assert rec["ci95"] == pytest.approx([rec["effect"] - half, rec["effect"] + half], abs=1e-5)
    assert all(v[n]["holds"] is True for n in texture.INFO_NAMES)
    assert e["retention_information"]["saturation"]["used"] == [64.0, 1024.0]


def test_information_retention_fails_when_at_keeps_more_information_under_every_distortion_alike():
    info = {"nt": {"saturation": [2.0, 1.0, 0.8], "shuffle": [2.0, 1.0, 0.8]},
            "at": {"saturation": [1.5, 1.2, 1.05], "shuffle": [1.5, 1.2, 1.05]}}
    v, _ = finding3.decide(_summary(SHAPE, info=info))
    assert v["retention_information_at_shape"]["holds"] is True  # more robust overall ...
    assert v["retention_information_nt_texture"]["holds"] is False
    assert v["retention_information_interaction"]["effect"] == pytest.approx(0.0, abs=1e-12)
    assert v["retention_information_interaction"]["holds"] is False  # ... is not a shape preference


def test_information_retention_is_untestable_without_information_or_with_a_self_dominated_kernel():
    info = {r: {k: list(vals) for k, vals in d.items()} for r, d in INFO_SHAPE.items()}
    info["nt"]["saturation"][0] = info["nt"]["shuffle"][0] = 0.01  # nothing to retain
    v, _ = finding3.decide(_summary(SHAPE, info=info))
    assert all(v[n]["holds"] is None for n in texture.INFO_NAMES)
    assert "under 0.05 bits" in v["retention_information_at_shape"]["reason"]
    # a self-dominated kernel at p = 64 for AT: that level is left out, p = 1024 decides
    dom = {("at", "saturation"): [0.0, 0.9, 0.0]}
    v, e = finding3.decide(_summary(SHAPE, info=INFO_SHAPE, dominated=dom))
    assert e["retention_information"]["saturation"]["self_dominated"] == [64.0]
    assert v["retention_information_at_shape"]["effect"] == pytest.approx(_delta(INFO_SHAPE, "saturation", (2,)))
    dom = {("nt", "saturation"): [0.9, 0.0, 0.0]}  # the undistorted reference itself: no level left
    v, _ = finding3.decide(_summary(SHAPE, info=INFO_SHAPE, dominated=dom))
    assert v["retention_information_at_shape"]["holds"] is None
    assert v["retention_information_nt_texture"]["holds"] is True
    v, _ = finding3.decide(_summary(SHAPE))  # a summary without the probe's information
    assert all(v[n]["holds"] is None for n in texture.INFO_NAMES)
    v, _ = finding3.decide(_summary(SHAPE, info=INFO_SHAPE, train_acc=0.1))  # did not learn
    assert all("did not learn" in v[n]["reason"] for n in texture.INFO_NAMES)


# ----------------------------------------------------------------------------- adversarial texture


def _predictions(y, err_share, survive, rng, num_classes=10):
    """Predictions at k = 0, 2, 4: a share ``err_share`` of wrong ones at k = 0, of which a share
    ``survive`` keep their class after shuffling (the rest move to another class)."""
    n = len(y)
    p0 = y.copy()
    wrong = rng.random(n) < err_share
    p0[wrong] = (y[wrong] + rng.integers(1, num_classes, wrong.sum())) % num_classes
    out = [p0]
    for _ in (2, 4):
        pk = (p0 + rng.integers(1, num_classes, n)) % num_classes  # never the same class ...
        keep = rng.random(n) < survive
        pk[keep] = p0[keep]  # ... unless kept
        out.append(pk)
    return out


def _survival(nt_adv, at_adv, nt_noise, at_noise=(0.3, 0.2), n=400, levels=(0, 2, 4)):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, n)
    preds = {g: _predictions(y, *spec, rng) for g, spec in
             (("nt_adv", nt_adv), ("at_adv", at_adv), ("nt_noise", nt_noise), ("at_noise", at_noise))}
    enc = lambda ps: [texture.encode_classes(p, 10) for p in ps]  # noqa: E731
    surv = {"levels": list(levels), "eps": 0.3, "labels": texture.encode_classes(y, 10),
            "nt": {"adv": enc(preds["nt_adv"]), "noise": enc(preds["nt_noise"])},
            "at": {"adv": enc(preds["at_adv"]), "noise": enc(preds["at_noise"])}}
    return surv, y, preds


def _share(y, p):
    err = p[0] != y
    return np.mean([np.mean(pk[err] == p[0][err]) for pk in p[1:]])


def test_adv_other_class_texture_holds_when_nt_adversarial_classes_survive_shuffling_more_than_at_and_noise():
    surv, y, preds = _survival(nt_adv=(0.9, 0.7), at_adv=(0.5, 0.2), nt_noise=(0.4, 0.2))
    v, e = finding3.decide(_summary(SHAPE, survival=surv))
    rec = v["adv_other_class_texture_nt_vs_at"]
    assert rec["effect"] == pytest.approx(_share(y, preds["nt_adv"]) - _share(y, preds["at_adv"]))
    assert v["adv_other_class_texture_vs_noise"]["effect"] == pytest.approx(
        _share(y, preds["nt_adv"]) - _share(y, preds["nt_noise"]))
    assert all(v[n]["holds"] is True for n in texture.SURVIVAL_NAMES)
    sh = e["adv_other_class_texture"]["shares"]["nt_adv"]
    assert sh["errors"] == int((preds["nt_adv"][0] != y).sum()) and e["adv_other_class_texture"]["levels"] == [2, 4]
    assert sh["chance_share"] == pytest.approx(np.mean([np.mean([np.mean(pk == c) for c in preds["nt_adv"][0][
        preds["nt_adv"][0] != y]]) for pk in preds["nt_adv"][1:]]))


def test_adv_other_class_texture_fails_when_at_matches_nt_or_noise_errors_survive_as_often():
    surv, *_ = _survival(nt_adv=(0.9, 0.5), at_adv=(0.5, 0.5), nt_noise=(0.4, 0.2))
    v, _ = finding3.decide(_summary(SHAPE, survival=surv))
    assert v["adv_other_class_texture_nt_vs_at"]["holds"] is False and v["adv_other_class_texture"]["holds"] is False
    surv, *_ = _survival(nt_adv=(0.9, 0.7), at_adv=(0.5, 0.2), nt_noise=(0.4, 0.7))
    v, _ = finding3.decide(_summary(SHAPE, survival=surv))
    assert v["adv_other_class_texture_nt_vs_at"]["holds"] is True
    assert v["adv_other_class_texture_vs_noise"]["holds"] is False  # ordinary wrong classes survive as often
    assert v["adv_other_class_texture"]["holds"] is False
    assert v["adv_other_class_texture"]["weakest"] == "adv_other_class_texture_vs_noise"


def test_adv_other_class_texture_is_untestable_with_too_few_errors_or_no_testable_shuffle_level():
    surv, *_ = _survival(nt_adv=(0.9, 0.7), at_adv=(0.03, 0.2), nt_noise=(0.4, 0.2))  # ~12 AT errors
    v, _ = finding3.decide(_summary(SHAPE, survival=surv))
    assert all(v[n]["holds"] is None for n in texture.SURVIVAL_NAMES)
    assert "fewer than 20 errors: at_adv" in v["adv_other_class_texture_nt_vs_at"]["reason"]
    surv, *_ = _survival(nt_adv=(0.9, 0.7), at_adv=(0.5, 0.2), nt_noise=(0.02, 0.2))  # the control has no errors
    v, _ = finding3.decide(_summary(SHAPE, survival=surv))
    assert v["adv_other_class_texture"]["holds"] is None and "nt_noise" in v["adv_other_class_texture_vs_noise"]["reason"]
    surv, *_ = _survival(nt_adv=(0.9, 0.7), at_adv=(0.5, 0.2), nt_noise=(0.4, 0.2))
    pixel = {"saturation": [0.0, 0.2, 0.3], "shuffle": [0.0, 0.01, 0.01]}  # shuffling a blank image
    v, _ = finding3.decide(_summary(SHAPE, survival=surv, pixel=pixel))
    assert v["adv_other_class_texture"]["holds"] is None
    assert "no testable shuffle level" in v["adv_other_class_texture_nt_vs_at"]["reason"]
    v, _ = finding3.decide(_summary(SHAPE, survival=surv, train_acc=0.1))
    assert v["adv_other_class_texture"]["holds"] is None


# ----------------------------------------------------------------------------- helpers


def test_class_codes_round_trip_and_the_last_hidden_probe_skips_the_logits():
    c = np.array([0, 3, 9, 255])
    assert texture.decode_classes(texture.encode_classes(c, 10), 4).tolist() == c.tolist()
    c = np.array([0, 300, 999])
    assert texture.decode_classes(texture.encode_classes(c, 1000), 3).tolist() == c.tolist()
    assert texture.last_hidden_probe({"conv1": 900, "fc1": 120, "fc2": 84, "fc3": 10}, 10) == "fc2"
    assert texture.last_hidden_probe({"a": 20, "b": 7}, 10) == "b"


def test_sign_noise_moves_every_interior_pixel_by_eps():
    x = np.full((3, 8, 8, 1), 0.5, np.float32)
    z = np.asarray(texture.sign_noise(x, 0.1, distortions.jax.random.key(1)))
    assert np.allclose(np.abs(z - x), 0.1, atol=1e-6) and 0.3 < np.mean(z > x) < 0.7
    assert np.asarray(texture.sign_noise(np.zeros((1, 4, 4, 1)), 0.2, distortions.jax.random.key(0))).min() >= 0


def test_data_note_names_the_jpeg_quality_of_an_image_folder_and_nothing_else(tmp_path):
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    for q, name in ((60, "jpg60"), (90, "jpg90")):
        (tmp_path / name / "test" / "cat").mkdir(parents=True)
        img.save(tmp_path / name / "test" / "cat" / "0.jpg", quality=q)
        assert texture.jpeg_quality(tmp_path / name / "test" / "cat" / "0.jpg") == q
        note = texture.data_note(str(tmp_path / name))
        assert f"quality {q}" in note and "fine texture" in note and str(tmp_path) not in note
    (tmp_path / "png" / "test" / "cat").mkdir(parents=True)
    img.save(tmp_path / "png" / "test" / "cat" / "0.png")
    assert texture.data_note(str(tmp_path / "png")) is None
    assert texture.data_note("bundled:mnist") is None and texture.data_note(None) is None


def test_a_bad_information_noise_var_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="information_noise_var must be a finite number > 0"):
        finding3.Options(information_noise_var=0.0)
