"""Argument checks of the attacks, run once at each public entry point.

Each public attack calls one ``check_*`` function here and then an unchecked core; the cores
and the functions they call check nothing. Values that are concrete now are checked; traced
ones (an attack under ``jax.jit`` or ``jax.vmap`` over ε) pass unchecked (:func:`concrete`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import backend

__all__ = ["NORMS", "APGD_LOSSES", "CURVE_ATTACKS", "concrete", "validate_attack", "check_eps", "check_steps",
           "check_norm", "check_labels", "check_key", "check_dlr_classes", "num_classes", "check_pgd",
           "check_apgd", "check_apgd_targeted", "check_robust", "check_curve"]

NORMS = ("linf", "l2")
APGD_LOSSES = ("ce", "dlr")
CURVE_ATTACKS = ("fgsm", "pgd", "apgd", "robust")


def concrete(value) -> np.ndarray | None:
    """``value`` as a NumPy array when it is known now; None for a traced value (inside jit/vmap)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_eps(eps) -> None:
    e = concrete(eps)
    if e is not None and not np.all(e >= 0):
        raise ValueError(f"attack eps must be ≥ 0 (an L∞ radius in [0, 1] pixel units); got {eps}.")


def _check_step_size(step_size) -> None:
    s = concrete(step_size)
    if s is not None and not np.all(s > 0):
        raise ValueError(f"attack step size must be > 0; got {step_size}.")


def check_steps(steps) -> None:
    try:
        bad_steps = int(steps) != steps or steps < 0
    except (TypeError, jax.errors.ConcretizationTypeError):
        bad_steps = True
    if bad_steps:
        raise ValueError(f"attack steps must be a non-negative integer (static, not traced); got {steps}.")


def validate_attack(eps, step_size, steps: int) -> None:
    """Raises ValueError for an impossible attack configuration.

    ``eps`` and ``step_size`` are checked when they are concrete; traced values (an attack
    under ``jax.jit`` or ``jax.vmap`` over ε) pass unchecked. ``steps`` is always static.
    """
    check_eps(eps)
    _check_step_size(step_size)
    check_steps(steps)


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown attack norm {norm!r}; choose 'linf' or 'l2'.")


def check_labels(x, y, name: str = "y") -> None:
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name} must hold one integer label per example, shape ({x.shape[0]},); got shape "
                         f"{tuple(y.shape)}.")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"{name} must be integer class labels; got dtype {y.dtype}.")


def check_key(key, who: str) -> None:
    if key is None:
        raise ValueError(f"{who} needs a PRNG key: pass key=jax.random.key(seed).")
    if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        raise ValueError(f"{who} takes a typed PRNG key: pass key=jax.random.key(seed), not "
                         "jax.random.PRNGKey(seed) or an integer.")


def check_dlr_classes(logits_shape: tuple[int, ...], *, targeted: bool) -> None:
    """The DLR loss needs 3 classes, the targeted DLR loss 4 (they divide by z_π1 − z_π3, z_π4)."""
    if not targeted and logits_shape[-1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes; got logits of shape {tuple(logits_shape)}. "
                         "Use loss='ce'.")
    if targeted and logits_shape[-1] < 4:
        raise ValueError(f"the targeted DLR loss needs at least 4 classes; got logits of shape "
                         f"{tuple(logits_shape)}. Use loss='ce'.")


def _logits_shape(logits_fn, x) -> tuple[int, ...]:
    return tuple(jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape)


def num_classes(logits_fn, x) -> int:
    """K of ``logits_fn(x)`` [B, K], from an abstract evaluation (no FLOPs)."""
    return _logits_shape(logits_fn, x)[-1]


def _check_restarts(restarts, who: str) -> None:
    if int(restarts) != restarts or restarts < 1:
        raise ValueError(f"{who} restarts must be a positive integer; got {restarts}.")


