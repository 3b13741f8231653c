"""Pieces shared by the finding scripts: run directories of earlier runs, trained models, the script shell.

* :func:`load_run_summary` reads a finding-2-style run directory's ``summary.json`` (finding 1
  reuses its per-epoch MI instead of retraining).
* :func:`trained_models` returns trained NT and AT models: loaded from a run directory with
  ``jaxmi.experiment.load_trained`` when one is given, else trained here by
  :func:`train_models` (the same initialisation, data order and schedule as
  :func:`jaxmi.experiment.train_and_measure`, without the per-epoch MI measurements).
* :func:`mi_draw` is the fixed random draw of test images that ``train_and_measure`` uses for
  its MI measurements, so later measurements on trained models are on the same images.
* :func:`script_main` is the shell every finding script shares: the finding-2 flags, a
  finding's own presets and flags, and errors printed as ``error: …`` with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import data as data_lib
from jaxmi import experiment, progress
from jaxmi.experiment import Config, log_line
from jaxmi.models import create_model
from jaxmi.results import prepare_run_dir, read_json, write_json
from jaxmi.training import create_train_state, epoch_means, make_optimizer, make_train_epoch

__all__ = ["load_run_summary", "train_models", "trained_models", "mi_draw", "load_test_split", "script_main",
           "Trained", "across_seeds", "seed_table", "run_per_seed"]

Trained = dict[str, tuple[Any, Any]]  # {"nt": (params, batch_stats), "at": (params, batch_stats)}


def _numbers_mean_sd(items: list[Any]) -> Any:
    """Numeric leaves of equally shaped evidence dicts → {"mean", "sd", "values"}; the rest dropped."""
    first = items[0]
    if isinstance(first, Mapping):
        out = {}
        for k in first:
            if all(isinstance(i, Mapping) and k in i for i in items):
                v = _numbers_mean_sd([i[k] for i in items])
                if v is not None:
                    out[k] = v
        return out or None
    if all(isinstance(i, (int, float)) and not isinstance(i, bool) and i is not None for i in items):
        a = np.asarray(items, dtype=float)
        return {"mean": float(np.mean(a)), "sd": float(np.std(a, ddof=1)) if a.size > 1 else 0.0,
                "values": [float(x) for x in a]}
    return None


def across_seeds(summary: Mapping[str, Any], decide: Callable[[dict[str, Any]], tuple[dict, dict]]
                 ) -> dict[str, Any] | None:
    """Every verdict decided per seed, with its evidence numbers as mean ± sd across seeds.

    ``summary["seeds"]`` (written by ``train_and_measure`` with ``seeds`` > 1) holds each
    seed's NT and AT histories; ``decide(summary)`` is the finding's verdict function. Returns
    ``{verdict: {"holds_in": n, "seeds": K, "fraction": n / K, "per_seed": [bool, ...],
    "numbers": {evidence key: {"mean", "sd", "values"}, ...}}}`` (nested like the evidence),
    or ``None`` for a single-seed summary.
    """
    seeds = summary.get("seeds")
    if not seeds:
        return None
    base = {k: v for k, v in summary.items() if k not in ("seeds", "verdicts", "evidence")}
    return _per_verdict([decide({**base, "nt": s["nt"], "at": s["at"]}) for s in seeds])


def _per_verdict(decided: list[tuple[Mapping, Mapping]]) -> dict[str, Any]:
    """Per verdict over seeds: where it holds, and its evidence numbers as mean ± sd."""
    out = {}
    for name in decided[0][0]:
        holds = [bool(v[name]) for v, _ in decided]
        out[name] = {"holds_in": int(sum(holds)), "seeds": len(holds), "fraction": float(np.mean(holds)),
                     "per_seed": holds, "numbers": _numbers_mean_sd([e.get(name, {}) for _, e in decided]) or {}}
    return out


def seed_table(summary: Mapping[str, Any], *, max_numbers: int = 4) -> str:
    """Plain-text lines: per verdict, in how many seeds it holds and its first numbers as mean ± sd."""
    across = (summary.get("evidence") or {}).get("across_seeds")
    if not across:
        return ""
    lines = [f"across {next(iter(across.values()))['seeds']} seeds (mean ± sd):"]
    for name, a in across.items():
        nums = [(k, v) for k, v in a["numbers"].items() if isinstance(v, Mapping) and "mean" in v][:max_numbers]
        text = "; ".join(f"{k} {v['mean']:.4g} ± {v['sd']:.2g}" for k, v in nums)
        lines.append(f"  {name}: holds in {a['holds_in']}/{a['seeds']} seeds; {text}")
    return "\n".join(lines)


def load_run_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``summary.json`` of a finding-2-style run (NT and AT histories with per-epoch MI).

    Raises:
      ValueError: no such directory or file, unreadable JSON, or a summary without the
        per-epoch MI of both training modes.
    """
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise ValueError(f"--from-run {run_dir}: no summary.json there; give the --out directory of a finished "
                         "finding-2 (or finding-1) run.")
    try:
        summary = read_json(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"--from-run {run_dir}: cannot read summary.json ({e}).") from None
    missing = [k for k in ("layers", "epochs_measured", "nt", "at", "config") if k not in summary]
    if missing or not all(isinstance(summary.get(m), dict) and summary[m].get("mi") for m in ("nt", "at")):
        raise ValueError(f"--from-run {run_dir}: summary.json lacks {missing or 'per-epoch MI'}; it is not the "
                         "summary of an NT-vs-AT run with MI measurements.")
    return summary


