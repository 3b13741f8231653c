"""Mutual-information estimators for deterministic networks, in bits.

Three estimators from the information-plane literature, as used by Zhang et al. (2022),
arXiv:2207.05756, all for a deterministic layer T = f(X) and class labels Y:

* ``"kde_upper"``: Kolchinsky & Tracey's pairwise-KL upper bound on the entropy of a
  Gaussian mixture with one component N(t_i, σ²I) per sample (Kolchinsky, Tracey & Wolpert
  2017; Saxe et al. 2018).
* ``"kde_lower"``: the Bhattacharyya lower bound: the same expression with 8σ² in place of
  2σ² in the exponent.
* ``"binning"``: every coordinate discretised as ``floor(t / bin_size)``; a sample's whole
  integer vector is one symbol; entropies from symbol frequencies.

With D_ij = ‖t_i − t_j‖² and s the exponent scale (2σ² for the upper, 8σ² for the lower
bound)::

    I(X;T) = ln N − (1/N) Σ_i ln Σ_j exp(−D_ij / s)
    I(T;Y) = Ĥ(T) − Σ_c p_c Ĥ(T | Y=c)
           = ln N − Σ_c p_c ln N_c − (1/N) Σ_i [ln Σ_j exp(−D_ij/s) − ln Σ_{j: y_j = y_i} exp(−D_ij/s)]

(the second line follows because p_c / N_c = 1/N; the Gaussian normalising constants and
H(T|X) cancel). Results are converted from nats to bits.

Implementation: one Gram-matrix pass per layer serves both KDE bounds and every class
term. The N × N matrix is never held: rows and columns are processed in blocks, only the
blocks on and above the diagonal are computed (the distance matrix is symmetric), and each
block contributes to the row sums of its row block and, transposed, of its column block.
Class-conditional sums come from one small matrix product of the kernel block with the
one-hot labels (masking, not recomputing). Binning is exact and compiled: rows are hashed
to 64 bits, sorted, and grouped; a compiled check compares every adjacent pair of equal
hash, so a hash collision can never merge two different symbols silently (if one occurs,
the computation falls back to an exact host-side ``np.unique``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "METHODS",
    "estimate_mi",
    "estimate_all",
    "measure_probes",
    "kde_mi",
    "binning_mi",
    "choose_block_size",
]

METHODS: tuple[str, ...] = ("kde_upper", "kde_lower", "binning")
_LOG2E = 1.0 / math.log(2.0)


# --------------------------------------------------------------------------------------
# Input validation (host side, before anything is traced)
# --------------------------------------------------------------------------------------


def _validate(activations: Any, labels: Any, num_classes: int | None, what: str = "activations"):
    """Checks shapes, dtypes and label range; returns (activations, labels, num_classes)."""
    a_shape = np.shape(activations)
    if len(a_shape) != 2:
        raise ValueError(
            f"{what} must be a 2-D array [N, D] (one flattened layer output per row); got shape "
            f"{a_shape}. Flatten each sample first, e.g. x.reshape(len(x), -1)."
        )
    n = a_shape[0]
    if n < 1 or a_shape[1] < 1:
        raise ValueError(f"{what} is empty (shape {a_shape}); pass at least one sample with at least one feature.")
    labels_np = np.asarray(labels)
    if labels_np.ndim != 1 or labels_np.shape[0] != n:
        raise ValueError(
            f"labels must be a 1-D array with one entry per row of {what}: got shape {labels_np.shape} "
            f"for {n} rows."
        )
    if not np.issubdtype(labels_np.dtype, np.integer):
        raise ValueError(f"labels must be integers (class indices); got dtype {labels_np.dtype}.")
    lo, hi = int(labels_np.min()), int(labels_np.max())
    if lo < 0:
        raise ValueError(f"labels must be non-negative class indices; found {lo}.")
    if num_classes is None:
        num_classes = hi + 1
    elif hi >= num_classes:
        raise ValueError(
            f"labels must be < num_classes={num_classes}; found {hi}. Pass the right num_classes "
            "(or leave it None to infer max(label) + 1)."
        )
    act = jnp.asarray(activations)
    if not jnp.issubdtype(act.dtype, jnp.floating):
        act = act.astype(jnp.float32)
    return act, jnp.asarray(labels_np, jnp.int32), int(num_classes)


def _raise_if_nonfinite(finite: Any, what: str) -> None:
    if not bool(finite):
        raise ValueError(
            f"{what} contain NaN or Inf, so no mutual information can be estimated. The model has "
            "probably diverged (check the training loss and learning rate) or the input holds "
            "non-finite values."
        )


# --------------------------------------------------------------------------------------
# KDE bounds
# --------------------------------------------------------------------------------------


def choose_block_size(n: int, d: int, *, max_block: int = 1024, memory_bytes: int | None = None) -> int:
    """Picks a row-block size for the blockwise KDE pass.

    The block is at most ``max_block`` rows, shrunk so that the per-step working set
    (two [B, D] row blocks and a few [B, B] kernel blocks, float32) stays under
    ``memory_bytes`` (default: 1 GiB), and balanced so padding wastes at most 7 rows.

    Args:
      n: number of samples.
      d: feature width.
      max_block: upper limit on the block size.
      memory_bytes: budget for one block step's buffers.

    Returns:
      The block size B (a multiple of 8, ≥ 8).
    """
    budget = (1 << 30) if memory_bytes is None else int(memory_bytes)
    b = max(8, min(int(max_block), n))
    while b > 8 and 4 * (2 * b * d + 6 * b * b) > budget:
        b //= 2
    num_blocks = -(-n // b)
    b = -(-n // num_blocks)
    return max(8, -(-b // 8) * 8)


@functools.partial(jax.jit, static_argnames=("num_classes", "block_size"))
def _kde_sums(t, labels, noise_var, *, num_classes: int, block_size: int):
    """Row sums Σ_j K_ij and class-restricted sums, for both KDE scales, blockwise.

    Returns an array [N, 4]: columns (all j, scale 2σ²), (all j, 8σ²), (same class, 2σ²),
    (same class, 8σ²); and a flag saying whether every activation was finite.
    """
    n, d = t.shape
    finite = jnp.all(jnp.isfinite(t))
    t = t.astype(jnp.float32)
    t = t - jnp.mean(t, axis=0, keepdims=True)  # distances are shift-invariant; centring limits rounding
    b = block_size
    nb = -(-n // b)
    pad = nb * b - n
    valid = jnp.concatenate([jnp.ones((n,), jnp.float32), jnp.zeros((pad,), jnp.float32)])
    t = jnp.pad(t, ((0, pad), (0, 0)))
    onehot = jax.nn.one_hot(jnp.pad(labels, (0, pad)), num_classes, dtype=jnp.float32)
    # H = [valid, one-hot · valid]: kernel block @ H gives (sum over all j, per-class sums).
    h = jnp.concatenate([valid[:, None], onehot * valid[:, None]], axis=1)
    sq = jnp.sum(t * t, axis=1)
    tb = t.reshape(nb, b, d)
    hb = h.reshape(nb, b, num_classes + 1)
    sqb = sq.reshape(nb, b)
    ii, jj = np.triu_indices(nb)
    pairs = jnp.asarray(np.stack([ii, jj], axis=1), jnp.int32)
    inv_lower = 1.0 / (8.0 * noise_var)
    eye = jnp.eye(b, dtype=bool)

    def step(acc, pair):
        i, j = pair[0], pair[1]
        ti, tj = tb[i], tb[j]
        g = jnp.dot(ti, tj.T, precision=jax.lax.Precision.HIGHEST)
        dist = jnp.maximum(sqb[i][:, None] + sqb[j][None, :] - 2.0 * g, 0.0)
        dist = jnp.where(eye & (i == j), 0.0, dist)  # exact zeros on the diagonal
        k_lower = jnp.exp(-dist * inv_lower)  # exp(−D / 8σ²)
        k_upper = jnp.square(jnp.square(k_lower))  # exp(−D / 2σ²) = (exp(−D / 8σ²))⁴
        kern = jnp.stack([k_upper, k_lower])  # [2, B, B]
        rows = jnp.einsum("sab,bc->sac", kern, hb[j])  # contributions to the rows of block i
        cols = jnp.einsum("sab,ac->sbc", kern, hb[i])  # transposed: to the rows of block j
        off_diag = (i != j).astype(jnp.float32)
        acc = acc.at[i].add(rows)
        acc = acc.at[j].add(cols * off_diag)
        return acc, None

    acc0 = jnp.zeros((nb, 2, b, num_classes + 1), jnp.float32)
    acc, _ = jax.lax.scan(step, acc0, pairs)
    acc = jnp.moveaxis(acc, 1, 2).reshape(nb * b, 2, num_classes + 1)[:n]  # [N, 2, 1 + C]
    total = acc[:, :, 0]  # [N, 2]
    same = jnp.take_along_axis(acc[:, :, 1:], labels[:, None, None].astype(jnp.int32).repeat(2, 1), axis=2)[..., 0]
    return jnp.concatenate([total, same], axis=1), finite, jnp.max(sq)


# Distances from the Gram identity D = |a|² + |b|² − 2 a·b carry an absolute float32 rounding
# error of about eps·(|a|² + |b|²) (data centred). Relative to the kernel scale 2σ² this is the
# relative error of the kernel values; above this bound the float64 host path is used instead.
_F32_EPS = float(np.finfo(np.float32).eps)
MAX_KERNEL_ROUNDING = 1e-2


def _kde_sums_float64(t: np.ndarray, labels: np.ndarray, noise_var: float, num_classes: int,
                      block_size: int) -> np.ndarray:
    """The same row sums as :func:`_kde_sums`, in float64 on the host (rows in blocks, O(N·B) memory)."""
    t = np.asarray(t, np.float64)
    t = t - t.mean(axis=0, keepdims=True)
    n = t.shape[0]
    sq = np.einsum("nd,nd->n", t, t)
    onehot = np.zeros((n, num_classes))
    onehot[np.arange(n), labels] = 1.0
    out = np.empty((n, 4))
    for a in range(0, n, block_size):
        rows = slice(a, min(n, a + block_size))
        dist = np.maximum(sq[rows, None] + sq[None, :] - 2.0 * (t[rows] @ t.T), 0.0)
        dist[np.arange(dist.shape[0]), np.arange(a, a + dist.shape[0])] = 0.0
        for k, scale in enumerate((2.0 * noise_var, 8.0 * noise_var)):
            kern = np.exp(-dist / scale)
            out[rows, k] = kern.sum(axis=1)
            out[rows, 2 + k] = (kern @ onehot)[np.arange(dist.shape[0]), labels[rows]]
    return out


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _kde_from_sums(sums, labels, *, num_classes: int):
    """Turns the row sums into I(X;T) and I(T;Y) for both bounds, in bits: arrays [2] (upper, lower)."""
    n = sums.shape[0]
    log_total = jnp.log(sums[:, :2])
    log_same = jnp.log(sums[:, 2:])
    counts = jnp.bincount(labels, length=num_classes).astype(jnp.float32)
    p = counts / n
    h_y_term = jnp.sum(jnp.where(counts > 0, p * jnp.log(jnp.maximum(counts, 1.0)), 0.0))
    i_xt = jnp.log(n) - jnp.mean(log_total, axis=0)
    i_ty = jnp.log(n) - h_y_term - jnp.mean(log_total - log_same, axis=0)
    return i_xt * _LOG2E, i_ty * _LOG2E


def kde_mi(activations, labels, *, num_classes: int | None = None, noise_var: float = 0.1,
           block_size: int | None = None) -> dict[str, dict[str, float]]:
    """KDE upper and lower bounds on I(X;T) and I(T;Y), in bits, from one distance pass.

    See the module docstring for the formulas (Kolchinsky & Tracey 2017; Saxe et al. 2018).

    Args:
      activations: [N, D] float array, one flattened layer output per sample.
      labels: [N] integer class labels.
      num_classes: number of classes (default: max(labels) + 1). Classes absent from the
        sample contribute nothing.
      noise_var: σ², the variance of the Gaussian noise added to T (0.1 in the paper).
      block_size: rows per block (default: :func:`choose_block_size`).

    Precision: distances come from the Gram identity in float32, whose rounding error is about
    ``eps·(|t_i|² + |t_j|²)`` for centred data. When that could exceed 1 % of the kernel scale
    2σ² (``MAX_KERNEL_ROUNDING``; squared norms above ~8,000 at σ² = 0.1), the layer is
    recomputed in float64 on the host instead, so results never silently lose precision.

    Returns:
      ``{"kde_upper": {"I_XT": float, "I_TY": float}, "kde_lower": {...}}``.
    """
    if not noise_var > 0:
        raise ValueError(f"noise_var must be > 0 (the KDE kernel variance σ²); got {noise_var}.")
    t, y, c = _validate(activations, labels, num_classes)
    b = block_size or choose_block_size(t.shape[0], t.shape[1])
    sums, finite, max_sq = _kde_sums(t, y, jnp.float32(noise_var), num_classes=c, block_size=int(b))
    _raise_if_nonfinite(finite, "activations")
    if 2.0 * _F32_EPS * float(max_sq) / (2.0 * noise_var) > MAX_KERNEL_ROUNDING:
        # Activations so large relative to σ that float32 distances would be off by more than
        # 1 % of the kernel scale: redo this layer in float64 on the host (exact, slower).
        sums = jnp.asarray(_kde_sums_float64(np.asarray(t), np.asarray(y), float(noise_var), c, int(b)),
                           jnp.float32)
    i_xt, i_ty = jax.device_get(_kde_from_sums(sums, y, num_classes=c))
    return {
        "kde_upper": {"I_XT": float(i_xt[0]), "I_TY": float(i_ty[0])},
        "kde_lower": {"I_XT": float(i_xt[1]), "I_TY": float(i_ty[1])},
    }


# --------------------------------------------------------------------------------------
# Binning
# --------------------------------------------------------------------------------------


def _fmix32(x):
    """MurmurHash3's 32-bit finaliser: a bijective avalanche mix of uint32 values."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _row_hashes(sym):
    """Two independent 32-bit hashes of each integer row (a 64-bit row fingerprint)."""
    n, d = sym.shape
    u = sym.astype(jnp.uint32)
    pos = jnp.arange(d, dtype=jnp.uint32)
    out = []
    for seed in (0x9E3779B9, 0x7F4A7C15):
        salt = _fmix32(pos * jnp.uint32(0x27D4EB2F) + jnp.uint32(seed))
        out.append(jnp.sum(_fmix32(u ^ salt[None, :]), axis=1, dtype=jnp.uint32))
    return out


