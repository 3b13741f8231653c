"""Normal (NT) and Madry PGD adversarial training (AT): state, optimizer, step, epoch.

Seeds are a batch axis: every train state here is a *stack* of K independent runs (leading
axis K; a single run is a stack of one, :func:`stack`), and an epoch trains all K in one
compiled program, each with its own data order, augmentation and attack noise from its own
key. With K = 1 the step runs unbatched; with K > 1 it is ``vmap``ped over the seeds or
looped with ``lax.map`` (:func:`jaxmi.backend.resolve_seed_loop`); either way run k matches,
up to float rounding, a single run with the same initial state and key.

The training set lives on the device as uint8; an epoch walks minibatches of a keyed
permutation (the last partial batch is dropped so shapes stay static) with conversion to
float, augmentation and the attack inside the compiled step. Nothing syncs to the host inside
an epoch: per-batch metrics come back as arrays when it ends. The loop over batches is one
``lax.scan`` or host-dispatched chunks of unrolled steps (:func:`jaxmi.backend.resolve_loop`).

Schedule as in the paper, but stepped per *epoch* (the published code steps it per batch,
so its milestones are really iterations): SGD with momentum 0.9, learning rate 0.1 halved at
epochs 20 and 60, no weight decay (:class:`jaxmi.config.OptimConfig`).

Madry, Makelov, Schmidt, Tsipras & Vladu, *Towards Deep Learning Models Resistant to
Adversarial Attacks*, ICLR 2018.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmi import backend, parallel, progress
from jaxmi.attacks import PGDConfig, pgd_core
from jaxmi.config import OptimConfig
from jaxmi.data import augment_crop_flip, to_float
from jaxmi.models import apply_model_core, check_input_shape, init_variables, init_variables_core
from jaxmi.probes import check_model

__all__ = ["TrainState", "make_optimizer", "create_train_state", "create_train_states", "stack", "unstack",
           "num_stacked", "over_seeds", "cross_entropy", "make_train_step", "make_train_epoch", "epoch_means",
           "train_states_core", "over_seeds_core", "train_step_core", "train_epoch_core"]

Array = jax.Array


class TrainState(NamedTuple):
    """Everything an epoch updates: a pytree (leading axis K when stacked)."""

    step: Array  # int32, optimizer steps taken
    params: Any
    batch_stats: Any
    opt_state: Any


def make_optimizer(cfg: OptimConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum; the rate is multiplied by ``cfg.decay`` at every milestone epoch.

    Args:
      cfg: the optimizer section of the run's config.
      steps_per_epoch: optimizer steps per epoch (milestones are in epochs).
    """
    boundaries = {int(m) * int(steps_per_epoch): cfg.decay for m in cfg.milestones}
    schedule = optax.piecewise_constant_schedule(cfg.learning_rate, boundaries)
    parts = [optax.add_decayed_weights(cfg.weight_decay)] if cfg.weight_decay else []
    parts.append(optax.sgd(schedule, momentum=cfg.momentum))
    return optax.chain(*parts)


def create_train_state(module: nn.Module, key: Array, input_shape: tuple[int, ...],
                       tx: optax.GradientTransformation) -> TrainState:
    """One run's initial state: fresh variables (:func:`jaxmi.models.init_variables`) and optimizer."""
    return _initial_state(init_variables(module, key, input_shape), tx)


def _initial_state(variables: dict[str, Any], tx: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"],
                      tx.init(variables["params"]))


def create_train_states(module: nn.Module, keys: Array, input_shape: tuple[int, ...],
                        tx: optax.GradientTransformation) -> TrainState:
    """K initial states stacked along a leading axis, one per key in ``keys`` [K]; state k equals
    ``create_train_state(module, keys[k], ...)``.

    Raises:
      jaxmi.probes.ModelProtocolError: ``module`` is not a jaxmi model (wrap a plain Flax module
        with :class:`jaxmi.probes.ProbedModel`).
    """
    check_model(module)
    input_shape = check_input_shape(module, input_shape)
    if keys.ndim != 1:
        raise ValueError(f"keys must be a 1-D array of K PRNG keys (jax.random.split(key, K)); got shape {keys.shape}.")
    return train_states_core(module, keys, input_shape, tx)


def train_states_core(module: nn.Module, keys: Array, input_shape: tuple[int, ...],
                      tx: optax.GradientTransformation) -> TrainState:
    """:func:`create_train_states` of a checked model and input shape (a run's plan checked them)."""
    return jax.vmap(lambda k: _initial_state(init_variables_core(module, k, input_shape), tx))(keys)


