"""KDE upper and lower bounds on I(X;T) and I(T;Y), from one blockwise Gram pass per layer.

With D_ij = ‖t_i − t_j‖² and s the exponent scale (2σ² for the pairwise-KL upper bound,
8σ² for the Bhattacharyya lower bound), in nats::

    I(X;T) = ln N − (1/N) Σ_i ln Σ_j exp(−D_ij / s)
    I(T;Y) = ln N − Σ_c p_c ln N_c − (1/N) Σ_i [ln Σ_j exp(−D_ij/s) − ln Σ_{j: y_j = y_i} exp(−D_ij/s)]

Both bounds and both terms come from the same kernel row sums (per row and bootstrap
resample: over all points, and over the points of the row's own class, the kernel block
masked by label equality, so a pass carries 2R sum columns whatever the number of classes),
which are computed blockwise (rows in blocks of B, only the blocks on and above the diagonal, O(N·B + B²)
memory), optionally split across devices, in float32 with a rounding bound that sends a
layer to an exact float64 host pass when float32 could be off by more than
:data:`MAX_KERNEL_ROUNDING`.

This module turns the sums into the bounds (:func:`kde_compute`, :func:`kde_sweep`,
:func:`kde_mi`, σ² relative to the layer's spread, :func:`spread`) and checks each pass; the
sums come from :mod:`jaxmi.estimators.kde_pass` (rows replicated on every device; block
size, rounding bound, float64 fallback) or :mod:`jaxmi.estimators.kde_ring` (rows sharded
over the devices).

References: Kolchinsky & Tracey (2017), "Estimating mixture entropy with pairwise
distances"; Kolchinsky, Tracey & Wolpert (2017); Saxe et al. (2018), "On the information
bottleneck theory of deep learning".
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxmi import backend, parallel
from jaxmi.estimators import kde_pass
from jaxmi.estimators.bootstrap import unit_weights
# choose_block_size, pass_block_size, sweep_scales, MAX_KERNEL_ROUNDING: also this module's API
from jaxmi.estimators.kde_pass import (MAX_KERNEL_ROUNDING, choose_block_size, column_mean, float32_rounding_bound,
                                       full_sample_totals, kde_mesh, kde_sums, pass_block_size, sweep_scales)
from jaxmi.estimators.kde_ring import kde_sums_ring
from jaxmi.estimators.validation import all_finite, check_noise_var, raise_if_nonfinite, validate

__all__ = ["kde_mi", "kde_compute", "kde_sweep", "kde_from_sums", "spread", "relative_noise_var", "choose_block_size",
           "pass_block_size", "sweep_scales", "MAX_KERNEL_ROUNDING", "SELF_DOMINATED", "CHAIN_STRIDE"]

_LOG2E = 1.0 / math.log(2.0)
#: A row whose kernel sum is below 1 + this is "self-dominated": its neighbours add less than
#: 1 % to its own term, so the estimate sees it as an isolated point.
SELF_DOMINATED = 1e-2
#: On a σ² grid of ratio 4, :func:`kde_sweep` computes an exponential at every
#: ``CHAIN_STRIDE``-th exponent scale and the others as fourth powers (see
#: :func:`jaxmi.estimators.kde_pass.kde_sums`).
CHAIN_STRIDE = 3


@functools.partial(jax.jit, static_argnames=("num_classes",))
def kde_from_sums(sums, labels, weights, *, num_classes: int):
    """I(X;T), I(T;Y) in bits at every scale and for every resample: arrays [S, R]."""
    n = sums.shape[0]
    r = weights.shape[0]
    w = weights.T[:, None, :]  # [N, 1, R]
    total, same = sums[..., :r], sums[..., r:]  # [N, S, R] each: over all points, over the row's class
    # A point absent from a resample (w = 0) has no term; guard log 0 · 0.
    log_total = jnp.where(w > 0, jnp.log(jnp.where(w > 0, total, 1.0)), 0.0)
    log_same = jnp.where(w > 0, jnp.log(jnp.where(w > 0, same, 1.0)), 0.0)
    counts = weights @ jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [R, C]
    h_y_term = jnp.sum(jnp.where(counts > 0, counts / n * jnp.log(jnp.maximum(counts, 1.0)), 0.0), axis=1)
    i_xt = jnp.log(n) - jnp.sum(w * log_total, axis=0) / n
    i_ty = jnp.log(n) - h_y_term[None, :] - jnp.sum(w * (log_total - log_same), axis=0) / n
    return i_xt * _LOG2E, i_ty * _LOG2E


def _gram_pass(t, y, c, weights, scales, *, paired: bool, block_size, devices, chain: int = 0,
               with_nn: bool = True, precision: str = "highest", rows: str = "auto"):
    """One checked blockwise pass: ``(sums [N, S, K], nn [N])``, redone exactly when float32
    rounding could exceed :data:`MAX_KERNEL_ROUNDING`. ``paired``: ``scales`` is (2σ², 8σ²),
    computed with one exponential. ``rows``: :func:`jaxmi.backend.resolve_kde_rows`."""
    mesh = kde_mesh(devices)
    sums_fn = kde_sums
    original = (t, y, weights)  # the float64 fallback takes the unpadded layer
    if mesh is not None and backend.resolve_kde_rows(rows, 4 * t.shape[0] * t.shape[1]) == "sharded":
        # Rows split over the devices: pad N to a multiple of M with zero rows of zero weight
        # where the layer is, then move the shards, so no device of the mesh gets it whole.
        n, pad = t.shape[0], -t.shape[0] % mesh.size
        if pad:
            t, y = jnp.pad(t, ((0, pad), (0, 0))), jnp.pad(y, (0, pad))
            weights = np.pad(np.asarray(weights), ((0, 0), (0, pad)))
        t = jax.device_put(t, jax.sharding.NamedSharding(mesh, PartitionSpec(parallel.DATA_AXIS)))
        y = jax.device_put(y, parallel.replicated(mesh))
        sums_fn = functools.partial(kde_sums_ring, num_rows=n)
    elif mesh is not None:  # the layer may live on another mesh (a run's): replicate it on this one
        t, y = jax.device_put((t, y), parallel.replicated(mesh))
    b = int(block_size or pass_block_size(t.shape[0], t.shape[1], num_classes=c, resamples=weights.shape[0],
                                          scales=len(scales)))
    w = jnp.asarray(weights, jnp.float32)
    arg = jnp.float32(scales[1] / 8.0) if paired else jnp.asarray(scales, jnp.float32)
    sums, finite, max_sq, nn = sums_fn(t, y, w, arg, num_classes=c, block_size=b, mesh=mesh, paired=paired,
                                         chain=chain, with_nn=with_nn, precision=precision)
    raise_if_nonfinite(finite or all_finite(t), "activations")
    if float32_rounding_bound(sums, max_sq, scales, c, precision) > MAX_KERNEL_ROUNDING:
        # The Gram identity's float32 rounding could move the row sums by more than
        # MAX_KERNEL_ROUNDING: redo this layer exactly, where the platform does that best
        # (jaxmi.backend.exact_kde_on_device): direct float32 differences on the device, or
        # float64 on the host (fast BLAS on CPU; also for norms beyond float32's range).
        if backend.exact_kde_on_device() and math.isfinite(float(max_sq)):
            sums, _, _, nn = sums_fn(t, y, w, arg, num_classes=c, block_size=b, mesh=mesh, paired=paired,
                                       chain=chain, with_nn=with_nn, precision=precision, exact=True)
        else:
            t0, y0, w0 = original
            s64, nn64 = kde_pass.kde_sums_float64(np.asarray(t0), np.asarray(y0), np.asarray(w0), scales, c, b)
            sums, nn = jnp.asarray(s64, jnp.float32), jnp.asarray(nn64, jnp.float32)
    return sums, nn


@jax.jit
def _spread(t):
    """(spread, mean squared norm of the uncentred rows)."""
    t = t.astype(jnp.float32)
    n = t.shape[0]
    return jnp.sum(jnp.square(t - column_mean(t, n))) / n, jnp.sum(jnp.square(t)) / n


def spread(t) -> float:
    """The layer's spread: the mean squared distance of its rows to their centroid,
    (1/N) Σ_i ‖t_i − t̄‖² (= half the mean pairwise squared distance, over ordered pairs with i ≠ j
    counted as N² − N of N²).

    ``noise_scale="relative"`` reads σ² in units of it. It is scale covariant, spread(c·T) =
    c²·spread(T), so a KDE estimate at σ² = v·spread(T) does not change when a layer is scaled;
    and, unlike the nearest-neighbour distance, it does not shrink when the rows cluster, so
    it does not normalise real compression away.

    Args:
      t: [N, D] activations (float32 on the device; the rows are centred first).
    """
    t = jnp.asarray(t)
    if t.ndim != 2 or t.shape[0] < 1:
        raise ValueError(f"spread: t must be an [N, D] array with N ≥ 1; got shape {tuple(t.shape)}.")
    s, norm = (float(v) for v in _spread(t))
    # Rows equal up to float32 rounding of the centroid: no spread (not a σ² of rounding noise).
    return 0.0 if s <= 1e-10 * norm else s


def relative_noise_var(noise_var: float, t) -> float:
    """σ² in units of the layer's spread (:func:`spread`): ``noise_var · spread(t)``; a
    ValueError when the rows are all equal (no spread)."""
    s = spread(t)
    if not (s > 0 and math.isfinite(s)):
        raise ValueError(f"noise_scale='relative' needs a layer whose rows are not all equal, but its spread (mean "
                         f"squared distance to the centroid) is {s!r}; use noise_scale='absolute'.")
    return noise_var * s


def kde_compute(t, y, c, weights, *, noise_var: float = 0.1, block_size: int | None = None, devices=None,
                noise_scale: str = "absolute", precision: str = "auto", rows: str = "auto", **_) -> dict[str, tuple]:
    """Both KDE bounds for the full sample and every resample, from one Gram pass.

    Args:
      t: [N, D] checked activations (:func:`jaxmi.estimators.validation.validate`).
      y: [N] int32 labels.
      c: number of classes C.
      weights: [R, N] point multiplicities (row 0: the full sample).
      noise_var: σ² > 0; with ``noise_scale="relative"``, in units of the layer's spread
        (:func:`spread`: its mean squared distance to the centroid).
      block_size: rows per block (default :func:`choose_block_size`).
      devices: devices to split the pass over (default: all local devices).
      noise_scale: ``"absolute"`` (the paper's protocol) or ``"relative"``.
      precision: matrix-product precision (:func:`jaxmi.backend.resolve_kde_precision`).
      rows: with several devices, ``"sharded"`` (each device holds N/M rows; a ring pass),
        ``"replicated"`` (every device holds the layer; half the products) or ``"auto"``
        (:func:`jaxmi.backend.resolve_kde_rows`).

    Returns:
      ``{"kde_upper": (I_XT [R], I_TY [R], diagnostics), "kde_lower": (...)}`` in bits. The
      diagnostics of a bound with exponent scale s (2σ² upper, 8σ² lower) are
      ``nn_sq_dist_over_width`` (median_i min_{j≠i} D_ij / s), ``self_dominated_share``
      (the share of rows whose kernel sum is below 1 + :data:`SELF_DOMINATED`, i.e. nearly
      only their own term) and ``noise_var``, the σ² used.
    """
    precision = backend.resolve_kde_precision(precision)
    if noise_scale == "relative":
        noise_var = relative_noise_var(noise_var, t)
    sums, nn = _gram_pass(t, y, c, weights, (2.0 * noise_var, 8.0 * noise_var), paired=True,
                          block_size=block_size, devices=devices, precision=precision, rows=rows)
    i_xt, i_ty = jax.device_get(kde_from_sums(sums, y, jnp.asarray(weights, jnp.float32), num_classes=c))
    med = float(np.median(np.asarray(nn)))
    self_share = np.asarray(jnp.mean(full_sample_totals(sums, c) < 1.0 + SELF_DOMINATED, axis=0))
    out = {}
    for k, (name, width) in enumerate((("kde_upper", 2.0 * noise_var), ("kde_lower", 8.0 * noise_var))):
        diag = {"nn_sq_dist_over_width": med / width, "self_dominated_share": float(self_share[k]),
                "noise_var": float(noise_var)}
        out[name] = (i_xt[k], i_ty[k], diag)
    return out


def kde_sweep(t, y, c, noise_vars, *, block_size: int | None = None, devices=None,
              noise_scale: str = "absolute", precision: str = "auto", rows: str = "auto",
              weights=None) -> dict[str, np.ndarray]:
    """Both KDE bounds at every σ² of ``noise_vars`` from one Gram pass.

    Every σ² gets exactly the computation of :func:`kde_compute` at that σ² (two exponent
    scales each), but the distances are computed once for all of them. ``noise_scale="relative"``:
    σ² in units of the layer's spread (:func:`spread`). ``weights``: [R, N] point
    multiplicities (row 0: the full sample), or None for the full sample alone.

    Returns:
      ``{"noise_var": [S] σ² used, "kde_upper_I_XT": [S], "kde_upper_I_TY": [S],
      "kde_lower_I_XT": [S], "kde_lower_I_TY": [S]}`` in bits; with ``weights``, [S, R] arrays.
    """
    nv = np.asarray(noise_vars, np.float64)
    w = unit_weights(t.shape[0]) if weights is None else weights
    if noise_scale == "relative":
        nv = nv * relative_noise_var(1.0, t)
    # The exponent scales 2σ² (upper) and 8σ² (lower) of all σ², each computed once: on a grid
    # of ratio 4 (the default), the lower bound at σ² shares its kernel with the upper at 4σ².
    scales, index = np.unique(np.concatenate([2.0 * nv, 8.0 * nv]), return_inverse=True)
    chain = CHAIN_STRIDE if len(scales) > 1 and np.all(scales[1:] == 4.0 * scales[:-1]) else 0
    sums, _ = _gram_pass(t, y, c, w, tuple(float(v) for v in scales), paired=False, block_size=block_size,
                         devices=devices, chain=chain, with_nn=False,
                         precision=backend.resolve_kde_precision(precision), rows=rows)
    i_xt, i_ty = jax.device_get(kde_from_sums(sums, y, jnp.asarray(w, jnp.float32), num_classes=c))
    i_xt, i_ty = np.asarray(i_xt)[index], np.asarray(i_ty)[index]  # [2S, R]
    if weights is None:
        i_xt, i_ty = i_xt[:, 0], i_ty[:, 0]
    s = len(nv)
    return {"noise_var": nv, "kde_upper_I_XT": i_xt[:s], "kde_upper_I_TY": i_ty[:s],
            "kde_lower_I_XT": i_xt[s:], "kde_lower_I_TY": i_ty[s:]}


def kde_mi(activations, labels, *, num_classes: int | None = None, noise_var: float = 0.1,
           block_size: int | None = None, devices=None) -> dict[str, dict[str, float]]:
    """KDE upper and lower bounds on I(X;T) and I(T;Y), in bits, from one distance pass.

    T is treated as the layer output plus Gaussian noise N(0, σ²I); H(T) of the resulting
    mixture is bounded with pairwise distances, at exponent scale s = 2σ² (upper bound) and
    s = 8σ² (lower bound)::

        I(X;T) = log₂ N − (1/N) Σ_i log₂ Σ_j exp(−‖t_i − t_j‖² / s)

    and I(T;Y) as in the module docstring. Distances come from the Gram identity in float32;
    when the rounding bound of :func:`~jaxmi.estimators.kde_pass.float32_rounding_bound` could exceed
    :data:`MAX_KERNEL_ROUNDING` (only for squared norms above ~25,000 at σ² = 0.1 *and* rows
    with neighbours within a few σ), the layer is recomputed in float64 on the host.

    Args:
      activations: [N, D] float array, one flattened layer output per sample.
      labels: [N] integer class labels.
      num_classes: number of classes (default: max(labels) + 1). Classes absent from the
        sample contribute nothing.
      noise_var: σ², the variance of the Gaussian noise added to T (0.1 in the paper).
      block_size: rows per block (default: :func:`choose_block_size`, from the free memory).
      devices: devices to split the pass over (default: all local devices).

    Returns:
      ``{"kde_upper": {"I_XT": float, "I_TY": float}, "kde_lower": {...}}`` in bits.

    References:
      Kolchinsky & Tracey (2017); Saxe et al. (2018).
    """
    check_noise_var(noise_var)
    t, y, c = validate(activations, labels, num_classes)
    res = kde_compute(t, y, c, unit_weights(t.shape[0]), noise_var=noise_var, block_size=block_size,
                      devices=devices)
    return {m: {"I_XT": float(v[0][0]), "I_TY": float(v[1][0])} for m, v in res.items()}