def _group_log_sizes(keys):
    """For rows sorted by ``keys``: ln(size of each row's group), rows in sorted order."""
    n = keys[0].shape[0]
    differs = jnp.zeros((n - 1,), bool)
    for k in keys:
        differs = differs | (k[1:] != k[:-1])
    new = jnp.concatenate([jnp.ones((1,), bool), differs])
    gid = jnp.cumsum(new) - 1
    counts = jax.ops.segment_sum(jnp.ones((n,), jnp.float32), gid, num_segments=n)
    return jnp.log(counts[gid])


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


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _binning_core(t, labels, bin_size, *, num_classes: int):
    n = t.shape[0]
    finite = jnp.all(jnp.isfinite(t))
    sym = _symbols(t, bin_size)
    h1, h2 = _row_hashes(sym)
    idx = jnp.arange(n, dtype=jnp.int32)
    # H(T): sort by the 64-bit fingerprint, group equal neighbours.
    s1, s2, perm = jax.lax.sort((h1, h2, idx), num_keys=2)
    log_n_t = _group_log_sizes((s1, s2))
    # Exactness check: neighbours with equal fingerprints must hold equal symbols.
    same_hash = (s1[1:] == s1[:-1]) & (s2[1:] == s2[:-1])
    rows = sym[perm]
    rows_differ = jnp.any(rows[1:] != rows[:-1], axis=1)
    collision = jnp.any(same_hash & rows_differ)
    # H(T|Y): sort by (label, fingerprint), group within each class.
    ys, c1, c2, _ = jax.lax.sort((labels, h1, h2, idx), num_keys=3)
    log_n_ty = _group_log_sizes((ys, c1, c2))
    class_counts = jnp.bincount(labels, length=num_classes).astype(jnp.float32)
    log_n_c = jnp.log(class_counts[ys])
    h_t = jnp.log(n) - jnp.mean(log_n_t)  # −Σ_g (n_g/N) ln(n_g/N)
    h_t_given_y = jnp.mean(log_n_c - log_n_ty)  # −(1/N) Σ_i ln(n_g(i) / N_y(i))
    # H(T|Y) ≤ H(T) holds exactly; clamp the rounding of the float sums (I ≥ 0 by definition).
    return h_t * _LOG2E, jnp.maximum(h_t - h_t_given_y, 0.0) * _LOG2E, collision, finite


