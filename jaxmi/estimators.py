"""Mutual-information estimators for deterministic networks, in bits.

Four estimators from the information-plane literature, for a deterministic layer T = f(X)
and class labels Y. The first three are the ones Zhang et al. (2022), arXiv:2207.05756, use:

* ``"kde_upper"``: Kolchinsky & Tracey's pairwise-KL upper bound on the entropy of a
  Gaussian mixture with one component N(t_i, σ²I) per sample (Kolchinsky, Tracey & Wolpert
  2017; Saxe et al. 2018).
* ``"kde_lower"``: the Bhattacharyya lower bound: the same expression with 8σ² in place of
  2σ² in the exponent.
* ``"binning"``: every coordinate discretised as ``floor(t / bin_size)``; a sample's whole
  integer vector is one symbol; entropies from symbol frequencies.
* ``"renyi"``: the matrix-based Rényi α-entropy functional (Giraldo, Rao & Príncipe 2014),
  as used for DNN information planes by Yu et al. (2019) and Wickstrøm et al. (2019); see
  :func:`renyi_mi`. Not in :data:`METHODS` (the paper's default set): ask for it by name.

With D_ij = ‖t_i − t_j‖² and s the exponent scale (2σ² for the upper, 8σ² for the lower
bound)::

    I(X;T) = ln N − (1/N) Σ_i ln Σ_j exp(−D_ij / s)
    I(T;Y) = Ĥ(T) − Σ_c p_c Ĥ(T | Y=c)
           = ln N − Σ_c p_c ln N_c − (1/N) Σ_i [ln Σ_j exp(−D_ij/s) − ln Σ_{j: y_j = y_i} exp(−D_ij/s)]

(the second line follows because p_c / N_c = 1/N; the Gaussian normalising constants and
H(T|X) cancel). Results are converted from nats to bits.

Implementation: one Gram-matrix pass per layer serves both KDE bounds and every class
term. The N × N matrix is never held: rows and columns are processed in blocks of B rows
(chosen from the free memory, :func:`choose_block_size`), only the blocks on and above the
diagonal are computed (the distance matrix is symmetric), and each block contributes to the
row sums of its row block and, transposed, of its column block; memory is O(N·B + B²).
No log-sum-exp shift is needed: every row sum contains its own diagonal term exp(0) = 1, so
sums lie in [1, N] and never under- or overflow. Class-conditional sums come from one small
matrix product of the kernel block with the one-hot labels (masking, not recomputing). With
several local devices, the upper-triangle block pairs are split across a one-axis ``"data"``
mesh with :func:`jax.shard_map` and the partial row sums are added with ``psum``.

Binning is exact and compiled: rows are hashed to 64 bits, sorted, and grouped; a compiled
check compares every adjacent pair of equal hash, so a hash collision can never merge two
different symbols silently (if one occurs, the computation falls back to an exact host-side
``np.unique``). Layers wider than 256 units are first fingerprinted on every k-th bin only
(about 256 of them, spread over the layer): when those fingerprints already differ between
all rows, every row is its own symbol and the grouping is exact without reading the rest of
the layer (the common case at the log₂ N ceiling); otherwise whole rows are hashed as above.

Error bars (:func:`estimate_all` with ``bootstrap=R``): the N points are resampled with
replacement R times; a resample is a vector of multiplicities w (multinomial counts summing
to N), so a KDE row sum on the resample is Σ_j w_j K_ij and the mean over rows is weighted by
w_i. All R resamples therefore come from the *same* single Gram pass: the kernel block is
multiplied by the matrix [w_r ⊙ (1, one-hot)]_r of all resamples at once. Binning uses
weighted group counts of the same sorted groups. See :func:`estimate_all`.

Pluggable: :func:`register_estimator` adds an estimator under a name usable wherever a
method name is accepted (:func:`estimate_all`, :func:`estimate_probes`, :func:`measure_probes`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxmi import parallel

__all__ = [
    "METHODS",
    "available_methods",
    "register_estimator",
    "unregister_estimator",
    "estimate_mi",
    "estimate_all",
    "estimate_probes",
    "measure_probes",
    "bootstrap_weights",
    "kde_mi",
    "binning_mi",
    "renyi_mi",
    "choose_block_size",
    "available_memory_bytes",
]

#: The paper's three estimators, the default of every entry point.
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


@jax.jit
def _all_finite(t):
    """Elementwise finiteness check, run only when a cheaper fused sum was not finite."""
    return jnp.all(jnp.isfinite(t))


def _flatten(x):
    return jnp.reshape(x, (np.shape(x)[0], -1)) if np.ndim(x) != 2 else x


def _ones_weights(n: int) -> np.ndarray:
    return np.ones((1, n), np.float32)


# --------------------------------------------------------------------------------------
# Memory and block size
# --------------------------------------------------------------------------------------


def available_memory_bytes(device: jax.Device | None = None) -> int:
    """Free memory of ``device`` (default: the first local device), in bytes.

    Accelerators: ``bytes_limit − bytes_in_use`` from ``device.memory_stats()``. CPU (or when
    the backend gives no statistics): the host's ``MemAvailable`` from ``/proc/meminfo``,
    else ``os.sysconf`` available pages, else 4 GiB.
    """
    device = device if device is not None else jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 (backends without statistics)
        stats = None
    if stats and "bytes_limit" in stats:
        return max(0, int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def choose_block_size(n: int, d: int, *, columns: int = 11, max_block: int | None = None,
                      memory_bytes: int | None = None, device: jax.Device | None = None) -> int:
    """Picks the row-block size B of the blockwise KDE pass from the free memory.

    One scan step holds two [B, D] row blocks, a handful of [B, B] kernel blocks and four
    [B, columns] products (float32), about ``4·(2·B·D + 8·B² + 4·B·columns)`` bytes. The
    block is the largest power-of-two fraction of ``max_block`` whose step fits in
    ``memory_bytes`` (default: a quarter of :func:`available_memory_bytes` after the
    O(N·D + N·columns) buffers of the whole pass), then balanced so the last block wastes
    at most 7 padding rows.

    Args:
      n: number of samples.
      d: feature width.
      columns: columns of the row-sum matrix (1 + classes, times 1 + bootstrap resamples).
      max_block: upper limit on B (default on CPU 256 for D < 64, else 512; 4096 on
        accelerators, where larger matrix products run closer to peak).
      memory_bytes: per-step budget in bytes; overrides the automatic choice.
      device: the device whose memory counts (default: the first local device).

    Returns:
      The block size B (a multiple of 8, ≥ 8).
    """
    device = device if device is not None else jax.local_devices()[0]
    if max_block is None:
        # CPU: blocks whose [B, B] kernel tiles stay cache-sized (measured on a 2-core EPYC at
        # N = 5,000: B = 256 fastest for D = 10, B = 512 for D ≥ 120, both ~1.5-2× faster than
        # 1,024). Accelerators: large tiles keep the matrix units busy.
        max_block = (256 if d < 64 else 512) if device.platform == "cpu" else 4096
    if memory_bytes is None:
        fixed = 4 * (n * d + 3 * n * columns)  # the centred, padded copy + accumulators
        memory_bytes = max(64 << 20, (available_memory_bytes(device) - fixed) // 4)
    budget = int(memory_bytes)
    b = max(8, min(int(max_block), n))
    while b > 8 and 4 * (2 * b * d + 8 * b * b + 4 * b * columns) > budget:
        b //= 2
    num_blocks = -(-n // b)
    b = -(-n // num_blocks)
    return max(8, -(-b // 8) * 8)


def _kde_mesh(devices):
    """The mesh the KDE pass is split over: all local devices by default, None for one device."""
    devices = list(jax.local_devices() if devices is None else devices)
    if len(devices) <= 1:
        return None
    return parallel.make_mesh(devices=devices)


# --------------------------------------------------------------------------------------
# KDE bounds
# --------------------------------------------------------------------------------------


def _kde_columns(labels, weights, num_classes: int):
    """The row-sum columns H [N, R·(1 + C)]: for each resample r, (w_r, w_r ⊙ one-hot)."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    base = jnp.concatenate([jnp.ones((labels.shape[0], 1), jnp.float32), onehot], axis=1)  # [N, 1 + C]
    h = weights.astype(jnp.float32)[:, :, None] * base[None]  # [R, N, 1 + C]
    return jnp.moveaxis(h, 0, 1).reshape(labels.shape[0], -1)


