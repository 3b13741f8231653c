"""The plan of a run: every decision its configuration leaves open, made once.

A :class:`~jaxmi.config.Config` says what a run is; it holds "auto" strings and the paper's
defaults, and checks nothing that needs a device, the data or a model. :func:`resolve` turns
it into a :class:`RunPlan`, deciding each open choice exactly once:

* **execution** (:class:`Execution`): the epoch loop (scan or host-dispatched chunks), how
  stacked seeds share a program (vmap or map), whether PGD iterations are unrolled, the KDE
  product precision, and the device mesh. This module is the only caller of
  ``jaxmi.backend.resolve_*``; everything downstream takes these values as they are.
* **data and model**: the train and test splits, the model (built for the dataset's number of
  classes and checked against the probe protocol once), its input shape and probe widths.
* **optimizer**: SGD with the schedule in the run's steps per epoch
  (:func:`jaxmi.training.make_optimizer`).
* **attacks**: the training PGD (random start, with the ε warm-up in optimizer steps) and the
  evaluation PGD (from the clean image), as :class:`jaxmi.attacks.PGDConfig`.
* **keys and draws**: per seed ``(k_init, k_train, k_draw) = split(key(seed + k), 3)``
  (:func:`run_keys`); the MI draw, the rest of the evaluation set and the robust-evaluation
  images, as indices into the test split (:class:`Draws`), computed once.
* **MI**: the probe groups a measurement holds at a time, the KDE block size per probe (fixed
  from the free memory now, so no epoch recompiles), the estimator options, the σ²/bin grids
  of the sweep and the epochs it runs at.

The flow of a run is then ``config → plan → states → epoch loop → measure → history``
(docs/library.md, "How a run flows").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import backend, parallel
from jaxmi import data as data_lib
from jaxmi.attacks import PGDConfig
from jaxmi.config import Config
from jaxmi.estimators.diagnostics import ceilings
from jaxmi.estimators.joint_pass import joint_block_size
from jaxmi.estimators.kde import pass_block_size, sweep_scales
from jaxmi.estimators.scale_free import scale_free_scales
from jaxmi.history import CONTROL_INPUTS, INPUTS
from jaxmi.models import create_model
from jaxmi.probes import check_model
from jaxmi.training import make_optimizer

__all__ = ["Execution", "Draws", "MIPlan", "RunPlan", "resolve", "precheck", "execution", "pgd_config", "run_keys", "run_mesh",
           "mi_indices", "probe_groups"]


@dataclasses.dataclass(frozen=True)
class Execution:
    """How a run's compiled programs execute: every choice concrete (no "auto").

    Attributes:
      loop: ``"scan"`` (one compiled loop over batches) or ``"unrolled"`` (compiled chunks
        dispatched from the host), for training epochs and evaluation passes alike.
      seed_loop: ``"vmap"`` or ``"map"``: how K > 1 stacked seeds share a program.
      attack_unroll: PGD iterations unrolled at compile time (True) or a compiled loop.
      kde_precision: ``"highest"``, ``"high"`` or ``"default"``.
      eval_batch_size: images per compiled evaluation batch.
      mesh: the device mesh (``("data",)``, or ``("seeds", "data")`` for K > 1 seeds).
      wait: what the host does with each dispatched call of a host loop
        (:func:`jaxmi.backend.dispatch_wait` of the mesh; decided when left out).
    """

    loop: str
    seed_loop: str
    attack_unroll: bool
    kde_precision: str
    eval_batch_size: int
    mesh: jax.sharding.Mesh | None = None
    wait: Callable | None = None

    def __post_init__(self):
        if self.wait is None:
            object.__setattr__(self, "wait", backend.dispatch_wait(self.mesh))

    def batching(self, *, stacked: bool = True, batch_size: int | None = None) -> dict[str, Any]:
        """Keyword arguments of :func:`jaxmi.evaluation.batched_core` (and the passes built on it)."""
        return dict(batch_size=self.eval_batch_size if batch_size is None else batch_size, loop=self.loop,
                    mesh=self.mesh, seed_loop=self.seed_loop, stacked=stacked, wait=self.wait)


@dataclasses.dataclass(frozen=True)
class Draws:
    """Indices into the test split: the MI draw, the rest of the evaluation set, the robust images."""

    mi: np.ndarray  # [samples]
    rest: np.ndarray  # [eval_samples - samples]
    robust: np.ndarray  # [robust_samples]: the evaluation draw's first images (the MI draw first)


@dataclasses.dataclass(frozen=True)
class MIPlan:
    """What a measurement estimates, and how."""

    estimators: tuple[str, ...]
    options: dict[str, Any]  # keyword arguments of jaxmi.estimators.estimate (without block_size)
    groups: list[tuple[str, ...]]  # probes held at a time (jaxmi.plan.probe_groups)
    blocks: dict[str, int]  # KDE block size per probe
    sweep_blocks: dict[str, int]  # KDE block size per probe for the σ² sweep
    joint_blocks: dict[tuple[str, bool], int]  # joint-pass block size per (probe, with the scale-free sweep)
    sweep_grid: dict[str, Any] | None  # {"noise_var", "bin_size", "estimators", "noise_scale"}; None: no sweep
    sweep_epochs: frozenset[int]
    inputs: tuple[str, ...]  # clean, adv (and noise, unrelated with the controls)
    ceilings: dict[str, float]  # {"I_XT": log2 N, "I_TY": H(Y)} of the draw


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """A run with every open choice decided (:func:`resolve`)."""

    config: Config
    execution: Execution
    train: data_lib.ArrayDataset
    test: data_lib.ArrayDataset
    augment: bool
    module: Any
    num_classes: int
    input_shape: tuple[int, ...]
    layers: tuple[str, ...]  # probe names in model order
    steps_per_epoch: int
    tx: Any  # the optimizer (optax), its schedule in the plan's steps per epoch
    attack_train: PGDConfig  # random start
    attack_eval: PGDConfig  # from the clean image
    eps_warmup_steps: int
    init_keys: jax.Array  # [K]
    train_keys: jax.Array  # [K]
    draw_key: jax.Array  # seed `seed`'s: every seed is measured on the same draw
    draws: Draws
    mi: MIPlan

    @property
    def seeds(self) -> list[int]:
        return [self.config.seed + k for k in range(self.config.seeds)]


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(k_init, k_train, k_draw)`` of a seed: initial weights, training, test draw."""
    k_init, k_train, k_draw = jax.random.split(jax.random.key(seed), 3)
    return k_init, k_train, k_draw