def _check_targets(n_targets, classes: int) -> int:
    if n_targets is None:
        n_targets = min(9, classes - 1) if classes >= 4 else 0
    if int(n_targets) != n_targets or not 0 <= n_targets <= classes - 1:
        raise ValueError(f"n_targets must be an integer in [0, {classes - 1}] (classes other than the "
                         f"label); got {n_targets}.")
    if n_targets > 0 and classes < 4:
        raise ValueError(f"APGD-T's targeted DLR loss needs at least 4 classes; the model has {classes}. "
                         "Pass n_targets=0.")
    return int(n_targets)


def _chunk_size(batch_size: int | None) -> int:
    """APGD-T's chunk: small on CPU (an APGD step on LeNet cost about the same per example in
    batches of 16 and of 512 there, and small chunks leave less unfooled padding), large
    elsewhere (chunks run one after another)."""
    if batch_size is None:
        return 16 if backend.is_cpu() else 512
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size}.")
    return int(batch_size)


def check_pgd(x, *, eps, step_size, steps, key, random_start, norm, target, restarts) -> None:
    """The checks of :func:`jaxmi.attacks.pgd`."""
    validate_attack(eps, step_size, steps)
    check_norm(norm)
    if target is not None:
        check_labels(x, target, "target")
    _check_restarts(restarts, "pgd")
    if restarts > 1 and not random_start:
        raise ValueError("pgd(restarts > 1) repeats the same attack unless it starts at random: pass "
                         "random_start=True and a key.")
    if random_start and key is None:
        raise ValueError("pgd(random_start=True) needs a PRNG key: pass key=jax.random.key(seed).")


def _check_apgd_options(x, y, *, steps, key, norm, target, restarts, rho, loss="dlr", momentum=0.75,
                        norm_and_labels=True) -> None:
    """Everything of :func:`check_apgd` but ε and the class count, in its order; ``norm_and_labels=False``
    for a caller that checked those already."""
    check_steps(steps)
    if steps < 1:
        raise ValueError(f"apgd steps must be ≥ 1; got {steps}.")
    if norm_and_labels:
        check_norm(norm)
        check_labels(x, y)
    if target is not None:
        check_labels(x, target, "target")
    check_key(key, "apgd")
    if loss not in APGD_LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; choose 'ce' or 'dlr'.")
    _check_restarts(restarts, "apgd")
    if not 0 < rho <= 1:
        raise ValueError(f"apgd rho (the share of loss-raising steps below which the step halves) must be in "
                         f"(0, 1]; got {rho}.")
    if not 0 <= momentum <= 1:
        raise ValueError(f"apgd momentum must be in [0, 1]; got {momentum}.")


def check_apgd(logits_fn, x, y, *, eps, steps, loss, key, norm, target, restarts, rho, momentum) -> None:
    """The checks of :func:`jaxmi.attacks.apgd`; with the DLR loss, the model's class count too."""
    check_eps(eps)
    _check_apgd_options(x, y, steps=steps, key=key, norm=norm, target=target, restarts=restarts, rho=rho,
                        loss=loss, momentum=momentum)
    if loss == "dlr":
        check_dlr_classes(_logits_shape(logits_fn, x), targeted=target is not None)


def check_apgd_targeted(logits_fn, x, y, *, eps, steps, key, norm, restarts, rho, n_targets, batch_size
                        ) -> tuple[int, int]:
    """The checks of :func:`jaxmi.attacks.apgd_targeted`; returns ``(n_targets, batch_size)`` resolved."""
    check_eps(eps)
    _check_apgd_options(x, y, steps=steps, key=key, norm=norm, target=None, restarts=restarts, rho=rho)
    return _check_targets(n_targets, num_classes(logits_fn, x)), _chunk_size(batch_size)


def _robust_options(logits_fn, x, y, *, key, norm, steps, n_targets, restarts, pgd_steps, rho, batch_size, tol,
                    unroll, norm_and_labels) -> dict:
    _check_apgd_options(x, y, steps=steps, key=key, norm=norm, target=None, restarts=restarts, rho=rho,
                        norm_and_labels=norm_and_labels)
    check_steps(pgd_steps)
    if pgd_steps < 1:
        raise ValueError(f"robust_accuracy pgd_steps must be ≥ 1 (the PGD of the masking check); got {pgd_steps}.")
    n_targets = _check_targets(n_targets, num_classes(logits_fn, x))
    batch_size = _chunk_size(batch_size)
    if not 0 <= tol < 1:
        raise ValueError(f"tol (the masking flags' tolerance, in accuracy) must be in [0, 1); got {tol}.")
    return dict(norm=norm, steps=int(steps), n_targets=n_targets, restarts=int(restarts), pgd_steps=int(pgd_steps),
                rho=float(rho), batch_size=int(batch_size), unroll=bool(unroll), tol=float(tol))


