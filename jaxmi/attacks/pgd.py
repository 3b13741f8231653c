"""FGSM and PGD (L∞ and L2, targeted or not, restarts), and what the attacks share: the losses,
their input gradients, per-example norms and the two projections onto the ε-ball and the clip
box ([0, 1] by default).

The public attacks (:func:`fgsm`, :func:`pgd`) check their arguments once
(:mod:`jaxmi.attacks.checks`) and call unchecked cores (:func:`fgsm_core`, :func:`pgd_core`),
compiled (``jax.jit``, the logits function and the static settings as static arguments) when
called eagerly and inline under an outer transformation; the robust evaluation
(:mod:`jaxmi.attacks.robust`) calls the cores directly.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxmi import backend
from jaxmi.attacks import checks

__all__ = ["PGDConfig", "fgsm", "pgd", "Array", "LogitsFn", "ce_loss", "loss_grad", "example_norm", "per_example",
           "project_linf", "project_l2", "L2_ROUNDINGS", "DEFAULT_CLIP", "fgsm_step", "fgsm_core", "pgd_core"]

Array = jax.Array
LogitsFn = Callable[[Array], Array]

L2_ROUNDINGS = ("pgd", "apgd", "apgd-momentum")
DEFAULT_CLIP = checks.DEFAULT_CLIP


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
        checks.validate_attack(self.eps, self.step_size, self.steps)


# ------------------------------------------------------------------ shared by every attack


def example_norm(v: Array) -> Array:
    """Per-example L2 norm, shaped [B, 1, ..., 1] to broadcast against ``v``."""
    return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


def per_example(a: Array, like: Array) -> Array:
    """A [B] vector shaped [B, 1, ..., 1] to broadcast against ``like``."""
    return a.reshape((-1,) + (1,) * (like.ndim - 1))


def ce_loss(logits: Array, y: Array) -> Array:
    """Cross-entropy per example: logits [B, K], integer labels [B] -> [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def loss_grad(logits_fn: LogitsFn, x: Array, y: Array) -> Array:
    """∇ₓ Σ_b CE(f(x)_b, y_b): the input gradient FGSM and untargeted PGD ascend, shaped as ``x``."""
    def loss(xx):
        return ce_loss(logits_fn(xx), y).sum()

    return jax.grad(loss)(x)


def _targeted_loss_grad(logits_fn: LogitsFn, x: Array, target: Array) -> Array:
    def loss(xx):
        return -ce_loss(logits_fn(xx), target).sum()

    return jax.grad(loss)(x)


def project_linf(x0: Array, z: Array, eps, clip: tuple[float, float] = DEFAULT_CLIP) -> Array:
    """Π onto {‖x − x₀‖∞ ≤ ε} per coordinate, then the ``clip`` box [lo, hi] ([0, 1] by
    default): one clip to the intersection [max(x₀ − ε, lo), min(x₀ + ε, hi)]."""
    lo, hi = clip
    return jnp.clip(z, jnp.clip(x0 - eps, lo, hi), jnp.clip(x0 + eps, lo, hi))


def project_l2(x0: Array, z: Array, eps, *, rounding: str = "pgd", clip: tuple[float, float] = DEFAULT_CLIP
               ) -> Array:
    """Π onto {‖x − x₀‖₂ ≤ ε} per example, then the ``clip`` box ([0, 1] by default).

    With δ = z − x₀ and n = ‖δ‖₂, the same projection in the floating-point form of each
    reference implementation (their results differ in the last bits):

    * ``"pgd"`` (torchattacks ``PGDL2``): x₀ + δ · min(1, ε / max(n, 1e-12));
    * ``"apgd"`` (fra31/auto-attack, after the gradient step): x₀ + δ / (n + 1e-12) · min(ε, n);
    * ``"apgd-momentum"`` (fra31/auto-attack, after the momentum step):
      x₀ + δ / (n + 1e-12) · min(ε, n + 1e-12).
    """
    d = z - x0
    n = example_norm(d)
    if rounding == "pgd":
        out = x0 + d * jnp.minimum(1.0, eps / jnp.maximum(n, 1e-12))
    elif rounding == "apgd":
        out = x0 + d / (n + 1e-12) * jnp.minimum(eps, n)
    elif rounding == "apgd-momentum":
        out = x0 + d / (n + 1e-12) * jnp.minimum(eps, n + 1e-12)
    else:
        raise ValueError(f"unknown L2 projection rounding {rounding!r}; choose one of {L2_ROUNDINGS}.")
    return jnp.clip(out, *clip)


# ---------------------------------------------------------------------------------- FGSM


def fgsm_step(x: Array, grad: Array, eps, clip: tuple[float, float] = DEFAULT_CLIP) -> Array:
    """``clip_box(x + ε · sign grad)``, unchecked: :func:`fgsm` given the input gradient."""
    return jnp.clip(x + eps * jnp.sign(grad), *clip).astype(x.dtype)


def fgsm_core(logits_fn: LogitsFn, x: Array, y: Array, eps, clip: tuple[float, float] = DEFAULT_CLIP) -> Array:
    """:func:`fgsm` without its argument checks."""
    return fgsm_step(x, loss_grad(logits_fn, x, y), eps, clip)


_fgsm_jit = jax.jit(fgsm_core, static_argnames=("logits_fn", "clip"))


def fgsm(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float, clip: tuple[float, float] = DEFAULT_CLIP) -> Array:
    """Fast gradient sign method: ``clip_box(x + ε · sign ∇ₓ CE)`` (Goodfellow et al. 2015).

    Checks its arguments (:mod:`jaxmi.attacks.checks`), then runs a compiled core, compiled
    once per ``logits_fn`` object, ``clip`` and input shape: keep one function object (a new
    lambda per call compiles again). Under an outer ``jax.jit``/``jax.vmap`` (traced
    arguments) the core runs inline and the value checks (finite pixels inside ``clip``,
    labels in [0, K), ε no wider than the box) are skipped; shapes, dtypes and options are
    always checked.

    Args:
      logits_fn: batch of images -> logits [B, K].
      x: clean float images inside the ``clip`` box, [B, ...].
      y: integer labels [B] in [0, K).
      eps: L∞ radius, at most the box width (may be traced).
      clip: ``(low, high)``, the box of valid inputs ([0, 1] by default; e.g. ``(-1.0, 1.0)``
        for images in [-1, 1]); ε is in the same units.

    Returns:
      Adversarial images, same shape and dtype as ``x``.

    Raises:
      ValueError, TypeError: a bad argument, named in the message with the fix.
    """
    clip, traced = checks.check_fgsm(logits_fn, x, y, eps=eps, clip=clip)
    return (fgsm_core if traced else _fgsm_jit)(logits_fn, x, y, eps, clip)


# ----------------------------------------------------------------------------------- PGD


def _pgd_once(logits_fn, x, y, *, eps, step_size, steps, key, random_start, unroll, norm, target, clip):
    """One PGD run (no restarts)."""
    if target is None:
        def grad(xa):
            return loss_grad(logits_fn, xa, y)
    else:
        def grad(xa):
            return _targeted_loss_grad(logits_fn, xa, target)

    if norm == "linf":
        if random_start:
            x_adv = project_linf(x, x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), eps, clip)
        else:
            x_adv = x

        def body(_, xa):
            return project_linf(x, xa + step_size * jnp.sign(grad(xa)), eps, clip)
    else:
        if random_start:
            # torchattacks' PGDL2 start: a Gaussian direction at a radius U(0, ε).
            kd, kr = jax.random.split(key)
            d = jax.random.normal(kd, x.shape, x.dtype)
            r = jax.random.uniform(kr, (x.shape[0],), x.dtype)
            x_adv = jnp.clip(x + d / jnp.maximum(example_norm(d), 1e-12) * per_example(r, x) * eps, *clip)
        else:
            x_adv = x

        def body(_, xa):
            g = grad(xa)
            return project_l2(x, xa + step_size * (g / jnp.maximum(example_norm(g), 1e-12)), eps, clip=clip)

    return jax.lax.fori_loop(0, int(steps), body, x_adv, unroll=bool(unroll))


