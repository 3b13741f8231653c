"""train_and_measure in-process on a tiny config: determinism, no recompiles after the first
epoch, checkpoints and trained models in the run directory, resume (also with other execution
settings), and bad input."""

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmi import checkpoint, models, results
from jaxmi.config import make_config, normalize_identity
from jaxmi.live import read_metrics
from jaxmi.attacks import pgd as jaxmi_pgd
from test_live import read_events as _read_events
from jaxmi.data import load_dataset, to_float
from jaxmi.plan import pgd_config, run_mesh
from jaxmi import timelimit
from jaxmi.history import REGIMES
from jaxmi.run import TimeLimitReached, load_trained, train_and_measure

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles = {"n": 0}


def _on_event(name, *_args, **_kw):
    if name == COMPILE_EVENT:
        _compiles["n"] += 1


jax.monitoring.register_event_duration_secs_listener(_on_event)


def tiny(**kw):
    base = dict(model="mlp", epochs=2, train_examples=128, batch_size=32, samples=32, eval_samples=32,
                eval_batch_size=32, estimators=("kde_upper",), attack_steps=2, robust_samples=0)
    base.update(kw)
    return make_config("smoke", **base)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """Seed 0 with checkpoints; records the number of XLA compilations at every epoch's log line."""
    workdir = tmp_path_factory.mktemp("exp") / "run"
    config = tiny(epochs=3, robust_samples=24, apgd_steps=5)
    results.prepare_run_dir(workdir, config.identity())
    marks = []

    def log(msg):
        marks.append((msg.split(":")[0], _compiles["n"]))

    out = train_and_measure(config, log=log, show_progress=False, workdir=workdir).to_dict()
    return config, workdir, out, dict(marks)


def _run(config, **kw):
    return train_and_measure(config, log=lambda m: None, show_progress=False, **kw).to_dict()


def _results(out):
    return {k: out[k] for k in ("layers", "epochs_measured", "nt", "at", "data", "robust") if k in out}


def test_no_recompilation_after_the_first_epoch(first_run):
    *_, marks = first_run
    # epoch 1 compiles the epoch functions; epochs 2 and 3 (train + evaluator + estimators) reuse them
    for mode in ("NT", "AT"):
        assert marks[f"[{mode}] epoch 3"] == marks[f"[{mode}] epoch 2"], marks
        assert marks[f"[{mode}] epoch 2"] == marks[f"[{mode}] epoch 1"], marks


@pytest.fixture(scope="module")
def seed1_run():
    """first_run's configuration with seed 1 (no run directory)."""
    return _run(tiny(epochs=3, seed=1, robust_samples=24, apgd_steps=5))


def test_different_seed_different_results(first_run, seed1_run):
    # same seed, same results: test_a_run_stopped_twice_by_the_time_limit_equals_the_uninterrupted_run
    config, _, out, _ = first_run
    other = seed1_run
    assert other["nt"]["train_loss"] != out["nt"]["train_loss"]
    assert other["at"]["mi"]["kde_upper"]["clean"]["I_XT"] != out["at"]["mi"]["kde_upper"]["clean"]["I_XT"]
    assert "epoch_seconds" not in out["nt"] and len(out["timing"]["nt"]["epoch_seconds"]) == 3


def test_load_trained_returns_the_final_models(first_run):
    config, workdir, out, _ = first_run
    cfg, module, variables = load_trained(workdir)
    assert cfg == config and set(variables) == {"nt", "at"}
    # The restored NT/AT models reproduce the last measured clean test accuracy exactly.
    test = load_dataset("mnist", "test")
    k_draw = jax.random.split(jax.random.key(config.seed), 3)[2]
    idx = np.asarray(jax.random.permutation(k_draw, len(test)))[:config.data.eval_samples]
    x, y = to_float(jnp.asarray(test.images[idx])), test.labels[idx]
    for mode in ("nt", "at"):
        params, stats = variables[mode]
        logits = models.apply_model(module, params, stats, x)[0]
        acc = float(np.mean(np.asarray(jnp.argmax(logits, -1)) == y))
        assert acc == out[mode]["test_clean_acc"][-1]
    assert not np.allclose(jax.tree.leaves(variables["nt"][0])[0], jax.tree.leaves(variables["at"][0])[0])


