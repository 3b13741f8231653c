"""What findings share beyond the runner: the networks they measure, their test draw, their passes.

* :func:`measured_run` — NT and AT trained and measured per epoch (findings 1 and 2), as the
  runner's :class:`~jaxmi.findings.runner.Measured`.
* :class:`ModelOptions`, :func:`trained_models` — NT and AT models for findings 3 and 4:
  loaded from a run directory (``--from-run``, ``--from-seed``), or trained by
  :func:`jaxmi.run.train_pair`; with their source and training record in the summary layout.
* :func:`measurement_draw`, :func:`model_passes` — the test images and the batched passes
  (PGD examples, forward, probes a group at a time) findings 3 and 4 measure with.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxmi.config import Config, setting
from jaxmi.data import load_dataset, to_float
from jaxmi.estimators import estimate
from jaxmi.evaluation import adversary_core, forward_core
from jaxmi.findings.runner import Measured
from jaxmi.findings.summary import config_record, read_summary, seed_record
from jaxmi.history import REGIMES
from jaxmi.models import probe_widths
from jaxmi.plan import execution, mi_indices, pgd_config, probe_groups
from jaxmi.run import Trained, load_trained, log_line, train_and_measure, train_pair

__all__ = ["measured_run", "ModelOptions", "Models", "trained_models", "Draw", "measurement_draw", "Passes",
           "model_passes"]


def measured_run(config: Config, options: Any, workdir: str | os.PathLike, *,
                 log: Callable[[str], None] = log_line, show_progress: bool = True) -> Measured:
    """NT and AT trained and measured at every epoch (:func:`jaxmi.run.train_and_measure`, which
    checkpoints into and resumes from ``workdir``): the run record and its timing. A finding's
    ``measure``; ``options`` play no part."""
    result = train_and_measure(config, log=log, show_progress=show_progress, workdir=workdir)
    return Measured(config_record(config), {}, source={"trained": True}, run=result.summary_fields(),
                    timing=result.timing)


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """Where findings 3 and 4 take their NT and AT models from (the first fields of their options)."""

    from_run: str | None = setting(None, "load the trained NT and AT models of a finished run directory instead "
                                         "of training", metavar="DIR")
    from_seed: int = setting(0, "with --from-run of a run with several seeds: which seed's models to load (0 = "
                                "its first; --seeds K loads 0 … K−1)", minimum=0)


class Models(NamedTuple):
    """Trained NT and AT models and what the summary says about them."""

    config: Config  # the configuration they were trained with (the loaded run's with --from-run)
    module: Any
    trained: Trained  # {"nt": (params, batch_stats), "at": ...}
    source: dict[str, Any]  # summary["source"]
    run: dict[str, Any] | None  # summary["run"]: training accuracy and loss per epoch, robust evaluation


def trained_models(config: Config, from_run: str | None, *, log: Callable[[str], None] = log_line,
                   show_progress: bool = True, workdir: str | os.PathLike | None = None, from_seed: int = 0
                   ) -> Models:
    """Trained NT and AT models: loaded from ``from_run`` when given, else trained here.

    Models trained here are saved into ``workdir`` when given (:func:`jaxmi.run.train_pair`);
    their training record is ``{"nt": {"train_acc": [...], "train_loss": [...]}, "at": ...,
    "robust": {regime: report}}``. With ``from_run`` the config is the loaded run's (its
    dataset, model, attack and seed; seed index ``from_seed`` of a run with several seeds), with
    this run's ``samples``, ``estimators`` and ``data_dir``, and the training record is that
    seed's in the run's ``summary.json`` (:func:`jaxmi.findings.summary.seed_record`; None
    where the directory has none).
    """
    if from_run is None:
        module, trained, history = train_pair(config, log=log, show_progress=show_progress, workdir=workdir)
        run = {r: {k: v for k, v in history[r].items() if k != "robust"} for r in REGIMES}
        robust = {r: history[r]["robust"] for r in REGIMES if history[r].get("robust")}
        return Models(config, module, trained, {"trained": True}, {**run, **({"robust": robust} if robust else {})})
    run_config, module, trained = load_trained(from_run, seed_index=from_seed)
    try:
        run = seed_record(read_summary(from_run), from_seed)
    except ValueError:  # models without a readable summary: no training record
        run = None
    run_config = Config.from_dict({**run_config.flat(), "samples": config.mi.samples, "eval_samples": None,
                                   "estimators": config.mi.estimators,
                                   "data_dir": config.data.data_dir or run_config.data.data_dir})
    log(f"loaded trained NT and AT {run_config.model.model} ({run_config.data.dataset}, {run_config.optim.epochs} "
        f"epochs) from {from_run}")
    return Models(run_config, module, trained, {"from_run": str(from_run)}, run)


class Draw(NamedTuple):
    """The test images a finding measures trained models on (the run's MI draw)."""

    x: np.ndarray  # float32 [N, H, W, C] in [0, 1]
    y: np.ndarray  # int32 [N]
    num_classes: int
    source: str


def measurement_draw(config: Config) -> Draw:
    """The ``samples`` test images of :func:`jaxmi.plan.mi_indices`, as floats."""
    test = load_dataset(config.data.dataset, "test", data_dir=config.data.data_dir)
    idx = mi_indices(config, len(test))
    x = np.asarray(to_float(jnp.asarray(test.images[idx])))
    return Draw(x, test.labels[idx].astype(np.int32), test.num_classes, test.source)


class Passes(NamedTuple):
    """The batched passes findings 3 and 4 run on one trained model (unstacked variables)."""

    adversary: Callable  # (params, batch_stats, x, y) -> PGD examples [N, H, W, C]
    forward: Callable  # (params, batch_stats, x, y) -> {"loss", "correct", "probs"} [N, ...]
    probes: dict[tuple[str, ...], Callable]  # per probe group: (...) -> {"probes": {name: [N, D]}}
    kde_precision: str = "highest"  # the KDE estimators' matrix-product precision (resolved)

    def information(self, params, batch_stats, x, y, y_host, **estimate_options) -> dict[str, Any]:
        """``{probe: {method: {...}}}`` of :func:`jaxmi.estimators.estimate` (KDE at the run's
        precision), holding one probe group's activations at a time."""
        if any(m.startswith("kde") for m in estimate_options.get("methods", ("kde_upper",))):
            estimate_options = {"precision": self.kde_precision, **estimate_options}
        out: dict[str, Any] = {}
        for fn in self.probes.values():
            probes = fn(params, batch_stats, x, y)["probes"]
            out.update(estimate(probes, y_host, **estimate_options))
            del probes
        return out


def model_passes(module: Any, config: Config, n: int, input_shape: tuple[int, ...]) -> Passes:
    """The :class:`Passes` of ``module`` for ``n`` images under ``config``'s evaluation attack,
    batch and loop; probes come a group at a time (:func:`jaxmi.plan.probe_groups`)."""
    exe = execution(config)
    batching = exe.batching(batch_size=min(exe.eval_batch_size, n), stacked=False)
    groups = probe_groups(probe_widths(module, input_shape))  # checks the model
    return Passes(adversary_core(module, pgd_config(config), unroll=exe.attack_unroll, batching=batching),
                  forward_core(module, with_probes=False, with_probs=True, batching=batching),
                  {g: forward_core(module, with_probes=g, with_probs=False, batching=batching) for g in groups},
                  exe.kde_precision)


