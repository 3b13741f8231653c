"""Your own model through the whole pipeline, with a small BatchNorm CNN defined in the tests
(own_model_fixture.BNCNN, none of jaxmi's; probes: a submodule output, values it sows, the
logits layer), given as the spec ``own_model_fixture:bn_cnn``: trained NT and AT through
train_and_measure (MI per epoch, checkpoints, resume, load_trained, probes recomputed by hand
from the trained weights) and through finding 2's command line (the same run, so the same
numbers). The plain CNN of the fixture is tested through the adapter in test_probes.py."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import own_model_fixture as fx
from jaxmi import cli, estimators, models, probes
from jaxmi.config import make_config
from jaxmi.data import load_dataset, to_float
from jaxmi.findings import finding2
from jaxmi.plan import mi_indices
from jaxmi.run import load_trained, train_and_measure

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BN_SPEC = "own_model_fixture:bn_cnn"
TINY = dict(epochs=1, train_examples=256, batch_size=32, samples=64, eval_samples=64, eval_batch_size=64,
            estimators=("kde_upper",), attack_steps=2, sweep=False)


@pytest.fixture(autouse=True)
def _fixture_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    sys.path.insert(0, str(HERE))  # module scope: before the autouse fixture
    workdir = tmp_path_factory.mktemp("own") / "run"
    config = make_config("smoke", model=BN_SPEC, **TINY)
    out = train_and_measure(config, log=lambda m: None, show_progress=False, workdir=workdir).to_dict()
    return config, workdir, out


def _check_mi(record, layers, n):
    """Every estimator, input kind and quantity: one finite value per probe per measurement, in [0, log2 n]."""
    for regime in ("nt", "at"):
        for est, by_inputs in record[regime]["mi"].items():
            for inputs in ("clean", "adv"):
                for q in ("I_XT", "I_TY"):
                    values = np.asarray(by_inputs[inputs][q], float)
                    assert values.shape == (len(record["epochs_measured"]), len(layers)), (regime, est, inputs, q)
                    assert np.all(np.isfinite(values)) and np.all(values >= -1e-5), (regime, est, inputs, q)
                    assert np.all(values <= math.log2(n) + 1e-5), (regime, est, inputs, q)


def test_train_and_measure_trains_a_batchnorm_model_nt_and_at_with_mi_per_probe(bn_run):
    config, _, out = bn_run
    assert out["layers"] == list(fx.BN_PROBES) and out["epochs_measured"] == [0, 1]
    assert set(out["nt"]["mi"]) == {"kde_upper"}
    _check_mi(out, fx.BN_PROBES, config.mi.samples)
    # it trained: one epoch on 256 images takes NT well above chance (deterministic given the seed)
    assert out["nt"]["test_clean_acc"][-1] > 0.3 > out["nt"]["test_clean_acc"][0]
    assert out["nt"]["train_loss"][-1] < out["nt"]["train_loss"][0]
    assert out["at"]["train_loss"][-1] < out["at"]["train_loss"][0]
    # NT and AT start from the same weights and part afterwards
    assert out["nt"]["mi"]["kde_upper"]["clean"]["I_XT"][0] == out["at"]["mi"]["kde_upper"]["clean"]["I_XT"][0]
    assert out["nt"]["mi"]["kde_upper"]["clean"]["I_XT"][1] != out["at"]["mi"]["kde_upper"]["clean"]["I_XT"][1]


def test_load_trained_rebuilds_the_model_and_its_probes_match_a_manual_computation(bn_run):
    config, workdir, out = bn_run
    cfg, module, trained = load_trained(workdir)
    assert cfg == config and isinstance(module, probes.ProbedModel) and module.probe_names == fx.BN_PROBES
    test = load_dataset("mnist", "test")
    idx = mi_indices(config, len(test))
    x, y = to_float(jnp.asarray(test.images[idx])), test.labels[idx]
    params, stats = trained["nt"]
    logits, got, _ = models.apply_model(module, params, stats, x)
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731

    def conv_same(a, k):  # 3×3 SAME, stride 1, no bias
        ap = np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)))
        h, w = a.shape[1:3]
        return sum(np.einsum("nhwc,co->nhwo", ap[:, i:i + h, j:j + w], k[i, j]) for i in range(3) for j in range(3))

    def bn_relu(a, block):  # BatchNorm on the trained running statistics, then ReLU
        p, st = params[block]["bn"], stats[block]["bn"]
        return np.maximum((a - f64(st["mean"])) / np.sqrt(f64(st["var"]) + 1e-5) * f64(p["scale"]) + f64(p["bias"]), 0)

    n = len(idx)
    conv1 = conv_same(f64(x), f64(params["block1"]["conv"]["kernel"]))
    np.testing.assert_allclose(got["block1/conv"], conv1.reshape(n, -1), rtol=1e-4, atol=1e-5)
    assert not np.allclose(stats["block1"]["bn"]["var"], 1.0)  # the running statistics were trained
    h = bn_relu(conv1, "block1").reshape(n, 14, 2, 14, 2, 4).max(axis=(2, 4))  # 2×2 max pool
    relu2 = bn_relu(conv_same(h, f64(params["block2"]["conv"]["kernel"])), "block2")
    np.testing.assert_allclose(got["block2/relu"], relu2.reshape(n, -1), rtol=1e-4, atol=1e-4)  # sown in block2
    # the run's last measurement is the MI of these probes: KDE of the logits layer on the draw
    head = estimators.estimate_mi(got["head"], y, method="kde_upper", num_classes=10, noise_var=config.mi.noise_var)
    recorded = out["nt"]["mi"]["kde_upper"]["clean"]
    assert 0.1 < head["I_XT"] < 5.9  # neither collapsed nor saturated at log2(64) = 6: a real comparison
    assert head["I_XT"] == pytest.approx(recorded["I_XT"][-1][2], rel=1e-4, abs=1e-4)
    assert head["I_TY"] == pytest.approx(recorded["I_TY"][-1][2], rel=1e-4, abs=1e-4)
    assert float(np.mean(np.argmax(logits, -1) == y)) > 0.3
    # the AT model's weights differ from NT's
    assert not np.allclose(trained["at"][0]["head"]["kernel"], params["head"]["kernel"])


def test_an_interrupted_run_of_the_own_model_resumes_to_the_same_results(bn_run, tmp_path):
    config, workdir, out = bn_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    steps = sorted((p for p in (copy / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    shutil.rmtree(steps[-1])  # as if killed during the last AT epoch
    shutil.rmtree(copy / "models" / "at")
    logs = []
    again = train_and_measure(config, log=logs.append, show_progress=False, workdir=copy).to_dict()
    assert logs[0].startswith("resuming from the checkpoint after AT epoch 0")
    keys = ("layers", "epochs_measured", "nt", "at")
    assert json.dumps({k: again[k] for k in keys}) == json.dumps({k: out[k] for k in keys})


def test_finding2_command_line_runs_the_model_given_as_a_spec(bn_run, tmp_path, monkeypatch):
    config, _, out = bn_run
    monkeypatch.chdir(tmp_path)  # the default --out is relative: runs/finding2_mnist_<model label>
    argv = ["--preset", "smoke", "--model", BN_SPEC, "--no-progress", "--epochs", "1", "--train-examples", "256",
            "--batch-size", "32", "--samples", "64", "--eval-samples", "64", "--eval-batch-size", "64",
            "--estimators", "kde_upper", "--attack-steps", "2", "--no-sweep"]
    assert cli.main(finding2.FINDING, argv) == 0
    run_dir = tmp_path / "runs" / "finding2_mnist_own_model_fixture_bn_cnn"
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["config"]["model"] == BN_SPEC and s["run"]["layers"] == list(fx.BN_PROBES)
    _check_mi(s["run"], fx.BN_PROBES, 64)
    # the same configuration as train_and_measure's run: the same measurements
    assert json.dumps({r: s["run"][r] for r in ("nt", "at")}) == json.dumps({r: out[r] for r in ("nt", "at")})
    assert set(s["verdicts"]) == {"at_harder", "at_less_information", "at_less_information_matched",
                                                    "at_less_information_scale_free"}
    assert {p["probe"] for p in s["evidence"]["at_less_information"]["pairs"]} == set(fx.BN_PROBES)
    assert s["figures"] and all((run_dir / f).is_file() for f in s["figures"])
    cfg, module, _ = load_trained(run_dir)
    assert cfg == config and module.probe_names == fx.BN_PROBES


def test_finding_script_imports_the_model_from_the_working_directory_and_reports_a_bad_factory():
    script = ROOT / "experiments" / "finding2_information_amount.py"
    proc = subprocess.run([sys.executable, str(script), "--model", "own_model_fixture:plain_module"], cwd=HERE,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "error: the factory of model 'own_model_fixture:plain_module' returned a Flax module" in proc.stderr
    assert "without `probe_names`: return (module, probe_names)" in proc.stderr, proc.stderr[-2000:]


def test_load_trained_says_when_the_models_factory_is_gone(bn_run, tmp_path):
    _, workdir, _ = bn_run
    copy = tmp_path / "run"
    shutil.copytree(workdir / "models", copy / "models")
    index = copy / "models" / "models.json"
    meta = json.loads(index.read_text())
    meta["config"]["model"] = "own_model_fixture:renamed_factory"
    index.write_text(json.dumps(meta))
    from jaxmi.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="trained with the model 'own_model_fixture:renamed_factory', which "
                                              "cannot be rebuilt here: .*has no attribute 'renamed_factory'"):
        load_trained(copy)
