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
:func:`_kth_smallest`), and the strict counts (float32 sums, exact below 2²⁴). The columns
are padded to whole chunks with points at +∞ distance. Memory is O(B·N); no N × N matrix is
formed. Squared distances compare as the distances do, so the
counts are those of the definition above.

float32 rounding. Compared with exact arithmetic on the float64 standardised data, a float32
distance between rows a and b is off by at most e = c·u·(‖a‖² + ‖b‖²) (Euclidean, squared
distances; c = 2d + 8 with d the space's width, covering the cast of the inputs and the Gram
identity's cancellation) or e = 3u·(max|a_k| + max|b_k|) (Chebyshev), u = 2⁻²⁴. Since
‖b‖ ≤ ‖a‖ + ‖a − b‖, e grows with the distance only; the points that can decide ε_i, or
compare differently with it in float32 and in exact arithmetic, all lie within a reach
ε̂_i·(1 + δ) + δ·‖a‖² of point i (δ = 32·c·u; Chebyshev: max|a_k| in place of ‖a‖²), so
every row gets the local bound τ_i = e(a, a point at that reach) per space, ε̂_i is within
T_i = max(τ_i(x), τ_i(y)) of the exact ε_i, and the row counts the (point, space) pairs whose
float32 distance lies within τ_i(space) + T_i of ε̂_i. The k-th neighbour always lies there
in the space that sets ε_i; if nothing else does, every other comparison has the same outcome
in float32 as in exact arithmetic, so the row's counts are exact. Every other row (near-ties,
duplicate points, rows whose norm is large against ε_i, as in heavy tails) is recounted in
float64 on the host (direct coordinate differences, in blocks of rows). The result therefore
equals a float64 brute-force count on the same standardised data, up to float64's own
rounding (exact ties aside); :func:`ksg_counts` reports how many rows were recounted (1.6 %
of the rows for 10 + 10 correlated Gaussians at N = 5,000; 16 % for bmi's 2 + 2
Student-t task with one degree of freedom, whose standardised core is tiny against its
tails).

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

__all__ = ["ksg_mi", "ksg_counts", "KSGCounts", "KSG_METRICS", "ksg_block_size"]

#: The per-space distances :func:`ksg_mi` supports.
KSG_METRICS = ("euclidean", "chebyshev")
_U32 = 2.0 ** -24  # float32 unit roundoff
_LOG2 = math.log(2.0)
#: Largest k for which the CPU finds ε by chunk minima rather than ``jax.lax.top_k``.
MAX_CHUNKED_K = 32
#: Columns per chunk of the chunked selection (:func:`_kth_smallest`).
CHUNK = 64


class KSGCounts(NamedTuple):
    """The neighbour counts of :func:`ksg_counts`.

    Attributes:
      n_x: [N] int64, #{j ≠ i : d_x(i, j) < ε_i}.
      n_y: [N] int64, the same in the y space.
      recounted: how many rows were recounted in float64 on the host (float32 could not
        decide one of their comparisons).
    """

    n_x: np.ndarray
    n_y: np.ndarray
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


def _prepare(a: np.ndarray, standardize: bool) -> np.ndarray:
    """Centred (and, with ``standardize``, unit-variance) columns in float64; a constant column
    keeps scale 1 (as scikit-learn's StandardScaler, which ``bmi`` uses)."""
    a = a - a.mean(axis=0, keepdims=True)
    if standardize:
        sd = a.std(axis=0, keepdims=True)
        a = a / np.where(sd > 10 * np.finfo(np.float64).eps * np.abs(a).max(axis=0, keepdims=True), sd, 1.0)
    return a


def _distances(a, b, sq_a, sq_b, metric: str):
    """Squared Euclidean (Gram identity) or Chebyshev distances between rows of a [B, d] and b [N, d]."""
    if metric == "euclidean":  # sq_a, sq_b: the rows' squared norms
        g = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
        return jnp.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * g, 0.0)
    bt = b.T  # [d, N]: a coordinate at a time, O(B·N) memory whatever d

    def coordinate(k, acc):
        col = jax.lax.dynamic_index_in_dim(a, k, axis=1, keepdims=True)  # [B, 1]
        row = jax.lax.dynamic_index_in_dim(bt, k, axis=0, keepdims=True)  # [1, N]
        return jnp.maximum(acc, jnp.abs(col - row))

    return jax.lax.fori_loop(0, a.shape[1], coordinate, jnp.zeros((a.shape[0], b.shape[0]), a.dtype))


