"""The mixed continuous–discrete k-nearest-neighbour estimator of I(T;Y), in bits (Ross 2014).

B. C. Ross (2014), "Mutual information between discrete and continuous data sets", PLoS ONE
9(2): e87357, eq. (2), for N samples (t_i, y_i) of a continuous T and class labels Y::

    I(T;Y) = ψ(N) − ⟨ψ(N_{y_i})⟩ + ψ(k) − ⟨ψ(m_i)⟩

converted from nats to bits, ⟨·⟩ the mean over the points. N_c is the number of points of
class c; d_i is the Euclidean distance from point i to its k-th nearest neighbour among the
N_{y_i} − 1 other points of its own class; m_i is the number of points of *any* class, point i
excluded, with distance ≤ d_i (Ross counts the k-th neighbour itself, so m_i ≥ k). For integer
arguments ψ(m) = −γ + H_{m−1}, so the estimate is computed exactly as
H_{N−1} − ⟨H_{N_{y_i}−1}⟩ + H_{k−1} − ⟨H_{m_i−1}⟩ in float64. It is not clipped: it can be
slightly negative, and since m_i ≥ k its largest value is ψ(N) − ⟨ψ(N_{y_i})⟩ (every point's k
nearest neighbours of its own class), which exceeds the plug-in Ĥ(Y) for small classes.

Ties and duplicates. d_i is the k-th smallest of the same-class distances counted with
multiplicity; point i is excluded by index, never by its zero distance, so a duplicate of
point i is an ordinary neighbour at distance 0 (d_i can then be 0). The count is ``≤``: every
point at exactly d_i counts, so with ties m_i can exceed what distinct distances would give.

Small classes. A class with fewer than k + 1 points has no k-th same-class neighbour: its
points are dropped, as in Ross's description, and N, N_c and the counts m_i are those of the
remaining points (the estimate is then I(T;Y) on the classes that remain). With no class of
k + 1 points the estimate is NaN (:func:`mixed_knn_mi` raises instead).

Scale. The counts depend only on the order of the distances, so the estimate of cT equals
that of T for any c ≠ 0 (exactly, where cT is computed without rounding, and up to ties
within rounding otherwise), and the geometry of the layer is kept (no per-coordinate
standardisation). For float32 range, T is centred and rescaled by a power of two near the
root mean square of the row norms, on the host in float64, in a way that breaks no tie
(:func:`scaled_activations`).

Bootstrap resamples. A resample with multiplicities w (:mod:`jaxmi.estimators.bootstrap`)
gets exactly the estimate of the materialised resample (the rows repeated w_i times): point i
sees its own w_i − 1 copies as same-class neighbours at distance 0 and every other point j
w_j times, N and N_c are weighted sums, the mean over points is weighted by w_i, and a class
whose resampled count is below k + 1 is dropped. Duplicates bias resampled estimates
relative to the full sample (the copies of the neighbour at d_i all count in m_i; a point with
w_i ≥ k + 1 copies is its own k neighbours at distance 0): for two unit-variance Gaussian
classes 2 apart, N = 2,000, k = 3, the mean over 30 resamples was 0.05–0.08 bits below the
full-sample estimate (three draws). The point estimate is always the full sample's; the
standard error and interval describe the sampling spread.

Implementation. One compiled program loops (``lax.map``) over blocks of B rows
(:func:`jaxmi.estimators.knn.ksg_block_size`), computes the block's [B, N] squared distances
once (the Gram identity, ``Precision.HIGHEST``, float32) and, for each of the 1 + R weight rows,
d_i as the weighted k-th smallest same-class distance (at most k threshold passes: each
distinct value adds a weight ≥ 1), m_i as a weighted count (float32 sums, exact below 2²⁴),
and the number of points within the float32 rounding band of d_i. The band is that of
:mod:`jaxmi.estimators.knn` (:func:`~jaxmi.estimators.knn.distance_tolerance`, one space):
a (row, resample) is exact when the only point in its band is the neighbour that sets d_i
(none when d_i is set by the row's own copies at distance 0); the other pairs are counted
again in float64 on the host (:func:`jaxmi.estimators.knn_mixed_host.host_mixed_counts`: the
Gram identity with the same band at u = 2⁻⁵³, then coordinate differences for the rows it
leaves undecided). The counts therefore equal those of a float64 brute force on the same
scaled data, up to float64's own rounding (exact ties aside). The band is a worst-case bound
that grows with the width D: for wide layers many pairs go to the host (:class:`MixedCounts`
reports how many). Memory is O(B·N); no N × N matrix is formed.

I(X;T) is not estimated: for a deterministic network T = f(X) of a continuous X it is not
finite, and a nearest-neighbour estimate of it reports the sample size, not information.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi.estimators.knn import (
    count_rows,
    distance_tolerance,
    ksg_block_size,
    padded_rows,
    pair_distances,
    rounding_growth,
    row_stat,
)
from jaxmi.estimators.knn_mixed_host import host_mixed_counts

__all__ = ["mixed_knn_mi", "mixed_counts", "MixedCounts", "knn_compute", "scaled_activations", "check_knn_k",
           "DEFAULT_K"]

#: The neighbour order of :func:`mixed_knn_mi` and ``method="knn"`` unless ``knn_k`` is given.
DEFAULT_K = 3
_U32 = 2.0 ** -24
_LOG2 = math.log(2.0)


class MixedCounts(NamedTuple):
    """The neighbour counts of :func:`mixed_counts`.

    Attributes:
      m: [1 + R, N] int64, m_i of every point in every weight row (0 where the point is absent
        or its class dropped).
      kept: [1 + R, N] int64, the multiplicity of every point in the estimate (w_i, or 0 for a
        dropped class).
      recounted: (weight row, point) pairs whose float32 count could differ from exact
        arithmetic, counted again in float64 on the host.
      tied: rows among them counted from coordinate differences (ties within float64 rounding).
    """

    m: np.ndarray
    kept: np.ndarray
    recounted: int
    tied: int


def check_knn_k(k: Any) -> int:
    """``k`` as an int ≥ 1, or a ValueError naming it."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"knn_k must be an integer number of neighbours ≥ 1; got {k!r}. Pass e.g. knn_k=3.")
    return int(k)