@functools.partial(jax.jit, static_argnames=("num_classes", "block_size", "mesh"))
def _kde_sums(t, labels, weights, noise_var, *, num_classes: int, block_size: int, mesh=None):
    """Weighted kernel row sums Σ_j H_jk exp(−D_ij / s) for both scales s, blockwise.

    ``H = _kde_columns(labels, weights)``. Returns the sums [N, 2, K] (scale 2σ², then 8σ²),
    whether every activation was finite, and max ‖t_i − mean‖².
    """
    n, d = t.shape
    t = t.astype(jnp.float32)
    h = _kde_columns(labels, weights, num_classes)
    k = h.shape[1]
    b = block_size
    nb = -(-n // b)
    pad = nb * b - n
    # Distances are shift-invariant; centring limits float32 rounding. The centred rows are
    # written into a zero-padded buffer: one [N, D] copy in XLA's memory analysis (4.99 GiB of
    # temporaries at N = 8,000, D = 147,456, against 13.3 GiB for a jnp.where-masked form).
    # Padded rows are zeros, like the centred data's mean, and carry zero weight.
    t = jnp.zeros((n + pad, d), jnp.float32).at[:n].set(t - jnp.mean(t, axis=0, keepdims=True))
    h = jnp.pad(h, ((0, pad), (0, 0)))  # padded rows carry zero weight in every column
    sq = jnp.sum(t * t, axis=1)
    # NaN/±Inf anywhere reach the mean, hence every row's norm; a non-finite sum that is a
    # mere overflow is told apart on the host (_all_finite).
    finite = jnp.isfinite(jnp.sum(sq[:n]))
    tb = t.reshape(nb, b, d)
    hb = h.reshape(nb, b, k)
    sqb = sq.reshape(nb, b)
    ndev = 1 if mesh is None else mesh.size
    ii, jj = np.triu_indices(nb)
    num_pairs = len(ii)
    per_dev = -(-num_pairs // ndev)
    pairs = np.zeros((per_dev * ndev, 3), np.int32)  # (row block, column block, real pair?)
    pairs[:num_pairs] = np.stack([ii, jj, np.ones_like(ii)], axis=1)
    inv_lower = 1.0 / (8.0 * noise_var)
    hi = jax.lax.Precision.HIGHEST

    def run(tb, sqb, hb, pairs):
        eye = jnp.eye(b, dtype=bool)

        def step(acc, pair):
            i, j, real = pair[0], pair[1], pair[2].astype(jnp.float32)
            g = jnp.dot(tb[i], tb[j].T, precision=hi)
            dist = jnp.maximum(sqb[i][:, None] + sqb[j][None, :] - 2.0 * g, 0.0)
            dist = jnp.where(eye & (i == j), 0.0, dist)  # exact zeros on the diagonal
            k_lower = jnp.exp(-dist * inv_lower)  # exp(−D / 8σ²)
            k_upper = jnp.square(jnp.square(k_lower))  # exp(−D / 2σ²) = (exp(−D / 8σ²))⁴
            kern = jnp.stack([k_upper, k_lower])  # [2, B, B]
            rows = jnp.einsum("sab,bc->sac", kern, hb[j], precision=hi)  # to the rows of block i
            cols = jnp.einsum("sab,ac->sbc", kern, hb[i], precision=hi)  # transposed: rows of block j
            acc = acc.at[i].add(rows * real)
            acc = acc.at[j].add(cols * (real * (i != j).astype(jnp.float32)))
            return acc, None

        acc0 = jnp.zeros((nb, 2, b, k), jnp.float32)
        return jax.lax.scan(step, acc0, pairs)[0]

    if ndev == 1:
        acc = run(tb, sqb, hb, jnp.asarray(pairs))
    else:
        def local(tb, sqb, hb, pairs):  # each device: its share of the block pairs, then a sum
            return jax.lax.psum(run(tb, sqb, hb, pairs), parallel.DATA_AXIS)

        rep = PartitionSpec()
        acc = jax.shard_map(local, mesh=mesh, in_specs=(rep, rep, rep, PartitionSpec(parallel.DATA_AXIS)),
                            out_specs=rep, check_vma=False)(tb, sqb, hb, jnp.asarray(pairs))
    acc = jnp.moveaxis(acc, 1, 2).reshape(nb * b, 2, k)[:n]  # [N, 2, K]
    return acc, finite, jnp.max(sq[:n])


# Distances from the Gram identity D = |a|² + |b|² − 2 a·b carry an absolute float32 rounding
# error of about eps·(|a|² + |b|²) (data centred). Relative to the kernel scale 2σ² this is the
# relative error of the kernel values, and times (S_i − 1)/S_i that of a row sum (see
# _float32_rounding_bound); above this bound the float64 host path is used instead.
_F32_EPS = float(np.finfo(np.float32).eps)
MAX_KERNEL_ROUNDING = 3e-2  # ⇒ at most ~0.04 bits of error in the largest-norm rows


def _float32_rounding_bound(sums, max_sq, noise_var: float) -> float:
    """Bound on the relative rounding error of any float32 row sum (hence on |Δ ln S_i|).

    A kernel term exp(−D/s) whose distance is off by δ ≈ 2·eps·max‖t‖² is off by a factor
    e^(±δ/s); the diagonal term (D = 0, exactly 1) has no error. So a row sum S_i (and every
    class-restricted sum, a subset of the same terms) is off by at most (δ/s)·(S_i − 1)/S_i:
    large norms only matter when the row also has neighbours within a few σ. Layers whose
    points are all far apart (wide layers, typically) therefore keep the float32 pass.
    """
    if not math.isfinite(float(max_sq)):  # norms beyond float32's range: float32 distances are meaningless
        return math.inf
    delta = 2.0 * _F32_EPS * float(max_sq)
    scales = (2.0 * noise_var, 8.0 * noise_var)
    if delta / scales[0] <= MAX_KERNEL_ROUNDING:  # cheap check first, no extra pass
        return delta / scales[0]
    off = np.asarray(jnp.max(1.0 - 1.0 / sums[:, :, 0], axis=0), np.float64)  # [2]: max (S − 1)/S
    off = np.nan_to_num(off, nan=1.0)  # a non-finite float32 sum can only mean "redo in float64"
    return float(max(delta / s * max(o, 0.0) for s, o in zip(scales, off)))


def _kde_sums_float64(t: np.ndarray, labels: np.ndarray, weights: np.ndarray, noise_var: float,
                      num_classes: int, block_size: int) -> np.ndarray:
    """The same sums as :func:`_kde_sums`, in float64 on the host (rows in blocks, O(N·B) memory)."""
    t = np.asarray(t, np.float64)
    t = t - t.mean(axis=0, keepdims=True)
    n = t.shape[0]
    sq = np.einsum("nd,nd->n", t, t)
    h = np.asarray(_kde_columns(jnp.asarray(labels), jnp.asarray(weights), num_classes), np.float64)
    out = np.empty((n, 2, h.shape[1]))
    for a in range(0, n, block_size):
        rows = slice(a, min(n, a + block_size))
        dist = np.maximum(sq[rows, None] + sq[None, :] - 2.0 * (t[rows] @ t.T), 0.0)
        dist[np.arange(dist.shape[0]), np.arange(a, a + dist.shape[0])] = 0.0
        for k, scale in enumerate((2.0 * noise_var, 8.0 * noise_var)):
            out[rows, k] = np.exp(-dist / scale) @ h
    return out


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _kde_from_sums(sums, labels, weights, *, num_classes: int):
    """I(X;T), I(T;Y) in bits for both bounds and every resample: arrays [2, R] (upper, lower)."""
    n = sums.shape[0]
    r = weights.shape[0]
    s = sums.reshape(n, 2, r, num_classes + 1)
    w = weights.T[:, None, :]  # [N, 1, R]
    total = s[..., 0]  # [N, 2, R]
    same = jnp.take_along_axis(s[..., 1:], labels[:, None, None, None], axis=3)[..., 0]
    # A point absent from a resample (w = 0) has no term; guard log 0 · 0.
    log_total = jnp.where(w > 0, jnp.log(jnp.where(w > 0, total, 1.0)), 0.0)
    log_same = jnp.where(w > 0, jnp.log(jnp.where(w > 0, same, 1.0)), 0.0)
    counts = weights @ jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [R, C]
    h_y_term = jnp.sum(jnp.where(counts > 0, counts / n * jnp.log(jnp.maximum(counts, 1.0)), 0.0), axis=1)
    i_xt = jnp.log(n) - jnp.sum(w * log_total, axis=0) / n
    i_ty = jnp.log(n) - h_y_term[None, :] - jnp.sum(w * (log_total - log_same), axis=0) / n
    return i_xt * _LOG2E, i_ty * _LOG2E


def _kde_compute(t, y, c, weights, *, noise_var: float = 0.1, block_size: int | None = None,
                 devices=None, **_):
    """KDE upper and lower bound for every resample: {method: (I_XT [R], I_TY [R])}."""
    if not noise_var > 0:
        raise ValueError(f"noise_var must be > 0 (the KDE kernel variance σ²); got {noise_var}.")
    mesh = _kde_mesh(devices)
    cols = weights.shape[0] * (c + 1)
    b = int(block_size or choose_block_size(t.shape[0], t.shape[1], columns=cols))
    w = jnp.asarray(weights, jnp.float32)
    sums, finite, max_sq = _kde_sums(t, y, w, jnp.float32(noise_var), num_classes=c, block_size=b, mesh=mesh)
    _raise_if_nonfinite(finite or _all_finite(t), "activations")
    if _float32_rounding_bound(sums, max_sq, noise_var) > MAX_KERNEL_ROUNDING:
        # Activations so large relative to σ that float32 distances could move the row sums by
        # more than MAX_KERNEL_ROUNDING: redo this layer in float64 on the host (exact, slower).
        sums = jnp.asarray(_kde_sums_float64(np.asarray(t), np.asarray(y), np.asarray(weights),
                                             float(noise_var), c, b), jnp.float32)
    i_xt, i_ty = jax.device_get(_kde_from_sums(sums, y, w, num_classes=c))
    return {"kde_upper": (i_xt[0], i_ty[0]), "kde_lower": (i_xt[1], i_ty[1])}


def kde_mi(activations, labels, *, num_classes: int | None = None, noise_var: float = 0.1,
           block_size: int | None = None, devices=None) -> dict[str, dict[str, float]]:
    """KDE upper and lower bounds on I(X;T) and I(T;Y), in bits, from one distance pass.

    See the module docstring for the formulas (Kolchinsky & Tracey 2017; Saxe et al. 2018).

    Args:
      activations: [N, D] float array, one flattened layer output per sample.
      labels: [N] integer class labels.
      num_classes: number of classes (default: max(labels) + 1). Classes absent from the
        sample contribute nothing.
      noise_var: σ², the variance of the Gaussian noise added to T (0.1 in the paper).
      block_size: rows per block (default: :func:`choose_block_size`, from the free memory).
      devices: devices to split the pass over (default: all local devices).

    Precision: distances come from the Gram identity in float32, whose rounding error is about
    δ = ``eps·(|t_i|² + |t_j|²)`` for centred data. A row sum S_i is then off by at most a
    relative (δ/2σ²)·(S_i − 1)/S_i (the diagonal term is exact). When that bound could exceed
    ``MAX_KERNEL_ROUNDING`` (3 %, i.e. ≤ 0.043 bits; possible only for squared norms above
    ~25,000 at σ² = 0.1 *and* rows with neighbours within a few σ), the layer is recomputed
    in float64 on the host instead, so results never silently lose precision.

    Returns:
      ``{"kde_upper": {"I_XT": float, "I_TY": float}, "kde_lower": {...}}``.
    """
    if not noise_var > 0:
        raise ValueError(f"noise_var must be > 0 (the KDE kernel variance σ²); got {noise_var}.")
    t, y, c = _validate(activations, labels, num_classes)
    res = _kde_compute(t, y, c, _ones_weights(t.shape[0]), noise_var=noise_var, block_size=block_size,
                       devices=devices)
    return {m: {"I_XT": float(v[0][0]), "I_TY": float(v[1][0])} for m, v in res.items()}


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


SAMPLE_COLUMNS = 256  # binning: about this many bins, spread over the layer, are fingerprinted first
SAMPLE_RUN = 8  # ... in runs of this many adjacent columns (32 bytes), so only those are read
GROUPED_SCATTER_LIMIT = 1 << 24  # binning: largest (N·C·R) (group, class) count table scattered


def _sampled_columns(d: int) -> np.ndarray:
    """The column indices binning fingerprints first (for d > SAMPLE_COLUMNS): SAMPLE_COLUMNS /
    SAMPLE_RUN runs of SAMPLE_RUN adjacent columns, their starts evenly spread from the first
    column to the last."""
    runs = SAMPLE_COLUMNS // SAMPLE_RUN
    starts = (np.arange(runs) * (d - SAMPLE_RUN)) // (runs - 1)
    return (starts[:, None] + np.arange(SAMPLE_RUN)[None, :]).reshape(-1)


def _sample_columns(t2):
    """``t2[:, _sampled_columns(d)]`` as static slices, concatenated (reads only those runs;
    measured faster once fused with the hashing than a strided reshape or a gather)."""
    starts = _sampled_columns(t2.shape[1])[::SAMPLE_RUN]
    return jnp.concatenate([t2[:, int(s):int(s) + SAMPLE_RUN] for s in starts], axis=1)


def _all_distinct(h1):
    """Whether the 32-bit hashes h1 are pairwise different (one single-key sort), which
    implies distinct rows. Ties in h1 alone — real duplicates, or by chance, with probability
    about N²/2³³ — send the caller to the grouped path, which compares 64-bit fingerprints
    and, on equal ones, the rows themselves."""
    s = jax.lax.sort(h1)
    return jnp.all(s[1:] != s[:-1])


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
    """H(T) and H(T) − H(T|Y) in bits from (weighted) symbol, (class, symbol) and class counts.

    H(T) = ln N − (1/N) Σ_g n_g ln n_g;  H(T|Y) = (1/N) [Σ_c N_c ln N_c − Σ_(c,g) n_cg ln n_cg].
    """
    h_t = jnp.log(n) - jnp.sum(_xlogx(n_t), axis=0) / n
    h_t_given_y = (jnp.sum(_xlogx(n_c), axis=0) - jnp.sum(_xlogx(n_ty), axis=0)) / n
    # H(T) ≥ 0 and H(T|Y) ≤ H(T) hold exactly; clamp the rounding of the float sums (I ≥ 0).
    h_t = jnp.maximum(h_t, 0.0)
    return h_t * _LOG2E, jnp.maximum(h_t - h_t_given_y, 0.0) * _LOG2E


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _binning_core(t, labels, weights, bin_size, *, num_classes: int):
    """Binning's fast path: I(X;T), I(T;Y) in bits for every resample (rows of ``weights``
    [R, N]) *if every row is its own symbol*, whether that holds, whether the sum of ``t`` is
    finite, and the whole-row fingerprints (narrow layers; None for wide ones).

    If the 32-bit hashes of a few hundred bins spread over the layer (SAMPLE_COLUMNS, read
    in runs of SAMPLE_RUN adjacent columns; the whole row when narrower) differ between all
    rows, every row is its own symbol and H(T), H(T|Y) follow from the weights alone — the
    usual case at the log₂ N ceiling, one single-key sort. Otherwise the caller runs
    :func:`_binning_grouped_core`. (Two programs rather than a ``lax.cond``: on XLA:CPU a
    conditional whose other branch reads the whole [N, D] array made this path 2.5× slower.)
    A finite sum implies finite entries (NaN and ±Inf propagate); only a non-finite one —
    possibly a mere overflow — needs the elementwise check.
    """
    n = t.shape[0]
    t2 = t.reshape(n, -1)
    wide = t2.shape[1] > SAMPLE_COLUMNS
    hashes = tuple(_row_hashes(_symbols(_sample_columns(t2) if wide else t2, bin_size)))
    distinct = _all_distinct(hashes[0])
    hashes = None if wide else hashes  # whole-row fingerprints (narrow layers) serve the grouped path
    w = weights.astype(jnp.float32).T  # [N, R]
    n_c = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32).T @ w  # [C, R]
    i_xt, i_ty = _binned_information(w, w, n_c, n)  # each sample its own symbol: n_t = n_ty = w
    return i_xt, i_ty, distinct, jnp.isfinite(jnp.sum(t2, dtype=jnp.float32)), hashes


@functools.partial(jax.jit, static_argnames=("num_classes", "rehash"))
def _binning_grouped_core(t, labels, weights, bin_size, hashes, *, num_classes: int, rehash: bool):
    """Binning when some rows may share a symbol: (I(X;T), I(T;Y), collision detected).

    ``hashes``: the whole-row fingerprints from :func:`_binning_core` (narrow layers), or,
    with ``rehash`` (wide layers, whose fast path hashed sampled columns only), ignored.
    """
    w = weights.astype(jnp.float32).T  # [N, R]
    n_c = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32).T @ w  # [C, R]
    if rehash:
        hashes = _row_hashes(_symbols(t, bin_size))
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