def test_load_trained_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        load_trained(tmp_path / "nothing")
    with pytest.raises(checkpoint.CheckpointError, match="holds no trained models.*Rerun"):
        load_trained(tmp_path)


def test_resume_after_an_interruption_equals_the_uninterrupted_run(first_run, tmp_path):
    config, workdir, out, _ = first_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    # As if killed during the last AT epoch: drop the newest checkpoint and the AT model.
    shutil.rmtree(_latest_step_dir(copy))
    shutil.rmtree(copy / "models" / "at")
    logs = []
    resumed = train_and_measure(config, log=logs.append, show_progress=False, workdir=copy).to_dict()
    assert logs[0].startswith("resuming from the checkpoint after AT epoch 2")
    redone = [m.split(":")[0] for m in logs[1:] if not m.startswith("warning")]
    assert redone == ["[AT] epoch 3", "[AT] robust accuracy on 24 test images at eps 0.1765"]  # then saved
    assert json.dumps(_results(resumed)) == json.dumps(_results(out))
    assert resumed["timing"]["resumed_from"] == {"regime": "at", "epoch": 2}
    # killed after the last AT epoch's line was written: the resumed run rewrites it once
    assert _live(copy) == _live(workdir)
    _, _, variables = load_trained(copy)
    _, _, original = load_trained(workdir)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(original)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_run_stopped_twice_by_the_time_limit_equals_the_uninterrupted_run(first_run, tmp_path, monkeypatch):
    """A fake clock on which every measured epoch takes 60 s; a 3.9-minute limit (234 s) stops the
    run after NT epoch 2 (the next would end at 240 s) and, in the second call, after AT epoch 1
    (AT's epoch 0 + 1 were estimated from NT's: 120 s from 60 s; AT epoch 2 would end at 240 s).
    The third call's last epoch adds NT's robust evaluation (real seconds, from the run's record)
    to its 120 s. Each stop leaves the folder as that epoch's end left it, and the third call
    finishes the same run, bit for bit: results, metrics.jsonl, models."""
    config, workdir, out, _ = first_run
    now = [0.0]
    monkeypatch.setattr(timelimit, "clock", lambda: now[0])
    logs = []

    def log(msg):
        logs.append(msg)
        if "] epoch " in msg:
            now[0] += 60.0

    run_dir = tmp_path / "run"
    results.prepare_run_dir(run_dir, config.identity())
    stops = []
    for _ in range(4):
        logs.clear()
        try:
            res = train_and_measure(config, log=log, show_progress=False, workdir=run_dir, time_limit=3.9).to_dict()
            break
        except TimeLimitReached as e:
            stops.append((e.regime, e.epoch, e.epochs, str(e)))
            live = [(r["regime"], r["epoch"]) for r in read_metrics(run_dir)]
            assert live[-1] == (e.regime, e.epoch) and len(live) == len(set(live))  # every epoch once, up to k
            assert int(_latest_step_dir(run_dir).name) == REGIMES.index(e.regime) * (config.optim.epochs + 1) + e.epoch
            assert logs[-1].startswith(f"[{e.regime.upper()}] epoch {e.epoch}:")  # stopped at the boundary
    assert [s[:3] for s in stops] == [("nt", 2, 3), ("at", 1, 3)], stops
    assert stops[0][3].startswith("stopped after NT epoch 2 of 3; rerun the same command to continue")
    assert res["timing"]["resumed_from"] == {"regime": "at", "epoch": 1}
    assert json.dumps(_results(res)) == json.dumps(_results(out))
    assert _live(run_dir) == _live(workdir)
    for (_, a), (_, b) in zip(*(sorted(load_trained(d)[2].items()) for d in (run_dir, workdir))):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _latest_step_dir(workdir):
    steps = [p for p in (workdir / "checkpoints").iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps, key=lambda p: int(p.name))


def test_corrupt_checkpoints_are_an_error_not_a_restart(first_run, tmp_path):
    # A corrupt newest checkpoint alone is skipped (tests/test_faults.py); with every one corrupt
    # the run stops rather than start over.
    config, workdir, *_ = first_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    for step_dir in (copy / "checkpoints").iterdir():
        for f in (step_dir / "state").rglob("*"):
            if f.is_file() and "metadata" not in f.name:
                f.write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match=r"(?s)no checkpoint in .* is intact.*--overwrite"):
        _run(config, workdir=copy)