def scaled_activations(t: Any) -> np.ndarray:
    """[N, D] float64: minus the column means rounded to a grid of 2⁻²⁶ of the scale, times
    2⁻ᵉ with 2ᵉ ≤ the root mean square of the centred row norms < 2ᵉ⁺¹. The power-of-two
    scale is exact, and so is the shift for data on a grid of that spacing or a coarser one
    (integers, say), so neither breaks a tie that such data have; all rows the same: only
    centred."""
    a = np.asarray(t, np.float64)
    mean = a.mean(axis=0, keepdims=True)
    rms = math.sqrt(float(np.mean(np.einsum("nd,nd->n", a - mean, a - mean))))
    if not rms > 0:
        return a - mean
    e = math.floor(math.log2(rms))
    q = 2.0 ** (e - 26)
    return (a - np.round(mean / q) * q) * 2.0 ** -e


def _kept_weights(y: np.ndarray, weights: np.ndarray, k: int, c: int) -> np.ndarray:
    """[R, N] multiplicities with the points of classes of total weight < k + 1 set to 0."""
    totals = np.stack([np.bincount(y, weights=w, minlength=c) for w in weights])  # [R, C]
    return weights * (totals >= k + 1)[:, y]


def _weighted_kth(a, w, k: int):
    """The k-th smallest entry of every row of a [B, N] counted with multiplicities w [B, N]
    (entries with w = 0 must be +∞ in a): v = min, then k − 1 times, where the weight at or
    below v is < k, v = the next distinct value. +∞ where the row's total weight is < k."""
    v = jnp.min(a, axis=1)
    for _ in range(k - 1):
        below = jnp.sum(jnp.where(a <= v[:, None], w, 0.0), axis=1)
        above = jnp.min(jnp.where(a > v[:, None], a, jnp.inf), axis=1)
        v = jnp.where(below >= k, v, above)
    return v


