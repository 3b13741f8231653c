"""Argument checks of the attacks, run once at each public entry point.

Each public attack calls one ``check_*`` function here and then an unchecked core; the cores
and the functions they call check nothing. Shapes, dtypes and options are always checked.
Values are checked when they are concrete (the call is eager): one fused reduction over the
images and labels (:func:`check_values`: finite pixels inside the clip box, labels and
targets in [0, K) with K from ``jax.eval_shape`` of the logits function) and one host read per
call, plus ε against the box. Traced values (an attack under an outer ``jax.jit``, or
``jax.vmap`` over ε) pass unchecked (:func:`concrete`, :func:`is_traced`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import backend

__all__ = ["NORMS", "APGD_LOSSES", "CURVE_ATTACKS", "DEFAULT_CLIP", "concrete", "is_traced", "validate_attack",
           "check_eps", "check_steps", "check_norm", "check_labels", "check_key", "check_dlr_classes", "num_classes",
           "check_clip", "check_images", "check_eps_box", "check_values", "check_inputs", "check_fgsm", "check_pgd",
           "check_apgd", "check_apgd_targeted", "check_robust", "check_curve"]

NORMS = ("linf", "l2")
APGD_LOSSES = ("ce", "dlr")
CURVE_ATTACKS = ("fgsm", "pgd", "apgd", "robust")
#: The box of valid inputs every attack clips to unless given another (``clip=(low, high)``).
DEFAULT_CLIP = (0.0, 1.0)


def concrete(value) -> np.ndarray | None:
    """``value`` as a NumPy array when it is known now; None for a traced value (inside jit/vmap)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def is_traced(*trees) -> bool:
    """Whether any array of ``trees`` is a tracer (the call runs under an outer jit/vmap/grad)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(trees))


def check_clip(clip) -> tuple[float, float]:
    """``clip`` as a pair of Python floats ``(low, high)``, finite with low < high."""
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"clip must be a pair (low, high) of finite numbers with low < high, the box of valid "
                         f"inputs; got {clip!r}. Pass e.g. clip=(0.0, 1.0) for images in [0, 1] or "
                         "clip=(-1.0, 1.0) for images in [-1, 1].")
    return lo, hi


def check_images(x, clip: tuple[float, float], name: str = "x") -> None:
    """Static checks of a batch of images: an array [B, ...] with B ≥ 1 of a float dtype."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{name} must be an array of images [B, ...]; got {type(x).__name__}. Pass "
                        "jnp.asarray(images).")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be float images inside the clip box {clip}; got dtype {x.dtype}. Convert "
                        "first, e.g. jaxmi.data.to_float(images) for uint8 pixels (x / 255).")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty batch of images [B, ...]; got shape {tuple(x.shape)}.")


def check_eps_box(eps_value: np.ndarray | None, *, norm: str, clip: tuple[float, float], x, name: str = "eps"
                  ) -> None:
    """ε (concrete, or None to skip) against the box: L∞ at most the box width ``hi − lo``; L2 at
    most the box's diameter ``(hi − lo)·√D`` (D values per example). A larger ball holds every
    image of the box, so the attack would be unconstrained: almost always ε in the wrong units."""
    if eps_value is None:
        return
    e = float(np.max(eps_value))
    width = clip[1] - clip[0]
    if norm == "l2":
        limit = width * math.sqrt(math.prod(x.shape[1:]))
        what = f"the diameter {limit:.4g} of the clip box {clip} ((high − low)·√D, D = {math.prod(x.shape[1:])})"
    else:
        limit = width
        what = f"the width {width:.4g} of the clip box {clip}"
    if e > limit:
        raise ValueError(f"{name}={e:.4g} is larger than {what}: that ball holds every image of the box, so the "
                         f"attack would be unconstrained. Give {name} in the units of x (for images in [0, 1], "
                         "e.g. 8/255 ≈ 0.031, not 8), or pass the box of your inputs as clip=(low, high).")