def _binning_numpy(t: np.ndarray, labels: np.ndarray, bin_size: float) -> tuple[float, float]:
    """Exact host-side fallback (used only after a detected 64-bit hash collision)."""

    def entropy(sym):
        _, counts = np.unique(sym, axis=0, return_counts=True)
        p = counts / counts.sum()
        return float(-(p * np.log2(p)).sum())

    t = np.asarray(t)
    sym = np.floor(t / t.dtype.type(bin_size))
    sym[sym == 0] = 0.0  # whole floats, −0 folded into +0
    h_t = entropy(sym)
    h_ty = 0.0
    for c in np.unique(labels):
        m = labels == c
        h_ty += m.mean() * entropy(sym[m])
    return h_t, h_t - h_ty


def binning_mi(activations, labels, *, num_classes: int | None = None, bin_size: float = 0.5) -> dict[str, float]:
    """Binning estimate of I(X;T) = H(T) and I(T;Y) = H(T) − H(T|Y), in bits.

    Each coordinate is discretised as ``floor(t / bin_size)`` and a sample's whole integer
    vector is one symbol (Shwartz-Ziv & Tishby 2017; Saxe et al. 2018). Exact: symbols are
    grouped by sorting 64-bit row fingerprints, and every pair of neighbours with equal
    fingerprints is compared element by element, so a collision is detected (and the exact
    ``np.unique`` path is taken) instead of merging two different symbols.

    Args:
      activations: [N, D] float array.
      labels: [N] integer class labels.
      num_classes: number of classes (default: max(labels) + 1).
      bin_size: bin width (0.5 in the paper).

    Returns:
      ``{"I_XT": float, "I_TY": float}`` in bits.
    """
    if not bin_size > 0:
        raise ValueError(f"bin_size must be > 0; got {bin_size}.")
    t, y, c = _validate(activations, labels, num_classes)
    i_xt, i_ty, collision, finite = jax.device_get(
        _binning_core(t, y, jnp.asarray(bin_size, t.dtype), num_classes=c)
    )
    _raise_if_nonfinite(finite, "activations")
    if collision:  # astronomically rare; never silently wrong
        i_xt, i_ty = _binning_numpy(np.asarray(t), np.asarray(y), bin_size)
    return {"I_XT": float(i_xt), "I_TY": float(i_ty)}


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def estimate_all(activations, labels, *, methods: Sequence[str] = METHODS, num_classes: int | None = None,
                 noise_var: float = 0.1, bin_size: float = 0.5,
                 block_size: int | None = None) -> dict[str, dict[str, float]]:
    """Every requested estimator on one layer, sharing the KDE distance pass.

    Args:
      activations: [N, D] float array (one flattened layer output per sample).
      labels: [N] integer labels.
      methods: subset of :data:`METHODS`.
      num_classes: number of classes (default: max(labels) + 1).
      noise_var: KDE σ².
      bin_size: binning width.
      block_size: KDE row-block size (default: automatic).

    Returns:
      ``{method: {"I_XT": float, "I_TY": float}}`` in bits.
    """
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown estimator(s) {unknown or methods}; choose from {list(METHODS)}.")
    out: dict[str, dict[str, float]] = {}
    if "kde_upper" in methods or "kde_lower" in methods:
        kde = kde_mi(activations, labels, num_classes=num_classes, noise_var=noise_var, block_size=block_size)
        out.update({m: kde[m] for m in ("kde_upper", "kde_lower") if m in methods})
    if "binning" in methods:
        out["binning"] = binning_mi(activations, labels, num_classes=num_classes, bin_size=bin_size)
    return {m: out[m] for m in methods}


