"""KDE upper and lower bounds on I(X;T) and I(T;Y), from one blockwise Gram pass per layer.

With D_ij = ‖t_i − t_j‖² and s the exponent scale (2σ² for the pairwise-KL upper bound,
8σ² for the Bhattacharyya lower bound), in nats::

    I(X;T) = ln N − (1/N) Σ_i ln Σ_j exp(−D_ij / s)
    I(T;Y) = ln N − Σ_c p_c ln N_c − (1/N) Σ_i [ln Σ_j exp(−D_ij/s) − ln Σ_{j: y_j = y_i} exp(−D_ij/s)]

Both bounds and every class term come from the same kernel row sums, which are computed
blockwise (rows in blocks of B, only the blocks on and above the diagonal, O(N·B + B²)
memory), optionally split across devices, in float32 with a rounding bound that sends a
layer to an exact float64 host pass when float32 could be off by more than
:data:`MAX_KERNEL_ROUNDING`.

References: Kolchinsky & Tracey (2017), "Estimating mixture entropy with pairwise
distances"; Kolchinsky, Tracey & Wolpert (2017); Saxe et al. (2018), "On the information
bottleneck theory of deep learning".
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxmi import backend, parallel
from jaxmi.estimators.bootstrap import unit_weights
from jaxmi.estimators.validation import all_finite, check_noise_var, raise_if_nonfinite, validate

__all__ = ["kde_mi", "kde_compute", "choose_block_size", "MAX_KERNEL_ROUNDING"]

_LOG2E = 1.0 / math.log(2.0)
_F32_EPS = float(np.finfo(np.float32).eps)
#: Largest relative float32 rounding error of a kernel row sum accepted before a layer is
#: recomputed in float64 (ln 1.03 / ln 2 ≈ 0.043 bits in the largest-norm rows).
MAX_KERNEL_ROUNDING = 3e-2


def choose_block_size(n: int, d: int, *, columns: int = 11, max_block: int | None = None,
                      memory_bytes: int | None = None, device: jax.Device | None = None) -> int:
    """The row-block size B of the blockwise KDE pass, from the free memory.

    One scan step holds two [B, D] row blocks, a handful of [B, B] kernel blocks and four
    [B, columns] products in float32, about ``4·(2·B·D + 8·B² + 4·B·columns)`` bytes. B is
    the largest power-of-two fraction of ``max_block`` whose step fits in ``memory_bytes``,
    then balanced so that the last block wastes at most 7 padding rows.

    Args:
      n: number of samples N.
      d: feature width D.
      columns: columns of the row-sum matrix, (1 + classes) · (1 + bootstrap resamples).
      max_block: upper limit on B (default :func:`jaxmi.backend.kde_max_block`).
      memory_bytes: per-step budget in bytes (default: a quarter of
        :func:`jaxmi.backend.available_memory_bytes` after the O(N·D + N·columns) buffers of
        the whole pass, at least 64 MiB).
      device: the device whose memory counts (default: the first local device).

    Returns:
      The block size B, a multiple of 8, ≥ 8.
    """
    device = device if device is not None else jax.local_devices()[0]
    if max_block is None:
        max_block = backend.kde_max_block(d, device)
    if memory_bytes is None:
        fixed = 4 * (n * d + 3 * n * columns)  # the centred, padded copy + accumulators
        memory_bytes = max(64 << 20, (backend.available_memory_bytes(device) - fixed) // 4)
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


def _kde_columns(labels, weights, num_classes: int):
    """The row-sum columns H [N, R·(1 + C)]: for each resample r, (w_r, w_r ⊙ one-hot)."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    base = jnp.concatenate([jnp.ones((labels.shape[0], 1), jnp.float32), onehot], axis=1)  # [N, 1 + C]
    h = weights.astype(jnp.float32)[:, :, None] * base[None]  # [R, N, 1 + C]
    return jnp.moveaxis(h, 0, 1).reshape(labels.shape[0], -1)


