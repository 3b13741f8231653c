"""The replicated blockwise Gram pass of the KDE bounds: kernel row sums, block size, rounding bound.

With D_ij = ‖t_i − t_j‖², a pass computes every row's weighted kernel sums
S_isr = Σ_j w_rj exp(−D_ij / s) at the pass's exponent scales s, over all points and over the
points of the row's own class (the kernel block masked by label equality), for every
resample r (:mod:`jaxmi.estimators.bootstrap`). Rows are processed in blocks of B
(:func:`choose_block_size`), only the blocks on and above the diagonal, in O(N·B + B²)
memory, read in class order so that the block pairs whose rows share no class skip the
same-class products; with several devices every device holds the layer and the block pairs are split
between them (:func:`kde_sums`). float32, with a rounding bound
(:func:`float32_rounding_bound`) that sends a layer to an exact pass (:func:`kde_sums_float64`
on the host) when float32 could be off by more than :data:`MAX_KERNEL_ROUNDING`.

The pass with the rows sharded over the devices is :mod:`jaxmi.estimators.kde_ring`; the bounds
built from the sums, :mod:`jaxmi.estimators.kde`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxmi import backend, parallel

__all__ = ["choose_block_size", "pass_block_size", "sweep_scales", "kde_mesh", "kde_columns", "two_sums", "kde_sums",
           "full_sample_totals", "kernel_fn", "column_mean", "centred_block", "block_distances", "direct_distances",
           "float32_rounding_bound", "kde_sums_float64", "MAX_KERNEL_ROUNDING"]

_F32_EPS = float(np.finfo(np.float32).eps)
#: Relative rounding of one product term per matrix-product precision: float32; three
#: bfloat16 passes (TPU ``"high"``); one bfloat16 pass or TF32 (``"default"``).
_PRODUCT_EPS = {"highest": _F32_EPS, "high": 2.0 ** -16, "default": 2.0 ** -8}
#: Largest relative float32 rounding error of a kernel row sum accepted before a layer is
#: recomputed in float64 (ln 1.03 / ln 2 ≈ 0.043 bits in the largest-norm rows).
MAX_KERNEL_ROUNDING = 3e-2


def choose_block_size(n: int, d: int, *, columns: int = 11, max_block: int | None = None,
                      memory_bytes: int | None = None, device: jax.Device | None = None, scales: int = 2) -> int:
    """The row-block size B of the blockwise KDE pass, from the free memory.

    One scan step holds two [B, D] row blocks, the distances and a kernel block per exponent
    scale ([B, B] each) and four [B, columns] products in float32, about
    ``4·(2·B·D + (6 + scales)·B² + 4·B·columns)`` bytes (``scales`` = 2 for one σ²: both bounds). B is
    the largest power-of-two fraction of ``max_block`` whose step fits in ``memory_bytes``,
    then balanced so that the last block wastes at most 7 padding rows.

    Args:
      n: number of samples N.
      d: feature width D.
      columns: columns of the row-sum matrix, classes · (1 + bootstrap resamples).
      max_block: upper limit on B (default :func:`jaxmi.backend.kde_max_block` for this width
        and number of scales).
      memory_bytes: per-step budget in bytes (default: a quarter of
        :func:`jaxmi.backend.available_memory_bytes` after the O(N·columns) accumulators of
        the whole pass, at least 64 MiB).
      device: the device whose memory counts (default: the first local device).
      scales: exponent scales per pass (2 for one σ², 2·S for a sweep of S values).

    Returns:
      The block size B, a multiple of 8, ≥ 8.
    """
    device = device if device is not None else jax.local_devices()[0]
    if max_block is None:
        max_block = backend.kde_max_block(d, device, scales)
    if memory_bytes is None:
        fixed = 4 * 3 * n * columns  # the accumulators (rows are centred block by block: no [N, D] copy)
        memory_bytes = max(64 << 20, (backend.available_memory_bytes(device) - fixed) // 4)
    budget = int(memory_bytes)
    b = max(8, min(int(max_block), n))
    while b > 8 and 4 * (2 * b * d + (6 + scales) * b * b + 4 * b * columns) > budget:
        b //= 2
    num_blocks = -(-n // b)
    b = -(-n // num_blocks)
    return max(8, -(-b // 8) * 8)


def pass_block_size(n: int, d: int, *, num_classes: int, resamples: int = 1, scales: int = 2) -> int:
    """The block size one KDE pass uses by default (:func:`choose_block_size` with its row-sum
    columns, 2 × resamples × scales / 2): a run fixes it once per probe so that no
    epoch recompiles when the free memory changes.

    Args:
      n, d: samples and width of the layer.
      num_classes: C (the sums no longer depend on it; kept for callers).
      resamples: 1 + bootstrap resamples.
      scales: exponent scales per pass: 2 for one σ², the distinct ones of a sweep.
    """
    return choose_block_size(n, d, columns=resamples * scales, scales=scales)


def sweep_scales(noise_vars) -> int:
    """The number of distinct exponent scales (2σ², 8σ²) a sweep over ``noise_vars`` computes."""
    nv = np.asarray(noise_vars, np.float64)
    return int(np.unique(np.concatenate([2.0 * nv, 8.0 * nv])).size)


#: The mesh the KDE pass is split over (:func:`jaxmi.parallel.rows_mesh`).
kde_mesh = parallel.rows_mesh


def kde_columns(labels, weights, num_classes: int):
    """The row-sum columns H = Wᵀ [N, R]: each resample's point multiplicities. A pass sums
    every row's kernels against them twice, over all points and over the points of the row's
    own class (the kernel masked by label equality), so the sums have 2R columns whatever the
    number of classes C (a per-class layout would need R·C)."""
    del labels, num_classes
    return jnp.transpose(weights.astype(jnp.float32))


def two_sums(kern, same, h, *, precision, rows: bool):
    """The kernel sums of one block pair against columns h, over all points and over the same
    class: rows (``rows``) [B, S, 2K] = Σ_j kern[i, s, j] h[j], or transposed [2K, S, B]."""
    b, num_scales = kern.shape[0], kern.shape[1]
    masked = kern * same[:, None, :].astype(kern.dtype)
    k = h.shape[1]
    if rows:
        out = [jnp.dot(x.reshape(b * num_scales, -1), h, precision=precision).reshape(b, num_scales, k)
               for x in (kern, masked)]
        return jnp.concatenate(out, axis=-1)
    out = [jnp.dot(h.T, x.reshape(b, -1), precision=precision).reshape(k, num_scales, -1) for x in (kern, masked)]
    return jnp.concatenate(out, axis=0)


@functools.partial(jax.jit, static_argnames=("num_classes", "block_size", "mesh", "paired", "chain", "with_nn",
                                             "precision", "exact", "class_order"))
def kde_sums(t, labels, weights, scale, *, num_classes: int, block_size: int, mesh=None, paired: bool = True,
             chain: int = 0, with_nn: bool = True, precision: str = "highest", exact: bool = False,
             class_order: bool = True):
    """Weighted kernel row sums at several scales s, blockwise, and every row's
    nearest-neighbour squared distance: S_isr = Σ_j w_rj exp(−D_ij / s) and, in columns R …
    2R − 1, the same over the j with y_j = y_i.

    Args:
      t: [N, D] activations.
      labels: [N] int32 labels.
      weights: [R, N] point multiplicities (row 0: the full sample).
      scale: with ``paired``, σ² (traced), for the two scales s = 2σ², 8σ² (the upper bound's
        kernel computed as the fourth power of the lower bound's); otherwise [S] scales s.
      num_classes: C.
      block_size: B, rows per block.
      mesh: a one-axis ``"data"`` mesh to split the block pairs over, or None.
      paired: see ``scale``.
      chain: 0, or with ascending scales of ratio exactly 4 a stride k: the kernel is an
        exponential at every k-th scale from the top and, below each, the fourth power of the
        next larger scale's (exp(−D/s) = exp(−D/4s)⁴), which underflows gracefully and adds at
        most a few float32 ulps of relative error per step.
      with_nn: also find every row's nearest neighbour (else ``nn`` is all ``inf``).
      precision: the matrix-product precision (:func:`jaxmi.backend.resolve_kde_precision`).
      exact: distances as sums of squared coordinate differences, in chunks of columns (no
        cancellation between large norms: the fallback when the Gram identity's float32
        rounding could matter), instead of |a|² + |b|² − 2 a·b.
      class_order: read the rows sorted by label (stable), so that the block pairs whose rows
        share no class, most of them, skip the same-class products (their sums there are zero);
        the sums come back in the layer's row order and equal the unsorted pass's (``False``:
        every pair computes both) up to float32 summation order.

    Returns:
      ``(sums [N, S, 2R], finite, max_sq, nn [N])``: the sums over all points (columns < R)
      and over the row's class (columns ≥ R); whether every activation was finite (or the check overflowed: see
      :func:`jaxmi.estimators.validation.all_finite`); max ‖t_i − mean‖²; min_{j≠i} D_ij.
    """
    n, d = t.shape
    t = t.astype(jnp.float32)
    h = kde_columns(labels, weights, num_classes)
    k = h.shape[1]
    b = block_size
    nb = -(-n // b)
    pad = nb * b - n
    labels = labels.astype(jnp.int32)
    # The pass reads row order[p] at position p: sorted by class (class_order), else the layer's order.
    order = jnp.argsort(labels, stable=True).astype(jnp.int32) if class_order else jnp.arange(n, dtype=jnp.int32)
    # Distances are shift-invariant; centring limits float32 rounding. Rows are centred block
    # by block as the pass reads them, so beside the layer itself the pass holds O(B·D), not
    # a second [N, D] copy; positions past N (the last block's padding) are zeros with zero weight.
    mean = column_mean(t, n)
    sq = jnp.pad(jnp.sum(jnp.square(t - mean), axis=1)[order], (0, pad))  # fused: no [N, D] temporary
    # NaN/±Inf anywhere reach the mean, hence every row's norm; a non-finite sum that is a
    # mere overflow is told apart on the host (all_finite).
    finite = jnp.isfinite(jnp.sum(sq))
    h = jnp.pad(h[order], ((0, pad), (0, 0)))  # padded rows carry zero weight in every column
    hb = h.reshape(nb, b, k)
    yb = jnp.pad(labels[order], (0, pad), constant_values=-1).reshape(nb, b)
    sqb = sq.reshape(nb, b)
    realb = (jnp.arange(nb * b) < n).reshape(nb, b)  # not a padded row
    # Each block's smallest and largest label: two blocks whose ranges do not overlap share no
    # class (in class order, every pair but those near the diagonal).
    lo = jnp.min(jnp.where(realb, yb, jnp.iinfo(jnp.int32).max), axis=1)
    top = jnp.max(yb, axis=1)

    if class_order:
        ob = jnp.pad(order, (0, pad)).reshape(nb, b)

        def block(t, i):
            return jnp.where(realb[i][:, None], jnp.take(t, ob[i], axis=0) - mean, 0.0)
    else:
        block = functools.partial(centred_block, size=b, rows=n, mean=mean)

    ndev = 1 if mesh is None else mesh.size
    ii, jj = np.triu_indices(nb)
    num_pairs = len(ii)
    per_dev = -(-num_pairs // ndev)
    pairs = np.zeros((per_dev * ndev, 3), np.int32)  # (row block, column block, real pair?)
    pairs[:num_pairs] = np.stack([ii, jj, np.ones_like(ii)], axis=1)
    ii_, jj_ = pairs[:, 0], pairs[:, 1]
    num_scales = 2 if paired else scale.shape[0]
    hi = jax.lax.Precision[precision.upper()]

    kernels = kernel_fn(scale, paired=paired, chain=chain, num_scales=num_scales)

    def run(t, sqb, hb, pairs):
        eye = jnp.eye(b, dtype=bool)

        def sums(x, h_, rows: bool):  # x [B, S, B] against h_ [B, K] → [S, B, K]
            if rows:  # to the rows of block i
                return jnp.swapaxes(jnp.dot(x.reshape(b * num_scales, -1), h_, precision=hi).reshape(b, num_scales, k),
                                    0, 1)
            return jnp.transpose(jnp.dot(h_.T, x.reshape(b, -1), precision=hi).reshape(k, num_scales, -1), (1, 2, 0))

        def step(carry, pair, with_same: bool = True):
            acc, nn = carry
            i, j, real = pair[0], pair[1], pair[2].astype(jnp.float32)
            dist = block_distances(block(t, i), block(t, j), sqb[i], sqb[j], exact=exact, precision=hi)
            self_pair = eye & (i == j)
            dist = jnp.where(self_pair, 0.0, dist)  # exact zeros on the diagonal
            kern = kernels(dist)  # [B, S, B]: a row of block i, a scale, a row of block j
            off = real * (i != j).astype(jnp.float32)
            if class_order:  # the same-class products only where the two blocks share a class (with_same)
                acc = acc.at[i, :, :, :k].add(sums(kern, hb[j], True) * real)
                acc = acc.at[j, :, :, :k].add(sums(kern, hb[i], False) * off)
                if with_same:
                    masked = kern * (yb[i][:, None] == yb[j][None, :])[:, None, :].astype(kern.dtype)
                    acc = acc.at[i, :, :, k:].add(sums(masked, hb[j], True) * real)
                    acc = acc.at[j, :, :, k:].add(sums(masked, hb[i], False) * off)
            else:  # both halves at every pair: plain matrix products on the [B·S, B] / [B, S·B] views
                same = yb[i][:, None] == yb[j][None, :]
                rows = two_sums(kern, same, hb[j], precision=hi, rows=True)  # [B, S, 2K]
                cols = two_sums(kern, same, hb[i], precision=hi, rows=False)  # [2K, S, B]
                rows, cols = jnp.swapaxes(rows, 0, 1), jnp.transpose(cols, (1, 2, 0))  # [S, B, 2K]
                acc = acc.at[i].add(rows * real)
                acc = acc.at[j].add(cols * off)
            if with_nn:  # nearest neighbours: the smallest distance to another real row
                other = jnp.where(self_pair | ~realb[j][None, :] | ~realb[i][:, None], jnp.inf, dist)
                nn = nn.at[i].min(jnp.where(real > 0, jnp.min(other, axis=1), jnp.inf))
                nn = nn.at[j].min(jnp.where((real > 0) & (i != j), jnp.min(other, axis=0), jnp.inf))
            return (acc, nn), None

        init = (jnp.zeros((nb, num_scales, b, 2 * k), jnp.float32), jnp.full((nb, b), jnp.inf, jnp.float32))
        if not class_order:
            return jax.lax.scan(step, init, pairs)[0]
        # The pairs whose blocks share a class first (their number depends on the labels: loops
        # with a traced trip count), then the others, without the same-class products.
        shared = pairs[:, 3] > 0
        pairs = pairs[jnp.argsort(~shared, stable=True)]
        m = jnp.sum(shared.astype(jnp.int32))
        carry = jax.lax.fori_loop(0, m, lambda p, c: step(c, pairs[p], True)[0], init)
        return jax.lax.fori_loop(m, pairs.shape[0], lambda p, c: step(c, pairs[p], False)[0], carry)

    pairs = jnp.asarray(pairs)
    if class_order:  # a fourth column: do the pair's blocks share a class?
        pairs = jnp.concatenate([pairs, ((top[ii_] >= lo[jj_]) & (top[jj_] >= lo[ii_])).astype(jnp.int32)[:, None]],
                                axis=1)
    if ndev == 1:
        acc, nn = run(t, sqb, hb, pairs)
    else:
        def local(t, sqb, hb, pairs):  # each device: its share of the block pairs, then a reduction
            acc, nn = run(t, sqb, hb, pairs)
            return jax.lax.psum(acc, parallel.DATA_AXIS), jax.lax.pmin(nn, parallel.DATA_AXIS)

        rep = PartitionSpec()
        acc, nn = jax.shard_map(local, mesh=mesh, in_specs=(rep, rep, rep, PartitionSpec(parallel.DATA_AXIS)),
                                out_specs=(rep, rep), check_vma=False)(t, sqb, hb, pairs)
    acc = jnp.moveaxis(acc, 1, 2).reshape(nb * b, num_scales, 2 * k)[:n]  # [N, S, 2K] at the read positions
    nn = nn.reshape(-1)[:n]
    if class_order:  # back to the layer's row order
        back = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))  # the position of a row
        acc, nn = acc[back], nn[back]
    return acc, finite, jnp.max(sq), nn


def full_sample_totals(sums, num_classes: int):
    """Every row's kernel sum over all points for the full sample (resample 0): [N, S]."""
    del num_classes
    return sums[:, :, 0]