def estimate_mi(activations, labels, *, method: str, num_classes: int | None = None, noise_var: float = 0.1,
                bin_size: float = 0.5) -> dict[str, float]:
    """Estimates I(X;T) and I(T;Y) in bits for one layer with one estimator.

    Args:
      activations: [N, D] float array, one flattened layer output per sample.
      labels: [N] integer class labels (the true labels, also for adversarial inputs).
      method: ``"kde_upper"``, ``"kde_lower"`` or ``"binning"``.
      num_classes: number of classes (default: max(labels) + 1).
      noise_var: KDE kernel variance σ² (0.1 in the paper).
      bin_size: binning width (0.5 in the paper).

    Returns:
      ``{"I_XT": float, "I_TY": float}``, in bits.
    """
    if method not in METHODS:
        raise ValueError(f"unknown estimator method {method!r}; choose one of {list(METHODS)}.")
    return estimate_all(activations, labels, methods=(method,), num_classes=num_classes,
                        noise_var=noise_var, bin_size=bin_size)[method]


def measure_probes(probes: Mapping[str, Any], labels, *, methods: Sequence[str] = METHODS,
                   num_classes: int | None = None, noise_var: float = 0.1,
                   bin_size: float = 0.5) -> dict[str, dict[str, list[float]]]:
    """All estimators on every probe of a model.

    Args:
      probes: ``{probe name: [N, ...] activations}`` (flattened per sample if needed).
      labels: [N] integer labels.
      methods, num_classes, noise_var, bin_size: as in :func:`estimate_all`.

    Returns:
      ``{method: {"I_XT": [one float per probe, in the order of ``probes``], "I_TY": [...]}}``.
    """
    if not probes:
        raise ValueError("probes is empty; pass a mapping of probe name -> activations.")
    out = {m: {"I_XT": [], "I_TY": []} for m in methods}
    for name, act in probes.items():
        act = jnp.reshape(act, (np.shape(act)[0], -1)) if np.ndim(act) != 2 else act
        try:
            res = estimate_all(act, labels, methods=methods, num_classes=num_classes,
                               noise_var=noise_var, bin_size=bin_size)
        except ValueError as e:
            raise ValueError(f"probe {name!r}: {e}") from None
        for m in methods:
            out[m]["I_XT"].append(res[m]["I_XT"])
            out[m]["I_TY"].append(res[m]["I_TY"])
    return out