def load_test_split(config: Config):
    """The test split (uint8, host) of the configured dataset."""
    test = data_lib.load_dataset(config.dataset, "test", data_dir=config.data_dir)
    if len(test) < config.samples:
        raise ValueError(f"samples={config.samples} exceeds the {len(test)} test images of {config.dataset}; "
                         "lower --samples.")
    return test


def mi_draw(config: Config, num_test: int) -> np.ndarray:
    """Indices of the ``config.samples`` test images that ``train_and_measure`` measures MI on."""
    _, _, k_draw = jax.random.split(jax.random.key(config.seed), 3)
    return np.asarray(jax.random.permutation(k_draw, int(num_test)))[:config.samples]


def train_models(config: Config, *, log: Callable[[str], None] = log_line, show_progress: bool = True,
                 workdir: str | os.PathLike | None = None) -> tuple[Any, Trained, dict[str, Any]]:
    """Trains NT and PGD-AT copies of the configured model from the same initial weights.

    Initial weights, data order, augmentation and attack noise come from the same keys as in
    :func:`jaxmi.experiment.train_and_measure`, so for equal configs the models are the same;
    no MI is measured during training.

    With ``workdir``, each trained model is saved to ``workdir/models`` in the layout of
    :mod:`jaxmi.checkpoint`, so ``jaxmi.experiment.load_trained(workdir)`` (and ``--from-run``
    of the other finding scripts) can reuse it.

    Returns:
      ``(module, {"nt": (params, batch_stats), "at": (...)}, history)`` with per-epoch training
      accuracy and loss of each mode in ``history[mode]``.
    """
    progress.enabled(show_progress)
    train, _, augment = experiment.load_data(config)
    module = create_model(config.model, train.num_classes, precision=config.precision)
    x_train, y_train = data_lib.as_device_arrays(train)
    n_train = int(x_train.shape[0])
    k_init, k_train, _ = jax.random.split(jax.random.key(config.seed), 3)
    optim = config.optim()
    steps_per_epoch = n_train // optim.batch_size
    tx = make_optimizer(optim, steps_per_epoch)
    init_state = create_train_state(module, k_init, tuple(train.images.shape[1:]), tx)
    attacks = {"nt": None, "at": config.attack(random_start=True)}
    trained: Trained = {}
    history: dict[str, Any] = {}
    for mode in experiment.MODES:
        epoch_fn = make_train_epoch(module, tx, num_examples=n_train, batch_size=optim.batch_size,
                                    attack=attacks[mode], augment=augment, loop=config.loop)
        state = jax.tree.map(jnp.copy, init_state)
        h = history[mode] = {"train_acc": [], "train_loss": []}
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            with progress.bar(steps_per_epoch, f"{mode.upper()} epoch {epoch}/{config.epochs}"):
                state, metrics = epoch_fn(state, x_train, y_train, jax.random.fold_in(k_train, epoch))
                means = epoch_means(metrics)
            if not np.isfinite(means["loss"]):
                raise FloatingPointError(f"{mode.upper()} training loss became {means['loss']} in epoch {epoch}; "
                                         "lower --lr.")
            h["train_acc"].append(means["accuracy"])
            h["train_loss"].append(means["loss"])
            log(f"[{mode.upper()}] epoch {epoch}: train acc {means['accuracy']:.4f} loss {means['loss']:.4f} "
                f"({time.perf_counter() - t0:.1f} s)")
        trained[mode] = (state.params, state.batch_stats)
        if workdir is not None:
            _save_model(workdir, mode, state, config, train.num_classes, tuple(train.images.shape[1:]),
                        list(module.probe_names))
    return module, trained, history


