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
to float32 and sent to the device. There one compiled program loops (``lax.map``) over blocks
of B rows (:func:`ksg_block_size`; the last block padded by repeating the last row), computing
for a block the [B, N] distances in the x and the y space (Euclidean: the Gram identity
‖a‖² + ‖b‖² − 2a·b with ``precision=jax.lax.Precision.HIGHEST``, on squared distances;
Chebyshev: max |a_k − b_k|), point i's own distance set to exactly 0, their maximum with
point i set to +∞, ε_i (squared for Euclidean) as the k-th smallest of that row
(``jax.lax.top_k`` of the negated row on accelerators; on CPU, where XLA's ``top_k`` sorts
whole rows, from the minima of chunks of 64 columns: :func:`default_selection`,
:func:`kth_smallest`), and the strict counts (float32 sums, exact below 2²⁴). The columns
are padded to whole chunks with points at +∞ distance. Memory is O(B·N); no N × N matrix is
formed. Squared distances compare as the distances do, so the
counts are those of the definition above.

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

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi.estimators.knn_host import host_counts

__all__ = ["ksg_mi", "padded_rows", "ksg_counts", "KSGCounts", "KSG_METRICS", "ksg_block_size", "standardized", "kth_smallest",
           "device_counts", "pair_distances", "row_stat", "distance_tolerance", "rounding_growth", "count_rows"]

#: The per-space distances :func:`ksg_mi` supports.
KSG_METRICS = ("euclidean", "chebyshev")
_U32 = 2.0 ** -24  # float32 unit roundoff
_LOG2 = math.log(2.0)
#: Largest k for which the CPU finds ε by chunk minima rather than ``jax.lax.top_k``.
MAX_CHUNKED_K = 32
#: Columns per chunk of the chunked selection (:func:`kth_smallest`).
CHUNK = 64


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
    [B, N] float32 arrays stay in cache; on a 2-core x86_64 host blocks of 32 … 256 rows took
    0.098–0.111 CPU seconds at N = 5,000 and 512 rows 0.158; at N = 20,000 16 … 64 rows took
    1.4–1.7 s and 128 rows 2.2 s) or ≤ 2²⁶ on an accelerator
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


def pair_distances(a, b, sq_a, sq_b, metric: str, direct: bool = False):
    """Distances between the rows of a [B, d] and b [N, d]: squared Euclidean from the Gram
    identity (``sq_a``, ``sq_b`` the squared norms) or, with ``direct``, as sums of squared
    coordinate differences; Chebyshev as max |a_k − b_k|. Direct forms go a coordinate at a
    time (O(B·N) memory whatever d)."""
    if metric == "euclidean" and not direct:
        g = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
        return jnp.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * g, 0.0)
    bt = b.T  # [d, N]

    def coordinate(k, acc):
        diff = (jax.lax.dynamic_index_in_dim(a, k, axis=1, keepdims=True)  # [B, 1]
                - jax.lax.dynamic_index_in_dim(bt, k, axis=0, keepdims=True))  # [1, N]
        return acc + jnp.square(diff) if metric == "euclidean" else jnp.maximum(acc, jnp.abs(diff))

    return jax.lax.fori_loop(0, a.shape[1], coordinate, jnp.zeros((a.shape[0], b.shape[0]), a.dtype))


def row_stat(a, metric: str):
    """Per-row size that the rounding bound scales with: ‖a‖² (Euclidean) or max |a_k| (Chebyshev)."""
    return jnp.sum(jnp.square(a), axis=1) if metric == "euclidean" else jnp.max(jnp.abs(a), axis=1)


def rounding_growth(d: int, metric: str, direct: bool) -> float:
    """C with the error of one float32 distance D from a row a ≤ C·u·(D + S), S = ‖a‖²
    (Euclidean) or max|a_k| (Chebyshev): the bounds of :func:`distance_tolerance`, loosened."""
    if metric == "chebyshev":
        return 6.0
    return float(d + 8) if direct else 3.0 * (2 * d + 8)


def distance_tolerance(stat, reach, d: int, metric: str, direct: bool):
    """Bound on the error of any float32 distance D ≤ ``reach`` from a row with
    :func:`row_stat` ``stat`` (see the module docstring), with 0.1 % to spare for its own
    rounding:

    * Euclidean, Gram identity: (2d + 8)·u·(‖a‖² + ‖b‖²) with ‖b‖ ≤ ‖a‖ + √D;
    * Euclidean, direct differences: 4u·√D·‖a‖ + (d + 5)·u·D + u²·(2‖a‖ + √D)²;
    * Chebyshev: 3u·(max|a_k| + max|b_k|) with max|b_k| ≤ max|a_k| + D.
    """
    if metric == "chebyshev":
        t = 3.0 * _U32 * (2.0 * stat + reach)
    elif direct:
        na, r = jnp.sqrt(stat), jnp.sqrt(reach)
        t = 4.0 * _U32 * r * na + (d + 5) * _U32 * reach + _U32 ** 2 * jnp.square(2.0 * na + r)
    else:
        t = (2 * d + 8) * _U32 * (stat + jnp.square(jnp.sqrt(stat) + jnp.sqrt(reach)))
    return t * (1.0 + 1e-3)


