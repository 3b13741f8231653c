"""The run configuration: sections, flat names, round trips, identity, presets and the command line."""

import dataclasses
import json

import numpy as np
import pytest

from jaxmi import cli
from jaxmi.config import PRESETS, SECTIONS, Config, flat_fields, make_config, normalize_identity
from jaxmi.findings import finding1, finding2, finding3, finding4
from jaxmi.plan import pgd_config


def test_every_field_has_a_unique_flat_name_and_help():
    fields = flat_fields()
    names = [f.metadata.get("flat", f.name) for cls in SECTIONS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names))  # unique across sections
    for name, (_, f) in fields.items():
        assert f.metadata.get("help"), f"{name} has no help text"
    # the names a summary.json has always used
    for old in ("dataset", "model", "data_dir", "epochs", "batch_size", "learning_rate", "momentum", "milestones",
                "eps", "step_size", "attack_steps", "samples", "eval_samples", "train_examples", "estimators",
                "noise_var", "bin_size", "seed", "eval_batch_size", "loop", "devices", "precision", "seeds",
                "bootstrap"):
        assert old in fields


def test_round_trips_nested_and_flat():
    config = make_config("cpu", dataset="cifar10", model="wrn", milestones=[3, 5], estimators=["binning"], seeds=2,
                         eps=0.01, devices=1, bootstrap=4)
    assert Config.from_dict(config.to_dict()) == config
    assert Config.from_dict(json.loads(json.dumps(config.flat()))) == config
    assert config.optim.milestones == (3, 5) and config.mi.estimators == ("binning",)
    assert config.flat()["model"] == "wrn" and config.flat()["attack_steps"] is None
    assert pgd_config(config).eps == 0.01 and pgd_config(config).steps == 7
    with pytest.raises(ValueError, match="unknown configuration key"):
        Config.from_dict({"data": {"nosuch": 1}})
    with pytest.raises(ValueError, match=r"unknown configuration keys \['nosuch'\]"):
        make_config("paper", nosuch=1)


def test_identity_excludes_execution_settings():
    a = make_config("smoke")
    b = a.replace(devices=1, loop="scan", seed_loop="vmap", eval_batch_size=7)
    assert a != b and a.identity() == b.identity()
    assert set(a.flat()) - set(a.identity()) == {f.name for f in dataclasses.fields(SECTIONS["exec"])}
    assert a.replace(seed=1).identity() != a.identity()
    # an identity stored by an older version (exec fields in, newer fields missing) normalises to today's
    stored = {k: v for k, v in a.flat().items() if k not in ("decay", "weight_decay", "seed_loop")}
    assert normalize_identity({**stored, "saturation": [2, 8]}) == {**a.identity(), "saturation": [2, 8]}


def test_presets_and_overrides():
    assert make_config("smoke").optim.epochs == PRESETS["smoke"]["epochs"]
    c = make_config("cpu", epochs=3, learning_rate=None)
    assert c.optim.epochs == 3 and c.optim.learning_rate == 0.025


@pytest.mark.parametrize("finding", [finding1, finding2, finding3, finding4])
def test_command_line_has_a_flag_for_every_field_and_option(finding):
    finding = finding.FINDING
    parser, config_names, option_names = cli.build_parser(finding, "")
    assert set(config_names) == set(flat_fields())
    if finding.options is not None:
        assert set(option_names) == {f.name for f in dataclasses.fields(finding.options)}
    config, options, _ = cli.parse(finding, ["--preset", "smoke", "--lr", "0.5", "--milestones", "1", "2",
                                             "--estimators", "kde_upper", "binning", "--noise-var", "0.2",
                                             "--devices", "1"])
    assert config.optim.learning_rate == 0.5 and config.optim.milestones == (1, 2)
    assert config.mi.estimators == ("kde_upper", "binning") and config.mi.noise_var == 0.2
    assert config.exec.devices == 1
    assert config.data.dataset == finding.default_dataset
    assert options == {k: v for k, v in finding.presets.get("smoke", {}).items() if k not in flat_fields()}


def test_command_line_options_and_errors(capsys):
    _, options, _ = cli.parse(finding3.FINDING, ["--saturation", "2", "16", "--shuffle", "0", "4", "--from-run", "R"])
    assert options == {"saturation": [2.0, 16.0], "shuffle": [0, 4], "from_run": "R"}
    _, options, _ = cli.parse(finding4.FINDING, ["--no-trained", "--points", "50"])
    assert options == {"trained": False, "points": 50}
    with pytest.raises(SystemExit) as e:
        cli.parse(finding2.FINDING, ["--batch-size", "0"])
    assert e.value.code == 2 and "batch_size must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse(finding3.FINDING, ["--saturation", "8", "64"])
    assert "must include 2" in capsys.readouterr().err


def test_mi_flags_of_the_sweep_and_scale():
    config, _, _ = cli.parse(finding2.FINDING, ["--no-sweep", "--noise-scale", "relative", "--noise-var", "2"])
    assert not config.mi.sweep and config.mi.noise_scale == "relative" and config.mi.noise_var == 2.0
    config, _, _ = cli.parse(finding2.FINDING, ["--sweep-noise-vars", "0.01", "1", "--sweep-bin-sizes", "0.5"])
    assert config.mi.sweep and config.mi.sweep_noise_vars == (0.01, 1.0) and config.mi.sweep_bin_sizes == (0.5,)
    assert make_config("paper").mi.sweep  # on by default, in every preset
    with pytest.raises(ValueError, match="sweep_noise_vars must be a non-empty list of values > 0"):
        make_config("paper", sweep_noise_vars=[0.1, 0.0])
    with pytest.raises(ValueError, match="noise_scale must be"):
        make_config("paper", noise_scale="log")


