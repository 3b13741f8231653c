"""Normal (NT) and Madry PGD adversarial training (AT), compiled epochs.

The training set lives on the device as uint8; an epoch walks minibatches of a keyed
permutation (the last partial batch is dropped so shapes stay static), with conversion to
float, augmentation and the PGD attack inside the compiled step. Nothing syncs to the host
inside an epoch: per-batch metrics come back as arrays when it ends, and a progress bar
advances from inside compiled code through ``jax.debug.callback``.

On GPU/TPU an epoch is one ``lax.scan``. On CPU, XLA runs convolutions inside loop bodies
about 4× slower than outside them (jax-ml/jax#12868; measured here: a LeNet step took
61 ms inside a scan and 13 ms outside), so there the epoch is a host loop that dispatches
compiled chunks of unrolled steps asynchronously (:func:`resolve_loop`).

Schedule as in the paper, but stepped per *epoch* (the published code steps it per batch,
so its milestones are really iterations): SGD with momentum 0.9, learning rate 0.1 halved
at epochs 20 and 60, no weight decay.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmi import parallel, progress
from jaxmi.attacks import PGDConfig, pgd
from jaxmi.data import augment_crop_flip, to_float
from jaxmi.models import apply_model, init_variables

__all__ = [
    "OptimConfig",
    "TrainState",
    "make_optimizer",
    "create_train_state",
    "create_train_states",
    "unstack_seeds",
    "make_train_epoch",
    "make_evaluator",
    "resolve_loop",
    "resolve_seed_loop",
]

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """SGD hyperparameters (the paper's values by default)."""

    learning_rate: float = 0.1  # initial rate
    momentum: float = 0.9
    milestones: tuple[int, ...] = (20, 60)  # epochs at which the rate is multiplied by `decay`
    decay: float = 0.5
    weight_decay: float = 0.0
    batch_size: int = 128

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1; got {self.batch_size}.")


class TrainState(NamedTuple):
    """Everything an epoch updates: a pytree."""

    step: Array  # int32 scalar, optimizer steps taken
    params: Any
    batch_stats: Any
    opt_state: Any


def make_optimizer(cfg: OptimConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum and a per-epoch step schedule."""
    boundaries = {int(m) * int(steps_per_epoch): cfg.decay for m in cfg.milestones}
    schedule = optax.piecewise_constant_schedule(cfg.learning_rate, boundaries)
    parts = []
    if cfg.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    parts.append(optax.sgd(schedule, momentum=cfg.momentum))
    return optax.chain(*parts)


def create_train_state(module: nn.Module, key: Array, input_shape: tuple[int, ...],
                       tx: optax.GradientTransformation) -> TrainState:
    """Initial state: fresh variables (PyTorch-default init for MLP/LeNet) and optimizer."""
    v = init_variables(module, key, input_shape)
    return TrainState(jnp.zeros((), jnp.int32), v["params"], v["batch_stats"], tx.init(v["params"]))


def create_train_states(module: nn.Module, keys: Array, input_shape: tuple[int, ...],
                        tx: optax.GradientTransformation) -> TrainState:
    """K initial states stacked along a leading axis, one per key in ``keys`` [K].

    For ``make_train_epoch(..., num_seeds=K)``; state ``k`` equals
    ``create_train_state(module, keys[k], ...)``.
    """
    if keys.ndim != 1:
        raise ValueError(f"keys must be a 1-D array of K PRNG keys (jax.random.split(key, K)); got shape {keys.shape}.")
    return jax.vmap(lambda k: create_train_state(module, k, input_shape, tx))(keys)


def unstack_seeds(tree: Any, num_seeds: int) -> list[Any]:
    """Splits a pytree with a leading seed axis into ``num_seeds`` pytrees."""
    return [jax.tree.map(lambda a, i=i: a[i], tree) for i in range(num_seeds)]


def _ce(logits: Array, y: Array) -> Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def make_train_epoch(module: nn.Module, tx: optax.GradientTransformation, *, num_examples: int,
                     batch_size: int, attack: PGDConfig | None = None, augment: bool = False,
                     show_progress: bool = True, loop: str = "auto", chunk: int = 2,
                     mesh: jax.sharding.Mesh | None = None, num_seeds: int | None = None,
                     seed_loop: str = "auto") -> Callable:
    """Builds ``epoch(state, images, labels, key) -> (state, metrics)``, compiled, state donated.

    Args:
      module: the model.
      tx: optimizer from :func:`make_optimizer`.
      num_examples: training-set size N (static; ``N // batch_size`` steps per epoch).
      batch_size: minibatch size.
      attack: ``None`` for normal training; a :class:`PGDConfig` for Madry PGD-AT (the loss
        is taken on the PGD examples only; the attack sees the model in training mode, with
        batch statistics but without updating the running ones).
      augment: 4-px zero-padded random crop + horizontal flip on the device.
      show_progress: advance :mod:`jaxmi.progress`'s current bar from inside the scan.
      loop: ``"scan"``, ``"unrolled"`` or ``"auto"`` (see :func:`resolve_loop`).
      chunk: steps per compiled call for the ``"unrolled"`` strategy.
      mesh: a ``("data",)`` mesh (:func:`jaxmi.parallel.make_mesh`): each batch is split over
        its devices, the state stays replicated (pass it replicated, see
        :func:`jaxmi.parallel.replicate`); ``batch_size`` must divide evenly. ``None``: one device.
      num_seeds: train K independent runs at once in one compiled program (vmapped or looped
        over the seed inside each step, see ``seed_loop``): ``state`` is then K stacked states (:func:`create_train_states`) and ``key``
        K keys; every run draws its own data order, augmentation and attack noise from its key
        and matches, up to float rounding, the single run with that state and key.
        ``images``/``labels`` are shared. Not combined with ``mesh``.
      seed_loop: how the K runs share the program, see :func:`resolve_seed_loop`.

    Returns:
      A jitted function. ``images`` are uint8 [N, H, W, C] on the device, ``labels`` int32
      [N]; ``metrics`` holds per-batch ``"loss"`` and ``"accuracy"`` arrays [steps] (on the
      examples trained on: adversarial ones for AT), [K, steps] with ``num_seeds``.
    """
    steps = num_examples // batch_size
    if steps < 1:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({num_examples} examples).")
    if num_seeds is not None:
        if int(num_seeds) != num_seeds or num_seeds < 1:
            raise ValueError(f"num_seeds must be a positive integer (or None for one run); got {num_seeds}.")
        if mesh is not None:
            raise ValueError("num_seeds and mesh cannot be combined: train several seeds on one device, or one "
                             "seed data-parallel over the mesh.")
    if mesh is not None and batch_size % mesh.size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {mesh.size} devices of the mesh; "
                         "choose a multiple of the device count or fewer devices.")

    def loss_fn(params, batch_stats, x, y):
        logits, _, new_stats = apply_model(module, params, batch_stats, x, train=True)
        loss = _ce(logits, y).mean()
        return loss, (new_stats, jnp.mean(jnp.argmax(logits, -1) == y))

    def train_step(state: TrainState, x: Array, y: Array, key: Array):
        if augment:
            x = augment_crop_flip(jax.random.fold_in(key, 1), x)
        if attack is not None:
            def logits_fn(xx):
                return apply_model(module, state.params, state.batch_stats, xx, train=True)[0]

            x = jax.lax.stop_gradient(pgd(logits_fn, x, y, eps=attack.eps, step_size=attack.step_size,
                                          steps=attack.steps, key=jax.random.fold_in(key, 2),
                                          random_start=attack.random_start))
        (loss, (new_stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, x, y)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = parallel.constrain_replicated(TrainState(state.step + 1, params, new_stats, opt_state), mesh)
        return new_state, {"loss": loss, "accuracy": acc}

    loop = resolve_loop(loop)

    def one_step(st, images, labels, perm, key, i):
        idx = jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
        x, y = parallel.shard_batch((to_float(images[idx]), labels[idx]), mesh)
        return train_step(st, x, y, jax.random.fold_in(key, i + 1))

    # Several seeds: the same step over (state, data order, key) per seed; the data shared.
    step_fn = one_step if num_seeds is None else _over_seeds(one_step, (0, None, None, 0, 0, None), seed_loop)

    def run_steps(state, images, labels, perm, key, first, count: int, unroll: bool):
        def body(st, i):
            st, m = step_fn(st, images, labels, perm, key, i)
            if show_progress:
                progress.tick_from_device(i)
            return st, m

        return jax.lax.scan(body, state, first + jnp.arange(count), unroll=unroll)

    def _perm(key):
        return jax.random.permutation(jax.random.fold_in(key, 0), num_examples)

    permutation = jax.jit(_perm if num_seeds is None else jax.vmap(_perm))

    def _seed_major(metrics):  # scan stacks [steps, K]; report [K, steps]
        return metrics if num_seeds is None else jax.tree.map(lambda a: a.T, metrics)

    if loop == "scan":
        @functools.partial(jax.jit, donate_argnums=(0,))
        def epoch(state: TrainState, images: Array, labels: Array, key: Array):
            state, metrics = run_steps(state, images, labels, permutation(key), key, 0, steps, False)
            return state, _seed_major(metrics)

        return epoch

    # "unrolled": the host dispatches compiled chunks of `chunk` unrolled steps. Dispatch is
    # asynchronous and nothing is read back inside the epoch, so the device never waits.
    chunk_fn = jax.jit(run_steps, static_argnames=("count", "unroll"), donate_argnums=(0,))
    n_full, rest = divmod(steps, chunk)
    wait = _serialize_collectives(mesh)

    def epoch(state: TrainState, images: Array, labels: Array, key: Array):
        perm = permutation(key)
        metrics = []
        for c in range(n_full):
            state, m = wait(chunk_fn(state, images, labels, perm, key, jnp.int32(c * chunk), count=chunk,
                                     unroll=True))
            metrics.append(m)
        if rest:
            state, m = wait(chunk_fn(state, images, labels, perm, key, jnp.int32(n_full * chunk), count=rest,
                                     unroll=True))
            metrics.append(m)
        return state, _seed_major(jax.tree.map(lambda *ms: jnp.concatenate(ms), *metrics))

    epoch.chunk_fn = chunk_fn  # exposed for compile-cache checks
    return epoch


def _serialize_collectives(mesh) -> Callable:
    """On several *CPU* devices, waits for each dispatched call before the next one.

    Forced host devices (``--xla_force_host_platform_device_count``) run their collectives on
    a shared thread pool; with several multi-device calls in flight on a machine with few cores
    we saw the all-gather rendezvous stall. GPUs/TPUs (and one device) keep fully asynchronous
    dispatch.
    """
    if mesh is not None and mesh.size > 1 and mesh.devices.flat[0].platform == "cpu":
        return jax.block_until_ready
    return lambda x: x


def resolve_seed_loop(seed_loop: str) -> str:
    """Chooses how K seeds share one compiled program (``num_seeds``).

    ``"vmap"``: every operation batched over the seed axis (best on GPU/TPU, where one small
    model leaves the device mostly idle). ``"map"``: a ``lax.map`` over the seeds inside each
    step, the same operations as a single run done K times (best on CPU, where XLA's batched
    versions of LeNet's patch-matrix products and their gradients ran 2.5× slower than K
    unbatched ones; benchmarks/README.md). ``"auto"`` picks by backend. Both give the same
    results up to float rounding.
    """
    if seed_loop == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    if seed_loop not in ("vmap", "map"):
        raise ValueError(f"unknown seed loop {seed_loop!r}; choose 'auto', 'vmap' or 'map'.")
    return seed_loop


def resolve_loop(loop: str) -> str:
    """Chooses how an epoch loops over batches.

    ``"scan"``: the whole epoch is one compiled ``lax.scan`` (best on GPU/TPU).
    ``"unrolled"``: compiled chunks of unrolled steps dispatched asynchronously from the host
    (best on CPU, where XLA runs convolutions inside loop bodies about 4× slower than
    outside them, jax-ml/jax#12868). ``"auto"`` picks by backend.
    """
    if loop == "auto":
        return "unrolled" if jax.default_backend() == "cpu" else "scan"
    if loop not in ("scan", "unrolled"):
        raise ValueError(f"unknown loop strategy {loop!r}; choose 'auto', 'scan' or 'unrolled'.")
    return loop


def _over_seeds(fn: Callable, in_axes: tuple, seed_loop: str) -> Callable:
    """``fn`` over K stacked runs: arguments with ``in_axes`` 0 carry the seed axis, those with
    ``None`` are shared; vmapped, or a ``lax.map`` over the seeds (:func:`resolve_seed_loop`)."""
    if resolve_seed_loop(seed_loop) == "vmap":
        return jax.vmap(fn, in_axes=in_axes)

    def mapped(*args):
        def one(per_seed):
            it = iter(per_seed)
            return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes)))

        return jax.lax.map(one, tuple(a for a, ax in zip(args, in_axes) if ax == 0))

    return mapped


def _batched_map(fn: Callable, arrays: tuple, batch_size: int):
    """Applies ``fn`` to consecutive batches with ``lax.map``, padding the last one."""
    n = arrays[0].shape[0]
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    padded = [jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) for a in arrays]
    stacked = [a.reshape(nb, batch_size, *a.shape[1:]) for a in padded]
    out = jax.lax.map(lambda b: fn(*b), tuple(stacked))
    return jax.tree.map(lambda o: o.reshape(nb * batch_size, *o.shape[2:])[:n], out)


def make_evaluator(module: nn.Module, attack: PGDConfig, *, batch_size: int = 500,
                   with_probes: bool = False, loop: str = "auto",
                   mesh: jax.sharding.Mesh | None = None, num_seeds: int | None = None,
                   seed_loop: str = "auto") -> Callable:
    """Builds ``evaluate(params, batch_stats, images, labels)``, jitted.

    Runs the model in evaluation mode on clean inputs and on PGD examples (crafted against
    the same evaluation-mode model, starting from the clean image).

    Args:
      module: the model.
      attack: the evaluation attack.
      batch_size: images per compiled batch (memory only; results do not depend on it).
      with_probes: also return the probe activations on clean and adversarial inputs.
      loop: batch loop strategy, as in :func:`resolve_loop`.
      mesh: a ``("data",)`` mesh: each batch is split over its devices (``batch_size`` is
        rounded up to a multiple of the device count). ``None``: one device.
      num_seeds: evaluate K stacked models at once (``params``/``batch_stats`` with a leading
        K axis, as trained by ``make_train_epoch(..., num_seeds=K)``); every output then has a
        leading K axis. Not combined with ``mesh``.
      seed_loop: ``"vmap"``, ``"map"`` or ``"auto"``, as in :func:`make_train_epoch`.

    Returns:
      A function returning a dict of per-example arrays: ``clean_loss``, ``clean_correct``,
      ``adv_loss``, ``adv_correct`` (and ``clean_probes``/``adv_probes``, dicts of [N, D]
      arrays, when ``with_probes``). ``images`` are uint8 [N, H, W, C].
    """
    if num_seeds is not None and mesh is not None:
        raise ValueError("num_seeds and mesh cannot be combined: evaluate several seeds on one device, or one "
                         "model data-parallel over the mesh.")

    if attack.random_start:
        raise ValueError("evaluation attacks start from the clean image: pass a PGDConfig with random_start=False.")

    if mesh is not None:
        batch_size = -(-batch_size // mesh.size) * mesh.size

    def per_batch(params, batch_stats, xb, yb):
        xb, yb = parallel.shard_batch((xb, yb), mesh)
        x = to_float(xb)

        def logits_fn(xx):
            return apply_model(module, params, batch_stats, xx, train=False)[0]

        x_adv = pgd(logits_fn, x, yb, eps=attack.eps, step_size=attack.step_size, steps=attack.steps)
        lc, pc, _ = apply_model(module, params, batch_stats, x, train=False)
        la, pa, _ = apply_model(module, params, batch_stats, x_adv, train=False)
        out = {
            "clean_loss": _ce(lc, yb), "clean_correct": jnp.argmax(lc, -1) == yb,
            "adv_loss": _ce(la, yb), "adv_correct": jnp.argmax(la, -1) == yb,
        }
        if with_probes:
            out["clean_probes"], out["adv_probes"] = pc, pa
        return out

    if resolve_loop(loop) == "scan":
        def evaluate_one(params, batch_stats, images, labels):
            return _batched_map(lambda xb, yb: per_batch(params, batch_stats, xb, yb), (images, labels), batch_size)

        if num_seeds is not None:  # one program for all K models
            evaluate_one = _over_seeds(evaluate_one, (0, 0, None, None), seed_loop)
        return jax.jit(evaluate_one)

    batch_fn = jax.jit(per_batch if num_seeds is None else _over_seeds(per_batch, (0, 0, None, None), seed_loop))
    wait = _serialize_collectives(mesh)
    ex_axis = 0 if num_seeds is None else 1  # where the example axis sits in the outputs

    def evaluate(params, batch_stats, images, labels):
        n = images.shape[0]
        outs = []
        for start in range(0, n, batch_size):
            xb, yb = images[start:start + batch_size], labels[start:start + batch_size]
            pad = batch_size - xb.shape[0]
            if pad:  # keep one compiled shape: pad the last batch, drop the padding after
                xb = jnp.pad(xb, [(0, pad)] + [(0, 0)] * (xb.ndim - 1))
                yb = jnp.pad(yb, (0, pad))
            outs.append(wait(batch_fn(params, batch_stats, xb, yb)))
        return jax.tree.map(lambda *o: jax.lax.slice_in_dim(jnp.concatenate(o, axis=ex_axis), 0, n, axis=ex_axis),
                            *outs)

    evaluate.batch_fn = batch_fn
    return evaluate


def epoch_means(metrics: dict[str, Array]) -> dict[str, float]:
    """Host-side means of per-batch epoch metrics (one transfer per epoch)."""
    host = jax.device_get(metrics)
    return {k: float(np.mean(v)) for k, v in host.items()}