def stack(trees: Sequence[Any]) -> Any:
    """Stacks K pytrees of the same structure along a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, num: int | None = None) -> list[Any]:
    """Splits a stacked pytree into its K members."""
    num = num_stacked(tree) if num is None else num
    return [jax.tree.map(lambda a, i=i: a[i], tree) for i in range(num)]


def num_stacked(tree: Any) -> int:
    """K, the leading axis of a stacked pytree."""
    return int(jax.tree.leaves(tree)[0].shape[0])


def over_seeds(fn: Callable, in_axes: tuple, seed_loop: str = "auto",
               mesh: jax.sharding.Mesh | None = None) -> Callable:
    """``fn`` over K stacked runs: arguments with ``in_axes`` 0 carry the seed axis, ``None`` ones
    are shared. K = 1 calls ``fn`` once, unbatched; K > 1 ``vmap``s it or runs a ``lax.map``
    over the seeds (:func:`jaxmi.backend.resolve_seed_loop`). On a mesh whose ``"seeds"`` axis
    has several device groups the seeds are always ``vmap``ped, with ``spmd_axis_name="seeds"``,
    so each device group computes its share of them. Outputs gain the leading K axis."""
    return over_seeds_core(fn, in_axes, backend.resolve_seed_loop(seed_loop), mesh)


def over_seeds_core(fn: Callable, in_axes: tuple, seed_loop: str, mesh: jax.sharding.Mesh | None) -> Callable:
    """:func:`over_seeds` with ``seed_loop`` decided (``"vmap"`` or ``"map"``: a run's plan)."""
    # Seeds split over device groups (a "seeds" axis of more than one group) need the vmap with
    # spmd_axis_name; a seeds axis of size 1 (one device) leaves the choice to ``seed_loop``.
    spmd = parallel.SEEDS_AXIS if parallel.seed_axis_size(mesh) > 1 else None

    def mapped(*args):
        stacked = tuple(a for a, ax in zip(args, in_axes) if ax == 0)

        def one(per_seed):
            it = iter(per_seed)
            return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes)))

        if num_stacked(stacked) == 1 and spmd is None:
            return jax.tree.map(lambda o: o[None], one(jax.tree.map(lambda a: a[0], stacked)))
        if seed_loop == "vmap" or spmd is not None:
            return jax.vmap(fn, in_axes=in_axes, spmd_axis_name=spmd)(*args)
        return jax.lax.map(one, stacked)

    return mapped