def test_eps_warmup_flag_steps_and_errors(capsys):
    config, _, _ = cli.parse(finding2.FINDING, ["--eps-warmup", "1.5"])
    assert config.attack.eps_warmup == 1.5 and config.attack.warmup_steps(390) == 585
    assert make_config("paper").attack.warmup_steps(390) == 0  # the paper: full ε from the first step
    # a run directory written before the field existed reads as "no warm-up", so it still resumes
    old = {k: v for k, v in make_config("cpu").flat().items() if k != "eps_warmup"}
    assert Config.from_dict(old) == make_config("cpu")
    assert make_config("cpu", eps_warmup=2).identity() != make_config("cpu").identity()
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps_warmup must be a number of epochs ≥ 0"):
            make_config("paper", eps_warmup=bad)
    with pytest.raises(SystemExit):
        cli.parse(finding2.FINDING, ["--eps-warmup", "-2"])
    assert "eps_warmup must be" in capsys.readouterr().err


@pytest.mark.parametrize("override, match", [
    (dict(decay=0), "decay must be a finite factor > 0"),
    (dict(decay=-0.5), "decay must be a finite factor > 0"),
    (dict(decay=float("nan")), "decay must be a finite factor > 0"),
    (dict(weight_decay=-1e-4), "weight_decay must be a finite number ≥ 0"),
    (dict(weight_decay=float("inf")), "weight_decay must be a finite number ≥ 0"),
    (dict(milestones=[20, 20]), r"milestones must be distinct epochs; got \[20, 20\]"),
    (dict(milestones=[-5]), r"each milestone \(an epoch\) must be a non-negative integer; got -5"),
    (dict(milestones=[2.5]), r"each milestone \(an epoch\) must be a non-negative integer; got 2.5"),
    (dict(learning_rate=float("inf")), "learning_rate must be > 0 and finite; got inf"),
    (dict(step_size=float("inf")), "attack step size must be > 0 and finite; got inf"),
    (dict(noise_var=float("inf")), "noise_var must be > 0 and finite; got inf"),
    (dict(bin_size=float("inf")), "bin_size must be > 0 and finite; got inf"),
    (dict(sweep_noise_vars=[0.1, float("inf")]), "sweep_noise_vars must be a non-empty list of values > 0 and finite"),
    (dict(sweep_bin_sizes=[float("nan")]), "sweep_bin_sizes must be a non-empty list of values > 0 and finite"),
])
def test_bad_optimizer_and_mi_settings_are_refused(override, match):
    with pytest.raises(ValueError, match=match):
        make_config("cpu", **override)


def test_milestones_in_any_order_give_the_same_schedule(capsys):
    import jax.numpy as jnp
    from jaxmi.training import make_optimizer

    def rates(milestones):  # SGD without momentum on a unit gradient: each update is −rate
        tx = make_optimizer(make_config("cpu", milestones=milestones, momentum=0.0).optim, steps_per_epoch=10)
        params = {"w": jnp.ones(())}
        state, out = tx.init(params), []
        for _ in range(45):
            updates, state = tx.update({"w": jnp.ones(())}, state, params)
            out.append(-float(updates["w"]))
        return np.array(out)

    lr = make_config("cpu").optim.learning_rate
    step = np.arange(45)
    expected = lr * 0.5 ** ((step >= 10).astype(int) + (step >= 30).astype(int))  # halved at epochs 1 and 3
    np.testing.assert_allclose(rates([1, 3]), expected, rtol=1e-6)
    np.testing.assert_allclose(rates([3, 1]), expected, rtol=1e-6)
    with pytest.raises(SystemExit):
        cli.parse(finding2.FINDING, ["--decay", "0"])
    assert "decay must be a finite factor > 0" in capsys.readouterr().err


@pytest.mark.parametrize("finding, argv, ignored", [
    (finding1, ["--from-run", "R", "--model", "mlp"], "--model"),
    (finding1, ["--from-run", "R", "--seeds", "3"], "--seeds"),  # finding 1 reads every seed of the run
    (finding3, ["--from-run", "R", "--epochs", "5", "--noise-var", "0.5"], "--epochs, --noise-var"),
    (finding4, ["--from-run", "R", "--eps", "0.1"], "--eps"),
])
def test_flags_that_from_run_would_ignore_are_refused(finding, argv, ignored, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse(finding.FINDING, ["--preset", "smoke", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{ignored} would be ignored with --from-run" in err and f"Drop {ignored}" in err


def test_flags_that_from_run_takes_are_accepted():
    config, options, _ = cli.parse(finding3.FINDING, ["--preset", "smoke", "--from-run", "R", "--samples", "64",
                                                      "--data-dir", "D", "--seeds", "2", "--devices", "1"])
    assert options["from_run"] == "R" and config.mi.samples == 64 and config.seeds == 2


def test_the_plan_refuses_a_batch_larger_than_the_training_data():
    from jaxmi.plan import resolve

    with pytest.raises(ValueError, match=r"batch_size 128 is larger than the 64 training images of mnist; "
                                         r"lower --batch-size"):
        resolve(make_config("smoke", train_examples=64, batch_size=128))
    plan = resolve(make_config("smoke", train_examples=128, batch_size=128))  # exactly one step: accepted
    assert plan.steps_per_epoch == 1
