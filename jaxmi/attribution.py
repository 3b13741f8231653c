"""Gradient attribution maps: saliency, SmoothGrad and Integrated Gradients, in JAX.

All three take a logits function ``logits_fn`` (a batch [B, H, W, C] → logits [B, K]; close
over the parameters and use evaluation mode so images do not interact), images ``x`` and the
classes ``y`` [B] to explain, and return attributions of the same shape as ``x``:

* **Saliency** (Simonyan et al. 2014): ∇ₓ f_y(x).
* **SmoothGrad** (Smilkov et al. 2017): (1/n) Σ_s ∇ₓ f_y(x + ε_s), ε_s ~ N(0, std²), with
  ``n`` noisy copies (the paper: 100, std 0.2 in [0, 1] pixel units).
* **Integrated Gradients** (Sundararajan et al. 2017): (x − x̄) ⊙ ∫₀¹ ∇ f_y(x̄ + α(x − x̄)) dα
  with the black baseline x̄ = 0 by default, the integral by the trapezoidal rule on
  ``steps`` intervals (the paper: 50). Completeness: the attributions of an image sum to
  approximately f_y(x) − f_y(x̄).

:func:`to_heatmap` turns attributions into the maps the paper shows: absolute value, the
maximum over channels, min-max normalised per image.

Every function is pure and jit-compatible; noisy copies and path points are evaluated in
vmapped chunks of ``chunk`` (memory only, results do not depend on it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi.models import apply_model
from jaxmi.stats import pearson

__all__ = ["saliency", "smoothgrad", "integrated_gradients", "smoothgrad_noise", "to_heatmap", "METHODS",
           "attribute", "make_maps", "edge_map", "edge_alignment"]

Array = jax.Array
LogitsFn = Callable[[Array], Array]
METHODS = ("saliency", "smoothgrad", "integrated_gradients")


def _class_logit_grad(logits_fn: LogitsFn, x: Array, y: Array) -> Array:
    """∇ₓ f_y(x) per image (the sum over the batch separates because images do not interact)."""
    def total(xx):
        logits = logits_fn(xx)
        return jnp.take_along_axis(logits, y[:, None].astype(jnp.int32), axis=1).sum()

    return jax.grad(total)(x)


def saliency(logits_fn: LogitsFn, x: Array, y: Array) -> Array:
    """Vanilla gradient ∇ₓ f_y(x), same shape as ``x`` (signed; see :func:`to_heatmap`)."""
    return _class_logit_grad(logits_fn, jnp.asarray(x), jnp.asarray(y))


def smoothgrad_noise(key: Array, shape: tuple[int, ...], samples: int, noise_std: float, dtype=jnp.float32) -> Array:
    """The noise SmoothGrad adds: ``[samples, *shape]``, copy s drawn with ``fold_in(key, s)``."""
    return jax.vmap(lambda s: noise_std * jax.random.normal(jax.random.fold_in(key, s), shape, dtype))(
        jnp.arange(samples))


def smoothgrad(logits_fn: LogitsFn, x: Array, y: Array, key: Array, *, samples: int = 100,
               noise_std: float = 0.2, chunk: int = 10) -> Array:
    """SmoothGrad: the gradient averaged over ``samples`` copies of x + N(0, noise_std²).

    Args:
      logits_fn: batch → logits.
      x: images [B, H, W, C].
      y: classes to explain [B].
      key: PRNG key; copy s uses ``noise_std · normal(fold_in(key, s), x.shape)``.
      samples: number of noisy copies (≥ 1).
      noise_std: noise standard deviation, in the units of ``x``.
      chunk: copies evaluated together (memory only).

    Returns:
      Attributions, same shape as ``x``.
    """
    if int(samples) != samples or samples < 1:
        raise ValueError(f"smoothgrad samples must be a positive integer; got {samples}.")
    if not noise_std >= 0:
        raise ValueError(f"smoothgrad noise_std must be ≥ 0; got {noise_std}.")
    x = jnp.asarray(x)
    y = jnp.asarray(y)

    def one(s):
        noise = noise_std * jax.random.normal(jax.random.fold_in(key, s), x.shape, x.dtype)
        return _class_logit_grad(logits_fn, x + noise, y)

    grads = jax.lax.map(one, jnp.arange(int(samples)), batch_size=max(1, min(int(chunk), int(samples))))
    return grads.mean(axis=0)


def integrated_gradients(logits_fn: LogitsFn, x: Array, y: Array, *, steps: int = 50,
                         baseline: Array | None = None, chunk: int = 10) -> Array:
    """Integrated Gradients along the straight path from ``baseline`` (default black, 0) to ``x``.

    ``IG(x) = (x − x̄) ⊙ Σ_k w_k ∇ f_y(x̄ + α_k (x − x̄))`` with α_k = k / steps, k = 0 … steps,
    and trapezoidal weights w_0 = w_steps = 1 / (2·steps), w_k = 1 / steps otherwise.

    Args:
      logits_fn: batch → logits.
      x: images [B, H, W, C].
      y: classes to explain [B].
      steps: number of intervals on the path (≥ 1).
      baseline: reference image(s) broadcastable to ``x``; ``None`` is all zeros (black).
      chunk: path points evaluated together (memory only).

    Returns:
      Attributions, same shape as ``x``; per image they sum to ≈ f_y(x) − f_y(x̄).
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"integrated_gradients steps must be a positive integer; got {steps}.")
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    base = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    n = int(steps)
    alphas = jnp.linspace(0.0, 1.0, n + 1, dtype=x.dtype)
    weights = jnp.full((n + 1,), 1.0 / n, x.dtype).at[0].set(0.5 / n).at[-1].set(0.5 / n)

    def one(a):
        return _class_logit_grad(logits_fn, base + a * (x - base), y)

    grads = jax.lax.map(one, alphas, batch_size=max(1, min(int(chunk), n + 1)))
    return (x - base) * jnp.tensordot(weights, grads, axes=1)


