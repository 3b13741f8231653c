"""The Kraskov–Stögbauer–Grassberger (KSG) k-nearest-neighbour estimator of I(X;Y), in bits.

Estimator 1 of Kraskov, Stögbauer & Grassberger (2004), "Estimating mutual information",
Phys. Rev. E 69, 066138, eq. (8), for N paired samples (x_i, y_i) of two continuous
variables::

    I(X;Y) = ψ(k) + ψ(N) − (1/N) Σ_i [ψ(n_x(i) + 1) + ψ(n_y(i) + 1)]

converted from nats to bits. ε_i is the distance from point i to its k-th nearest neighbour in
the joint space, whose distance is the larger of the two per-space distances,
max(‖x_i − x_j‖, ‖y_i − y_j‖); n_x(i) = #{j ≠ i : ‖x_i − x_j‖ < ε_i} and n_y(i) likewise. The
per-space norm is ``metric``: ``"euclidean"`` (L2, the default, as in the ``bmi`` package's
``KSGEnsembleFirstEstimator``) or ``"chebyshev"`` (L∞, the paper's choice). For integer
arguments ψ(m) = −γ + H_{m−1} (H the harmonic numbers), so the estimate is computed exactly as
H_{k−1} + H_{N−1} − (1/N) Σ_i (H_{n_x(i)} + H_{n_y(i)}) in float64.

Ties and the strict inequality. ε_i is the k-th smallest of the N − 1 joint distances to the
*other* points, counted with multiplicity (point i is excluded by index, never by its zero
distance, so duplicates of point i are ordinary neighbours at distance 0). The counts are
strict: a point at exactly ε_i in a space is not counted there, so the k-th neighbour itself
is never counted in the space that sets ε_i (and is counted in the other space only when it
is strictly closer there). With duplicate points ε_i can be 0, and then n_x(i) = n_y(i) = 0.
``bmi``'s estimator computes the same for distinct points (it counts point i with the others
and subtracts 1, which assumes ε_i > 0). The estimate is not clipped at zero (``bmi`` returns
max(0, I)): with little dependence it can come out slightly negative.

Implementation. The data are standardised per column (zero mean, unit variance, as ``bmi``
does by default; ``standardize=False`` only centres them) in float64 on the host, then cast
to float32 and sent to the device(s). There one compiled program loops (``lax.map``) over
blocks of B rows (:func:`ksg_block_size`; the last block padded by repeating the last row;
with several local devices, e.g. ``jax.config.update("jax_num_cpu_devices", 2)`` on a
multi-core CPU, each device takes an equal share of the blocks through ``jax.shard_map``, with
the same result), computing for a block the [B, N] distances in the x and the y space
(Euclidean: the Gram identity (‖a‖² + ‖b‖²) + (−2a)·b with
``precision=jax.lax.Precision.HIGHEST``, on squared distances; Chebyshev: max |a_k − b_k|),
their maximum with point i set to +∞, ε_i (squared for Euclidean) as the k-th smallest of
that row (``jax.lax.top_k`` of the negated row on accelerators; on CPU, where XLA's ``top_k``
sorts whole rows, from the minima of chunks of 64 columns: :func:`default_selection`,
:func:`kth_smallest`), and the strict counts with the rounding band below, all in one pass
(:func:`packed_counts`: one int32 per column, summed per chunk in float32, exact). The
columns are padded to whole chunks with points at +∞ distance. Memory is O(B·N); no N × N
matrix is formed. Squared distances compare as the distances do, so the counts are those of
the definition above. In the counts point i's own distance is the computed one (exactly 0
from coordinate differences, within rounding of 0 from the Gram identity): it is below ε_i,
and subtracted, unless it lies in the rounding band of ε_i, where the row is counted again.

float32 rounding. Compared with exact arithmetic on the float64 standardised data, a float32
distance D between rows a and b is off by at most e (:func:`distance_tolerance`): from the Gram
identity, e = (2d + 8)·u·(‖a‖² + ‖b‖²) (squared distances; d the space's width; u = 2⁻²⁴;
the cast of the inputs included); from direct coordinate differences,
e = 4u·√D·‖a‖ + (d + 5)·u·D + u²·(2‖a‖ + √D)²; Chebyshev, e = 3u·(max|a_k| + max|b_k|).
Since ‖b‖ ≤ ‖a‖ + ‖a − b‖, e grows with the distance only, and the points that can decide
ε_i, or compare differently with it in float32 and in exact arithmetic, all lie within a
reach ε̂_i·(1 + δ) + δ·‖a‖² of point i (δ = 10·C·u with e ≤ C·u·(D + ‖a‖²); Chebyshev:
max|a_k| in place of ‖a‖²). So every row gets the bound τ_i = e at that reach per space;
ε̂_i is within T_i = max(τ_i(x), τ_i(y)) of the exact ε_i; and the row counts the (point,
space) pairs whose float32 distance lies within τ_i(space) + T_i of ε̂_i. The k-th neighbour
always lies there in the space that sets ε_i; if nothing else does, every other comparison
has the same outcome in float32 as in exact arithmetic, so the row's counts are exact. The
other rows are counted again: Euclidean rows first on the device from direct differences
(whose bound is relative to the distance, not to the norms), and the rows still undecided
(and every undecided Chebyshev row) in float64 on the host, from the Gram identity with the
same band at u = 2⁻⁵³ and, for the rows that leaves undecided (exact ties, duplicates),
from coordinate differences. The result therefore equals a float64 brute-force count on the
same standardised data, up to float64's own rounding (exact ties aside); :func:`ksg_counts`
reports how many rows took each step. For 10 + 10 Gaussian coordinates with correlation 0.5
the Gram pass leaves 152 of 5,000 rows (3 %) and 6,906 of 50,000 (14 %) undecided (ε shrinks
with N, the norms do not), direct differences 22 and 699 of them.

The estimator needs continuous variables: it does not give I(X;T) for a deterministic network
T = f(X) (infinite for continuous X), and labels (discrete, full of ties) make every row a
float64 recount and the digamma formula inappropriate.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import parallel
from jaxmi.estimators.knn_host import host_counts
from jaxmi.estimators.knn_pass import (
    CHUNK,
    MAX_CHUNKED_K,
    count_rows,
    default_selection,
    device_counts,
    distance_tolerance,
    kth_smallest,
    packed_counts,
    pair_distances,
    rounding_growth,
    row_stat,
)

__all__ = [
    "CHUNK",
    "KSG_METRICS",
    "MAX_CHUNKED_K",
    "KSGCounts",
    "count_rows",
    "default_selection",
    "device_counts",
    "distance_tolerance",
    "ksg_block_size",
    "ksg_counts",
    "ksg_mesh",
    "ksg_mi",
    "kth_smallest",
    "packed_counts",
    "padded_rows",
    "pair_distances",
    "rounding_growth",
    "row_stat",
    "standardized",
]

#: The per-space distances :func:`ksg_mi` supports.
KSG_METRICS = ("euclidean", "chebyshev")
_LOG2 = math.log(2.0)


class KSGCounts(NamedTuple):
    """The neighbour counts of :func:`ksg_counts`.

    Attributes:
      n_x: [N] int64, #{j ≠ i : d_x(i, j) < ε_i}.
      n_y: [N] int64, the same in the y space.
      direct: how many rows were counted a second time on the device with direct coordinate
        differences (Euclidean: the Gram pass could not decide one of their comparisons).
      recounted: how many rows were then recounted in float64 on the host (float32 could not
        decide one of their comparisons).
    """

    n_x: np.ndarray
    n_y: np.ndarray
    direct: int
    recounted: int


def ksg_block_size(n: int, device: jax.Device | None = None) -> int:
    """Rows per block B: the largest power of two with B·N ≤ 2²¹ on CPU (the block's few
    [B, N] float32 arrays stay in cache; on a 2-core x86_64 host, per whole estimate, blocks of
    64 … 256 rows took 0.085–0.087 CPU seconds at N = 5,000 and 512 rows 0.098; at N = 20,000
    32 … 128 rows took 1.28–1.39 s and 256 rows 1.98 s) or ≤ 2²⁶ on an accelerator
    (256 MiB per array), between 8 and 512 (CPU) or 4,096 rows."""
    device = device if device is not None else jax.local_devices()[0]
    cpu = device.platform == "cpu"
    budget, b = (1 << 21, 512) if cpu else (1 << 26, 4096)
    while b > 8 and b * n > budget:
        b //= 2
    return b


def _as_2d(a: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception as e:  # noqa: BLE001 (ragged input and the like)
        raise ValueError(f"{name} must be an array of shape [N, d_{name}]; could not convert it ({e}).") from e
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, d_{name}] (one sample per row); got shape {arr.shape}. "
                         f"Flatten each sample first, e.g. {name}.reshape(len({name}), -1).")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one sample with at least one feature.")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == np.bool_):
        raise ValueError(f"{name} must hold real numbers; got dtype {arr.dtype}. Convert it, e.g. "
                         f"np.asarray({name}, np.float32).")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s); the estimator needs finite values. Drop or "
                         f"impute those rows (in both x and y).")
    return arr


def _check(x, y, k, metric) -> tuple[np.ndarray, np.ndarray]:
    if metric not in KSG_METRICS:
        raise ValueError(f"metric must be one of {KSG_METRICS}; got {metric!r}.")
    xs, ys = _as_2d(x, "x"), _as_2d(y, "y")
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(f"x and y must have the same number of rows N (one paired sample per row); got "
                         f"x with {xs.shape[0]} and y with {ys.shape[0]} rows.")
    n = xs.shape[0]
    if n >= 1 << 24:
        raise ValueError(f"x and y have N = {n} rows; at most 16,777,215 are supported (the device counts are "
                         f"float32 sums). Estimate on a random subsample.")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer number of neighbours; got {k!r}. Pass e.g. k=3.")
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 ≤ k < N = {n} (the k-th neighbour among the other points); got k={k}. "
                         f"Use a smaller k (3 is usual) or more samples.")
    return xs, ys


def standardized(a: np.ndarray, standardize: bool) -> np.ndarray:
    """Centred (and, with ``standardize``, unit-variance) columns in float64; a constant column
    keeps scale 1 (as scikit-learn's StandardScaler, which ``bmi`` uses)."""
    a = a - a.mean(axis=0, keepdims=True)
    if standardize:
        sd = a.std(axis=0, keepdims=True)
        a = a / np.where(sd > 10 * np.finfo(np.float64).eps * np.abs(a).max(axis=0, keepdims=True), sd, 1.0)
    return a



def padded_rows(rows: np.ndarray, n: int, block_size: int, num_devices: int = 1) -> np.ndarray:
    """Row indices padded (by repeating the last) to a whole number of blocks of ``block_size``
    per device; a subset of the ``n`` rows to a power-of-two number of blocks per device, so
    that few sizes compile."""
    nb = -(-len(rows) // (block_size * num_devices))  # blocks per device
    if len(rows) < n:
        nb = 1 << (nb - 1).bit_length()
    idx = np.full(nb * num_devices * block_size, rows[-1], np.int32)
    idx[:len(rows)] = rows
    return idx


#: The mesh the KSG rows are split over (:func:`jaxmi.parallel.rows_mesh`).
ksg_mesh = parallel.rows_mesh


def _device_rows(x, y, rows: np.ndarray, k: int, metric: str, block_size: int, direct: bool, mesh):
    """:func:`device_counts` for any row indices: padded to a whole number of blocks per device
    (:func:`padded_rows`), results trimmed."""
    m = len(rows)
    idx = padded_rows(rows, x.shape[0], block_size, 1 if mesh is None else mesh.size)
    out = device_counts(x, y, idx, k=k, metric=metric, block_size=block_size,
                        selection=default_selection(k), direct=direct, mesh=mesh)
    return [a[:m].astype(np.int64) for a in jax.device_get(out)]


def ksg_counts(x: Any, y: Any, k: int = 3, metric: str = "euclidean", *, standardize: bool = True,
               block_size: int | None = None, devices=None) -> KSGCounts:
    """The KSG neighbour counts n_x(i), n_y(i) of every point (see the module docstring).

    Args and checks as :func:`ksg_mi`.

    Returns:
      :class:`KSGCounts`: n_x, n_y as [N] int64 arrays and the number of rows recounted in
      float64.
    """
    xs, ys = _check(x, y, k, metric)
    return _counts(xs, ys, int(k), metric, standardize, block_size, devices)


def _counts(xs, ys, k, metric, standardize, block_size, devices) -> KSGCounts:
    n = xs.shape[0]
    xs, ys = standardized(xs, standardize), standardized(ys, standardize)
    b = ksg_block_size(n) if block_size is None else int(block_size)
    if b < 1:
        raise ValueError(f"block_size must be ≥ 1 (rows per device block); got {block_size}. Leave it None for "
                         f"the default.")
    b = min(b, n)
    mesh = ksg_mesh(devices)
    x32, y32 = jnp.asarray(xs.astype(np.float32)), jnp.asarray(ys.astype(np.float32))
    nx, ny, band = _device_rows(x32, y32, np.arange(n), k, metric, b, False, mesh)
    redo = np.flatnonzero(band != 1)
    direct = 0
    if redo.size and metric == "euclidean":  # again with direct differences: a much narrower band
        direct = int(redo.size)
        nx2, ny2, band2 = _device_rows(x32, y32, redo, k, metric, min(b, ksg_block_size(n), 64), True, mesh)
        ok = band2 == 1
        nx[redo[ok]], ny[redo[ok]] = nx2[ok], ny2[ok]
        redo = redo[~ok]
    if redo.size:
        nx[redo], ny[redo] = host_counts(xs, ys, redo, k, metric)
    return KSGCounts(nx, ny, direct, int(redo.size))


def _harmonic(m: int) -> np.ndarray:
    """H_0 … H_m in float64 (H_0 = 0)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, m + 1, dtype=np.float64))])


def ksg_mi(x: Any, y: Any, k: int = 3, metric: str = "euclidean", *, standardize: bool = True,
           block_size: int | None = None, devices=None) -> float:
    """KSG estimator 1 of I(X;Y) between two continuous variables, in bits.

    Args:
      x: [N, d_x] samples of X, one per row (a 1-D [N] array is one column).
      y: [N, d_y] samples of Y, paired with x row by row.
      k: the neighbour order, 1 ≤ k < N (3 is usual; larger k: less variance, more bias).
      metric: the per-space distance, ``"euclidean"`` or ``"chebyshev"``; the joint distance
        is the larger of the two per-space distances.
      standardize: scale every column to unit variance first (default, as ``bmi``), which
        makes the estimate invariant to rescaling any coordinate; False only centres.
      block_size: rows per device block (default :func:`ksg_block_size`).
      devices: the devices that share the rows (default all local devices; the estimate is the
        same on any number of devices).

    Returns:
      The estimate in bits (nats / ln 2), not clipped at 0.

    Raises:
      ValueError: naming the argument, the value and the fix, for shapes that are not [N, d]
        with the same N, k outside 1 ≤ k < N, a metric not in :data:`KSG_METRICS`, or NaN/Inf.
    """
    xs, ys = _check(x, y, k, metric)
    n = xs.shape[0]
    c = _counts(xs, ys, int(k), metric, standardize, block_size, devices)
    h = _harmonic(n)
    nats = h[int(k) - 1] + h[n - 1] - float(np.mean(h[c.n_x] + h[c.n_y]))
    return nats / _LOG2