def _row_stat(a, metric: str):
    """Per-row size that the rounding bound scales with: ‖a‖² (Euclidean) or max |a_k| (Chebyshev)."""
    return jnp.sum(jnp.square(a), axis=1) if metric == "euclidean" else jnp.max(jnp.abs(a), axis=1)


def _rounding_unit(d: int, metric: str) -> float:
    """c·u with the error of one float32 distance ≤ c·u·(‖a‖² + ‖b‖²) (Euclidean, squared;
    c = 2d + 8) or ≤ c·u·(max|a_k| + max|b_k|) (Chebyshev; c = 3); see the module docstring."""
    return ((2 * d + 8) if metric == "euclidean" else 3) * _U32


def _near_stat(stat_rows, reach, metric: str):
    """The largest :func:`_row_stat` of a point within distance ``reach`` (squared for
    Euclidean) of the row: (‖a‖ + √reach)² or max|a_k| + reach."""
    if metric == "euclidean":
        return jnp.square(jnp.sqrt(stat_rows) + jnp.sqrt(reach))
    return stat_rows + reach


def _count(mask):
    """Row counts of a [B, N] mask as a float32 sum (exact below 2²⁴; XLA:CPU compiles float
    sums to fast fused reductions, integer ones to a materialised [B, N] int32 array first)."""
    return jnp.sum(mask.astype(jnp.float32), axis=1)


def _threshold_kth(a, k: int):
    """The k-th smallest entry of every row of a [B, M] with multiplicity, by k passes: v = min,
    then k − 1 times c = #(a ≤ v) and, where c < k, v = min{a > v} (the next distinct value)."""
    v = jnp.min(a, axis=1)
    for _ in range(k - 1):
        below = _count(a <= v[:, None])
        above = jnp.min(jnp.where(a > v[:, None], a, jnp.inf), axis=1)
        v = jnp.where(below >= k, v, above)
    return v


def _kth_smallest(a, k: int, selection: str):
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