def pgd_config(config: Config, *, random_start: bool = False) -> PGDConfig:
    """The run's PGD attack (evaluation: ``random_start=False``; training: True)."""
    eps, step_size, steps = config.attack_values()
    return PGDConfig(eps=eps, step_size=step_size, steps=steps, random_start=random_start)


def run_mesh(config: Config, log: Callable[[str], None] | None = None) -> jax.sharding.Mesh:
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


def execution(config: Config, mesh: jax.sharding.Mesh | None = None) -> Execution:
    """The :class:`Execution` of ``config``'s ``exec`` section on this platform (its
    ``compile_cache``, when set, is switched on here: :func:`jaxmi.backend.enable_compile_cache`)."""
    e = config.exec
    backend.enable_compile_cache(e.compile_cache)
    return Execution(loop=backend.resolve_loop(e.loop), seed_loop=backend.resolve_seed_loop(e.seed_loop),
                     attack_unroll=backend.resolve_attack_unroll(e.attack_loop),
                     kde_precision=backend.resolve_kde_precision(e.kde_precision),
                     eval_batch_size=e.eval_batch_size, mesh=mesh)


def precheck(config: Config) -> None:
    """The checks of :func:`resolve` that need neither the data nor a device, so that a command
    line refuses a bad run before it writes anything: the model (a factory spec is imported and
    called with the dataset's number of classes, where that is known before loading).

    Raises:
      ValueError: a model that cannot be built
        (:class:`jaxmi.models.ModelSpecError`, naming the fix).
    """
    info = data_lib.DATASETS.get(config.data.dataset)
    if info is not None:  # other datasets (TFDS, local folders) tell their classes when loaded
        create_model(config.model.model, info.num_classes, precision=config.model.precision)


def mi_indices(config: Config, num_test: int) -> np.ndarray:
    """Indices of the ``samples`` test images a run of ``config`` measures MI on."""
    return data_lib.eval_draw(run_keys(config.seed)[2], num_test, config.mi.samples)[0]


def probe_groups(widths: dict[str, int]) -> list[tuple[str, ...]]:
    """Consecutive probes grouped so that no group is wider than the widest probe: a measurement
    that computes one group at a time holds at most one widest layer's activations.

    Args:
      widths: ``{probe: flattened width}`` in model order (:func:`jaxmi.models.probe_widths`).
    """
    cap = max(widths.values())
    groups: list[list[str]] = []
    total = cap + 1
    for name, w in widths.items():
        if total + w > cap:
            groups.append([])
            total = 0
        groups[-1].append(name)
        total += w
    return [tuple(g) for g in groups]


