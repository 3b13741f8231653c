"""Adversarial attacks and robust evaluation: FGSM, PGD (L∞ and L2, targeted or not), APGD
(CE, DLR and targeted DLR), and an AutoAttack-style robust accuracy with gradient-masking checks.

Pure functions of a logits function, inputs and labels. ``logits_fn`` maps a batch
[B, H, W, C] (any [B, ...]) in [0, 1] to logits [B, K]; close over the parameters (and the
BatchNorm mode) you want to attack, e.g. ``lambda x: apply_model(module, params, stats, x)[0]``.
Every attack jits and vmaps; ``eps`` and ``step_size`` may be traced (``jax.vmap`` over ε
gives a whole robustness curve in one compiled call); iteration counts are static. Random
starts take an explicit typed PRNG key (``jax.random.key``).

* :func:`fgsm` — Goodfellow et al. 2015: ``clip_[0,1](x + ε · sign ∇ₓ CE)``.
* :func:`pgd` — Madry et al. 2018. One L∞ step::

      x ← clip_[0,1]( Π_{‖x − x₀‖∞ ≤ ε}( x + α · sign ∇ₓ L ) )

  and one L2 step ``x ← clip_[0,1]( Π_{‖x − x₀‖₂ ≤ ε}( x + α · ∇ₓL / ‖∇ₓL‖₂ ) )`` (norms per
  example), with L = CE(f(x), y) (untargeted) or L = −CE(f(x), t) (targeted toward ``target``),
  an optional random start and ``restarts``. The iterations are a ``lax.fori_loop``,
  unrolled at compile time on CPU (:func:`jaxmi.backend.resolve_attack_unroll`).
* :func:`apgd` — Auto-PGD of Croce & Hein, "Reliable evaluation of adversarial robustness
  with an ensemble of diverse parameter-free attacks", ICML 2020: momentum 0.75, initial step
  2ε, step halved at checkpoints (:func:`apgd_checkpoints`) and restarted from the best point,
  CE, DLR (:func:`dlr_loss`) or targeted DLR loss; follows the reference implementation
  (``fra31/auto-attack``, as in torchattacks 3.5.1 ``APGD``/``APGDT``) step for step.
* :func:`robust_accuracy` — FGSM, PGD, APGD-CE and APGD-T (targeted DLR over the top-k
  classes), worst case per example, with gradient-masking flags (:class:`RobustResult`).
* :func:`robustness_curve` — accuracy under an attack at a vector of ε, one compiled call.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmi import backend

__all__ = ["PGDConfig", "fgsm", "pgd", "apgd", "apgd_targeted", "apgd_checkpoints", "dlr_loss", "targeted_dlr_loss",
           "validate_attack", "robust_accuracy", "RobustResult", "robustness_curve", "RobustnessCurve",
           "masking_flags", "NORMS", "APGD_LOSSES", "CURVE_ATTACKS"]

Array = jax.Array
LogitsFn = Callable[[Array], Array]

NORMS = ("linf", "l2")
APGD_LOSSES = ("ce", "dlr")
CURVE_ATTACKS = ("fgsm", "pgd", "apgd", "robust")


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


def _concrete(value) -> np.ndarray | None:
    """``value`` as a NumPy array when it is known now; None for a traced value (inside jit/vmap)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def validate_attack(eps, step_size, steps: int) -> None:
    """Raises ValueError for an impossible attack configuration.

    ``eps`` and ``step_size`` are checked when they are concrete; traced values (an attack
    under ``jax.jit`` or ``jax.vmap`` over ε) pass unchecked. ``steps`` is always static.
    """
    e = _concrete(eps)
    if e is not None and not np.all(e >= 0):
        raise ValueError(f"attack eps must be ≥ 0 (an L∞ radius in [0, 1] pixel units); got {eps}.")
    s = _concrete(step_size)
    if s is not None and not np.all(s > 0):
        raise ValueError(f"attack step size must be > 0; got {step_size}.")
    try:
        bad_steps = int(steps) != steps or steps < 0
    except (TypeError, jax.errors.ConcretizationTypeError):
        bad_steps = True
    if bad_steps:
        raise ValueError(f"attack steps must be a non-negative integer (static, not traced); got {steps}.")


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown attack norm {norm!r}; choose 'linf' or 'l2'.")


def _check_labels(x: Array, y: Array, name: str = "y") -> None:
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name} must hold one integer label per example, shape ({x.shape[0]},); got shape "
                         f"{tuple(y.shape)}.")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"{name} must be integer class labels; got dtype {y.dtype}.")


def _check_key(key, who: str) -> None:
    if key is None:
        raise ValueError(f"{who} needs a PRNG key: pass key=jax.random.key(seed).")
    if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        raise ValueError(f"{who} takes a typed PRNG key: pass key=jax.random.key(seed), not "
                         "jax.random.PRNGKey(seed) or an integer.")


def _example_norm(v: Array) -> Array:
    """Per-example L2 norm, shaped [B, 1, ..., 1] to broadcast against ``v``."""
    return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


def _per_example(a: Array, like: Array) -> Array:
    """A [B] vector shaped [B, 1, ..., 1] to broadcast against ``like``."""
    return a.reshape((-1,) + (1,) * (like.ndim - 1))


def _ce(logits: Array, y: Array) -> Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def _loss_grad(logits_fn: LogitsFn, x: Array, y: Array) -> Array:
    def loss(xx):
        return _ce(logits_fn(xx), y).sum()

    return jax.grad(loss)(x)


def _targeted_loss_grad(logits_fn: LogitsFn, x: Array, target: Array) -> Array:
    def loss(xx):
        return -_ce(logits_fn(xx), target).sum()

    return jax.grad(loss)(x)


def fgsm(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float) -> Array:
    """Fast gradient sign method: ``clip_[0,1](x + ε · sign ∇ₓ CE)`` (Goodfellow et al. 2015).

    Args:
      logits_fn: batch of images -> logits.
      x: clean images in [0, 1], [B, ...].
      y: integer labels [B].
      eps: L∞ radius (may be traced).

    Returns:
      Adversarial images, same shape and dtype as ``x``.
    """
    validate_attack(eps, 1.0, 1)
    g = _loss_grad(logits_fn, x, y)
    return jnp.clip(x + eps * jnp.sign(g), 0.0, 1.0).astype(x.dtype)