@functools.partial(jax.jit, static_argnames=("k", "block_size"))
def mixed_device_counts(t, y, weights, rows, *, k: int, block_size: int):
    """float32 counts m of the given rows for every weight row, and whether float32 rounding
    could have changed them.

    Args:
      t: [N, D] float32, scaled (:func:`scaled_activations`).
      y: [N] int32 labels.
      weights: [R, N] float32 multiplicities, 0 for dropped classes.
      rows: [M] int32 row indices, M a multiple of ``block_size``.

    Returns:
      (m, undecided): [R, M] int32 and [R, M] bool.
    """
    n, d = t.shape
    b = block_size
    nb = rows.shape[0] // b
    st = row_stat(t, "euclidean")
    delta = 10.0 * _U32 * rounding_growth(d, "euclidean", False)
    cols = jnp.arange(n)

    def block(i):
        r = jax.lax.dynamic_slice_in_dim(rows, i * b, b)
        own = r[:, None] == cols[None, :]
        dist = jnp.where(own, 0.0, pair_distances(t[r], t, st[r], st, "euclidean"))
        same = y[r][:, None] == y[None, :]

        def resample(w):
            om = jnp.where(own, jnp.maximum(w[r] - 1.0, 0.0)[:, None], w[None, :])  # [B, N]
            eps = _weighted_kth(jnp.where(same & (om > 0), dist, jnp.inf), om, k)
            m = jnp.sum(jnp.where(dist <= eps[:, None], om, 0.0), axis=1)
            reach = eps * (1.0 + delta) + delta * st[r]
            tol = distance_tolerance(st[r], reach, d, "euclidean", False)
            band = count_rows((om > 0) & ~own & (jnp.abs(dist - eps[:, None]) <= 2.0 * tol[:, None]))
            expected = jnp.where(w[r] - 1.0 >= k, 0.0, 1.0)  # d_i set by the row's own copies: nothing in band
            undecided = (w[r] > 0) & ((band != expected) | ~jnp.isfinite(eps))
            return m.astype(jnp.int32), undecided

        return jax.lax.map(resample, weights)  # [R, B] each

    m, und = jax.lax.map(block, jnp.arange(nb))  # [nb, R, B]
    r_ = weights.shape[0]
    return (jnp.moveaxis(m, 1, 0).reshape(r_, -1), jnp.moveaxis(und, 1, 0).reshape(r_, -1))


def _device_rows(t, y, w, rows: np.ndarray, k: int, block_size: int):
    """:func:`mixed_device_counts` for any row indices (padded to a power-of-two number of
    blocks for a subset, so that few sizes compile), trimmed, on the host."""
    m_ = len(rows)
    idx = padded_rows(rows, t.shape[0], block_size)
    m, und = jax.device_get(mixed_device_counts(t, y, w, jnp.asarray(idx), k=k, block_size=block_size))
    return np.asarray(m[:, :m_], np.int64), np.asarray(und[:, :m_])


def _counts(t: Any, y: np.ndarray, weights: np.ndarray, k: int, c: int, block_size: int | None) -> MixedCounts:
    ts = scaled_activations(t)
    n = ts.shape[0]
    w = _kept_weights(y, np.asarray(weights, np.float64), k, c)
    b = min(ksg_block_size(n) if block_size is None else int(block_size), n)
    if b < 1:
        raise ValueError(f"block_size must be ≥ 1 (rows per device block); got {block_size}. Leave it None for "
                         f"the default.")
    t32, y32, w32 = jnp.asarray(ts, jnp.float32), jnp.asarray(y, jnp.int32), jnp.asarray(w, jnp.float32)
    m, und = _device_rows(t32, y32, w32, np.arange(n), k, b)
    tied = 0
    if und.any():
        m_host, tied = host_mixed_counts(ts, y, w, und, k)
        m = np.where(und, m_host, m)
    m = np.where(w > 0, m, 0)
    return MixedCounts(m, w.astype(np.int64), int(und.sum()), tied)


