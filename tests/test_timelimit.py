"""The time limit's decisions on a fake clock (no runs; the runs are in test_run.py and test_finding2.py)."""

import os

import pytest

from jaxmi import timelimit
from jaxmi.timelimit import Budget, TimeLimitReached

COSTS = {"nt": 1.0, "at": 4.0}  # AT with 3 PGD steps


@pytest.fixture
def now(monkeypatch):
    t = [1000.0]
    monkeypatch.setattr(timelimit, "clock", lambda: t[0])
    return t


def test_the_first_epoch_always_runs_then_the_measured_epoch_decides(now):
    b = Budget(1.0, t0=now[0])  # 60 s
    now[0] += 500.0  # already past the limit (a slow start): one epoch still runs, so every rerun makes progress
    assert b.estimate("nt", COSTS, start=True, final=False) is None
    assert not b.should_stop(None)
    b.note_epoch("nt", 1.0, train=10.0, rest=5.0)
    assert b.should_stop(b.estimate("nt", COSTS, start=False, final=False))
    b2 = Budget(1.0, t0=now[0])
    b2.note_epoch("nt", 1.0, train=10.0, rest=5.0)  # 15 s per epoch, at t = 0
    now[0] += 30.0
    assert b2.estimate("nt", COSTS, start=False, final=False) == 15.0
    assert not b2.should_stop(15.0)  # 30 + 15 = 45 ≤ 60
    now[0] += 15.0
    assert not b2.should_stop(15.0)  # 60 ≤ 60: ends exactly at the limit
    now[0] += 0.5
    assert b2.should_stop(15.0)  # 60.5 > 60


def test_at_is_estimated_from_nt_by_the_cost_of_a_step_then_from_its_own_epochs(now):
    b = Budget(10.0, t0=now[0])
    b.note_start(7.0)
    b.note_epoch("nt", COSTS["nt"], train=10.0, rest=5.0)  # the first epoch: with compilation
    b.note_epoch("nt", COSTS["nt"], train=2.0, rest=5.0)
    assert b.estimate("nt", COSTS, start=False, final=False) == 7.0  # NT: its last epoch
    # AT from scratch: 4 × NT's first training (AT compiles too), NT's measurement, the epoch-0 measurement
    assert b.estimate("at", COSTS, start=True, final=False) == 40.0 + 5.0 + 7.0
    # without a measured epoch 0 (resumed after it), the measurement part of an epoch stands in
    fresh = Budget(10.0, t0=now[0])
    fresh.note_epoch("nt", COSTS["nt"], train=10.0, rest=5.0)
    assert fresh.estimate("at", COSTS, start=True, final=False) == 40.0 + 5.0 + 5.0
    b.note_epoch("at", COSTS["at"], train=50.0, rest=6.0)
    assert b.estimate("at", COSTS, start=False, final=False) == 56.0
    # NT of the next seed (findings 3 and 4), from NT's own last epoch
    assert b.estimate("nt", COSTS, start=True, final=False) == 7.0 + 7.0
    # a regime's last epoch adds the final robust evaluation: one measured here wins over the record
    assert b.estimate("nt", COSTS, start=False, final=True) == 7.0
    b.note_robust(20.0)  # an earlier process's, from the run's timing record
    assert b.estimate("nt", COSTS, start=False, final=True) == 7.0 + 20.0
    b.note_epoch("at", COSTS["at"], train=50.0, rest=6.0, robust=30.0)
    assert b.estimate("nt", COSTS, start=False, final=True) == 7.0 + 30.0
    b.note_robust(20.0)
    assert b.estimate("nt", COSTS, start=False, final=True) == 7.0 + 30.0


def test_the_outer_limit_holds_and_none_is_no_limit(now):
    assert timelimit.current() is None
    with timelimit.time_limit(None) as b:
        assert b is None and timelimit.current() is None
    with timelimit.time_limit(2.0) as outer:
        assert timelimit.current() is outer and outer.t0 == now[0] and outer.minutes == 2.0
        with timelimit.time_limit(100.0) as inner:
            assert inner is outer
        assert timelimit.current() is outer
    assert timelimit.current() is None
    with pytest.raises(RuntimeError):
        with timelimit.time_limit(1.0, t0=5.0) as b:
            assert b.t0 == 5.0
            raise RuntimeError
    assert timelimit.current() is None  # cleared on errors too


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "9", True])
def test_bad_limits_are_refused(bad):
    with pytest.raises(ValueError, match="time_limit must be a number of minutes > 0"):
        Budget(bad, t0=0.0)


