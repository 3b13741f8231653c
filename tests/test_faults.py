"""The run folder survives faults: a crash while metrics.jsonl was appended (a cut last line) and a
corrupt newest checkpoint are each injected into a copy of a finished tiny run, which then
resumes to exactly the results of the uninterrupted run; what cannot be recovered is an error
of a few lines that names the file and the fix."""

import json
import shutil

import orbax.checkpoint as ocp
import pytest

from jaxmi import checkpoint, results
from jaxmi.config import make_config, normalize_identity
from jaxmi.live import METRICS_FILE, LiveLog, read_metrics
from jaxmi.run import train_and_measure

NOISE = ("Traceback", "Exception ignored", "TensorStore", "tensorstore_spec", "Event loop is closed")


def tiny(**kw):
    base = {"model": "mlp", "epochs": 2, "train_examples": 128, "batch_size": 32, "samples": 32,
            "eval_samples": 32, "eval_batch_size": 32, "estimators": ("kde_upper",), "attack_steps": 2,
            "robust_samples": 0}
    return make_config("smoke", **{**base, **kw})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted run: NT and AT, epochs 0..2, a checkpoint after each (the two newest kept)."""
    workdir = tmp_path_factory.mktemp("faults") / "run"
    config = tiny()
    results.prepare_run_dir(workdir, config.identity())
    out = train_and_measure(config, log=lambda m: None, show_progress=False, workdir=workdir).to_dict()
    return config, workdir, out


def _results(out):
    return {k: out[k] for k in ("layers", "epochs_measured", "nt", "at", "data", "robust") if k in out}


def _steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.is_dir() and p.name.isdigit())


def _resume(config, workdir):
    logs = []
    out = train_and_measure(config, log=logs.append, show_progress=False, workdir=workdir).to_dict()
    return out, logs


def _keys(lines):
    return [(r["regime"], r["epoch"], r["seed"]) for r in lines]


def _measured(lines):
    return [(r["metrics"], r.get("mi")) for r in lines]


def test_cut_last_line_of_metrics_is_dropped_and_the_run_resumes(finished, tmp_path, capfd):
    config, workdir, out = finished
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    # Killed while appending the line of AT epoch 2: that epoch's models and checkpoint were not
    # written yet (they come after the line), and the line is cut in the middle.
    shutil.rmtree(copy / "checkpoints" / str(max(_steps(copy))))
    shutil.rmtree(copy / "models" / "at")
    text = (copy / METRICS_FILE).read_text()
    n = text.count("\n")
    (copy / METRICS_FILE).write_text(text[:len(text) - len(text.splitlines()[-1]) // 2 - 1])
    capfd.readouterr()
    resumed, logs = _resume(config, copy)
    assert logs[0].startswith("resuming from the checkpoint after AT epoch 1")
    warnings = [m for m in logs if m.startswith("warning:")]
    assert len(warnings) == 1 and "\n" not in warnings[0], logs
    assert warnings[0].startswith(f"warning: dropped the last line of {copy / METRICS_FILE} (line {n}: ")
    assert "cut short by a crash while it was written" in warnings[0]
    assert [m.split(":")[0] for m in logs[2:]] == ["[AT] epoch 2"]
    assert json.dumps(_results(resumed)) == json.dumps(_results(out))  # metrics and MI exactly
    lines, original = read_metrics(copy), read_metrics(workdir)
    assert _keys(lines) == _keys(original) and _measured(lines) == _measured(original)
    assert not any(s in capfd.readouterr().err for s in NOISE)


def _corrupt(step_dir, how):
    """Damages the largest array file of a checkpoint's train state (as a full disk or a partial
    copy would)."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    if how == "truncate":
        biggest.write_bytes(biggest.read_bytes()[:1000])
    else:
        biggest.unlink()


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_corrupt_newest_checkpoint_is_skipped_and_the_run_resumes(finished, tmp_path, capfd, how):
    config, workdir, out = finished
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    newest, previous = _steps(copy)[-1], _steps(copy)[-2]  # after AT epoch 2 and AT epoch 1
    _corrupt(copy / "checkpoints" / str(newest), how)
    capfd.readouterr()
    resumed, logs = _resume(config, copy)
    ckpts = copy / "checkpoints"
    assert logs[0] == (f"warning: skipped and removed the corrupt checkpoint {ckpts / str(newest)} (its train state: "
                       + logs[0].split("(its train state: ", 1)[1])
    assert logs[0].endswith(f"); resuming from checkpoint {previous}, the newest intact one.")
    assert "\n" not in logs[0] and len(logs[0]) - len(str(ckpts)) < 300, logs[0]
    assert logs[1].startswith("resuming from the checkpoint after AT epoch 1")
    assert [m.split(":")[0] for m in logs[2:]] == ["[AT] epoch 2"]
    assert json.dumps(_results(resumed)) == json.dumps(_results(out))  # metrics and MI exactly
    assert _steps(copy) == [previous, newest]  # the corrupt checkpoint was replaced by a new one
    lines, original = read_metrics(copy), read_metrics(workdir)
    assert _keys(lines) == _keys(original) and _measured(lines) == _measured(original)
    assert not any(s in capfd.readouterr().err for s in NOISE)
    again, logs = _resume(config, copy)  # the repaired folder resumes without a word of warning
    assert not any(m.startswith("warning") for m in logs)
    assert json.dumps(_results(again)) == json.dumps(_results(out))


