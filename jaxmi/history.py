"""The typed record of an NT-vs-AT run: one vocabulary, seed aggregation, validation, JSON.

Vocabulary, used by the code, ``summary.json`` and the docs alike:

* **regime** — how a network was trained: ``"nt"`` (normal training) or ``"at"`` (PGD
  adversarial training), :data:`REGIMES`;
* **inputs** — what a measurement is taken on: ``"clean"`` test images or ``"adv"``
  (their PGD adversarial examples), :data:`INPUTS`;
* **quantity** — ``"I_XT"`` = I(X;T) or ``"I_TY"`` = I(T;Y), in bits, :data:`QUANTITIES`;
* **metric** — accuracy and loss per measurement, :data:`METRICS`;
* **probe** — a named layer output; **estimator** — an MI estimator name.

A :class:`History` holds one regime's measurements (epoch 0 and after every epoch): the
metrics, and ``mi[estimator][inputs][quantity]``, a list over measurements of lists over
probes. :class:`RunResult` holds the histories of every seed of a run with what the
summary needs around them. Their JSON layout (:meth:`History.to_dict`,
:meth:`RunResult.summary_fields`) is the layout of ``summary.json``::

    {"layers": [...], "epochs_measured": [0, 1, ...], "data": {...},
     "nt": {"train_acc": [...], ..., "mi": {est: {"clean": {"I_XT": [[P] * M], "I_TY": ...},
                                             "adv": {...}}},
            "mi_se": {...}},                    # with bootstrap standard errors
     "at": {...},
     "seeds": [{"seed": s, "nt": {...}, "at": {...}}, ...]}   # with several seeds

With several seeds, ``nt``/``at`` are the seed means, with ``"<metric>_sd"`` and ``"mi_sd"``
(standard deviation across seeds, ddof 1) beside them (:func:`aggregate_seeds`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxmi.stats import mean_sd

__all__ = ["REGIMES", "INPUTS", "QUANTITIES", "METRICS", "History", "RunResult", "aggregate_seeds",
           "validate_summary", "regime_line"]

REGIMES: tuple[str, ...] = ("nt", "at")
INPUTS: tuple[str, ...] = ("clean", "adv")
QUANTITIES: tuple[str, ...] = ("I_XT", "I_TY")
METRICS: tuple[str, ...] = ("train_acc", "train_loss", "test_clean_acc", "test_adv_acc", "test_clean_loss",
                            "test_adv_loss")

MIBlock = dict[str, dict[str, dict[str, list]]]  # [estimator][inputs][quantity] -> [measurement][probe]


def _empty_mi(estimators: Sequence[str]) -> MIBlock:
    return {m: {i: {q: [] for q in QUANTITIES} for i in INPUTS} for m in estimators}


@dataclasses.dataclass
class History:
    """One regime's measurements, appended one measurement at a time.

    Attributes:
      metrics: ``{metric: [one float per measurement]}`` for every name in :data:`METRICS`.
      mi: ``mi[estimator][inputs][quantity]``: one list of per-probe values (bits) per
        measurement.
      mi_se: the same layout for bootstrap standard errors, or ``None``.
    """

    metrics: dict[str, list[float]]
    mi: MIBlock
    mi_se: MIBlock | None = None

    @classmethod
    def empty(cls, estimators: Sequence[str], *, with_se: bool = False) -> "History":
        return cls({k: [] for k in METRICS}, _empty_mi(estimators), _empty_mi(estimators) if with_se else None)

    def __len__(self) -> int:
        return len(self.metrics["train_acc"])

    def record(self, metrics: Mapping[str, float], mi: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]]
               ) -> None:
        """Appends one measurement.

        Args:
          metrics: a float for every name in :data:`METRICS`.
          mi: ``{inputs: {estimator: {quantity: [per probe], "<quantity>_se": [...]}}}`` as
            returned per probe set by :func:`jaxmi.estimators.estimate` (lists over probes).
        """
        for k in METRICS:
            self.metrics[k].append(float(metrics[k]))
        for est, per_input in self.mi.items():
            for inputs, per_q in per_input.items():
                res = mi[inputs][est]
                for q in QUANTITIES:
                    per_q[q].append([float(v) for v in res[q]])
                    if self.mi_se is not None:
                        self.mi_se[est][inputs][q].append([float(v) for v in res[f"{q}_se"]])

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout of one regime in ``summary.json``."""
        out: dict[str, Any] = {k: list(v) for k, v in self.metrics.items()}
        out["mi"] = self.mi
        if self.mi_se is not None:
            out["mi_se"] = self.mi_se
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "History":
        return cls({k: list(d[k]) for k in METRICS}, d["mi"], d.get("mi_se"))