def test_checkpoint_of_another_config_or_format_is_refused(first_run, tmp_path):
    config, workdir, *_ = first_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    meta_file = next((_latest_step_dir(copy) / "meta").glob("*"))
    meta = json.loads(meta_file.read_text())
    meta["config"]["seed"] = 7
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(checkpoint.CheckpointError, match=r"different configuration \(differs in \['seed'\]\)"):
        _run(config, workdir=copy)
    meta["config"]["seed"] = config.seed
    meta["format"] = 999
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(checkpoint.CheckpointError, match="format 999"):
        _run(config, workdir=copy)


# ---------------------------------------------------------------- bad input (library calls)

@pytest.mark.parametrize("overrides,msg", [
    ({"dataset": "nosuchdata"}, "nosuchdata"),
    ({"model": "resnet"}, "unknown model"),
    ({"estimators": ("kde_middle",)}, "unknown estimator"),
    ({"eps": -0.1}, "eps must be"),
    ({"step_size": 0.0}, "step size must be > 0"),
    ({"attack_steps": -1}, "steps must be"),
    ({"samples": 1}, "samples must be"),
    ({"epochs": -1}, "epochs must be a non-negative"),
    ({"batch_size": 0}, "batch_size must be a positive"),
    ({"devices": 0}, "devices must be a positive"),
    ({"train_examples": 0}, "train_examples must be"),
    ({"eval_samples": 10, "samples": 20}, "eval_samples"),
    ({"loop": "fast"}, "unknown loop strategy"),
])
def test_bad_config_values(overrides, msg):
    with pytest.raises(ValueError, match=msg):
        if overrides.get("dataset") == "nosuchdata":
            _run(tiny(**overrides))
        else:
            tiny(**overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'; choose one of"):
        make_config("huge")


def test_more_devices_than_exist_or_indivisible_batch():
    n = len(jax.local_devices())
    with pytest.raises(ValueError, match=f"only {n} local"):
        run_mesh(tiny(devices=n + 1))
    if n > 1:
        with pytest.raises(ValueError, match="not divisible"):
            run_mesh(tiny(batch_size=n + 1, devices=n))


def test_run_dir_refusals(tmp_path):
    cfg = tiny().identity()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(results.RunDirError, match="exists and is not a directory"):
        results.prepare_run_dir(blocker, cfg)
    with pytest.raises(results.RunDirError, match="cannot write to --out .*choose a writable directory"):
        results.prepare_run_dir(blocker / "sub", cfg)
    run = results.prepare_run_dir(tmp_path / "run", cfg)
    (run / "checkpoints").mkdir()
    (run / "models").mkdir()
    other = tiny(seed=5).identity()
    with pytest.raises(results.RunDirError, match=r"holds a different run \(config differs in \['seed'\]\).*--overwrite"):
        results.prepare_run_dir(run, other)
    assert results.prepare_run_dir(run, cfg) == run  # the same run: accepted (resumed)
    assert (run / "checkpoints").is_dir()
    results.prepare_run_dir(run, other, overwrite=True)  # starts over: old checkpoints and models go
    assert not (run / "checkpoints").exists() and not (run / "models").exists()
    assert json.loads((run / "config.json").read_text())["seed"] == 5
    # a config.json written before a field existed matches when the field holds its default
    old = {k: v for k, v in other.items() if k != "weight_decay"}
    results.write_json(run / "config.json", old)
    results.prepare_run_dir(run, other, normalize=normalize_identity)
    with pytest.raises(results.RunDirError, match="weight_decay"):
        results.write_json(run / "config.json", old)
        results.prepare_run_dir(run, {**other, "weight_decay": 0.01}, normalize=normalize_identity)
    # execution settings are not part of a run's identity: a config.json of an older version that
    # stored them matches a run on another device count, loop or evaluation batch
    results.write_json(run / "config.json", {**old, "devices": 8, "loop": "scan", "eval_batch_size": 7})
    results.prepare_run_dir(run, tiny(seed=5, devices=1, loop="unrolled").identity(), normalize=normalize_identity)


@pytest.mark.parametrize("overrides,msg", [
    ({"seeds": 0}, "seeds must be a positive"),
    ({"bootstrap": 1}, "bootstrap must be 0"),
    ({"precision": "float16"}, "unknown precision"),
])
def test_bad_seed_bootstrap_precision_values(overrides, msg):
    with pytest.raises(ValueError, match=msg):
        tiny(**overrides)


@pytest.fixture(scope="module")
def two_seed_run(tmp_path_factory):
    """Two seeds trained and measured in one program on one device, vmapped over the seed axis
    (the accelerator default; the CPU default lax.map is covered in test_training.py)."""
    workdir = tmp_path_factory.mktemp("seeds") / "run"
    config = tiny(epochs=3, seeds=2, seed_loop="vmap", devices=1)
    results.prepare_run_dir(workdir, config.identity())
    return config, workdir, _run(config, workdir=workdir)


def _close(a, b, atol):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), atol=atol, rtol=0)