def _save_model(workdir, mode, state, config, num_classes, input_shape, layers) -> None:
    try:
        from jaxmi.checkpoint import save_model
    except ImportError:  # a jaxmi without checkpoints: nothing to save into
        return
    save_model(workdir, mode, state.params, state.batch_stats,
               {"config": config.to_dict(), "num_classes": num_classes, "input_shape": list(input_shape),
                "layers": layers})


def trained_models(config: Config, from_run: str | None, *, log: Callable[[str], None] = log_line,
                   show_progress: bool = True, workdir: str | os.PathLike | None = None
                   ) -> tuple[Config, Any, Trained, dict[str, Any]]:
    """Trained NT and AT models: loaded from ``from_run`` when given, else trained by :func:`train_models`.

    Returns:
      ``(config, module, {"nt": (params, batch_stats), "at": ...}, info)``. Models trained here
      are saved into ``workdir`` when given (see :func:`train_models`). With ``from_run``
      the returned config is the loaded run's (its dataset, model, attack and seed), with this
      run's ``samples`` and ``data_dir``; ``info`` says where the models came from.
    """
    if config.seeds > 1:
        raise ValueError(f"seeds={config.seeds}: trained_models gives one NT/AT pair; run the finding per seed "
                         "(findings.common.run_per_seed, what --seeds does for findings 3 and 4).")
    if from_run is None:
        module, trained, history = train_models(config, log=log, show_progress=show_progress, workdir=workdir)
        return config, module, trained, {"source": "trained", "history": history}
    load = getattr(experiment, "load_trained", None)
    if load is None:
        raise ValueError("--from-run needs jaxmi.experiment.load_trained, which this version of jaxmi does not "
                         "have; run without --from-run to train the models here.")
    run_config, module, trained = load(from_run)
    if isinstance(run_config, Mapping):
        fields = {k: v for k, v in run_config.items() if k in Config.__dataclass_fields__}
        run_config = experiment.make_config("paper", **fields)
    keep = {"samples": config.samples, "data_dir": config.data_dir or run_config.data_dir,
            "eval_samples": None, "estimators": config.estimators}
    import dataclasses

    run_config = dataclasses.replace(run_config, **keep)
    log(f"loaded trained NT and AT {run_config.model} ({run_config.dataset}, {run_config.epochs} epochs) "
        f"from {from_run}")
    return run_config, module, trained, {"source": str(from_run)}


