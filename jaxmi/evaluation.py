"""Evaluation: one batched, padded path for the forward pass and the evaluation attack.

Everything that evaluates trained models — the per-epoch measurements of a run and the
distortion and geometry experiments of findings 3 and 4 — goes through :func:`batched`:
a per-batch function of (params, batch_stats, *arrays) applied to N examples in batches of
a fixed size (the last one padded, so one compiled shape serves every call), over K stacked
models (leading axis K on params/batch_stats and on every output, :func:`jaxmi.training.over_seeds`).

On top of it:

* :func:`make_adversary` — evaluation PGD examples (from the clean image, against the model
  in evaluation mode);
* :func:`make_forward` — per-example loss, correctness, softmax probabilities and probes;
* :func:`make_evaluator` — both, on clean inputs and on their PGD examples, from uint8 images:
  what a run measures after every epoch;
* :func:`robust_report` — the AutoAttack-style robust accuracy of a trained model beside the
  paper's PGD accuracy on the same images (a run's final evaluation).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import backend, parallel
from jaxmi.attacks import PGDConfig, checks, pgd_core, robust_accuracy
from jaxmi.data import to_float
from jaxmi.models import apply_model, apply_model_core
from jaxmi.probes import check_model
from jaxmi.training import cross_entropy, over_seeds_core

__all__ = ["batched", "make_adversary", "make_forward", "make_evaluator", "confusion", "robust_report",
           "batched_core", "adversary_core", "forward_core", "evaluator_core", "robust_report_core"]

Array = jax.Array


def _pad_to(a: Array, size: int) -> Array:
    pad = size - a.shape[0]
    return jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) if pad else a


@functools.partial(jax.jit, static_argnames=("axis",), donate_argnums=(0,))
def _write(out, piece, start, *, axis: int):
    """Writes ``piece`` into the (donated, so updated in place) ``out`` at ``start`` along ``axis``."""
    return jax.tree.map(lambda o, p: jax.lax.dynamic_update_slice_in_dim(o, p.astype(o.dtype), start, axis),
                        out, piece)


def _zeros_rows(shape, dtype, mesh, ax):
    """The result buffer of a host-loop pass, its example axis split over the mesh's data devices
    where it divides (:func:`jaxmi.parallel.rows_sharding`): no device holds all N rows."""
    sharding = parallel.rows_sharding(mesh, len(shape), ax, shape[ax])
    return jnp.zeros(shape, dtype) if sharding is None else jnp.zeros(shape, dtype, device=sharding)


def _place_rows(o, mesh, ax):
    """Inside jit: the scanned pass's outputs split over the data devices like :func:`_zeros_rows`."""
    sharding = parallel.rows_sharding(mesh, o.ndim, ax, o.shape[ax])
    return o if sharding is None else jax.lax.with_sharding_constraint(o, sharding)


def batched(per_batch: Callable, *, batch_size: int, loop: str = "auto", mesh: jax.sharding.Mesh | None = None,
            seed_loop: str = "auto", stacked: bool = True) -> Callable:
    """Applies ``per_batch(params, batch_stats, *arrays)`` to N examples in padded batches.

    Args:
      per_batch: a function of one model's variables and one batch of each array
        ([B, ...] each), returning a pytree of per-example arrays [B, ...].
      batch_size: examples per compiled batch (memory only; results do not depend on it).
        Rounded up to a multiple of the mesh's data axis.
      loop: ``"scan"``: the whole pass is one compiled ``lax.map`` over batches;
        ``"unrolled"``: one compiled call per batch, dispatched from the host, each batch's
        outputs written in place into the preallocated result (so the pass holds one copy of
        its outputs); ``"auto"``: by platform (:func:`jaxmi.backend.resolve_loop`).
      mesh: a ``("data",)`` mesh: each batch is split over its devices; a ``("seeds", "data")``
        mesh also splits the K stacked models over ``"seeds"``. ``None``: one device.
      seed_loop: how K > 1 stacked models share the program.
      stacked: the variables are K stacked models (outputs [K, N, ...]); False: one model's
        variables, outputs [N, ...].

    On a mesh the outputs' example axis is split over ``"data"`` (where N is a multiple of
    it), so a pass over N examples leaves N / data rows on each device, never all N on one.

    Returns:
      ``fn(params, batch_stats, *arrays)`` with arrays [N, ...] shared by the K models; every
      output leaf has shape [K, N, ...] (``stacked``) or [N, ...].
    """
    return batched_core(per_batch, **_decided(batch_size=batch_size, loop=loop, mesh=mesh, seed_loop=seed_loop,
                                              stacked=stacked))


