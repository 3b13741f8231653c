"""Binning estimate of I(X;T) = H(T) and I(T;Y) = H(T) − H(T|Y), exact and compiled.

Every coordinate is discretised as ``floor(t / bin_size)`` and a sample's whole vector of
bin indices is one symbol g; with n_g samples per symbol and n_cg per (class, symbol), in
nats::

    H(T)   = ln N − (1/N) Σ_g n_g ln n_g
    H(T|Y) = (1/N) [Σ_c N_c ln N_c − Σ_(c,g) n_cg ln n_cg]

Symbols are grouped without a host round trip: rows are hashed to 64 bits, sorted and
grouped, and a compiled check compares every adjacent pair of equal fingerprint, so a hash
collision can never merge two different symbols silently (if one occurs, the exact host
``np.unique`` path is taken). Layers wider than :data:`SAMPLE_COLUMNS` units are first
fingerprinted on about that many bins spread over the layer: when those fingerprints already
differ between all rows, every row is its own symbol (the common case at the log₂ N
ceiling) and the entropies follow from the weights alone.

References: Shwartz-Ziv & Tishby (2017), "Opening the black box of deep neural networks via
information"; Saxe et al. (2018).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi.estimators.bootstrap import unit_weights
from jaxmi.estimators.validation import all_finite, check_bin_size, raise_if_nonfinite, validate

__all__ = ["binning_mi", "binning_compute", "SAMPLE_COLUMNS", "SAMPLE_RUN", "GROUPED_SCATTER_LIMIT",
           "sampled_columns", "row_hashes", "binning_core", "binning_grouped_core", "binning_numpy"]

_LOG2E = 1.0 / math.log(2.0)
SAMPLE_COLUMNS = 256  # about this many bins, spread over the layer, are fingerprinted first
SAMPLE_RUN = 8  # ... in runs of this many adjacent columns (32 bytes), so only those are read
GROUPED_SCATTER_LIMIT = 1 << 24  # largest (N·C·R) (group, class) count table scattered


def _fmix32(x):
    """MurmurHash3's 32-bit finaliser: a bijective avalanche mix of uint32 values."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def sampled_columns(d: int) -> np.ndarray:
    """The column indices binning fingerprints first (for d > SAMPLE_COLUMNS): SAMPLE_COLUMNS /
    SAMPLE_RUN runs of SAMPLE_RUN adjacent columns, their starts evenly spread from the first
    column to the last."""
    runs = SAMPLE_COLUMNS // SAMPLE_RUN
    starts = (np.arange(runs) * (d - SAMPLE_RUN)) // (runs - 1)
    return (starts[:, None] + np.arange(SAMPLE_RUN)[None, :]).reshape(-1)


def _sample_columns(t2):
    """``t2[:, sampled_columns(d)]`` as static slices, concatenated, so that only those runs
    are read and the copy fuses with the hashing (rather than a strided reshape or a gather)."""
    starts = sampled_columns(t2.shape[1])[::SAMPLE_RUN]
    return jnp.concatenate([t2[:, int(s):int(s) + SAMPLE_RUN] for s in starts], axis=1)


def _all_distinct(h1):
    """Whether the 32-bit hashes h1 are pairwise different (one single-key sort), which
    implies distinct rows. Ties in h1 alone — real duplicates, or by chance, with probability
    about N²/2³³ — send the caller to the grouped path, which compares 64-bit fingerprints
    and, on equal ones, the rows themselves."""
    s = jax.lax.sort(h1)
    return jnp.all(s[1:] != s[:-1])


def row_hashes(sym):
    """Two independent 32-bit hashes of each integer row (a 64-bit row fingerprint)."""
    n, d = sym.shape
    u = sym.astype(jnp.uint32)
    pos = jnp.arange(d, dtype=jnp.uint32)
    out = []
    for seed in (0x9E3779B9, 0x7F4A7C15):
        salt = _fmix32(pos * jnp.uint32(0x27D4EB2F) + jnp.uint32(seed))
        out.append(jnp.sum(_fmix32(u ^ salt[None, :]), axis=1, dtype=jnp.uint32))
    return out


def _group_ids(keys):
    """For rows sorted by ``keys``: the index of each row's group (0, 1, ...), in sorted order."""
    n = keys[0].shape[0]
    differs = jnp.zeros((n - 1,), bool)
    for k in keys:
        differs = differs | (k[1:] != k[:-1])
    return jnp.cumsum(jnp.concatenate([jnp.ones((1,), bool), differs])) - 1


