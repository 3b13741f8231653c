"""The KDE kernel row sums with the layer's rows sharded over the devices (a ring pass).

:func:`kde_sums_ring` computes what :func:`jaxmi.estimators.kde_pass.kde_sums` computes, but
no device holds the whole layer: the row shards travel round a ring of devices. The
estimators choose it per layer (:func:`jaxmi.backend.resolve_kde_rows`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxmi import parallel
from jaxmi.estimators.kde_pass import block_distances, centred_block, column_mean, kde_columns, kernel_fn, two_sums

__all__ = ["kde_sums_ring"]


@functools.partial(jax.jit, static_argnames=("num_classes", "block_size", "mesh", "paired", "chain", "with_nn",
                                             "precision", "exact", "num_rows"))
def kde_sums_ring(t, labels, weights, scale, *, num_classes: int, block_size: int, mesh, paired: bool = True,
                  chain: int = 0, with_nn: bool = True, precision: str = "highest", exact: bool = False,
                  num_rows: int | None = None):
    """:func:`~jaxmi.estimators.kde_pass.kde_sums` with the rows sharded over the mesh's devices instead of replicated.

    Each of the M devices holds N/M rows (and a visiting shard of N/M more); the shards travel
    round a ring (``ppermute``), and at step s each device sums its own rows' kernels against
    the shard of its s-th neighbour. Per device the layer takes about 4·N·D/M floats (its own
    rows, the visiting shard, the one arriving, and the pass's double buffer) instead of N·D,
    plus the O(B·D) blocks of the pass; every device computes its rows against all N columns, so the
    pass does the full N² kernel rather than the upper triangle (twice the products of the
    replicated pass, spread over M devices). Same arguments and outputs as
    :func:`~jaxmi.estimators.kde_pass.kde_sums`;
    ``num_rows``: the real rows N when ``t`` (and ``labels``, ``weights``) arrive already padded
    with zero rows (zero weights) to a multiple of M (default: all rows are real).
    """
    rows_in, d = t.shape
    n = rows_in if num_rows is None else num_rows
    ndev = mesh.size
    axis = parallel.DATA_AXIS
    t = t.astype(jnp.float32)
    h = kde_columns(labels, weights, num_classes)
    k = h.shape[1]
    mean = column_mean(t, n)  # padded rows are zeros
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
        kernels = kernel_fn(scale, paired=paired, chain=chain, num_scales=num_scales)
        blocked = lambda a: jnp.pad(a, ((0, lpad),) + ((0, 0),) * (a.ndim - 1)).reshape((nb, b) + a.shape[1:])
        sqb, hb, realb, yb = blocked(sq), blocked(h), blocked(real), blocked(yl)
        eye = jnp.eye(b, dtype=bool)

        block = functools.partial(centred_block, size=b, rows=m, mean=mean)

        def ring_step(carry, step):
            acc, nn, vt, vsqb, vhb, vrealb, vyb = carry

            def pair_step(c, pair):
                acc, nn = c
                i, j = pair[0], pair[1]
                dist = block_distances(block(t, i), block(vt, j), sqb[i], vsqb[j], exact=exact, precision=hi)
                self_pair = eye & (i == j) & (step == 0)  # step 0: the visiting shard is our own
                dist = jnp.where(self_pair, 0.0, dist)
                kern = kernels(dist)  # [B, S, B]
                same = yb[i][:, None] == vyb[j][None, :]
                rows = two_sums(kern, same, vhb[j], precision=hi, rows=True)  # [B, S, 2K]
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
