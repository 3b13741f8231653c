"""Gradient-sign attacks: FGSM and L∞ PGD (Goodfellow et al. 2015; Madry et al. 2018).

Pure functions of a logits function, inputs and labels. ``logits_fn`` maps a batch
[B, H, W, C] to logits [B, K]; close over the parameters (and the BatchNorm mode) you want
to attack, e.g. ``lambda x: apply_model(module, params, stats, x)[0]``. Every function
jits and vmaps; the PGD iteration is a ``lax.fori_loop``.

One PGD step, as in the paper::

    x ← clip_[0,1]( Π_{‖x − x₀‖∞ ≤ ε}( x + α · sign ∇ₓ CE(f(x), y) ) )

with an optional random start x₀ + U(−ε, ε) (used in adversarial training, not in
evaluation). The iterations are a ``lax.fori_loop``, unrolled at compile time on CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxmi import backend

__all__ = ["PGDConfig", "fgsm", "pgd", "validate_attack"]

Array = jax.Array
LogitsFn = Callable[[Array], Array]


@dataclasses.dataclass(frozen=True)
class PGDConfig:
    """An L∞ PGD attack: radius ``eps``, step ``step_size``, ``steps`` iterations.

    ``random_start`` adds U(−ε, ε) noise before the first step (Madry et al.'s training
    attack); evaluation attacks in the paper start from the clean image.
    """

    eps: float
    step_size: float
    steps: int
    random_start: bool = False

    def __post_init__(self):
        validate_attack(self.eps, self.step_size, self.steps)


def validate_attack(eps: float, step_size: float, steps: int) -> None:
    """Raises ValueError for an impossible attack configuration."""
    if not (eps >= 0):
        raise ValueError(f"attack eps must be ≥ 0 (an L∞ radius in [0, 1] pixel units); got {eps}.")
    if not (step_size > 0):
        raise ValueError(f"attack step size must be > 0; got {step_size}.")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"attack steps must be a non-negative integer; got {steps}.")


def _loss_grad(logits_fn: LogitsFn, x: Array, y: Array) -> Array:
    def loss(xx):
        return optax.softmax_cross_entropy_with_integer_labels(logits_fn(xx), y).sum()

    return jax.grad(loss)(x)


def fgsm(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float) -> Array:
    """Fast gradient sign method: ``clip_[0,1](x + ε · sign ∇ₓ CE)``.

    Args:
      logits_fn: batch of images -> logits.
      x: clean images in [0, 1].
      y: integer labels.
      eps: L∞ radius.

    Returns:
      Adversarial images, same shape and dtype as ``x``.
    """
    validate_attack(eps, 1.0, 1)
    g = _loss_grad(logits_fn, x, y)
    return jnp.clip(x + eps * jnp.sign(g), 0.0, 1.0).astype(x.dtype)


def pgd(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float, step_size: float, steps: int,
        key: Array | None = None, random_start: bool = False, unroll: bool | None = None) -> Array:
    """Projected gradient descent in the L∞ ball (maximising the cross-entropy).

    Args:
      logits_fn: batch of images -> logits.
      x: clean images in [0, 1], [B, ...].
      y: integer labels [B].
      eps: L∞ radius ε.
      step_size: α.
      steps: number of iterations (0 returns ``x``, or the random start).
      key: PRNG key, required when ``random_start`` is True.
      random_start: start from x + U(−ε, ε) (clipped to [0, 1]).
      unroll: unroll the iterations at compile time (True) or keep them a compiled loop
        (False); None: :func:`jaxmi.backend.resolve_attack_unroll` (unrolled on CPU only).

    Returns:
      Adversarial images with ‖x_adv − x‖∞ ≤ ε and values in [0, 1].
    """
    validate_attack(eps, step_size, steps)
    lo = jnp.clip(x - eps, 0.0, 1.0)
    hi = jnp.clip(x + eps, 0.0, 1.0)
    if random_start:
        if key is None:
            raise ValueError("pgd(random_start=True) needs a PRNG key: pass key=jax.random.key(seed).")
        x_adv = jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), lo, hi)
    else:
        x_adv = x

    def body(_, xa):
        g = _loss_grad(logits_fn, xa, y)
        # Π_ε then clip to [0, 1] is one clip to the intersection [max(x−ε, 0), min(x+ε, 1)].
        return jnp.clip(xa + step_size * jnp.sign(g), lo, hi)

    if unroll is None:
        unroll = backend.resolve_attack_unroll("auto")
    return jax.lax.fori_loop(0, int(steps), body, x_adv, unroll=bool(unroll))
