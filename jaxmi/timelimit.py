"""Wall-clock limits: a run stops cleanly at the first epoch boundary where the next epoch would not finish in time.

Under :func:`time_limit` (the finding scripts' ``--time-limit MINUTES``; the ``time_limit``
argument of :func:`jaxmi.run.train_and_measure` and :func:`jaxmi.run.train_pair`), the epoch
loop asks before every epoch whether it would still finish within the limit, counted from
``t0`` (the scripts: the start of the process). If not, the run stops where a completed epoch
leaves it (checkpoint, ``metrics.jsonl``, timing record written) by raising
:class:`TimeLimitReached`; run again with the same configuration, it resumes from that epoch,
and its results are those of an uninterrupted run. The scripts then print the exception's
line and exit with status :data:`EXIT_STATUS` (75, ``os.EX_TEMPFAIL``), so that
``until python3 experiments/finding2_information_amount.py … --time-limit 9; do :; done``
completes any run in pieces of at most about 9 minutes.

How the next epoch is judged: its estimate is the wall time (training, measurement and
checkpoint) of the last epoch of the same regime trained under this limit. A regime with no
epoch of its own yet (AT after NT) is estimated from the other regime's first epoch under this
limit, which includes compiling its program, its training time scaled by the cost of a
training step (1 for NT, 1 + PGD steps for AT): AT's compilation is then covered too, with
room to spare. A regime starting from scratch adds its epoch-0 measurement (the last one
measured, or else the measurement part of an epoch); a regime's last epoch adds the final
robust evaluation (the last one measured, in this process or, from the run's timing record,
in an earlier one). What a finding does after training (its own measurements, figures,
``summary.json``) is not divided: leave room for it in the limit.

A limit shorter than one epoch still makes progress: every process (every ``with time_limit``)
trains at least one epoch before it may stop, so a too-small limit costs restarts, never a loop
that does nothing. The limit is not part of a run's identity: a resumed run may use another
limit, or none.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Mapping

__all__ = ["EXIT_STATUS", "TimeLimitReached", "Budget", "time_limit", "current", "process_start", "clock"]

#: The exit status of a finding script stopped by its time limit (``os.EX_TEMPFAIL``).
EXIT_STATUS = getattr(os, "EX_TEMPFAIL", 75)

#: The clock of every limit (seconds; replaced in tests).
clock = time.monotonic

_IMPORTED = clock()
_active: Budget | None = None


class TimeLimitReached(Exception):
    """A run stopped by its time limit after a completed, saved epoch; rerun it to continue.

    Attributes:
      regime: ``"nt"`` or ``"at"``, the regime of the last completed epoch (of the one not
        started, when ``epoch`` is None).
      epoch: that epoch (k) of ``epochs`` (N) per regime; None: the run stopped before its first
        epoch (a later seed of ``--seeds K``, after the earlier seeds used the time).
      epochs: N.
      minutes: the limit.
    """

    def __init__(self, regime: str, epoch: int | None, epochs: int, minutes: float):
        self.regime, self.epoch, self.epochs, self.minutes = regime, epoch, epochs, minutes
        where = f"before {regime.upper()} epoch 0" if epoch is None else f"after {regime.upper()} epoch {epoch}"
        super().__init__(f"stopped {where} of {epochs}; rerun the same command to continue (time limit "
                         f"{minutes:g} min)")


def process_start() -> float:
    """When this process started, on :data:`clock`'s scale (Linux: from ``/proc``; elsewhere when
    :mod:`jaxmi.timelimit` was imported)."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            age = float(f.read().split()[0]) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED
    now = clock()
    return now - age if 0.0 <= age <= now - _IMPORTED + 3600.0 else _IMPORTED


class Budget:
    """One wall-clock limit and the epoch times measured under it (see the module docstring).

    Args:
      minutes: the limit, > 0.
      t0: the start, on :data:`clock`'s scale.
    """

    def __init__(self, minutes: float, t0: float):
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not math.isfinite(minutes) \
                or minutes <= 0:
            raise ValueError(f"time_limit must be a number of minutes > 0; got {minutes!r}. Give e.g. "
                             "--time-limit 9, or leave it out for no limit.")
        self.minutes, self.t0 = float(minutes), float(t0)
        self.done = 0  # epochs (and epoch-0 measurements) completed under this limit
        self._epoch: dict[str, tuple[float, float]] = {}  # regime -> (training s, measurement + checkpoint s)
        self._per_cost: float | None = None  # training seconds per unit of step cost, the first epoch's
        self._rest: float = 0.0  # the last epoch's measurement + checkpoint, s
        self._start: float | None = None  # the last epoch-0 measurement + checkpoint, s
        self._robust: float | None = None  # the last final robust evaluation, s

    def elapsed(self) -> float:
        return clock() - self.t0

    def note_start(self, seconds: float) -> None:
        """A regime's epoch-0 measurement and its checkpoint took ``seconds``."""
        self._start, self.done = seconds, self.done + 1

    def note_epoch(self, regime: str, cost: float, train: float, rest: float, robust: float | None = None) -> None:
        """An epoch of ``regime`` (training step cost ``cost``): ``train`` s of training, ``rest`` s
        of measurement and checkpoint, and ``robust`` s of final robust evaluation (its last epoch)."""
        self._epoch[regime] = (train, rest)
        if self._per_cost is None:  # the first epoch: with its compilation, as another regime's first will be
            self._per_cost = train / cost
        self._rest = rest
        if robust is not None:
            self._robust = robust
        self.done += 1

    def note_robust(self, seconds: float) -> None:
        """A final robust evaluation took ``seconds`` in an earlier process (the run's timing
        record); one measured under this limit takes precedence."""
        if self._robust is None:
            self._robust = seconds

    def estimate(self, regime: str, costs: Mapping[str, float], *, start: bool, final: bool) -> float | None:
        """Seconds the next epoch of ``regime`` would take (with its epoch-0 measurement when
        ``start``, with the robust evaluation when ``final``); None: nothing measured yet."""
        if regime in self._epoch:
            train, rest = self._epoch[regime]
        elif self._per_cost is not None:
            train, rest = self._per_cost * costs[regime], self._rest
        else:
            return None
        extra = ((self._start if self._start is not None else rest) if start else 0.0) + \
                ((self._robust or 0.0) if final else 0.0)
        return train + rest + extra

    def should_stop(self, estimate: float | None) -> bool:
        """Whether to stop before an epoch estimated at ``estimate`` s: never before one epoch has
        completed under this limit; then when it would end past the limit."""
        if self.done == 0:
            return False
        return estimate is None or self.elapsed() + estimate > self.minutes * 60.0


def current() -> Budget | None:
    """The limit in force (the outermost :func:`time_limit`), or None."""
    return _active


@contextlib.contextmanager
def time_limit(minutes: float | None, *, t0: float | None = None) -> Iterator[Budget | None]:
    """Runs inside it stop with :class:`TimeLimitReached` before an epoch that would end more than
    ``minutes`` after ``t0`` (default: now). ``None``: no limit. Inside another limit, the outer
    one stays in force."""
    global _active
    if minutes is None or _active is not None:
        yield _active
        return
    _active = Budget(minutes, clock() if t0 is None else t0)
    try:
        yield _active
    finally:
        _active = None