def _binning_numpy(t: np.ndarray, labels: np.ndarray, bin_size: float,
                   weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact host-side fallback (used only after a detected 64-bit hash collision): np.unique."""
    t = np.asarray(t)
    labels = np.asarray(labels)
    weights = _ones_weights(len(t)) if weights is None else np.asarray(weights, np.float64)
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


def _binning_compute(t, y, c, weights, *, bin_size: float = 0.5, **_):
    if not bin_size > 0:
        raise ValueError(f"bin_size must be > 0; got {bin_size}.")
    weights, bin_size_ = jnp.asarray(weights, jnp.float32), jnp.asarray(bin_size, t.dtype)
    *head, hashes = _binning_core(t, y, weights, bin_size_, num_classes=c)
    i_xt, i_ty, distinct, finite = jax.device_get(head)
    _raise_if_nonfinite(finite or _all_finite(t), "activations")
    collision = False
    if not distinct:
        i_xt, i_ty, collision = jax.device_get(_binning_grouped_core(
            t, y, weights, bin_size_, hashes, num_classes=c, rehash=t.shape[1] > SAMPLE_COLUMNS))
    if collision:  # astronomically rare; never silently wrong
        i_xt, i_ty = _binning_numpy(np.asarray(t), np.asarray(y), bin_size, np.asarray(weights))
    return {"binning": (np.asarray(i_xt), np.asarray(i_ty))}


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
    i_xt, i_ty = _binning_compute(t, y, c, _ones_weights(t.shape[0]), bin_size=bin_size)["binning"]
    return {"I_XT": float(i_xt[0]), "I_TY": float(i_ty[0])}


# --------------------------------------------------------------------------------------
# Matrix-based Rényi α-entropy
# --------------------------------------------------------------------------------------


def _gaussian_gram(x: np.ndarray, width: float | None, k_neighbors: int) -> np.ndarray:
    """Gaussian Gram matrix exp(−‖x_i − x_j‖² / 2σ²) [N, N] in float64 on the host.

    ``width`` None selects the k-nearest-neighbour rule: σ = mean over samples of the mean
    Euclidean distance to their ``k_neighbors`` nearest other samples. float64 because the
    1/(1 − α) factor of S_α (100 at α = 1.01) magnifies kernel rounding: float32 Gram
    distances (error ~ε₃₂‖x‖²) moved tight-cluster test cases by ~5e-3 bits.
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    x = x - x.mean(axis=0, keepdims=True)
    sq = np.einsum("nd,nd->n", x, x)
    d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d, 0.0)
    if width is None:
        if k_neighbors > 0:
            # The k + 1 smallest entries of a row (unordered) include the point itself (0).
            nearest = np.partition(d, k_neighbors, axis=1)[:, :k_neighbors + 1]
            width = float(np.mean(np.sum(np.sqrt(nearest), axis=1) / k_neighbors))
        else:
            width = 1.0
    if not width > 0:
        width = 1.0  # all points identical: any width gives K = 1
    return np.exp(-d / (2.0 * width * width))


