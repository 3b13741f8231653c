"""The float64 host step of the mixed kNN counts (:mod:`jaxmi.estimators.knn_mixed`): the
(row, resample) pairs whose float32 comparisons with d_i could differ from exact arithmetic,
counted again in float64.

Distances come from the Gram identity (matrix products) first, with the rounding band of the
device pass at u = 2⁻⁵³; rows that band leaves undecided in some resample (exact ties,
duplicate points) are counted from coordinate differences, where duplicates are exactly 0
apart. The semantics are those of :mod:`jaxmi.estimators.knn_mixed`: d_i the weighted k-th
smallest same-class distance (point i's own w_i − 1 copies at distance 0), m_i the weighted
number of points within ≤ d_i, point i excluded by index.
"""

from __future__ import annotations

import numpy as np

from jaxmi.estimators.knn_host import host_distances

__all__ = ["host_mixed_counts"]

_U64 = 2.0 ** -53  # float64 unit roundoff


def _pair_counts(dist: np.ndarray, r: np.ndarray, y: np.ndarray, w: np.ndarray, k: int,
                 stat: np.ndarray | None, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """m of rows ``r`` (their squared distances ``dist`` [s, N], own entries 0) for one weight
    row ``w`` [N], and with ``stat`` (the rows' squared norms: Gram distances) whether the
    float64 rounding band leaves a row undecided."""
    s = len(r)
    own = (np.arange(s), r)
    om = np.broadcast_to(w, dist.shape).copy()
    om[own] = np.maximum(w[r] - 1.0, 0.0)
    sel = np.where((y[r][:, None] == y[None, :]) & (om > 0), dist, np.inf)
    kk = min(k, sel.shape[1]) - 1
    idx = np.argpartition(sel, kk, axis=1)[:, :kk + 1]  # the k smallest present entries (unordered)
    vals = np.take_along_axis(sel, idx, axis=1)
    order = np.argsort(vals, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    cum = np.cumsum(np.take_along_axis(np.take_along_axis(om, idx, axis=1), order, axis=1), axis=1)
    # The weighted k-th smallest lies among the k smallest present entries (each weighs ≥ 1).
    eps = vals[np.arange(s), np.argmax(cum >= k, axis=1)]
    m = np.sum(np.where(dist <= eps[:, None], om, 0.0), axis=1).astype(np.int64)
    if stat is None:
        return m, None
    delta = 10.0 * _U64 * 3.0 * (2 * width + 8)
    reach = eps * (1.0 + delta) + delta * stat
    tol = (2 * width + 8) * _U64 * (stat + np.square(np.sqrt(stat) + np.sqrt(reach))) * (1.0 + 1e-3)
    near = (om > 0) & (np.abs(dist - eps[:, None]) <= 2.0 * tol[:, None])
    near[own] = False
    expected = np.where(w[r] - 1.0 >= k, 0, 1)
    return m, near.sum(axis=1) != expected


def host_mixed_counts(ts: np.ndarray, y: np.ndarray, w: np.ndarray, pairs: np.ndarray, k: int,
                      chunk_bytes: int = 1 << 26) -> tuple[np.ndarray, int]:
    """float64 counts of the requested (resample, row) pairs.

    Args:
      ts: [N, D] float64 scaled activations.
      y: [N] int labels.
      w: [R, N] multiplicities (0 for absent points and dropped classes).
      pairs: [R, N] bool, the pairs to count.
      k: neighbour order.

    Returns:
      (m, tied): m [R, N] int64 (filled where ``pairs``), and how many rows were counted from
      coordinate differences.
    """
    n, width = ts.shape
    per = max(1, chunk_bytes // (8 * n * 6))
    sq = np.einsum("nd,nd->n", ts, ts)
    out = np.zeros(pairs.shape, np.int64)
    rows = np.flatnonzero(pairs.any(axis=0))
    tied = 0
    for a in range(0, len(rows), per):
        r = rows[a:a + per]
        dist = np.maximum(sq[r, None] + sq[None, :] - 2.0 * (ts[r] @ ts.T), 0.0)
        dist[np.arange(len(r)), r] = 0.0
        undecided = np.zeros(len(r), bool)
        for q in range(w.shape[0]):
            s = np.flatnonzero(pairs[q, r])
            if s.size:
                m, und = _pair_counts(dist[s], r[s], y, w[q], k, sq[r[s]], width)
                out[q, r[s]] = m
                undecided[s[und]] = True
        redo = np.flatnonzero(undecided)
        if redo.size:  # ties within float64 rounding: coordinate differences (duplicates exactly 0)
            tied += int(redo.size)
            rr = r[redo]
            direct = host_distances(ts[rr], ts, "euclidean")
            direct[np.arange(len(rr)), rr] = 0.0
            for q in range(w.shape[0]):
                s = np.flatnonzero(pairs[q, rr])
                if s.size:
                    out[q, rr[s]] = _pair_counts(direct[s], rr[s], y, w[q], k, None, width)[0]
    return out, tied