@jax.jit
def _value_stats(x, labels):
    """[3 + 2·len(labels)] float32: all finite, min, max of ``x``; min, max of each label array."""
    out = [jnp.all(jnp.isfinite(x)).astype(jnp.float32), jnp.min(x).astype(jnp.float32),
           jnp.max(x).astype(jnp.float32)]
    for lab in labels:
        out += [jnp.min(lab).astype(jnp.float32), jnp.max(lab).astype(jnp.float32)]
    return jnp.stack(out)


def check_values(logits_fn, x, labels: dict, clip: tuple[float, float], *, classes: int | None = None) -> None:
    """The value checks of one call, on concrete arrays (skipped when traced): ``x`` finite and
    inside ``clip``; each of ``labels`` (``{argument name: [B] ints}``) in [0, K), K from
    :func:`num_classes` unless given. One fused reduction and one host read."""
    names = [k for k, v in labels.items() if v is not None]
    stats = concrete(_value_stats(x, tuple(labels[k] for k in names)))
    if stats is None:
        return
    if not stats[0]:
        raise ValueError("x holds NaN or inf pixels; an attack on them returns non-finite images. Drop or repair "
                         "those images first (e.g. keep jnp.isfinite(x).reshape(len(x), -1).all(1)).")
    lo, hi = float(stats[1]), float(stats[2])
    if lo < clip[0] or hi > clip[1]:
        raise ValueError(f"x holds values in [{lo:.4g}, {hi:.4g}], outside the attack's clip box {clip}: the attack "
                         "would clip them into the box and return different images. Scale the images into the box "
                         "(uint8 pixels / 255 for [0, 1]) or pass the box of your inputs, clip=(low, high), e.g. "
                         "clip=(-1.0, 1.0) for images in [-1, 1].")
    if not names:
        return
    k = num_classes(logits_fn, x) if classes is None else classes
    for i, name in enumerate(names):
        ymin, ymax = int(stats[3 + 2 * i]), int(stats[4 + 2 * i])
        if ymin < 0 or ymax >= k:
            raise ValueError(f"{name} holds labels from {ymin} to {ymax}, outside [0, {k}): the model has {k} "
                             f"classes (logits_fn(x) has shape [B, {k}]). Pass class indices 0 … {k - 1}.")


def check_eps(eps) -> np.ndarray | None:
    """ε ≥ 0 where concrete; returns the concrete value (None when traced)."""
    e = concrete(eps)
    if e is not None and not np.all(e >= 0):
        raise ValueError(f"attack eps must be ≥ 0 (a radius in the units of x, e.g. 8/255 for images in [0, 1]); "
                         f"got {eps}.")
    return e


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
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(f"{name} must be an array of integer class labels [B]; got {type(y).__name__}. Pass "
                        f"jnp.asarray({name}, jnp.int32).")
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
    """The shape of ``logits_fn(x)``, from an abstract evaluation: [B, K] or a ValueError that
    names ``logits_fn`` and ``x``'s shape (a raw shape error of a user's function is a TypeError)."""
    try:
        out = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
    except TypeError as e:
        raise ValueError(f"logits_fn fails on x of shape {tuple(x.shape)}: {str(e).rstrip('.')}. Pass images of "
                         "the shape the model was built for.") from None
    shape = tuple(getattr(out, "shape", ()))
    if len(shape) != 2 or shape[0] != x.shape[0]:
        raise ValueError(f"logits_fn must map a batch x of shape {tuple(x.shape)} to logits [B, K] = "
                         f"[{x.shape[0]}, K]; got {type(out).__name__} of shape {shape}. Return only the logits, e.g. "
                         "lambda z: apply_model(module, params, stats, z)[0].")
    return shape


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


def _data(logits_fn, x, y, *, clip, eps_value, norm, target=None, traced=None, classes=None
          ) -> tuple[tuple[float, float], bool]:
    """The checks every attack makes of its data: images, labels (and targets), the box, ε
    against the box and, when nothing is traced, the values (:func:`check_values`). Returns
    ``(clip, traced)``."""
    clip = check_clip(clip)
    check_images(x, clip)
    check_labels(x, y)
    if target is not None:
        check_labels(x, target, "target")
    check_eps_box(eps_value, norm=norm, clip=clip, x=x)
    if traced is None:
        traced = is_traced(x, y, target)
    if not traced:
        check_values(logits_fn, x, {"y": y, "target": target}, clip, classes=classes)
    return clip, traced