def _mi_plan(config: Config, exe: Execution, widths: dict[str, int], num_classes: int, y_mi: np.ndarray,
             draw_key: jax.Array) -> MIPlan:
    mi = config.mi
    options: dict[str, Any] = dict(methods=mi.estimators, num_classes=num_classes, noise_var=mi.noise_var,
                                   bin_size=mi.bin_size)
    if any(m in ("kde_upper", "kde_lower") for m in mi.estimators):
        options["precision"] = exe.kde_precision
        if mi.noise_scale != "absolute":
            options["noise_scale"] = mi.noise_scale
    if mi.bootstrap:
        options.update(bootstrap=mi.bootstrap, key=jax.random.fold_in(draw_key, 1))
    n = len(y_mi)
    blocks = {p: pass_block_size(n, w, num_classes=num_classes, resamples=1 + mi.bootstrap) for p, w in widths.items()}
    sweep_blocks = {p: pass_block_size(n, w, num_classes=num_classes, scales=sweep_scales(mi.sweep_noise_vars))
                    for p, w in widths.items()}
    swept = [m for m in mi.estimators if m in ("kde_upper", "kde_lower", "binning")]
    grid = None if not (mi.sweep and swept) else {
        "noise_var": list(mi.sweep_noise_vars), "bin_size": list(mi.sweep_bin_sizes), "estimators": swept,
        "noise_scale": mi.noise_scale}
    # the joint pass of a swept measurement (estimate, σ² sweep and, on clean inputs, the scale-free sweep)
    joint_blocks = {(p, sf): joint_block_size(n, w, resamples=1 + mi.bootstrap, unit=sweep_scales(mi.sweep_noise_vars),
                                              full=2 + (scale_free_scales() if sf else 0))
                    for p, w in widths.items() for sf in (False, True)}
    c_xt, c_ty = ceilings(y_mi)
    return MIPlan(estimators=tuple(mi.estimators), options=options, groups=probe_groups(widths), blocks=blocks,
                  sweep_blocks=sweep_blocks, joint_blocks=joint_blocks, sweep_grid=grid,
                  sweep_epochs=frozenset({0, config.optim.epochs} if grid else ()),
                  inputs=INPUTS + (CONTROL_INPUTS if mi.noise_control else ()), ceilings={"I_XT": c_xt, "I_TY": c_ty})


def resolve(config: Config, *, mesh: jax.sharding.Mesh | None = None,
            log: Callable[[str], None] | None = None) -> RunPlan:
    """Every decision ``config`` leaves open, made once (see the module docstring).

    Args:
      config: the run.
      mesh: the device mesh; ``None``: :func:`run_mesh`.
      log: where a note on the device count goes.

    Raises:
      ValueError: the data, the model or the devices do not fit the configuration (the
        message names the setting to change).
    """
    mesh = run_mesh(config, log) if mesh is None else mesh
    if config.optim.batch_size % parallel.data_size(mesh):
        raise ValueError(f"batch_size {config.optim.batch_size} is not divisible by the mesh's "
                         f"{parallel.data_size(mesh)} data devices.")
    exe = execution(config, mesh)
    d = config.data
    info = data_lib.dataset_info(d.dataset) if d.dataset in data_lib.DATASETS else None
    train = data_lib.load_dataset(d.dataset, "train", data_dir=d.data_dir, max_examples=d.train_examples)
    test = data_lib.load_dataset(d.dataset, "test", data_dir=d.data_dir)
    if d.train_examples is not None and len(train) < d.train_examples:
        raise ValueError(f"train_examples={d.train_examples} exceeds the {len(train)} training images of "
                         f"{d.dataset}; lower --train-examples (or leave it out to train on all of them).")
    if len(train) < config.optim.batch_size:
        raise ValueError(f"batch_size {config.optim.batch_size} is larger than the {len(train)} training images of "
                         f"{d.dataset}; lower --batch-size.")
    if len(test) < config.mi.samples:
        raise ValueError(f"samples={config.mi.samples} exceeds the {len(test)} test images of {d.dataset}; "
                         "lower --samples.")
    module = create_model(config.model.model, train.num_classes, precision=config.model.precision)
    input_shape = tuple(train.images.shape[1:])
    widths = check_model(module, input_shape)  # once: everything downstream takes the checked module
    steps_per_epoch = len(train) // config.optim.batch_size
    # Seed k of K uses the keys of a single run with seed config.seed + k; the test draw is seed 0's.
    keys = jax.vmap(lambda s: jnp.stack(run_keys(s)))(config.seed + jnp.arange(config.seeds))
    draw_key = run_keys(config.seed)[2]
    mi_idx, rest_idx = data_lib.eval_draw(draw_key, len(test), config.mi.samples, d.eval_samples)
    robust_idx = np.concatenate([mi_idx, rest_idx])[:config.attack.robust_samples]
    draws = Draws(mi_idx, rest_idx, robust_idx)
    return RunPlan(config=config, execution=exe, train=train, test=test,
                   augment=info.augment if info is not None else False, module=module,
                   num_classes=train.num_classes, input_shape=input_shape, layers=tuple(module.probe_names),
                   steps_per_epoch=steps_per_epoch, tx=make_optimizer(config.optim, steps_per_epoch),
                   attack_train=pgd_config(config, random_start=True), attack_eval=pgd_config(config), eps_warmup_steps=config.attack.warmup_steps(steps_per_epoch),
                   init_keys=keys[:, 0], train_keys=keys[:, 1], draw_key=draw_key, draws=draws,
                   mi=_mi_plan(config, exe, widths, train.num_classes, test.labels[mi_idx].astype(np.int32),
                               draw_key))
