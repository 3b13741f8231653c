"""The float64 host step of the KSG counts (:mod:`jaxmi.estimators.knn`): the rows whose
float32 comparisons with ε could differ from exact arithmetic, counted again in float64.

Euclidean distances come from the Gram identity first (matrix products), with the rounding
band of the device passes at u = 2⁻⁵³ (no input cast: the data are the float64 standardised
values themselves); rows that band leaves undecided (exact ties, duplicate points) are
counted from direct coordinate differences, as Chebyshev rows always are. The semantics are
those of :func:`jaxmi.estimators.knn.ksg_mi`: ε_i the k-th smallest joint distance to the
other points (point i excluded by index), strict counts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["host_counts", "host_distances"]

_U64 = 2.0 ** -53  # float64 unit roundoff


def host_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
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


def host_counts(xs: np.ndarray, ys: np.ndarray, rows: np.ndarray, k: int, metric: str,
                chunk_bytes: int = 1 << 26) -> tuple[np.ndarray, np.ndarray]:
    """float64 counts for the given rows (O(len(rows)·N·d) time, O(chunk_bytes) memory).

    Euclidean rows from the Gram identity, then the undecided ones from coordinate differences
    (module docstring); Chebyshev rows from coordinate differences.
    """
    n = xs.shape[0]
    per = max(1, chunk_bytes // (8 * n * 6))  # a step holds six [r, N] float64 arrays
    nx = np.empty(len(rows), np.int64)
    ny = np.empty(len(rows), np.int64)
    sq = (np.einsum("nd,nd->n", xs, xs), np.einsum("nd,nd->n", ys, ys))
    for a in range(0, len(rows), per):
        r = rows[a:a + per]
        out = _host_block(xs, ys, r, k, metric, sq if metric == "euclidean" else None)
        if out[2] is not None:  # rows the Gram band leaves undecided: direct differences
            redo = np.flatnonzero(out[2])
            if redo.size:
                out[0][redo], out[1][redo], _ = _host_block(xs, ys, r[redo], k, metric, None)
        nx[a:a + len(r)], ny[a:a + len(r)] = out[0], out[1]
    return nx, ny


def _products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T; small products (the usual few undecided rows) without BLAS, whose worker threads
    can take tens of milliseconds to wake on a busy machine (any summation order keeps the
    rounding bound)."""
    if a.shape[0] * b.shape[0] * a.shape[1] > 1 << 24:
        return a @ b.T
    return np.einsum("rd,nd->rn", a, b)


def _host_block(xs, ys, r, k, metric, sq):
    """Counts of rows ``r`` in float64, from the Gram identity (``sq``: the squared norms;
    returns which rows its rounding band leaves undecided) or from coordinate differences
    (``sq`` None; the third result is None)."""
    diag = (np.arange(len(r)), r)
    if sq is None:
        dx, dy = host_distances(xs[r], xs, metric), host_distances(ys[r], ys, metric)
    else:
        dx = np.maximum(sq[0][r, None] + sq[0][None, :] - 2.0 * _products(xs[r], xs), 0.0)
        dy = np.maximum(sq[1][r, None] + sq[1][None, :] - 2.0 * _products(ys[r], ys), 0.0)
    dx[diag] = dy[diag] = 0.0  # point i itself: exactly 0
    joint = np.maximum(dx, dy)
    joint[diag] = np.inf  # excluded from the neighbours by index
    eps = np.partition(joint, k - 1, axis=1)[:, k - 1]
    self_in = (eps > 0).astype(np.int64)  # point i is below ε unless ε = 0
    nx = np.sum(dx < eps[:, None], axis=1) - self_in
    ny = np.sum(dy < eps[:, None], axis=1) - self_in
    if sq is None:
        return nx, ny, None
    sx, sy = sq[0][r], sq[1][r]
    delta = 10.0 * _U64 * 3.0 * (2 * max(xs.shape[1], ys.shape[1]) + 8)
    reach = eps * (1.0 + delta) + delta * np.maximum(sx, sy)
    tx = [(2 * d + 8) * _U64 * (s_ + np.square(np.sqrt(s_) + np.sqrt(reach))) * (1.0 + 1e-3)
          for d, s_ in ((xs.shape[1], sx), (ys.shape[1], sy))]
    t_eps = np.maximum(tx[0], tx[1])
    band = (np.sum(np.abs(dx - eps[:, None]) <= (tx[0] + t_eps)[:, None], axis=1)
            + np.sum(np.abs(dy - eps[:, None]) <= (tx[1] + t_eps)[:, None], axis=1))
    return nx, ny, band != 1
