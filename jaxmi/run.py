"""Runs: train NT and AT from the same initial weights, with or without MI measurements.

:func:`train_and_measure` trains a normally trained (NT) and a PGD adversarially trained (AT)
copy of one model from the same initial weights and, at epoch 0 and after every epoch,
measures on the test set:

* clean and PGD accuracy and loss (the evaluation attack starts from the clean image);
* for every probe, I(X;T) and I(T;Y) with every estimator, on clean inputs, on their PGD
  examples and (``noise_control``) on the clean images plus random-sign noise of the attack's
  ε, on one fixed draw of ``samples`` test images (the same draw for every input kind and
  every epoch, so the curves are paired), with ``bootstrap`` resamples of the draw (the same
  resamples throughout; every resample's value is kept).

Training metrics are the epoch means over the examples trained on (PGD examples for AT); at
epoch 0 they are evaluated on ``samples`` training images (AT: PGD examples).
:func:`train_pair` is the same training without measurements (findings 3 and 4), and
:func:`load_trained` reads the models a finished run saved.

The flow: :func:`jaxmi.plan.resolve` decides everything the configuration leaves open (keys,
draws, mesh, loops, the checked model); the epoch loop here trains; :class:`jaxmi.measure.Measurer`
measures; :class:`jaxmi.runlog.RunLog` records, publishes, checkpoints and resumes. Keys:
``seed`` gives ``(k_init, k_train, k_draw) = split(key(seed), 3)`` (:func:`jaxmi.plan.run_keys`):
initial weights, ``fold_in(k_train, epoch)`` for each epoch's data order, augmentation and
attack noise, and the test draw. With ``seeds = K`` the K runs of seeds ``seed … seed+K−1``
are trained as one stack (:mod:`jaxmi.training`); every seed is measured on seed ``seed``'s
draw of test images. A run with a ``workdir`` checkpoints after every epoch and resumes from
the last one with identical results. Under a time limit (``time_limit``, or an enclosing
:func:`jaxmi.timelimit.time_limit`) the loop stops at the first epoch boundary where the next
epoch would not finish in time, raising :class:`~jaxmi.timelimit.TimeLimitReached`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import backend, parallel, progress, timelimit
from jaxmi import data as data_lib
from jaxmi.checkpoint import CheckpointError, load_models
from jaxmi.config import Config
from jaxmi.history import REGIMES
from jaxmi.result import RunResult
from jaxmi.measure import Measurer, robust_evaluation
from jaxmi.models import create_model
from jaxmi.plan import RunPlan, resolve
from jaxmi.models import ModelSpecError
from jaxmi.results import as_path, read_json
from jaxmi.runlog import RunLog
from jaxmi.timelimit import TimeLimitReached
from jaxmi.training import epoch_means, train_epoch_core, train_states_core, unstack

__all__ = ["log_line", "train_and_measure", "train_pair", "load_trained", "initial_states", "make_epoch", "Trained",
           "TimeLimitReached"]

Trained = dict[str, tuple[Any, Any]]  # {"nt": (params, batch_stats), "at": (params, batch_stats)}


def log_line(message: str) -> None:
    """The default logger: one flushed line on stdout (visible at once when redirected to a file)."""
    print(message, flush=True)


def initial_states(plan: RunPlan) -> Any:
    """The plan's K stacked initial training states with its optimizer, placed on its mesh (NT
    and AT start from copies of them)."""
    return parallel.place_states(train_states_core(plan.module, plan.init_keys, plan.input_shape, plan.tx),
                                 plan.execution.mesh)


def make_epoch(plan: RunPlan, regime: str, *, show_progress: bool = False) -> Callable:
    """The compiled training epoch of ``regime`` (``"nt"`` or ``"at"``) with the plan's loop, mesh,
    seed loop, attack and ε warm-up: ``epoch(states, images, labels, keys) -> (states, metrics)``
    (:func:`jaxmi.training.make_train_epoch`, built unchecked from the plan; the states are donated)."""
    exe, at = plan.execution, regime == "at"
    return train_epoch_core(plan.module, plan.tx, num_examples=len(plan.train), batch_size=plan.config.optim.batch_size,
                            attack=plan.attack_train if at else None, augment=plan.augment,
                            show_progress=show_progress, loop=exe.loop, chunk=2, mesh=exe.mesh,
                            seed_loop=exe.seed_loop, unroll=exe.attack_unroll,
                            eps_warmup_steps=plan.eps_warmup_steps if at else 0, wait=exe.wait)


def _train_epochs(plan: RunPlan, run_log: RunLog, measurer: Measurer | None, x_train, y_train,
                  show_progress: bool) -> dict[str, Any]:
    """The one training loop of NT and AT (measured after every epoch with a ``measurer``) on the
    training set on the device; returns the final states of the regimes trained here."""
    config, log = plan.config, run_log.log
    init_states = initial_states(plan)
    resumed = run_log.resume(init_states)
    budget, epochs = timelimit.current(), config.optim.epochs
    costs = {"nt": 1.0, "at": 1.0 + plan.attack_train.steps}  # relative cost of a training step
    last = None if resumed is None else (resumed.regime, resumed.epoch)  # the last saved epoch
    if budget is not None:
        for r in REGIMES:  # a final robust evaluation an earlier process measured
            if run_log.timing[r].get("robust_seconds") is not None:
                budget.note_robust(run_log.timing[r]["robust_seconds"])
    final: dict[str, Any] = {}
    for regime in REGIMES:
        if resumed is not None and REGIMES.index(regime) < REGIMES.index(resumed.regime):
            continue  # finished before the interruption: its models are saved
        epoch_fn = make_epoch(plan, regime, show_progress=show_progress)
        judged = False  # whether the next epoch was judged against the time limit already
        if resumed is not None and regime == resumed.regime:
            states, start = resumed.state, resumed.epoch + 1
        else:
            judged = _check_time(budget, costs, regime, 0, epochs, last, measured=measurer is not None)
            states, start = jax.tree.map(jnp.copy, init_states), 1  # NT and AT start from the same weights
            if measurer is not None:
                t0, c0 = time.perf_counter(), timelimit.clock()
                run_log.record(regime, 0, measurer(regime, states, None, 0))
                run_log.publish(regime, 0, measure_seconds=time.perf_counter() - t0)
                run_log.save(regime, 0, states)
                log(f"[{regime.upper()}] epoch 0: {run_log.line(regime)} ({time.perf_counter() - t0:.1f} s)")
                last = (regime, 0)
                if budget is not None:
                    budget.note_start(timelimit.clock() - c0)
        for epoch in range(start, config.optim.epochs + 1):
            if not judged:  # a fresh regime's first epoch was judged together with its epoch 0
                _check_time(budget, costs, regime, epoch, epochs, last, measured=measurer is not None)
            judged = False
            t0, c0 = time.perf_counter(), timelimit.clock()
            with progress.bar(plan.steps_per_epoch, f"{regime.upper()} epoch {epoch}/{config.optim.epochs}"):
                keys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(plan.train_keys)
                states, metrics = epoch_fn(states, x_train, y_train, keys)
                means = epoch_means(metrics)
            c_train = timelimit.clock()
            bad = [m["loss"] for m in means if not np.isfinite(m["loss"])]
            if bad:
                raise FloatingPointError(f"{regime.upper()} training loss became {bad[0]} in epoch {epoch}; "
                                         "lower --lr.")
            train_s = time.perf_counter() - t0
            run_log.record(regime, epoch, means if measurer is None else measurer(regime, states, means, epoch))
            measure_s = time.perf_counter() - t0 - train_s
            run_log.timing[regime]["epoch_seconds"].append(train_s)
            run_log.timing[regime]["measure_seconds"].append(measure_s)
            run_log.publish(regime, epoch, epoch_seconds=train_s, measure_seconds=measure_s)
            tail = f"train {train_s:.1f} s, measure {measure_s:.1f} s" if measurer is not None else f"{train_s:.1f} s"
            log(f"[{regime.upper()}] epoch {epoch}: {run_log.line(regime)} ({tail})")
            robust_c = None
            if epoch == config.optim.epochs and config.attack.robust_samples:
                t0, robust_c = time.perf_counter(), timelimit.clock()
                run_log.robust[regime] = robust_evaluation(plan, regime, states, log)
                run_log.timing[regime]["robust_seconds"] = time.perf_counter() - t0
                robust_c = timelimit.clock() - robust_c
            run_log.save(regime, epoch, states)
            last = (regime, epoch)
            if budget is not None:
                budget.note_epoch(regime, costs[regime], c_train - c0, timelimit.clock() - c_train - (robust_c or 0.0),
                                  robust_c)
        final[regime] = states
    return final


def _check_time(budget: timelimit.Budget | None, costs: dict[str, float], regime: str, epoch: int, epochs: int,
                last: tuple[str, int] | None, *, measured: bool) -> bool:
    """Stops the run (:class:`~jaxmi.timelimit.TimeLimitReached`) before ``epoch`` of ``regime``
    (0: a fresh regime's epoch-0 measurement and epoch 1) when that would end past the time
    limit (never before the first epoch under the limit, nor in a run of 0 epochs). Returns True."""
    if budget is not None and epochs:
        estimate = budget.estimate(regime, costs, start=epoch == 0 and measured, final=max(epoch, 1) == epochs)
        if budget.should_stop(estimate):
            raise timelimit.TimeLimitReached(*(last or (regime, None)), epochs, budget.minutes)
    return True


def _run(config: Config, *, measure: bool, workdir, log, show_progress: bool, mesh
         ) -> tuple[RunPlan, RunLog, Measurer | None, dict[str, Any]]:
    """Plan, then train (and measure) NT and AT; the run log holds what was recorded."""
    progress.enabled(show_progress)
    plan = resolve(config, mesh=mesh, log=log)
    run_log = RunLog(plan, measured=measure, workdir=workdir, log=log)
    x_train, y_train = data_lib.as_device_arrays(plan.train, parallel.replicated(plan.execution.mesh))
    measurer = Measurer(plan, x_train, y_train) if measure else None
    try:
        final = _train_epochs(plan, run_log, measurer, x_train, y_train, show_progress)
    finally:
        run_log.close()
    resumed = run_log.resumed
    run_log.timing.update(devices=plan.execution.mesh.size, backend=backend.platform(), seeds=config.seeds,
                          resumed_from=None if resumed is None else {"regime": resumed.regime,
                                                                     "epoch": resumed.epoch})
    return plan, run_log, measurer, final


def train_and_measure(config: Config, *, log: Callable[[str], None] = log_line, show_progress: bool = True,
                      workdir: str | os.PathLike | None = None,
                      mesh: jax.sharding.Mesh | None = None, time_limit: float | None = None) -> RunResult:
    """Trains NT and AT from the same initial weights, measuring at epoch 0 and after every epoch.

    Each batch is split over the devices of ``mesh`` (data parallelism; parameters and
    optimizer state replicated), and so are the evaluation and attack passes.

    Args:
      config: the run's :class:`~jaxmi.config.Config`.
      log: where one-line progress messages go.
      show_progress: show per-epoch progress bars.
      workdir: the run directory for checkpoints (``workdir/checkpoints``, after every
        measurement) and the final NT and AT models (``workdir/models``); a run whose
        checkpoints are there resumes from the last completed epoch with identical results.
        Live metrics go to ``workdir/metrics.jsonl`` and ``workdir/tensorboard``
        (:mod:`jaxmi.live`) after every measurement. ``None``: nothing is saved.
      mesh: the device mesh; ``None``: :func:`jaxmi.plan.run_mesh`.
      time_limit: minutes from this call (:mod:`jaxmi.timelimit`; inside a
        :func:`jaxmi.timelimit.time_limit` block that limit holds); ``None``: no limit.

    Returns:
      A :class:`~jaxmi.result.RunResult`; ``timing`` holds wall-clock seconds per epoch.

    Raises:
      jaxmi.timelimit.TimeLimitReached: the time limit stopped the run after a saved epoch
        (with a ``workdir``, call again to continue; its result is the uninterrupted run's).
      jaxmi.checkpoint.CheckpointError: the checkpoint in ``workdir`` is unreadable or was
        written by another configuration.
    """
    with timelimit.time_limit(time_limit):
        plan, run_log, measurer, _ = _run(config, measure=True, workdir=workdir, log=log,
                                          show_progress=show_progress, mesh=mesh)
    data_info = {"train": plan.train.source, "test": plan.test.source, "train_examples": len(plan.train),
                 "eval_examples": measurer.n_eval, "mi_samples": config.mi.samples}
    result = RunResult(layers=list(plan.layers), epochs_measured=list(range(config.optim.epochs + 1)),
                       num_classes=plan.num_classes, data=data_info, seeds=plan.seeds,
                       histories=run_log.histories, timing=run_log.timing, ceilings=plan.mi.ceilings,
                       sweep_grid=plan.mi.sweep_grid, robust=run_log.robust)
    warning = result.summary_fields()["saturation"]["warning"]
    if warning:
        log(f"warning: {warning}")
    return result


def train_pair(config: Config, *, log: Callable[[str], None] = log_line, show_progress: bool = True,
               workdir: str | os.PathLike | None = None, time_limit: float | None = None
               ) -> tuple[Any, Trained, dict[str, Any]]:
    """Trains NT and PGD-AT copies of one model from the same initial weights, without measurements.

    The same keys, data order and schedule as :func:`train_and_measure`, so for equal configs
    the models are the same. With ``workdir``, checkpoints after every epoch (a stopped run
    resumes) and the trained models go there (readable by :func:`load_trained`). ``time_limit``
    as in :func:`train_and_measure` (it raises :class:`~jaxmi.timelimit.TimeLimitReached`).

    Returns:
      ``(module, {"nt": (params, batch_stats), "at": (...)}, history)`` with per-epoch training
      accuracy and loss of each regime in ``history[regime]``, and its final model's robust
      evaluation in ``history[regime]["robust"]`` (unless ``robust_samples`` is 0).
    """
    if config.seeds > 1:
        raise ValueError(f"seeds={config.seeds}: train_pair gives one NT/AT pair; run the finding per seed "
                         "(what --seeds does for findings 3 and 4).")
    with timelimit.time_limit(time_limit):
        plan, run_log, _, final = _run(config, measure=False, workdir=workdir, log=log,
                                       show_progress=show_progress, mesh=None)
    trained: Trained = {}
    for regime in REGIMES:
        if regime in final:
            st = unstack(final[regime], 1)[0]
            trained[regime] = (st.params, st.batch_stats)
        else:  # finished before an interruption: saved
            trained[regime] = load_models(workdir, (regime,))[1][regime]
    history = {r: h.to_dict() for r, h in run_log.histories[0].items()}
    for regime, reports in run_log.robust.items():
        history[regime]["robust"] = reports[0]
    return plan.module, trained, history


def load_trained(workdir: str | os.PathLike, seed_index: int = 0) -> tuple[Config, Any, Trained]:
    """The configuration, model and trained NT/AT variables of a finished run directory.

    ``seed_index`` k picks seed ``seed + k`` of a run with ``seeds`` > k (its models are saved as
    ``nt_seed<k>``/``at_seed<k>``); the returned config is then that seed's (``seeds`` = 1).

    Returns:
      ``(config, module, {"nt": (params, batch_stats), "at": (params, batch_stats)})``; use
      them with :func:`jaxmi.models.apply_model`.

    A run of your own model (``model="package.module:factory"``) rebuilds it by calling the
    factory again, so the module must be importable here and build the same architecture.

    Raises:
      jaxmi.checkpoint.CheckpointError: ``workdir`` holds no finished run (no trained
        models), they are unreadable, or the model they were trained with cannot be built.
    """
    workdir = as_path(workdir)
    if not workdir.is_dir():
        raise CheckpointError(f"{workdir} is not a run directory (it does not exist); pass the --out of a "
                              "finished experiment run.")
    names = REGIMES if seed_index == 0 else tuple(f"{r}_seed{seed_index}" for r in REGIMES)
    stored_seeds = int((read_json(workdir / "models" / "models.json").get("config") or {}).get("seeds") or 1) \
        if seed_index and (workdir / "models" / "models.json").exists() else None
    if stored_seeds is not None and seed_index >= stored_seeds:
        raise CheckpointError(f"{workdir} holds the models of {stored_seeds} seed(s); there is no seed index "
                              f"{seed_index}. Use --seeds {stored_seeds} or fewer with this --from-run.")
    meta, variables = load_models(workdir, names)
    variables = dict(zip(REGIMES, (variables[n] for n in names)))
    try:
        config = Config.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the configuration stored with the models in {workdir} is unusable ({e}); "
                              "rerun the experiment with --overwrite.") from None
    if seed_index:
        config = config.replace(seed=config.seed + seed_index, seeds=1)
    try:
        module = create_model(config.model.model, int(meta["num_classes"]), precision=config.model.precision)
    except ModelSpecError as e:
        raise CheckpointError(f"the models in {workdir} were trained with the model "
                              f"{meta['config'].get('model')!r}, which cannot be rebuilt here: {e}") from None
    return config, module, variables