def _harmonic(m: int) -> np.ndarray:
    """H_0 … H_m in float64 (H_0 = 0)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, m + 1, dtype=np.float64))])


def _bits(counts: MixedCounts, y: np.ndarray, k: int, c: int) -> np.ndarray:
    """[R] estimates in bits from the counts (NaN where no class keeps k + 1 points)."""
    out = np.full(counts.m.shape[0], np.nan)
    h = _harmonic(int(counts.kept.sum(axis=1).max()) + 1)
    for q, (m, w) in enumerate(zip(counts.m, counts.kept)):
        total = int(w.sum())
        if total == 0:
            continue
        per_class = np.bincount(y, weights=w, minlength=c).astype(np.int64)
        on = w > 0
        if np.any(m[on] < k):
            raise AssertionError(f"a kNN count below k ({int(m[on].min())} < {k}): the counts are inconsistent")
        nats = (h[total - 1] + h[k - 1]
                - float(np.sum(w[on] * (h[per_class[y[on]] - 1] + h[m[on] - 1]))) / total)
        out[q] = nats / _LOG2
    return out


def _check_labels(t: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, int]:
    arr = np.asarray(t)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValueError(f"activations must be a 2-D array [N, D] with N ≥ 2 rows; got shape {np.shape(t)}. "
                         f"Flatten each sample first, e.g. t.reshape(len(t), -1).")
    if not np.all(np.isfinite(arr)):
        raise ValueError("activations contain NaN or Inf; the kNN estimator needs finite values.")
    y = np.asarray(labels)
    if y.shape != (arr.shape[0],) or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError(f"labels must be [N] non-negative integers with N = {arr.shape[0]}; got shape {y.shape}, "
                         f"dtype {y.dtype}.")
    if arr.shape[0] >= 1 << 24:
        raise ValueError(f"N = {arr.shape[0]} rows; at most 16,777,215 are supported (float32 counts). Estimate on a "
                         f"random subsample.")
    return arr, y.astype(np.int64), int(y.max()) + 1


def _check_class_sizes(y: np.ndarray, k: int, name: str) -> None:
    """A ValueError naming ``name`` when no class has k + 1 points (every class would be
    dropped and the estimate would be NaN)."""
    largest = int(np.bincount(y).max()) if y.size else 0
    if largest < k + 1:
        raise ValueError(f"{name}={k}: no class has k + 1 = {k + 1} points (largest class: {largest}); use a smaller "
                         f"{name} (3 is usual) or more samples.")


def mixed_counts(t: Any, labels: Any, k: int = DEFAULT_K, *, weights: Any = None,
                 block_size: int | None = None) -> MixedCounts:
    """The counts m_i of every point (module docstring) for the full sample and, with
    ``weights`` [R, N] (multiplicities), for every resample after it."""
    arr, y, c = _check_labels(t, labels)
    k = check_knn_k(k)
    w = np.ones((1, arr.shape[0])) if weights is None else np.concatenate([np.ones((1, arr.shape[0])),
                                                                          np.asarray(weights, np.float64)])
    return _counts(arr, y, w, k, c, block_size)


def mixed_knn_mi(t: Any, labels: Any, k: int = DEFAULT_K, *, block_size: int | None = None) -> float:
    """Ross's mixed kNN estimate of I(T;Y) in bits for continuous T and class labels Y.

    Args:
      t: [N, D] samples of T, one per row (a 1-D [N] array is one column).
      labels: [N] non-negative integer class labels.
      k: the neighbour order (3 is usual; larger k: less variance, more bias).
      block_size: rows per device block (default :func:`jaxmi.estimators.knn.ksg_block_size`).

    Returns:
      The estimate in bits, not clipped at 0; classes with fewer than k + 1 points are dropped.

    Raises:
      ValueError: for shapes that are not [N, D] and [N], NaN/Inf, k < 1, or no class with
        k + 1 points.
    """
    arr, y, c = _check_labels(t, labels)
    k = check_knn_k(k)
    _check_class_sizes(y, k, "k")
    counts = _counts(arr, y, np.ones((1, arr.shape[0])), k, c, block_size)
    return float(_bits(counts, y, k, c)[0])


def knn_compute(t, y, c, weights, *, knn_k: int = DEFAULT_K, **_) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The registry's compute function of ``"knn"``: ``{"knn": (I_XT [R] NaN, I_TY [R])}`` in
    bits for the full sample and every resample (I(X;T) is not defined for this estimator)."""
    k = check_knn_k(knn_k)
    y_np = np.asarray(y, np.int64)
    _check_class_sizes(y_np, k, "knn_k")
    w = np.asarray(weights, np.float64)
    counts = _counts(np.asarray(t, np.float64), y_np, w, k, int(c), None)
    i_ty = _bits(counts, y_np, k, int(c))
    return {"knn": (np.full(w.shape[0], np.nan), i_ty)}
