"""Adversarial attacks and robust evaluation: FGSM, PGD (L∞ and L2, targeted or not), APGD
(CE, DLR and targeted DLR), and an AutoAttack-style robust accuracy with gradient-masking checks.

Pure functions of a logits function, inputs and labels. ``logits_fn`` maps a batch
[B, H, W, C] (any [B, ...]) in [0, 1] to logits [B, K]; close over the parameters (and the
BatchNorm mode) you want to attack, e.g. ``lambda x: apply_model(module, params, stats, x)[0]``.
Every attack jits and vmaps; ``eps`` and ``step_size`` may be traced (``jax.vmap`` over ε
gives a whole robustness curve in one compiled call); iteration counts are static. Random
starts take an explicit typed PRNG key (``jax.random.key``). Inputs live in a box, [0, 1] by
default; an attack on inputs in another range takes it as ``clip=(low, high)`` (ART's
``clip_values``), and ε is in the same units.

Every public function checks its arguments once, eagerly (:mod:`~jaxmi.attacks.checks`:
options, shapes, dtypes; and, on concrete values, finite pixels inside the box, labels in
[0, K) with K from ``jax.eval_shape`` of ``logits_fn``, ε no wider than the box), then runs
a compiled core: compiled once per ``logits_fn`` object and static settings, so define the
logits function once (a new lambda per call compiles again). Under an outer ``jax.jit`` or
``jax.vmap`` the core runs inline and the value checks are skipped.

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

Modules: :mod:`~jaxmi.attacks.pgd` (FGSM, PGD and the losses, gradients and projections every
attack shares), :mod:`~jaxmi.attacks.apgd` (APGD, APGD-T), :mod:`~jaxmi.attacks.robust`
(robust accuracy, curves, masking flags) and :mod:`~jaxmi.attacks.checks` (the argument
checks, run once at each public entry point).
"""

from jaxmi.attacks.apgd import apgd, apgd_checkpoints, apgd_targeted, dlr_loss, targeted_dlr_loss
from jaxmi.attacks.checks import APGD_LOSSES, CURVE_ATTACKS, DEFAULT_CLIP, NORMS, validate_attack
from jaxmi.attacks.pgd import PGDConfig, fgsm, pgd, pgd_core
from jaxmi.attacks.robust import RobustnessCurve, RobustResult, masking_flags, robust_accuracy, robustness_curve

__all__ = ["PGDConfig", "fgsm", "pgd", "pgd_core", "apgd", "apgd_targeted", "apgd_checkpoints", "dlr_loss", "targeted_dlr_loss",
           "validate_attack", "robust_accuracy", "RobustResult", "robustness_curve", "RobustnessCurve",
           "masking_flags", "NORMS", "APGD_LOSSES", "CURVE_ATTACKS", "DEFAULT_CLIP"]