def _l2_project(x0: Array, xa: Array, eps) -> Array:
    """Π onto {‖x − x₀‖₂ ≤ ε} per example, then the [0, 1] box."""
    d = xa - x0
    n = _example_norm(d)
    factor = jnp.minimum(1.0, eps / jnp.maximum(n, 1e-12))
    return jnp.clip(x0 + d * factor, 0.0, 1.0)


def _pgd_once(logits_fn, x, y, *, eps, step_size, steps, key, random_start, unroll, norm, target):
    """One PGD run (no restarts)."""
    if norm == "linf":
        lo = jnp.clip(x - eps, 0.0, 1.0)
        hi = jnp.clip(x + eps, 0.0, 1.0)
        if random_start:
            x_adv = jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), lo, hi)
        else:
            x_adv = x

        if target is None:
            def body(_, xa):
                g = _loss_grad(logits_fn, xa, y)
                # Π_ε then clip to [0, 1] is one clip to the intersection [max(x−ε, 0), min(x+ε, 1)].
                return jnp.clip(xa + step_size * jnp.sign(g), lo, hi)
        else:
            def body(_, xa):
                g = _targeted_loss_grad(logits_fn, xa, target)
                return jnp.clip(xa + step_size * jnp.sign(g), lo, hi)
    else:
        if random_start:
            # torchattacks' PGDL2 start: a Gaussian direction at a radius U(0, ε).
            kd, kr = jax.random.split(key)
            d = jax.random.normal(kd, x.shape, x.dtype)
            r = jax.random.uniform(kr, (x.shape[0],), x.dtype)
            x_adv = jnp.clip(x + d / jnp.maximum(_example_norm(d), 1e-12) * _per_example(r, x) * eps, 0.0, 1.0)
        else:
            x_adv = x

        def body(_, xa):
            g = _loss_grad(logits_fn, xa, y) if target is None else _targeted_loss_grad(logits_fn, xa, target)
            step = g / jnp.maximum(_example_norm(g), 1e-12)
            return _l2_project(x, xa + step_size * step, eps)

    return jax.lax.fori_loop(0, int(steps), body, x_adv, unroll=bool(unroll))


def _succeeded(logits: Array, y: Array, target: Array | None) -> Array:
    pred = jnp.argmax(logits, -1)
    return pred != y if target is None else pred == target


def pgd(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float, step_size: float, steps: int,
        key: Array | None = None, random_start: bool = False, unroll: bool | None = None,
        norm: str = "linf", target: Array | None = None, restarts: int = 1) -> Array:
    """Projected gradient descent (Madry et al. 2018), L∞ or L2, untargeted or targeted.

    L∞ (default): ``x ← clip( x + α · sign ∇ₓL, max(x₀ − ε, 0), min(x₀ + ε, 1) )``.
    L2: ``x ← clip_[0,1]( x₀ + δ · min(1, ε / ‖δ‖₂) )`` with ``δ = x + α ∇ₓL / ‖∇ₓL‖₂ − x₀``,
    norms per example. L = Σ_b CE(f(x)_b, y_b) maximised, or with ``target`` L = −Σ_b
    CE(f(x)_b, t_b) (the attack minimises the cross-entropy toward ``target``).

    Args:
      logits_fn: batch of images -> logits.
      x: clean images in [0, 1], [B, ...].
      y: integer labels [B].
      eps: radius ε (L∞ or L2, in [0, 1] pixel units); may be traced.
      step_size: α; may be traced.
      steps: number of iterations (static; 0 returns ``x``, or the random start).
      key: typed PRNG key (``jax.random.key``), required when ``random_start`` is True.
      random_start: start from x + U(−ε, ε) (L∞), or from a random direction at radius
        U(0, ε) (L2, as torchattacks' PGDL2), clipped to [0, 1].
      unroll: unroll the iterations at compile time (True) or keep them a compiled loop
        (False); None: :func:`jaxmi.backend.resolve_attack_unroll` (unrolled on CPU only).
      norm: ``"linf"`` or ``"l2"``.
      target: None (untargeted) or target labels [B] (targeted: success is ``argmax = target``).
      restarts: independent random starts (needs ``random_start``); per example the result is
        the first restart that succeeds, else the one with the highest loss.

    Returns:
      Adversarial images [B, ...] with ‖x_adv − x‖ ≤ ε and values in [0, 1].
    """
    validate_attack(eps, step_size, steps)
    _check_norm(norm)
    if target is not None:
        _check_labels(x, target, "target")
    if int(restarts) != restarts or restarts < 1:
        raise ValueError(f"pgd restarts must be a positive integer; got {restarts}.")
    if restarts > 1 and not random_start:
        raise ValueError("pgd(restarts > 1) repeats the same attack unless it starts at random: pass "
                         "random_start=True and a key.")
    if random_start:
        if key is None:
            raise ValueError("pgd(random_start=True) needs a PRNG key: pass key=jax.random.key(seed).")
    if unroll is None:
        unroll = backend.resolve_attack_unroll("auto")
    run = functools.partial(_pgd_once, logits_fn, x, y, eps=eps, step_size=step_size, steps=steps,
                            random_start=random_start, unroll=unroll, norm=norm, target=target)
    if restarts == 1:
        return run(key=key)

    def loss_and_success(xa):
        logits = logits_fn(xa)
        loss = _ce(logits, y) if target is None else -_ce(logits, target)
        return loss, _succeeded(logits, y, target)

    def restart(r, carry):
        best, best_loss, done = carry
        xa = run(key=jax.random.fold_in(key, r))
        loss, ok = loss_and_success(xa)
        take = ~done & (ok | (loss > best_loss))
        return jnp.where(_per_example(take, x), xa, best), jnp.where(take, loss, best_loss), done | ok

    first = run(key=jax.random.fold_in(key, 0))
    loss0, ok0 = loss_and_success(first)
    # The restarts are a compiled loop even when each run's iterations are unrolled (compile time).
    best, _, _ = jax.lax.fori_loop(1, int(restarts), restart, (first, loss0, ok0))
    return best


# --------------------------------------------------------------------------------------- APGD


def dlr_loss(logits: Array, y: Array) -> Array:
    """Difference-of-logits-ratio loss (Croce & Hein 2020, eq. 6), per example.

    ``DLR(z, y) = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12)`` with z_π1 ≥ z_π2 ≥ … the
    sorted logits; invariant to shifting and rescaling the logits, positive iff misclassified.

    Args:
      logits: [B, K], K ≥ 3.
      y: integer labels [B].

    Returns:
      [B] losses.
    """
    if logits.shape[-1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes; got logits of shape {tuple(logits.shape)}. "
                         "Use loss='ce'.")
    zs = jnp.sort(logits, axis=-1)
    z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
    top_is_y = jnp.argmax(logits, -1) == y
    other = jnp.where(top_is_y, zs[:, -2], zs[:, -1])
    return -(z_y - other) / (zs[:, -1] - zs[:, -3] + 1e-12)