def aggregate_seeds(histories: Sequence[Mapping[str, History]]) -> dict[str, Any]:
    """Seed-mean histories, with standard deviations across seeds (ddof 1), as JSON.

    Args:
      histories: one ``{regime: History}`` per seed.

    Returns:
      ``{regime: {metric: mean, "<metric>_sd": sd, ..., "mi": mean, "mi_sd": sd}}``.
    """
    out: dict[str, Any] = {}
    for regime in REGIMES:
        hs = [h[regime] for h in histories]
        agg: dict[str, Any] = {}
        for k in METRICS:
            agg[k], agg[f"{k}_sd"] = mean_sd([h.metrics[k] for h in hs])
        mi: MIBlock = {}
        mi_sd: MIBlock = {}
        for est, per_input in hs[0].mi.items():
            mi[est], mi_sd[est] = {}, {}
            for inputs, per_q in per_input.items():
                mi[est][inputs], mi_sd[est][inputs] = {}, {}
                for q in per_q:
                    mi[est][inputs][q], mi_sd[est][inputs][q] = mean_sd([h.mi[est][inputs][q] for h in hs])
        agg["mi"], agg["mi_sd"] = mi, mi_sd
        out[regime] = agg
    return out


@dataclasses.dataclass
class RunResult:
    """Everything an NT-vs-AT run measured.

    Attributes:
      layers: probe names, in order.
      epochs_measured: the epoch of every measurement (0 = the initial weights).
      num_classes: number of classes.
      data: where the data came from and how much was used.
      seeds: the seed of every stacked run.
      histories: one ``{regime: History}`` per seed.
      timing: wall-clock seconds and execution details (kept out of the summary so that it
        is reproducible).
    """

    layers: list[str]
    epochs_measured: list[int]
    num_classes: int
    data: dict[str, Any]
    seeds: list[int]
    histories: list[dict[str, History]]
    timing: dict[str, Any]

    def summary_fields(self) -> dict[str, Any]:
        """The run's part of ``summary.json``: layers, epochs, data, ``nt``/``at`` (seed means
        with ``_sd`` entries when there are several seeds) and, then, every seed's own."""
        out: dict[str, Any] = {"layers": list(self.layers), "epochs_measured": list(self.epochs_measured),
                               "data": dict(self.data)}
        if len(self.histories) == 1:
            out.update({r: self.histories[0][r].to_dict() for r in REGIMES})
        else:
            out.update(aggregate_seeds(self.histories))
            out["seeds"] = [{"seed": s, **{r: h[r].to_dict() for r in REGIMES}}
                            for s, h in zip(self.seeds, self.histories)]
        return out

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary_fields` plus ``num_classes`` and ``timing``."""
        return {**self.summary_fields(), "num_classes": self.num_classes, "timing": self.timing}


def regime_line(h: History) -> str:
    """The last measurement of a history as one log line."""
    m = {k: v[-1] for k, v in h.metrics.items()}
    return (f"train acc {m['train_acc']:.4f} loss {m['train_loss']:.4f} | test clean "
            f"{m['test_clean_acc']:.4f} adv {m['test_adv_acc']:.4f}")


# --------------------------------------------------------------------------------------
# Validation of a summary (what the figures and verdicts read)


def _as_float_array(value: Any, where: str) -> np.ndarray:
    """Converts a (nested) list with None entries to a float array (None -> NaN)."""
    try:
        return np.array(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"summary{where} is not a rectangular list of numbers: {exc}") from None


def _check_mi_block(block: Any, where: str, m: int, p: int) -> None:
    if not isinstance(block, Mapping):
        raise ValueError(f"summary{where} must be a dict estimator -> {{'clean'/'adv' -> ...}}")
    for est, per_input in block.items():
        w_est = f"{where}[{est!r}]"
        if not isinstance(per_input, Mapping):
            raise ValueError(f"summary{w_est} must be a dict with 'clean' and/or 'adv' entries")
        if not any(k in per_input for k in INPUTS):
            raise ValueError(f"summary{w_est} has neither a 'clean' nor an 'adv' entry")
        for inputs in INPUTS:
            if per_input.get(inputs) is None:
                continue
            q_block = per_input[inputs]
            if not isinstance(q_block, Mapping):
                raise ValueError(f"summary{w_est}[{inputs!r}] must be a dict with 'I_XT' and 'I_TY'")
            for q in QUANTITIES:
                w_q = f"{w_est}[{inputs!r}][{q!r}]"
                if q not in q_block:
                    raise ValueError(f"summary{w_q} is missing")
                arr = _as_float_array(q_block[q], w_q)
                if arr.shape != (m, p):
                    raise ValueError(
                        f"summary{w_q} has shape {arr.shape}, expected (measurements, probes) = "
                        f"({m}, {p}) from 'epochs_measured' and 'layers'"
                    )


def _check_list(summary: Mapping, key: str, what: str) -> Sequence:
    if key not in summary:
        raise ValueError(f"summary is missing the {key!r} key ({what})")
    value = summary[key]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"summary[{key!r}] must be a non-empty list of {what}")
    return value


def validate_summary(summary: Any, *, require_mi: bool = False) -> None:
    """Checks the structure of a summary dict; raises ``ValueError`` naming the problem.

    Requires ``layers`` (non-empty list of names), ``epochs_measured`` (non-empty list of
    finite numbers), at least one of ``nt``/``at``, per-measurement metric lists of the right
    length, and MI arrays of shape (measurements, probes). With ``require_mi`` at least one
    regime must hold a non-empty ``mi`` block. Missing values (``None``/NaN) are allowed.
    """
    if not isinstance(summary, Mapping):
        raise ValueError(f"summary must be a dict, got {type(summary).__name__}")
    layers = _check_list(summary, "layers", "probe names")
    epochs = _check_list(summary, "epochs_measured", "epoch numbers")
    ep = _as_float_array(epochs, "['epochs_measured']")
    if ep.ndim != 1 or not np.all(np.isfinite(ep)):
        raise ValueError("summary['epochs_measured'] must be a flat list of finite epoch numbers")
    m, p = len(epochs), len(layers)
    present = [r for r in REGIMES if summary.get(r) is not None]
    if not present:
        raise ValueError("summary has neither an 'nt' nor an 'at' entry")
    any_mi = False
    for r in present:
        res = summary[r]
        if not isinstance(res, Mapping):
            raise ValueError(f"summary[{r!r}] must be a dict of results")
        for key in METRICS:
            if res.get(key) is None:
                continue
            arr = _as_float_array(res[key], f"[{r!r}][{key!r}]")
            if arr.shape != (m,):
                raise ValueError(
                    f"summary[{r!r}][{key!r}] has {arr.shape[0] if arr.ndim == 1 else arr.shape} "
                    f"entries, expected {m} (one per entry of 'epochs_measured')"
                )
        for block_key in ("mi", "mi_se", "mi_sd"):
            if res.get(block_key) is not None:
                _check_mi_block(res[block_key], f"[{r!r}][{block_key!r}]", m, p)
        any_mi = any_mi or bool(res.get("mi"))
    if require_mi and not any_mi:
        raise ValueError("summary holds no mutual-information estimates (no 'mi' under 'nt' or 'at')")
