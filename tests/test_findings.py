"""Findings 1, 3 and 4: verdict logic against independent references, and the scripts end to end.

The end-to-end runs share one smoke training: the finding-3 smoke run (bundled MNIST, 1 epoch on
512 images) saves its NT and AT models, which the finding-4 run loads with --from-run. Finding 1's
script is run on a synthetic finding-2 summary (--from-run), its training path being
jaxmi.experiment.train_and_measure, which test_finding2 runs end to end.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from jaxmi.findings import finding1, finding3

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments"
LAYERS = ["conv1", "conv2", "fc1"]


def _script(name, *args, timeout=600):
    return subprocess.run([sys.executable, str(EXP / name), "--no-progress", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


# ----------------------------------------------------------------------------- finding 1


def _summary(clean_fn, adv_fn, m=8):
    """A finding-2-style summary whose curves are given functions of (epoch, probe)."""
    e = np.arange(m, dtype=float)

    def block(fn):
        return [[float(fn(t, j)) for j in range(len(LAYERS))] for t in e]

    mi = {est: {"clean": {"I_XT": block(clean_fn), "I_TY": block(lambda t, j: 0.5 * clean_fn(t, j))},
                "adv": {"I_XT": block(adv_fn), "I_TY": block(lambda t, j: 0.5 * adv_fn(t, j))}}
          for est in ("kde_upper", "binning")}
    hist = {k: [0.5] * m for k in ("train_acc", "train_loss", "test_clean_acc", "test_adv_acc", "test_clean_loss",
                                   "test_adv_loss")}
    return {"config": {"dataset": "mnist", "model": "lenet", "samples": 100}, "layers": LAYERS,
            "epochs_measured": list(range(m)), "nt": {**hist, "mi": mi}, "at": {**hist, "mi": json.loads(json.dumps(mi))}}


def test_series_agreement_matches_scipy():
    rng = np.random.default_rng(0)
    c = rng.normal(size=12).cumsum()
    a = c + rng.normal(scale=0.7, size=12)
    a[3] = a[4]  # a tie for the rank correlation
    s = finding1.series_agreement(c, a)
    assert s["pearson"] == pytest.approx(stats.pearsonr(c, a)[0], abs=1e-12)
    assert s["spearman"] == pytest.approx(stats.spearmanr(c, a)[0], abs=1e-12)
    assert s["mean_abs_gap_bits"] == pytest.approx(np.mean(np.abs(c - a)))
    dc, da = np.diff(c), np.diff(a)
    still = (np.abs(dc) < finding1.FLAT_BITS) & (np.abs(da) < finding1.FLAT_BITS)
    assert s["direction_agreement"] == pytest.approx(np.mean(still | (np.sign(dc) == np.sign(da))))
    flat = finding1.series_agreement([12.28, 12.29, 12.28], [12.27, 12.28, 12.28])
    assert flat["flat"] and flat["pearson"] is not None  # computed, but the series counts as flat


def test_decide_agrees_for_shifted_curves_and_not_for_reversed_ones():
    grow = lambda t, j: 2 + j + math.log1p(t)  # noqa: E731
    v, e = finding1.decide(_summary(grow, lambda t, j: grow(t, j) - 0.4))
    assert v == {"trends_agree_nt": True, "trends_agree_at": True, "trends_agree": True}
    assert e["trends_agree_nt"]["median_pearson"] == pytest.approx(1.0)
    assert e["trends_agree_nt"]["mean_abs_gap_bits"] == pytest.approx(0.4 * 0.75, rel=1e-6)  # median over I_XT/I_TY
    v, e = finding1.decide(_summary(grow, lambda t, j: grow(7 - t, j)))
    assert not v["trends_agree"] and e["trends_agree_at"]["median_spearman"] == pytest.approx(-1.0)
    s = e["series"]["nt"]["kde_upper"]["I_XT"]["fc1"]
    assert not s["agrees"] and s["spearman"] == pytest.approx(-1.0)


def test_finding1_script_from_a_run_directory(tmp_path):
    src = tmp_path / "f2"
    src.mkdir()
    grow = lambda t, j: 1 + j + 0.3 * t  # noqa: E731
    (src / "summary.json").write_text(json.dumps(_summary(grow, lambda t, j: grow(t, j) + 0.1)))
    out = tmp_path / "f1"
    proc = _script("finding1_mi_trends.py", "--from-run", src, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["verdicts"] == {"trends_agree_nt": True, "trends_agree_at": True, "trends_agree": True}
    assert set(s["evidence"]) >= set(s["verdicts"])
    assert s["evidence"]["series"]["at"]["binning"]["I_TY"]["conv2"]["pearson"] == pytest.approx(1.0)
    for name in ("trend_agreement_kde_upper.png", "trend_agreement_binning.png", "info_plane_kde_upper.png",
                 "trajectories_I_XT_binning.png"):
        assert name in s["figures"] and (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "trends_agree" in proc.stdout
    bad = _script("finding1_mi_trends.py", "--from-run", tmp_path / "nowhere", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "error: --from-run" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- finding 3


def test_finding3_decide_on_known_accuracies():
    def block(levels, clean, adv):
        n = len(levels)
        return {"levels": levels, "clean": {"accuracy": clean, "loss": [0] * n, "I_XT": [[0]] * n, "I_TY": [[0]] * n},
                "adv": {"accuracy": adv, "loss": [0] * n, "I_XT": [[0]] * n, "I_TY": [[0]] * n}}

    sat = [2.0, 8.0, 64.0, 1024.0]
    summary = {"num_classes": 10, "adversarial_confusion": {}, "distortion": {
        "nt": {"saturation": block(sat, [0.9, 0.8, 0.45, 0.3], [0.0] * 4),
               "shuffle": block([0, 2, 4], [0.9, 0.72, 0.54], [0.0] * 3)},
        "at": {"saturation": block(sat, [0.6, 0.58, 0.42, 0.36], [0.3] * 4),
               "shuffle": block([0, 2, 4], [0.6, 0.3, 0.18], [0.3] * 3)}}}
    v, e = finding3.decide(summary, strong_saturation=64)
    assert v == {"at_prefers_shape": True, "nt_prefers_texture": True}
    s = e["at_prefers_shape"]["clean"]
    assert s["nt"]["mean_retention"] == pytest.approx((0.45 / 0.9 + 0.3 / 0.9) / 2)
    assert s["at"]["mean_retention"] == pytest.approx((0.42 / 0.6 + 0.36 / 0.6) / 2)
    assert s["at"]["levels_used"] == [64.0, 1024.0]
    assert s["nt"]["mean_retention_above_chance"] == pytest.approx(((0.45 - 0.1) / 0.8 + (0.3 - 0.1) / 0.8) / 2)
    t = e["nt_prefers_texture"]
    assert t["margin"] == pytest.approx((0.8 + 0.6) / 2 - (0.5 + 0.3) / 2)
    summary["distortion"]["at"]["saturation"]["clean"]["accuracy"] = [0.6, 0.5, 0.2, 0.1]
    assert not finding3.decide(summary)[0]["at_prefers_shape"]


@pytest.fixture(scope="module")
def f3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("f3") / "run"
    proc = _script("finding3_texture_shape.py", "--preset", "smoke", "--dataset", "mnist", "--out", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


def test_finding3_smoke_end_to_end(f3_run):
    out, stdout = f3_run
    s = json.loads((out / "summary.json").read_text())
    assert set(s["verdicts"]) == {"at_prefers_shape", "nt_prefers_texture"}
    assert all(isinstance(v, bool) for v in s["verdicts"].values())
    assert set(s["evidence"]) >= set(s["verdicts"])
    assert s["config"]["dataset"] == "mnist" and s["layers"] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    for mode in ("nt", "at"):
        sat, shuf = s["distortion"][mode]["saturation"], s["distortion"][mode]["shuffle"]
        assert sat["levels"] == [2, 8, 16, 64, 1024] and shuf["levels"] == [0, 2, 4, 7]  # 8 does not divide 28
        for block in (sat, shuf):
            for kind in ("clean", "adv"):
                assert all(0 <= a <= 1 for a in block[kind]["accuracy"])
                ixt = np.asarray(block[kind]["I_XT"])
                assert ixt.shape == (len(block["levels"]), 5)
                assert np.all(ixt >= -1e-4) and np.all(ixt <= math.log2(96) + 1e-4)
        # the undistorted references are the same measurement
        assert sat["clean"]["accuracy"][0] == shuf["clean"]["accuracy"][0]
        c = np.asarray(s["adversarial_confusion"][mode]["counts"])
        assert c.shape == (10, 10) and c.sum() == 96
        assert s["adversarial_confusion"][mode]["accuracy"] == pytest.approx(sat["adv"]["accuracy"][0])
    assert len(s["attribution_images"]) == 3
    for name in ("distortion_accuracy.png", "distortion_mi_saturation.png", "distortion_mi_shuffle.png",
                 "adversarial_confusion.png", "attribution_maps.png", "distortion_examples.png"):
        assert name in s["figures"] and (out / name).read_bytes()[:4] == b"\x89PNG"
    assert (out / "models" / "models.json").exists()  # reusable with --from-run
    assert "at_prefers_shape" in stdout


@pytest.mark.parametrize("args,msg", [
    (["--dataset", "mnist", "--shuffle", "0", "8"], "does not divide the 28×28 image"),
    (["--dataset", "mnist", "--saturation", "2", "0"], "saturation level p must be"),
    (["--dataset", "mnist", "--saturation", "8", "64"], "must include 2"),
    (["--dataset", "mnist", "--model", "resnet"], "unknown model"),
])
def test_finding3_bad_flags(tmp_path, args, msg):
    proc = _script("finding3_texture_shape.py", "--preset", "smoke", "--out", tmp_path / "r", *args, timeout=300)
    assert proc.returncode == 2 and msg in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- finding 4


def test_finding4_smoke_end_to_end_from_the_finding3_models(f3_run, tmp_path):
    models_dir, _ = f3_run
    out = tmp_path / "f4"
    proc = _script("finding4_estimator_geometry.py", "--preset", "smoke", "--from-run", models_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    s = json.loads((out / "summary.json").read_text())
    assert set(s["verdicts"]) == {"kde_ixt_tracks_spread", "kde_ity_tracks_separation",
                                  "binning_tracks_occupied_bins", "estimators_trace_geometry"}
    assert all(isinstance(v, bool) for v in s["verdicts"].values())
    layers = s["layers_measured"]
    assert sum(lay["source"] == "controlled" for lay in layers) == 16
    assert sum(lay["source"] == "trained" for lay in layers) == 20  # 5 probes × NT/AT × clean/adv
    for lay in layers:  # binning never exceeds log2 of the occupied bins
        assert lay["mi"]["binning"]["I_XT"] <= lay["geometry"]["log2_occupied_bins"] + 1e-6
        assert lay["mi"]["kde_upper"]["I_XT"] >= lay["mi"]["kde_lower"]["I_XT"] - 1e-4
    rho = s["evidence"]["binning_tracks_occupied_bins"]["binning_I_XT_vs_log2_occupied_bins"]["spearman"]["all"]
    assert rho is not None and -1 <= rho <= 1
    for name in ("geometry_scatter.png", "geometry_sweeps.png"):
        assert name in s["figures"] and (out / name).read_bytes()[:4] == b"\x89PNG"
    bad = _script("finding4_estimator_geometry.py", "--preset", "smoke", "--from-run", tmp_path / "none",
                  "--out", tmp_path / "y")
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- --seeds for findings 3 and 4


def test_seeds_for_per_pair_findings_run_each_seed_and_aggregate(tmp_path, capsys):
    """--seeds 3 on a finding without native seeds: one run per seed, majority verdicts, mean ± sd."""
    from jaxmi import cli
    from jaxmi.findings.common import Finding

    calls = []

    def fake_run(config, out, *, options, overwrite, show_progress, log=print):
        calls.append((config.seed, config.seeds, Path(out).name, dict(options)))
        Path(out).mkdir(parents=True)
        acc = 0.5 + 0.1 * config.seed
        return {"finding": "fake", "verdicts": {"a": config.seed != 11, "b": config.seed == 12},
                "evidence": {"a": {"acc": acc, "label": "x", "nested": {"gap": -acc}}, "b": {"flag": True}},
                "figures": ["f.png"]}

    fake = Finding(name="fake", title="fake", run=fake_run, presets={}, options=finding3.Options)
    out = tmp_path / "run"
    rc = cli.main(fake, ["--preset", "smoke", "--seeds", "3", "--seed", "10", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert [(c[0], c[1], c[2]) for c in calls] == [(10, 1, "seed10"), (11, 1, "seed11"), (12, 1, "seed12")]
    s = json.loads((out / "summary.json").read_text())
    assert s["verdicts"] == {"a": True, "b": False}  # 2 of 3, 1 of 3
    a = s["evidence"]["across_seeds"]["a"]
    assert a["holds_in"] == 2 and a["per_seed"] == [True, False, True]
    accs = [1.5, 1.6, 1.7]
    assert a["numbers"]["acc"]["values"] == pytest.approx(accs)
    assert a["numbers"]["acc"]["mean"] == pytest.approx(np.mean(accs))
    assert a["numbers"]["acc"]["sd"] == pytest.approx(np.std(accs, ddof=1))
    assert a["numbers"]["nested"]["gap"]["mean"] == pytest.approx(-np.mean(accs))
    assert "label" not in a["numbers"] and s["evidence"]["across_seeds"]["b"]["numbers"] == {}
    assert s["figures"] == ["seed10/f.png", "seed11/f.png", "seed12/f.png"]
    assert "across 3 seeds" in capsys.readouterr().out
    # --from-run with --seeds is refused with a message naming the fix
    rc = cli.main(fake, ["--preset", "smoke", "--seeds", "2", "--out", str(tmp_path / "r2"), "--from-run", "R"])
    assert rc == 2 and "drop --from-run" in capsys.readouterr().err