def targeted_dlr_loss(logits: Array, y: Array, target: Array) -> Array:
    """Targeted DLR loss of APGD-T (Croce & Hein 2020, eq. 7), per example.

    ``DLR_t(z, y) = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)``.

    Args:
      logits: [B, K], K ≥ 4.
      y: integer labels [B].
      target: target labels [B].

    Returns:
      [B] losses.
    """
    if logits.shape[-1] < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes; got logits of shape "
                         f"{tuple(logits.shape)}. Use loss='ce'.")
    zs = jnp.sort(logits, axis=-1)
    z_y = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
    z_t = jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]
    return -(z_y - z_t) / (zs[:, -1] - 0.5 * zs[:, -3] - 0.5 * zs[:, -4] + 1e-12)


def _apgd_schedule(steps: int) -> np.ndarray:
    """[steps] ints: at iteration i (0-based) the length k of the interval that ends there, 0 if
    no checkpoint. Reference implementation: first interval ⌊0.22·N⌋, each next one shorter by
    ⌊0.03·N⌋, at least ⌊0.06·N⌋ (each at least 1)."""
    k = max(int(0.22 * steps), 1)
    k_min = max(int(0.06 * steps), 1)
    decrease = max(int(0.03 * steps), 1)
    ks = np.zeros(steps, np.int32)
    counter = 0
    for i in range(steps):
        counter += 1
        if counter == k:
            ks[i] = k
            counter = 0
            k = max(k - decrease, k_min)
    return ks


def apgd_checkpoints(steps: int) -> tuple[int, ...]:
    """The iteration counts w_j after which APGD checks its step size.

    Croce & Hein 2020, §3.2: p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06),
    w_j = ⌈p_j · N⌉. As in the reference implementation the intervals are integers: the first
    ⌊0.22·N⌋, each next one ⌊0.03·N⌋ shorter, at least ⌊0.06·N⌋ (each at least 1); this equals
    the paper's ⌈p_j N⌉ when N is a multiple of 100 and differs by rounding otherwise.
    """
    validate_attack(0.0, 1.0, steps)
    return tuple(int(i) + 1 for i in np.flatnonzero(_apgd_schedule(int(steps))))


def _apgd_loss_fn(loss: str, y: Array, target: Array | None) -> Callable[[Array], Array]:
    if loss == "ce":
        return (lambda z: _ce(z, y)) if target is None else (lambda z: -_ce(z, target))
    return (lambda z: dlr_loss(z, y)) if target is None else (lambda z: targeted_dlr_loss(z, y, target))


def _apgd_run(logits_fn, x, y, *, eps, steps, loss_fn, key, norm, rho, momentum, unroll):
    """One APGD run from a random start (``attack_single_run`` of the reference).

    Returns ``(x_best, fooled, loss_best, x_best_adv)``: the highest-loss point, whether any
    iterate (the start included) was misclassified, its loss, the last misclassified iterate.
    """
    b = x.shape[0]
    shape1 = (b,) + (1,) * (x.ndim - 1)
    if norm == "linf":
        t = 2.0 * jax.random.uniform(key, x.shape, x.dtype) - 1.0
        t_max = jnp.max(jnp.abs(t).reshape(b, -1), axis=1).reshape(shape1)
        x_adv = jnp.clip(x + eps * t / t_max, 0.0, 1.0)
        lo = jnp.clip(x - eps, 0.0, 1.0)
        hi = jnp.clip(x + eps, 0.0, 1.0)
    else:
        t = jax.random.normal(key, x.shape, x.dtype)
        x_adv = jnp.clip(x + eps * t / (_example_norm(t) + 1e-12), 0.0, 1.0)

    def value_grad(xa):
        def total(z):
            logits = logits_fn(z)
            per = loss_fn(logits)
            return per.sum(), (per, logits)

        (_, (per, logits)), g = jax.value_and_grad(total, has_aux=True)(xa)
        return per, jnp.argmax(logits, -1) == y, g

    loss0, correct0, grad0 = value_grad(x_adv)
    schedule = jnp.asarray(_apgd_schedule(steps))
    idx = jnp.arange(steps)

    def l2_ball(z):
        d = z - x
        n = _example_norm(d)
        return jnp.clip(x + d / (n + 1e-12) * jnp.minimum(eps, n), 0.0, 1.0)

    def body(i, s):
        (x_adv, x_old, grad, step, x_best, grad_best, loss_best, x_best_adv, correct, loss_steps,
         loss_best_last, reduced_last) = s
        grad2 = x_adv - x_old
        x_old = x_adv
        a = jnp.where(i > 0, momentum, 1.0).astype(x.dtype)
        eta = step.reshape(shape1)
        if norm == "linf":
            z = jnp.clip(x_adv + eta * jnp.sign(grad), lo, hi)
            x_new = jnp.clip(x_adv + (z - x_adv) * a + grad2 * (1 - a), lo, hi)
        else:
            z = l2_ball(x_adv + eta * grad / (_example_norm(grad) + 1e-12))
            x_new = x_adv + (z - x_adv) * a + grad2 * (1 - a)
            d = x_new - x
            n = _example_norm(d)
            x_new = jnp.clip(x + d / (n + 1e-12) * jnp.minimum(eps, n + 1e-12), 0.0, 1.0)
        loss_i, pred_ok, grad = value_grad(x_new)
        correct = correct & pred_ok
        x_best_adv = jnp.where(_per_example(~pred_ok, x), x_new, x_best_adv)
        loss_steps = loss_steps.at[i].set(loss_i)
        better = loss_i > loss_best
        x_best = jnp.where(_per_example(better, x), x_new, x_best)
        grad_best = jnp.where(_per_example(better, x), grad, grad_best)
        loss_best = jnp.where(better, loss_i, loss_best)
        # Checkpoint: halve the step where fewer than ρ·k of the last k steps raised the loss,
        # or where the step was not halved at the last checkpoint and the best loss has not
        # improved since; those examples restart from their best point.
        k = schedule[i]
        prev = jnp.roll(loss_steps, 1, axis=0)  # prev[j] = loss after step j−1 (j = 0 wraps, as the reference)
        window = ((idx > i - k) & (idx <= i))[:, None]
        raised = jnp.sum(window & (loss_steps > prev), axis=0)
        oscillating = raised <= k * rho
        no_improvement = ~reduced_last & (loss_best_last >= loss_best)
        halve = (k > 0) & (oscillating | no_improvement)
        step = jnp.where(halve, step / 2.0, step)
        x_adv = jnp.where(_per_example(halve, x), x_best, x_new)
        grad = jnp.where(_per_example(halve, x), grad_best, grad)
        reduced_last = jnp.where(k > 0, oscillating | no_improvement, reduced_last)
        loss_best_last = jnp.where(k > 0, loss_best, loss_best_last)
        return (x_adv, x_old, grad, step, x_best, grad_best, loss_best, x_best_adv, correct, loss_steps,
                loss_best_last, reduced_last)

    step0 = jnp.full((b,), 2.0, x.dtype) * eps
    state = (x_adv, x_adv, grad0, step0, x_adv, grad0, loss0, x_adv, correct0,
             jnp.zeros((steps, b), loss0.dtype), loss0, jnp.ones((b,), bool))
    state = jax.lax.fori_loop(0, steps, body, state, unroll=unroll)
    _, _, _, _, x_best, _, loss_best, x_best_adv, correct, _, _, _ = state
    return x_best, ~correct, loss_best, x_best_adv