def _succeeded(logits: Array, y: Array, target: Array | None) -> Array:
    pred = jnp.argmax(logits, -1)
    return pred != y if target is None else pred == target


def pgd_core(logits_fn: LogitsFn, x: Array, y: Array, *, eps, step_size, steps: int, key: Array | None,
             random_start: bool, unroll: bool, norm: str, target: Array | None, restarts: int,
             clip: tuple[float, float] = DEFAULT_CLIP) -> Array:
    """:func:`pgd` without its argument checks, for callers that made them; ``unroll`` a bool."""
    run = functools.partial(_pgd_once, logits_fn, x, y, eps=eps, step_size=step_size, steps=steps,
                            random_start=random_start, unroll=unroll, norm=norm, target=target, clip=clip)
    if restarts == 1:
        return run(key=key)

    def loss_and_success(xa):
        logits = logits_fn(xa)
        loss = ce_loss(logits, y) if target is None else -ce_loss(logits, target)
        return loss, _succeeded(logits, y, target)

    def restart(r, carry):
        best, best_loss, done = carry
        xa = run(key=jax.random.fold_in(key, r))
        loss, ok = loss_and_success(xa)
        take = ~done & (ok | (loss > best_loss))
        return jnp.where(per_example(take, x), xa, best), jnp.where(take, loss, best_loss), done | ok

    first = run(key=jax.random.fold_in(key, 0))
    loss0, ok0 = loss_and_success(first)
    # The restarts are a compiled loop even when each run's iterations are unrolled (compile time).
    best, _, _ = jax.lax.fori_loop(1, int(restarts), restart, (first, loss0, ok0))
    return best