def check_inputs(logits_fn, x, y, *, eps, norm: str = "linf", clip=DEFAULT_CLIP, target=None
                 ) -> tuple[tuple[float, float], bool]:
    """The data checks of an attack for a caller that runs attacks inside its own compiled
    function (there the attacks see traced values and skip them), e.g.
    :func:`jaxmi.evaluation.robust_report`: images, labels, ε against the box and, on concrete
    values, finite pixels inside ``clip`` and labels in [0, K). Returns ``(clip, traced)``."""
    check_norm(norm)
    e = check_eps(eps)
    return _data(logits_fn, x, y, clip=clip, eps_value=e, norm=norm, target=target,
                 traced=is_traced(x, y, target, eps))


def check_fgsm(logits_fn, x, y, *, eps, clip) -> tuple[tuple[float, float], bool]:
    """The checks of :func:`jaxmi.attacks.fgsm`; returns ``(clip, traced)``: the box as floats and
    whether an argument is traced (the call runs under an outer transformation)."""
    e = check_eps(eps)
    return _data(logits_fn, x, y, clip=clip, eps_value=e, norm="linf",
                 traced=is_traced(x, y, eps))


def check_pgd(logits_fn, x, y, *, eps, step_size, steps, key, random_start, norm, target, restarts, clip
              ) -> tuple[tuple[float, float], bool]:
    """The checks of :func:`jaxmi.attacks.pgd`; returns ``(clip, traced)`` as :func:`check_fgsm`."""
    e = check_eps(eps)
    _check_step_size(step_size)
    check_steps(steps)
    check_norm(norm)
    _check_restarts(restarts, "pgd")
    if restarts > 1 and not random_start:
        raise ValueError("pgd(restarts > 1) repeats the same attack unless it starts at random: pass "
                         "random_start=True and a key.")
    if random_start and key is None:
        raise ValueError("pgd(random_start=True) needs a PRNG key: pass key=jax.random.key(seed).")
    return _data(logits_fn, x, y, clip=clip, eps_value=e, norm=norm, target=target,
                 traced=is_traced(x, y, target, eps, step_size, key))


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


def check_apgd(logits_fn, x, y, *, eps, steps, loss, key, norm, target, restarts, rho, momentum, clip
               ) -> tuple[tuple[float, float], bool]:
    """The checks of :func:`jaxmi.attacks.apgd`; with the DLR loss, the model's class count too.
    Returns ``(clip, traced)`` as :func:`check_fgsm`."""
    e = check_eps(eps)
    _check_apgd_options(x, y, steps=steps, key=key, norm=norm, target=target, restarts=restarts, rho=rho,
                        loss=loss, momentum=momentum)
    traced = is_traced(x, y, target, eps, key)
    classes = None
    if loss == "dlr":
        shape = _logits_shape(logits_fn, x)
        check_dlr_classes(shape, targeted=target is not None)
        classes = shape[-1]
    return _data(logits_fn, x, y, clip=clip, eps_value=e, norm=norm, target=target, traced=traced, classes=classes)


def check_apgd_targeted(logits_fn, x, y, *, eps, steps, key, norm, restarts, rho, n_targets, batch_size, clip
                        ) -> tuple[int, int, tuple[float, float], bool]:
    """The checks of :func:`jaxmi.attacks.apgd_targeted`; returns ``(n_targets, batch_size, clip,
    traced)`` resolved."""
    e = check_eps(eps)
    _check_apgd_options(x, y, steps=steps, key=key, norm=norm, target=None, restarts=restarts, rho=rho)
    classes = num_classes(logits_fn, x)
    n_targets, batch_size = _check_targets(n_targets, classes), _chunk_size(batch_size)
    clip, traced = _data(logits_fn, x, y, clip=clip, eps_value=e, norm=norm, traced=is_traced(x, y, eps, key),
                         classes=classes)
    return n_targets, batch_size, clip, traced