def _apgd(logits_fn, x, y, *, eps, steps, loss, key, norm, target, restarts, rho, momentum, unroll,
          clean_wrong=None):
    """APGD with restarts; returns (x_adv, fooled [B])."""
    loss_fn = _apgd_loss_fn(loss, y, target)
    run = functools.partial(_apgd_run, logits_fn, x, y, eps=eps, steps=steps, loss_fn=loss_fn, norm=norm,
                            rho=rho, momentum=momentum, unroll=unroll)

    def merge(r, carry):
        adv, best_loss, fooled = carry
        x_best, fooled_r, loss_r, x_best_adv = run(key=jax.random.fold_in(key, r))
        newly = ~fooled & fooled_r
        higher = ~fooled & ~fooled_r & (loss_r > best_loss)
        adv = jnp.where(_per_example(newly, x), x_best_adv, jnp.where(_per_example(higher, x), x_best, adv))
        return adv, jnp.where(higher, loss_r, best_loss), fooled | fooled_r

    x_best, fooled, loss_best, x_best_adv = run(key=jax.random.fold_in(key, 0))
    adv = jnp.where(_per_example(fooled, x), x_best_adv, x_best)
    if restarts > 1:
        adv, loss_best, fooled = jax.lax.fori_loop(1, restarts, merge, (adv, loss_best, fooled))
    if clean_wrong is None:
        clean_wrong = jnp.argmax(logits_fn(x), -1) != y
    # As the reference: an example the model already gets wrong is its own adversarial example.
    adv = jnp.where(_per_example(clean_wrong & ~fooled, x), x, adv)
    return adv, fooled | clean_wrong


def _apgd_t(logits_fn, x, y, clean_logits, active, *, eps, key, n_targets, batch_size, **apgd_kw):
    """APGD-T over the top ``n_targets`` classes of ``clean_logits``, on the ``active`` examples only.

    For each target the examples still to attack (active, not yet fooled) are gathered to the
    front and attacked in chunks of ``batch_size``; chunks without such examples are skipped
    (``lax.cond``), and so are the remaining targets once none is left. The cost per target
    is the number of examples still to attack, rounded up to whole chunks, as in the reference
    (which attacks only the examples still robust), while every shape stays static. Returns
    ``(x_adv, fooled)``: per example the first target's point that misclassifies, else the
    first target's highest-loss point; inactive examples: ``x`` and False.
    """
    n = x.shape[0]
    size = min(int(batch_size), n)
    chunks = -(-n // size)
    padded = chunks * size
    ranks = jnp.argsort(clean_logits, axis=-1)  # the targets: classes ranked 2 … n_targets+1 on the clean input
    num_classes = clean_logits.shape[-1]

    def split(a):
        return a.reshape((chunks, size) + a.shape[1:])

    def one_target(i, carry):
        def run(carry):
            adv, fooled = carry
            todo = active & ~fooled
            target = jax.lax.dynamic_index_in_dim(ranks, num_classes - 2 - i, axis=1, keepdims=False)
            order = jnp.argsort(~todo, stable=True)  # examples still to attack first
            idx = jnp.concatenate([order, jnp.zeros((padded - n,), order.dtype)])
            live = jnp.concatenate([todo[order], jnp.zeros((padded - n,), bool)])

            def chunk(args):
                c, ix, lv = args

                def attack(_):
                    adv_c, fooled_c = _apgd(logits_fn, x[ix], y[ix], eps=eps, loss="dlr",
                                            key=jax.random.fold_in(jax.random.fold_in(key, i), c), target=target[ix],
                                            clean_wrong=jnp.zeros_like(lv), **apgd_kw)
                    return adv_c, fooled_c & lv

                return jax.lax.cond(jnp.any(lv), attack, lambda _: (x[ix], jnp.zeros_like(lv)), None)

            adv_s, fooled_s = jax.lax.map(chunk, (jnp.arange(chunks), split(idx), split(live)))
            inverse = jnp.argsort(order)
            adv_i = adv_s.reshape((padded,) + x.shape[1:])[:n][inverse]
            fooled_i = fooled_s.reshape(padded)[:n][inverse]
            take = todo & (fooled_i | (i == 0))
            return jnp.where(_per_example(take, x), adv_i, adv), fooled | fooled_i

        # Skip the remaining targets once every active example is fooled.
        return jax.lax.cond(jnp.any(active & ~carry[1]), run, lambda carry: carry, carry)

    return jax.lax.fori_loop(0, n_targets, one_target, (x, jnp.zeros((n,), bool)))


def _chunk_size(batch_size: int | None) -> int:
    """APGD-T's chunk: small on CPU (an APGD step on LeNet cost about the same per example in
    batches of 16 and of 512 there, and small chunks leave less unfooled padding), large
    elsewhere (chunks run one after another)."""
    if batch_size is None:
        return 16 if backend.is_cpu() else 512
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size}.")
    return int(batch_size)


