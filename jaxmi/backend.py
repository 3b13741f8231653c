"""Every platform-dependent choice of jaxmi, resolved in one place.

The core (models, training, evaluation, estimators) never asks which platform it runs on;
it asks this module for a decision: how to compute a convolution, how an epoch loops over
batches, how K seeds share one program, how much memory a blockwise pass may use, how
large its blocks are. This is the only module that reads :func:`jax.default_backend`.

Each ``resolve_*`` function takes the user's setting (``"auto"`` or an explicit choice),
validates it and returns the concrete choice. The measurements behind the ``"auto"``
defaults are in ``benchmarks/README.md``.

* Convolutions (:func:`conv_impl`): XLA's convolution on GPU/TPU. On CPU, XLA's
  convolution gradients are several times slower than its matrix products on LeNet's
  shapes, so small convolutions run as patch-matrix products there.
* Epoch loops (:func:`resolve_loop`): one ``lax.scan`` per epoch on GPU/TPU. XLA:CPU runs
  convolutions inside loop bodies several times slower than outside them
  (jax-ml/jax#12868), so on CPU the host dispatches compiled chunks of unrolled steps.
* Seed loops (:func:`resolve_seed_loop`): ``vmap`` over stacked seeds on GPU/TPU; on CPU a
  ``lax.map`` over the seeds inside each training step (XLA:CPU's batched patch products were
  slower than K unbatched ones). A mesh whose ``"seeds"`` axis has one device group leaves
  this choice alone (only seeds split over several groups need the ``vmap``).
* Collectives (:func:`dispatch_wait`): forced host devices run collectives on a shared
  thread pool; several multi-device calls in flight can stall there, so on a multi-device
  CPU mesh every call is waited for before the next.
* Memory (:func:`available_memory_bytes`, :func:`kde_max_block`): free device memory from
  the runtime on accelerators, the host's available memory on CPU; cache-sized KDE blocks
  on CPU, large ones on accelerators.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jaxmi.config import KDE_PRECISIONS, LOOPS, SEED_LOOPS

__all__ = ["platform", "is_cpu", "conv_impl", "resolve_loop", "resolve_seed_loop", "resolve_attack_unroll",
           "resolve_kde_precision", "dispatch_wait", "available_memory_bytes", "kde_max_block",
           "enable_compile_cache", "exact_kde_on_device", "LOOPS", "SEED_LOOPS", "CONV_IMPLS", "KDE_PRECISIONS"]

CONV_IMPLS = ("auto", "xla", "im2col", "rows")


def platform() -> str:
    """The default JAX backend: ``"cpu"``, ``"gpu"`` or ``"tpu"``."""
    return jax.default_backend()


def is_cpu(device: Any | None = None) -> bool:
    """Whether ``device`` (default: the default backend) is a CPU."""
    return (device.platform if device is not None else platform()) == "cpu"


def conv_impl(impl: str, kh: int, kw: int, cin: int) -> str:
    """How a stride-1 VALID convolution with a ``kh × kw × cin`` patch is computed.

    Args:
      impl: ``"auto"``, ``"xla"``, ``"im2col"`` or ``"rows"`` (see
        :func:`jaxmi.ops.conv2d_valid`).

    Returns:
      The concrete implementation: ``impl`` itself unless it is ``"auto"``; then ``"xla"`` on
      GPU/TPU, and on CPU ``"im2col"`` for narrow patches (kh·kw·cin ≤ 32, MNIST's first
      layer) and ``"rows"`` otherwise.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv implementation {impl!r}; choose one of {CONV_IMPLS}.")
    if impl != "auto":
        return impl
    if not is_cpu():
        return "xla"
    return "im2col" if kh * kw * cin <= 32 else "rows"


def resolve_loop(loop: str) -> str:
    """How an epoch loops over batches: ``"scan"`` (one compiled loop) or ``"unrolled"``
    (compiled chunks of unrolled steps dispatched from the host). ``"auto"``: unrolled on
    CPU, scan elsewhere."""
    if loop not in LOOPS:
        raise ValueError(f"unknown loop strategy {loop!r}; choose 'auto', 'scan' or 'unrolled'.")
    if loop == "auto":
        return "unrolled" if is_cpu() else "scan"
    return loop


def resolve_seed_loop(seed_loop: str) -> str:
    """How K stacked seeds share one compiled program: ``"vmap"`` (every operation batched
    over the seed axis) or ``"map"`` (a ``lax.map`` over the seeds inside each step).
    ``"auto"``: map on CPU, vmap elsewhere. Both give the same results up to float rounding."""
    if seed_loop not in SEED_LOOPS:
        raise ValueError(f"unknown seed loop {seed_loop!r}; choose 'auto', 'vmap' or 'map'.")
    if seed_loop == "auto":
        return "map" if is_cpu() else "vmap"
    return seed_loop