def kernel_fn(scale, *, paired: bool, chain: int, num_scales: int):
    """dist [B, B] → kernels [B, S, B] at the pass's exponent scales (see :func:`kde_sums`)."""

    def kernels(dist):
        if paired:
            k_lower = jnp.exp(-dist * (1.0 / (8.0 * scale)))  # exp(−D / 8σ²)
            return jnp.stack([jnp.square(jnp.square(k_lower)), k_lower], axis=1)  # exp(−D / 2σ²) = k_lower⁴
        if not chain:
            return jnp.exp(dist[:, None, :] * (-1.0 / scale)[None, :, None])  # [B, S, B]
        out = [None] * num_scales
        for top in range(num_scales - 1, -1, -chain):
            out[top] = jnp.exp(dist * (-1.0 / scale[top]))
            for lower in range(top - 1, max(top - chain, -1), -1):
                out[lower] = jnp.square(jnp.square(out[lower + 1]))
        return jnp.stack(out, axis=1)

    return kernels


def column_mean(t, n: int):
    """The mean row, Σ_i t_i / n, as a vector-matrix product: a column reduction (``t.mean(0)``)
    costs XLA:CPU a transposed copy of the whole layer, the product reads it in place."""
    return jnp.dot(jnp.ones((t.shape[0],), t.dtype), t, precision=jax.lax.Precision.HIGHEST) / n