def run_per_seed(run: Callable[..., dict[str, Any]], config: Config, workdir: str | os.PathLike, *,
                 options: Mapping[str, Any] | None = None, overwrite: bool = False, show_progress: bool = True,
                 log: Callable[[str], None] = log_line) -> dict[str, Any]:
    """``--seeds K`` for findings that evaluate one trained NT/AT pair (findings 3 and 4).

    Runs the finding once per seed (``seed``, ``seed+1``, …; each trains its own models) into
    ``workdir/seed<s>``, then writes ``workdir/summary.json``: every verdict holds when it holds
    in more than half of the seeds, and ``evidence["across_seeds"]`` gives, per verdict, the
    seeds it holds in and every evidence number as mean ± sd (see :func:`across_seeds`).
    Each seed's own summary and figures stay in its directory.
    """
    options = dict(options or {})
    if options.get("from_run"):
        raise ValueError(f"--seeds {config.seeds} with --from-run: a run directory holds one trained NT/AT pair "
                         "per seed for this finding; drop --from-run (each seed trains its own models) or run "
                         "once per seed with --seeds 1.")
    workdir = prepare_run_dir(workdir, {**config.to_dict(), **options}, overwrite=overwrite)
    subs = []
    for k in range(config.seeds):
        seed = config.seed + k
        log(f"=== seed {seed} ({k + 1} of {config.seeds}) ===")
        cfg = dataclasses.replace(config, seed=seed, seeds=1)
        subs.append(run(cfg, workdir / f"seed{seed}", options=options, overwrite=overwrite,
                        show_progress=show_progress, log=log))
    across = _per_verdict([(sm["verdicts"], sm["evidence"]) for sm in subs])
    summary = {
        "finding": subs[0].get("finding"),
        "config": {**config.to_dict(), "attack": vars(config.attack())},
        "options": {k: v for k, v in options.items()},
        "seeds": [{"seed": config.seed + k, "dir": f"seed{config.seed + k}", "verdicts": sm["verdicts"]}
                  for k, sm in enumerate(subs)],
        "verdicts": {name: a["holds_in"] * 2 > a["seeds"] for name, a in across.items()},
        "evidence": {"rule": "a verdict holds when it holds in more than half of the seeds", "across_seeds": across},
        "figures": [f"seed{config.seed + k}/{f}" for k, sm in enumerate(subs) for f in sm.get("figures", [])],
    }
    write_json(workdir / "summary.json", summary)
    log(seed_table(summary))
    return summary


def script_main(argv, *, description: str, default_out: str, presets: Mapping[str, Mapping[str, Any]],
                run: Callable[..., dict[str, Any]], add_flags: Callable[[argparse.ArgumentParser], None] | None = None,
                default_dataset: str | None = None, out_name: str = "finding", seeds_native: bool = False) -> int:
    """The command line shared by the finding scripts.

    Parses the finding-2 flags (:func:`jaxmi.experiment.add_common_flags`) plus ``add_flags``.
    ``presets[name]`` extends the shared :data:`jaxmi.experiment.PRESETS` for this finding:
    its keys that are :class:`~jaxmi.experiment.Config` fields override the shared preset, the
    others are the finding's own options. Explicit flags win over both (a finding flag's
    ``dest`` is its option name, default ``None``). Calls ``run(config, out, options=...,
    overwrite=..., show_progress=...)`` — or, with ``--seeds K`` and ``seeds_native=False``,
    :func:`run_per_seed` around it; ValueError / OSError / FloatingPointError are printed
    as ``error: …`` with exit status 2 (``JAXMI_DEBUG=1`` re-raises them).
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    experiment.add_common_flags(parser, default_out=default_out)
    if default_dataset:
        parser.set_defaults(dataset=default_dataset)
    own: list[str] = []
    if add_flags is not None:
        before = {a.dest for a in parser._actions}
        add_flags(parser)
        own = [a.dest for a in parser._actions if a.dest not in before]
    args = parser.parse_args(argv)
    config_fields = set(Config.__dataclass_fields__)
    try:
        if args.preset not in experiment.PRESETS:
            raise ValueError(f"unknown preset {args.preset!r}; choose one of {sorted(experiment.PRESETS)}.")
        preset = {**experiment.PRESETS[args.preset], **presets.get(args.preset, {})}
        fields = {k: v for k, v in preset.items() if k in config_fields}
        fields.update({k: v for k, v in vars(args).items() if k in config_fields and v is not None})
        config = experiment.make_config("paper", **fields)
    except ValueError as e:
        parser.error(str(e))
    options = {k: v for k, v in preset.items() if k not in config_fields}
    options.update({k: getattr(args, k) for k in own if getattr(args, k) is not None})
    out = args.out or f"runs/{out_name}_{config.dataset}_{config.model}"
    try:
        if config.seeds > 1 and not seeds_native:
            summary = run_per_seed(run, config, out, options=options, overwrite=args.overwrite,
                                   show_progress=not args.no_progress)
        else:
            summary = run(config, out, options=options, overwrite=args.overwrite, show_progress=not args.no_progress)
    except (ValueError, OSError, FloatingPointError) as e:  # user-facing problems: no traceback
        if os.environ.get("JAXMI_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nwrote {out}/summary.json and {len(summary.get('figures', []))} figures")
    return 0