def batched_core(per_batch: Callable, *, batch_size: int, loop: str, mesh: jax.sharding.Mesh | None, seed_loop: str,
                 stacked: bool, wait: Callable) -> Callable:
    """:func:`batched` with every choice decided (a run's plan, :meth:`jaxmi.plan.Execution.batching`):
    ``loop`` "scan"/"unrolled", ``seed_loop`` "vmap"/"map", ``wait`` (:func:`jaxmi.backend.dispatch_wait`)."""
    shards = parallel.data_size(mesh)
    batch_size = -(-batch_size // shards) * shards
    ax = 1 if stacked else 0  # the example axis of the outputs

    def sharded(params, batch_stats, *arrays):
        return per_batch(params, batch_stats, *parallel.shard_batch(arrays, mesh))

    def one_batch(params, batch_stats, *arrays):
        if not stacked:
            return sharded(params, batch_stats, *arrays)
        return over_seeds_core(sharded, (0, 0) + (None,) * len(arrays), seed_loop, mesh)(params, batch_stats, *arrays)

    if loop == "scan":
        @jax.jit
        def scanned(params, batch_stats, *arrays):
            n = arrays[0].shape[0]
            nb = -(-n // batch_size)
            parts = [_pad_to(a, nb * batch_size).reshape(nb, batch_size, *a.shape[1:]) for a in arrays]
            out = jax.lax.map(lambda b: one_batch(params, batch_stats, *b), tuple(parts))  # [nb, (K,) B, ...]
            if stacked:
                out = jax.tree.map(lambda o: jnp.moveaxis(o, 0, 1), out)
            out = jax.tree.map(lambda o: jax.lax.slice_in_dim(
                o.reshape(*o.shape[:ax], nb * batch_size, *o.shape[ax + 2:]), 0, n, axis=ax), out)
            return jax.tree.map(lambda o: _place_rows(o, mesh, ax), out)

        return scanned

    batch_fn = jax.jit(one_batch)

    def host_loop(params, batch_stats, *arrays):
        n = arrays[0].shape[0]
        out = None
        for s in range(0, n, batch_size):
            piece = wait(batch_fn(params, batch_stats, *(_pad_to(a[s:s + batch_size], batch_size) for a in arrays)))
            if s + batch_size > n:  # the padded last batch: its real rows only
                piece = jax.tree.map(lambda p: jax.lax.slice_in_dim(p, 0, n - s, axis=ax), piece)
            if out is None:
                out = jax.tree.map(lambda p: _zeros_rows(p.shape[:ax] + (n,) + p.shape[ax + 1:], p.dtype, mesh, ax),
                                   piece)
            out = wait(_write(out, piece, s, axis=ax))
        return out

    host_loop.batch_fn = batch_fn  # exposed for compile-cache checks
    return host_loop


def _unroll(attack_unroll: bool | None) -> bool:
    return backend.resolve_attack_unroll("auto") if attack_unroll is None else bool(attack_unroll)


def _pgd_eval(logits_fn: Callable[[Array], Array], x: Array, y: Array, attack: PGDConfig, unroll: bool) -> Array:
    """The evaluation PGD (from the clean image) of a checked attack on loaded data."""
    return pgd_core(logits_fn, x, y, eps=attack.eps, step_size=attack.step_size, steps=attack.steps, key=None,
                    random_start=False, unroll=unroll, norm="linf", target=None, restarts=1)


def _logits_fn(module: nn.Module, params: Any, batch_stats: Any) -> Callable[[Array], Array]:
    return lambda xx: apply_model_core(module, params, batch_stats, xx, train=False)[0]


def make_adversary(module: nn.Module, attack: PGDConfig, *, attack_unroll: bool | None = None, **batching: Any
                   ) -> Callable:
    """``adversary(params, batch_stats, x, y) -> x_adv`` [K, N, ...]: evaluation PGD examples of
    float images ``x`` [N, H, W, C] in [0, 1] (from the clean image; ``attack_unroll`` as in
    :func:`jaxmi.training.make_train_step`, ``batching`` as in :func:`batched`)."""
    check_model(module)
    if attack.random_start:
        raise ValueError("evaluation attacks start from the clean image: pass a PGDConfig with random_start=False.")
    return adversary_core(module, attack, unroll=_unroll(attack_unroll), batching=_decided(**batching))


def adversary_core(module: nn.Module, attack: PGDConfig, *, unroll: bool, batching: dict[str, Any]) -> Callable:
    """:func:`make_adversary` of a checked model and evaluation attack, with ``unroll`` and
    ``batching`` decided (:func:`batched_core`'s options)."""

    def per_batch(params, batch_stats, x, y):
        return _pgd_eval(_logits_fn(module, params, batch_stats), x, y, attack, unroll)

    return batched_core(per_batch, **batching)


def _forward(module, params, batch_stats, x, y, *, with_probes: bool | Sequence[str],
             with_probs: bool = False) -> dict[str, Any]:
    logits, probes, _ = apply_model_core(module, params, batch_stats, x, train=False)
    out = {"loss": cross_entropy(logits, y), "correct": jnp.argmax(logits, -1) == y}
    if with_probs:
        out["probs"] = jax.nn.softmax(logits)
    if with_probes is True:
        out["probes"] = probes
    elif with_probes:
        out["probes"] = {p: probes[p] for p in with_probes}
    return out


def make_forward(module: nn.Module, *, with_probes: bool | Sequence[str] = True, with_probs: bool = True,
                 **batching: Any) -> Callable:
    """``forward(params, batch_stats, x, y)`` on float images [N, H, W, C]: per-example ``loss``,
    ``correct``, ``probs`` (softmax, with ``with_probs``) and ``probes`` (every probe with
    ``with_probes=True``; only the named ones for a sequence of names, so that a measurement
    can hold one layer at a time), each [K, N, ...] (``batching`` as in :func:`batched`)."""
    check_model(module)
    return forward_core(module, with_probes=with_probes, with_probs=with_probs, batching=_decided(**batching))


def _decided(*, batch_size: int, loop: str = "auto", mesh: jax.sharding.Mesh | None = None, seed_loop: str = "auto",
             stacked: bool = True) -> dict[str, Any]:
    """:func:`batched`'s options with every choice decided, for :func:`batched_core`."""
    return dict(batch_size=batch_size, loop=backend.resolve_loop(loop), mesh=mesh,
                seed_loop=backend.resolve_seed_loop(seed_loop), stacked=stacked, wait=backend.dispatch_wait(mesh))


def forward_core(module: nn.Module, *, with_probes: bool | Sequence[str], with_probs: bool,
                 batching: dict[str, Any]) -> Callable:
    """:func:`make_forward` of a checked model, ``batching`` decided (:func:`batched_core`'s options)."""

    def per_batch(params, batch_stats, x, y):
        return _forward(module, params, batch_stats, x, y, with_probes=with_probes, with_probs=with_probs)

    return batched_core(per_batch, **batching)


def make_evaluator(module: nn.Module, attack: PGDConfig, *, with_probes: bool = False,
                   with_adversarial: bool = False, attack_unroll: bool | None = None, **batching: Any
                   ) -> Callable:
    """``evaluate(params, batch_stats, images, labels)``: the model in evaluation mode on clean
    uint8 ``images`` [N, H, W, C] and on their PGD examples.

    Args:
      module: the model.
      attack: the evaluation attack (``random_start=False``).
      with_probes: also return the probe activations on clean and adversarial inputs.
      with_adversarial: also return the PGD examples, ``adv_inputs`` [K, N, H, W, C] float.
      attack_unroll: unroll the PGD iterations (True) or loop (False); ``None``: the platform's
        choice (:func:`jaxmi.backend.resolve_attack_unroll`).
      **batching: ``batch_size``, ``loop``, ``mesh``, ``seed_loop`` as in :func:`batched`.

    Returns:
      A function of stacked variables [K, ...] returning per-example arrays [K, N]:
      ``clean_loss``, ``clean_correct``, ``adv_loss``, ``adv_correct`` (and
      ``clean_probes``/``adv_probes``, dicts of [K, N, D] arrays, with ``with_probes``).

    Raises:
      jaxmi.probes.ModelProtocolError: ``module`` is not a jaxmi model (wrap a plain Flax module
        with :class:`jaxmi.probes.ProbedModel`).
    """
    check_model(module)
    if attack.random_start:
        raise ValueError("evaluation attacks start from the clean image: pass a PGDConfig with random_start=False.")
    return evaluator_core(module, attack, with_probes=with_probes, with_adversarial=with_adversarial,
                          unroll=_unroll(attack_unroll), batching=_decided(**batching))


def evaluator_core(module: nn.Module, attack: PGDConfig, *, with_probes: bool, with_adversarial: bool, unroll: bool,
                   batching: dict[str, Any]) -> Callable:
    """:func:`make_evaluator` of a checked model and evaluation attack, with ``unroll`` and
    ``batching`` decided (a run's plan; :func:`batched_core`'s options)."""

    def per_batch(params, batch_stats, xb, yb):
        x = to_float(xb)
        x_adv = _pgd_eval(_logits_fn(module, params, batch_stats), x, yb, attack, unroll)
        out = {"adv_inputs": x_adv} if with_adversarial else {}
        for inputs, xi in (("clean", x), ("adv", x_adv)):
            for k, v in _forward(module, params, batch_stats, xi, yb, with_probes=with_probes).items():
                out[f"{inputs}_{k}"] = v
        return out

    return batched_core(per_batch, **batching)


def confusion(y_true: np.ndarray, probs: np.ndarray, num_classes: int) -> dict[str, Any]:
    """True → predicted class counts and the mean confidence (max softmax probability) per cell.

    Args:
      y_true: [N] integer labels.
      probs: [N, C] class probabilities.
      num_classes: C.

    Returns:
      ``counts`` and ``mean_confidence`` ([C][C], NaN for empty cells), ``accuracy``, the mean
      confidence of wrong and of right predictions, and the five largest off-diagonal cells.
    """
    pred = probs.argmax(-1)
    conf = probs.max(-1)
    counts = np.zeros((num_classes, num_classes), np.int64)
    conf_sum = np.zeros((num_classes, num_classes))
    np.add.at(counts, (y_true, pred), 1)
    np.add.at(conf_sum, (y_true, pred), conf)
    mean_conf = np.where(counts > 0, conf_sum / np.maximum(counts, 1), np.nan)
    wrong = pred != y_true
    return {
        "counts": counts.tolist(), "mean_confidence": mean_conf.tolist(),
        "accuracy": float(np.mean(~wrong)),
        "mean_confidence_wrong": float(conf[wrong].mean()) if wrong.any() else None,
        "mean_confidence_right": float(conf[~wrong].mean()) if (~wrong).any() else None,
        "top_confusions": [
            {"true": int(t), "predicted": int(p), "count": int(counts[t, p]), "mean_confidence": float(mean_conf[t, p])}
            for t, p in sorted(((t, p) for t in range(num_classes) for p in range(num_classes) if t != p),
                               key=lambda tp: -counts[tp])[:5] if counts[t, p] > 0],
    }


@functools.partial(jax.jit, static_argnames=("module", "attack", "steps", "n_targets", "unroll"))
def _robust_compiled(module, params, batch_stats, x, y, key, *, attack: PGDConfig, steps: int,
                     n_targets: int | None, unroll: bool):
    """The paper's PGD accuracy and :func:`jaxmi.attacks.robust_accuracy`, compiled once per
    model and shape: the parameters are arguments, so NT, AT and every seed share the program."""
    logits_fn = _logits_fn(module, params, batch_stats)
    x_pgd = _pgd_eval(logits_fn, x, y, attack, unroll)
    pgd_acc = jnp.mean(jnp.argmax(logits_fn(x_pgd), -1) == y)
    return pgd_acc, robust_accuracy(logits_fn, x, y, eps=attack.eps, key=key, steps=steps, n_targets=n_targets)


def robust_report(module: nn.Module, params: Any, batch_stats: Any, x: Array, y: Array, *, attack: PGDConfig,
                  key: Array, steps: int = 100, n_targets: int | None = None) -> dict[str, Any]:
    """A trained model's robust accuracy under an AutoAttack-style ensemble, beside the paper's PGD.

    On the same images: the paper's evaluation attack ``attack`` (PGD from the clean image),
    and :func:`jaxmi.attacks.robust_accuracy` at the same ε (FGSM, PGD-20, APGD-CE and APGD-T
    with ``steps`` iterations, worst case per example), with its gradient-masking flags.

    Args:
      module, params, batch_stats: one model (unstacked variables).
      x: float images [N, H, W, C] in [0, 1]; all N are attacked in one batch.
      y: int labels [N].
      attack: the paper's evaluation PGD (``random_start=False``).
      key: typed PRNG key of the APGD runs.
      steps: APGD iterations per run.
      n_targets: APGD-T target classes (None: min(9, classes − 1)).

    The images, labels and ε are checked before anything is compiled, as the attacks check
    them (:func:`jaxmi.attacks.checks.check_inputs`): float images inside [0, 1] without NaN
    or inf, integer labels in [0, K) of the model's K classes, ε at most 1; a ``ValueError``
    or ``TypeError`` names the argument and the fix.

    Returns:
      A JSON-ready dict: ``samples``, ``eps``, ``clean_acc``, ``pgd_paper_acc`` (and
      ``pgd_paper_steps``), ``robust_acc`` (every attack of the ensemble fails),
      ``attack_acc`` and ``cumulative_acc`` per attack, ``apgd_steps``, ``zero_grad_share``,
      ``flags`` (``zero_gradients``, ``weaker_beats_stronger``, ``paper_pgd_beats_ensemble``: the
      paper's PGD accuracy below the ensemble's robust accuracy by more than one percentage
      point, which a sound ensemble never shows) and ``messages`` explaining raised flags.
    """
    check_model(module)
    if attack.random_start:
        raise ValueError("evaluation attacks start from the clean image: pass a PGDConfig with random_start=False.")
    x, y = jnp.asarray(x), jnp.asarray(y)
    # the public apply_model: a wrong image shape is named here, before anything is compiled
    checks.check_inputs(lambda z: apply_model(module, params, batch_stats, z)[0], x, y, eps=attack.eps)
    checks.check_key(key, "robust_report")
    return robust_report_core(module, params, batch_stats, x, y, attack=attack, key=key, steps=int(steps),
                              n_targets=n_targets, unroll=backend.resolve_attack_unroll("auto"))


def robust_report_core(module: nn.Module, params: Any, batch_stats: Any, x: Array, y: Array, *, attack: PGDConfig,
                       key: Array, steps: int, n_targets: int | None, unroll: bool) -> dict[str, Any]:
    """:func:`robust_report` of a checked model, attack, key and data (a run's plan and its test
    split), with ``unroll`` decided."""
    pgd_acc, r = _robust_compiled(module, params, batch_stats, x, y, key,
                                  attack=attack, steps=steps, n_targets=n_targets, unroll=unroll)
    pgd_acc, robust = float(pgd_acc), float(r.robust_accuracy)
    flags = {"zero_gradients": bool(r.zero_gradients), "weaker_beats_stronger": bool(r.weaker_beats_stronger),
             "paper_pgd_beats_ensemble": pgd_acc + 0.01 < robust}
    messages = r.messages()
    if flags["paper_pgd_beats_ensemble"]:
        messages.append(f"the paper's {attack.steps}-step PGD left {pgd_acc:.2%} correct, fewer than the ensemble's "
                        f"{robust:.2%}: the ensemble missed examples a weaker attack found; raise the APGD steps.")
    return {"samples": int(y.shape[0]), "eps": float(attack.eps), "clean_acc": float(r.clean_accuracy),
            "pgd_paper_acc": pgd_acc, "pgd_paper_steps": int(attack.steps), "robust_acc": robust,
            "attack_acc": {k: float(v) for k, v in r.attack_accuracy.items()},
            "cumulative_acc": {k: float(v) for k, v in r.cumulative_accuracy.items()},
            "apgd_steps": int(steps), "zero_grad_share": float(r.zero_grad_share), "flags": flags,
            "messages": messages}
