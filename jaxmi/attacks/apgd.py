"""Auto-PGD of Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020: CE, DLR and targeted DLR losses, the step-size
checkpoints, :func:`apgd` and :func:`apgd_targeted` (APGD-T over the top-k classes).

Follows the reference implementation (``fra31/auto-attack``, as in torchattacks 3.5.1
``APGD``/``APGDT``) step for step. The public functions check their arguments once
(:mod:`jaxmi.attacks.checks`) and call the unchecked cores :func:`apgd_core` and
:func:`apgd_targets_core`, which the robust evaluation calls directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi.attacks import checks
from jaxmi.attacks.pgd import (DEFAULT_CLIP, Array, LogitsFn, ce_loss, example_norm, per_example, project_l2,
                               project_linf)

__all__ = ["apgd", "apgd_targeted", "apgd_checkpoints", "dlr_loss", "targeted_dlr_loss", "apgd_core",
           "apgd_targets_core"]


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
    checks.check_dlr_classes(logits.shape, targeted=False)
    return _dlr(logits, y)


def _dlr(logits: Array, y: Array) -> Array:
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
    checks.check_dlr_classes(logits.shape, targeted=True)
    return _targeted_dlr(logits, y, target)


def _targeted_dlr(logits: Array, y: Array, target: Array) -> Array:
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
    checks.check_steps(steps)
    return tuple(int(i) + 1 for i in np.flatnonzero(_apgd_schedule(int(steps))))


def _apgd_loss_fn(loss: str, y: Array, target: Array | None) -> Callable[[Array], Array]:
    if loss == "ce":
        return (lambda z: ce_loss(z, y)) if target is None else (lambda z: -ce_loss(z, target))
    return (lambda z: _dlr(z, y)) if target is None else (lambda z: _targeted_dlr(z, y, target))


def _apgd_run(logits_fn, x, y, *, eps, steps, loss_fn, key, norm, rho, momentum, unroll, clip):
    """One APGD run from a random start (``attack_single_run`` of the reference).

    Returns ``(x_best, fooled, loss_best, x_best_adv)``: the highest-loss point, whether any
    iterate (the start included) was misclassified, its loss, the last misclassified iterate.
    """
    b = x.shape[0]
    shape1 = (b,) + (1,) * (x.ndim - 1)
    if norm == "linf":
        t = 2.0 * jax.random.uniform(key, x.shape, x.dtype) - 1.0
        t_max = jnp.max(jnp.abs(t).reshape(b, -1), axis=1).reshape(shape1)
        x_adv = jnp.clip(x + eps * t / t_max, *clip)
    else:
        t = jax.random.normal(key, x.shape, x.dtype)
        x_adv = jnp.clip(x + eps * t / (example_norm(t) + 1e-12), *clip)

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

    def body(i, s):
        (x_adv, x_old, grad, step, x_best, grad_best, loss_best, x_best_adv, correct, loss_steps,
         loss_best_last, reduced_last) = s
        grad2 = x_adv - x_old
        x_old = x_adv
        a = jnp.where(i > 0, momentum, 1.0).astype(x.dtype)
        eta = step.reshape(shape1)
        if norm == "linf":
            z = project_linf(x, x_adv + eta * jnp.sign(grad), eps, clip)
            x_new = project_linf(x, x_adv + (z - x_adv) * a + grad2 * (1 - a), eps, clip)
        else:
            z = project_l2(x, x_adv + eta * grad / (example_norm(grad) + 1e-12), eps, rounding="apgd", clip=clip)
            x_new = project_l2(x, x_adv + (z - x_adv) * a + grad2 * (1 - a), eps, rounding="apgd-momentum",
                               clip=clip)
        loss_i, pred_ok, grad = value_grad(x_new)
        correct = correct & pred_ok
        x_best_adv = jnp.where(per_example(~pred_ok, x), x_new, x_best_adv)
        loss_steps = loss_steps.at[i].set(loss_i)
        better = loss_i > loss_best
        x_best = jnp.where(per_example(better, x), x_new, x_best)
        grad_best = jnp.where(per_example(better, x), grad, grad_best)
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
        x_adv = jnp.where(per_example(halve, x), x_best, x_new)
        grad = jnp.where(per_example(halve, x), grad_best, grad)
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


def apgd_core(logits_fn: LogitsFn, x: Array, y: Array, *, eps, steps: int, loss: str, key: Array, norm: str,
              target: Array | None, restarts: int, rho: float, momentum: float, unroll,
              clean_wrong: Array | None = None, clip: tuple[float, float] = DEFAULT_CLIP) -> tuple[Array, Array]:
    """:func:`apgd` without its argument checks, for callers that made them.

    Returns ``(x_adv, fooled [B])``; ``clean_wrong`` [B], when given, replaces the clean
    misclassification mask (an example misclassified clean is its own adversarial example).
    """
    loss_fn = _apgd_loss_fn(loss, y, target)
    run = functools.partial(_apgd_run, logits_fn, x, y, eps=eps, steps=steps, loss_fn=loss_fn, norm=norm,
                            rho=rho, momentum=momentum, unroll=unroll, clip=clip)

    def merge(r, carry):
        adv, best_loss, fooled = carry
        x_best, fooled_r, loss_r, x_best_adv = run(key=jax.random.fold_in(key, r))
        newly = ~fooled & fooled_r
        higher = ~fooled & ~fooled_r & (loss_r > best_loss)
        adv = jnp.where(per_example(newly, x), x_best_adv, jnp.where(per_example(higher, x), x_best, adv))
        return adv, jnp.where(higher, loss_r, best_loss), fooled | fooled_r

    x_best, fooled, loss_best, x_best_adv = run(key=jax.random.fold_in(key, 0))
    adv = jnp.where(per_example(fooled, x), x_best_adv, x_best)
    if restarts > 1:
        adv, loss_best, fooled = jax.lax.fori_loop(1, restarts, merge, (adv, loss_best, fooled))
    if clean_wrong is None:
        clean_wrong = jnp.argmax(logits_fn(x), -1) != y
    # As the reference: an example the model already gets wrong is its own adversarial example.
    adv = jnp.where(per_example(clean_wrong & ~fooled, x), x, adv)
    return adv, fooled | clean_wrong


def apgd_targets_core(logits_fn: LogitsFn, x: Array, y: Array, clean_logits: Array, active: Array, *, eps,
                      key: Array, n_targets: int, batch_size: int, **apgd_kw) -> tuple[Array, Array]:
    """APGD-T over the top ``n_targets`` classes of ``clean_logits``, on the ``active`` examples only.

    For each target the examples still to attack (active, not yet fooled) are gathered to the
    front and attacked in chunks of ``batch_size``; chunks without such examples are skipped
    (``lax.cond``), and so are the remaining targets once none is left. The cost per target
    is the number of examples still to attack, rounded up to whole chunks, as in the reference
    (which attacks only the examples still robust), while every shape stays static. Returns
    ``(x_adv, fooled)``: per example the first target's point that misclassifies, else the
    first target's highest-loss point; inactive examples: ``x`` and False. Unchecked, as
    :func:`apgd_core`, whose ``steps``, ``norm``, ``restarts``, ``rho``, ``momentum``,
    ``unroll`` and ``clip`` are ``apgd_kw``.
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
                    adv_c, fooled_c = apgd_core(logits_fn, x[ix], y[ix], eps=eps, loss="dlr",
                                                key=jax.random.fold_in(jax.random.fold_in(key, i), c),
                                                target=target[ix], clean_wrong=jnp.zeros_like(lv), **apgd_kw)
                    return adv_c, fooled_c & lv

                return jax.lax.cond(jnp.any(lv), attack, lambda _: (x[ix], jnp.zeros_like(lv)), None)

            adv_s, fooled_s = jax.lax.map(chunk, (jnp.arange(chunks), split(idx), split(live)))
            inverse = jnp.argsort(order)
            adv_i = adv_s.reshape((padded,) + x.shape[1:])[:n][inverse]
            fooled_i = fooled_s.reshape(padded)[:n][inverse]
            take = todo & (fooled_i | (i == 0))
            return jnp.where(per_example(take, x), adv_i, adv), fooled | fooled_i

        # Skip the remaining targets once every active example is fooled.
        return jax.lax.cond(jnp.any(active & ~carry[1]), run, lambda carry: carry, carry)

    return jax.lax.fori_loop(0, n_targets, one_target, (x, jnp.zeros((n,), bool)))