def attribute(method: str, logits_fn: LogitsFn, x: Array, y: Array, key: Array | None = None, **kwargs) -> Array:
    """Dispatches to one of :data:`METHODS` by name (``key`` is needed for SmoothGrad)."""
    if method == "saliency":
        return saliency(logits_fn, x, y)
    if method == "smoothgrad":
        if key is None:
            raise ValueError("smoothgrad needs a PRNG key.")
        return smoothgrad(logits_fn, x, y, key, **kwargs)
    if method == "integrated_gradients":
        return integrated_gradients(logits_fn, x, y, **kwargs)
    raise ValueError(f"unknown attribution method {method!r}; choose one of {list(METHODS)}.")


def to_heatmap(attributions: Array) -> Array:
    """|attributions|, maximum over channels, min-max normalised per image: [B, H, W] in [0, 1].

    A constant map (e.g. all zeros) becomes all zeros rather than NaN.
    """
    a = jnp.abs(jnp.asarray(attributions))
    if a.ndim == 4:
        a = a.max(axis=-1)
    if a.ndim != 3:
        raise ValueError(f"to_heatmap expects [B, H, W, C] or [B, H, W] attributions; got shape {a.shape}.")
    lo = a.min(axis=(1, 2), keepdims=True)
    hi = a.max(axis=(1, 2), keepdims=True)
    span = hi - lo
    return jnp.where(span > 0, (a - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def make_maps(module: Any, *, smoothgrad_samples: int = 100, smoothgrad_std: float = 0.2,
              ig_steps: int = 50) -> Callable:
    """Compiled ``maps(params, batch_stats, x, y, key) -> {method: [B, H, W] heatmap}`` for the three
    methods, on a model of :mod:`jaxmi.models` in evaluation mode, explaining classes ``y``."""
    @jax.jit
    def maps(params, batch_stats, x, y, key):
        def logits_fn(xx):
            return apply_model(module, params, batch_stats, xx, train=False)[0]

        raw = {
            "saliency": saliency(logits_fn, x, y),
            "smoothgrad": smoothgrad(logits_fn, x, y, key, samples=smoothgrad_samples, noise_std=smoothgrad_std),
            "integrated_gradients": integrated_gradients(logits_fn, x, y, steps=ig_steps),
        }
        return {m: to_heatmap(a) for m, a in raw.items()}

    return maps


def edge_map(images: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the grey-level image [B, H, W] (float64; edges = shape)."""
    g = np.asarray(images, np.float64).mean(-1)
    p = np.pad(g, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, 1:-1, :-2] + p[:, 2:, :-2])
    gy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, :-2, 1:-1] + p[:, :-2, 2:])
    return np.hypot(gx, gy)


def edge_alignment(heatmaps: np.ndarray, edges: np.ndarray) -> float | None:
    """Mean over images of the Pearson correlation between a heatmap and the image's edge map
    (higher when a map follows object contours); ``None`` when no image has a defined one."""
    values = [pearson(np.ravel(h), np.ravel(e)) for h, e in zip(heatmaps, edges)]
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None
