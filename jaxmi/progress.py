"""Progress bars that advance from inside compiled loops.

A compiled epoch cannot talk to the host without a callback. :func:`tick_from_device`
inserts one ``jax.debug.callback`` per scan step that advances whichever bar is current on
the host (:func:`bar`); the traced callback never changes, so setting a new bar does not
retrace anything. The callback carries a scalar and does not block the computation.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import jax

__all__ = ["bar", "tick_from_device", "enabled"]

_CURRENT: list = []  # stack of active tqdm bars (the last one receives ticks)
_ENABLED = [True]


def enabled(flag: bool) -> None:
    """Globally turn progress bars on or off (e.g. in tests)."""
    _ENABLED[0] = bool(flag)


def _tick(_step) -> None:
    if _CURRENT:
        _CURRENT[-1].update(1)


def tick_from_device(step) -> None:
    """Advance the current host bar by one; call inside traced code (e.g. a scan body)."""
    jax.debug.callback(_tick, step)


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