def _check_apgd(x, y, *, eps, steps, loss, key, norm, target, restarts, rho, momentum):
    validate_attack(eps, 1.0, steps)
    if steps < 1:
        raise ValueError(f"apgd steps must be ≥ 1; got {steps}.")
    _check_norm(norm)
    _check_labels(x, y)
    if target is not None:
        _check_labels(x, target, "target")
    _check_key(key, "apgd")
    if loss not in APGD_LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; choose 'ce' or 'dlr'.")
    if int(restarts) != restarts or restarts < 1:
        raise ValueError(f"apgd restarts must be a positive integer; got {restarts}.")
    if not 0 < rho <= 1:
        raise ValueError(f"apgd rho (the share of loss-raising steps below which the step halves) must be in "
                         f"(0, 1]; got {rho}.")
    if not 0 <= momentum <= 1:
        raise ValueError(f"apgd momentum must be in [0, 1]; got {momentum}.")


def apgd(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float, key: Array, steps: int = 100,
         loss: str = "ce", norm: str = "linf", target: Array | None = None, restarts: int = 1,
         rho: float = 0.75, momentum: float = 0.75, unroll: bool | int = False) -> Array:
    """Auto-PGD (Croce & Hein 2020, Algorithm 1), L∞ or L2, CE or DLR loss, targeted or not.

    From a random point of the ε-sphere (L∞: x + ε·t/‖t‖∞, t ~ U(−1, 1); L2: a Gaussian
    direction at radius ε), clipped to [0, 1], with step η⁽⁰⁾ = 2ε::

        z⁽ᵏ⁺¹⁾ = P( x⁽ᵏ⁾ + η⁽ᵏ⁾ · sign ∇L(x⁽ᵏ⁾) )          (L2: ∇L / ‖∇L‖₂)
        x⁽ᵏ⁺¹⁾ = P( x⁽ᵏ⁾ + α (z⁽ᵏ⁺¹⁾ − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾) ),   α = 0.75 (1 at k = 0)

    with P the projection onto the ε-ball and [0, 1]. At each checkpoint w_j
    (:func:`apgd_checkpoints`) the step of an example halves, and it restarts from its
    highest-loss point, when (1) at most ρ·(w_j − w_{j−1}) of the steps since the last
    checkpoint raised its loss, or (2) its step was not halved at the last checkpoint and its
    best loss has not risen since. Per example the result is the last iterate that is
    misclassified, else the highest-loss iterate; an example misclassified clean is returned
    unchanged. Details (the 1e-12 terms, the loss history of the first interval, where the
    L2 projection clips) follow the reference code, fra31/auto-attack as in torchattacks
    3.5.1 ``APGD``/``APGDT``, except that every example is attacked (static shapes; the
    reference attacks only the ones still classified correctly, so restarts draw other
    random starts but find the same kind of points).

    Args:
      logits_fn: batch of images -> logits [B, K].
      x: clean images in [0, 1], [B, ...].
      y: integer labels [B].
      eps: radius ε (may be traced).
      key: typed PRNG key (``jax.random.key``) for the random starts (restart r draws its start
        from ``jax.random.fold_in(key, r)``).
      steps: iterations N per restart (static), 100 in the paper.
      loss: ``"ce"`` or ``"dlr"`` (:func:`dlr_loss`; with ``target``, :func:`targeted_dlr_loss`,
        i.e. APGD-T; with ``target`` and ``"ce"``, −CE toward the target).
      norm: ``"linf"`` or ``"l2"``.
      target: None, or target labels [B] (the loss pulls toward them; success is still a
        misclassification, as in the reference APGD-T).
      restarts: random restarts; per example the first that misclassifies wins, else the
        highest loss.
      rho: ρ, the share of loss-raising steps below which the step halves (0.75).
      momentum: α (0.75).
      unroll: passed to the ``lax.fori_loop`` over iterations (False: a compiled loop).

    Returns:
      Adversarial images [B, ...] within the ε-ball and [0, 1].
    """
    _check_apgd(x, y, eps=eps, steps=steps, loss=loss, key=key, norm=norm, target=target, restarts=restarts,
                rho=rho, momentum=momentum)
    adv, _ = _apgd(logits_fn, x, y, eps=eps, steps=int(steps), loss=loss, key=key, norm=norm, target=target,
                   restarts=int(restarts), rho=rho, momentum=momentum, unroll=unroll)
    return adv


def apgd_targeted(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float, key: Array, n_targets: int | None = None,
                  steps: int = 100, norm: str = "linf", restarts: int = 1, rho: float = 0.75,
                  batch_size: int | None = None) -> Array:
    """APGD-T (Croce & Hein 2020): :func:`apgd` with the targeted DLR loss toward each of the
    ``n_targets`` classes ranked 2, 3, … by the clean logits, one after the other.

    An example counts as fooled when any target run misclassifies it (as the reference's
    APGDT, whose success is a misclassification, not reaching the target). Examples
    misclassified clean are returned unchanged. For each target the examples not yet fooled
    are gathered and attacked in chunks of ``batch_size``; chunks with nothing left to attack,
    and targets after every example is fooled, are skipped, so the cost follows the number of
    examples still robust.

    Args:
      logits_fn: batch of images -> logits [B, K], K ≥ 4.
      x: clean images in [0, 1], [B, ...].
      y: integer labels [B].
      eps: radius ε (may be traced).
      key: typed PRNG key.
      n_targets: target classes; None: min(9, K − 1) (AutoAttack's 9 for 10 classes).
      steps: iterations per target (static).
      norm: ``"linf"`` or ``"l2"``.
      restarts: restarts per target.
      rho: APGD's ρ.
      batch_size: examples per chunk (static); None: 16 on CPU, 512 elsewhere.

    Returns:
      Adversarial images [B, ...]: per example the first target's misclassified point, else
      the highest-loss point toward the first target.
    """
    _check_apgd(x, y, eps=eps, steps=steps, loss="dlr", key=key, norm=norm, target=None, restarts=restarts,
                rho=rho, momentum=0.75)
    num_classes = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape[-1]
    n_targets = _check_targets(n_targets, num_classes)
    batch_size = _chunk_size(batch_size)
    logits = logits_fn(x)
    ok = jnp.argmax(logits, -1) == y
    if n_targets == 0:
        return x
    adv, _ = _apgd_t(logits_fn, x, y, logits, ok, eps=eps, key=key, n_targets=n_targets, batch_size=batch_size,
                     steps=int(steps), norm=norm, restarts=int(restarts), rho=rho, momentum=0.75, unroll=False)
    return adv