def _robust_options(logits_fn, x, y, *, key, norm, steps, n_targets, restarts, pgd_steps, rho, batch_size, tol,
                    unroll, norm_and_labels, classes) -> dict:
    _check_apgd_options(x, y, steps=steps, key=key, norm=norm, target=None, restarts=restarts, rho=rho,
                        norm_and_labels=norm_and_labels)
    check_steps(pgd_steps)
    if pgd_steps < 1:
        raise ValueError(f"robust_accuracy pgd_steps must be ≥ 1 (the PGD of the masking check); got {pgd_steps}.")
    n_targets = _check_targets(n_targets, classes)
    batch_size = _chunk_size(batch_size)
    if not 0 <= tol < 1:
        raise ValueError(f"tol (the masking flags' tolerance, in accuracy) must be in [0, 1); got {tol}.")
    return dict(norm=norm, steps=int(steps), n_targets=n_targets, restarts=int(restarts), pgd_steps=int(pgd_steps),
                rho=float(rho), batch_size=int(batch_size), unroll=bool(unroll), tol=float(tol))


def check_robust(logits_fn, x, y, *, eps, key, norm, steps, n_targets, restarts, pgd_steps, rho, batch_size, tol,
                 unroll, clip) -> dict:
    """The checks of :func:`jaxmi.attacks.robust_accuracy`; returns its static options resolved,
    ``clip`` among them."""
    classes = num_classes(logits_fn, x)
    kw = _robust_options(logits_fn, x, y, key=key, norm=norm, steps=steps, n_targets=n_targets, restarts=restarts,
                         pgd_steps=pgd_steps, rho=rho, batch_size=batch_size, tol=tol, unroll=unroll,
                         norm_and_labels=True, classes=classes)
    e = check_eps(eps)
    clip, _ = _data(logits_fn, x, y, clip=clip, eps_value=e, norm=norm, traced=is_traced(x, y, eps, key),
                    classes=classes)
    return {**kw, "clip": clip}


def check_curve(logits_fn, x, y, eps_values, *, attack, key, steps, step_size, norm, restarts, random_start, tol,
                unroll, robust_kw: dict, clip) -> tuple[np.ndarray, int | None, tuple, tuple[float, float]]:
    """The checks of :func:`jaxmi.attacks.robustness_curve` (``eps_values`` as an array of x's
    dtype). Returns ``(eps_values, steps, robust options, clip)``: the iterations of PGD or APGD
    (None for FGSM and ``"robust"``), for ``"robust"`` its static options as sorted pairs, and
    the box as floats."""
    if attack not in CURVE_ATTACKS:
        raise ValueError(f"unknown curve attack {attack!r}; choose one of {CURVE_ATTACKS}.")
    check_norm(norm)
    clip = check_clip(clip)
    check_images(x, clip)
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
    traced = is_traced(x, y, eps_values, key)
    classes = num_classes(logits_fn, x) if attack == "robust" or not traced else None
    if attack == "robust":
        rkw = _robust_options(logits_fn, x, y, key=key, norm=norm, steps=100 if steps is None else steps,
                              n_targets=robust_kw.pop("n_targets", None), restarts=restarts,
                              pgd_steps=robust_kw.pop("pgd_steps", 20), rho=robust_kw.pop("rho", 0.75),
                              batch_size=robust_kw.pop("batch_size", None), tol=tol, unroll=unroll,
                              norm_and_labels=False, classes=classes)
        if robust_kw:
            raise ValueError(f"unknown robust_accuracy options {sorted(robust_kw)}; use n_targets, pgd_steps, rho, "
                             "batch_size.")
        rkw = tuple(sorted({**rkw, "clip": clip}.items()))
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
    check_eps_box(e, norm=norm, clip=clip, x=x, name="eps_values")
    if not traced:
        check_values(logits_fn, x, {"y": y}, clip, classes=classes)
    return eps_values, None if steps is None else int(steps), rkw, clip
