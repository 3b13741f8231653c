"""Progress bars that advance from inside compiled loops.

A compiled epoch cannot talk to the host without a callback. :func:`tick_from_device`
inserts a ``jax.debug.callback`` into a loop body that fires on every ``every``-th step only
(``lax.cond``), advancing whichever bar is current on the host (:func:`bar`) by ``every``
steps; with :func:`ticks_every` an epoch makes at most :data:`MAX_TICKS` host round trips,
whatever its length, and code built without progress has no callback at all. The traced
callback never changes, so setting a new bar does not retrace anything.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import jax

__all__ = ["bar", "tick_from_device", "tick_host", "ticks_every", "enabled", "MAX_TICKS"]

#: Upper bound on the host callbacks of one compiled epoch.
MAX_TICKS = 100

_CURRENT: list = []  # stack of active tqdm bars (the last one receives ticks)
_ENABLED = [True]


def enabled(flag: bool) -> None:
    """Globally turn progress bars on or off (e.g. in tests)."""
    _ENABLED[0] = bool(flag)


def tick_host(step, every) -> None:
    """On the host: advance the current bar by ``every`` (what :func:`tick_from_device` calls back)."""
    if _CURRENT:
        _CURRENT[-1].update(int(every))


def ticks_every(steps: int) -> int:
    """The tick interval that keeps an epoch of ``steps`` steps at ≤ :data:`MAX_TICKS` callbacks."""
    return max(1, -(-int(steps) // MAX_TICKS))


def tick_from_device(step, every: int = 1) -> None:
    """Inside traced code (a loop body at step ``step``): advance the current host bar by
    ``every`` on every ``every``-th step (no callback on the others)."""
    if every == 1:
        jax.debug.callback(tick_host, step, every)
        return
    jax.lax.cond(step % every == every - 1, lambda: jax.debug.callback(tick_host, step, every), lambda: None)


@contextlib.contextmanager
def bar(total: int, desc: str) -> Iterator:
    """A tqdm bar that receives :func:`tick_from_device` ticks while the context is open."""
    from tqdm.auto import tqdm

    disable = not _ENABLED[0]
    b = tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True, disable=disable, file=sys.stderr,
             mininterval=0.5)
    _CURRENT.append(b)
    try:
        yield b
    finally:
        _CURRENT.remove(b)
        b.close()
