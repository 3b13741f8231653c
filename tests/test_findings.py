"""Findings 1, 3 and 4: verdict logic against independent references, and the scripts end to end.

The end-to-end runs share one smoke training: the finding-3 smoke run (bundled MNIST, 1 epoch on
512 images) saves its NT and AT models, which the finding-4 run loads with --from-run. Finding 1's
script is run on a synthetic finding-2 summary (--from-run), its training path being
jaxmi.experiment.train_and_measure, which test_finding2 runs end to end.
"""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxmi.findings import finding3
from jaxmi.findings.summary import SUMMARY_KEYS

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"
LAYERS = ["conv1", "conv2", "fc1"]


def _script(name, *args, timeout=600):
    return subprocess.run([sys.executable, str(EXP / name), "--no-progress", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _main(capsys, name, *args):
    """A script's main() in this process: (exit status, stderr). For the refusals, which stop
    before any training; the runs that finish go through a process (_script)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXP / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    capsys.readouterr()
    try:
        rc = mod.main(["--no-progress", *map(str, args)])
    except SystemExit as e:  # argparse errors
        rc = e.code
    return rc, capsys.readouterr().err


def _check_layout(out):
    """Every finding writes the one summary layout and the same timing keys."""
    s = json.loads((out / "summary.json").read_text())
    assert list(s) == list(SUMMARY_KEYS)
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing) == {"runtime_seconds", "run"} and timing["runtime_seconds"] > 0
    return s


# ----------------------------------------------------------------------------- finding 1


def _summary(clean_fn, adv_fn, m=8, r=40):
    """A finding-2-style summary whose curves are given functions of (epoch, probe), with
    bootstrap standard errors and resamples (jitter of 0.005 bits), a noise control equal
    to the adversarial curve and an unrelated-input control that oscillates on its own."""
    rng = np.random.default_rng(0)
    e = np.arange(m, dtype=float)

    def block(fn):
        return np.array([[float(fn(t, j)) for j in range(len(LAYERS))] for t in e])

    def hist():
        mi, se, boot = {}, {}, {}
        for est in ("kde_upper", "binning"):
            curves = {"clean": block(clean_fn), "adv": block(adv_fn), "noise": block(adv_fn),
                      "unrelated": block(lambda t, j: 2 + 0.1 * j + 0.25 * math.cos(2.1 * t + j))}
            q = {i: {"I_XT": c, "I_TY": 0.5 * c} for i, c in curves.items()}
            mi[est] = {i: {k: v.tolist() for k, v in d.items()} for i, d in q.items()}
            se[est] = {i: {k: np.full_like(v, 0.005).tolist() for k, v in d.items()} for i, d in q.items()}
            boot[est] = {i: {k: (v[..., None] + rng.normal(0, 0.005, v.shape + (r,))).tolist() for k, v in d.items()}
                         for i, d in q.items()}
        h = {k: [0.5] * m for k in ("train_loss", "test_clean_acc", "test_adv_acc", "test_clean_loss",
                                    "test_adv_loss")}
        return {**h, "train_acc": [0.9] * m, "mi": mi, "mi_se": se, "mi_boot": boot}

    run = {"layers": LAYERS, "num_classes": 10, "saturation": {"I_XT_ceiling": 20.0, "I_TY_ceiling": 20.0},
           "epochs_measured": list(range(m)), "nt": hist(), "at": hist()}
    return {"finding": "2: ...", "config": {"dataset": "mnist", "model": "lenet", "samples": 100}, "options": {},
            "source": {"trained": True}, "run": run, "results": {}, "verdicts": {}, "evidence": {}, "figures": []}


def test_finding1_script_from_a_run_directory(tmp_path, capsys):
    src = tmp_path / "f2"
    src.mkdir()
    grow = lambda t, j: 1 + j + 0.3 * t + 0.2 * math.sin(1.3 * t + j)  # noqa: E731
    (src / "summary.json").write_text(json.dumps(_summary(grow, lambda t, j: grow(t, j) + 0.1)))
    out = tmp_path / "f1"
    proc = _script("finding1_mi_trends.py", "--from-run", src, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = _check_layout(out)
    assert s["source"] == {"from_run": str(src)} and s["run"]["nt"] == json.loads((src / "summary.json").read_text())[
        "run"]["nt"]
    assert {n: r["holds"] for n, r in s["verdicts"].items()} == {
        f"{v}_{r}": True for r in ("nt", "at") for v in ("trends_agree", "adv_not_below_noise",
                                                         "beats_unrelated_control", "trends_agree_detrended")
    } | {"trends_agree": True}
    series = {(d["estimator"], d["quantity"], d["probe"]): d for d in s["evidence"]["at"]["series"]}
    assert series[("binning", "I_TY", "conv2")]["ccc_clean_adv"] == pytest.approx(1.0)  # a level shift only
    for name in ("verdicts.png", "trend_agreement_kde_upper.png", "trend_agreement_binning.png", "info_plane_kde_upper.png",
                 "trajectories_I_XT_binning.png"):
        assert name in s["figures"] and (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "trends_agree" in proc.stdout
    rc, err = _main(capsys, "finding1_mi_trends.py", "--from-run", tmp_path / "nowhere", "--out", tmp_path / "x")
    assert rc == 2 and "error: --from-run" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # refused before the run directory is written
    old = tmp_path / "old"  # a summary of the layout before "run" (NT/AT at the top level)
    old.mkdir()
    (old / "summary.json").write_text(json.dumps({k: v for k, v in _summary(grow, grow).items() if k != "run"}))
    rc, err = _main(capsys, "finding1_mi_trends.py", "--from-run", old, "--out", tmp_path / "y")
    assert rc == 2 and "lacks ['run']" in err


# ----------------------------------------------------------------------------- finding 3


@pytest.fixture(scope="module")
def f3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("f3") / "run"
    proc = _script("finding3_texture_shape.py", "--preset", "smoke", "--dataset", "mnist", "--out", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


def test_finding3_smoke_end_to_end(f3_run):
    out, stdout = f3_run
    s = _check_layout(out)
    res = s["results"]
    assert set(s["verdicts"]) == {"at_prefers_shape", "nt_prefers_texture", "shape_texture_interaction",
                                  "retention_information_at_shape", "retention_information_nt_texture",
                                  "retention_information_interaction", "adv_other_class_texture_nt_vs_at",
                                  "adv_other_class_texture_vs_noise", "adv_other_class_texture"}
    # the smoke networks stay near chance: every verdict is untestable, never a pass
    assert all(r["holds"] is None for r in s["verdicts"].values())
    assert all("did not learn" in r["reason"] for r in s["verdicts"].values() if "parts" not in r)
    assert s["evidence"]["warning"].startswith("did not learn")
    assert s["config"]["dataset"] == "mnist" and res["layers"] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    # the models trained here: their training record in the run layout, the robust evaluation beside it
    assert s["source"] == {"trained": True} and set(s["run"]) == {"nt", "at", "robust"}
    assert all(len(s["run"][r]["train_acc"]) == len(s["run"][r]["train_loss"]) == 1 for r in ("nt", "at"))
    assert "final accuracy on" in stdout and "pgd_paper_acc" in s["run"]["robust"]["at"]
    for mode in ("nt", "at"):
        sat, shuf = res["distortion"][mode]["saturation"], res["distortion"][mode]["shuffle"]
        assert sat["levels"] == [2, 8, 16, 64, 1024] and shuf["levels"] == [0, 2, 4, 7]  # 8 does not divide 28
        for block in (sat, shuf):
            for kind in ("clean", "adv"):
                assert all(0 <= a <= 1 for a in block[kind]["accuracy"])
                ixt = np.asarray(block[kind]["I_XT"])
                assert ixt.shape == (len(block["levels"]), 5)
                assert np.all(ixt >= -1e-4) and np.all(ixt <= math.log2(96) + 1e-4)
        # the undistorted references are the same measurement; per-image results are kept
        assert sat["clean"]["accuracy"][0] == shuf["clean"]["accuracy"][0]
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(sat["clean"]["correct_bits"][0]), np.uint8))[:96]
        assert bits.mean() == pytest.approx(sat["clean"]["accuracy"][0])
        c = np.asarray(res["adversarial_confusion"][mode]["counts"])
        assert c.shape == (10, 10) and c.sum() == 96
        assert res["adversarial_confusion"][mode]["accuracy"] == pytest.approx(sat["adv"]["accuracy"][0])
    assert len(res["attribution_images"]) == 3
    for name in ("verdicts.png", "distortion_accuracy.png", "distortion_mi_saturation.png", "distortion_mi_shuffle.png",
                 "adversarial_confusion.png", "attribution_maps.png", "distortion_examples.png"):
        assert name in s["figures"] and (out / name).read_bytes()[:4] == b"\x89PNG"
    assert (out / "models" / "models.json").exists()  # reusable with --from-run
    assert "at_prefers_shape" in stdout and "adv_other_class_texture" in stdout
    # the no-op rule's pixel changes, the last hidden probe's I(T;Y) and the survival predictions
    assert res["pixel_change"]["saturation"][0] == pytest.approx(0, abs=1e-6) and min(res["pixel_change"]["shuffle"][1:]) > 0
    assert res["information_probe"]["probe"] == "fc2" and res["information_probe"]["noise_scale"] == "relative"
    clean = res["distortion"]["at"]["shuffle"]["clean"]
    assert len(clean["I_TY_last_hidden"]) == 4 and len(clean["I_TY_last_hidden_resamples"][0]) == 200
    assert clean["I_TY_last_hidden"][0] == res["distortion"]["at"]["saturation"]["clean"]["I_TY_last_hidden"][0]
    surv = res["error_survival"]
    assert surv["levels"] == [0, 2, 4] and len(surv["nt"]["adv"]) == len(surv["at"]["noise"]) == 3
    assert len(surv["labels"]) == 2 * 96 and s["evidence"]["data_note"] is None  # PNG-free IDX MNIST
    assert s["evidence"]["noop_rule"] == {"delta_px": 0.05, "delta_acc": 0.02}


@pytest.mark.parametrize("args,msg", [
    (["--dataset", "mnist", "--shuffle", "0", "8"], "does not divide the 28×28 image"),
    (["--dataset", "mnist", "--saturation", "2", "0"], "saturation level p must be"),
    (["--dataset", "mnist", "--saturation", "8", "64"], "must include 2"),
    (["--dataset", "mnist", "--model", "resnet"], "unknown model"),
])
def test_finding3_bad_flags(tmp_path, args, msg, capsys):
    rc, err = _main(capsys, "finding3_texture_shape.py", "--preset", "smoke", "--out", tmp_path / "r", *args)
    assert rc == 2 and msg in err and "Traceback" not in err


# ----------------------------------------------------------------------------- finding 4


def test_finding4_smoke_end_to_end_from_the_finding3_models(f3_run, tmp_path, capsys):
    models_dir, _ = f3_run
    out = tmp_path / "f4"
    proc = _script("finding4_estimator_geometry.py", "--preset", "smoke", "--from-run", models_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    s = _check_layout(out)
    # the loaded models' training record, read from finding 3's summary in the same layout
    assert s["source"] == {"from_run": str(models_dir)}
    assert s["run"] == json.loads((models_dir / "summary.json").read_text())["run"]
    assert list(s["verdicts"]) == ["geometry_explains_trained", "kde_ixt_tracks_spread_trained",
                                   "kde_ity_tracks_separation_trained", "binning_tracks_spread_trained",
                                   "estimators_trace_geometry", "scale_identity", "sweeps_monotone",
                                   "kde_ixt_tracks_spread", "kde_ity_tracks_separation", "binning_tracks_spread"]
    assert s["verdicts"]["scale_identity"]["holds"] is True  # an exact identity of the estimator
    for name in ("geometry_explains_trained", "kde_ixt_tracks_spread_trained", "estimators_trace_geometry"):
        assert s["verdicts"][name]["holds"] is None  # the smoke models did not learn: decided on trained layers only
    assert "did not learn" in s["verdicts"]["binning_tracks_spread_trained"]["reason"]
    assert "did not learn" in s["evidence"]["warning"]
    layers = s["results"]["layers_measured"]
    assert sum(lay["source"] == "controlled" for lay in layers) == 16
    assert sum(lay["source"] == "trained" for lay in layers) == 20  # 5 probes × NT/AT × clean/adv
    for lay in layers:  # binning never exceeds log2 of the occupied bins
        assert lay["mi"]["binning"]["I_XT"] <= lay["geometry"]["log2_occupied_bins"] + 1e-6
        assert lay["mi"]["kde_upper"]["I_XT"] >= lay["mi"]["kde_lower"]["I_XT"] - 1e-4
    rho = s["verdicts"]["binning_tracks_spread"]["effect"]
    assert rho is not None and -1 <= rho <= 1
    for name in ("geometry_scatter.png", "geometry_sweeps.png", "verdicts.png"):
        assert name in s["figures"] and (out / name).read_bytes()[:4] == b"\x89PNG"
    rc, err = _main(capsys, "finding4_estimator_geometry.py", "--preset", "smoke", "--from-run", tmp_path / "none",
                    "--out", tmp_path / "y")
    assert rc == 2 and "error:" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- --seeds for findings 3 and 4


def test_seeds_for_per_pair_findings_run_each_seed_and_aggregate(tmp_path, capsys):
    """--seeds 3 on a finding without native seeds: one run per seed, records combined over seeds."""
    from jaxmi import cli
    from jaxmi import verdicts as V
    from jaxmi.findings.runner import Finding, Measured

    calls = []

    def measure(config, opts, workdir, *, log, show_progress):
        calls.append((config.seed, config.seeds, workdir.name, dataclasses.asdict(opts)))
        robust = {r: {"samples": 8, "eps": 0.3, "pgd_paper_steps": 7, "apgd_steps": 5, "clean_acc": 0.5,
                      "pgd_paper_acc": 0.1 * (config.seed - 9), "robust_acc": 0.1, "flags": {"zero_gradients": False}}
                  for r in ("nt", "at")}
        return Measured({"seed": config.seed}, {"effect": 0.3 + 0.01 * (config.seed - 10)}, source={"trained": True},
                        run={"robust": robust})

    def decide(summary, opts):
        e = summary["results"]["effect"]
        boots = (e + np.random.default_rng(summary["config"]["seed"]).normal(0, 0.01, 200)).tolist()
        a = V.record([e], [boots], unit="u", rule="a above 0")
        b = V.untestable("saturated", unit="u", rule="b", seeds=1)
        return {"a": a, "b": b, "ab": V.all_of({"a": a, "b": b}, rule="both")}, {}

    def figures(summary, workdir, artifacts):
        (workdir / "f.png").write_bytes(b"")
        return [workdir / "f.png"]

    fake = Finding(name="fake", title="0: fake", measure=measure, decide=decide, table=lambda s: "table",
                   figures=figures, options=finding3.Options)
    out = tmp_path / "run"
    rc = cli.main(fake, ["--preset", "smoke", "--seeds", "3", "--seed", "10", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert [(c[0], c[1], c[2]) for c in calls] == [(10, 1, "seed10"), (11, 1, "seed11"), (12, 1, "seed12")]
    s = json.loads((out / "summary.json").read_text())
    a = s["verdicts"]["a"]
    assert a["seeds"] == 3 and a["per_seed"] == pytest.approx([0.3, 0.31, 0.32])
    want = V.interval([0.3, 0.31, 0.32], [np.asarray(b) for b in a["resamples"]])
    assert a["effect"] == pytest.approx(0.31) and a["ci95"] == pytest.approx(want[1]) and a["holds"] is True
    assert s["verdicts"]["b"]["holds"] is None and s["verdicts"]["ab"]["holds"] is None
    assert s["verdicts"]["ab"]["weakest"] == "b"
    assert [x["verdicts"]["a"]["effect"] for x in s["results"]["seeds"]] == pytest.approx([0.3, 0.31, 0.32])
    assert s["figures"][:4] == ["seed10/f.png", "seed10/verdicts.png", "seed11/f.png", "seed11/verdicts.png"]
    assert s["figures"][-1] == "verdicts.png"
    # the one layout, with the seeds' robust evaluations combined
    assert list(s) == list(SUMMARY_KEYS) and s["source"] == {"trained": True}
    assert s["run"]["robust"]["nt"]["pgd_paper_acc"] == pytest.approx(0.2)
    assert [r["pgd_paper_acc"] for r in s["run"]["robust"]["at"]["per_seed"]] == pytest.approx([0.1, 0.2, 0.3])
    assert set(json.loads((out / "timing.json").read_text())) == {"runtime_seconds", "run"}
    assert "per seed (effect)" in capsys.readouterr().out
    # rerun on the same --out after an interruption in seed 11: seeds 10 and 12 are reused
    (out / "seed11" / "summary.json").unlink()
    calls.clear()
    rc = cli.main(fake, ["--preset", "smoke", "--seeds", "3", "--seed", "10", "--out", str(out), "--no-progress"])
    assert rc == 0 and [c[0] for c in calls] == [11] and "reusing" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["verdicts"]["a"]["ci95"] == pytest.approx(a["ci95"])
    calls.clear()
    rc = cli.main(fake, ["--preset", "smoke", "--seeds", "3", "--seed", "10", "--out", str(out), "--no-progress",
                         "--overwrite"])
    assert rc == 0 and [c[0] for c in calls] == [10, 11, 12]
    # --from-run with --seeds K loads seed k of that run in the k-th run
    calls.clear()
    rc = cli.main(fake, ["--preset", "smoke", "--seeds", "2", "--out", str(tmp_path / "r2"), "--from-run", "R"])
    assert rc == 0 and [(c[3]["from_run"], c[3]["from_seed"]) for c in calls] == [("R", 0), ("R", 1)]
    rc = cli.main(fake, ["--preset", "smoke", "--seeds", "2", "--out", str(tmp_path / "r3"), "--from-run", "R",
                         "--from-seed", "1"])
    assert rc == 2 and "drop --from-seed" in capsys.readouterr().err