def test_no_intact_checkpoint_is_a_short_error(finished, tmp_path, capfd):
    config, workdir, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    for step in _steps(copy):
        _corrupt(copy / "checkpoints" / str(step), "truncate")
    capfd.readouterr()
    with pytest.raises(checkpoint.CheckpointError) as err:
        _resume(config, copy)
    message = str(err.value)
    newest = copy / "checkpoints" / str(_steps(copy)[-1])
    assert message.startswith(f"no checkpoint in {copy / 'checkpoints'} is intact: the newest, {newest}, is "
                              "unreadable (its train state: ")
    assert "and so are the older ones (4)" in message and "--overwrite" in message
    assert message.count("\n") <= 2 and len(message) < 600
    assert _steps(copy) == [4, 5]  # nothing was removed
    assert not any(s in capfd.readouterr().err for s in NOISE)


def test_unreadable_checkpoint_record_is_skipped(finished, tmp_path):
    """The JSON record of the newest checkpoint cut short: skipped like a damaged array."""
    config, workdir, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    meta_file = next((copy / "checkpoints" / "5" / "meta").glob("metadata"))
    meta_file.write_text(meta_file.read_text()[:300])
    identity = json.loads((workdir / "checkpoints" / "5" / "meta" / "metadata").read_text())["config"]
    state = ocp.CheckpointManager((workdir / "checkpoints").absolute()).restore(
        4, args=ocp.args.Composite(state=ocp.args.StandardRestore())).state  # the right structure
    logs = []
    ckpt = checkpoint.RunCheckpointer(copy, identity, regimes=("nt", "at"), epochs=config.optim.epochs,
                                      normalize=normalize_identity, log=logs.append)
    restored = ckpt.restore_latest(state)
    ckpt.close()
    assert (restored.regime, restored.epoch) == ("at", 1)
    assert len(logs) == 1 and "corrupt checkpoint" in logs[0] and "(its record: JSONDecodeError: " in logs[0]


def _metrics_log(directory, epochs):
    """A live log of ``epochs`` NT records; its metrics.jsonl path."""
    live = LiveLog(directory, ("nt", "at"), tensorboard=False)
    for epoch in range(epochs):
        live.write("nt", epoch, 0, {"train_acc": epoch / 10}, None)
    live.close()
    return directory / METRICS_FILE