def _symbols(t, bin_size):
    """The bin index floor(t / bin_size) of every coordinate, as the raw bits of the float.

    Floored floats are whole numbers; two are equal exactly when their bit patterns are (−0
    is folded into +0), so no integer cast, and no overflow for |t / bin_size| ≥ 2³¹.
    """
    q = jnp.floor(t / bin_size)
    q = jnp.where(q == 0, jnp.zeros((), q.dtype), q)  # −0.0 → +0.0
    if q.dtype == jnp.float64:
        return jax.lax.bitcast_convert_type(q, jnp.uint32).reshape(q.shape[0], -1)  # [N, 2D]
    return jax.lax.bitcast_convert_type(q.astype(jnp.float32), jnp.uint32)


def _xlogx(v):
    return jnp.where(v > 0, v * jnp.log(jnp.where(v > 0, v, 1.0)), 0.0)


def _binned_information(n_t, n_ty, n_c, n):
    """H(T) and H(T) − H(T|Y) in bits from (weighted) symbol, (class, symbol) and class counts
    (the formulas of the module docstring)."""
    h_t = jnp.log(n) - jnp.sum(_xlogx(n_t), axis=0) / n
    h_t_given_y = (jnp.sum(_xlogx(n_c), axis=0) - jnp.sum(_xlogx(n_ty), axis=0)) / n
    # H(T) ≥ 0 and H(T|Y) ≤ H(T) hold exactly; clamp the rounding of the float sums (I ≥ 0).
    h_t = jnp.maximum(h_t, 0.0)
    return h_t * _LOG2E, jnp.maximum(h_t - h_t_given_y, 0.0) * _LOG2E


@functools.partial(jax.jit, static_argnames=("num_classes",))
def binning_core(t, labels, weights, bin_size, *, num_classes: int):
    """Binning's fast path, valid when every row is its own symbol.

    If the 32-bit hashes of a few hundred bins spread over the layer (SAMPLE_COLUMNS, read in
    runs of SAMPLE_RUN adjacent columns; the whole row when narrower) differ between all
    rows, every row is its own symbol and H(T), H(T|Y) follow from the weights alone (one
    single-key sort). Otherwise the caller runs :func:`binning_grouped_core`; the two are
    separate programs so that this one never reads the rest of a wide layer (benchmarks/
    README.md). A finite sum implies finite entries (NaN and ±Inf propagate); only a
    non-finite one — possibly a mere overflow — needs the elementwise check.

    Returns:
      ``(I_XT [R], I_TY [R], all rows distinct, sum of t finite, fingerprints)``: the
      whole-row fingerprints for narrow layers, None for wide ones.
    """
    n = t.shape[0]
    t2 = t.reshape(n, -1)
    wide = t2.shape[1] > SAMPLE_COLUMNS
    hashes = tuple(row_hashes(_symbols(_sample_columns(t2) if wide else t2, bin_size)))
    distinct = _all_distinct(hashes[0])
    hashes = None if wide else hashes  # whole-row fingerprints (narrow layers) serve the grouped path
    w = weights.astype(jnp.float32).T  # [N, R]
    n_c = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32).T @ w  # [C, R]
    i_xt, i_ty = _binned_information(w, w, n_c, n)  # each sample its own symbol: n_t = n_ty = w
    return i_xt, i_ty, distinct, jnp.isfinite(jnp.sum(t2, dtype=jnp.float32)), hashes


@functools.partial(jax.jit, static_argnames=("num_classes", "rehash"))
def binning_grouped_core(t, labels, weights, bin_size, hashes, *, num_classes: int, rehash: bool):
    """Binning when some rows may share a symbol: (I(X;T), I(T;Y), collision detected).

    ``hashes``: the whole-row fingerprints from :func:`binning_core` (narrow layers), or,
    with ``rehash`` (wide layers, whose fast path hashed sampled columns only), ignored.
    """
    w = weights.astype(jnp.float32).T  # [N, R]
    n_c = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32).T @ w  # [C, R]
    if rehash:
        hashes = row_hashes(_symbols(t, bin_size))
    return _binning_grouped(t, labels, w, n_c, bin_size, *hashes)


def _binning_grouped(t, labels, w, n_c, bin_size, h1, h2):
    """Binned information when some rows may share a symbol: sort by fingerprint, group."""
    n = t.shape[0]
    idx = jnp.arange(n, dtype=jnp.int32)
    # H(T): sort by the 64-bit fingerprint, group equal neighbours.
    s1, s2, perm = jax.lax.sort((h1, h2, idx), num_keys=2)
    gid_t = _group_ids((s1, s2))
    # Exactness check: neighbours with equal fingerprints must hold equal symbols.
    same_hash = (s1[1:] == s1[:-1]) & (s2[1:] == s2[:-1])

    def compare_rows():  # only when some neighbours share a fingerprint (skips the [N, D] gather)
        rows = _symbols(t[perm], bin_size)  # recomputed here so sym need not be materialised
        return jnp.any(same_hash & jnp.any(rows[1:] != rows[:-1], axis=1))

    collision = jax.lax.cond(jnp.any(same_hash), compare_rows, lambda: jnp.zeros((), bool))
    w_sorted = w[perm]
    n_t = jax.ops.segment_sum(w_sorted, gid_t, num_segments=n)  # [groups ≤ N, R]
    # H(T|Y): counts per (symbol group, class), all classes at once: scattered to the index
    # group·C + class when that table is small, else by sorting the pairs.
    c, r = n_c.shape
    if n * c * r <= GROUPED_SCATTER_LIMIT:
        n_ty = jax.ops.segment_sum(w_sorted, gid_t.astype(jnp.int32) * c + labels[perm], num_segments=n * c)
    else:
        ys, gs, perm_y = jax.lax.sort((labels[perm], gid_t.astype(jnp.int32), perm), num_keys=2)
        n_ty = jax.ops.segment_sum(w[perm_y], _group_ids((ys, gs)), num_segments=n)
    return _binned_information(n_t, n_ty, n_c, n) + (collision,)


