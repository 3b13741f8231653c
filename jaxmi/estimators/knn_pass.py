"""The device pass of the KSG estimator (:mod:`jaxmi.estimators.knn`): for blocks of rows, the
[B, N] distances in each space, ε as the k-th smallest joint distance, the strict neighbour
counts and the number of comparisons within the float32 rounding band of ε. The rounding
bounds and the rules that make the counts exact are in :mod:`jaxmi.estimators.knn`'s docstring.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from jaxmi import parallel

__all__ = [
    "CHUNK",
    "MAX_CHUNKED_K",
    "count_rows",
    "default_selection",
    "device_counts",
    "distance_tolerance",
    "kth_smallest",
    "packed_counts",
    "pair_distances",
    "rounding_growth",
    "row_stat",
]

_U32 = 2.0 ** -24  # float32 unit roundoff
#: Largest k for which the CPU finds ε by chunk minima rather than ``jax.lax.top_k``.
MAX_CHUNKED_K = 32
#: Columns per chunk of the chunked selection (:func:`kth_smallest`).
CHUNK = 64


def pair_distances(a, b, sq_a, sq_b, metric: str, direct: bool = False):
    """Distances between the rows of a [B, d] and b [N, d]: squared Euclidean from the Gram
    identity (``sq_a``, ``sq_b`` the squared norms) or, with ``direct``, as sums of squared
    coordinate differences; Chebyshev as max |a_k − b_k|. Direct forms go a coordinate at a
    time (O(B·N) memory whatever d)."""
    if metric == "euclidean" and not direct:  # −2a·b from the (exactly) scaled rows: no multiply per entry
        g = jnp.dot(-2.0 * a, b.T, precision=jax.lax.Precision.HIGHEST)
        return jnp.maximum((sq_a[:, None] + sq_b[None, :]) + g, 0.0)
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


def packed_counts(below_x, below_y, band_x, band_y):
    """Row counts of four [B, M] masks (M a multiple of :data:`CHUNK`): #below_x, #below_y and
    #band_x + #band_y, [B] int32 each, from one pass over the block. Each column packs
    below_x + 2⁷·below_y + 2¹⁴·(band_x + band_y) into an int32 (XLA:CPU then computes all four
    comparisons in one fused loop instead of writing a float32 mask per comparison), cast to
    float32 and summed per chunk of :data:`CHUNK` columns (exact: at most 64 + 2⁷·64 + 2¹⁴·128
    < 2²⁴), then unpacked per chunk and summed."""
    i32 = jnp.int32
    v = (below_x.astype(i32) + (below_y.astype(i32) << 7)
         + ((band_x.astype(i32) + band_y.astype(i32)) << 14)).astype(jnp.float32)
    s = jnp.sum(v.reshape(v.shape[0], -1, CHUNK), axis=2).astype(i32)
    return jnp.sum(s & 127, axis=1), jnp.sum((s >> 7) & 127, axis=1), jnp.sum(s >> 14, axis=1)


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
    sorts whole rows: at N = 5,000, d = 10 + 10, k = 3, B = 256 the whole device pass took 3.6 s
    of CPU time with it, 0.12 s with threshold passes over whole rows and 0.065 s chunked
    (2-core x86_64 host, CPU seconds of the process; picking the k chunks with ``top_k`` of the
    negated chunk minima instead of k argmin passes took the same time)."""
    device = device if device is not None else jax.local_devices()[0]
    return "chunked" if device.platform == "cpu" and k <= MAX_CHUNKED_K else "top_k"