def test_unreadable_line_before_the_last_is_an_error_naming_line_and_fix(tmp_path):
    path = _metrics_log(tmp_path, 4)
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:25]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        LiveLog(tmp_path, ("nt", "at"), resume=("nt", 3), tensorboard=False)
    message = str(err.value)
    assert message.startswith(f"{path}, line 2 of 4, is not a JSON record (")
    assert "Delete or repair that line and rerun the same command" in message and message.count("\n") <= 2
    assert path.read_text().splitlines()[1] == lines[1]  # nothing was rewritten
    with pytest.raises(ValueError, match="line 2 of 4"):
        read_metrics(tmp_path)


def test_cut_last_line_outside_a_run_warns(tmp_path):
    path = _metrics_log(tmp_path, 3)
    path.write_text(path.read_text()[:-20])
    with pytest.warns(UserWarning, match=r"dropped the last line of .*metrics.jsonl \(line 3: .*cut short"):
        assert [r["epoch"] for r in read_metrics(tmp_path)] == [0, 1]
    logs = []
    LiveLog(tmp_path, ("nt", "at"), resume=("nt", 2), tensorboard=False, log=logs.append).close()
    assert len(logs) == 1 and logs[0].startswith("warning: dropped the last line of")
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0, 1]  # the cut line is gone from the file
    assert path.read_text().endswith("}\n")


def test_corrupt_trained_model_is_a_short_error(finished, tmp_path, capfd):
    from jaxmi.run import load_trained

    _, workdir, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    files = [p for p in (copy / "models" / "at").rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:1000])
    capfd.readouterr()
    with pytest.raises(checkpoint.CheckpointError) as err:
        load_trained(copy)
    message = str(err.value)
    assert message.startswith(f"the AT model in {copy / 'models' / 'at'} is unreadable (")
    assert message.endswith("rerun the experiment with --overwrite.") and "\n" not in message
    assert not any(s in capfd.readouterr().err for s in NOISE)


# ---- an interrupted --overwrite, and a refused start

def _old_run(out):
    """A finished run's files: identity A, its outputs, a figure, state and a per-seed directory."""
    results.prepare_run_dir(out, {"run": "A"})
    for name in ("summary.json", "timing.json", "metrics.jsonl", "final_IXT.png"):
        (out / name).write_text("old")
    for d in ("checkpoints/3", "models/nt", "tensorboard", "seed1"):
        (out / d).mkdir(parents=True)
    (out / "seed1" / "config.json").write_text("{}")
    (out / "notes.txt").write_text("the user's own file")


def test_overwrite_clears_every_output_of_the_old_run(tmp_path):
    out = tmp_path / "run"
    _old_run(out)
    results.prepare_run_dir(out, {"run": "B"}, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]
    assert json.loads((out / "config.json").read_text()) == {"run": "B"}


def test_interrupted_overwrite_never_leaves_two_runs_side_by_side(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _old_run(out)
    cls = type(results.as_path(out))
    calls = {"n": 0}
    real_unlink = cls.unlink

    def unlink_then_die(self, *a, **kw):  # the process dies while clearing, after the identity went
        real_unlink(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cls, "unlink", unlink_then_die)
    with pytest.raises(KeyboardInterrupt):
        results.prepare_run_dir(out, {"run": "B"}, overwrite=True)
    monkeypatch.setattr(cls, "unlink", real_unlink)
    assert (out / "summary.json").exists() or (out / "timing.json").exists()  # really cut short
    assert not (out / "config.json").exists()  # the old identity is gone first: no old run is ever resumed as B
    # the next start (with or without --overwrite) finishes the clearing before it writes its identity
    results.prepare_run_dir(out, {"run": "B"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]


def test_a_start_refused_for_bad_data_leaves_no_run_behind(tmp_path, capsys):
    from jaxmi import cli
    from jaxmi.findings import finding2

    out = tmp_path / "r"
    rc = cli.main(finding2.FINDING, ["--preset", "smoke", "--data-dir", str(tmp_path / "missing"), "--out", str(out),
                                     "--no-progress"])
    assert rc == 2 and "missing" in capsys.readouterr().err
    assert not out.exists()  # no config.json that would refuse the corrected command as "a different run"
    results.prepare_run_dir(out, {"run": "corrected"})  # the corrected command starts
