"""End to end: the finding-2 script on its smoke preset (real bundled MNIST, a few seconds)."""

import contextlib
import io
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "finding2_information_amount.py"


def _cmd(out):
    # the paper's three estimators and the kNN estimator of I(T;Y) (one run tests both)
    return [sys.executable, str(SCRIPT), "--preset", "smoke", "--estimators", "kde_upper", "kde_lower", "binning",
            "knn", "--out", str(out), "--no-progress"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("f2") / "run"
    proc = subprocess.run(_cmd(out), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """The smoke run SIGKILLed once its AT epoch-0 checkpoint exists, then the same command rerun.

    The kill needs a process of its own; the rerun goes through the same ``main`` in this
    process (the command line as a process, its exit status and printed lines: ``smoke_run``),
    which saves a process start (imports, backend)."""
    out = tmp_path_factory.mktemp("f2kill") / "run"
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    target = out / "checkpoints" / "2"  # steps: NT epochs 0, 1 → 0, 1; AT epochs 0, 1 → 2, 3
    deadline = time.monotonic() + 600
    while not target.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err[-3000:]  # killed partway, not finished
    assert not (out / "summary.json").exists() and not (out / "models" / "at").exists()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = _script_module().main(_cmd(out)[2:])
    assert rc == 0, stdout.getvalue()[-4000:]
    return out, stdout.getvalue()


def test_killed_and_resumed_run_writes_the_same_summary(smoke_run, killed_and_resumed):
    out, _ = smoke_run
    out2, stdout = killed_and_resumed
    assert "resuming from the checkpoint after AT epoch" in stdout
    assert "[NT] epoch" not in stdout  # NT was finished before the kill: not retrained
    assert (out2 / "summary.json").read_bytes() == (out / "summary.json").read_bytes()
    from jaxmi.run import load_trained
    c1, _, v1 = load_trained(out)
    c2, _, v2 = load_trained(out2)
    assert c1 == c2
    for a, b in zip(jax_leaves(v1), jax_leaves(v2)):
        np.testing.assert_array_equal(a, b)
    timing = json.loads((out2 / "timing.json").read_text())["run"]
    assert timing["resumed_from"]["regime"] == "at" and len(timing["nt"]["epoch_seconds"]) == 1


def jax_leaves(tree):
    import jax
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_summary_has_the_documented_keys(smoke_run):
    out, stdout = smoke_run
    from jaxmi.findings.summary import SUMMARY_KEYS

    s = json.loads((out / "summary.json").read_text())
    assert list(s) == list(SUMMARY_KEYS) and s["source"] == {"trained": True} and s["results"] == {}
    run = s["run"]
    for k in ("layers", "epochs_measured", "data", "num_classes", "nt", "at", "saturation", "sweep", "robust"):
        assert k in run
    # wall-clock times live in timing.json, so that summary.json is reproducible
    assert "runtime_seconds" not in s and "epoch_seconds" not in run["nt"]
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing) == {"runtime_seconds", "run"}  # the same keys for every finding
    assert len(timing["run"]["nt"]["epoch_seconds"]) == 1 and timing["runtime_seconds"] > 0
    assert (out / "models" / "nt").is_dir() and (out / "models" / "at").is_dir()
    assert run["layers"] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert run["epochs_measured"] == [0, 1]
    m = len(run["epochs_measured"])
    for mode in ("nt", "at"):
        h = run[mode]
        for k in ("train_acc", "train_loss", "test_clean_acc", "test_adv_acc"):
            assert len(h[k]) == m
            assert all(v is not None and math.isfinite(v) for v in h[k])
        for k in ("train_acc", "test_clean_acc", "test_adv_acc"):
            assert all(0.0 <= v <= 1.0 for v in h[k])
        assert set(h["mi"]) == {"kde_upper", "kde_lower", "binning", "knn"}
        for est, d in h["mi"].items():
            for kind in ("clean", "adv"):
                for q, ceiling in (("I_XT", math.log2(128)), ("I_TY", math.log2(10))):
                    if est == "knn":  # I(T;Y) only (test_knn_end_to_end)
                        continue
                    arr = np.asarray(d[kind][q])
                    assert arr.shape == (m, 5)
                    assert np.all(arr >= -1e-4) and np.all(arr <= ceiling + 1e-4), (est, kind, q, arr)
        # the KDE upper bound is never below the lower bound
        assert np.all(np.asarray(h["mi"]["kde_upper"]["clean"]["I_XT"]) >= np.asarray(h["mi"]["kde_lower"]["clean"]["I_XT"]) - 1e-4)
    assert set(s["verdicts"]) == {"at_harder", "at_less_information", "at_less_information_matched",
                                                    "at_less_information_scale_free"}
    for r in s["verdicts"].values():  # records; the smoke networks barely learn, so untestable is allowed
        assert r["holds"] in (True, False, None) and {"effect", "ci95", "unit", "seeds", "rule"} <= set(r)
        assert (r["holds"] is None) == (r["effect"] is None or r["ci95"] is None)
    assert set(s["evidence"]) >= set(s["verdicts"])
    # bootstrap resamples of every estimate and the noise control are kept
    boot = np.asarray(run["nt"]["mi_boot"]["kde_upper"]["clean"]["I_XT"])
    assert boot.shape == (m, 5, s["config"]["bootstrap"])
    assert np.asarray(run["at"]["mi"]["binning"]["noise"]["I_XT"]).shape == (m, 5)
    # the unrelated-input control: one fixed draw of uniform-noise images, the same for NT and AT
    unrelated = run["nt"]["mi"]["kde_upper"]["unrelated"]["I_XT"]
    assert np.asarray(unrelated).shape == (m, 5) and unrelated[0] == run["at"]["mi"]["kde_upper"]["unrelated"]["I_XT"][0]
    assert unrelated[0] != run["nt"]["mi"]["kde_upper"]["clean"]["I_XT"][0]
    # NT and AT start from the same weights: identical epoch-0 clean accuracy and MI
    assert run["nt"]["test_clean_acc"][0] == run["at"]["test_clean_acc"][0]
    assert run["nt"]["mi"]["kde_upper"]["clean"]["I_XT"][0] == run["at"]["mi"]["kde_upper"]["clean"]["I_XT"][0]
    assert "at_harder" in stdout and "at_less_information" in stdout
    # the scale-free sweep of the last measurement: every probe, both bounds, every resample
    for mode in ("nt", "at"):
        sf = run[mode]["scale_free"]
        assert sf["epoch"] == 1 and len(sf["spread"]) == 5 and all(v > 0 for v in sf["spread"])
        g = len(sf["noise_var"])
        for est in ("kde_upper", "kde_lower"):
            assert np.asarray(sf[est]["I_XT"]).shape == (5, g)
            assert np.asarray(sf[est]["I_XT_resamples"]).shape == (5, g, s["config"]["bootstrap"])
        assert len(sf["temperature"]["tau"]) == len(sf["temperature"]["nll"])  # fc3 is the logits
    ev = s["evidence"]["at_less_information_scale_free"]
    assert {"band", "shift_alignment", "logit_temperature"} <= set(ev)


def test_knn_end_to_end(smoke_run):
    """``--estimators … knn``: kNN I(T;Y) of every input kind with its resamples, I(X;T) null,
    no saturation report, evidence rows per probe, and its I(T;Y) figures only."""
    out, _ = smoke_run
    s = json.loads((out / "summary.json").read_text())
    run = s["run"]
    m = len(run["epochs_measured"])
    for r in ("nt", "at"):
        knn = run[r]["mi"]["knn"]
        for inputs in ("clean", "adv", "noise", "unrelated"):
            assert knn[inputs]["I_XT"] == [[None] * 5] * m
            ity = np.asarray(knn[inputs]["I_TY"], float)
            assert ity.shape == (m, 5) and np.isfinite(ity).all()
            assert np.all(ity <= run["saturation"]["I_TY_ceiling"] + 0.5)  # small-sample bias aside
        assert np.asarray(run[r]["mi_boot"]["knn"]["clean"]["I_TY"]).shape == (m, 5, s["config"]["bootstrap"])
        assert run[r]["diagnostics"]["knn"]["clean"]["saturated"] == [[None] * 5] * m
    assert "knn" not in run["saturation"]["by_estimator"] and "knn" not in run["sweep"]["estimators"]
    ev = s["evidence"]["at_less_information"]
    assert [p["probe"] for p in ev["knn_I_TY"]["probes"]] == run["layers"]
    assert {p["estimator"] for p in ev["pairs"]} == {"kde_upper", "kde_lower", "binning"}
    assert "trajectories_I_TY_knn.png" in s["figures"] and "info_plane_knn.png" not in s["figures"]


def test_figures_are_written(smoke_run):
    out, _ = smoke_run
    s = json.loads((out / "summary.json").read_text())
    names = set(s["figures"])
    for required in ("info_plane_kde_upper.png", "info_plane_kde_lower.png", "info_plane_binning.png",
                     "training_curves.png", "final_IXT.png", "shift_alignment.png", "verdicts.png"):
        assert required in names
    for n in names:
        data = (out / n).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_refuses_a_different_run_in_out(smoke_run, capsys):
    # In-process, like the bad flags below (the smoke-run fixtures run the CLI as a process)
    out, _ = smoke_run
    summary = (out / "summary.json").read_bytes()
    rc = _script_module().main(["--preset", "smoke", "--seed", "3", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc not in (0, None)
    assert "holds a different run" in err and "--overwrite" in err and "Traceback" not in err
    assert (out / "summary.json").read_bytes() == summary  # the run found there is untouched


def _script_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("finding2_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("args,msg", [
    (["--dataset", "nosuchdata"], "nosuchdata"),
    (["--model", "resnet"], "unknown model"),
    (["--estimators", "kde_middle"], "unknown estimator"),
    (["--preset", "huge"], "unknown preset"),
    (["--eps", "-0.1"], "eps must be"),
    (["--eps", "3"], "eps must be in [0, 1]"),
    (["--train-examples", "100000000"], "train_examples=100000000 exceeds the 60000 training images of mnist"),
    (["--step-size", "0"], "step size must be > 0"),
    (["--attack-steps", "-2"], "steps must be"),
    (["--samples", "1"], "samples must be"),
    (["--devices", "0"], "devices must be a positive integer"),
    (["--epochs", "-1"], "epochs must be a non-negative"),
    (["--out", "SCRIPT_AS_PARENT"], "cannot write to --out"),
    (["--compile-cache", "SCRIPT_AS_PARENT"], "cannot be used as the compilation cache"),
])
def test_bad_flags_fail_with_a_clear_message(tmp_path, args, msg, capsys):
    # In-process (the CLI itself is exercised end to end by the smoke-run fixtures above).
    args = [str(SCRIPT / "r") if a == "SCRIPT_AS_PARENT" else a for a in args]  # a path under a file
    try:
        rc = _script_module().main(["--preset", "smoke", "--out", str(tmp_path / "r"), "--no-progress", *args])
    except SystemExit as e:  # argparse errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc not in (0, None)
    assert msg in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before the run folder is written