def _check_targets(n_targets, num_classes: int) -> int:
    if n_targets is None:
        n_targets = min(9, num_classes - 1) if num_classes >= 4 else 0
    if int(n_targets) != n_targets or not 0 <= n_targets <= num_classes - 1:
        raise ValueError(f"n_targets must be an integer in [0, {num_classes - 1}] (classes other than the "
                         f"label); got {n_targets}.")
    if n_targets > 0 and num_classes < 4:
        raise ValueError(f"APGD-T's targeted DLR loss needs at least 4 classes; the model has {num_classes}. "
                         "Pass n_targets=0.")
    return int(n_targets)


# ------------------------------------------------------------------------ robust evaluation


def masking_flags(accuracies: dict[str, Array], zero_grad_share: Array, *, tol: float = 0.01
                  ) -> tuple[Array, Array]:
    """The two gradient-masking flags of :class:`RobustResult` from per-attack accuracies.

    Args:
      accuracies: accuracy under each attack alone; the keys that are present of ``"fgsm"`` <
        ``"pgd"`` < ``"apgd-ce"`` (weaker to stronger) are compared.
      zero_grad_share: share of examples whose input gradient is exactly zero.
      tol: tolerance, in accuracy (0.01 = one percentage point).

    Returns:
      ``(zero_gradients, weaker_beats_stronger)``: ``zero_grad_share > tol``; some stronger
      attack's accuracy exceeds a weaker one's by more than ``tol``.
    """
    order = [a for a in ("fgsm", "pgd", "apgd-ce") if a in accuracies]
    inverted = jnp.zeros((), bool)
    for i, weak in enumerate(order):
        for strong in order[i + 1:]:
            inverted = inverted | (accuracies[strong] > accuracies[weak] + tol)
    return jnp.asarray(zero_grad_share) > tol, inverted


class RobustResult(NamedTuple):
    """What :func:`robust_accuracy` found (a pytree: every field gains a leading axis when the
    evaluation is vmapped over ε, as in :func:`robustness_curve`).

    Attributes:
      eps: ε.
      clean_accuracy: accuracy on the clean inputs.
      robust_accuracy: share of examples classified correctly clean and under every attack.
      attack_accuracy: ``{attack: accuracy under that attack alone}`` for ``fgsm`` (L∞ only),
        ``pgd`` and ``apgd-ce``, each run on every example.
      cumulative_accuracy: ``{attack: robust accuracy after the attacks up to this one}`` in
        the order ``fgsm``, ``pgd``, ``apgd-ce``, ``apgd-t`` (AutoAttack's report; APGD-T runs
        only on the examples that survive the others, so its accuracy alone is not defined).
      robust: [N] bool, the per-example robust mask.
      zero_grad_share: share of examples whose input gradient of the CE loss at the clean
        input is exactly zero.
      zero_gradients: flag, ``zero_grad_share > tol``.
      weaker_beats_stronger: flag, an attack did worse than a weaker one by more than ``tol``
        (FGSM < PGD < APGD-CE in strength).
    """

    eps: Array
    clean_accuracy: Array
    robust_accuracy: Array
    attack_accuracy: dict[str, Array]
    cumulative_accuracy: dict[str, Array]
    robust: Array
    zero_grad_share: Array
    zero_gradients: Array
    weaker_beats_stronger: Array

    def messages(self) -> list[str]:
        """One line per raised flag (per ε when batched), saying what it means; [] when none."""
        out = []
        eps = np.atleast_1d(np.asarray(self.eps))
        zg = np.broadcast_to(np.asarray(self.zero_gradients), eps.shape)
        share = np.broadcast_to(np.asarray(self.zero_grad_share), eps.shape)
        inv = np.broadcast_to(np.asarray(self.weaker_beats_stronger), eps.shape)
        accs = {k: np.broadcast_to(np.asarray(v), eps.shape) for k, v in self.attack_accuracy.items()}
        for i, e in enumerate(eps):
            if zg[i]:
                out.append(f"gradient masking suspected at eps={e:.4g}: {share[i]:.1%} of the examples have an "
                           "exactly zero input gradient, so gradient attacks cannot move them and the robust "
                           "accuracy is only an upper bound. Look for non-differentiable or saturating layers "
                           "(rounding, argmax, stop_gradient, quantisation, an overflowing softmax) and try a "
                           "gradient-free attack.")
            if inv[i]:
                pairs = ", ".join(f"{k} {accs[k][i]:.2%}" for k in ("fgsm", "pgd", "apgd-ce") if k in accs)
                out.append(f"gradient masking suspected at eps={e:.4g}: a stronger attack did worse than a weaker "
                           f"one by more than the tolerance (accuracy under {pairs}); iterative attacks should not "
                           "lose to single steps. The loss surface is likely obfuscated and the robust accuracy "
                           "overestimated.")
        return out


def _robust_core(logits_fn, x, y, eps, key, *, norm, steps, n_targets, restarts, pgd_steps, rho, batch_size,
                 unroll, tol):
    k_ce, k_t = jax.random.split(key)
    logits = logits_fn(x)
    clean_ok = jnp.argmax(logits, -1) == y
    g = _loss_grad(logits_fn, x, y)
    zero_grad = jnp.all(g.reshape(g.shape[0], -1) == 0, axis=1)
    correct = {}
    if norm == "linf":
        correct["fgsm"] = clean_ok & (jnp.argmax(logits_fn(jnp.clip(x + eps * jnp.sign(g), 0.0, 1.0)), -1) == y)
    x_pgd = _pgd_once(logits_fn, x, y, eps=eps, step_size=2.5 * eps / pgd_steps, steps=pgd_steps, key=None,
                      random_start=False, unroll=unroll, norm=norm, target=None)
    correct["pgd"] = clean_ok & (jnp.argmax(logits_fn(x_pgd), -1) == y)
    apgd_kw = dict(steps=steps, norm=norm, restarts=restarts, rho=rho, momentum=0.75, unroll=False)
    x_ce, fooled = _apgd(logits_fn, x, y, eps=eps, loss="ce", key=k_ce, target=None, clean_wrong=~clean_ok,
                         **apgd_kw)
    correct["apgd-ce"] = clean_ok & ~fooled & (jnp.argmax(logits_fn(x_ce), -1) == y)
    cumulative, robust = {}, clean_ok
    for name, c in correct.items():
        robust = robust & c
        cumulative[name] = jnp.mean(robust)
    if n_targets > 0:
        x_t, fooled_t = _apgd_t(logits_fn, x, y, logits, robust, eps=eps, key=k_t, n_targets=n_targets,
                                batch_size=batch_size, **apgd_kw)
        robust = robust & ~fooled_t & (jnp.argmax(logits_fn(x_t), -1) == y)
        cumulative["apgd-t"] = jnp.mean(robust)
    acc = {k: jnp.mean(v) for k, v in correct.items()}
    share = jnp.mean(zero_grad)
    flag_zero, flag_inv = masking_flags(acc, share, tol=tol)
    return RobustResult(jnp.asarray(eps, x.dtype), jnp.mean(clean_ok), jnp.mean(robust), acc, cumulative, robust,
                        share, flag_zero, flag_inv)