def test_the_stop_line_and_exit_status():
    e = TimeLimitReached("nt", 3, 10, 9.0)
    assert str(e).startswith("stopped after NT epoch 3 of 10; rerun the same command to continue")
    assert (e.regime, e.epoch, e.epochs, e.minutes) == ("nt", 3, 10, 9.0)
    assert str(TimeLimitReached("nt", None, 10, 9.0)).startswith("stopped before NT epoch 0 of 10;")
    assert timelimit.EXIT_STATUS == 75 == getattr(os, "EX_TEMPFAIL", 75)


def test_process_start_is_this_process_start():
    """Counted from the start of the process, not from the import (which comes after JAX's)."""
    import subprocess
    import sys
    from pathlib import Path
    path = Path(timelimit.__file__)  # the module alone (stdlib only), not the jaxmi package and JAX
    code = ("import time, importlib.util as u; time.sleep(0.5); "
            f"s = u.spec_from_file_location('tl', {str(path)!r}); m = u.module_from_spec(s); "
            "s.loader.exec_module(m); print(m.clock() - m.process_start())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert 0.5 <= float(out) < 60.0


def _finding_stopped_at(regime, epoch, seen):
    """Finding 2 whose measure records the limit in force and stops as a run would."""
    import dataclasses
    from jaxmi.findings import finding2

    def measure(config, options, workdir, **_):
        seen.append(timelimit.current())
        raise TimeLimitReached(regime, epoch, config.optim.epochs, timelimit.current().minutes)

    return dataclasses.replace(finding2.FINDING, measure=measure)


def test_the_command_line_prints_the_stop_and_exits_75(tmp_path, capsys):
    from jaxmi import cli
    seen = []
    rc = cli.main(_finding_stopped_at("at", 4, seen), ["--preset", "smoke", "--epochs", "6", "--out",
                                                       str(tmp_path / "r"), "--no-progress", "--time-limit", "9"])
    out = capsys.readouterr().out
    assert rc == 75
    assert "stopped after AT epoch 4 of 6; rerun the same command to continue (time limit 9 min)" in out
    budget = seen[0]
    assert budget.minutes == 9.0 and budget.t0 == pytest.approx(timelimit.process_start(), abs=1.0)
    assert timelimit.current() is None  # the limit ends with the command
    seen.clear()  # without --time-limit: no limit
    with pytest.raises(AttributeError):  # the stub reads the limit's minutes: there is none
        cli.main(_finding_stopped_at("at", 4, seen), ["--preset", "smoke", "--out", str(tmp_path / "r2"),
                                                      "--no-progress"])
    assert seen == [None]


@pytest.mark.parametrize("args,msg", [
    (["--time-limit", "0"], "--time-limit must be a number of minutes > 0; got 0.0"),
    (["--time-limit", "-3"], "--time-limit must be a number of minutes > 0"),
    (["--time-limit", "inf"], "--time-limit must be a number of minutes > 0"),
    (["--time-limit", "nine"], "invalid float value: 'nine'"),
    (["--time-limit", "9", "--overwrite"], "--overwrite with --time-limit would start the run over"),
])
def test_bad_time_limit_flags(tmp_path, capsys, args, msg):
    from jaxmi import cli
    with pytest.raises(SystemExit) as e:
        cli.main(_finding_stopped_at("nt", 1, []), ["--preset", "smoke", "--out", str(tmp_path / "r"), *args])
    assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_per_seed_findings_stop_in_a_seed_and_continue_there(tmp_path, capsys):
    """--seeds K of findings 3 and 4: a seed stopped by the limit is continued by the next
    invocation; finished seeds are reused, not run again."""
    from jaxmi import cli
    from jaxmi.findings.runner import Finding, Measured

    calls = []

    def measure(config, options, workdir, **_):
        calls.append(config.seed)
        if config.seed == 1 and calls.count(1) == 1:  # seed 1's training reaches the limit once
            raise TimeLimitReached("at", 2, config.optim.epochs, timelimit.current().minutes)
        return Measured({"seed": config.seed}, {"value": config.seed})

    from jaxmi import verdicts
    rec = verdicts.record([0.5], unit="x", rule="stub", null_value=0.0)
    finding = Finding(name="stub", title="stub", measure=measure, decide=lambda s, o: ({"v": rec}, {}),
                      table=lambda s: "")
    argv = ["--preset", "smoke", "--epochs", "3", "--seeds", "2", "--out", str(tmp_path / "r"), "--no-progress", "--time-limit", "5"]
    assert cli.main(finding, argv) == 75
    assert "stopped after AT epoch 2 of 3; rerun the same command" in capsys.readouterr().out
    assert (tmp_path / "r" / "seed0" / "summary.json").is_file() and not (tmp_path / "r" / "summary.json").exists()
    assert cli.main(finding, argv) == 0
    assert calls == [0, 1, 1]  # seed 0 once, seed 1 stopped and continued
    assert (tmp_path / "r" / "summary.json").is_file()