def test_seeds_in_one_program_match_separate_single_seed_runs(first_run, two_seed_run, seed1_run):
    _, _, single0, _ = first_run
    _, _, out = two_seed_run
    single1 = seed1_run  # with a robust evaluation after training, which the compared values precede
    assert [s["seed"] for s in out["seeds"]] == [0, 1]
    # Training matches the single runs of seeds 0 and 1; test metrics and MI are measured on
    # seed 0's draw of test images for every seed, so they match the single run of seed 0.
    for s, ref in zip(out["seeds"], (single0, single1)):
        for mode in ("nt", "at"):
            for k in ("train_loss", "train_acc"):
                _close(s[mode][k], ref[mode][k], 2e-4)
    s = out["seeds"][0]
    for mode in ("nt", "at"):
        for k in ("test_clean_acc", "test_adv_acc", "test_adv_loss"):
            _close(s[mode][k], single0[mode][k], 2e-4)
        for kind in ("clean", "adv"):
            _close(s[mode]["mi"]["kde_upper"][kind]["I_XT"], single0[mode]["mi"]["kde_upper"][kind]["I_XT"], 2e-3)
    # the top-level histories are the seed means, with sample standard deviations beside them
    for mode in ("nt", "at"):
        per = np.array([s[mode]["train_loss"] for s in out["seeds"]])
        _close(out[mode]["train_loss"], per.mean(0), 1e-7)
        _close(out[mode]["train_loss_sd"], per.std(0, ddof=1), 1e-7)
        mi = np.array([s[mode]["mi"]["kde_upper"]["adv"]["I_TY"] for s in out["seeds"]])
        _close(out[mode]["mi"]["kde_upper"]["adv"]["I_TY"], mi.mean(0), 1e-7)
        _close(out[mode]["mi_sd"]["kde_upper"]["adv"]["I_TY"], mi.std(0, ddof=1), 1e-7)
    assert out["nt"]["train_loss_sd"][-1] > 0  # the seeds really differ


def test_seed_runs_save_every_model_and_resume(two_seed_run, tmp_path):
    config, workdir, out = two_seed_run
    meta = json.loads((workdir / "models" / "models.json").read_text())
    assert {"nt", "at", "nt_seed1", "at_seed1"} <= set(meta["models"])
    _, _, variables = load_trained(workdir)  # seed 0's models, usable by findings 3 and 4
    params0 = variables["nt"][0]
    assert jax.tree.leaves(params0)[0].ndim in (1, 2)  # unstacked
    # as if killed during the last AT epoch: the resumed run equals the uninterrupted one
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    shutil.rmtree(_latest_step_dir(copy))
    shutil.rmtree(copy / "models" / "at")
    shutil.rmtree(copy / "models" / "at_seed1")
    again = _run(config, workdir=copy)
    assert again["timing"]["resumed_from"] == {"regime": "at", "epoch": 2}
    assert json.dumps(_results(again)) == json.dumps(_results(out))
    assert json.dumps(again["seeds"]) == json.dumps(out["seeds"])


@pytest.fixture(scope="module")
def budget_run():
    """Three estimators with bootstrap resamples, while the free memory the KDE's block size is
    chosen from changes at every query; records the XLA compilations at every epoch's log line."""
    from jaxmi import backend

    budgets = iter(np.tile([1 << 22, 1 << 34, 1 << 25], 1000))
    marks = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backend, "available_memory_bytes", lambda device=None: int(next(budgets)))
        out = train_and_measure(tiny(epochs=3, bootstrap=8, estimators=("kde_upper", "kde_lower", "binning"),
                                     samples=64, eval_samples=64),
                                log=lambda msg: marks.append((msg.split(":")[0], _compiles["n"])),
                                show_progress=False).to_dict()
    return out, dict(marks)


