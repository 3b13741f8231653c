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

Keys: ``seed`` gives ``(k_init, k_train, k_draw) = split(key(seed), 3)`` (:func:`run_keys`):
initial weights, ``fold_in(k_train, epoch)`` for each epoch's data order, augmentation and
attack noise, and the test draw. With ``seeds = K`` the K runs of seeds ``seed … seed+K−1``
are trained as one stack (:mod:`jaxmi.training`); every seed is measured on seed ``seed``'s
draw of test images. A run with a ``workdir`` checkpoints after every epoch and resumes from
the last one with identical results.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import backend, estimators, parallel, progress
from jaxmi import data as data_lib
from jaxmi.checkpoint import CheckpointError, RunCheckpointer, load_models, save_model
from jaxmi.estimators.diagnostics import ceilings
from jaxmi.estimators.kde import pass_block_size, sweep_scales
from jaxmi.config import Config, normalize_identity
from jaxmi.results import as_path, read_json
from jaxmi.data import to_float
from jaxmi.evaluation import make_evaluator, make_forward, probe_groups, robust_report
from jaxmi.history import CONTROL_INPUTS, INPUTS, REGIMES, History, RunResult, regime_line
from jaxmi.live import LiveLog, history_line
from jaxmi.models import create_model, probe_widths
from jaxmi.probes import ModelSpecError
from jaxmi.training import create_train_states, epoch_means, make_optimizer, make_train_epoch, unstack

__all__ = ["log_line", "run_keys", "load_data", "make_run_mesh", "mi_indices", "train_and_measure", "train_pair",
           "load_trained", "Trained"]

Trained = dict[str, tuple[Any, Any]]  # {"nt": (params, batch_stats), "at": (params, batch_stats)}


