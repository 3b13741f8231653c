"""Input and parameter checks of the estimators, on the host, before anything is traced.

Each public entry point runs these checks once per call: the estimator parameters
(``noise_var``, ``bin_size``, ``alpha``, bootstrap settings) up front, the activations and
labels once per layer. The compute functions of :mod:`jaxmi.estimators.kde`,
:mod:`~jaxmi.estimators.binning` and :mod:`~jaxmi.estimators.renyi` assume checked inputs.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["validate", "infer_num_classes", "check_noise_var", "check_noise_scale", "NOISE_SCALES", "check_bin_size",
           "check_alpha",
           "check_bootstrap", "raise_if_nonfinite", "all_finite"]


def validate(activations: Any, labels: Any, num_classes: int | None, *, flatten: bool = False,
             what: str = "activations", min_samples: int = 1) -> tuple[jax.Array, jax.Array, int]:
    """Checks one layer's activations and labels.

    Args:
      activations: [N, D] array, one layer output per row; with ``flatten``, any [N, ...]
        array, reshaped to [N, prod(...)] first. Non-float dtypes and floats narrower than
        float32 (bfloat16, float16: a mixed-precision model's layers) are cast to float32, so
        every estimate computes in float32 or wider.
      labels: [N] non-negative integer class indices.
      num_classes: number of classes C > max(labels), or None for max(labels) + 1.
      flatten: flatten each sample of an [N, ...] array (probe mappings do).
      what: the name used for ``activations`` in error messages.
      min_samples: the fewest rows accepted. The entry points (:func:`jaxmi.estimators.estimate`,
        :func:`~jaxmi.estimators.estimate_mi`, the sweeps) ask for 2: the estimate of one
        sample is 0 bits and saturated by construction, a number that looks like a result.
        The single estimators (``binning_mi``, ``kde_mi``, ...) keep 1 and return that 0.

    Returns:
      ``(activations [N, D] float, labels [N] int32, C)``.

    Raises:
      ValueError: with a message that says what is wrong and how to fix it.
    """
    if flatten and np.ndim(activations) not in (0, 2):
        activations = jnp.reshape(activations, (np.shape(activations)[0], -1))
    a_shape = np.shape(activations)
    if len(a_shape) != 2:
        raise ValueError(
            f"{what} must be a 2-D array [N, D] (one flattened layer output per row); got shape "
            f"{a_shape}. Flatten each sample first, e.g. x.reshape(len(x), -1)."
        )
    n = a_shape[0]
    if n < 1 or a_shape[1] < 1:
        raise ValueError(f"{what} is empty (shape {a_shape}); pass at least one sample with at least one feature.")
    if n < min_samples:
        raise ValueError(f"{what} holds {n} sample (shape {a_shape}); mutual information needs at least 2 samples "
                         "(the estimate of one sample is 0 bits and saturated by construction). Pass N ≥ 2 rows.")
    labels_np = np.asarray(labels)
    if labels_np.ndim != 1 or labels_np.shape[0] != n:
        raise ValueError(
            f"labels must be a 1-D array with one entry per row of {what}: got shape {labels_np.shape} "
            f"for {n} rows."
        )
    if not np.issubdtype(labels_np.dtype, np.integer):
        raise ValueError(f"labels must be integers (class indices); got dtype {labels_np.dtype}.")
    lo, hi = int(labels_np.min()), int(labels_np.max())
    if lo < 0:
        raise ValueError(f"labels must be non-negative class indices; found {lo}.")
    if num_classes is None:
        num_classes = hi + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer (or None to infer max(label) + 1); got "
                         f"{num_classes!r}.")
    elif hi >= num_classes:
        raise ValueError(
            f"labels must be < num_classes={num_classes}; found {hi}. Pass the right num_classes "
            "(or leave it None to infer max(label) + 1)."
        )
    act = jnp.asarray(activations)
    if not jnp.issubdtype(act.dtype, jnp.floating) or jnp.finfo(act.dtype).bits < 32:
        act = act.astype(jnp.float32)
    return act, jnp.asarray(labels_np, jnp.int32), int(num_classes)


def infer_num_classes(labels: Any, num_classes: int | None) -> int | None:
    """One class count C for every layer of a call: ``num_classes`` if given, else
    max(labels) + 1 where the labels are a non-empty 1-D integer array (else None, and
    :func:`validate` reports what is wrong with them)."""
    if num_classes is None and np.size(labels) and np.ndim(labels) == 1 \
            and np.issubdtype(np.asarray(labels).dtype, np.integer):
        return max(int(np.max(labels)) + 1, 1)
    return num_classes


def _positive_finite(value) -> bool:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return v > 0 and math.isfinite(v)


def check_noise_var(noise_var: float) -> None:
    """The KDE kernel variance σ² must be a finite number > 0 (NaN and inf are rejected: an
    infinite kernel makes every estimate 0 bits)."""
    if not _positive_finite(noise_var):
        raise ValueError(f"noise_var must be > 0 and finite (the KDE kernel variance σ²); got {noise_var!r}. "
                         "Pass e.g. noise_var=0.1 (the paper's).")


NOISE_SCALES = ("absolute", "relative")


def check_noise_scale(noise_scale: str) -> None:
    """How σ² is read: ``"absolute"`` (the paper's) or ``"relative"`` (in units of a layer's
    spread, its mean squared distance to the centroid: :func:`jaxmi.estimators.kde.spread`)."""
    if noise_scale not in NOISE_SCALES:
        raise ValueError(f"noise_scale must be one of {NOISE_SCALES}; got {noise_scale!r}.")


def check_bin_size(bin_size: float) -> None:
    """The binning width must be a finite number > 0 (NaN and inf are rejected: one infinite
    bin makes every estimate 0 bits)."""
    if not _positive_finite(bin_size):
        raise ValueError(f"bin_size must be > 0 and finite (the binning width); got {bin_size!r}. Pass e.g. "
                         "bin_size=0.5 (the paper's).")


def check_alpha(alpha: float) -> None:
    """The order α of the Rényi entropy must be a finite number > 0."""
    if not _positive_finite(alpha):
        raise ValueError(f"alpha must be > 0 and finite (the order of the Rényi entropy); got {alpha!r}.")


def check_bootstrap(bootstrap: int, confidence: float) -> None:
    """``bootstrap`` is 0 (off) or a number R ≥ 2 of resamples; ``confidence`` in (0, 1)."""
    try:
        bad = int(bootstrap) != bootstrap or bootstrap < 0 or bootstrap == 1
    except (TypeError, ValueError, OverflowError):
        bad = True
    if bad:
        raise ValueError(f"bootstrap must be 0 (off) or a number of resamples ≥ 2; got {bootstrap}.")
    try:
        bad = not 0.0 < float(confidence) < 1.0
    except (TypeError, ValueError):
        bad = True
    if bad:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}.")


def raise_if_nonfinite(finite: Any, what: str) -> None:
    """Raises a ValueError naming ``what`` unless ``finite`` is true."""
    if not bool(finite):
        raise ValueError(
            f"{what} contain NaN or Inf, so no mutual information can be estimated. The model has "
            "probably diverged (check the training loss and learning rate) or the input holds "
            "non-finite values."
        )


@jax.jit
def all_finite(t):
    """Elementwise finiteness check, run only when a cheaper fused sum was not finite."""
    return jnp.all(jnp.isfinite(t))