def test_bootstrap_standard_errors_in_the_history(budget_run):
    out, _ = budget_run
    se = out["nt"]["mi_se"]
    for est in ("kde_upper", "kde_lower", "binning"):
        arr = np.asarray(se[est]["clean"]["I_XT"])
        assert arr.shape == np.asarray(out["nt"]["mi"][est]["clean"]["I_XT"]).shape == (4, len(out["layers"]))
        assert np.all(np.isfinite(arr)) and np.all(arr >= 0) and arr.max() > 0


def test_verdicts_across_seeds_and_bands_in_the_figures(two_seed_run, tmp_path):
    """With two seeds every verdict record combines both seeds' effects (jaxmi.verdicts), and
    the figures draw the across-seed bands."""
    from jaxmi import plots, verdicts
    from jaxmi.findings import finding1, finding2

    config, _, out = two_seed_run
    summary = {"config": config.flat(), "run": {k: out.get(k) for k in ("layers", "epochs_measured", "num_classes",
                                                                        "data", "saturation", "nt", "at", "seeds",
                                                                        "sweep")}}
    v, e = finding2.decide(summary)
    gaps = [s["nt"]["train_acc"][-1] - s["at"]["train_acc"][-1] for s in out["seeds"]]
    if v["at_harder"]["effect"] is not None:  # the tiny networks may not learn: then untestable
        assert v["at_harder"]["seeds"] == 2 and v["at_harder"]["per_seed"] == pytest.approx(gaps)
        assert v["at_harder"]["effect"] == pytest.approx(np.mean(gaps))
        assert v["at_harder"]["ci95"] == pytest.approx(verdicts.interval(gaps)[1])
    else:
        assert "did not learn" in v["at_harder"]["reason"]
    single = {"run": {k: v for k, v in summary["run"].items() if k != "seeds"}}
    assert finding2.decide(single)[0]["at_harder"]["seeds"] == 1
    f1, _ = finding1.decide(summary)
    assert set(f1) == {f"{n}_{r}" for n in ("trends_agree", "adv_not_below_noise", "beats_unrelated_control",
                                            "trends_agree_detrended") for r in ("nt", "at")} | {"trends_agree"}
    assert all(r["holds"] is None for r in f1.values())  # one epoch: too few changes, never a pass
    summary["verdicts"], summary["evidence"] = v, e
    table = finding2.verdict_table(summary)
    assert "at_less_information_matched" in table
    # ΔI over the σ² sweep, from both seeds' own sweeps
    assert "across the sweep" in table and e["at_less_information"]["across_sweep"]["kde_upper"]["seeds"] == 2
    written = plots.plot_all(summary, tmp_path) + plots.plot_verdicts(summary, tmp_path)
    assert {p.name for p in written} >= {"training_curves.png", "verdicts.png", "nt_minus_at_sweep.png"}
    assert all(os.path.getsize(p) > 0 for p in written)
    # the band source: _mi(se=True) falls back to the across-seed standard deviation
    band = plots.mi_values(summary, "nt", "kde_upper", "clean", "I_XT", band=True)
    np.testing.assert_array_equal(band, np.asarray(out["nt"]["mi_sd"]["kde_upper"]["clean"]["I_XT"]))


def test_trained_models_refuses_several_seeds(tmp_path):
    from jaxmi.findings import common

    with pytest.raises(ValueError, match="seeds=2: train_pair gives one NT/AT pair"):
        common.trained_models(tiny(seeds=2), None, log=lambda m: None, show_progress=False)


def test_resume_with_other_execution_settings(first_run, tmp_path):
    """devices, loops and the evaluation batch are not part of a run's identity: a stopped run
    continues under other execution settings, with the same results up to float rounding."""
    config, workdir, out, _ = first_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    shutil.rmtree(_latest_step_dir(copy))
    shutil.rmtree(copy / "models" / "at")
    other = config.replace(devices=1, eval_batch_size=16)
    assert other != config and other.identity() == config.identity()
    results.prepare_run_dir(copy, other.identity(), normalize=normalize_identity)
    resumed = _run(other, workdir=copy)
    assert resumed["timing"]["resumed_from"] == {"regime": "at", "epoch": 2}
    assert resumed["at"]["train_loss"] == out["at"]["train_loss"]  # training is untouched
    _close(resumed["at"]["test_adv_loss"], out["at"]["test_adv_loss"], 1e-5)
    _close(resumed["at"]["mi"]["kde_upper"]["adv"]["I_XT"], out["at"]["mi"]["kde_upper"]["adv"]["I_XT"], 1e-4)


