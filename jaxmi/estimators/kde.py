"""KDE upper and lower bounds on I(X;T) and I(T;Y), from one blockwise Gram pass per layer.

With D_ij = ‖t_i − t_j‖² and s the exponent scale (2σ² for the pairwise-KL upper bound,
8σ² for the Bhattacharyya lower bound), in nats::

    I(X;T) = ln N − (1/N) Σ_i ln Σ_j exp(−D_ij / s)
    I(T;Y) = ln N − Σ_c p_c ln N_c − (1/N) Σ_i [ln Σ_j exp(−D_ij/s) − ln Σ_{j: y_j = y_i} exp(−D_ij/s)]

Both bounds and both terms come from the same kernel row sums (per row and bootstrap
resample: over all points, and over the points of the row's own class, the kernel block
masked by label equality, so a pass carries 2R sum columns whatever the number of classes),
which are computed blockwise (rows in blocks of B, only the blocks on and above the diagonal, O(N·B + B²)
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

__all__ = ["kde_mi", "kde_compute", "kde_sweep", "choose_block_size", "pass_block_size", "sweep_scales",
           "MAX_KERNEL_ROUNDING", "SELF_DOMINATED"]

_LOG2E = 1.0 / math.log(2.0)
_F32_EPS = float(np.finfo(np.float32).eps)
#: Relative rounding of one product term per matrix-product precision: float32; three
#: bfloat16 passes (TPU ``"high"``); one bfloat16 pass or TF32 (``"default"``).
_PRODUCT_EPS = {"highest": _F32_EPS, "high": 2.0 ** -16, "default": 2.0 ** -8}
#: Largest relative float32 rounding error of a kernel row sum accepted before a layer is
#: recomputed in float64 (ln 1.03 / ln 2 ≈ 0.043 bits in the largest-norm rows).
MAX_KERNEL_ROUNDING = 3e-2
#: A row whose kernel sum is below 1 + this is "self-dominated": its neighbours add less than
#: 1 % to its own term, so the estimate sees it as an isolated point.
SELF_DOMINATED = 1e-2
#: On a σ² grid of ratio 4, :func:`kde_sweep` computes an exponential at every
#: ``CHAIN_STRIDE``-th exponent scale and the others as fourth powers (see :func:`_kde_sums`).
CHAIN_STRIDE = 3


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


def _kde_mesh(devices):
    """The mesh the KDE pass is split over: all local devices by default, None for one device."""
    devices = list(jax.local_devices() if devices is None else devices)
    if len(devices) <= 1:
        return None
    return parallel.make_mesh(devices=devices)


def _kde_columns(labels, weights, num_classes: int):
    """The row-sum columns H = Wᵀ [N, R]: each resample's point multiplicities. A pass sums
    every row's kernels against them twice, over all points and over the points of the row's
    own class (the kernel masked by label equality), so the sums have 2R columns whatever the
    number of classes C (a per-class layout would need R·C)."""
    del labels, num_classes
    return jnp.transpose(weights.astype(jnp.float32))


def _two_sums(kern, same, h, *, precision, rows: bool):
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
                                             "precision", "exact"))
def _kde_sums(t, labels, weights, scale, *, num_classes: int, block_size: int, mesh=None, paired: bool = True,
              chain: int = 0, with_nn: bool = True, precision: str = "highest", exact: bool = False):
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

    Returns:
      ``(sums [N, S, 2R], finite, max_sq, nn [N])``: the sums over all points (columns < R)
      and over the row's class (columns ≥ R); whether every activation was finite (or the check overflowed: see
      :func:`jaxmi.estimators.validation.all_finite`); max ‖t_i − mean‖²; min_{j≠i} D_ij.
    """
    n, d = t.shape
    t = t.astype(jnp.float32)
    h = _kde_columns(labels, weights, num_classes)
    k = h.shape[1]
    b = block_size
    nb = -(-n // b)
    pad = nb * b - n
    # Distances are shift-invariant; centring limits float32 rounding. Rows are centred block
    # by block as the pass reads them, so beside the layer itself the pass holds O(B·D), not
    # a second [N, D] copy; rows past N (the last block's padding) are zeros with zero weight.
    mean = _column_mean(t, n)
    sq = jnp.pad(jnp.sum(jnp.square(t - mean), axis=1), (0, pad))  # fused: no [N, D] temporary
    # NaN/±Inf anywhere reach the mean, hence every row's norm; a non-finite sum that is a
    # mere overflow is told apart on the host (all_finite).
    finite = jnp.isfinite(jnp.sum(sq))
    h = jnp.pad(h, ((0, pad), (0, 0)))  # padded rows carry zero weight in every column
    hb = h.reshape(nb, b, k)
    yb = jnp.pad(labels.astype(jnp.int32), (0, pad), constant_values=-1).reshape(nb, b)
    sqb = sq.reshape(nb, b)
    realb = (jnp.arange(nb * b) < n).reshape(nb, b)  # not a padded row

    block = functools.partial(_centred_block, size=b, rows=n, mean=mean)

    ndev = 1 if mesh is None else mesh.size
    ii, jj = np.triu_indices(nb)
    num_pairs = len(ii)
    per_dev = -(-num_pairs // ndev)
    pairs = np.zeros((per_dev * ndev, 3), np.int32)  # (row block, column block, real pair?)
    pairs[:num_pairs] = np.stack([ii, jj, np.ones_like(ii)], axis=1)
    num_scales = 2 if paired else scale.shape[0]
    hi = jax.lax.Precision[precision.upper()]

    kernels = _kernel_fn(scale, paired=paired, chain=chain, num_scales=num_scales)

    def run(t, sqb, hb, pairs):
        eye = jnp.eye(b, dtype=bool)

        def step(carry, pair):
            acc, nn = carry
            i, j, real = pair[0], pair[1], pair[2].astype(jnp.float32)
            dist = _block_distances(block(t, i), block(t, j), sqb[i], sqb[j], exact=exact, precision=hi)
            self_pair = eye & (i == j)
            dist = jnp.where(self_pair, 0.0, dist)  # exact zeros on the diagonal
            kern = kernels(dist)  # [B, S, B]: a row of block i, a scale, a row of block j
            same = yb[i][:, None] == yb[j][None, :]
            # Plain matrix products on the [B·S, B] / [B, S·B] views (no batch dimension): to
            # the rows of block i, and (transposed) to the rows of block j; all and same-class.
            rows = _two_sums(kern, same, hb[j], precision=hi, rows=True)  # [B, S, 2K]
            cols = _two_sums(kern, same, hb[i], precision=hi, rows=False)  # [2K, S, B]
            rows, cols = jnp.swapaxes(rows, 0, 1), jnp.transpose(cols, (1, 2, 0))  # [S, B, 2K]
            acc = acc.at[i].add(rows * real)
            acc = acc.at[j].add(cols * (real * (i != j).astype(jnp.float32)))
            if with_nn:  # nearest neighbours: the smallest distance to another real row
                other = jnp.where(self_pair | ~realb[j][None, :] | ~realb[i][:, None], jnp.inf, dist)
                nn = nn.at[i].min(jnp.where(real > 0, jnp.min(other, axis=1), jnp.inf))
                nn = nn.at[j].min(jnp.where((real > 0) & (i != j), jnp.min(other, axis=0), jnp.inf))
            return (acc, nn), None

        init = (jnp.zeros((nb, num_scales, b, 2 * k), jnp.float32), jnp.full((nb, b), jnp.inf, jnp.float32))
        return jax.lax.scan(step, init, pairs)[0]

    if ndev == 1:
        acc, nn = run(t, sqb, hb, jnp.asarray(pairs))
    else:
        def local(t, sqb, hb, pairs):  # each device: its share of the block pairs, then a reduction
            acc, nn = run(t, sqb, hb, pairs)
            return jax.lax.psum(acc, parallel.DATA_AXIS), jax.lax.pmin(nn, parallel.DATA_AXIS)

        rep = PartitionSpec()
        acc, nn = jax.shard_map(local, mesh=mesh, in_specs=(rep, rep, rep, PartitionSpec(parallel.DATA_AXIS)),
                                out_specs=(rep, rep), check_vma=False)(t, sqb, hb, jnp.asarray(pairs))
    acc = jnp.moveaxis(acc, 1, 2).reshape(nb * b, num_scales, 2 * k)[:n]  # [N, S, 2K]
    return acc, finite, jnp.max(sq), nn.reshape(-1)[:n]


def full_sample_totals(sums, num_classes: int):
    """Every row's kernel sum over all points for the full sample (resample 0): [N, S]."""
    del num_classes
    return sums[:, :, 0]


@functools.partial(jax.jit, static_argnames=("num_classes", "block_size", "mesh", "paired", "chain", "with_nn",
                                             "precision", "exact", "num_rows"))
def _kde_sums_ring(t, labels, weights, scale, *, num_classes: int, block_size: int, mesh, paired: bool = True,
                   chain: int = 0, with_nn: bool = True, precision: str = "highest", exact: bool = False,
                   num_rows: int | None = None):
    """:func:`_kde_sums` with the rows sharded over the mesh's devices instead of replicated.

    Each of the M devices holds N/M rows (and a visiting shard of N/M more); the shards travel
    round a ring (``ppermute``), and at step s each device sums its own rows' kernels against
    the shard of its s-th neighbour. Per device the layer takes about 4·N·D/M floats (its own
    rows, the visiting shard, the one arriving, and the pass's double buffer) instead of N·D,
    plus the O(B·D) blocks of the pass; every device computes its rows against all N columns, so the
    pass does the full N² kernel rather than the upper triangle (twice the products of the
    replicated pass, spread over M devices). Same arguments and outputs as :func:`_kde_sums`;
    ``num_rows``: the real rows N when ``t`` (and ``labels``, ``weights``) arrive already padded
    with zero rows (zero weights) to a multiple of M (default: all rows are real).
    """
    rows_in, d = t.shape
    n = rows_in if num_rows is None else num_rows
    ndev = mesh.size
    axis = parallel.DATA_AXIS
    t = t.astype(jnp.float32)
    h = _kde_columns(labels, weights, num_classes)
    k = h.shape[1]
    mean = _column_mean(t, n)  # padded rows are zeros
    m = -(-rows_in // ndev)  # rows per device; rows past N are zeros with zero weight
    pad = m * ndev - rows_in
    yl = labels.astype(jnp.int32)
    if pad:
        t, h = jnp.pad(t, ((0, pad), (0, 0))), jnp.pad(h, ((0, pad), (0, 0)))
        yl = jnp.pad(yl, (0, pad), constant_values=-1)
    real = jnp.arange(m * ndev) < n
    sq = jnp.where(real, jnp.sum(jnp.square(t - mean), axis=1), 0.0)
    finite, max_sq = jnp.isfinite(jnp.sum(sq)), jnp.max(sq)
    rows_spec, rep = PartitionSpec(axis), PartitionSpec()
    t = jax.lax.with_sharding_constraint(t, jax.sharding.NamedSharding(mesh, rows_spec))
    b = min(block_size, m)
    nb = -(-m // b)
    lpad = nb * b - m
    num_scales = 2 if paired else scale.shape[0]
    hi = jax.lax.Precision[precision.upper()]
    ii, jj = np.meshgrid(np.arange(nb), np.arange(nb), indexing="ij")
    pairs = jnp.asarray(np.stack([ii.ravel(), jj.ravel()], axis=1), jnp.int32)
    perm = [(r, (r + 1) % ndev) for r in range(ndev)]

    def local(t, sq, h, real, yl, mean, scale):
        kernels = _kernel_fn(scale, paired=paired, chain=chain, num_scales=num_scales)
        blocked = lambda a: jnp.pad(a, ((0, lpad),) + ((0, 0),) * (a.ndim - 1)).reshape((nb, b) + a.shape[1:])
        sqb, hb, realb, yb = blocked(sq), blocked(h), blocked(real), blocked(yl)
        eye = jnp.eye(b, dtype=bool)

        block = functools.partial(_centred_block, size=b, rows=m, mean=mean)

        def ring_step(carry, step):
            acc, nn, vt, vsqb, vhb, vrealb, vyb = carry

            def pair_step(c, pair):
                acc, nn = c
                i, j = pair[0], pair[1]
                dist = _block_distances(block(t, i), block(vt, j), sqb[i], vsqb[j], exact=exact, precision=hi)
                self_pair = eye & (i == j) & (step == 0)  # step 0: the visiting shard is our own
                dist = jnp.where(self_pair, 0.0, dist)
                kern = kernels(dist)  # [B, S, B]
                same = yb[i][:, None] == vyb[j][None, :]
                rows = _two_sums(kern, same, vhb[j], precision=hi, rows=True)  # [B, S, 2K]
                acc = acc.at[i].add(jnp.swapaxes(rows, 0, 1))
                if with_nn:
                    other = jnp.where(self_pair | ~vrealb[j][None, :] | ~realb[i][:, None], jnp.inf, dist)
                    nn = nn.at[i].min(jnp.min(other, axis=1))
                return (acc, nn), None

            acc, nn = jax.lax.scan(pair_step, (acc, nn), pairs)[0]
            vt, vsqb, vhb, vrealb, vyb = jax.lax.ppermute((vt, vsqb, vhb, vrealb, vyb), axis, perm)
            return (acc, nn, vt, vsqb, vhb, vrealb, vyb), None

        init = (jnp.zeros((nb, num_scales, b, 2 * k), jnp.float32), jnp.full((nb, b), jnp.inf, jnp.float32),
                t, sqb, hb, realb, yb)
        acc, nn = jax.lax.scan(ring_step, init, jnp.arange(ndev))[0][:2]
        return jnp.moveaxis(acc, 1, 2).reshape(nb * b, num_scales, 2 * k)[:m], nn.reshape(-1)[:m]

    acc, nn = jax.shard_map(local, mesh=mesh,
                            in_specs=(rows_spec, rows_spec, rows_spec, rows_spec, rows_spec, rep, rep),
                            out_specs=(rows_spec, rows_spec), check_vma=False)(t, sq, h, real, yl, mean, scale)
    return acc[:n], finite, max_sq, nn[:n]


def _kernel_fn(scale, *, paired: bool, chain: int, num_scales: int):
    """dist [B, B] → kernels [B, S, B] at the pass's exponent scales (see :func:`_kde_sums`)."""

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


def _column_mean(t, n: int):
    """The mean row, Σ_i t_i / n, as a vector-matrix product: a column reduction (``t.mean(0)``)
    costs XLA:CPU a transposed copy of the whole layer, the product reads it in place."""
    return jnp.dot(jnp.ones((t.shape[0],), t.dtype), t, precision=jax.lax.Precision.HIGHEST) / n


def _centred_block(t, i, *, size: int, rows: int, mean):
    """Rows i·B … i·B + B − 1 of ``t`` (B = ``size``), centred, zeros past ``rows``."""
    idx = i * size + jnp.arange(size)
    x = jnp.take(t, jnp.minimum(idx, rows - 1), axis=0) - mean
    return jnp.where((idx < rows)[:, None], x, 0.0)


def _block_distances(a, c, sq_a, sq_c, *, exact: bool, precision):
    """Squared distances between the rows of two centred blocks: from the Gram identity with
    the rows' squared norms, or (``exact``) as direct differences."""
    if exact:
        return _direct_distances(a, c)
    g = jnp.dot(a, c.T, precision=precision)
    return jnp.maximum(sq_a[:, None] + sq_c[None, :] - 2.0 * g, 0.0)


def _direct_distances(a, b, chunk_bytes: int = 1 << 26):
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


def _float32_rounding_bound(sums, max_sq, scales, num_classes: int, precision: str = "highest") -> float:
    """Bound on the relative rounding error of any float32 row sum (hence on |Δ ln S_i|).

    Distances from the Gram identity D = |a|² + |b|² − 2 a·b (data centred) are off by about
    δ = 2·eps·max‖t‖². A kernel term exp(−D/s) is then off by a factor e^(±δ/s); the diagonal
    term (D = 0, exactly 1) has no error. So a row sum S_i (and every class-restricted sum, a
    subset of the same terms) is off by at most (δ/s)·(S_i − 1)/S_i: large norms only matter
    when the row also has neighbours within a few σ. Layers whose points are all far apart
    (wide layers, typically) therefore keep the float32 pass.

    Args:
      sums: [N, S, K] row sums from :func:`_kde_sums`.
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


def _kde_sums_float64(t: np.ndarray, labels: np.ndarray, weights: np.ndarray, scales, num_classes: int,
                      block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The sums and nearest-neighbour distances of :func:`_kde_sums`, in float64 on the host
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


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _kde_from_sums(sums, labels, weights, *, num_classes: int):
    """I(X;T), I(T;Y) in bits at every scale and for every resample: arrays [S, R]."""
    n = sums.shape[0]
    r = weights.shape[0]
    w = weights.T[:, None, :]  # [N, 1, R]
    total, same = sums[..., :r], sums[..., r:]  # [N, S, R] each: over all points, over the row's class
    # A point absent from a resample (w = 0) has no term; guard log 0 · 0.
    log_total = jnp.where(w > 0, jnp.log(jnp.where(w > 0, total, 1.0)), 0.0)
    log_same = jnp.where(w > 0, jnp.log(jnp.where(w > 0, same, 1.0)), 0.0)
    counts = weights @ jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [R, C]
    h_y_term = jnp.sum(jnp.where(counts > 0, counts / n * jnp.log(jnp.maximum(counts, 1.0)), 0.0), axis=1)
    i_xt = jnp.log(n) - jnp.sum(w * log_total, axis=0) / n
    i_ty = jnp.log(n) - h_y_term[None, :] - jnp.sum(w * (log_total - log_same), axis=0) / n
    return i_xt * _LOG2E, i_ty * _LOG2E


def _gram_pass(t, y, c, weights, scales, *, paired: bool, block_size, devices, chain: int = 0,
               with_nn: bool = True, precision: str = "highest", rows: str = "auto"):
    """One checked blockwise pass: ``(sums [N, S, K], nn [N])``, redone exactly when float32
    rounding could exceed :data:`MAX_KERNEL_ROUNDING`. ``paired``: ``scales`` is (2σ², 8σ²),
    computed with one exponential. ``rows``: :func:`jaxmi.backend.resolve_kde_rows`."""
    mesh = _kde_mesh(devices)
    sums_fn = _kde_sums
    original = (t, y, weights)  # the float64 fallback takes the unpadded layer
    if mesh is not None and backend.resolve_kde_rows(rows, 4 * t.shape[0] * t.shape[1]) == "sharded":
        # Rows split over the devices: pad N to a multiple of M with zero rows of zero weight
        # where the layer is, then move the shards, so no device of the mesh gets it whole.
        n, pad = t.shape[0], -t.shape[0] % mesh.size
        if pad:
            t, y = jnp.pad(t, ((0, pad), (0, 0))), jnp.pad(y, (0, pad))
            weights = np.pad(np.asarray(weights), ((0, 0), (0, pad)))
        t = jax.device_put(t, jax.sharding.NamedSharding(mesh, PartitionSpec(parallel.DATA_AXIS)))
        y = jax.device_put(y, parallel.replicated(mesh))
        sums_fn = functools.partial(_kde_sums_ring, num_rows=n)
    elif mesh is not None:  # the layer may live on another mesh (a run's): replicate it on this one
        t, y = jax.device_put((t, y), parallel.replicated(mesh))
    b = int(block_size or pass_block_size(t.shape[0], t.shape[1], num_classes=c, resamples=weights.shape[0],
                                          scales=len(scales)))
    w = jnp.asarray(weights, jnp.float32)
    arg = jnp.float32(scales[1] / 8.0) if paired else jnp.asarray(scales, jnp.float32)
    sums, finite, max_sq, nn = sums_fn(t, y, w, arg, num_classes=c, block_size=b, mesh=mesh, paired=paired,
                                         chain=chain, with_nn=with_nn, precision=precision)
    raise_if_nonfinite(finite or all_finite(t), "activations")
    if _float32_rounding_bound(sums, max_sq, scales, c, precision) > MAX_KERNEL_ROUNDING:
        # The Gram identity's float32 rounding could move the row sums by more than
        # MAX_KERNEL_ROUNDING: redo this layer exactly, where the platform does that best
        # (jaxmi.backend.exact_kde_on_device): direct float32 differences on the device, or
        # float64 on the host (fast BLAS on CPU; also for norms beyond float32's range).
        if backend.exact_kde_on_device() and math.isfinite(float(max_sq)):
            sums, _, _, nn = sums_fn(t, y, w, arg, num_classes=c, block_size=b, mesh=mesh, paired=paired,
                                       chain=chain, with_nn=with_nn, precision=precision, exact=True)
        else:
            t0, y0, w0 = original
            s64, nn64 = _kde_sums_float64(np.asarray(t0), np.asarray(y0), np.asarray(w0), scales, c, b)
            sums, nn = jnp.asarray(s64, jnp.float32), jnp.asarray(nn64, jnp.float32)
    return sums, nn


def _relative(noise_var: float, nn) -> float:
    """σ² in units of the layer's median nearest-neighbour squared distance."""
    med = float(np.median(np.asarray(nn)))
    if not med > 0:
        raise ValueError("noise_scale='relative' needs a positive median nearest-neighbour distance, but at least "
                         "half of the rows have an exact duplicate; use noise_scale='absolute'.")
    return noise_var * med


def kde_compute(t, y, c, weights, *, noise_var: float = 0.1, block_size: int | None = None, devices=None,
                noise_scale: str = "absolute", precision: str = "auto", rows: str = "auto", **_) -> dict[str, tuple]:
    """Both KDE bounds for the full sample and every resample, from one Gram pass.

    Args:
      t: [N, D] checked activations (:func:`jaxmi.estimators.validation.validate`).
      y: [N] int32 labels.
      c: number of classes C.
      weights: [R, N] point multiplicities (row 0: the full sample).
      noise_var: σ² > 0; with ``noise_scale="relative"``, in units of the layer's median
        nearest-neighbour squared distance (then a second pass runs at the scaled σ²).
      block_size: rows per block (default :func:`choose_block_size`).
      devices: devices to split the pass over (default: all local devices).
      noise_scale: ``"absolute"`` (the paper's protocol) or ``"relative"``.
      precision: matrix-product precision (:func:`jaxmi.backend.resolve_kde_precision`).
      rows: with several devices, ``"sharded"`` (each device holds N/M rows; a ring pass),
        ``"replicated"`` (every device holds the layer; half the products) or ``"auto"``
        (:func:`jaxmi.backend.resolve_kde_rows`).

    Returns:
      ``{"kde_upper": (I_XT [R], I_TY [R], diagnostics), "kde_lower": (...)}`` in bits. The
      diagnostics of a bound with exponent scale s (2σ² upper, 8σ² lower) are
      ``nn_sq_dist_over_width`` (median_i min_{j≠i} D_ij / s), ``self_dominated_share``
      (the share of rows whose kernel sum is below 1 + :data:`SELF_DOMINATED`, i.e. nearly
      only their own term) and ``noise_var``, the σ² used.
    """
    precision = backend.resolve_kde_precision(precision)
    sums, nn = _gram_pass(t, y, c, weights, (2.0 * noise_var, 8.0 * noise_var), paired=True,
                          block_size=block_size, devices=devices, precision=precision, rows=rows)
    if noise_scale == "relative":
        noise_var = _relative(noise_var, nn)
        sums, nn = _gram_pass(t, y, c, weights, (2.0 * noise_var, 8.0 * noise_var), paired=True,
                              block_size=block_size, devices=devices, precision=precision, rows=rows)
    i_xt, i_ty = jax.device_get(_kde_from_sums(sums, y, jnp.asarray(weights, jnp.float32), num_classes=c))
    med = float(np.median(np.asarray(nn)))
    self_share = np.asarray(jnp.mean(full_sample_totals(sums, c) < 1.0 + SELF_DOMINATED, axis=0))
    out = {}
    for k, (name, width) in enumerate((("kde_upper", 2.0 * noise_var), ("kde_lower", 8.0 * noise_var))):
        diag = {"nn_sq_dist_over_width": med / width, "self_dominated_share": float(self_share[k]),
                "noise_var": float(noise_var)}
        out[name] = (i_xt[k], i_ty[k], diag)
    return out


def kde_sweep(t, y, c, noise_vars, *, block_size: int | None = None, devices=None,
              noise_scale: str = "absolute", precision: str = "auto", rows: str = "auto") -> dict[str, np.ndarray]:
    """Both KDE bounds at every σ² of ``noise_vars`` from one Gram pass (the full sample).

    Every σ² gets exactly the computation of :func:`kde_compute` at that σ² (two exponent
    scales each), but the distances are computed once for all of them.

    Returns:
      ``{"noise_var": [S] σ² used, "kde_upper_I_XT": [S], "kde_upper_I_TY": [S],
      "kde_lower_I_XT": [S], "kde_lower_I_TY": [S]}`` in bits.
    """
    nv = np.asarray(noise_vars, np.float64)
    w = unit_weights(t.shape[0])
    if noise_scale == "relative":
        _, nn = _gram_pass(t, y, c, w, (2.0, 8.0), paired=True, block_size=block_size, devices=devices,
                           precision=backend.resolve_kde_precision(precision), rows=rows)
        nv = nv * _relative(1.0, nn)
    # The exponent scales 2σ² (upper) and 8σ² (lower) of all σ², each computed once: on a grid
    # of ratio 4 (the default), the lower bound at σ² shares its kernel with the upper at 4σ².
    scales, index = np.unique(np.concatenate([2.0 * nv, 8.0 * nv]), return_inverse=True)
    chain = CHAIN_STRIDE if len(scales) > 1 and np.all(scales[1:] == 4.0 * scales[:-1]) else 0
    sums, _ = _gram_pass(t, y, c, w, tuple(float(v) for v in scales), paired=False, block_size=block_size,
                         devices=devices, chain=chain, with_nn=False,
                         precision=backend.resolve_kde_precision(precision), rows=rows)
    i_xt, i_ty = jax.device_get(_kde_from_sums(sums, y, jnp.asarray(w), num_classes=c))
    i_xt, i_ty = np.asarray(i_xt)[index, 0], np.asarray(i_ty)[index, 0]
    s = len(nv)
    return {"noise_var": nv, "kde_upper_I_XT": i_xt[:s], "kde_upper_I_TY": i_ty[:s],
            "kde_lower_I_XT": i_xt[s:], "kde_lower_I_TY": i_ty[s:]}


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
