"""Data parallelism with a device mesh (the maintained successor of ``jax.pmap``).

A one-axis :class:`jax.sharding.Mesh` named ``"data"`` over the local devices. Parameters
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

__all__ = ["DATA_AXIS", "make_mesh", "replicated", "batch_sharding", "shard_batch", "replicate",
           "constrain_replicated", "usable_device_count"]

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None, devices=None) -> Mesh:
    """A one-axis ``("data",)`` mesh over the first ``num_devices`` local devices (all by default).

    Raises:
      ValueError: ``num_devices`` is not a positive integer or exceeds the local device count.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if num_devices is None:
        num_devices = len(devices)
    if int(num_devices) != num_devices or num_devices < 1:
        raise ValueError(f"the device count must be a positive integer; got {num_devices}.")
    if num_devices > len(devices):
        raise ValueError(f"asked for {num_devices} devices but only {len(devices)} are available "
                         f"({devices[0].platform}); pass --devices {len(devices)} or fewer.")
    return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,), axis_types=(AxisType.Auto,))


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


def shard_batch(tree: Any, mesh: Mesh | None) -> Any:
    """Inside ``jit``: constrain every array of ``tree`` to be split over ``"data"`` along axis 0."""
    if mesh is None or mesh.size == 1:
        return tree
    return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Outside ``jit``: place ``tree`` on every device of ``mesh``; inside: constrain it replicated."""
    if mesh is None:
        return tree
    return jax.device_put(tree, replicated(mesh))


def constrain_replicated(tree: Any, mesh: Mesh | None) -> Any:
    """Inside ``jit``: keep ``tree`` (the train state) replicated across the mesh."""
    if mesh is None or mesh.size == 1:
        return tree
    return jax.lax.with_sharding_constraint(tree, replicated(mesh))