_ROBUST_STATIC = ("logits_fn", "norm", "steps", "n_targets", "restarts", "pgd_steps", "rho", "batch_size", "unroll",
                  "tol")


@functools.partial(jax.jit, static_argnames=_ROBUST_STATIC)
def _robust_jit(logits_fn, x, y, eps, key, **kw):
    return _robust_core(logits_fn, x, y, eps, key, **kw)


def _check_robust(logits_fn, x, y, *, key, norm, steps, n_targets, restarts, pgd_steps, rho, batch_size, tol,
                  unroll):
    _check_apgd(x, y, eps=0.0, steps=steps, loss="dlr", key=key, norm=norm, target=None, restarts=restarts,
                rho=rho, momentum=0.75)
    validate_attack(0.0, 1.0, pgd_steps)
    if pgd_steps < 1:
        raise ValueError(f"robust_accuracy pgd_steps must be ≥ 1 (the PGD of the masking check); got {pgd_steps}.")
    num_classes = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape[-1]
    n_targets = _check_targets(n_targets, num_classes)
    batch_size = _chunk_size(batch_size)
    if not 0 <= tol < 1:
        raise ValueError(f"tol (the masking flags' tolerance, in accuracy) must be in [0, 1); got {tol}.")
    return dict(norm=norm, steps=int(steps), n_targets=n_targets, restarts=int(restarts), pgd_steps=int(pgd_steps),
                rho=float(rho), batch_size=int(batch_size), unroll=bool(unroll), tol=float(tol))


def robust_accuracy(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float, key: Array, norm: str = "linf",
                    steps: int = 100, n_targets: int | None = None, restarts: int = 1, pgd_steps: int = 20,
                    rho: float = 0.75, batch_size: int | None = None, tol: float = 0.01,
                    unroll: bool | None = None) -> RobustResult:
    """AutoAttack-style robust accuracy: the worst case over FGSM, PGD, APGD-CE and APGD-T.

    An example is robust when it is classified correctly clean and under every attack, run in
    this order:

    1. FGSM (L∞ only) and PGD-``pgd_steps`` from the clean image with α = 2.5ε/steps — weak
       attacks, run on every example for the gradient-masking check;
    2. APGD-CE (:func:`apgd`, ``steps`` iterations, ``restarts``), on every example;
    3. APGD-T (:func:`apgd_targeted`): the targeted DLR loss toward each of the ``n_targets``
       classes ranked 2, 3, … by the clean logits, ``steps`` iterations each, on the examples
       still robust (gathered into chunks of ``batch_size`` for each target).

    This is AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square) without FAB-T and
    without Square, the gradient-free attack that catches masking no gradient attack can,
    plus FGSM and PGD. Two flags point at gradient masking instead: ``zero_gradients`` (more
    than ``tol`` of the examples have an exactly zero CE input gradient at the clean point)
    and ``weaker_beats_stronger`` (the accuracy under APGD-CE above that under PGD or FGSM,
    or PGD's above FGSM's, by more than ``tol``); ``result.messages()`` explains the raised
    ones. A robustness curve that rises with ε is the third sign (:func:`robustness_curve`).

    Jitted inside with ``logits_fn`` static (the same function object reuses the compiled
    program; a new closure recompiles); ``eps`` and ``key`` are traced. Cost per example:
    ``pgd_steps + 2 + steps · restarts`` gradients, plus ``steps · restarts`` per target for
    the examples APGD-T attacks.

    Args:
      logits_fn: batch of images -> logits [B, K].
      x: clean images in [0, 1], [N, ...].
      y: integer labels [N].
      eps: radius ε.
      key: typed PRNG key (``jax.random.key``).
      norm: ``"linf"`` or ``"l2"``.
      steps: APGD iterations per run (100 as AutoAttack).
      n_targets: APGD-T target classes; None: min(9, K − 1); 0 skips APGD-T.
      restarts: APGD restarts (1 as AutoAttack's standard version).
      pgd_steps: iterations of the masking-check PGD.
      rho: APGD's ρ.
      batch_size: APGD-T chunk size; None: 16 on CPU, 512 elsewhere.
      tol: the flags' tolerance, in accuracy (0.01 = one percentage point).
      unroll: the masking-check PGD's loop (as :func:`pgd`); APGD is always a compiled loop.

    Returns:
      A :class:`RobustResult`.

    Reference: Croce & Hein, ICML 2020 (AutoAttack); Athalye, Carlini & Wagner, ICML 2018 and
    Carlini et al. 2019, "On evaluating adversarial robustness" (the masking checks).
    """
    if unroll is None:
        unroll = backend.resolve_attack_unroll("auto")
    kw = _check_robust(logits_fn, x, y, key=key, norm=norm, steps=steps, n_targets=n_targets, restarts=restarts,
                       pgd_steps=pgd_steps, rho=rho, batch_size=batch_size, tol=tol, unroll=unroll)
    validate_attack(eps, 1.0, 1)
    return _robust_jit(logits_fn, x, y, jnp.asarray(eps, x.dtype), key, **kw)


class RobustnessCurve(NamedTuple):
    """Accuracy along ε (:func:`robustness_curve`).

    Attributes:
      eps: [E] the radii, ascending.
      accuracy: [E] accuracy under the attack (robust accuracy for ``attack="robust"``).
      correct: [E, N] bool, per example.
      clean_accuracy: accuracy on the clean inputs.
      non_monotone: flag, the accuracy rises with ε somewhere by more than ``tol`` (a larger
        ball contains the smaller one, so a working attack can only lower it): a sign of
        gradient masking or of too weak an attack.
      detail: the :class:`RobustResult` with a leading ε axis for ``attack="robust"``, else None.
    """

    eps: Array
    accuracy: Array
    correct: Array
    clean_accuracy: Array
    non_monotone: Array
    detail: RobustResult | None = None

    def messages(self) -> list[str]:
        """Explanations of the raised flags, this curve's and (``attack="robust"``) each ε's."""
        out = []
        if bool(self.non_monotone):
            acc = ", ".join(f"{e:.4g}: {a:.2%}" for e, a in zip(np.asarray(self.eps), np.asarray(self.accuracy)))
            out.append(f"gradient masking suspected: accuracy rises with eps by more than the tolerance "
                       f"({acc}); a larger ball contains the smaller one, so a working attack can only lower it.")
        if self.detail is not None:
            out.extend(self.detail.messages())
        return out