@functools.partial(jax.jit, static_argnames=("k", "metric", "block_size", "selection", "direct", "mesh"))
def device_counts(x, y, rows, *, k: int, metric: str, block_size: int, selection: str = "top_k",
                  direct: bool = False, mesh: Mesh | None = None):
    """float32 counts of the given rows and, per row, the number of (point, space) comparisons
    within the rounding band of ε (1: the row's counts are exact).

    Args:
      x, y: [N, d_x], [N, d_y] float32, centred.
      rows: [M] int32 row indices, M a multiple of ``block_size`` (pad by repeating one) times
        the mesh's size.
      direct: Euclidean distances as sums of squared differences (slower than the Gram
        identity, but with a rounding bound relative to the distance, not to the norms).
      mesh: a one-axis ``"data"`` mesh whose devices each take an equal share of the rows (the
        same counts as on one device: every row's computation is the same), or None.

    Returns:
      (n_x, n_y, band), [M] int32 each.
    """
    n = x.shape[0]
    b = block_size
    npad = -(-n // CHUNK) * CHUNK  # columns padded to whole chunks with points at +∞ distance
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    sx, sy = row_stat(x, metric), row_stat(y, metric)
    dx_, dy_ = x.shape[1], y.shape[1]
    delta = 10.0 * _U32 * max(rounding_growth(dx_, metric, direct), rounding_growth(dy_, metric, direct))
    xp, yp = (jnp.pad(a, ((0, npad - n), (0, 0))) for a in (x, y))
    # Gram distances: the padding columns' squared norms are +∞, so are their distances
    gram = metric == "euclidean" and not direct
    sxp, syp = (jnp.pad(a, (0, npad - n), constant_values=jnp.inf if gram else 0.0) for a in (sx, sy))

    def block(rows, x, y, xp, yp, sx, sy, sxp, syp, i):
        r = jax.lax.dynamic_slice_in_dim(rows, i * b, b)
        cols = jnp.arange(npad)
        real = cols < n
        other = r[:, None] != cols[None, :]
        dx = pair_distances(x[r], xp, sx[r], sxp, metric, direct)
        dy = pair_distances(y[r], yp, sy[r], syp, metric, direct)
        if not gram:  # +∞ for the padding columns
            dx, dy = jnp.where(real[None, :], dx, jnp.inf), jnp.where(real[None, :], dy, jnp.inf)
        # point i is excluded from ε by index; in the counts its own distance (0, or within the
        # rounding of 0 from the Gram identity) is below ε, or ε lies within the band of it
        eps = kth_smallest(jnp.where(other, jnp.maximum(dx, dy), jnp.inf), k, selection)
        e = eps[:, None]
        # Only points within `reach` of point i can decide ε or compare differently with it
        # (module docstring), so the bounds are those of distances up to that reach.
        reach = eps * (1.0 + delta) + delta * jnp.maximum(sx[r], sy[r])
        tx = distance_tolerance(sx[r], reach, dx_, metric, direct)
        ty = distance_tolerance(sy[r], reach, dy_, metric, direct)
        t_eps = jnp.maximum(tx, ty)
        # point i itself falls in the band only when ε is within its rounding of 0: a recount
        nx, ny, band = packed_counts(dx < e, dy < e, (jnp.abs(dx - e) <= (tx + t_eps)[:, None]),
                                     (jnp.abs(dy - e) <= (ty + t_eps)[:, None]))
        self_in = (eps > 0).astype(jnp.int32)  # point i (distance 0) is below ε unless ε = 0
        return nx - self_in, ny - self_in, band

    def local(rows, *arrays):  # the blocks of these rows, one after another
        out = jax.lax.map(functools.partial(block, rows, *arrays), jnp.arange(rows.shape[0] // b))
        return tuple(a.reshape(-1) for a in out)

    arrays = (x, y, xp, yp, sx, sy, sxp, syp)
    if mesh is None or mesh.size == 1:
        return local(rows, *arrays)
    spec, rep = PartitionSpec(parallel.DATA_AXIS), PartitionSpec()
    return jax.shard_map(local, mesh=mesh, in_specs=(spec,) + (rep,) * len(arrays), out_specs=(spec, spec, spec),
                         check_vma=False)(rows, *arrays)
