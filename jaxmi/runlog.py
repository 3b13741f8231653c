"""The record of a run as it goes: histories, timing, robust reports; saved, published, resumed.

A :class:`RunLog` holds what a run has measured so far, one :class:`~jaxmi.history.History`
per seed and regime (training metrics alone for a run without measurements), the wall-clock
times and the final robust evaluations. With a run directory it also

* **resumes**: :meth:`RunLog.resume` restores the newest checkpoint (which must have been
  written by the same run identity) and the record saved with it;
* **publishes** each measurement as live metrics (``metrics.jsonl`` and TensorBoard,
  :mod:`jaxmi.live`);
* **saves** a checkpoint after every measurement, and each regime's final models (every
  seed's) when it finishes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax

from jaxmi.checkpoint import RunCheckpointer, save_model
from jaxmi.config import normalize_identity
from jaxmi.history import REGIMES, History, regime_line
from jaxmi.live import LiveLog, history_line
from jaxmi.plan import RunPlan
from jaxmi.training import unstack

__all__ = ["RunLog"]


class RunLog:
    """What a run has recorded; see the module docstring.

    Args:
      plan: the run's plan.
      measured: whether every epoch is measured (test metrics and MI) or only trained.
      workdir: the run directory, or None (nothing is saved or published).
      log: where one-line messages go.
    """

    def __init__(self, plan: RunPlan, *, measured: bool, workdir: str | os.PathLike | None,
                 log: Callable[[str], None]):
        self.plan, self.measured, self.workdir, self.log = plan, measured, workdir, log
        config = plan.config

        def new() -> History:
            if measured:
                return History.empty(config.mi.estimators, with_se=bool(config.mi.bootstrap), inputs=plan.mi.inputs)
            return History.training_only()

        self.histories: list[dict[str, History]] = [{r: new() for r in REGIMES} for _ in range(config.seeds)]
        self.timing: dict[str, Any] = {r: {"epoch_seconds": [], "measure_seconds": []} for r in REGIMES}
        self.robust: dict[str, list[dict[str, Any]]] = {}  # regime -> per-seed robust evaluation of its final model
        self.resumed = None
        self._ckpt = self._live = None
        if workdir is not None:
            identity = {**config.identity(), **({} if measured else {"measure": False})}
            self._ckpt = RunCheckpointer(workdir, identity, regimes=REGIMES, epochs=config.optim.epochs,
                                         normalize=normalize_identity, log=log)

    def resume(self, init_states) -> Any:
        """Restores the newest intact checkpoint (None: none, a fresh run) and opens the live log.

        A corrupt newer checkpoint and a cut last line of ``metrics.jsonl`` (a crash while either
        was written) are dropped with a one-line warning to ``log``; the run then goes on from the
        newest intact checkpoint to the results of an uninterrupted run."""
        if self._ckpt is None:
            return None
        resumed = self._ckpt.restore_latest(init_states)
        if resumed is not None:
            self.histories = [{r: History.from_dict(h[r]) for r in REGIMES} for h in resumed.record["history"]]
            self.timing = resumed.record["timing"]
            self.robust = dict(resumed.record.get("robust") or {})
            self.log(f"resuming from the checkpoint after {resumed.regime.upper()} epoch {resumed.epoch} in "
                     f"{self._ckpt.path}")
        self.resumed = resumed
        self._live = LiveLog(self.workdir, REGIMES, log=self.log,
                             resume=None if resumed is None else (resumed.regime, resumed.epoch))
        return resumed

    def record(self, regime: str, epoch: int, per_seed: list) -> None:
        """One epoch of every seed: ``(metrics, mi, sweep)`` (measured) or the training means."""
        for h, item in zip(self.histories, per_seed):
            if self.measured:
                h[regime].record(*item, epoch)
            else:
                h[regime].record({"train_acc": item["accuracy"], "train_loss": item["loss"]}, {})

    def publish(self, regime: str, epoch: int, **seconds: float) -> None:
        """The measurement just recorded, as live metrics (metrics.jsonl, TensorBoard)."""
        if self._live is None:
            return
        for k, h in enumerate(self.histories):
            metrics, mi = history_line(h[regime], self.plan.layers)
            self._live.write(regime, epoch, k, metrics, mi, **seconds)

    def line(self, regime: str) -> str:
        """The last record of ``regime`` as one log line (every seed's)."""
        config = self.plan.config
        if config.seeds == 1:
            return regime_line(self.histories[0][regime])
        return "; ".join(f"seed {config.seed + k}: {regime_line(h[regime])}" for k, h in enumerate(self.histories))

    def save(self, regime: str, epoch: int, states) -> None:
        """A checkpoint after ``epoch``; at the last epoch first the regime's final models."""
        if self._ckpt is None:
            return
        config, plan = self.plan.config, self.plan
        if epoch == config.optim.epochs:  # this regime is done: keep its models (before the checkpoint saying so)
            info = {"config": config.flat(), "num_classes": plan.num_classes, "input_shape": list(plan.input_shape),
                    "layers": list(plan.layers)}
            host = jax.device_get(states)  # sliced on the host: no compiled slices of every parameter
            for k, st in enumerate(unstack(host, config.seeds)):  # seed 0 as "nt"/"at", then "nt_seed1", ...
                save_model(self.workdir, regime if k == 0 else f"{regime}_seed{k}", st.params, st.batch_stats, info)
        self._ckpt.save(regime, epoch, states, {"seed": config.seed, "timing": self.timing, "robust": self.robust,
                                                "history": [{r: h[r].to_dict() for r in REGIMES}
                                                            for h in self.histories]})

    def close(self) -> None:
        if self._ckpt is not None:
            self._ckpt.close()
        if self._live is not None:
            self._live.close()