_CURVE_STATIC = ("logits_fn", "attack", "norm", "steps", "step_size", "restarts", "random_start", "unroll",
                 "robust_kw", "tol")


@functools.partial(jax.jit, static_argnames=_CURVE_STATIC)
def _curve_jit(logits_fn, x, y, eps_values, key, *, attack, norm, steps, step_size, restarts, random_start, unroll,
               robust_kw, tol):
    clean_ok = jnp.argmax(logits_fn(x), -1) == y

    def at(eps):
        if attack == "robust":
            r = _robust_core(logits_fn, x, y, eps, key, **dict(robust_kw))
            return r.robust, r
        if attack == "fgsm":
            x_adv = fgsm(logits_fn, x, y, eps=eps)
        elif attack == "pgd":
            alpha = 2.5 * eps / steps if step_size is None else step_size
            x_adv = pgd(logits_fn, x, y, eps=eps, step_size=alpha, steps=steps, key=key, random_start=random_start,
                        unroll=unroll, norm=norm, restarts=restarts)
        else:
            x_adv = apgd(logits_fn, x, y, eps=eps, key=key, steps=steps, norm=norm, restarts=restarts, unroll=unroll)
        return clean_ok & (jnp.argmax(logits_fn(x_adv), -1) == y), None

    correct, detail = jax.vmap(at)(eps_values)
    acc = jnp.mean(correct, axis=1)
    non_monotone = jnp.any(acc[1:] > acc[:-1] + tol)
    return RobustnessCurve(eps_values, acc, correct, jnp.mean(clean_ok), non_monotone, detail)


def robustness_curve(logits_fn: LogitsFn, x: Array, y: Array, eps_values, *, attack: str = "pgd",
                     key: Array | None = None, steps: int | None = None, step_size: float | None = None,
                     norm: str = "linf", restarts: int = 1, random_start: bool = False, tol: float = 0.01,
                     unroll: bool | None = None, **robust_kw) -> RobustnessCurve:
    """Accuracy under an attack at every ε of ``eps_values``: ``jax.vmap`` over ε, one compiled call.

    Args:
      logits_fn: batch of images -> logits [B, K] (static: the same function object reuses
        the compiled program).
      x: clean images in [0, 1], [N, ...].
      y: integer labels [N].
      eps_values: [E] radii in ascending order (traced: another vector of the same length
        reuses the compiled program).
      attack: ``"fgsm"``, ``"pgd"`` (:func:`pgd`), ``"apgd"`` (:func:`apgd`, CE loss) or
        ``"robust"`` (:func:`robust_accuracy`; ``robust_kw`` are its options).
      key: typed PRNG key; needed for ``"apgd"``, ``"robust"`` and ``random_start``.
      steps: iterations (PGD: 20, APGD: 100 by default; with ``"robust"`` APGD's).
      step_size: PGD's α; None: 2.5·ε/steps at each ε (Madry et al.).
      norm: ``"linf"`` or ``"l2"``.
      restarts: PGD/APGD restarts.
      random_start: PGD from a random start.
      tol: tolerance of the ``non_monotone`` flag (and of the ``"robust"`` flags).
      unroll: PGD's loop, as in :func:`pgd`.
      **robust_kw: ``n_targets``, ``pgd_steps``, ``rho``, ``batch_size`` for ``attack="robust"``.

    Returns:
      A :class:`RobustnessCurve` ([E] accuracies; ``detail`` for ``"robust"``).
    """
    if attack not in CURVE_ATTACKS:
        raise ValueError(f"unknown curve attack {attack!r}; choose one of {CURVE_ATTACKS}.")
    _check_norm(norm)
    _check_labels(x, y)
    eps_values = jnp.asarray(eps_values, x.dtype)
    if eps_values.ndim != 1 or eps_values.shape[0] < 1:
        raise ValueError(f"eps_values must be a non-empty 1-D vector of radii; got shape {tuple(eps_values.shape)}.")
    e = _concrete(eps_values)
    if e is not None and (np.any(e < 0) or np.any(np.diff(e) < 0)):
        raise ValueError(f"eps_values must be ≥ 0 and in ascending order; got {e.tolist()}.")
    if attack == "fgsm" and norm != "linf":
        raise ValueError("FGSM is an L∞ attack; use attack='pgd' with norm='l2'.")
    if unroll is None:
        unroll = backend.resolve_attack_unroll("auto")
    if robust_kw and attack != "robust":
        raise ValueError(f"{sorted(robust_kw)} are options of attack='robust' only.")
    rkw = ()
    if attack == "robust":
        rkw = _check_robust(logits_fn, x, y, key=key, norm=norm, steps=100 if steps is None else steps,
                            n_targets=robust_kw.pop("n_targets", None), restarts=restarts,
                            pgd_steps=robust_kw.pop("pgd_steps", 20), rho=robust_kw.pop("rho", 0.75),
                            batch_size=robust_kw.pop("batch_size", None), tol=tol, unroll=unroll)
        if robust_kw:
            raise ValueError(f"unknown robust_accuracy options {sorted(robust_kw)}; use n_targets, pgd_steps, rho, "
                             "batch_size.")
        rkw = tuple(sorted(rkw.items()))
        steps = None
    elif attack == "apgd":
        steps = 100 if steps is None else steps
        _check_apgd(x, y, eps=0.0, steps=steps, loss="ce", key=key, norm=norm, target=None, restarts=restarts,
                    rho=0.75, momentum=0.75)
    elif attack == "pgd":
        steps = 20 if steps is None else steps
        validate_attack(0.0, 1.0 if step_size is None else step_size, steps)
        if steps < 1:
            raise ValueError("a PGD curve needs steps ≥ 1.")
        if random_start or restarts > 1:
            _check_key(key, "robustness_curve(random_start=True)")
        if restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start=True.")
    if key is None:
        key = jax.random.key(0)  # unused by deterministic attacks
    return _curve_jit(logits_fn, x, y, eps_values, key, attack=attack, norm=norm,
                      steps=None if steps is None else int(steps), step_size=step_size, restarts=int(restarts),
                      random_start=bool(random_start), unroll=bool(unroll), robust_kw=rkw, tol=float(tol))
