"""Data parallelism with a device mesh (the maintained successor of ``jax.pmap``).

A :class:`jax.sharding.Mesh` with a ``"data"`` axis over the local devices and, when several
seeds train at once, a ``"seeds"`` axis before it (:func:`make_mesh`): each group of devices
along ``"data"`` trains its share of the stacked seeds (``vmap`` with
``spmd_axis_name="seeds"``), each seed's batch split over that group's devices. Parameters
and optimizer state are replicated (``PartitionSpec()``); each batch is split along its
first dimension over ``"data"`` (``PartitionSpec("data")``) with
:func:`jax.lax.with_sharding_constraint` inside the compiled step, after the batch has been
gathered from the resident training set. ``jit`` then partitions the step (GSPMD): every
device runs the forward pass, PGD and the backward pass on its shard, gradients are summed
across devices, and reductions over the batch (BatchNorm statistics, the loss mean) are
global-batch reductions, exactly as on one device.

With one device the constraints are no-ops, so the same code runs everywhere.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = ["DATA_AXIS", "SEEDS_AXIS", "make_mesh", "rows_mesh", "replicated", "batch_sharding", "seed_sharding", "shard_batch",
           "replicate", "place_states", "constrain_replicated", "usable_device_count", "seed_axis_size", "data_size"]

DATA_AXIS = "data"
SEEDS_AXIS = "seeds"


def make_mesh(num_devices: int | None = None, devices=None, *, seeds: int | None = None) -> Mesh:
    """A mesh over the first ``num_devices`` local devices (all by default): one ``("data",)``
    axis, or with ``seeds`` given a ``("seeds", "data")`` grid of ``seeds`` × ``num_devices / seeds``
    (for stacked seeds; ``seeds`` = 1 keeps every seed on every device group).

    Raises:
      ValueError: ``num_devices`` is not a positive integer, exceeds the local device count, or
        is not a multiple of ``seeds``.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if num_devices is None:
        num_devices = len(devices)
    if int(num_devices) != num_devices or num_devices < 1:
        raise ValueError(f"the device count must be a positive integer; got {num_devices}.")
    if num_devices > len(devices):
        raise ValueError(f"asked for {num_devices} devices but only {len(devices)} are available "
                         f"({devices[0].platform}); pass --devices {len(devices)} or fewer.")
    if seeds is not None:
        if int(seeds) != seeds or seeds < 1 or num_devices % seeds:
            raise ValueError(f"{num_devices} devices cannot be split into {seeds} equal groups of seeds.")
        grid = np.asarray(devices[:num_devices]).reshape(seeds, num_devices // seeds)
        return Mesh(grid, (SEEDS_AXIS, DATA_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))
    return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def rows_mesh(devices=None) -> Mesh | None:
    """The one-axis ``"data"`` mesh a pass over rows is split over: all local devices by default
    (``devices=None``), None for one device (the pass then runs unsharded)."""
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices is empty; pass None (all local devices) or a list of JAX devices, e.g. "
                         "jax.devices()[:1].")
    return make_mesh(devices=devices) if len(devices) > 1 else None


def seed_axis_size(mesh: Mesh | None) -> int:
    """Devices along ``"seeds"`` (1 without that axis)."""
    return 1 if mesh is None or SEEDS_AXIS not in mesh.axis_names else int(mesh.shape[SEEDS_AXIS])


def data_size(mesh: Mesh | None) -> int:
    """Devices along ``"data"``: how many shards each batch is split into."""
    return 1 if mesh is None else int(mesh.shape[DATA_AXIS])


def seed_sharding(mesh: Mesh) -> NamedSharding:
    """Stacked per-seed arrays (train states, keys): the leading axis split over ``"seeds"``."""
    return NamedSharding(mesh, PartitionSpec(SEEDS_AXIS if SEEDS_AXIS in mesh.axis_names else None))


def usable_device_count(batch_size: int, available: int) -> int:
    """The largest device count ≤ ``available`` that divides ``batch_size`` (so shards are equal)."""
    for n in range(min(available, batch_size), 0, -1):
        if batch_size % n == 0:
            return n
    return 1


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, resident datasets)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) dimension split over ``"data"``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def rows_sharding(mesh: Mesh | None, ndim: int, axis: int, n: int) -> NamedSharding | None:
    """Where a batched pass keeps its [..., N, ...] outputs: the example axis ``axis`` split over
    ``"data"`` (each device holds N / data rows), or None without a mesh, with one data shard,
    or when N is not a multiple of the data axis (then the default placement)."""
    shards = data_size(mesh)
    if shards == 1 or n % shards:
        return None
    spec = [None] * ndim
    spec[axis] = DATA_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def shard_batch(tree: Any, mesh: Mesh | None) -> Any:
    """Inside ``jit``: constrain every array of ``tree`` to be split over ``"data"`` along axis 0."""
    if data_size(mesh) == 1:
        return tree
    return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh))


def place_states(tree: Any, mesh: Mesh | None) -> Any:
    """Outside ``jit``: put stacked per-seed states on ``mesh``: split over ``"seeds"`` when the
    mesh has that axis, replicated otherwise."""
    if mesh is None:
        return tree
    return jax.device_put(tree, seed_sharding(mesh) if SEEDS_AXIS in mesh.axis_names else replicated(mesh))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Outside ``jit``: place ``tree`` on every device of ``mesh``; inside: constrain it replicated."""
    if mesh is None:
        return tree
    return jax.device_put(tree, replicated(mesh))


def constrain_replicated(tree: Any, mesh: Mesh | None) -> Any:
    """Inside ``jit``: keep ``tree`` (one seed's train state) replicated over ``"data"``."""
    if data_size(mesh) == 1:
        return tree
    return jax.lax.with_sharding_constraint(tree, replicated(mesh))