def test_diagnostics_sweep_and_saturation_warning(first_run):
    config, _, out, _ = first_run
    m, p = len(out["epochs_measured"]), len(out["layers"])
    for regime in ("nt", "at"):
        for inputs in ("clean", "adv"):
            d = out[regime]["diagnostics"]["kde_upper"][inputs]
            assert np.asarray(d["saturated"]).shape == (m, p) and np.asarray(d["saturated"]).dtype == bool
            gap = np.asarray(d["I_XT_gap"])
            np.testing.assert_allclose(gap, math.log2(config.mi.samples)
                                       - np.asarray(out[regime]["mi"]["kde_upper"][inputs]["I_XT"]), atol=1e-6)
            np.testing.assert_array_equal(d["saturated"], gap < 0.01)
            assert np.all(np.asarray(d["nn_sq_dist_over_width"]) >= 0)
    rep = out["saturation"]
    assert rep["I_XT_ceiling"] == pytest.approx(math.log2(config.mi.samples))
    assert rep["final_estimates"] == 2 * 2 * p  # regimes × inputs × probes, one estimator
    assert (rep["warning"] is not None) == (2 * rep["final_saturated"] > rep["final_estimates"])
    # the sweep: at the first and last measurement, every probe over the σ² grid; at σ² = 0.1 it
    # equals the run's own estimate
    sw = out["sweep"]
    assert sw["epochs"] == [0, config.optim.epochs] and sw["estimators"] == ["kde_upper"]
    k = sw["noise_var"].index(0.1)
    for regime in ("nt", "at"):
        values = np.asarray(sw[regime]["clean"]["kde_upper"]["I_XT"])
        assert values.shape == (2, p, len(sw["noise_var"]))
        mi = np.asarray(out[regime]["mi"]["kde_upper"]["clean"]["I_XT"])
        np.testing.assert_allclose(values[:, :, k], mi[[0, -1]], atol=1e-4)
        assert np.all(np.diff(values, axis=-1) <= 1e-4)  # I(X;T) falls (weakly) as σ² grows
    assert set(sw["separation"]["kde_upper"]["clean"]) == set(out["layers"])


def test_no_sweep_and_relative_noise_scale():
    out = _run(tiny(epochs=1, sweep=False, noise_scale="relative", noise_var=1.0))
    assert "sweep" not in out
    assert "scale_free" not in out["nt"] and "scale_free" not in out["at"]  # it runs with the sweep
    d = out["nt"]["diagnostics"]["kde_upper"]["clean"]
    # σ² is one spread (mean squared distance to the centroid; its meaning is tested against
    # NumPy in test_mi_trust and test_scale_free): the run measures with it at every probe
    ratio = np.asarray(d["nn_sq_dist_over_width"])
    assert ratio.shape == (2, len(out["layers"])) and np.all(np.isfinite(ratio)) and np.all(ratio > 0)


def test_kde_block_size_is_fixed_for_a_run(budget_run):
    """The free memory changes between epochs: the estimators must not recompile (their block
    size is fixed when the run starts)."""
    _, marks = budget_run
    for regime in ("NT", "AT"):
        assert marks[f"[{regime}] epoch 3"] == marks[f"[{regime}] epoch 2"] == marks[f"[{regime}] epoch 1"], marks