@functools.partial(jax.jit, static_argnames=("num_classes", "block_size", "mesh"))
def _kde_sums(t, labels, weights, noise_var, *, num_classes: int, block_size: int, mesh=None):
    """Weighted kernel row sums S_isk = Σ_j H_jk exp(−D_ij / s) for both scales s, blockwise.

    Args:
      t: [N, D] activations.
      labels: [N] int32 labels.
      weights: [R, N] point multiplicities (row 0: the full sample).
      noise_var: σ² (traced).
      num_classes: C.
      block_size: B, rows per block.
      mesh: a one-axis ``"data"`` mesh to split the block pairs over, or None.

    Returns:
      ``(sums [N, 2, R·(1 + C)], finite, max_sq)``: the sums at s = 2σ², then 8σ², with the
      columns H of :func:`_kde_columns`; whether every activation was finite (or the check
      overflowed: see :func:`jaxmi.estimators.validation.all_finite`); max ‖t_i − mean‖².
    """
    n, d = t.shape
    t = t.astype(jnp.float32)
    h = _kde_columns(labels, weights, num_classes)
    k = h.shape[1]
    b = block_size
    nb = -(-n // b)
    pad = nb * b - n
    # Distances are shift-invariant; centring limits float32 rounding. The centred rows are
    # written into a zero-padded buffer, which XLA keeps as one [N, D] copy (a jnp.where mask
    # of the padded rows needed several; benchmarks/README.md, estimator_scale). Padded rows
    # are zeros, like the centred data's mean, and carry zero weight.
    t = jnp.zeros((n + pad, d), jnp.float32).at[:n].set(t - jnp.mean(t, axis=0, keepdims=True))
    h = jnp.pad(h, ((0, pad), (0, 0)))  # padded rows carry zero weight in every column
    sq = jnp.sum(t * t, axis=1)
    # NaN/±Inf anywhere reach the mean, hence every row's norm; a non-finite sum that is a
    # mere overflow is told apart on the host (all_finite).
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


def _float32_rounding_bound(sums, max_sq, noise_var: float) -> float:
    """Bound on the relative rounding error of any float32 row sum (hence on |Δ ln S_i|).

    Distances from the Gram identity D = |a|² + |b|² − 2 a·b (data centred) are off by about
    δ = 2·eps·max‖t‖². A kernel term exp(−D/s) is then off by a factor e^(±δ/s); the diagonal
    term (D = 0, exactly 1) has no error. So a row sum S_i (and every class-restricted sum, a
    subset of the same terms) is off by at most (δ/s)·(S_i − 1)/S_i: large norms only matter
    when the row also has neighbours within a few σ. Layers whose points are all far apart
    (wide layers, typically) therefore keep the float32 pass.

    Args:
      sums: [N, 2, K] row sums from :func:`_kde_sums`.
      max_sq: max ‖t_i − mean‖².
      noise_var: σ².

    Returns:
      The bound (``inf`` when the norms exceed float32's range).
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
    """The sums of :func:`_kde_sums`, in float64 on the host (rows in blocks, O(N·B) memory)."""
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


def kde_compute(t, y, c, weights, *, noise_var: float = 0.1, block_size: int | None = None,
                devices=None, **_) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both KDE bounds for the full sample and every resample, from one Gram pass.

    Args:
      t: [N, D] checked activations (:func:`jaxmi.estimators.validation.validate`).
      y: [N] int32 labels.
      c: number of classes C.
      weights: [R, N] point multiplicities (row 0: the full sample).
      noise_var: σ² > 0.
      block_size: rows per block (default :func:`choose_block_size`).
      devices: devices to split the pass over (default: all local devices).

    Returns:
      ``{"kde_upper": (I_XT [R], I_TY [R]), "kde_lower": (...)}`` in bits.
    """
    mesh = _kde_mesh(devices)
    cols = weights.shape[0] * (c + 1)
    b = int(block_size or choose_block_size(t.shape[0], t.shape[1], columns=cols))
    w = jnp.asarray(weights, jnp.float32)
    sums, finite, max_sq = _kde_sums(t, y, w, jnp.float32(noise_var), num_classes=c, block_size=b, mesh=mesh)
    raise_if_nonfinite(finite or all_finite(t), "activations")
    if _float32_rounding_bound(sums, max_sq, noise_var) > MAX_KERNEL_ROUNDING:
        # float32 distances could move the row sums by more than MAX_KERNEL_ROUNDING: redo
        # this layer in float64 on the host (exact, slower).
        sums = jnp.asarray(_kde_sums_float64(np.asarray(t), np.asarray(y), np.asarray(weights),
                                             float(noise_var), c, b), jnp.float32)
    i_xt, i_ty = jax.device_get(_kde_from_sums(sums, y, w, num_classes=c))
    return {"kde_upper": (i_xt[0], i_ty[0]), "kde_lower": (i_xt[1], i_ty[1])}


def kde_mi(activations, labels, *, num_classes: int | None = None, noise_var: float = 0.1,
           block_size: int | None = None, devices=None) -> dict[str, dict[str, float]]:
    """KDE upper and lower bounds on I(X;T) and I(T;Y), in bits, from one distance pass.

    T is treated as the layer output plus Gaussian noise N(0, σ²I); H(T) of the resulting
    mixture is bounded with pairwise distances, at exponent scale s = 2σ² (upper bound) and
    s = 8σ² (lower bound)::

        I(X;T) = log₂ N − (1/N) Σ_i log₂ Σ_j exp(−‖t_i − t_j‖² / s)

    and I(T;Y) as in the module docstring. Distances come from the Gram identity in float32;
    when the rounding bound of :func:`_float32_rounding_bound` could exceed
    :data:`MAX_KERNEL_ROUNDING` (only for squared norms above ~25,000 at σ² = 0.1 *and* rows
    with neighbours within a few σ), the layer is recomputed in float64 on the host.

    Args:
      activations: [N, D] float array, one flattened layer output per sample.
      labels: [N] integer class labels.
      num_classes: number of classes (default: max(labels) + 1). Classes absent from the
        sample contribute nothing.
      noise_var: σ², the variance of the Gaussian noise added to T (0.1 in the paper).
      block_size: rows per block (default: :func:`choose_block_size`, from the free memory).
      devices: devices to split the pass over (default: all local devices).

    Returns:
      ``{"kde_upper": {"I_XT": float, "I_TY": float}, "kde_lower": {...}}`` in bits.

    References:
      Kolchinsky & Tracey (2017); Saxe et al. (2018).
    """
    check_noise_var(noise_var)
    t, y, c = validate(activations, labels, num_classes)
    res = kde_compute(t, y, c, unit_weights(t.shape[0]), noise_var=noise_var, block_size=block_size,
                      devices=devices)
    return {m: {"I_XT": float(v[0][0]), "I_TY": float(v[1][0])} for m, v in res.items()}