def binning_numpy(t: np.ndarray, labels: np.ndarray, bin_size: float,
                   weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact host-side fallback (used only after a detected 64-bit hash collision): np.unique."""
    t = np.asarray(t)
    labels = np.asarray(labels)
    weights = unit_weights(len(t)) if weights is None else np.asarray(weights, np.float64)
    sym = np.floor(t / t.dtype.type(bin_size))
    sym[sym == 0] = 0.0  # whole floats, −0 folded into +0
    _, inv = np.unique(sym, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    _, inv_ty = np.unique(np.stack([labels, inv], axis=1), axis=0, return_inverse=True)
    inv_ty = inv_ty.reshape(-1)

    def xlogx_sum(groups, w):
        v = np.bincount(groups, weights=w)
        v = v[v > 0]
        return float(np.sum(v * np.log(v)))

    n = len(t)
    i_xt, i_ty = [], []
    for w in weights:
        h_t = math.log(n) - xlogx_sum(inv, w) / n
        h_ty = (xlogx_sum(labels, w) - xlogx_sum(inv_ty, w)) / n
        i_xt.append(h_t * _LOG2E)
        i_ty.append(max(h_t - h_ty, 0.0) * _LOG2E)
    return np.asarray(i_xt), np.asarray(i_ty)


def binning_compute(t, y, c, weights, *, bin_size: float = 0.5, **_) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Binned I(X;T), I(T;Y) for the full sample and every resample (weighted symbol counts).

    Args:
      t: [N, D] checked activations (:func:`jaxmi.estimators.validation.validate`).
      y: [N] int32 labels.
      c: number of classes C.
      weights: [R, N] point multiplicities (row 0: the full sample).
      bin_size: bin width > 0.

    Returns:
      ``{"binning": (I_XT [R], I_TY [R])}`` in bits.
    """
    weights, bin_size_ = jnp.asarray(weights, jnp.float32), jnp.asarray(bin_size, t.dtype)
    *head, hashes = binning_core(t, y, weights, bin_size_, num_classes=c)
    i_xt, i_ty, distinct, finite = jax.device_get(head)
    raise_if_nonfinite(finite or all_finite(t), "activations")
    collision = False
    if not distinct:
        i_xt, i_ty, collision = jax.device_get(binning_grouped_core(
            t, y, weights, bin_size_, hashes, num_classes=c, rehash=t.shape[1] > SAMPLE_COLUMNS))
    if collision:  # astronomically rare; never silently wrong
        i_xt, i_ty = binning_numpy(np.asarray(t), np.asarray(y), bin_size, np.asarray(weights))
    return {"binning": (np.asarray(i_xt), np.asarray(i_ty))}


def binning_mi(activations, labels, *, num_classes: int | None = None, bin_size: float = 0.5) -> dict[str, float]:
    """Binning estimate of I(X;T) = H(T) and I(T;Y) = H(T) − H(T|Y), in bits.

    Each coordinate is discretised as ``floor(t / bin_size)`` and a sample's whole integer
    vector is one symbol; the entropies are those of the symbol frequencies (module
    docstring). Exact: symbols are grouped by sorting 64-bit row fingerprints, and every pair
    of neighbours with equal fingerprints is compared element by element, so a collision is
    detected (and the exact ``np.unique`` path is taken) instead of merging two symbols.

    Args:
      activations: [N, D] float array.
      labels: [N] integer class labels.
      num_classes: number of classes (default: max(labels) + 1).
      bin_size: bin width (0.5 in the paper).

    Returns:
      ``{"I_XT": float, "I_TY": float}`` in bits.

    References:
      Shwartz-Ziv & Tishby (2017); Saxe et al. (2018).
    """
    check_bin_size(bin_size)
    t, y, c = validate(activations, labels, num_classes)
    i_xt, i_ty = binning_compute(t, y, c, unit_weights(t.shape[0]), bin_size=bin_size)["binning"]
    return {"I_XT": float(i_xt[0]), "I_TY": float(i_ty[0])}
