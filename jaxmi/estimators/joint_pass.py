"""One Gram pass per layer for every KDE product a measurement asks for.

A swept measurement wants, per probe, the estimate's two KDE bounds at the run's σ² (with the
bootstrap resamples), the σ² sweep (:func:`jaxmi.estimators.sweep_kde_bounds`, full sample)
and the scale-free sweep (:func:`jaxmi.estimators.scale_free.scale_free_sweep`, σ² = v ·
spread, with the resamples). Each is a blockwise Gram pass of its own; the distances, the
costly part for wide layers, are the same in all three. :func:`joint_kde` computes them once:
the exponent scales of every product go into one deduplicated, ascending set; a kernel is an
exponential, or, where the set also holds 4s, the fourth power of that kernel
(exp(−D/s) = exp(−D/4s)⁴), at most :data:`~jaxmi.estimators.kde.CHAIN_STRIDE` − 1 powers in a
row, the accuracy rule of :func:`jaxmi.estimators.kde_pass.kde_sums`'s chain; the scales of
the estimate and of the scale-free sweep are summed against every weight row, the σ² sweep's
against the full sample alone (a scale shared with the others reads its full-sample columns).
The rows are read in class order (:func:`class_blocks`), so the block pairs whose rows share no
class, most of them, skip the same-class products. Each product then gets its own float32 rounding check
(:func:`~jaxmi.estimators.kde_pass.float32_rounding_bound`) and, where that fails, its own
exact pass, as it would alone. The results equal the separate functions' up to float32
rounding (summation order, block size, kernels as powers).

:func:`joint_estimate` is the estimate of :func:`jaxmi.estimators.estimate` for one layer with
the sweeps added: the KDE bounds from the joint pass, every other method (binning, Rényi,
the mixed kNN) from its own pass. The kNN is not fused: it needs each row's k-th smallest
same-class distance over all N columns, for every resample, before it can count, on its own
scaled float32 distances whose rounding band decides which rows are recounted in float64
(:mod:`jaxmi.estimators.knn_mixed`); a block-pair loop over the upper triangle gives neither.
With several devices and the rows sharded (:func:`jaxmi.backend.resolve_kde_rows`) the
products are computed by their own passes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxmi import backend, parallel
from jaxmi.estimators import kde_pass
from jaxmi.estimators.api import estimate
from jaxmi.estimators.bootstrap import resample_weights, summarize, unit_weights
from jaxmi.estimators.diagnostics import diagnose
from jaxmi.estimators.kde import (
    CHAIN_STRIDE,
    MAX_KERNEL_ROUNDING,
    SELF_DOMINATED,
    kde_compute,
    kde_from_sums,
    kde_sweep,
    relative_noise_var,
)
from jaxmi.estimators.kde_pass import (
    block_distances,
    choose_block_size,
    column_mean,
    kde_columns,
    kde_mesh,
    kde_sums,
)
from jaxmi.estimators.registry import lookup
from jaxmi.estimators.validation import (
    all_finite,
    check_bootstrap,
    infer_num_classes,
    raise_if_nonfinite,
    validate,
)

__all__ = ["KDE_METHODS", "class_blocks", "joint_block_size", "joint_estimate", "joint_kde", "joint_sums", "kernel_links"]

#: The methods the joint pass computes (one registry group); the others keep their own passes.
KDE_METHODS = ("kde_upper", "kde_lower")
#: Options only the KDE group takes (not handed to the other methods' passes).
_KDE_ONLY = frozenset({"noise_scale", "precision", "rows"})


def kernel_links(scales, stride: int = CHAIN_STRIDE) -> tuple[int, ...]:
    """How each kernel of an ascending set of distinct exponent scales is computed: ``links[s]``
    is the index of 4·scales[s] when the kernel at s is the fourth power of that one, −1 for an
    exponential. From the top down, a scale whose 4s is in the set follows it unless that
    would make ``stride`` kernels in a row from one exponential (for a grid of ratio 4 this is
    :func:`jaxmi.estimators.kde_pass.kde_sums`'s chain)."""
    s = [float(v) for v in scales]
    index = {v: i for i, v in enumerate(s)}
    links, depth = [-1] * len(s), [0] * len(s)
    for i in reversed(range(len(s))):
        p = index.get(4.0 * s[i])
        if p is not None and depth[p] + 1 < stride:
            links[i], depth[i] = p, depth[p] + 1
    return tuple(links)


def class_blocks(labels, block_size: int, devices: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows sorted by class, and the block pairs of :func:`joint_sums` split by whether any
    two of their rows share a class.

    Args:
      labels: [N] host labels; block_size: B; devices: the pair lists are padded to a multiple of it.

    Returns:
      ``(order [nb·B] int32, mixed [P, 3], cross [Q, 3])``: the row of the layer at every sorted
      position (padding positions ≥ N read row 0 and are masked); the pairs (i, j ≤ i's blocks,
      i ≤ j, real?) with a class in common, which need the same-class sums, and the others.
    """
    y = np.asarray(labels)
    n, b = y.shape[0], block_size
    nb = -(-n // b)
    order = np.argsort(y, kind="stable").astype(np.int32)
    ys = np.concatenate([y[order], np.full(nb * b - n, -1)]).reshape(nb, b)
    classes = [set(row[row >= 0].tolist()) for row in ys]
    ii, jj = np.triu_indices(nb)
    shared = np.array([bool(classes[i] & classes[j]) for i, j in zip(ii, jj)], bool)

    def padded(i, j):
        out = np.zeros((-(-len(i) // devices) * devices, 3), np.int32)
        out[:len(i)] = np.stack([i, j, np.ones_like(i)], axis=1)
        return out

    return (np.concatenate([order, np.zeros(nb * b - n, np.int32)]), padded(ii[shared], jj[shared]),
            padded(ii[~shared], jj[~shared]))


@functools.partial(jax.jit, static_argnames=("links", "full", "unit", "block_size", "mesh", "with_nn", "precision"))
def joint_sums(t, labels, weights, scales, order, mixed, cross, *, links: tuple[int, ...], full: tuple[int, ...],
               unit: tuple[int, ...], block_size: int, mesh=None, with_nn: bool = True, precision: str = "highest"):
    """Kernel row sums at every scale of ``scales`` from one blockwise distance pass.

    The rows are read in class order (``order``), so that a block pair whose rows share no class
    (``cross``) needs no same-class products: only the ``mixed`` pairs compute them.

    Args:
      t: [N, D] activations; labels: [N] int32; weights: [R, N] multiplicities (row 0 the full sample).
      scales: [S] distinct exponent scales (traced), in families whose kernels chain only among
        themselves (``links`` points to a higher index).
      order, mixed, cross: :func:`class_blocks` of the labels with this block size.
      links: :func:`kernel_links` of ``scales``.
      full: indices of the scales summed against every weight row.
      unit: indices of the scales summed against row 0 alone.
      block_size, mesh, with_nn, precision: as in :func:`jaxmi.estimators.kde_pass.kde_sums`.

    Returns:
      ``(full_sums [N, len(full), 2R], unit_sums [N, len(unit), 2], finite, max_sq, nn [N])``,
      the sums laid out as :func:`~jaxmi.estimators.kde_pass.kde_sums`'s, in the layer's row order.
    """
    n, _ = t.shape
    t = t.astype(jnp.float32)
    b = block_size
    nb = -(-n // b)
    real = jnp.arange(nb * b) < n  # sorted positions holding a row
    mean = column_mean(t, n)
    sq = jnp.where(real, jnp.sum(jnp.square(t - mean), axis=1)[order], 0.0)
    finite = jnp.isfinite(jnp.sum(sq))
    h = jnp.where(real[:, None], kde_columns(labels, weights, 0)[order], 0.0)
    k = h.shape[1]
    hb, sqb, realb = h.reshape(nb, b, k), sq.reshape(nb, b), real.reshape(nb, b)
    yb = jnp.where(real, labels.astype(jnp.int32)[order], -1).reshape(nb, b)
    ob = order.reshape(nb, b)
    hi = jax.lax.Precision[precision.upper()]
    sets = [(full, k), (unit, 1)] if unit else [(full, k)]

    def block(t, i):
        return jnp.where(realb[i][:, None], jnp.take(t, ob[i], axis=0) - mean, 0.0)

    def kernels(dist):
        out = [None] * len(links)
        for s in reversed(range(len(links))):
            out[s] = (jnp.exp(dist * (-1.0 / scales[s])) if links[s] < 0
                      else jnp.square(jnp.square(out[links[s]])))
        return out

    def sums(kk, x, cols, rows: bool):  # [B, S', B] against x [B, cols] → [S', B, cols]
        m, s_ = kk.shape[0], kk.shape[1]
        if rows:
            return jnp.swapaxes(jnp.dot(kk.reshape(m * s_, -1), x, precision=hi).reshape(m, s_, cols), 0, 1)
        return jnp.transpose(jnp.dot(x.T, kk.reshape(m, -1), precision=hi).reshape(cols, s_, -1), (1, 2, 0))

    def step(carry, pair, with_same: bool, t):
        accs, nn = carry
        i, j, on = pair[0], pair[1], pair[2].astype(jnp.float32)
        dist = block_distances(block(t, i), block(t, j), sqb[i], sqb[j], exact=False, precision=hi)
        self_pair = jnp.eye(b, dtype=bool) & (i == j)
        dist = jnp.where(self_pair, 0.0, dist)
        kern = kernels(dist)
        same = yb[i][:, None] == yb[j][None, :]
        off = on * (i != j).astype(jnp.float32)
        new = []
        for acc, (idx, cols) in zip(accs, sets):
            kk = jnp.stack([kern[s] for s in idx], axis=1)  # [B, S', B]
            acc = acc.at[i, :, :, :cols].add(sums(kk, hb[j][:, :cols], cols, True) * on)
            acc = acc.at[j, :, :, :cols].add(sums(kk, hb[i][:, :cols], cols, False) * off)
            if with_same:
                kk = kk * same[:, None, :].astype(kk.dtype)
                acc = acc.at[i, :, :, cols:].add(sums(kk, hb[j][:, :cols], cols, True) * on)
                acc = acc.at[j, :, :, cols:].add(sums(kk, hb[i][:, :cols], cols, False) * off)
            new.append(acc)
        if with_nn:
            other = jnp.where(self_pair | ~realb[j][None, :] | ~realb[i][:, None], jnp.inf, dist)
            nn = nn.at[i].min(jnp.where(on > 0, jnp.min(other, axis=1), jnp.inf))
            nn = nn.at[j].min(jnp.where(off > 0, jnp.min(other, axis=0), jnp.inf))
        return (tuple(new), nn), None

    def run(t, mixed, cross):
        init = (tuple(jnp.zeros((nb, len(idx), b, 2 * cols), jnp.float32) for idx, cols in sets),
                jnp.full((nb, b), jnp.inf, jnp.float32))
        carry = jax.lax.scan(functools.partial(step, with_same=True, t=t), init, mixed)[0]
        if cross.shape[0]:
            carry = jax.lax.scan(functools.partial(step, with_same=False, t=t), carry, cross)[0]
        return carry

    if mesh is None:
        accs, nn = run(t, mixed, cross)
    else:
        def local(t, mixed, cross):
            accs, nn = run(t, mixed, cross)
            return jax.lax.psum(accs, parallel.DATA_AXIS), jax.lax.pmin(nn, parallel.DATA_AXIS)

        rep, split = PartitionSpec(), PartitionSpec(parallel.DATA_AXIS)
        accs, nn = jax.shard_map(local, mesh=mesh, in_specs=(rep, split, split), out_specs=(rep, rep),
                                 check_vma=False)(t, mixed, cross)
    back = jnp.zeros((n,), jnp.int32).at[order[:n]].set(jnp.arange(n, dtype=jnp.int32))  # sorted position of a row
    out = [jnp.moveaxis(a, 1, 2).reshape(nb * b, a.shape[1], a.shape[3])[back] for a in accs]
    unit_sums = out[1] if unit else jnp.zeros((n, 0, 2), jnp.float32)
    return out[0], unit_sums, finite, jnp.max(sq), nn.reshape(-1)[back]


def joint_block_size(n: int, d: int, *, resamples: int, full: int, unit: int) -> int:
    """The block size of a joint pass with ``full`` scales summed against 1 + R = ``resamples``
    weight rows and ``unit`` against the full sample (:func:`~jaxmi.estimators.kde_pass.choose_block_size`);
    a run fixes it once per probe so that no measurement recompiles."""
    return choose_block_size(n, d, columns=resamples * full + unit, scales=full + unit)


def _pair_scales(nv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct exponent scales (2σ², 8σ²) of the σ² values ``nv``, and where each
    (upper at σ²_0 … σ²_S−1, then lower) reads its scale."""
    return np.unique(np.concatenate([2.0 * nv, 8.0 * nv]), return_inverse=True)


def _exact(t, y, w, scales, c: int, b: int, mesh, with_nn: bool):
    """One product's sums and nearest neighbours redone without the Gram identity's rounding,
    where :func:`jaxmi.estimators.kde.kde_compute` would redo them."""
    if backend.exact_kde_on_device():
        out = kde_sums(t, y, jnp.asarray(w, jnp.float32), jnp.asarray(scales, jnp.float32), num_classes=c,
                       block_size=b, mesh=mesh, paired=False, with_nn=with_nn, exact=True)
        return out[0], out[3]
    s64, nn64 = kde_pass.kde_sums_float64(np.asarray(t), np.asarray(y), np.asarray(w), scales, c, b)
    return jnp.asarray(s64, jnp.float32), jnp.asarray(nn64, jnp.float32)


def _separate(t, y, c, weights, noise_var, noise_scale, sweep, sweep_scale, scale_free, **kw) -> dict[str, Any]:
    """The products from their own passes (rows sharded over several devices)."""
    out: dict[str, Any] = {}
    if noise_var is not None:
        out["estimate"] = kde_compute(t, y, c, weights, noise_var=noise_var, noise_scale=noise_scale, **kw)
    if sweep is not None:
        out["sweep"] = kde_sweep(t, y, c, sweep, noise_scale=sweep_scale, **kw)
    if scale_free is not None:
        out["scale_free"] = kde_sweep(t, y, c, scale_free, noise_scale="relative", weights=weights, **kw)
    return out


def joint_kde(t, y, c: int, weights, *, noise_var: float | None = None, noise_scale: str = "absolute",
              sweep: Sequence[float] | None = None, sweep_scale: str = "absolute",
              scale_free: Sequence[float] | None = None, block_size: int | None = None, devices=None,
              precision: str = "auto", rows: str = "auto") -> dict[str, Any]:
    """Any of three KDE products of one layer from one distance pass.

    Args:
      t, y, c: checked activations [N, D], int32 labels [N] and the class count
        (:func:`jaxmi.estimators.validation.validate`).
      weights: [R, N] point multiplicities (row 0 the full sample) of the estimate and the
        scale-free sweep.
      noise_var: the estimate's σ² (None: no estimate); ``noise_scale`` as in
        :func:`~jaxmi.estimators.kde.kde_compute`.
      sweep: the σ² grid of the sweep on the full sample (None: none); ``sweep_scale``:
        ``"absolute"`` or ``"relative"`` (units of the spread).
      scale_free: the relative σ² grid of the scale-free sweep, with ``weights`` (None: none).
      block_size: rows per block (default :func:`joint_block_size`).
      devices, precision, rows: as in :func:`~jaxmi.estimators.kde.kde_compute`.

    Returns:
      ``{"estimate": kde_compute's result, "sweep": kde_sweep's (1-D arrays),
      "scale_free": kde_sweep's with weights ([S, R] arrays), "spread": float or None}``, for
      the products asked for.
    """
    precision = backend.resolve_kde_precision(precision)
    weights = np.asarray(weights, np.float32)
    if noise_var is None and sweep is None and scale_free is None:
        raise ValueError("joint_kde: no product asked for; pass noise_var (the estimate), sweep (a σ² grid) "
                         "and/or scale_free (a relative σ² grid).")
    if noise_var is None and scale_free is None:  # the sweep alone: its sums on the full sample
        weights = unit_weights(t.shape[0])
    relative = (noise_var is not None and noise_scale == "relative") or (sweep is not None and sweep_scale == "relative") \
        or scale_free is not None
    sp = relative_noise_var(1.0, t) if relative else None
    mesh = kde_mesh(devices)
    if mesh is not None and backend.resolve_kde_rows(rows, 4 * t.shape[0] * t.shape[1]) == "sharded":
        out = _separate(t, y, c, weights, noise_var, noise_scale, sweep, sweep_scale, scale_free,
                        devices=devices, precision=precision, rows=rows)
        return {**out, "spread": sp}
    # Every scale is keyed (family, base): family "a" absolute, "r" in units of the spread, whose
    # value is base·spread. The compiled pass's structure (which kernels chain, which are summed
    # against every weight row) is built from the bases of each family, so it does not change with
    # the spread from one measurement to the next: no recompilation.
    mult = {"a": 1.0, "r": sp}
    # name: (scale values, read index, every weight row?, grid...); keys[name]: the scales' keys
    products: dict[str, tuple] = {}
    keys: dict[str, list[tuple[str, float]]] = {}

    def add(name, bases, family, index, every_row, *grid):
        keys[name] = [(family, float(v)) for v in bases]
        products[name] = (np.asarray(bases, np.float64) * mult[family], index, every_row, *grid)

    if noise_var is not None:
        fam = "r" if noise_scale == "relative" else "a"
        add("estimate", [2.0 * noise_var, 8.0 * noise_var], fam, float(noise_var) * mult[fam], True)
    if sweep is not None:
        fam = "r" if sweep_scale == "relative" else "a"
        bases, index = _pair_scales(np.asarray(sweep, np.float64))
        add("sweep", bases, fam, index, weights.shape[0] == 1, np.asarray(sweep, np.float64) * mult[fam])
    if scale_free is not None:
        bases, index = _pair_scales(np.asarray(scale_free, np.float64))
        add("scale_free", bases, "r", index, True, np.asarray(scale_free, np.float64))
    full_keys = sorted({k for name, ks in keys.items() if products[name][2] for k in ks})
    unit_keys = sorted({k for name, ks in keys.items() if not products[name][2] for k in ks} - set(full_keys))
    every_keys = sorted(set(full_keys) | set(unit_keys))  # family by family, ascending bases in each
    every = np.array([base * mult[fam] for fam, base in every_keys], np.float64)
    pos = {k: i for i, k in enumerate(every_keys)}
    full, unit = tuple(pos[k] for k in full_keys), tuple(pos[k] for k in unit_keys)
    links = []
    for fam in ("a", "r"):  # kernels chain within a family only
        start = len(links)
        links += [p if p < 0 else p + start for p in kernel_links([b for f, b in every_keys if f == fam])]
    links = tuple(links)
    if mesh is not None:
        t, y = jax.device_put((t, y), parallel.replicated(mesh))
    b = int(block_size or joint_block_size(t.shape[0], t.shape[1], resamples=weights.shape[0], full=len(full),
                                           unit=len(unit)))
    order, mixed, cross = class_blocks(np.asarray(y), b, 1 if mesh is None else mesh.size)
    fs, us, finite, max_sq, nn = joint_sums(t, y, jnp.asarray(weights), jnp.asarray(every, jnp.float32),
                                            jnp.asarray(order), jnp.asarray(mixed), jnp.asarray(cross),
                                            links=links, full=full, unit=unit, block_size=b,
                                            mesh=mesh, with_nn="estimate" in products, precision=precision)
    raise_if_nonfinite(finite or all_finite(t), "activations")
    fpos = {k: i for i, k in enumerate(full_keys)}
    upos = {k: i for i, k in enumerate(unit_keys)}
    r = weights.shape[0]
    out: dict[str, Any] = {"spread": sp}
    for name, (scales, index, every_row, *grid) in products.items():
        if every_row:
            sums = fs[:, np.array([fpos[k] for k in keys[name]])]
            w = weights
        else:  # the full sample's columns: its own sums, or the total and same-class columns of row 0
            sums = jnp.concatenate([fs[:, [fpos[k]]][..., np.array([0, r])] if k in fpos
                                    else us[:, [upos[k]]] for k in keys[name]], axis=1)
            w = unit_weights(t.shape[0])
        p_nn = nn
        if kde_pass.float32_rounding_bound(sums, max_sq, scales, c, precision) > MAX_KERNEL_ROUNDING:
            sums, p_nn = _exact(t, y, w, scales, c, b, mesh, name == "estimate")
        i_xt, i_ty = (np.asarray(a) for a in jax.device_get(kde_from_sums(sums, y, jnp.asarray(w), num_classes=c)))
        if name == "estimate":
            med = float(np.median(np.asarray(p_nn)))
            share = np.asarray(jnp.mean(sums[:, :, 0] < 1.0 + SELF_DOMINATED, axis=0))
            out[name] = {m: (i_xt[k], i_ty[k], {"nn_sq_dist_over_width": med / float(scales[k]),
                                                "self_dominated_share": float(share[k]), "noise_var": float(index)})
                         for k, m in enumerate(KDE_METHODS)}
            continue
        i_xt, i_ty = i_xt[index], i_ty[index]  # [2S, R]: upper at every σ², then lower
        if name == "sweep":  # the full sample's
            i_xt, i_ty = i_xt[:, 0], i_ty[:, 0]
        s = len(grid[0])
        out[name] = {"noise_var": grid[0] * (sp if name == "scale_free" else 1.0),
                     "kde_upper_I_XT": i_xt[:s], "kde_upper_I_TY": i_ty[:s],
                     "kde_lower_I_XT": i_xt[s:], "kde_lower_I_TY": i_ty[s:]}
    return out


def joint_estimate(activations, labels, *, methods: Sequence[str], num_classes: int | None = None,
                   noise_var: float = 0.1, bin_size: float = 0.5, sweep: Sequence[float] | None = None,
                   sweep_scale: str = "absolute", scale_free: Sequence[float] | None = None,
                   joint_block_size: int | None = None, **options) -> dict[str, Any]:
    """:func:`jaxmi.estimators.estimate` of one layer plus the σ² and scale-free sweeps, the KDE
    bounds of all three from one distance pass (:func:`joint_kde`).

    Args:
      activations: [N, D] one layer output per row; labels: [N] class labels.
      methods, num_classes, noise_var, bin_size, **options: as in
        :func:`~jaxmi.estimators.estimate` (``bootstrap``, ``key``, ``confidence``,
        ``noise_scale``, ``precision``, ``rows``, ``devices``, ``block_size``: the other methods' passes, ...).
      sweep: σ² grid of the sweep (:func:`~jaxmi.estimators.sweep_kde_bounds`; full sample), or None.
      sweep_scale: the sweep's ``noise_scale``.
      scale_free: relative grid of the scale-free sweep
        (:func:`~jaxmi.estimators.scale_free.scale_free_sweep`, with the estimate's resamples), or None.
      joint_block_size: rows per block of the joint pass (default :func:`joint_block_size`).

    Returns:
      ``{"estimate": {method: {...}} as estimate() gives it, "sweep": sweep_kde_bounds's
      result or None, "scale_free": scale_free_sweep's or None}``.
    """
    methods = tuple(methods)
    kde = [m for m in methods if m in KDE_METHODS]
    if not kde:
        raise ValueError(f"joint_estimate computes the KDE bounds with the sweeps; methods {list(methods)} hold "
                         f"neither 'kde_upper' nor 'kde_lower'. Use jaxmi.estimators.estimate.")
    bootstrap, key, confidence = options.get("bootstrap", 0), options.get("key"), options.get("confidence", 0.95)
    check_bootstrap(bootstrap, confidence)
    kde_opts = {"noise_var": noise_var, **{k: options[k] for k in ("noise_scale", "precision", "rows") if k in options}}
    lookup(kde[0]).check(kde_opts)
    c = infer_num_classes(labels, num_classes)
    t, y, c = validate(activations, labels, c, min_samples=2)
    weights = resample_weights(t.shape[0], bootstrap, key)
    res = joint_kde(t, y, c, weights, noise_var=noise_var, noise_scale=options.get("noise_scale", "absolute"),
                    sweep=sweep, sweep_scale=sweep_scale, scale_free=scale_free, block_size=joint_block_size,
                    devices=options.get("devices"), precision=options.get("precision", "auto"),
                    rows=options.get("rows", "auto"))
    rest = [m for m in methods if m not in KDE_METHODS]
    other = {}
    if rest:
        other = estimate(activations, labels, methods=rest, num_classes=c, noise_var=noise_var, bin_size=bin_size,
                         **{k: v for k, v in options.items() if k not in _KDE_ONLY})
    est = {}
    for m in methods:
        if m in KDE_METHODS:
            i_xt, i_ty, diag = res["estimate"][m]
            est[m] = summarize(i_xt, i_ty, int(bootstrap), confidence)
            est[m].update(diagnose(est[m], labels, diag))
        else:
            est[m] = other[m]
    out: dict[str, Any] = {"estimate": est, "sweep": None, "scale_free": None}
    if sweep is not None:
        s = res["sweep"]
        out["sweep"] = {"noise_var": np.asarray(sweep, np.float64).tolist(),
                        **{m: {q: [float(v) for v in s[f"{m}_{q}"]] for q in ("I_XT", "I_TY")} for m in KDE_METHODS}}
        if sweep_scale == "relative":
            out["sweep"]["noise_var_absolute"] = [float(v) for v in s["noise_var"]]
    if scale_free is not None:
        s = res["scale_free"]
        out["scale_free"] = {"spread": res["spread"], "noise_var": np.asarray(scale_free, np.float64),
                             **{m: {q: np.asarray(s[f"{m}_{q}"]) for q in ("I_XT", "I_TY")} for m in KDE_METHODS}}
    return out