def centred_block(t, i, *, size: int, rows: int, mean):
    """Rows i·B … i·B + B − 1 of ``t`` (B = ``size``), centred, zeros past ``rows``."""
    idx = i * size + jnp.arange(size)
    x = jnp.take(t, jnp.minimum(idx, rows - 1), axis=0) - mean
    return jnp.where((idx < rows)[:, None], x, 0.0)


def block_distances(a, c, sq_a, sq_c, *, exact: bool, precision):
    """Squared distances between the rows of two centred blocks: from the Gram identity with
    the rows' squared norms, or (``exact``) as direct differences."""
    if exact:
        return direct_distances(a, c)
    g = jnp.dot(a, c.T, precision=precision)
    return jnp.maximum(sq_a[:, None] + sq_c[None, :] - 2.0 * g, 0.0)


def direct_distances(a, b, chunk_bytes: int = 1 << 26):
    """‖a_i − b_j‖² for rows a [B, D], b [B, D] as sums of squared differences over column chunks
    ([B, B, C] temporaries of at most ``chunk_bytes``): float32 without the cancellation of the
    Gram identity, at the cost of elementwise work."""
    rows, d = a.shape
    c = max(1, min(d, chunk_bytes // (4 * rows * rows)))
    pad = -d % c
    a, b = jnp.pad(a, ((0, 0), (0, pad))), jnp.pad(b, ((0, 0), (0, pad)))

    def add(k, acc):
        x = jax.lax.dynamic_slice_in_dim(a, k * c, c, axis=1)
        y = jax.lax.dynamic_slice_in_dim(b, k * c, c, axis=1)
        return acc + jnp.sum(jnp.square(x[:, None, :] - y[None, :, :]), axis=-1)

    return jax.lax.fori_loop(0, (d + pad) // c, add, jnp.zeros((rows, rows), jnp.float32))


def float32_rounding_bound(sums, max_sq, scales, num_classes: int, precision: str = "highest") -> float:
    """Bound on the relative rounding error of any float32 row sum (hence on |Δ ln S_i|).

    Distances from the Gram identity D = |a|² + |b|² − 2 a·b (data centred) are off by about
    δ = 2·eps·max‖t‖². A kernel term exp(−D/s) is then off by a factor e^(±δ/s); the diagonal
    term (D = 0, exactly 1) has no error. So a row sum S_i (and every class-restricted sum, a
    subset of the same terms) is off by at most (δ/s)·(S_i − 1)/S_i: large norms only matter
    when the row also has neighbours within a few σ. Layers whose points are all far apart
    (wide layers, typically) therefore keep the float32 pass.

    Args:
      sums: [N, S, K] row sums from :func:`kde_sums`.
      max_sq: max ‖t_i − mean‖².
      scales: the S exponent scales s.
      num_classes: C.
      precision: the products' precision (its rounding replaces float32's in δ).

    Returns:
      The bound (``inf`` when the norms exceed float32's range).
    """
    if not math.isfinite(float(max_sq)):  # norms beyond float32's range: float32 distances are meaningless
        return math.inf
    delta = 2.0 * _PRODUCT_EPS[precision] * float(max_sq)
    if delta / min(scales) <= MAX_KERNEL_ROUNDING:  # cheap check first, no extra pass
        return delta / min(scales)
    off = np.asarray(jnp.max(1.0 - 1.0 / full_sample_totals(sums, num_classes), axis=0), np.float64)  # [S]
    off = np.nan_to_num(off, nan=1.0)  # a non-finite float32 sum can only mean "redo in float64"
    return float(max(delta / s * max(o, 0.0) for s, o in zip(scales, off)))


def kde_sums_float64(t: np.ndarray, labels: np.ndarray, weights: np.ndarray, scales, num_classes: int,
                     block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The sums and nearest-neighbour distances of :func:`kde_sums`, in float64 on the host
    (rows in blocks, O(N·B) memory)."""
    t = np.asarray(t, np.float64)
    t = t - t.mean(axis=0, keepdims=True)
    n = t.shape[0]
    sq = np.einsum("nd,nd->n", t, t)
    h = np.asarray(weights, np.float64).T  # [N, R]
    labels = np.asarray(labels)
    out = np.empty((n, len(scales), 2 * h.shape[1]))
    nn = np.empty(n)
    for a in range(0, n, block_size):
        rows = slice(a, min(n, a + block_size))
        dist = np.maximum(sq[rows, None] + sq[None, :] - 2.0 * (t[rows] @ t.T), 0.0)
        diag = (np.arange(dist.shape[0]), np.arange(a, a + dist.shape[0]))
        dist[diag] = 0.0
        same = labels[rows, None] == labels[None, :]
        for k, scale in enumerate(scales):
            e = np.exp(-dist / scale)
            out[rows, k] = np.concatenate([e @ h, (e * same) @ h], axis=1)
        dist[diag] = np.inf
        nn[rows] = dist.min(axis=1)
    return out, nn