def test_outputs_go_through_epath_local_and_object_store_writes(tmp_path):
    """--out accepts any epath location (gs://...); local folders use the same code, and the
    object-store write (temporary object, then a rename) works on a local epath too."""
    from etils import epath

    from jaxmi.plots import save_figure
    from matplotlib.figure import Figure

    run = results.prepare_run_dir(str(tmp_path / "run"), {"seed": 0})
    assert isinstance(run, epath.Path) and (run / "config.json").exists()
    results.write_json(run / "a.json", {"x": [1, 2]})
    assert results.read_json(run / "a.json") == {"x": [1, 2]}
    results.atomic_write_bytes(run / "b.txt", b"hello", object_store=True)  # the gs:// branch, on a local epath
    assert (run / "b.txt").read_bytes() == b"hello" and not list(run.glob(".b.txt.*"))
    path = save_figure(Figure(), run / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert not results.is_local("gs://bucket/run") and results.is_local(str(tmp_path))
    assert str(results.as_path("gs://bucket/run") / "summary.json") == "gs://bucket/run/summary.json"


def _live(workdir):
    """metrics.jsonl without the wall-clock fields."""
    drop = {"time", "epoch_seconds", "measure_seconds"}
    return [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(workdir)]


def test_live_metrics_match_the_summary(first_run):
    """(and survive a resume: test_resume_after_an_interruption_equals_the_uninterrupted_run)"""
    config, workdir, out, _ = first_run
    lines = _live(workdir)
    assert [(r["regime"], r["epoch"]) for r in lines] == [(m, e) for m in ("nt", "at") for e in range(4)]
    for r in lines:
        h = out[r["regime"]]
        assert r["metrics"]["test_adv_acc"] == h["test_adv_acc"][r["epoch"]]
        assert r["metrics"]["train_loss"] == h["train_loss"][r["epoch"]]
        i_xt = r["mi"]["kde_upper"]["adv"]["I_XT"]
        assert [i_xt[p] for p in out["layers"]] == h["mi"]["kde_upper"]["adv"]["I_XT"][r["epoch"]]
    tags = {tag for tag, *_ in _read_events(workdir / "tensorboard" / "at")}
    assert {"metrics/test_clean_acc", f"I_XT/clean/kde_upper/{out['layers'][0]}"} <= tags


def test_final_robust_evaluation_matches_an_independent_attack(first_run):
    """The final models' report: the paper's PGD accuracy recomputed here on the same images, the
    ensemble's worst case no better than any single attack, and the resume test above covers
    that a resumed run reproduces it."""
    config, workdir, out, _ = first_run
    _, module, variables = load_trained(workdir)
    test = load_dataset("mnist", "test")
    k_draw = jax.random.split(jax.random.key(config.seed), 3)[2]
    idx = np.asarray(jax.random.permutation(k_draw, len(test)))[:24]  # the MI draw comes first
    x, y = to_float(jnp.asarray(test.images[idx])), jnp.asarray(test.labels[idx])
    attack = pgd_config(config)
    for regime in ("nt", "at"):
        r = out["robust"][regime]
        assert r["samples"] == 24 and r["apgd_steps"] == 5 and r["eps"] == pytest.approx(attack.eps)
        params, stats = variables[regime]
        logits = lambda z: models.apply_model(module, params, stats, z)[0]  # noqa: E731
        x_adv = jaxmi_pgd(logits, x, y, eps=attack.eps, step_size=attack.step_size, steps=attack.steps)
        assert r["pgd_paper_acc"] == pytest.approx(float(np.mean(np.argmax(logits(x_adv), -1) == y)), abs=1e-6)
        assert r["clean_acc"] == pytest.approx(float(np.mean(np.argmax(logits(x), -1) == y)), abs=1e-6)
        assert r["robust_acc"] <= min(r["attack_acc"].values()) + 1e-9 <= r["clean_acc"] + 1e-9
        assert r["cumulative_acc"]["apgd-t"] == pytest.approx(r["robust_acc"])
    assert set(out["robust"]) == {"nt", "at"} and "robust_seconds" in out["timing"]["at"]


def test_robust_summary_over_seeds():
    from jaxmi.history import robust_summary
    from jaxmi.findings.summary import robust_table

    def report(acc, masked):
        return {"samples": 10, "eps": 0.3, "pgd_paper_steps": 7, "apgd_steps": 100, "clean_acc": 0.9,
                "pgd_paper_acc": acc + 0.1, "robust_acc": acc, "flags": {"zero_gradients": masked}}

    one = report(0.5, False)
    assert robust_summary([one]) is one
    s = robust_summary([report(0.4, False), report(0.6, True)])
    assert s["robust_acc"] == pytest.approx(0.5) and s["robust_acc_sd"] == pytest.approx(0.1414213562, rel=1e-6)
    assert s["flags"] == {"zero_gradients": True} and len(s["per_seed"]) == 2
    text = robust_table({"run": {"robust": {"nt": s}}})
    assert "PGD-7" in text and "0.5000 ± 0.1414" in text and "gradient masking suspected: zero_gradients" in text
