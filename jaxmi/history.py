"""The typed record of an NT-vs-AT run: one vocabulary, the per-regime history, validation, JSON.

Vocabulary, used by the code, ``summary.json`` and the docs alike:

* **regime** — how a network was trained: ``"nt"`` (normal training) or ``"at"`` (PGD
  adversarial training), :data:`REGIMES`;
* **inputs** — what a measurement is taken on: ``"clean"`` test images or ``"adv"``
  (their PGD adversarial examples), :data:`INPUTS`; runs also measure the control inputs
  ``"noise"`` (the clean images plus random-sign noise of the attack's ε, clipped to the
  pixel range) and ``"unrelated"`` (uniform-noise images U[0, 1] of the draw's shape, one
  fixed draw), :data:`CONTROL_INPUTS`, which finding 1 compares with the adversarial ones;
* **quantity** — ``"I_XT"`` = I(X;T) or ``"I_TY"`` = I(T;Y), in bits, :data:`QUANTITIES`;
* **metric** — accuracy and loss per measurement, :data:`METRICS`;
* **probe** — a named layer output; **estimator** — an MI estimator name.

A :class:`History` holds one regime's measurements (epoch 0 and after every epoch): the
metrics, and ``mi[estimator][inputs][quantity]``, a list over measurements of lists over
probes. :class:`jaxmi.result.RunResult` holds the histories of every seed of a run with what
the summary needs around them (and averages seeds). Their JSON layout (:meth:`History.to_dict`,
:meth:`jaxmi.result.RunResult.summary_fields`) is the run part of ``summary.json``::

    {"layers": [...], "epochs_measured": [0, 1, ...], "data": {...},
     "nt": {"train_acc": [...], ..., "mi": {est: {"clean": {"I_XT": [[P] * M], "I_TY": ...},
                                             "adv": {...}}},
            "mi_se": {...},                     # with bootstrap standard errors
            "mi_boot": {est: {inputs: {q: [[[R] * P] * M]}}},  # with bootstrap: every resample's value
            "scale_free": {...},                # with the sweep: the scale-free sweep (History.scale_free)
            "diagnostics": {est: {"clean": {"saturated": [[P] * M], "I_XT_gap": ..., ...}, "adv": ...}}},
     "at": {...},
     "saturation": {"threshold_bits": 0.01, "I_XT_ceiling": ..., "final_saturated": ..., "warning": ...},
     "sweep": {"noise_var": [...], "bin_size": [...], "epochs": [0, E],
               "nt": {"clean": {est: {"I_XT": [[[S] * P] * 2], ...}}, ...}, "at": ..., "separation": ...},
     "seeds": [{"seed": s, "nt": {...}, "at": {...}}, ...]}   # with several seeds

With several seeds, ``nt``/``at`` are the seed means, with ``"<metric>_sd"`` and ``"mi_sd"``
(standard deviation across seeds, ddof 1) beside them (:func:`jaxmi.result.aggregate_seeds`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxmi.stats import mean_sd

__all__ = ["robust_summary", "REGIMES", "INPUTS", "CONTROL_INPUTS", "QUANTITIES", "METRICS", "TRAIN_METRICS",
           "DIAGNOSTICS", "MIBlock", "History", "validate_summary", "regime_line"]

REGIMES: tuple[str, ...] = ("nt", "at")
INPUTS: tuple[str, ...] = ("clean", "adv")
CONTROL_INPUTS: tuple[str, ...] = ("noise", "unrelated")  # random-sign perturbations of the attack's size;
# uniform-noise images U[0, 1] unrelated to the draw
QUANTITIES: tuple[str, ...] = ("I_XT", "I_TY")
METRICS: tuple[str, ...] = ("train_acc", "train_loss", "test_clean_acc", "test_adv_acc", "test_clean_loss",
                            "test_adv_loss")
#: What a run without measurements records per epoch.
TRAIN_METRICS: tuple[str, ...] = ("train_acc", "train_loss")

#: Per-estimate diagnostics kept for every measurement (:mod:`jaxmi.estimators.diagnostics`);
#: the last two exist for the KDE bounds only.
DIAGNOSTICS: tuple[str, ...] = ("saturated", "I_XT_gap", "I_TY_gap", "nn_sq_dist_over_width", "self_dominated_share")

MIBlock = dict[str, dict[str, dict[str, list]]]  # [estimator][inputs][quantity] -> [measurement][probe]


def _num(v: Any, cast=float) -> Any:
    """``cast(v)``, or None for None."""
    return None if v is None else cast(v)


def _empty_mi(estimators: Sequence[str], inputs: Sequence[str] = INPUTS) -> MIBlock:
    return {m: {i: {q: [] for q in QUANTITIES} for i in inputs} for m in estimators}


@dataclasses.dataclass
class History:
    """One regime's measurements, appended one measurement at a time.

    Attributes:
      metrics: ``{metric: [one float per measurement]}`` for every name in :data:`METRICS`.
      mi: ``mi[estimator][inputs][quantity]``: one list of per-probe values (bits) per
        measurement.
      mi_se: the same layout for bootstrap standard errors, or ``None``.
      mi_boot: with bootstrap, the same layout with every resample's value per probe
        (``[measurement][probe][resample]``; every measurement, regime and inputs use the same
        resamples of the draw, so differences and correlations are paired), or ``None``.
      diagnostics: ``diagnostics[estimator][inputs][key]`` for the keys of :data:`DIAGNOSTICS`
        the estimator reports, same layout.
      sweep: ``{"epochs": [...], inputs: {estimator: {quantity: [measurement][probe][value]}}}``:
        the estimates over the σ² (KDE) or bin-size (binning) grid at some measurements.
      scale_free: the scale-free sweep of the clean inputs at the last swept measurement
        (:meth:`jaxmi.measure.Measurer`), or ``None``: ``{"epoch": e, "noise_var": [S] relative σ²,
        "spread": [P], est: {"I_XT": [P][S], "I_TY": [P][S], "I_XT_resamples": [P][S][R]},
        "temperature": {...}}`` for both KDE bounds (the temperature curve of the logits,
        :func:`jaxmi.estimators.scale_free.temperature_curve`, when the last probe is the logits).
    """

    metrics: dict[str, list[float]]
    mi: MIBlock
    mi_se: MIBlock | None = None
    diagnostics: MIBlock = dataclasses.field(default_factory=dict)
    sweep: dict[str, Any] | None = None
    mi_boot: MIBlock | None = None
    scale_free: dict[str, Any] | None = None

    @classmethod
    def empty(cls, estimators: Sequence[str], *, with_se: bool = False,
              inputs: Sequence[str] = INPUTS) -> "History":
        """An empty history measuring ``inputs``; ``with_se`` keeps the bootstrap standard
        errors and resample values."""
        return cls({k: [] for k in METRICS}, _empty_mi(estimators, inputs),
                   _empty_mi(estimators, inputs) if with_se else None, {},
                   mi_boot=_empty_mi(estimators, inputs) if with_se else None)

    @classmethod
    def training_only(cls) -> "History":
        """A history of the training metrics alone (a run without measurements)."""
        return cls({k: [] for k in TRAIN_METRICS}, {})

    @property
    def measured(self) -> bool:
        """Whether this history holds measurements (test metrics and MI), not training alone."""
        return bool(self.mi)

    def __len__(self) -> int:
        return len(self.metrics["train_acc"])

    def record(self, metrics: Mapping[str, float], mi: Mapping[str, Mapping[str, Mapping[str, Sequence[Any]]]],
               sweep: Mapping[str, Any] | None = None, epoch: int | None = None) -> None:
        """Appends one measurement.

        Args:
          metrics: a float for every name in :data:`METRICS`.
          mi: ``{inputs: {estimator: {key: [per probe]}}}``: the quantities, their ``_se``
            with bootstrap, and the diagnostics of :func:`jaxmi.estimators.estimate`.
          sweep: ``{inputs: {estimator: {quantity: [probe][value]}}}`` when this measurement
            was swept (at ``epoch``).
        """
        for k in self.metrics:
            self.metrics[k].append(float(metrics[k]))
        for est, per_input in self.mi.items():
            for inputs, per_q in per_input.items():
                res = mi[inputs][est]
                # None (an estimator without I(X;T), e.g. knn) stays None: JSON null
                for q in QUANTITIES:
                    per_q[q].append([_num(v) for v in res[q]])
                    if self.mi_se is not None:
                        self.mi_se[est][inputs][q].append([_num(v) for v in res[f"{q}_se"]])
                    if self.mi_boot is not None:
                        self.mi_boot[est][inputs][q].append([None if v is None else [round(float(b), 5) for b in v]
                                                             for v in res[f"{q}_resamples"]])
                diag = self.diagnostics.setdefault(est, {}).setdefault(inputs, {})
                for key in DIAGNOSTICS:
                    if key in res:
                        cast = bool if key == "saturated" else float
                        diag.setdefault(key, []).append([_num(v, cast) for v in res[key]])
        if sweep is not None and "scale_free" in sweep:
            sweep = dict(sweep)
            self.scale_free = {"epoch": int(epoch), **sweep.pop("scale_free")}
        if sweep is not None:
            if self.sweep is None:
                self.sweep = {"epochs": []}
            self.sweep["epochs"].append(int(epoch))
            for inputs, per_est in sweep.items():
                for est, per_q in per_est.items():
                    block = self.sweep.setdefault(inputs, {}).setdefault(est, {})
                    for q, values in per_q.items():
                        block.setdefault(q, []).append(values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout of one regime (``summary.json`` moves ``sweep`` to its top level)."""
        out: dict[str, Any] = {k: list(v) for k, v in self.metrics.items()}
        if not self.measured:
            return out
        out["mi"] = self.mi
        if self.mi_se is not None:
            out["mi_se"] = self.mi_se
        if self.mi_boot is not None:
            out["mi_boot"] = self.mi_boot
        out["diagnostics"] = self.diagnostics
        if self.sweep is not None:
            out["sweep"] = self.sweep
        if self.scale_free is not None:
            out["scale_free"] = self.scale_free
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "History":
        if "mi" not in d:
            return cls({k: list(d[k]) for k in TRAIN_METRICS}, {})
        return cls({k: list(d[k]) for k in METRICS}, d["mi"], d.get("mi_se"), d.get("diagnostics") or {},
                   d.get("sweep"), d.get("mi_boot"), d.get("scale_free"))


def robust_summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One regime's robust evaluation for ``summary.json``: the report of a single seed, or with
    several seeds the mean (and ``_sd``) of the accuracies with every seed's report."""
    if len(per_seed) == 1:
        return per_seed[0]
    out: dict[str, Any] = {k: per_seed[0][k] for k in ("samples", "eps", "pgd_paper_steps", "apgd_steps")}
    for key in ("clean_acc", "pgd_paper_acc", "robust_acc"):
        out[key], out[f"{key}_sd"] = mean_sd([r[key] for r in per_seed])
    out["flags"] = {f: any(r["flags"][f] for r in per_seed) for f in per_seed[0]["flags"]}
    out["per_seed"] = per_seed
    return out


def regime_line(h: History) -> str:
    """The last measurement of a history as one log line."""
    m = {k: v[-1] for k, v in h.metrics.items()}
    if not h.measured:
        return f"train acc {m['train_acc']:.4f} loss {m['train_loss']:.4f}"
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