def count_rows(mask):
    """Row counts of a [B, N] mask as a float32 sum (exact below 2²⁴; XLA:CPU compiles float
    sums to fast fused reductions, integer ones to a materialised [B, N] int32 array first)."""
    return jnp.sum(mask.astype(jnp.float32), axis=1)


def _threshold_kth(a, k: int):
    """The k-th smallest entry of every row of a [B, M] with multiplicity, by k passes: v = min,
    then k − 1 times c = #(a ≤ v) and, where c < k, v = min{a > v} (the next distinct value)."""
    v = jnp.min(a, axis=1)
    for _ in range(k - 1):
        below = count_rows(a <= v[:, None])
        above = jnp.min(jnp.where(a > v[:, None], a, jnp.inf), axis=1)
        v = jnp.where(below >= k, v, above)
    return v


def kth_smallest(a, k: int, selection: str):
    """The k-th smallest entry of every row of a [B, N], counted with multiplicity; N a multiple
    of :data:`CHUNK` for ``"chunked"``.

    ``"top_k"``: ``jax.lax.top_k`` of the negated rows. ``"threshold"``: :func:`_threshold_kth`
    on the whole rows (k passes). ``"chunked"``: one pass takes the minimum of every chunk of
    :data:`CHUNK` columns; k argmin passes over those minima pick the k chunks with the
    smallest ones (ties to the lower index); the answer is the k-th smallest of their k·CHUNK
    entries. Exact, ties included: those chunks hold k entries no larger than the k-th smallest
    (their minima), and a chunk holding one of the k smallest entries that was not picked
    would have a minimum no smaller than the k picked ones, which are then k entries no larger
    than it.
    """
    if selection == "top_k":
        return -jax.lax.top_k(-a, k)[0][:, k - 1]
    if selection == "threshold":
        return _threshold_kth(a, k)
    b, n = a.shape
    a3 = a.reshape(b, n // CHUNK, CHUNK)
    minima = jnp.min(a3, axis=2)
    first = jnp.arange(b)
    picked = []
    for r in range(min(k, n // CHUNK)):
        i = jnp.argmin(minima, axis=1)
        picked.append(i)
        if r < k - 1:
            minima = minima.at[first, i].set(jnp.inf)
    cand = jnp.take_along_axis(a3, jnp.stack(picked, axis=1)[:, :, None], axis=1).reshape(b, -1)
    return _threshold_kth(cand, k)


def default_selection(k: int, device: jax.Device | None = None) -> str:
    """``"chunked"`` on CPU for k ≤ :data:`MAX_CHUNKED_K`, else ``"top_k"``. XLA:CPU's ``top_k``
    sorts whole rows: at N = 5,000, d = 10 + 10, k = 3 the whole device pass took 3.6 s of CPU
    time with it, 0.14–0.16 s with threshold passes over whole rows and 0.09–0.10 s chunked
    (2-core x86_64 host, CPU seconds of the process)."""
    device = device if device is not None else jax.local_devices()[0]
    return "chunked" if device.platform == "cpu" and k <= MAX_CHUNKED_K else "top_k"


@functools.partial(jax.jit, static_argnames=("k", "metric", "block_size", "selection", "direct"))
def device_counts(x, y, rows, *, k: int, metric: str, block_size: int, selection: str = "top_k",
                  direct: bool = False):
    """float32 counts of the given rows and, per row, the number of (point, space) comparisons
    within the rounding band of ε (1: the row's counts are exact).

    Args:
      x, y: [N, d_x], [N, d_y] float32, centred.
      rows: [M] int32 row indices, M a multiple of ``block_size`` (pad by repeating one).
      direct: Euclidean distances as sums of squared differences (slower than the Gram
        identity, but with a rounding bound relative to the distance, not to the norms).

    Returns:
      (n_x, n_y, band), [M] int32 each.
    """
    n = x.shape[0]
    b = block_size
    nb = rows.shape[0] // b
    npad = -(-n // CHUNK) * CHUNK  # columns padded to whole chunks with points at +∞ distance
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    sx, sy = row_stat(x, metric), row_stat(y, metric)
    dx_, dy_ = x.shape[1], y.shape[1]
    delta = 10.0 * _U32 * max(rounding_growth(dx_, metric, direct), rounding_growth(dy_, metric, direct))
    xp, yp = (jnp.pad(a, ((0, npad - n), (0, 0))) for a in (x, y))
    sxp, syp = (jnp.pad(a, (0, npad - n)) for a in (sx, sy))
    cols = jnp.arange(npad)
    real = cols < n

    def block(i):
        r = jax.lax.dynamic_slice_in_dim(rows, i * b, b)
        other = r[:, None] != cols[None, :]
        # exactly 0 for point i itself, +∞ for the padding columns, in both spaces
        dx = jnp.where(real[None, :], jnp.where(other, pair_distances(x[r], xp, sx[r], sxp, metric, direct), 0.0), jnp.inf)
        dy = jnp.where(real[None, :], jnp.where(other, pair_distances(y[r], yp, sy[r], syp, metric, direct), 0.0), jnp.inf)
        eps = kth_smallest(jnp.where(other, jnp.maximum(dx, dy), jnp.inf), k, selection)
        e = eps[:, None]
        # Only points within `reach` of point i can decide ε or compare differently with it
        # (module docstring), so the bounds are those of distances up to that reach.
        reach = eps * (1.0 + delta) + delta * jnp.maximum(sx[r], sy[r])
        tx = distance_tolerance(sx[r], reach, dx_, metric, direct)
        ty = distance_tolerance(sy[r], reach, dy_, metric, direct)
        t_eps = jnp.maximum(tx, ty)
        # point i itself falls in the band only when ε is within rounding of 0: a recount
        nx, ny = count_rows(dx < e), count_rows(dy < e)
        in_band = ((jnp.abs(dx - e) <= (tx + t_eps)[:, None]).astype(jnp.float32)
                   + (jnp.abs(dy - e) <= (ty + t_eps)[:, None]).astype(jnp.float32))
        band = jnp.sum(in_band, axis=1)  # x and y together: one reduction
        self_in = (eps > 0).astype(jnp.float32)  # point i (distance 0) is below ε unless ε = 0
        return (nx - self_in).astype(jnp.int32), (ny - self_in).astype(jnp.int32), band.astype(jnp.int32)

    nx, ny, band = jax.lax.map(block, jnp.arange(nb))
    return nx.reshape(-1), ny.reshape(-1), band.reshape(-1)


def padded_rows(rows: np.ndarray, n: int, block_size: int) -> np.ndarray:
    """Row indices padded (by repeating the last) to a whole number of blocks of ``block_size``;
    a subset of the ``n`` rows to a power-of-two number of blocks, so that few sizes compile."""
    nb = -(-len(rows) // block_size)
    if len(rows) < n:
        nb = 1 << (nb - 1).bit_length()
    idx = np.full(nb * block_size, rows[-1], np.int32)
    idx[:len(rows)] = rows
    return idx


def _device_rows(x, y, rows: np.ndarray, k: int, metric: str, block_size: int, direct: bool):
    """:func:`device_counts` for any row indices: padded to a whole number of blocks (to a
    power-of-two number of blocks for a subset, so that few sizes compile), results trimmed."""
    m = len(rows)
    idx = padded_rows(rows, x.shape[0], block_size)
    out = device_counts(x, y, jnp.asarray(idx), k=k, metric=metric, block_size=block_size,
                         selection=default_selection(k), direct=direct)
    return [a[:m].astype(np.int64) for a in jax.device_get(out)]


def ksg_counts(x: Any, y: Any, k: int = 3, metric: str = "euclidean", *, standardize: bool = True,
               block_size: int | None = None) -> KSGCounts:
    """The KSG neighbour counts n_x(i), n_y(i) of every point (see the module docstring).

    Args and checks as :func:`ksg_mi`.

    Returns:
      :class:`KSGCounts`: n_x, n_y as [N] int64 arrays and the number of rows recounted in
      float64.
    """
    xs, ys = _check(x, y, k, metric)
    return _counts(xs, ys, int(k), metric, standardize, block_size)


def _counts(xs, ys, k, metric, standardize, block_size) -> KSGCounts:
    n = xs.shape[0]
    xs, ys = standardized(xs, standardize), standardized(ys, standardize)
    b = ksg_block_size(n) if block_size is None else int(block_size)
    if b < 1:
        raise ValueError(f"block_size must be ≥ 1 (rows per device block); got {block_size}. Leave it None for "
                         f"the default.")
    b = min(b, n)
    x32, y32 = jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32)
    nx, ny, band = _device_rows(x32, y32, np.arange(n), k, metric, b, direct=False)
    redo = np.flatnonzero(band != 1)
    direct = 0
    if redo.size and metric == "euclidean":  # again with direct differences: a much narrower band
        direct = int(redo.size)
        nx2, ny2, band2 = _device_rows(x32, y32, redo, k, metric, min(b, ksg_block_size(n)), direct=True)
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
           block_size: int | None = None) -> float:
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

    Returns:
      The estimate in bits (nats / ln 2), not clipped at 0.

    Raises:
      ValueError: naming the argument, the value and the fix, for shapes that are not [N, d]
        with the same N, k outside 1 ≤ k < N, a metric not in :data:`KSG_METRICS`, or NaN/Inf.
    """
    xs, ys = _check(x, y, k, metric)
    n = xs.shape[0]
    c = _counts(xs, ys, int(k), metric, standardize, block_size)
    h = _harmonic(n)
    nats = h[int(k) - 1] + h[n - 1] - float(np.mean(h[c.n_x] + h[c.n_y]))
    return nats / _LOG2
