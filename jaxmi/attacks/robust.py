"""Robust evaluation: an AutoAttack-style robust accuracy (FGSM, PGD, APGD-CE and APGD-T, worst
case per example) with gradient-masking flags, and accuracy along a vector of ε in one compiled
call. The public functions check their arguments once (:mod:`jaxmi.attacks.checks`) and run
the attacks' unchecked cores.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import backend
from jaxmi.attacks import checks
from jaxmi.attacks.apgd import apgd_core, apgd_targets_core
from jaxmi.attacks.pgd import DEFAULT_CLIP, Array, LogitsFn, fgsm_step, loss_grad, pgd_core

__all__ = ["robust_accuracy", "RobustResult", "masking_flags", "robustness_curve", "RobustnessCurve"]


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
                 unroll, tol, clip=DEFAULT_CLIP):
    k_ce, k_t = jax.random.split(key)
    logits = logits_fn(x)
    clean_ok = jnp.argmax(logits, -1) == y
    g = loss_grad(logits_fn, x, y)
    zero_grad = jnp.all(g.reshape(g.shape[0], -1) == 0, axis=1)
    correct = {}
    if norm == "linf":
        correct["fgsm"] = clean_ok & (jnp.argmax(logits_fn(fgsm_step(x, g, eps, clip)), -1) == y)
    x_pgd = pgd_core(logits_fn, x, y, eps=eps, step_size=2.5 * eps / pgd_steps, steps=pgd_steps, key=None,
                     random_start=False, unroll=unroll, norm=norm, target=None, restarts=1, clip=clip)
    correct["pgd"] = clean_ok & (jnp.argmax(logits_fn(x_pgd), -1) == y)
    apgd_kw = dict(steps=steps, norm=norm, restarts=restarts, rho=rho, momentum=0.75, unroll=False, clip=clip)
    x_ce, fooled = apgd_core(logits_fn, x, y, eps=eps, loss="ce", key=k_ce, target=None, clean_wrong=~clean_ok,
                             **apgd_kw)
    correct["apgd-ce"] = clean_ok & ~fooled & (jnp.argmax(logits_fn(x_ce), -1) == y)
    cumulative, robust = {}, clean_ok
    for name, c in correct.items():
        robust = robust & c
        cumulative[name] = jnp.mean(robust)
    if n_targets > 0:
        x_t, fooled_t = apgd_targets_core(logits_fn, x, y, logits, robust, eps=eps, key=k_t, n_targets=n_targets,
                                          batch_size=batch_size, **apgd_kw)
        robust = robust & ~fooled_t & (jnp.argmax(logits_fn(x_t), -1) == y)
        cumulative["apgd-t"] = jnp.mean(robust)
    acc = {k: jnp.mean(v) for k, v in correct.items()}
    share = jnp.mean(zero_grad)
    flag_zero, flag_inv = masking_flags(acc, share, tol=tol)
    return RobustResult(jnp.asarray(eps, x.dtype), jnp.mean(clean_ok), jnp.mean(robust), acc, cumulative, robust,
                        share, flag_zero, flag_inv)


_ROBUST_STATIC = ("logits_fn", "norm", "steps", "n_targets", "restarts", "pgd_steps", "rho", "batch_size", "unroll",
                  "tol", "clip")


@functools.partial(jax.jit, static_argnames=_ROBUST_STATIC)
def _robust_jit(logits_fn, x, y, eps, key, **kw):
    return _robust_core(logits_fn, x, y, eps, key, **kw)


def robust_accuracy(logits_fn: LogitsFn, x: Array, y: Array, *, eps: float, key: Array, norm: str = "linf",
                    steps: int = 100, n_targets: int | None = None, restarts: int = 1, pgd_steps: int = 20,
                    rho: float = 0.75, batch_size: int | None = None, tol: float = 0.01,
                    unroll: bool | None = None, clip: tuple[float, float] = DEFAULT_CLIP) -> RobustResult:
    """AutoAttack-style robust accuracy: the worst case over FGSM, PGD, APGD-CE and APGD-T.

    An example is robust when it is classified correctly clean and under every attack, run in
    this order:

    1. FGSM (L∞ only) and PGD-``pgd_steps`` from the clean image with α = 2.5ε/steps — weak
       attacks, run on every example for the gradient-masking check;
    2. APGD-CE (:func:`~jaxmi.attacks.apgd`, ``steps`` iterations, ``restarts``), on every example;
    3. APGD-T (:func:`~jaxmi.attacks.apgd_targeted`): the targeted DLR loss toward each of the ``n_targets``
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
    program; a new closure recompiles); ``eps`` and ``key`` are traced. Arguments are checked
    once, before: options and shapes always; the values (finite pixels inside ``clip``, labels
    in [0, K) with K from ``jax.eval_shape`` of ``logits_fn``, ε no wider than the box) when
    concrete, skipped under an outer ``jax.jit``. Cost per example:
    ``pgd_steps + 2 + steps · restarts`` gradients, plus ``steps · restarts`` per target for
    the examples APGD-T attacks.

    Args:
      logits_fn: batch of images -> logits [B, K].
      x: clean float images inside the ``clip`` box, [N, ...].
      y: integer labels [N] in [0, K).
      eps: radius ε; at most the box width (L∞) or diameter (L2).
      key: typed PRNG key (``jax.random.key``).
      norm: ``"linf"`` or ``"l2"``.
      steps: APGD iterations per run (100 as AutoAttack).
      n_targets: APGD-T target classes; None: min(9, K − 1); 0 skips APGD-T.
      restarts: APGD restarts (1 as AutoAttack's standard version).
      pgd_steps: iterations of the masking-check PGD.
      rho: APGD's ρ.
      batch_size: APGD-T chunk size; None: 16 on CPU, 512 elsewhere.
      tol: the flags' tolerance, in accuracy (0.01 = one percentage point).
      unroll: the masking-check PGD's loop (as :func:`~jaxmi.attacks.pgd`); APGD is always a compiled loop.
      clip: ``(low, high)``, the box of valid inputs ([0, 1] by default).

    Returns:
      A :class:`RobustResult`.

    Raises:
      ValueError, TypeError: a bad argument, named in the message with the fix.

    Reference: Croce & Hein, ICML 2020 (AutoAttack); Athalye, Carlini & Wagner, ICML 2018 and
    Carlini et al. 2019, "On evaluating adversarial robustness" (the masking checks).
    """
    if unroll is None:
        unroll = backend.resolve_attack_unroll("auto")
    kw = checks.check_robust(logits_fn, x, y, eps=eps, key=key, norm=norm, steps=steps, n_targets=n_targets,
                             restarts=restarts, pgd_steps=pgd_steps, rho=rho, batch_size=batch_size, tol=tol,
                             unroll=unroll, clip=clip)
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
                 "robust_kw", "tol", "clip")


@functools.partial(jax.jit, static_argnames=_CURVE_STATIC)
def _curve_jit(logits_fn, x, y, eps_values, key, *, attack, norm, steps, step_size, restarts, random_start, unroll,
               robust_kw, tol, clip):
    clean_ok = jnp.argmax(logits_fn(x), -1) == y

    def at(eps):
        if attack == "robust":
            r = _robust_core(logits_fn, x, y, eps, key, **dict(robust_kw))
            return r.robust, r
        if attack == "fgsm":
            x_adv = fgsm_step(x, loss_grad(logits_fn, x, y), eps, clip)
        elif attack == "pgd":
            alpha = 2.5 * eps / steps if step_size is None else step_size
            x_adv = pgd_core(logits_fn, x, y, eps=eps, step_size=alpha, steps=steps, key=key,
                             random_start=random_start, unroll=unroll, norm=norm, target=None, restarts=restarts,
                             clip=clip)
        else:
            x_adv, _ = apgd_core(logits_fn, x, y, eps=eps, steps=steps, loss="ce", key=key, norm=norm, target=None,
                                 restarts=restarts, rho=0.75, momentum=0.75, unroll=unroll, clip=clip)
        return clean_ok & (jnp.argmax(logits_fn(x_adv), -1) == y), None

    correct, detail = jax.vmap(at)(eps_values)
    acc = jnp.mean(correct, axis=1)
    non_monotone = jnp.any(acc[1:] > acc[:-1] + tol)
    return RobustnessCurve(eps_values, acc, correct, jnp.mean(clean_ok), non_monotone, detail)


def robustness_curve(logits_fn: LogitsFn, x: Array, y: Array, eps_values, *, attack: str = "pgd",
                     key: Array | None = None, steps: int | None = None, step_size: float | None = None,
                     norm: str = "linf", restarts: int = 1, random_start: bool = False, tol: float = 0.01,
                     unroll: bool | None = None, clip: tuple[float, float] = DEFAULT_CLIP,
                     **robust_kw) -> RobustnessCurve:
    """Accuracy under an attack at every ε of ``eps_values``: ``jax.vmap`` over ε, one compiled call.

    Args:
      logits_fn: batch of images -> logits [B, K] (static: the same function object reuses
        the compiled program).
      x: clean float images inside the ``clip`` box, [N, ...] (checked, with the labels and
        ``eps_values``, as in :func:`robust_accuracy`; skipped under an outer ``jax.jit``).
      y: integer labels [N] in [0, K).
      eps_values: [E] radii in ascending order, the largest at most the box width (L∞) or
        diameter (L2) (traced: another vector of the same length reuses the compiled program).
      attack: ``"fgsm"``, ``"pgd"`` (:func:`~jaxmi.attacks.pgd`), ``"apgd"`` (:func:`~jaxmi.attacks.apgd`, CE loss) or
        ``"robust"`` (:func:`robust_accuracy`; ``robust_kw`` are its options).
      key: typed PRNG key; needed for ``"apgd"``, ``"robust"`` and ``random_start``.
      steps: iterations (PGD: 20, APGD: 100 by default; with ``"robust"`` APGD's).
      step_size: PGD's α; None: 2.5·ε/steps at each ε (Madry et al.).
      norm: ``"linf"`` or ``"l2"``.
      restarts: PGD/APGD restarts.
      random_start: PGD from a random start.
      tol: tolerance of the ``non_monotone`` flag (and of the ``"robust"`` flags).
      unroll: PGD's loop, as in :func:`~jaxmi.attacks.pgd`.
      clip: ``(low, high)``, the box of valid inputs ([0, 1] by default).
      **robust_kw: ``n_targets``, ``pgd_steps``, ``rho``, ``batch_size`` for ``attack="robust"``.

    Returns:
      A :class:`RobustnessCurve` ([E] accuracies; ``detail`` for ``"robust"``).
    """
    if unroll is None:
        unroll = backend.resolve_attack_unroll("auto")
    eps_values, steps, rkw, clip = checks.check_curve(logits_fn, x, y, eps_values, attack=attack, key=key,
                                                      steps=steps, step_size=step_size, norm=norm, restarts=restarts,
                                                      random_start=random_start, tol=tol, unroll=unroll,
                                                      robust_kw=robust_kw, clip=clip)
    if key is None:
        key = jax.random.key(0)  # unused by deterministic attacks
    return _curve_jit(logits_fn, x, y, eps_values, key, attack=attack, norm=norm,
                      steps=steps, step_size=step_size, restarts=int(restarts),
                      random_start=bool(random_start), unroll=bool(unroll), robust_kw=rkw, tol=float(tol),
                      clip=clip)