def log_line(message: str) -> None:
    """The default logger: one flushed line on stdout (visible at once when redirected to a file)."""
    print(message, flush=True)


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(k_init, k_train, k_draw)`` of a seed: initial weights, training, test draw."""
    k_init, k_train, k_draw = jax.random.split(jax.random.key(seed), 3)
    return k_init, k_train, k_draw


def load_data(config: Config):
    """``(train, test, augment)``: the uint8 host splits and whether the paper augments this dataset."""
    d = config.data
    info = data_lib.dataset_info(d.dataset) if d.dataset in data_lib.DATASETS else None
    train = data_lib.load_dataset(d.dataset, "train", data_dir=d.data_dir, max_examples=d.train_examples)
    test = data_lib.load_dataset(d.dataset, "test", data_dir=d.data_dir)
    if len(test) < config.mi.samples:
        raise ValueError(f"samples={config.mi.samples} exceeds the {len(test)} test images of {d.dataset}; "
                         "lower --samples.")
    return train, test, (info.augment if info is not None else False)


def mi_indices(config: Config, num_test: int) -> np.ndarray:
    """Indices of the ``samples`` test images a run of ``config`` measures MI on."""
    return data_lib.eval_draw(run_keys(config.seed)[2], num_test, config.mi.samples)[0]


def make_run_mesh(config: Config, log: Callable[[str], None] | None = None) -> jax.sharding.Mesh:
    """The mesh a run trains on, over ``devices`` local devices (all by default).

    One seed: a ``("data",)`` mesh; with all devices requested, the count is lowered to the
    largest one that divides the batch size (and logged); an explicit count that does not
    divide it is an error. K > 1 seeds: a ``("seeds", "data")`` mesh whose seed axis is the
    largest divisor of K that leaves a data axis dividing the batch, so that K seeds and D
    devices use all of them (e.g. K = 2 on 8 devices: 2 groups of 4, each seed's batch split 4 ways).
    """
    available = len(jax.local_devices())
    devices, batch = config.exec.devices, config.optim.batch_size
    if devices is not None:
        if devices > available:
            raise ValueError(f"devices={devices} but only {available} local {backend.platform()} device(s) exist; "
                             f"pass --devices {available} or fewer.")
        if config.seeds == 1 and batch % devices:
            raise ValueError(f"batch_size {batch} is not divisible by devices={devices}; choose a batch size that is "
                             "a multiple of the device count, or other --devices.")
        n = devices
    else:
        n = available
    if config.seeds > 1:
        for s in sorted((s for s in range(1, config.seeds + 1) if config.seeds % s == 0), reverse=True):
            if n % s == 0 and batch % (n // s) == 0:
                return parallel.make_mesh(n, seeds=s)
        return parallel.make_mesh(1, seeds=1)
    if devices is None:
        n = parallel.usable_device_count(batch, available)
        if n != available and log is not None:
            log(f"using {n} of {available} devices: batch size {batch} is not divisible by {available}")
    return parallel.make_mesh(n)


@dataclasses.dataclass
class _Setup:
    """What one run builds before its first epoch."""

    module: Any
    num_classes: int
    input_shape: tuple[int, ...]
    augment: bool
    test: Any
    x_train: jax.Array
    y_train: jax.Array
    steps_per_epoch: int
    tx: Any
    init_states: Any
    train_keys: jax.Array  # [K]
    draw_key: jax.Array
    mesh: jax.sharding.Mesh
    train_source: str


def _setup(config: Config, mesh: jax.sharding.Mesh | None, log) -> _Setup:
    mesh = make_run_mesh(config, log) if mesh is None else mesh
    if config.optim.batch_size % parallel.data_size(mesh):
        raise ValueError(f"batch_size {config.optim.batch_size} is not divisible by the mesh's "
                         f"{parallel.data_size(mesh)} data devices.")
    train, test, augment = load_data(config)
    module = create_model(config.model.name, train.num_classes, precision=config.model.precision)
    x_train, y_train = data_lib.as_device_arrays(train, parallel.replicated(mesh))
    steps_per_epoch = int(x_train.shape[0]) // config.optim.batch_size
    tx = make_optimizer(config.optim, steps_per_epoch)
    # Seed k of K uses the keys of a single run with seed config.seed + k; the test draw is seed 0's.
    keys = jax.vmap(lambda s: jnp.stack(run_keys(s)))(config.seed + jnp.arange(config.seeds))
    input_shape = tuple(train.images.shape[1:])
    init_states = parallel.place_states(create_train_states(module, keys[:, 0], input_shape, tx), mesh)
    return _Setup(module, train.num_classes, input_shape, augment, test, x_train, y_train, steps_per_epoch, tx,
                  init_states, keys[:, 1], run_keys(config.seed)[2], mesh, train.source)


def _epoch_fns(config: Config, s: _Setup, show_progress: bool) -> dict[str, Callable]:
    attacks = {"nt": None, "at": config.pgd(random_start=True)}
    return {r: make_train_epoch(s.module, s.tx, num_examples=int(s.x_train.shape[0]),
                                batch_size=config.optim.batch_size, attack=attacks[r], augment=s.augment,
                                show_progress=show_progress, loop=config.exec.loop, mesh=s.mesh,
                                seed_loop=config.exec.seed_loop, attack_loop=config.exec.attack_loop,
                                eps_warmup_steps=config.attack.warmup_steps(s.steps_per_epoch) if r == "at" else 0)
            for r in REGIMES}


def _mi_lists(per_probe: dict[str, dict[str, dict[str, float]]], methods) -> dict[str, dict[str, list[float]]]:
    """``{probe: {method: {key: v}}}`` → ``{method: {key: [v per probe]}}``."""
    first = next(iter(per_probe.values()))
    return {m: {k: [per_probe[p][m][k] for p in per_probe] for k in first[m]} for m in methods}


class _Measurer:
    """The per-measurement evaluation of a run: test metrics and MI of every seed.

    Memory stays bounded by one probe layer: the metrics and the PGD examples of the MI draw
    come from one batched pass, then the probes are computed a group at a time (no group
    wider than the widest probe, :func:`jaxmi.evaluation.probe_groups`), for one model and
    one kind of inputs at a time, estimated and released.
    """

    def __init__(self, config: Config, s: _Setup):
        self.config, self.s = config, s
        self.layers = list(s.module.probe_names)  # model order (jit returns dicts sorted by key)
        repl = parallel.replicated(s.mesh)
        x_test, y_test = data_lib.as_device_arrays(s.test, repl)
        mi_idx, rest_idx = data_lib.eval_draw(s.draw_key, int(x_test.shape[0]), config.mi.samples,
                                              config.data.eval_samples)
        self.x_mi, self.y_mi = x_test[mi_idx], y_test[mi_idx]
        self.y_mi_host = np.asarray(self.y_mi)
        self.rest = (x_test[rest_idx], y_test[rest_idx]) if len(rest_idx) else None
        self.train0 = (s.x_train[:config.mi.samples], s.y_train[:config.mi.samples])
        self.n_eval = len(mi_idx) + len(rest_idx)
        batching = dict(batch_size=config.exec.eval_batch_size, loop=config.exec.loop,
                        mesh=s.mesh, seed_loop=config.exec.seed_loop)
        attack = config.pgd()
        self.evaluate_mi = make_evaluator(s.module, attack, with_adversarial=True, attack_loop=config.exec.attack_loop,
                                          **batching)
        self.evaluate = make_evaluator(s.module, attack, attack_loop=config.exec.attack_loop, **batching)
        self.groups = probe_groups(probe_widths(s.module, s.input_shape))
        self.forward = {g: make_forward(s.module, with_probes=g, with_probs=False, stacked=False, **batching)
                        for g in self.groups}
        mi = config.mi
        self.options = dict(methods=mi.estimators, num_classes=s.num_classes, noise_var=mi.noise_var,
                            bin_size=mi.bin_size)
        if any(m in ("kde_upper", "kde_lower") for m in mi.estimators):
            self.options["precision"] = config.exec.kde_precision
            if mi.noise_scale != "absolute":
                self.options["noise_scale"] = mi.noise_scale
        if mi.bootstrap:
            self.options.update(bootstrap=mi.bootstrap, key=jax.random.fold_in(s.draw_key, 1))
        # KDE block sizes fixed once per probe (from the free memory now), so that no epoch
        # recompiles the estimators when the free memory changes.
        widths = probe_widths(s.module, s.input_shape)
        n = len(mi_idx)
        self.blocks = {p: pass_block_size(n, w, num_classes=s.num_classes, resamples=1 + mi.bootstrap)
                       for p, w in widths.items()}
        self.sweep_blocks = {p: pass_block_size(n, w, num_classes=s.num_classes,
                                                scales=sweep_scales(mi.sweep_noise_vars)) for p, w in widths.items()}
        c_xt, c_ty = ceilings(self.y_mi_host)
        self.ceilings = {"I_XT": c_xt, "I_TY": c_ty}
        swept = [m for m in mi.estimators if m in ("kde_upper", "kde_lower", "binning")]
        self.sweep_grid = None if not (mi.sweep and swept) else {
            "noise_var": list(mi.sweep_noise_vars), "bin_size": list(mi.sweep_bin_sizes), "estimators": swept,
            "noise_scale": mi.noise_scale}
        self.sweep_epochs = {0, config.optim.epochs} if self.sweep_grid else set()
        self.inputs = INPUTS + (CONTROL_INPUTS if mi.noise_control else ())

    def _sweep(self, probe: str, a) -> dict[str, dict[str, list]]:
        """``{estimator: {quantity: [value]}}`` of one probe over the σ² and bin-size grids."""
        grid, mi, c = self.sweep_grid, self.config.mi, self.s.num_classes
        out: dict[str, dict[str, list]] = {}
        if any(m != "binning" for m in grid["estimators"]):
            res = estimators.sweep_kde_bounds(a, self.y_mi_host, grid["noise_var"], num_classes=c,
                                              noise_scale=mi.noise_scale, precision=self.config.exec.kde_precision,
                                              block_size=self.sweep_blocks[probe])
            out.update({m: res[m] for m in grid["estimators"] if m != "binning"})
        if "binning" in grid["estimators"]:
            res = estimators.sweep_bins(a, self.y_mi_host, grid["bin_size"], num_classes=c)
            out["binning"] = {q: res[q] for q in ("I_XT", "I_TY")}
        return out

    def _information(self, params, batch_stats, x_adv, swept: bool):
        """One model's estimates (and sweeps) on clean and adversarial inputs, a probe group at a time."""
        res: dict[str, dict[str, Any]] = {i: {} for i in self.inputs}
        sweeps: dict[str, dict[str, Any]] = {i: {} for i in INPUTS}
        sources = {"clean": self.x_mi_float, "adv": x_adv, "noise": self.x_mi_noise}
        for group, forward in self.forward.items():
            for inputs in self.inputs:
                probes = forward(params, batch_stats, sources[inputs], self.y_mi)["probes"]
                for p in group:
                    a = probes[p].reshape(probes[p].shape[0], -1)
                    res[inputs][p] = estimators.estimate(a, self.y_mi_host, block_size=self.blocks[p], **self.options)
                    if swept and inputs in INPUTS:
                        sweeps[inputs][p] = self._sweep(p, a)
                del probes
        mi = {i: _mi_lists({p: res[i][p] for p in self.layers}, self.config.mi.estimators) for i in self.inputs}
        if not swept:
            return mi, None
        sweep = {i: {m: {q: [sweeps[i][p][m][q] for p in self.layers] for q in ("I_XT", "I_TY")}
                     for m in self.sweep_grid["estimators"]} for i in INPUTS}
        return mi, sweep

    @functools.cached_property
    def x_mi_float(self):
        return to_float(self.x_mi)

    @functools.cached_property
    def x_mi_noise(self):
        """The control inputs: the MI draw plus random-sign noise of the attack's ε (an L∞
        perturbation as large as the adversarial one, in no particular direction), clipped to
        [0, 1]; one fixed draw of signs for the whole run."""
        x = self.x_mi_float
        signs = jax.random.rademacher(jax.random.fold_in(self.s.draw_key, 3), x.shape, dtype=x.dtype)
        return jnp.clip(x + self.config.pgd().eps * signs, 0.0, 1.0)

    def __call__(self, regime: str, states, train_means: list[dict[str, float]] | None, epoch: int
                 ) -> list[tuple[dict, dict, dict | None]]:
        """``[(metrics, mi, sweep)]`` per seed, ready for :meth:`History.record`."""
        r = self.evaluate_mi(states.params, states.batch_stats, self.x_mi, self.y_mi)
        x_adv = r.pop("adv_inputs")
        parts = [r] + ([self.evaluate(states.params, states.batch_stats, *self.rest)] if self.rest else [])
        host = [jax.device_get(p) for p in parts]
        cat = {k: np.concatenate([p[k] for p in host], axis=1) for k in host[0]}  # [K, N]
        if train_means is None:  # epoch 0: evaluate the initial weights on training images
            t = jax.device_get(self.evaluate(states.params, states.batch_stats, *self.train0))
            key = "clean" if regime == "nt" else "adv"
            train_means = [{"accuracy": float(c.mean()), "loss": float(loss.mean())}
                           for c, loss in zip(t[f"{key}_correct"], t[f"{key}_loss"])]
        out = []
        for k, tm in enumerate(train_means):
            metrics = {"train_acc": tm["accuracy"], "train_loss": tm["loss"]}
            for inputs in INPUTS:
                metrics[f"test_{inputs}_acc"] = float(cat[f"{inputs}_correct"][k].mean())
                metrics[f"test_{inputs}_loss"] = float(cat[f"{inputs}_loss"][k].mean())
            params, batch_stats = jax.tree.map(lambda a, k=k: a[k], (states.params, states.batch_stats))
            mi, sweep = self._information(params, batch_stats, x_adv[k], epoch in self.sweep_epochs)
            out.append((metrics, mi, sweep))
        return out


def _robust_images(config: Config, s: _Setup) -> tuple[jax.Array, jax.Array]:
    """The first ``robust_samples`` images of the run's evaluation draw (the MI draw first)."""
    mi_idx, rest_idx = data_lib.eval_draw(s.draw_key, len(s.test.labels), config.mi.samples,
                                          config.data.eval_samples)
    idx = np.concatenate([mi_idx, rest_idx])[:config.attack.robust_samples]
    return to_float(jnp.asarray(s.test.images[idx])), jnp.asarray(s.test.labels[idx], jnp.int32)


def _robust_evaluation(config: Config, s: _Setup, regime: str, states, log) -> list[dict[str, Any]]:
    """Every seed's final model under the AutoAttack-style ensemble (:func:`jaxmi.evaluation.robust_report`)."""
    t0 = time.perf_counter()
    x, y = _robust_images(config, s)  # the same images for every seed
    reports = []
    for k, st in enumerate(unstack(jax.device_get(states), config.seeds)):
        r = robust_report(s.module, st.params, st.batch_stats, x, y, attack=config.pgd(),
                          key=jax.random.fold_in(jax.random.fold_in(s.draw_key, 2), k),
                          steps=config.attack.robust_steps)
        reports.append(r)
        who = f"[{regime.upper()}]" + ("" if config.seeds == 1 else f" seed {config.seed + k}")
        log(f"{who} robust accuracy on {r['samples']} test images at eps {r['eps']:.4g}: clean {r['clean_acc']:.4f}, "
            f"PGD-{r['pgd_paper_steps']} {r['pgd_paper_acc']:.4f}, AutoAttack-style ensemble {r['robust_acc']:.4f} "
            f"(APGD-CE alone {r['attack_acc']['apgd-ce']:.4f}; {time.perf_counter() - t0:.1f} s)")
        for m in r["messages"]:
            log(f"warning: {m}")
    return reports


def _run(config: Config, *, measure: bool, workdir, log, show_progress: bool, mesh) -> tuple[_Setup, Any, dict]:
    """The one training loop of NT and AT (with per-epoch measurements when ``measure``)."""
    progress.enabled(show_progress)
    backend.enable_compile_cache(config.exec.compile_cache)
    s = _setup(config, mesh, log)
    epoch_fns = _epoch_fns(config, s, show_progress)
    measurer = _Measurer(config, s) if measure else None
    layers = list(s.module.probe_names)

    def new_history():
        if measure:
            return History.empty(config.mi.estimators, with_se=bool(config.mi.bootstrap), inputs=measurer.inputs)
        return {"train_acc": [], "train_loss": []}

    histories = [{r: new_history() for r in REGIMES} for _ in range(config.seeds)]
    timing: dict[str, Any] = {r: {"epoch_seconds": [], "measure_seconds": []} for r in REGIMES}
    robust: dict[str, list[dict[str, Any]]] = {}  # regime -> per-seed robust evaluation of its final model
    identity = {**config.identity(), **({} if measure else {"measure": False})}
    ckpt = resumed = None
    if workdir is not None:
        ckpt = RunCheckpointer(workdir, identity, regimes=REGIMES, epochs=config.optim.epochs,
                               normalize=normalize_identity)
        resumed = ckpt.restore_latest(s.init_states)
        if resumed is not None:
            stored = resumed.record["history"]
            histories = [{r: (History.from_dict(h[r]) if measure else h[r]) for r in REGIMES} for h in stored]
            timing = resumed.record["timing"]
            robust = dict(resumed.record.get("robust") or {})
            log(f"resuming from the checkpoint after {resumed.regime.upper()} epoch {resumed.epoch} in {ckpt.path}")
        live = LiveLog(workdir, REGIMES, resume=None if resumed is None else (resumed.regime, resumed.epoch))

    def record(regime: str, states, train_means, epoch: int) -> None:
        if measure:
            for h, (metrics, mi, sweep) in zip(histories, measurer(regime, states, train_means, epoch)):
                h[regime].record(metrics, mi, sweep, epoch)
        else:
            for h, tm in zip(histories, train_means):
                h[regime]["train_acc"].append(tm["accuracy"])
                h[regime]["train_loss"].append(tm["loss"])

    def publish(regime: str, epoch: int, **seconds: float) -> None:
        """The measurement just recorded, as live metrics (metrics.jsonl, TensorBoard)."""
        if ckpt is None:
            return
        for k, h in enumerate(histories):
            metrics, mi = history_line(h[regime], layers, measure)
            live.write(regime, epoch, k, metrics, mi, **seconds)

    def line(regime: str) -> str:
        def one(h):
            if measure:
                return regime_line(h)
            return f"train acc {h['train_acc'][-1]:.4f} loss {h['train_loss'][-1]:.4f}"
        if config.seeds == 1:
            return one(histories[0][regime])
        return "; ".join(f"seed {config.seed + k}: {one(h[regime])}" for k, h in enumerate(histories))

    def save(regime: str, epoch: int, states) -> None:
        if ckpt is None:
            return
        if epoch == config.optim.epochs:  # this regime is done: keep its models (before the checkpoint saying so)
            info = {"config": config.flat(), "num_classes": s.num_classes, "input_shape": list(s.input_shape),
                    "layers": layers}
            host = jax.device_get(states)  # sliced on the host: no compiled slices of every parameter
            for k, st in enumerate(unstack(host, config.seeds)):  # seed 0 as "nt"/"at", then "nt_seed1", ...
                save_model(workdir, regime if k == 0 else f"{regime}_seed{k}", st.params, st.batch_stats, info)
        ckpt.save(regime, epoch, states, {"seed": config.seed, "timing": timing, "robust": robust,
                                           "history": [{r: (h[r].to_dict() if measure else h[r]) for r in REGIMES}
                                                       for h in histories]})

    final: dict[str, Any] = {}
    try:
        for regime in REGIMES:
            if resumed is not None and REGIMES.index(regime) < REGIMES.index(resumed.regime):
                continue  # finished before the interruption: its models are saved
            if resumed is not None and regime == resumed.regime:
                states, start = resumed.state, resumed.epoch + 1
            else:
                states, start = jax.tree.map(jnp.copy, s.init_states), 1  # NT and AT start from the same weights
                if measure:
                    t0 = time.perf_counter()
                    record(regime, states, None, 0)
                    publish(regime, 0, measure_seconds=time.perf_counter() - t0)
                    save(regime, 0, states)
                    log(f"[{regime.upper()}] epoch 0: {line(regime)} ({time.perf_counter() - t0:.1f} s)")
            for epoch in range(start, config.optim.epochs + 1):
                t0 = time.perf_counter()
                with progress.bar(s.steps_per_epoch, f"{regime.upper()} epoch {epoch}/{config.optim.epochs}"):
                    keys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(s.train_keys)
                    states, metrics = epoch_fns[regime](states, s.x_train, s.y_train, keys)
                    means = epoch_means(metrics)
                bad = [m["loss"] for m in means if not np.isfinite(m["loss"])]
                if bad:
                    raise FloatingPointError(f"{regime.upper()} training loss became {bad[0]} in epoch {epoch}; "
                                             "lower --lr.")
                train_s = time.perf_counter() - t0
                record(regime, states, means, epoch)
                measure_s = time.perf_counter() - t0 - train_s
                timing[regime]["epoch_seconds"].append(train_s)
                timing[regime]["measure_seconds"].append(measure_s)
                publish(regime, epoch, epoch_seconds=train_s, measure_seconds=measure_s)
                tail = f"train {train_s:.1f} s, measure {measure_s:.1f} s" if measure else f"{train_s:.1f} s"
                log(f"[{regime.upper()}] epoch {epoch}: {line(regime)} ({tail})")
                if epoch == config.optim.epochs and config.attack.robust_samples:
                    t0 = time.perf_counter()
                    robust[regime] = _robust_evaluation(config, s, regime, states, log)
                    timing[regime]["robust_seconds"] = time.perf_counter() - t0
                save(regime, epoch, states)
            final[regime] = states
    finally:
        if ckpt is not None:
            ckpt.close()
            live.close()
    timing.update(devices=s.mesh.size, backend=backend.platform(), seeds=config.seeds,
                  resumed_from=None if resumed is None else {"regime": resumed.regime, "epoch": resumed.epoch})
    return s, final, {"histories": histories, "timing": timing, "measurer": measurer, "robust": robust}


def train_and_measure(config: Config, *, log: Callable[[str], None] = log_line, show_progress: bool = True,
                      workdir: str | os.PathLike | None = None,
                      mesh: jax.sharding.Mesh | None = None) -> RunResult:
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
      mesh: the device mesh; ``None``: :func:`make_run_mesh`.

    Returns:
      A :class:`~jaxmi.history.RunResult`; ``timing`` holds wall-clock seconds per epoch.

    Raises:
      jaxmi.checkpoint.CheckpointError: the checkpoint in ``workdir`` is unreadable or was
        written by another configuration.
    """
    s, _, out = _run(config, measure=True, workdir=workdir, log=log, show_progress=show_progress, mesh=mesh)
    m = out["measurer"]
    data_info = {"train": s.train_source, "test": s.test.source, "train_examples": int(s.x_train.shape[0]),
                 "eval_examples": m.n_eval, "mi_samples": config.mi.samples}
    result = RunResult(layers=list(s.module.probe_names), epochs_measured=list(range(config.optim.epochs + 1)),
                       num_classes=s.num_classes, data=data_info, seeds=[config.seed + k for k in range(config.seeds)],
                       histories=out["histories"], timing=out["timing"], ceilings=m.ceilings,
                       sweep_grid=m.sweep_grid, robust=out["robust"])
    warning = result.summary_fields()["saturation"]["warning"]
    if warning:
        log(f"warning: {warning}")
    return result


def train_pair(config: Config, *, log: Callable[[str], None] = log_line, show_progress: bool = True,
               workdir: str | os.PathLike | None = None) -> tuple[Any, Trained, dict[str, Any]]:
    """Trains NT and PGD-AT copies of one model from the same initial weights, without measurements.

    The same keys, data order and schedule as :func:`train_and_measure`, so for equal configs
    the models are the same. With ``workdir``, checkpoints after every epoch (a stopped run
    resumes) and the trained models go there (readable by :func:`load_trained`).

    Returns:
      ``(module, {"nt": (params, batch_stats), "at": (...)}, history)`` with per-epoch training
      accuracy and loss of each regime in ``history[regime]``, and its final model's robust
      evaluation in ``history[regime]["robust"]`` (unless ``robust_samples`` is 0).
    """
    if config.seeds > 1:
        raise ValueError(f"seeds={config.seeds}: train_pair gives one NT/AT pair; run the finding per seed "
                         "(what --seeds does for findings 3 and 4).")
    s, final, out = _run(config, measure=False, workdir=workdir, log=log, show_progress=show_progress, mesh=None)
    trained: Trained = {}
    for regime in REGIMES:
        if regime in final:
            st = unstack(final[regime], 1)[0]
            trained[regime] = (st.params, st.batch_stats)
        else:  # finished before an interruption: saved
            trained[regime] = load_models(workdir, (regime,))[1][regime]
    history = {r: dict(h) for r, h in out["histories"][0].items()}
    for regime, reports in out["robust"].items():
        history[regime]["robust"] = reports[0]
    return s.module, trained, history


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
    except ModelSpecError as e:
        raise CheckpointError(f"the models in {workdir} were trained with the model "
                              f"{meta['config'].get('model')!r}, which cannot be rebuilt here: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the configuration stored with the models in {workdir} is unusable ({e}); "
                              "rerun the experiment with --overwrite.") from None
    if seed_index:
        config = config.replace(seed=config.seed + seed_index, seeds=1)
    module = create_model(config.model.name, int(meta["num_classes"]), precision=config.model.precision)
    return config, module, variables