def check_robust(logits_fn, x, y, *, eps, key, norm, steps, n_targets, restarts, pgd_steps, rho, batch_size, tol,
                 unroll) -> dict:
    """The checks of :func:`jaxmi.attacks.robust_accuracy`; returns its static options resolved."""
    kw = _robust_options(logits_fn, x, y, key=key, norm=norm, steps=steps, n_targets=n_targets, restarts=restarts,
                         pgd_steps=pgd_steps, rho=rho, batch_size=batch_size, tol=tol, unroll=unroll,
                         norm_and_labels=True)
    check_eps(eps)
    return kw


def check_curve(logits_fn, x, y, eps_values, *, attack, key, steps, step_size, norm, restarts, random_start, tol,
                unroll, robust_kw: dict) -> tuple[np.ndarray, int | None, tuple]:
    """The checks of :func:`jaxmi.attacks.robustness_curve` (``eps_values`` as an array of x's
    dtype). Returns ``(eps_values, steps, robust options)``: the iterations of PGD or APGD (None
    for FGSM and ``"robust"``) and, for ``"robust"``, its static options as sorted pairs."""
    if attack not in CURVE_ATTACKS:
        raise ValueError(f"unknown curve attack {attack!r}; choose one of {CURVE_ATTACKS}.")
    check_norm(norm)
    check_labels(x, y)
    eps_values = jnp.asarray(eps_values, x.dtype)
    if eps_values.ndim != 1 or eps_values.shape[0] < 1:
        raise ValueError(f"eps_values must be a non-empty 1-D vector of radii; got shape {tuple(eps_values.shape)}.")
    e = concrete(eps_values)
    if e is not None and (np.any(e < 0) or np.any(np.diff(e) < 0)):
        raise ValueError(f"eps_values must be ≥ 0 and in ascending order; got {e.tolist()}.")
    if attack == "fgsm" and norm != "linf":
        raise ValueError("FGSM is an L∞ attack; use attack='pgd' with norm='l2'.")
    if robust_kw and attack != "robust":
        raise ValueError(f"{sorted(robust_kw)} are options of attack='robust' only.")
    robust_kw = dict(robust_kw)
    rkw = ()
    if attack == "robust":
        rkw = _robust_options(logits_fn, x, y, key=key, norm=norm, steps=100 if steps is None else steps,
                              n_targets=robust_kw.pop("n_targets", None), restarts=restarts,
                              pgd_steps=robust_kw.pop("pgd_steps", 20), rho=robust_kw.pop("rho", 0.75),
                              batch_size=robust_kw.pop("batch_size", None), tol=tol, unroll=unroll,
                              norm_and_labels=False)
        if robust_kw:
            raise ValueError(f"unknown robust_accuracy options {sorted(robust_kw)}; use n_targets, pgd_steps, rho, "
                             "batch_size.")
        rkw = tuple(sorted(rkw.items()))
        steps = None
    elif attack == "apgd":
        steps = 100 if steps is None else steps
        _check_apgd_options(x, y, steps=steps, key=key, norm=norm, target=None, restarts=restarts, rho=0.75,
                            loss="ce", norm_and_labels=False)
    elif attack == "pgd":
        steps = 20 if steps is None else steps
        if step_size is not None:
            _check_step_size(step_size)
        check_steps(steps)
        if steps < 1:
            raise ValueError("a PGD curve needs steps ≥ 1.")
        if random_start or restarts > 1:
            check_key(key, "robustness_curve(random_start=True)")
        if restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start=True.")
        _check_restarts(restarts, "pgd")
    return eps_values, None if steps is None else int(steps), rkw