_apgd_jit = jax.jit(apgd_core, static_argnames=("logits_fn", "steps", "loss", "norm", "restarts", "rho", "momentum",
                                                "unroll", "clip"))


def apgd_targeted_core(logits_fn, x, y, *, eps, key, n_targets, batch_size, steps, norm, restarts, rho, clip):
    """:func:`apgd_targeted` without the argument checks (what it compiles)."""
    logits = logits_fn(x)
    ok = jnp.argmax(logits, -1) == y
    adv, _ = apgd_targets_core(logits_fn, x, y, logits, ok, eps=eps, key=key, n_targets=n_targets,
                               batch_size=batch_size, steps=steps, norm=norm, restarts=restarts, rho=rho,
                               momentum=0.75, unroll=False, clip=clip)
    return adv


_apgd_targeted_jit = jax.jit(apgd_targeted_core, static_argnames=("logits_fn", "n_targets", "batch_size", "steps",
                                                                  "norm", "restarts", "rho", "clip"))

def apgd(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float, key: Array, steps: int = 100,
         loss: str = "ce", norm: str = "linf", target: Array | None = None, restarts: int = 1,
         rho: float = 0.75, momentum: float = 0.75, unroll: bool | int = False,
         clip: tuple[float, float] = DEFAULT_CLIP) -> Array:
    """Auto-PGD (Croce & Hein 2020, Algorithm 1), L∞ or L2, CE or DLR loss, targeted or not.

    From a random point of the ε-sphere (L∞: x + ε·t/‖t‖∞, t ~ U(−1, 1); L2: a Gaussian
    direction at radius ε), clipped to [0, 1], with step η⁽⁰⁾ = 2ε::

        z⁽ᵏ⁺¹⁾ = P( x⁽ᵏ⁾ + η⁽ᵏ⁾ · sign ∇L(x⁽ᵏ⁾) )          (L2: ∇L / ‖∇L‖₂)
        x⁽ᵏ⁺¹⁾ = P( x⁽ᵏ⁾ + α (z⁽ᵏ⁺¹⁾ − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾) ),   α = 0.75 (1 at k = 0)

    with P the projection onto the ε-ball and the ``clip`` box. At each checkpoint w_j
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

    Checks its arguments once, then runs a compiled core, compiled once per ``logits_fn``
    object, static setting and input shape (``eps``, ``key`` and ``target`` are traced); keep
    one function object, a new lambda per call compiles again. Under an outer
    ``jax.jit``/``jax.vmap`` (traced arguments) the core runs inline and the value checks
    (finite pixels inside ``clip``, labels and targets in [0, K), ε no wider than the box,
    as in :func:`~jaxmi.attacks.pgd`) are skipped.

    Args:
      logits_fn: batch of images -> logits [B, K].
      x: clean float images inside the ``clip`` box, [B, ...].
      y: integer labels [B] in [0, K).
      eps: radius ε (may be traced); at most the box width (L∞) or diameter (L2).
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
      clip: ``(low, high)``, the box of valid inputs ([0, 1] by default).

    Returns:
      Adversarial images [B, ...] within the ε-ball and the box.

    Raises:
      ValueError, TypeError: a bad argument, named in the message with the fix.
    """
    clip, traced = checks.check_apgd(logits_fn, x, y, eps=eps, steps=steps, loss=loss, key=key, norm=norm,
                                     target=target, restarts=restarts, rho=rho, momentum=momentum, clip=clip)
    adv, _ = (apgd_core if traced else _apgd_jit)(logits_fn, x, y, eps=eps, steps=int(steps), loss=loss, key=key,
                                                  norm=norm, target=target, restarts=int(restarts), rho=float(rho),
                                                  momentum=float(momentum), unroll=unroll, clip=clip)
    return adv


