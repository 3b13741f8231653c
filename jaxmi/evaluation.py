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
  what a run measures after every epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import backend, parallel
from jaxmi.attacks import PGDConfig, pgd
from jaxmi.data import to_float
from jaxmi.models import apply_model
from jaxmi.training import cross_entropy, over_seeds

__all__ = ["batched", "make_adversary", "make_forward", "make_evaluator", "confusion"]

Array = jax.Array


def _pad_to(a: Array, size: int) -> Array:
    pad = size - a.shape[0]
    return jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) if pad else a


def batched(per_batch: Callable, *, batch_size: int, loop: str = "auto", mesh: jax.sharding.Mesh | None = None,
            seed_loop: str = "auto") -> Callable:
    """Applies ``per_batch(params, batch_stats, *arrays)`` to N examples in padded batches.

    Args:
      per_batch: a function of one model's variables and one batch of each array
        ([B, ...] each), returning a pytree of per-example arrays [B, ...].
      batch_size: examples per compiled batch (memory only; results do not depend on it).
        Rounded up to a multiple of the mesh size.
      loop: ``"scan"``: the whole pass is one compiled ``lax.map`` over batches;
        ``"unrolled"``: one compiled call per batch, dispatched from the host (CPU);
        ``"auto"``: by platform (:func:`jaxmi.backend.resolve_loop`).
      mesh: a ``("data",)`` mesh: each batch is split over its devices. ``None``: one device.
      seed_loop: how K > 1 stacked models share the program.

    Returns:
      ``fn(params, batch_stats, *arrays)`` with stacked variables [K, ...] and arrays
      [N, ...] shared by the K models; every output leaf has shape [K, N, ...].
    """
    if mesh is not None:
        batch_size = -(-batch_size // mesh.size) * mesh.size

    def sharded(params, batch_stats, *arrays):
        return per_batch(params, batch_stats, *parallel.shard_batch(arrays, mesh))

    def one_batch(params, batch_stats, *arrays):
        return over_seeds(sharded, (0, 0) + (None,) * len(arrays), seed_loop)(params, batch_stats, *arrays)

    if backend.resolve_loop(loop) == "scan":
        @jax.jit
        def scanned(params, batch_stats, *arrays):
            n = arrays[0].shape[0]
            nb = -(-n // batch_size)
            stacked = [_pad_to(a, nb * batch_size).reshape(nb, batch_size, *a.shape[1:]) for a in arrays]
            out = jax.lax.map(lambda b: one_batch(params, batch_stats, *b), tuple(stacked))  # [nb, K, B, ...]
            return jax.tree.map(lambda o: jnp.moveaxis(o, 0, 1).reshape(o.shape[1], nb * batch_size,
                                                                        *o.shape[3:])[:, :n], out)

        return scanned

    batch_fn = jax.jit(one_batch)
    wait = backend.dispatch_wait(mesh)

    def host_loop(params, batch_stats, *arrays):
        n = arrays[0].shape[0]
        outs = [wait(batch_fn(params, batch_stats, *(_pad_to(a[s:s + batch_size], batch_size) for a in arrays)))
                for s in range(0, n, batch_size)]
        return jax.tree.map(lambda *o: jax.lax.slice_in_dim(jnp.concatenate(o, axis=1), 0, n, axis=1), *outs)

    host_loop.batch_fn = batch_fn  # exposed for compile-cache checks
    return host_loop


def _logits_fn(module: nn.Module, params: Any, batch_stats: Any) -> Callable[[Array], Array]:
    return lambda xx: apply_model(module, params, batch_stats, xx, train=False)[0]


def make_adversary(module: nn.Module, attack: PGDConfig, **batching: Any) -> Callable:
    """``adversary(params, batch_stats, x, y) -> x_adv`` [K, N, ...]: evaluation PGD examples of
    float images ``x`` [N, H, W, C] in [0, 1] (from the clean image; ``batching`` as in
    :func:`batched`)."""
    if attack.random_start:
        raise ValueError("evaluation attacks start from the clean image: pass a PGDConfig with random_start=False.")

    def per_batch(params, batch_stats, x, y):
        return pgd(_logits_fn(module, params, batch_stats), x, y, eps=attack.eps, step_size=attack.step_size,
                   steps=attack.steps)

    return batched(per_batch, **batching)


def _forward(module, params, batch_stats, x, y, *, with_probes: bool, with_probs: bool = False) -> dict[str, Any]:
    logits, probes, _ = apply_model(module, params, batch_stats, x, train=False)
    out = {"loss": cross_entropy(logits, y), "correct": jnp.argmax(logits, -1) == y}
    if with_probs:
        out["probs"] = jax.nn.softmax(logits)
    if with_probes:
        out["probes"] = probes
    return out


def make_forward(module: nn.Module, *, with_probes: bool = True, with_probs: bool = True, **batching: Any) -> Callable:
    """``forward(params, batch_stats, x, y)`` on float images [N, H, W, C]: per-example ``loss``,
    ``correct``, ``probs`` (softmax, with ``with_probs``) and ``probes`` (with ``with_probes``),
    each [K, N, ...] (``batching`` as in :func:`batched`)."""

    def per_batch(params, batch_stats, x, y):
        return _forward(module, params, batch_stats, x, y, with_probes=with_probes, with_probs=with_probs)

    return batched(per_batch, **batching)


def make_evaluator(module: nn.Module, attack: PGDConfig, *, with_probes: bool = False, **batching: Any) -> Callable:
    """``evaluate(params, batch_stats, images, labels)``: the model in evaluation mode on clean
    uint8 ``images`` [N, H, W, C] and on their PGD examples.

    Args:
      module: the model.
      attack: the evaluation attack (``random_start=False``).
      with_probes: also return the probe activations on clean and adversarial inputs.
      **batching: ``batch_size``, ``loop``, ``mesh``, ``seed_loop`` as in :func:`batched`.

    Returns:
      A function of stacked variables [K, ...] returning per-example arrays [K, N]:
      ``clean_loss``, ``clean_correct``, ``adv_loss``, ``adv_correct`` (and
      ``clean_probes``/``adv_probes``, dicts of [K, N, D] arrays, with ``with_probes``).
    """
    if attack.random_start:
        raise ValueError("evaluation attacks start from the clean image: pass a PGDConfig with random_start=False.")

    def per_batch(params, batch_stats, xb, yb):
        x = to_float(xb)
        x_adv = pgd(_logits_fn(module, params, batch_stats), x, yb, eps=attack.eps, step_size=attack.step_size,
                    steps=attack.steps)
        out = {}
        for inputs, xi in (("clean", x), ("adv", x_adv)):
            for k, v in _forward(module, params, batch_stats, xi, yb, with_probes=with_probes).items():
                out[f"{inputs}_{k}"] = v
        return out

    return batched(per_batch, **batching)


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