@functools.partial(jax.jit, static_argnames=("k", "metric", "block_size", "selection"))
def _device_counts(x, y, *, k: int, metric: str, block_size: int, selection: str = "top_k"):
    """float32 counts and, per row, the number of (point, space) comparisons within the
    rounding band of ε (1: the row's counts are exact). Returns (n_x, n_y, band), [N] int32."""
    n = x.shape[0]
    b = block_size
    nb = -(-n // b)
    npad = -(-n // CHUNK) * CHUNK  # columns padded to whole chunks with points at +∞ distance
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    sx, sy = _row_stat(x, metric), _row_stat(y, metric)
    cu_x, cu_y = _rounding_unit(x.shape[1], metric), _rounding_unit(y.shape[1], metric)
    delta = 32.0 * max(cu_x, cu_y)
    xp, yp = (jnp.pad(a, ((0, npad - n), (0, 0))) for a in (x, y))
    sxp, syp = (jnp.pad(a, (0, npad - n)) for a in (sx, sy))
    cols = jnp.arange(npad)
    real = cols < n

    def block(i):
        rows = jnp.minimum(i * b + jnp.arange(b), n - 1)  # the last block repeats row N − 1 (dropped)
        other = rows[:, None] != cols[None, :]
        # exactly 0 for point i itself, +∞ for the padding columns, in both spaces
        dx = jnp.where(real[None, :], jnp.where(other, _distances(x[rows], xp, sx[rows], sxp, metric), 0.0), jnp.inf)
        dy = jnp.where(real[None, :], jnp.where(other, _distances(y[rows], yp, sy[rows], syp, metric), 0.0), jnp.inf)
        eps = _kth_smallest(jnp.where(other, jnp.maximum(dx, dy), jnp.inf), k, selection)
        e = eps[:, None]
        # Only points within `reach` of point i can decide ε or lie in the band (module
        # docstring), so the bound uses the largest norm within that reach.
        reach = eps * (1.0 + delta) + delta * jnp.maximum(sx[rows], sy[rows])
        tx = cu_x * (sx[rows] + _near_stat(sx[rows], reach, metric)) * (1.0 + 1e-3)
        ty = cu_y * (sy[rows] + _near_stat(sy[rows], reach, metric)) * (1.0 + 1e-3)
        t_eps = jnp.maximum(tx, ty)
        # point i itself falls in the band only when ε is within rounding of 0: a recount
        nx, ny = _count(dx < e), _count(dy < e)
        in_band = ((jnp.abs(dx - e) <= (tx + t_eps)[:, None]).astype(jnp.float32)
                   + (jnp.abs(dy - e) <= (ty + t_eps)[:, None]).astype(jnp.float32))
        band = jnp.sum(in_band, axis=1)  # x and y together: one reduction
        self_in = (eps > 0).astype(jnp.float32)  # point i (distance 0) is below ε unless ε = 0
        return (nx - self_in).astype(jnp.int32), (ny - self_in).astype(jnp.int32), band.astype(jnp.int32)

    nx, ny, band = jax.lax.map(block, jnp.arange(nb))
    return nx.reshape(-1)[:n], ny.reshape(-1)[:n], band.reshape(-1)[:n]


def _host_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """float64 distances (squared for Euclidean) between rows of a [r, d] and b [N, d], from
    coordinate differences, one coordinate at a time (no cancellation: duplicate points are
    exactly 0 apart)."""
    acc = np.zeros((a.shape[0], b.shape[0]))
    tmp = np.empty_like(acc)
    for k in range(a.shape[1]):
        np.subtract(a[:, k, None], b[None, :, k], out=tmp)
        if metric == "euclidean":
            np.multiply(tmp, tmp, out=tmp)
            acc += tmp
        else:
            np.abs(tmp, out=tmp)
            np.maximum(acc, tmp, out=acc)
    return acc


def _host_counts(xs: np.ndarray, ys: np.ndarray, rows: np.ndarray, k: int, metric: str,
                 chunk_bytes: int = 1 << 26) -> tuple[np.ndarray, np.ndarray]:
    """Exact float64 counts for the given rows (O(len(rows)·N·d) time, O(chunk_bytes) memory)."""
    n = xs.shape[0]
    per = max(1, chunk_bytes // (8 * n * 6))  # a step holds six [r, N] float64 arrays
    nx = np.empty(len(rows), np.int64)
    ny = np.empty(len(rows), np.int64)
    for a in range(0, len(rows), per):
        r = rows[a:a + per]
        dx = _host_distances(xs[r], xs, metric)
        dy = _host_distances(ys[r], ys, metric)
        diag = (np.arange(len(r)), r)
        dx[diag] = dy[diag] = 0.0  # point i itself: exactly 0
        joint = np.maximum(dx, dy)
        joint[diag] = np.inf  # excluded from the neighbours by index
        eps = np.partition(joint, k - 1, axis=1)[:, k - 1:k]
        self_in = (eps[:, 0] > 0).astype(np.int64)  # point i is below ε unless ε = 0
        nx[a:a + len(r)] = np.sum(dx < eps, axis=1) - self_in
        ny[a:a + len(r)] = np.sum(dy < eps, axis=1) - self_in
    return nx, ny


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
    xs, ys = _prepare(xs, standardize), _prepare(ys, standardize)
    b = ksg_block_size(n) if block_size is None else int(block_size)
    if b < 1:
        raise ValueError(f"block_size must be ≥ 1 (rows per device block); got {block_size}. Leave it None for "
                         f"the default.")
    b = min(b, n)
    nx, ny, band = jax.device_get(_device_counts(jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32),
                                                 k=k, metric=metric, block_size=b,
                                                 selection=default_selection(k)))
    nx, ny = nx.astype(np.int64), ny.astype(np.int64)
    redo = np.flatnonzero(band != 1)
    if redo.size:
        nx[redo], ny[redo] = _host_counts(xs, ys, redo, k, metric)
    return KSGCounts(nx, ny, int(redo.size))


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