#: :func:`pgd_core` compiled once per logits function and static settings (the public
#: :func:`pgd` calls it outside a trace; its cache size tells the compilations).
pgd_compiled = jax.jit(pgd_core, static_argnames=("logits_fn", "steps", "random_start", "unroll", "norm", "restarts",
                                              "clip"))


def pgd(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float, step_size: float, steps: int,
        key: Array | None = None, random_start: bool = False, unroll: bool | None = None,
        norm: str = "linf", target: Array | None = None, restarts: int = 1,
        clip: tuple[float, float] = DEFAULT_CLIP) -> Array:
    """Projected gradient descent (Madry et al. 2018), L∞ or L2, untargeted or targeted.

    L∞ (default): ``x ← clip( x + α · sign ∇ₓL, max(x₀ − ε, lo), min(x₀ + ε, hi) )``.
    L2: ``x ← clip_[lo,hi]( x₀ + δ · min(1, ε / ‖δ‖₂) )`` with ``δ = x + α ∇ₓL / ‖∇ₓL‖₂ − x₀``,
    norms per example, ``(lo, hi) = clip``. L = Σ_b CE(f(x)_b, y_b) maximised, or with
    ``target`` L = −Σ_b CE(f(x)_b, t_b) (the attack minimises the cross-entropy toward ``target``).

    Checks its arguments once (:mod:`jaxmi.attacks.checks`), then runs a compiled core,
    compiled once per ``logits_fn`` object, static setting (``steps``, ``norm``,
    ``random_start``, ``restarts``, ``unroll``, ``clip``) and input shape; ``eps``,
    ``step_size``, ``key`` and ``target`` are traced, so a new ε does not compile again. The
    function object is the cache key: define ``logits_fn`` once and reuse it (a new lambda per
    call compiles again). Under an outer ``jax.jit``/``jax.vmap`` (traced arguments) the core
    runs inline and the value checks (finite pixels inside ``clip``, labels and targets in
    [0, K), ε no wider than the box) are skipped; shapes, dtypes and options are always checked.

    Args:
      logits_fn: batch of images -> logits [B, K].
      x: clean float images inside the ``clip`` box, [B, ...].
      y: integer labels [B] in [0, K).
      eps: radius ε (L∞ or L2, in the units of ``x``); may be traced. L∞: at most the box
        width ``hi − lo``; L2: at most the box's diameter ``(hi − lo)·√D`` (D values per
        example); a larger ball holds the whole box.
      step_size: α; may be traced.
      steps: number of iterations (static; 0 returns ``x``, or the random start).
      key: typed PRNG key (``jax.random.key``), required when ``random_start`` is True.
      random_start: start from x + U(−ε, ε) (L∞), or from a random direction at radius
        U(0, ε) (L2, as torchattacks' PGDL2), clipped to the box.
      unroll: unroll the iterations at compile time (True) or keep them a compiled loop
        (False); None: :func:`jaxmi.backend.resolve_attack_unroll` (unrolled on CPU only).
      norm: ``"linf"`` or ``"l2"``.
      target: None (untargeted) or target labels [B] (targeted: success is ``argmax = target``).
      restarts: independent random starts (needs ``random_start``); per example the result is
        the first restart that succeeds, else the one with the highest loss.
      clip: ``(low, high)``, the box of valid inputs ([0, 1] by default; ``(-1.0, 1.0)`` for
        images in [-1, 1]; ART calls it ``clip_values``).

    Returns:
      Adversarial images [B, ...] with ‖x_adv − x‖ ≤ ε and values in the box.

    Raises:
      ValueError, TypeError: a bad argument, named in the message with the fix.
    """
    clip, traced = checks.check_pgd(logits_fn, x, y, eps=eps, step_size=step_size, steps=steps, key=key,
                                    random_start=random_start, norm=norm, target=target, restarts=restarts, clip=clip)
    if unroll is None:
        unroll = backend.resolve_attack_unroll("auto")
    return (pgd_core if traced else pgd_compiled)(logits_fn, x, y, eps=eps, step_size=step_size, steps=int(steps),
                                              key=key, random_start=bool(random_start), unroll=bool(unroll),
                                              norm=norm, target=target, restarts=int(restarts), clip=clip)