def apgd_targeted(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float, key: Array, n_targets: int | None = None,
                  steps: int = 100, norm: str = "linf", restarts: int = 1, rho: float = 0.75,
                  batch_size: int | None = None, clip: tuple[float, float] = DEFAULT_CLIP) -> Array:
    """APGD-T (Croce & Hein 2020): :func:`apgd` with the targeted DLR loss toward each of the
    ``n_targets`` classes ranked 2, 3, … by the clean logits, one after the other.

    An example counts as fooled when any target run misclassifies it (as the reference's
    APGDT, whose success is a misclassification, not reaching the target). Examples
    misclassified clean are returned unchanged. For each target the examples not yet fooled
    are gathered and attacked in chunks of ``batch_size``; chunks with nothing left to attack,
    and targets after every example is fooled, are skipped, so the cost follows the number of
    examples still robust. Checked and compiled as :func:`apgd` (compiled once per
    ``logits_fn`` object and static setting; value checks skipped under an outer transformation).

    Args:
      logits_fn: batch of images -> logits [B, K], K ≥ 4.
      x: clean float images inside the ``clip`` box, [B, ...].
      y: integer labels [B] in [0, K).
      eps: radius ε (may be traced).
      key: typed PRNG key.
      n_targets: target classes; None: min(9, K − 1) (AutoAttack's 9 for 10 classes).
      steps: iterations per target (static).
      norm: ``"linf"`` or ``"l2"``.
      restarts: restarts per target.
      rho: APGD's ρ.
      batch_size: examples per chunk (static); None: 16 on CPU, 512 elsewhere.
      clip: ``(low, high)``, the box of valid inputs ([0, 1] by default).

    Returns:
      Adversarial images [B, ...]: per example the first target's misclassified point, else
      the highest-loss point toward the first target.

    Raises:
      ValueError, TypeError: a bad argument, named in the message with the fix.
    """
    n_targets, batch_size, clip, traced = checks.check_apgd_targeted(
        logits_fn, x, y, eps=eps, steps=steps, key=key, norm=norm, restarts=restarts, rho=rho, n_targets=n_targets,
        batch_size=batch_size, clip=clip)
    if n_targets == 0:
        return x
    return (apgd_targeted_core if traced else _apgd_targeted_jit)(
        logits_fn, x, y, eps=eps, key=key, n_targets=n_targets, batch_size=batch_size, steps=int(steps), norm=norm,
        restarts=int(restarts), rho=float(rho), clip=clip)

