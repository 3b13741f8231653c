"""Live metrics of a run: one JSON line per epoch, and TensorBoard event files.

A run with an output directory appends, after every measurement (epoch 0 and each epoch),
one line per seed to ``metrics.jsonl``::

    {"regime": "nt", "epoch": 3, "seed": 0, "time": "2026-11-28T01:02:03+00:00",
     "epoch_seconds": 41.2, "measure_seconds": 12.9,
     "metrics": {"train_acc": 0.97, ..., "test_adv_acc": 0.21},
     "mi": {"kde_upper": {"clean": {"I_XT": {"conv1": 11.2, ...}, "I_TY": {...}}, "adv": {...}}}}

(``mi`` is absent for runs without measurements, findings 3 and 4; those lines carry
``train_acc`` and ``train_loss``), and writes the same scalars as TensorBoard summaries under
``tensorboard/<regime>`` (``tensorboard/<regime>_seed<k>`` for further seeds), tagged
``metrics/<name>`` and ``<quantity>/<inputs>/<estimator>/<probe>``, with the epoch as the
step. Watch a run with ``tail -f <out>/metrics.jsonl`` or
``tensorboard --logdir <out>/tensorboard``.

A run killed while it appended a line leaves that last line cut short; reading the file drops
it with a one-line warning (the checkpoints hold every result, and a resumed run measures that
epoch again). Any other line that is not a JSON record is an error naming the file, the line
and the fix.

A resumed run first drops the lines after its checkpoint (they are measured again) and opens
each TensorBoard writer with ``purge_step`` at the first epoch it writes, so TensorBoard hides
the events of the interrupted attempt from that step on. Lines are appended and flushed to
disk one at a time on local disks; on object stores (``gs://``), where a file cannot be
appended to, the file is rewritten atomically each time, and TensorBoard files are written
for local run directories only.

TensorBoard files are written by ``tensorboardX``, a maintained writer that needs neither
TensorFlow nor PyTorch.
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jaxmi.results import as_path, atomic_write_text, is_local, to_jsonable

__all__ = ["LiveLog", "METRICS_FILE", "TENSORBOARD_DIR", "history_line", "read_metrics", "scalars"]

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(workdir: str | os.PathLike, *,
                 log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The lines of ``workdir/metrics.jsonl`` as dicts, in order (``[]`` if there is none).

    A last line that is not a JSON record was cut short by a crash while it was written: it is
    left out, with a one-line warning to ``log`` (default: :func:`warnings.warn`).

    Raises:
      ValueError: another line is not a JSON record; the message names the file, the line
        and the fix.
    """
    path = as_path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    out = []
    for i, (n, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            what = None if isinstance(record, dict) else f"a JSON {type(record).__name__}, not a record"
        except json.JSONDecodeError as e:
            what = f"{e.msg} at column {e.colno}"
        if what is not None:
            if i == len(numbered) - 1:
                message = (f"warning: dropped the last line of {path} (line {n}: {what}), cut short by a crash "
                           "while it was written; the run's results are in its checkpoints.")
                if log is None:
                    warnings.warn(message[len("warning: "):], stacklevel=2)
                else:
                    log(message)
                break
            raise ValueError(
                f"{path}, line {n} of {len(lines)}, is not a JSON record ({what}).\n"
                "Only a cut last line is dropped by itself. Delete or repair that line and rerun the same "
                "command: the run resumes from its checkpoints, which hold every result (metrics.jsonl "
                "is only the live log).")
        out.append(record)
    return out


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """A metrics line as flat TensorBoard tags → values (``None`` values are left out)."""
    out: dict[str, float] = {}
    for name, value in record.get("metrics", {}).items():
        if value is not None:
            out[f"metrics/{name}"] = float(value)
    for est, per_input in record.get("mi", {}).items():
        for inputs, per_q in per_input.items():
            for q, per_probe in per_q.items():
                for probe, value in per_probe.items():
                    if value is not None:
                        out[f"{q}/{inputs}/{est}/{probe}"] = float(value)
    return out


def _key(regime: str, epoch: int, regimes: Sequence[str]) -> tuple[int, int]:
    return regimes.index(regime), int(epoch)


class LiveLog:
    """Writes a run's per-epoch metrics as they come (``metrics.jsonl`` and TensorBoard).

    Args:
      workdir: the run directory.
      regimes: the regimes in the order the run trains them (``("nt", "at")``).
      resume: ``(regime, epoch)`` of the checkpoint the run resumes from; lines after it
        are dropped. ``None``: a new run; an existing ``metrics.jsonl`` is replaced.
      tensorboard: also write TensorBoard event files (local run directories only).
      log: where the warning about a cut last line goes (see :func:`read_metrics`).

    Raises:
      ValueError: resuming, a line of ``metrics.jsonl`` other than the last is not a JSON
        record (the message names the line and the fix).
    """

    def __init__(self, workdir: str | os.PathLike, regimes: Sequence[str], *,
                 resume: tuple[str, int] | None = None, tensorboard: bool = True,
                 log: Callable[[str], None] | None = None):
        self.dir = as_path(workdir)
        self.path = self.dir / METRICS_FILE
        self.regimes = tuple(regimes)
        self.local = is_local(workdir)
        self._writers: dict[str, Any] = {}
        self.tensorboard = bool(tensorboard) and self.local
        kept = []
        if resume is not None:
            last = _key(resume[0], resume[1], self.regimes)
            kept = [r for r in read_metrics(self.dir, log=log)
                    if r.get("regime") in self.regimes and _key(r["regime"], r["epoch"], self.regimes) <= last]
        self._lines = [json.dumps(r) for r in kept]
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, "".join(line + "\n" for line in self._lines))

    def write(self, regime: str, epoch: int, seed: int, metrics: Mapping[str, float],
              mi: Mapping[str, Any] | None = None, **extra: float) -> dict[str, Any]:
        """Appends one line (and its TensorBoard scalars) and returns it as a dict.

        Args:
          regime: ``"nt"`` or ``"at"``.
          epoch: the epoch just measured (0: before training).
          seed: the seed's index in the run's stack (0 for the first seed).
          metrics: ``{name: value}``, e.g. accuracies and losses.
          mi: ``{estimator: {inputs: {quantity: {probe: bits}}}}``.
          **extra: further top-level numbers, e.g. ``epoch_seconds``.
        """
        if regime not in self.regimes:
            raise ValueError(f"unknown regime {regime!r}; expected one of {self.regimes}.")
        record: dict[str, Any] = {"regime": regime, "epoch": int(epoch), "seed": int(seed),
                                  "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        record.update({k: v for k, v in extra.items()})
        record["metrics"] = dict(metrics)
        if mi is not None:
            record["mi"] = mi
        record = to_jsonable(record)
        line = json.dumps(record)
        self._lines.append(line)
        if self.local:
            with open(os.fspath(self.path), "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        else:  # object stores cannot append: rewrite the whole (small) file atomically
            atomic_write_text(self.path, "".join(x + "\n" for x in self._lines))
        if self.tensorboard:
            writer = self._writer(regime if seed == 0 else f"{regime}_seed{seed}", int(epoch))
            for tag, value in scalars(record).items():
                writer.add_scalar(tag, value, int(epoch))
            writer.flush()
        return record

    def _writer(self, name: str, first_step: int):
        if name not in self._writers:
            from tensorboardX import SummaryWriter  # imported on first use: most library users never need it

            # purge_step: TensorBoard hides events at or after this step written by an earlier,
            # interrupted attempt (they are measured again now).
            self._writers[name] = SummaryWriter(os.fspath(self.dir / TENSORBOARD_DIR / name),
                                                purge_step=first_step, flush_secs=10,
                                                filename_suffix=f".{uuid.uuid4().hex[:8]}")  # unique per attempt
        return self._writers[name]

    def close(self) -> None:
        """Flushes and closes the TensorBoard writers."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def history_line(history: Any, layers: Sequence[str]) -> tuple[dict[str, float], dict | None]:
    """The last measurement of one regime's history as ``(metrics, mi)`` for :meth:`LiveLog.write`.

    Args:
      history: a :class:`jaxmi.history.History` (training metrics alone for a run without
        measurements: ``mi`` is then None).
      layers: the probe names in model order.
    """
    metrics = {k: v[-1] for k, v in history.metrics.items()}
    if not history.measured:
        return metrics, None
    mi = {est: {inputs: {q: dict(zip(layers, series[-1])) for q, series in per_q.items()}
                for inputs, per_q in per_input.items()}
          for est, per_input in history.mi.items()}
    return metrics, mi