def cross_entropy(logits: Array, y: Array) -> Array:
    """Per-example softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def make_train_step(module: nn.Module, tx: optax.GradientTransformation, *, attack: PGDConfig | None = None,
                    augment: bool = False, mesh: jax.sharding.Mesh | None = None,
                    attack_unroll: bool | None = None, eps_warmup_steps: int = 0) -> Callable:
    """Builds one run's ``train_step(state, x, y, key) -> (state, {"loss", "accuracy"})``.

    Args:
      module: the model.
      tx: optimizer from :func:`make_optimizer`.
      attack: ``None`` for normal training; a :class:`~jaxmi.attacks.PGDConfig` for Madry
        PGD-AT (the loss is taken on the PGD examples only; the attack sees the model in
        training mode, with batch statistics but without updating the running ones).
      augment: 4-px zero-padded random crop + horizontal flip on the device.
      mesh: keeps the state replicated over a ``("data",)`` mesh.
      attack_unroll: unroll the PGD iterations at compile time (True) or run them as a
        compiled loop (False); ``None``: the platform's choice
        (:func:`jaxmi.backend.resolve_attack_unroll`; a run's plan passes it resolved).
      eps_warmup_steps: W > 0 ramps the training attack linearly over the first W optimizer
        steps: the step that finds ``state.step = t`` attacks with radius and step size scaled
        by ``min(1, (t + 1) / W)`` (full ε from step W − 1 on). 0: full ε from the first step,
        as in the paper. The scale comes from the state, so a resumed run continues the ramp.

    Returns:
      A pure function of one run's state, a float batch x [B, H, W, C], labels [B] and a key.

    Raises:
      jaxmi.probes.ModelProtocolError: ``module`` is not a jaxmi model (wrap a plain Flax module
        with :class:`jaxmi.probes.ProbedModel`).
    """
    unroll = _checked_step(module, attack, attack_unroll, eps_warmup_steps)
    return train_step_core(module, tx, attack=attack, augment=augment, mesh=mesh, unroll=unroll,
                           eps_warmup_steps=int(eps_warmup_steps))


def _checked_step(module: nn.Module, attack: PGDConfig | None, attack_unroll: bool | None,
                  eps_warmup_steps: int) -> bool:
    """Checks a training step's arguments; returns whether the PGD iterations are unrolled."""
    check_model(module)
    if isinstance(eps_warmup_steps, bool) or int(eps_warmup_steps) != eps_warmup_steps or eps_warmup_steps < 0:
        raise ValueError(f"eps_warmup_steps must be a non-negative integer; got {eps_warmup_steps}.")
    if eps_warmup_steps and attack is None:
        raise ValueError("eps_warmup_steps ramps the training attack; normal training (attack=None) has none.")
    return backend.resolve_attack_unroll("auto") if attack_unroll is None else bool(attack_unroll)


def train_step_core(module: nn.Module, tx: optax.GradientTransformation, *, attack: PGDConfig | None,
                    augment: bool, mesh: jax.sharding.Mesh | None, unroll: bool, eps_warmup_steps: int) -> Callable:
    """:func:`make_train_step` of a checked model, attack and warm-up, with ``unroll`` decided
    (a run's plan)."""

    def attack_scale(step: Array) -> Array | float:
        if not eps_warmup_steps:
            return 1.0
        return jnp.minimum(1.0, (step.astype(jnp.float32) + 1.0) / eps_warmup_steps)

    def loss_fn(params, batch_stats, x, y):
        logits, _, new_stats = apply_model_core(module, params, batch_stats, x, train=True)
        return cross_entropy(logits, y).mean(), (new_stats, jnp.mean(jnp.argmax(logits, -1) == y))

    def train_step(state: TrainState, x: Array, y: Array, key: Array):
        if augment:
            x = augment_crop_flip(jax.random.fold_in(key, 1), x)
        if attack is not None:
            def logits_fn(xx):
                return apply_model_core(module, state.params, state.batch_stats, xx, train=True)[0]

            scale = attack_scale(state.step)
            # the attack was checked when its PGDConfig was built, the data where it was loaded
            x = jax.lax.stop_gradient(pgd_core(logits_fn, x, y, eps=attack.eps * scale,
                                               step_size=attack.step_size * scale, steps=attack.steps,
                                               key=jax.random.fold_in(key, 2), random_start=attack.random_start,
                                               unroll=unroll, norm="linf", target=None, restarts=1))
        (loss, (new_stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, x, y)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = parallel.constrain_replicated(TrainState(state.step + 1, params, new_stats, opt_state), mesh)
        return new_state, {"loss": loss, "accuracy": acc}

    return train_step


def make_train_epoch(module: nn.Module, tx: optax.GradientTransformation, *, num_examples: int,
                     batch_size: int, attack: PGDConfig | None = None, augment: bool = False,
                     show_progress: bool = True, loop: str = "auto", chunk: int = 2,
                     mesh: jax.sharding.Mesh | None = None, seed_loop: str = "auto",
                     attack_unroll: bool | None = None, eps_warmup_steps: int = 0) -> Callable:
    """Builds ``epoch(states, images, labels, keys) -> (states, metrics)``, compiled, states donated.

    Args:
      module, tx, attack, augment, attack_unroll, eps_warmup_steps: as in :func:`make_train_step`.
      num_examples: training-set size N (static; ``N // batch_size`` steps per epoch).
      batch_size: minibatch size.
      show_progress: advance :mod:`jaxmi.progress`'s current bar from inside the compiled loop
        (at most :data:`jaxmi.progress.MAX_TICKS` host callbacks per epoch; none when False).
      loop: ``"scan"``, ``"unrolled"`` or ``"auto"`` (:func:`jaxmi.backend.resolve_loop`).
      chunk: steps per compiled call for the ``"unrolled"`` strategy.
      mesh: a ``("data",)`` mesh (:func:`jaxmi.parallel.make_mesh`): each batch is split over
        its devices, the states stay replicated (K = 1); or a ``("seeds", "data")`` mesh: the
        K stacked states are split over ``"seeds"`` (:func:`jaxmi.parallel.place_states`) and
        each seed's batch over ``"data"``. ``batch_size`` must divide evenly. ``None``: one device.
      seed_loop: how K > 1 stacked runs share the program (:func:`over_seeds`).

    Returns:
      A jitted function of stacked states [K] (:func:`create_train_states`, :func:`stack`),
      uint8 ``images`` [N, H, W, C] and int32 ``labels`` [N] on the device (shared by the
      seeds) and keys [K]. ``metrics`` holds per-batch ``"loss"`` and ``"accuracy"`` [K, steps]
      (on the examples trained on: adversarial ones for AT).
    """
    unroll = _checked_step(module, attack, attack_unroll, eps_warmup_steps)
    if num_examples // batch_size < 1:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({num_examples} examples).")
    if batch_size % parallel.data_size(mesh):
        raise ValueError(f"batch_size {batch_size} is not divisible by the {parallel.data_size(mesh)} devices of "
                         "the mesh's data axis; choose a multiple of the device count or fewer devices.")
    return train_epoch_core(module, tx, num_examples=num_examples, batch_size=batch_size, attack=attack,
                            augment=augment, show_progress=show_progress, loop=backend.resolve_loop(loop), chunk=chunk,
                            mesh=mesh, seed_loop=backend.resolve_seed_loop(seed_loop), unroll=unroll,
                            eps_warmup_steps=int(eps_warmup_steps), wait=backend.dispatch_wait(mesh))


def train_epoch_core(module: nn.Module, tx: optax.GradientTransformation, *, num_examples: int, batch_size: int,
                     attack: PGDConfig | None, augment: bool, show_progress: bool, loop: str, chunk: int,
                     mesh: jax.sharding.Mesh | None, seed_loop: str, unroll: bool, eps_warmup_steps: int,
                     wait: Callable) -> Callable:
    """:func:`make_train_epoch` of checked arguments with every choice decided (a run's plan:
    ``loop`` "scan"/"unrolled", ``seed_loop`` "vmap"/"map", ``unroll``, and ``wait``, what the
    host does with each dispatched chunk, :func:`jaxmi.backend.dispatch_wait`)."""
    steps = num_examples // batch_size
    train_step = train_step_core(module, tx, attack=attack, augment=augment, mesh=mesh, unroll=unroll,
                                 eps_warmup_steps=eps_warmup_steps)

    def one_step(st, images, labels, perm, key, i):
        idx = jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
        x, y = parallel.shard_batch((to_float(images[idx]), labels[idx]), mesh)
        return train_step(st, x, y, jax.random.fold_in(key, i + 1))

    step_fn = over_seeds_core(one_step, (0, None, None, 0, 0, None), seed_loop, mesh)
    every = progress.ticks_every(steps)  # ≤ progress.MAX_TICKS host callbacks per epoch

    def check(states):
        k, groups = num_stacked(states), parallel.seed_axis_size(mesh)
        if k > 1 and parallel.data_size(mesh) > 1 and parallel.SEEDS_AXIS not in mesh.axis_names:
            raise ValueError(f"{k} stacked seeds cannot be split over a ('data',) mesh of {mesh.size} devices; "
                             "use a ('seeds', 'data') mesh: jaxmi.parallel.make_mesh(n, seeds=s).")
        if k % groups:
            raise ValueError(f"{k} stacked seeds cannot be split into the mesh's {groups} seed groups; choose a "
                             "number of seeds that the seed axis divides.")

    def run_steps(states, images, labels, perm, keys, first, count: int, unroll: bool):
        check(states)

        def body(st, i):
            st, m = step_fn(st, images, labels, perm, keys, i)
            if show_progress:
                progress.tick_from_device(i, every)
            return st, m

        states, metrics = jax.lax.scan(body, states, first + jnp.arange(count), unroll=unroll)
        return states, jax.tree.map(lambda a: a.T, metrics)  # scan stacks [steps, K]; report [K, steps]

    permutation = jax.jit(jax.vmap(lambda key: jax.random.permutation(jax.random.fold_in(key, 0), num_examples)))

    if loop == "scan":
        @functools.partial(jax.jit, donate_argnums=(0,))
        def epoch(states: TrainState, images: Array, labels: Array, keys: Array):
            return run_steps(states, images, labels, permutation(keys), keys, 0, steps, False)

        return epoch

    # "unrolled": the host dispatches compiled chunks of `chunk` unrolled steps. Dispatch is
    # asynchronous and nothing is read back inside the epoch, so the device never waits.
    chunk_fn = jax.jit(run_steps, static_argnames=("count", "unroll"), donate_argnums=(0,))
    starts = list(range(0, steps, chunk))

    def epoch(states: TrainState, images: Array, labels: Array, keys: Array):
        perm = permutation(keys)
        metrics = []
        for s in starts:
            states, m = wait(chunk_fn(states, images, labels, perm, keys, jnp.int32(s), count=min(chunk, steps - s),
                                      unroll=True))
            metrics.append(m)
        return states, jax.tree.map(lambda *ms: jnp.concatenate(ms, axis=1), *metrics)

    epoch.chunk_fn = chunk_fn  # exposed for compile-cache checks
    return epoch


def epoch_means(metrics: dict[str, Array]) -> list[dict[str, float]]:
    """Per-seed means of an epoch's per-batch metrics [K, steps] (one transfer per epoch)."""
    host = jax.device_get(metrics)
    k = next(iter(host.values())).shape[0]
    return [{name: float(np.mean(v[i])) for name, v in host.items()} for i in range(k)]