def resolve_attack_unroll(loop: str) -> bool:
    """Whether the PGD iterations are unrolled at compile time: ``"unrolled"``, ``"scan"`` (a
    compiled loop) or ``"auto"``: unrolled on CPU (XLA:CPU runs convolutions inside loop bodies
    several times slower), a loop elsewhere (smaller programs, faster compiles)."""
    if loop not in LOOPS:
        raise ValueError(f"unknown attack loop {loop!r}; choose 'auto', 'scan' or 'unrolled'.")
    return is_cpu() if loop == "auto" else loop == "unrolled"


def resolve_kde_precision(precision: str) -> str:
    """The matrix-product precision of the KDE Gram and kernel products: ``"highest"`` (float32
    products everywhere; on TPU six bfloat16 passes), ``"high"`` (three bfloat16 passes on TPU),
    ``"default"`` (one bfloat16 pass on TPU, TF32 on recent NVIDIA GPUs). ``"auto"``: ``"high"``
    on TPU, ``"highest"`` elsewhere. Lower precision is faster; the float32 rounding bound of
    :mod:`jaxmi.estimators.kde` accounts for it, redoing a layer exactly where it could matter."""
    if precision not in KDE_PRECISIONS:
        raise ValueError(f"unknown KDE precision {precision!r}; choose one of {KDE_PRECISIONS}.")
    if precision == "auto":
        return "high" if platform() == "tpu" else "highest"
    return precision


KDE_ROWS = ("auto", "sharded", "replicated")
#: Layers at least this large (bytes) have their KDE rows sharded over several devices by default.
KDE_SHARD_ROWS_BYTES = 256 << 20


def resolve_kde_rows(rows: str, layer_bytes: int) -> str:
    """How a KDE pass over several devices places a layer: ``"sharded"`` (each of M devices holds
    N/M rows and the shards travel round a ring: about 4/M of the layer per device, the full N² kernel
    split M ways) or ``"replicated"`` (every device holds the layer and computes a share of the
    upper triangle: half the products). ``"auto"``: sharded for layers of at least
    :data:`KDE_SHARD_ROWS_BYTES`, where memory matters, replicated below (a fixed rule, so a
    run never changes layout, and recompiles, between measurements)."""
    if rows not in KDE_ROWS:
        raise ValueError(f"unknown KDE row layout {rows!r}; choose one of {KDE_ROWS}.")
    if rows == "auto":
        return "sharded" if layer_bytes >= KDE_SHARD_ROWS_BYTES else "replicated"
    return rows


def exact_kde_on_device() -> bool:
    """Where a KDE layer is redone when float32 Gram distances could be too coarse: on the device
    with direct float32 differences (accelerators), or in float64 on the host (CPU, whose float64
    matrix products are fast and where the data already is)."""
    return not is_cpu()


def enable_compile_cache(path: str | None) -> None:
    """Keeps compiled programs in ``path`` (JAX's persistent compilation cache) so that reruns
    and resumed runs skip compilation; every program is cached, however fast it compiled.

    Raises:
      ValueError: ``path`` cannot be created or written (naming it and the fix).
    """
    if not path:
        return
    try:  # JAX would only warn, at every compilation, about a folder it cannot write
        folder = Path(path).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise ValueError(f"compile_cache {str(path)!r} cannot be used as the compilation cache ({e}); pass a writable "
                         f"directory with --compile-cache, or leave it out.") from e
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def _identity(x):
    return x


def dispatch_wait(mesh: Any | None) -> Callable[[Any], Any]:
    """What to do with the result of each dispatched multi-device call: wait for it on a CPU
    mesh of several devices (see the module docstring), nothing elsewhere."""
    if mesh is not None and mesh.size > 1 and is_cpu(mesh.devices.flat[0]):
        return jax.block_until_ready
    return _identity


def available_memory_bytes(device: Any | None = None) -> int:
    """Free memory of ``device`` (default: the first local device), in bytes.

    Accelerators: ``bytes_limit − bytes_in_use`` from ``device.memory_stats()``. CPU (or a
    backend without statistics): the host's ``MemAvailable``, else the available pages from
    ``os.sysconf``, else 4 GiB.
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


def kde_max_block(d: int, device: Any | None = None, scales: int = 2) -> int:
    """The largest row block of the blockwise KDE pass for a layer of width ``d``.

    CPU: blocks whose kernel tiles (``scales`` of [B, B], float32) stay cache-sized: 256 rows
    for d < 64, else 512, and at most the largest power of two with 4·scales·B² ≤ 4 MiB (a
    σ² sweep holds many scales at once). Accelerators: 4,096 rows, large enough to keep the
    matrix units busy.
    """
    device = device if device is not None else jax.local_devices()[0]
    if is_cpu(device):
        cache_rows = 1 << int(math.floor(math.log2(math.sqrt((4 << 20) / (4 * max(scales, 1))))))
        return min(256 if d < 64 else 512, cache_rows)
    return 4096