def _matrix_entropy_bits(a: np.ndarray, alpha: float) -> float:
    """S_α(A) = 1/(1−α) log₂ Σ_i λ_i(A)^α for a PSD matrix of unit trace (α = 1: −Σ λ log₂ λ)."""
    if alpha == 2.0:  # tr(A²) = ‖A‖_F²: exact without an eigendecomposition
        return float(-np.log2(np.sum(a * a)))
    lam = np.clip(np.linalg.eigvalsh(a), 0.0, None)
    lam = lam[lam > 0]
    if alpha == 1.0:
        return float(-np.sum(lam * np.log2(lam)))
    return float(np.log2(np.sum(lam ** alpha)) / (1.0 - alpha))


def _weighted_unit_trace(k: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The normalised Gram matrix of a resample with multiplicities w: W^½ K W^½ / tr(W K)."""
    keep = w > 0
    sw = np.sqrt(w[keep])
    a = k[np.ix_(keep, keep)] * sw[:, None] * sw[None, :]
    return a / np.trace(a)


def _renyi_compute(t, y, c, weights, *, alpha: float = 1.01, kernel_width: float | None = None,
                   k_neighbors: int = 10, inputs=None, input_kernel_width: float | None = None, **_):
    """Matrix-based Rényi I(X;T), I(T;Y) for every resample: {"renyi": (I_XT [R], I_TY [R])}."""
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 (the order of the Rényi entropy); got {alpha}.")
    n = t.shape[0]
    k = min(int(k_neighbors), n - 1)

    def gram(x, width, what):
        x = np.asarray(x)
        if not np.all(np.isfinite(x)):
            _raise_if_nonfinite(False, what)
        kx = _gaussian_gram(x, width, k)
        diag = np.sqrt(np.diag(kx))
        return kx / diag[:, None] / diag[None, :]  # K_ij / √(K_ii K_jj) (= K for a Gaussian kernel)

    k_t = gram(t, kernel_width, "activations")
    k_x = None
    if inputs is not None:
        x = np.asarray(inputs)
        x = x.reshape(x.shape[0], -1) if x.ndim else x
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"inputs must hold one sample per activation row ([N, ...] with N = {n}); "
                             f"got shape {np.shape(inputs)}.")
        k_x = gram(x, input_kernel_width, "inputs")
    y_np = np.asarray(y)
    i_xt, i_ty = [], []
    for w in np.asarray(weights, np.float64):
        keep = w > 0
        a_t = _weighted_unit_trace(k_t, w)
        s_t = _matrix_entropy_bits(a_t, alpha)
        # Label kernel: δ(y_i, y_j). A_Y has eigenvalues p_c, so S_α(A_Y) is the Rényi entropy
        # of the class frequencies; A_T ∘ A_Y is block-diagonal by class, so its spectrum is the
        # union of the class blocks' spectra (exact; one small eigendecomposition per class).
        counts = np.bincount(y_np, weights=w, minlength=c)
        p = counts[counts > 0] / counts.sum()
        s_y = (float(-np.sum(p * np.log2(p))) if alpha == 1.0
               else float(np.log2(np.sum(p ** alpha)) / (1.0 - alpha)))
        y_keep = y_np[keep]
        if alpha == 2.0:
            m = np.where(y_keep[:, None] == y_keep[None, :], a_t, 0.0)
            joint = float(-np.log2(np.sum(m * m) / np.trace(m) ** 2))
        else:
            lam = np.concatenate([np.linalg.eigvalsh(a_t[np.ix_(y_keep == cl, y_keep == cl)])
                                  for cl in np.unique(y_keep)])
            lam = np.clip(lam, 0.0, None)
            lam = lam[lam > 0] / lam.sum()
            joint = (float(-np.sum(lam * np.log2(lam))) if alpha == 1.0
                     else float(np.log2(np.sum(lam ** alpha)) / (1.0 - alpha)))
        i_ty.append(s_t + s_y - joint)
        if k_x is None:
            i_xt.append(s_t)  # deterministic layer: I(X;T) = H(T), as for binning
        else:
            a_x = _weighted_unit_trace(k_x, w)
            a_xt = a_x * a_t
            i_xt.append(_matrix_entropy_bits(a_x, alpha) + s_t
                        - _matrix_entropy_bits(a_xt / np.trace(a_xt), alpha))
    return {"renyi": (np.asarray(i_xt), np.asarray(i_ty))}


def renyi_mi(activations, labels, *, num_classes: int | None = None, inputs=None, alpha: float = 1.01,
             kernel_width: float | None = None, input_kernel_width: float | None = None,
             k_neighbors: int = 10) -> dict[str, float]:
    """Matrix-based Rényi α-order estimates of I(X;T) and I(T;Y), in bits.

    Giraldo, Rao & Príncipe (2014), "Measures of entropy from data using infinitely divisible
    kernels"; for DNN information planes Yu et al. (2019) and Wickstrøm et al. (2019). For
    samples z_1..z_N with a positive-definite kernel κ, the normalised Gram matrix is
    A_ij = κ(z_i, z_j) / (N √(κ(z_i, z_i) κ(z_j, z_j))) (unit trace) and::

        S_α(A)    = 1/(1 − α) · log₂ Σ_i λ_i(A)^α            (λ_i: eigenvalues of A)
        S_α(A, B) = S_α(A ∘ B / tr(A ∘ B))                    (∘: Hadamard product)
        I_α(A; B) = S_α(A) + S_α(B) − S_α(A, B)

    α → 1 gives the von Neumann (Shannon-like) entropy −Σ λ log₂ λ; α = 2 uses the exact
    identity tr(A²) = ‖A‖_F² (no eigendecomposition).

    Kernels: a Gaussian kernel exp(−‖a − b‖² / 2σ²) on activations (and on inputs), and the
    delta kernel δ(y_i, y_j) on labels (so S_α(A_Y) is exactly the Rényi entropy of the class
    frequencies). **Kernel-width rule**: σ = mean over samples of the mean Euclidean distance
    to their ``k_neighbors`` (default 10) nearest other samples, per layer — a k-nearest-
    neighbour rule of the kind Wickstrøm et al. use, which adapts σ to each layer's scale
    (so the estimates are invariant to rescaling the layer) instead of fixing it. Pass
    ``kernel_width`` (and ``input_kernel_width``) to fix σ instead.

    I(X;T): with ``inputs`` (the network inputs X, [N, ...], e.g. the images), the full
    S_α(A_X) + S_α(A_T) − S_α(A_X, A_T). Without ``inputs``, I(X;T) = S_α(A_T): for a
    deterministic layer H(T|X) = 0, the same convention as binning's I(X;T) = H(T).

    Cost: the N × N Gram matrices are built and eigendecomposed in float64 on the host with
    NumPy/LAPACK (O(N²·D + N³): meant for N up to a few thousand, as in the literature, which
    uses mini-batches of ~100). float64 because 1/(1 − α) magnifies rounding (see
    :func:`_gaussian_gram`). With a bootstrap, each resample costs its own eigendecompositions.

    Args:
      activations: [N, D] float array.
      labels: [N] integer class labels.
      num_classes: number of classes (default: max(labels) + 1).
      inputs: optional [N, ...] network inputs for the full I(X;T).
      alpha: the order α > 0 (default 1.01, as in Yu et al. and Wickstrøm et al.).
      kernel_width, input_kernel_width: fixed σ for the activations / inputs (default: k-NN rule).
      k_neighbors: k of the width rule.

    Returns:
      ``{"I_XT": float, "I_TY": float}`` in bits.
    """
    t, y, c = _validate(activations, labels, num_classes)
    i_xt, i_ty = _renyi_compute(t, y, c, _ones_weights(t.shape[0]), alpha=alpha, kernel_width=kernel_width,
                                k_neighbors=k_neighbors, inputs=inputs,
                                input_kernel_width=input_kernel_width)["renyi"]
    return {"I_XT": float(i_xt[0]), "I_TY": float(i_ty[0])}


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One registered estimator. Entries of the same ``group`` are computed by one call."""

    name: str
    group: str
    compute: Callable[..., dict[str, tuple[np.ndarray, np.ndarray]]]
    options: frozenset[str] | None  # keyword options it takes (None: any)


_REGISTRY: dict[str, _Entry] = {}
_BUILTIN = frozenset({"kde_upper", "kde_lower", "binning", "renyi"})


def _add(name, group, compute, options):
    _REGISTRY[name] = _Entry(name, group, compute, None if options is None else frozenset(options))


_add("kde_upper", "kde", _kde_compute, ("noise_var", "block_size", "devices"))
_add("kde_lower", "kde", _kde_compute, ("noise_var", "block_size", "devices"))
_add("binning", "binning", _binning_compute, ("bin_size",))
_add("renyi", "renyi", _renyi_compute, ("alpha", "kernel_width", "k_neighbors", "inputs", "input_kernel_width"))


def available_methods() -> tuple[str, ...]:
    """Names of every registered estimator (the built-ins first)."""
    return tuple(_REGISTRY)


def register_estimator(name: str, fn: Callable[..., Mapping[str, float]], *, overwrite: bool = False) -> None:
    """Adds an estimator under ``name``, usable wherever a method name is accepted.

    ``fn(activations, labels, *, num_classes, **options) -> {"I_XT": float, "I_TY": float}``
    (bits) receives a validated [N, D] float array, [N] int32 labels and the number of
    classes, plus those keyword options of :func:`estimate_all` (``noise_var``, ``bin_size``,
    ``inputs``, or any other ``**options``) that its signature names (all of them if it has
    ``**kwargs``). With ``bootstrap=R``, ``fn`` is called once more per resample on the
    resampled rows (built-in estimators instead reuse one pass for all resamples).

    Args:
      name: the method name; must not shadow a built-in.
      fn: the estimator.
      overwrite: replace an earlier registration of ``name``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an estimator name must be a non-empty string; got {name!r}.")
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in estimator and cannot be replaced; pick another name.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"an estimator named {name!r} is already registered; pass overwrite=True to replace it.")
    if not callable(fn):
        raise ValueError(f"fn must be callable; got {type(fn).__name__}.")
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = None if takes_all else frozenset(params) - {"num_classes"}

    def compute(t, y, c, weights, **opts):
        kw = {k: v for k, v in opts.items() if accepted is None or k in accepted}
        n = t.shape[0]
        i_xt, i_ty = [], []
        for w in np.asarray(weights):
            if np.all(w == 1):
                tt, yy = t, y
            else:
                rows = jnp.asarray(np.repeat(np.arange(n), w.astype(np.int64)))
                tt, yy = t[rows], y[rows]
            res = fn(tt, yy, num_classes=c, **kw)
            i_xt.append(float(res["I_XT"]))
            i_ty.append(float(res["I_TY"]))
        return {name: (np.asarray(i_xt), np.asarray(i_ty))}

    _add(name, f"user:{name}", compute, accepted)


def unregister_estimator(name: str) -> None:
    """Removes an estimator added with :func:`register_estimator`."""
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in estimator and cannot be removed.")
    if name not in _REGISTRY:
        raise ValueError(f"no estimator named {name!r} is registered; registered: {list(_REGISTRY)}.")
    del _REGISTRY[name]


def _check_methods(methods) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(methods)
    unknown = [m for m in methods if m not in _REGISTRY]
    if unknown or not methods:
        raise ValueError(f"unknown estimator(s) {unknown or list(methods)}; choose from {list(_REGISTRY)}.")
    return methods


# --------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------


def bootstrap_weights(key, n: int, resamples: int) -> np.ndarray:
    """Multiplicities of ``resamples`` bootstrap resamples of n points: [R, N] float32, rows sum to N.

    Row r holds how often each point is drawn when n points are drawn uniformly with
    replacement (a multinomial(n; 1/n, …, 1/n) vector), from the typed or raw JAX ``key``.
    """
    idx = jax.random.randint(key, (int(resamples), int(n)), 0, int(n))
    return np.asarray(jax.vmap(lambda i: jnp.bincount(i, length=int(n)))(idx), np.float32)


def _summary(i_xt: np.ndarray, i_ty: np.ndarray, resamples: int, confidence: float) -> dict[str, float]:
    out = {"I_XT": float(i_xt[0]), "I_TY": float(i_ty[0])}
    if resamples:
        q = (100.0 * (1.0 - confidence) / 2.0, 100.0 * (1.0 + confidence) / 2.0)
        for k, v in (("I_XT", np.asarray(i_xt[1:], np.float64)), ("I_TY", np.asarray(i_ty[1:], np.float64))):
            lo, hi = np.percentile(v, q)
            out[f"{k}_se"] = float(np.std(v, ddof=1))
            out[f"{k}_lo"] = float(lo)
            out[f"{k}_hi"] = float(hi)
    return out


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def _resample_weights(labels, bootstrap, key, confidence) -> np.ndarray:
    """The [1 + R, N] point multiplicities: row 0 the full sample, then R bootstrap resamples."""
    labels_np = np.asarray(labels)
    if int(bootstrap) != bootstrap or bootstrap < 0 or bootstrap == 1:
        raise ValueError(f"bootstrap must be 0 (off) or a number of resamples ≥ 2; got {bootstrap}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}.")
    n = labels_np.shape[0] if labels_np.ndim == 1 else 0
    weights = _ones_weights(n)
    if bootstrap:
        key = jax.random.key(0) if key is None else key
        weights = np.concatenate([weights, bootstrap_weights(key, n, int(bootstrap))])
    return weights


def _estimate_layer(act, labels, *, methods, num_classes, weights, options, resamples, confidence):
    t, y, c = _validate(act, labels, num_classes)
    out: dict[str, dict[str, float]] = {}
    groups: dict[str, list[str]] = {}
    for m in methods:
        groups.setdefault(_REGISTRY[m].group, []).append(m)
    for members in groups.values():
        entry = _REGISTRY[members[0]]
        opts = {k: v for k, v in options.items() if entry.options is None or k in entry.options}
        res = entry.compute(t, y, c, weights, **opts)
        for m in members:
            out[m] = _summary(*res[m], resamples, confidence)
    return {m: out[m] for m in methods}


def _split_options(methods, options):
    """Rejects keyword options that none of the chosen estimators takes (catches typos)."""
    accepted: set[str] = set()
    for m in methods:
        if _REGISTRY[m].options is None:
            return
        accepted |= _REGISTRY[m].options
    extra = sorted(set(options) - accepted - {"noise_var", "bin_size", "block_size", "devices", "inputs"})
    if extra:
        raise ValueError(f"unknown option(s) {extra} for estimator(s) {list(methods)}; they accept "
                         f"{sorted(accepted)}.")


def estimate_all(activations, labels, *, methods: Sequence[str] = METHODS, num_classes: int | None = None,
                 noise_var: float = 0.1, bin_size: float = 0.5, block_size: int | None = None,
                 devices=None, inputs=None, bootstrap: int = 0, key=None, confidence: float = 0.95,
                 **options) -> dict[str, dict[str, float]]:
    """Every requested estimator on one layer, sharing the KDE distance pass.

    Args:
      activations: [N, D] float array (one flattened layer output per sample).
      labels: [N] integer labels.
      methods: names from :func:`available_methods` (default :data:`METHODS`, the paper's three).
      num_classes: number of classes (default: max(labels) + 1).
      noise_var: KDE σ².
      bin_size: binning width.
      block_size: KDE row-block size (default: automatic, from the free memory).
      devices: devices the KDE pass is split over (default: all local devices).
      inputs: network inputs [N, ...] for the Rényi estimator's I(X;T) (see :func:`renyi_mi`).
      bootstrap: R ≥ 2 turns on bootstrap error bars from R resamples (0: off).
      key: JAX key of the resampling (default ``jax.random.key(0)``); the same key gives the
        same resamples, so error bars of different layers or models are paired.
      confidence: coverage of the percentile interval (default 0.95).
      **options: further estimator options, e.g. ``alpha``, ``kernel_width``, ``k_neighbors``
        (Rényi) or those of a registered estimator.

    Bootstrap: a resample draws N of the N points with replacement. Built-in estimators get
    all R resamples from the same pass as the point estimate (weighted kernel sums and
    weighted symbol counts; see the module docstring). A resample holds only ~63 % distinct
    points and duplicates act as exact neighbours, so resampled KDE, binning and Rényi values
    are biased low relative to the full sample (most visibly near the log₂ N ceiling of
    I(X;T)). The point estimate returned is always the full sample's; the standard error and
    the percentile interval describe the sampling spread, not a bias-corrected interval.

    Returns:
      ``{method: {"I_XT": float, "I_TY": float}}`` in bits; with ``bootstrap`` each also holds
      ``"I_XT_se"``, ``"I_XT_lo"``, ``"I_XT_hi"`` (standard error over resamples and the
      percentile interval) and the same for ``"I_TY"``.
    """
    return estimate_probes({"_": activations}, labels, methods=methods, num_classes=num_classes,
                           noise_var=noise_var, bin_size=bin_size, block_size=block_size, devices=devices,
                           inputs=inputs, bootstrap=bootstrap, key=key, confidence=confidence, _raw_errors=True,
                           **options)["_"]


def estimate_probes(probes: Mapping[str, Any], labels, *, methods: Sequence[str] = METHODS,
                    num_classes: int | None = None, noise_var: float = 0.1, bin_size: float = 0.5,
                    block_size: int | None = None, devices=None, inputs=None, bootstrap: int = 0, key=None,
                    confidence: float = 0.95, _raw_errors: bool = False,  # estimate_all: one layer as given
                    **options) -> dict[str, dict[str, dict[str, float]]]:
    """All estimators on every probe of a model, in one call.

    Every probe (any widths; [N, ...] activations are flattened per sample) gets every
    requested estimator; all class terms of a probe come from one pass (no loop over
    classes), both KDE bounds from one Gram pass, and with ``bootstrap`` every probe uses
    the same resamples. Arguments as in :func:`estimate_all`.

    Returns:
      ``{probe: {method: {"I_XT": float, "I_TY": float, ...}}}`` in the order of ``probes``.
    """
    if not probes:
        raise ValueError("probes is empty; pass a mapping of probe name -> activations.")
    methods = _check_methods(methods)
    _split_options(methods, options)
    if not noise_var > 0 and any(_REGISTRY[m].group == "kde" for m in methods):
        raise ValueError(f"noise_var must be > 0 (the KDE kernel variance σ²); got {noise_var}.")
    if not bin_size > 0 and "binning" in methods:
        raise ValueError(f"bin_size must be > 0; got {bin_size}.")
    weights = _resample_weights(labels, bootstrap, key, confidence)
    if num_classes is None and np.size(labels) and np.ndim(labels) == 1 \
            and np.issubdtype(np.asarray(labels).dtype, np.integer):
        num_classes = max(int(np.max(labels)) + 1, 1)  # one class count for every probe
    opts = dict(options, noise_var=noise_var, bin_size=bin_size, block_size=block_size, devices=devices,
                inputs=inputs)
    out = {}
    for name, act in probes.items():
        try:
            out[name] = _estimate_layer(act if _raw_errors else _flatten(act), labels, methods=methods, num_classes=num_classes,
                                        weights=weights, options=opts, resamples=int(bootstrap),
                                        confidence=confidence)
        except ValueError as e:
            if _raw_errors:
                raise
            raise ValueError(f"probe {name!r}: {e}") from None
    return out


def estimate_mi(activations, labels, *, method: str, num_classes: int | None = None, noise_var: float = 0.1,
                bin_size: float = 0.5, **options) -> dict[str, float]:
    """Estimates I(X;T) and I(T;Y) in bits for one layer with one estimator.

    Args:
      activations: [N, D] float array, one flattened layer output per sample.
      labels: [N] integer class labels (the true labels, also for adversarial inputs).
      method: ``"kde_upper"``, ``"kde_lower"``, ``"binning"``, ``"renyi"`` or a registered name.
      num_classes: number of classes (default: max(labels) + 1).
      noise_var: KDE kernel variance σ² (0.1 in the paper).
      bin_size: binning width (0.5 in the paper).
      **options: as in :func:`estimate_all` (``bootstrap``, ``key``, ``inputs``, ``alpha``, ...).

    Returns:
      ``{"I_XT": float, "I_TY": float}``, in bits (plus error-bar keys with ``bootstrap``).
    """
    if not isinstance(method, str) or method not in _REGISTRY:
        raise ValueError(f"unknown estimator method {method!r}; choose one of {list(_REGISTRY)}.")
    return estimate_all(activations, labels, methods=(method,), num_classes=num_classes,
                        noise_var=noise_var, bin_size=bin_size, **options)[method]


def measure_probes(probes: Mapping[str, Any], labels, *, methods: Sequence[str] = METHODS,
                   num_classes: int | None = None, noise_var: float = 0.1,
                   bin_size: float = 0.5, **options) -> dict[str, dict[str, list[float]]]:
    """All estimators on every probe of a model, as lists over probes.

    Args:
      probes: ``{probe name: [N, ...] activations}`` (flattened per sample if needed).
      labels: [N] integer labels.
      methods, num_classes, noise_var, bin_size, **options: as in :func:`estimate_probes`.

    Returns:
      ``{method: {"I_XT": [one float per probe, in the order of ``probes``], "I_TY": [...]}}``
      (with ``bootstrap``, also ``"I_XT_se"``, ``"I_XT_lo"``, ``"I_XT_hi"`` and the same for I_TY).
    """
    per_probe = estimate_probes(probes, labels, methods=methods, num_classes=num_classes, noise_var=noise_var,
                                bin_size=bin_size, **options)
    methods = _check_methods(methods)
    out: dict[str, dict[str, list[float]]] = {}
    for m in methods:
        keys = next(iter(per_probe.values()))[m].keys()
        out[m] = {k: [per_probe[p][m][k] for p in per_probe] for k in keys}
    return out
