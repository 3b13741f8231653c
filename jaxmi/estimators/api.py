"""The entry points: :func:`estimate` (any methods, one layer or a mapping of probes) and
:func:`estimate_mi` (one method, one layer)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxmi.estimators.bootstrap import resample_weights, summarize
from jaxmi.estimators.diagnostics import diagnose
from jaxmi.estimators.registry import METHODS, available_methods, check_methods, check_options, lookup
from jaxmi.estimators.validation import all_finite, check_bootstrap, infer_num_classes, raise_if_nonfinite, validate

__all__ = ["estimate", "estimate_mi"]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything an estimation call decides once, before the first layer."""

    methods: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]  # methods computed by one call, in order of first request
    options: dict[str, dict[str, Any]]  # per group: the options its compute function takes
    num_classes: int | None
    weights: np.ndarray  # [1 + R, N]
    resamples: int
    confidence: float


def _plan(methods, labels, num_classes, noise_var, bin_size, options) -> _Plan:
    """Checks the call's parameters once and fixes the groups, options and resamples."""
    methods = check_methods(methods)
    bootstrap = options.pop("bootstrap", 0)
    key = options.pop("key", None)
    confidence = options.pop("confidence", 0.95)
    check_options(methods, options)
    shared = {"block_size": None, "devices": None, "inputs": None, **options,
              "noise_var": noise_var, "bin_size": bin_size}
    groups: dict[str, list[str]] = {}
    for m in methods:
        groups.setdefault(lookup(m).group, []).append(m)
    per_group = {}
    for group, members in groups.items():
        entry = lookup(members[0])
        per_group[group] = {k: v for k, v in shared.items() if entry.options is None or k in entry.options}
        if entry.check is not None:
            entry.check(per_group[group])
    check_bootstrap(bootstrap, confidence)
    labels_np = np.asarray(labels)
    weights = resample_weights(labels_np.shape[0] if labels_np.ndim == 1 else 0, bootstrap, key)
    return _Plan(methods, tuple(tuple(v) for v in groups.values()), per_group,
                 infer_num_classes(labels, num_classes), weights, int(bootstrap), confidence)


def _estimate_layer(activations, labels, plan: _Plan, *, flatten: bool) -> dict[str, dict[str, float]]:
    t, y, c = validate(activations, labels, plan.num_classes, flatten=flatten, min_samples=2)
    out: dict[str, dict[str, float]] = {}
    if any(lookup(g[0]).group.startswith("user:") for g in plan.groups):
        # The built-in estimators flag non-finite activations in their own pass; a registered
        # one gets them checked here, once per layer.
        raise_if_nonfinite(all_finite(t), "activations")
    for members in plan.groups:
        entry = lookup(members[0])
        res = entry.compute(t, y, c, plan.weights, **plan.options[entry.group])
        for m in members:
            i_xt, i_ty, *extra = res[m]  # built-in estimators add their own diagnostics
            out[m] = summarize(i_xt, i_ty, plan.resamples, plan.confidence)
            out[m].update(diagnose(out[m], labels, extra[0] if extra else None))
            if not entry.i_xt:  # I(X;T) is not defined for this estimator: None, not NaN
                out[m].update({k: None for k in out[m] if k.startswith("I_XT")}, saturated=None)
    return {m: out[m] for m in plan.methods}


def estimate(x, labels, *, methods: Sequence[str] = METHODS, num_classes: int | None = None,
             noise_var: float = 0.1, bin_size: float = 0.5, **options):
    """Every requested estimator on one layer, or on every probe of a model, in one call.

    Each layer gets every method; both KDE bounds and all class terms of a layer come from
    one Gram pass, and with ``bootstrap`` all layers use the same resamples. Bootstrap error
    bars: R resamples of the N points drawn with replacement; built-in estimators get all of
    them from the same pass as the point estimate (weighted kernel sums, weighted symbol
    counts). A resample holds only ~63 % distinct points and duplicates act as exact
    neighbours, so resampled values are biased low relative to the full sample (most visibly
    near the log₂ N ceiling of I(X;T)); the point estimate is always the full sample's, and
    the standard error and percentile interval describe the sampling spread, not a
    bias-corrected interval.

    Args:
      x: one layer, an [N, D] array (one flattened layer output per row); or a mapping
        ``{probe name: [N, ...] array}`` (each flattened per sample).
      labels: [N] integer class labels.
      methods: names from :func:`available_methods` (default :data:`METHODS`, the paper's three).
      num_classes: number of classes (default: max(labels) + 1, the same for every probe).
      noise_var: KDE kernel variance σ² > 0 (0.1 in the paper).
      bin_size: binning width > 0 (0.5 in the paper).
      **options: ``noise_scale`` (KDE: ``"absolute"``, the paper's, or ``"relative"``: σ² in
        units of each layer's mean squared distance to its centroid; a secondary
        analysis, not the paper's protocol), ``block_size`` (KDE rows per block; default from the free memory),
        ``devices`` (devices the KDE pass is split over; default all local devices),
        ``rows`` (with several devices: ``"sharded"``, each device holds N/M rows of the layer,
        ``"replicated"``, or ``"auto"``: sharded from 256 MiB), ``precision`` (KDE matrix
        products, :func:`jaxmi.backend.resolve_kde_precision`),
        ``inputs`` ([N, ...] network inputs for the Rényi I(X;T)), ``bootstrap`` (R ≥ 2
        resamples for error bars; 0, the default, for none), ``key`` (JAX key of the
        resampling; default ``jax.random.key(0)``, so layers and models get paired
        resamples), ``confidence`` (coverage of the percentile interval, default 0.95),
        ``alpha``, ``kernel_width``, ``k_neighbors``, ``input_kernel_width`` (Rényi; see
        :func:`renyi_mi`), ``knn_k`` (the neighbour order of ``"knn"``, default 3), and the
        options of registered estimators. An option that none of
        ``methods`` takes is an error.

    Returns:
      For one array ``{method: {"I_XT": float, "I_TY": float, ...}}`` in bits, in the order
      of ``methods``; for a mapping ``{probe: {method: {...}}}`` in the order of the mapping.
      Every result also holds its diagnostics (:mod:`jaxmi.estimators.diagnostics`):
      ``"saturated"`` (I(X;T) within 0.01 bits of log₂ N), ``"I_XT_ceiling"``,
      ``"I_TY_ceiling"``, ``"I_XT_gap"``, ``"I_TY_gap"``, and for the KDE bounds
      ``"nn_sq_dist_over_width"``, ``"self_dominated_share"``, ``"noise_var"``. With
      ``bootstrap``, each result also holds ``"I_XT_se"``, ``"I_XT_lo"``, ``"I_XT_hi"``, ``"I_XT_resamples"``
      (standard error over the resamples and the percentile interval) and the same for
      ``"I_TY"``. ``"knn"`` (Ross's mixed kNN estimator, :mod:`jaxmi.estimators.knn_mixed`)
      estimates I(T;Y) only: I(X;T) is not defined for it (infinite for a deterministic
      network of continuous inputs), so its ``"I_XT"``, every other ``"I_XT_..."`` key and
      ``"saturated"`` are ``None``; its ceiling diagnostics are ``"I_TY_ceiling"`` = Ĥ(Y) and
      ``"I_TY_gap"``.

    Raises:
      ValueError: on a bad parameter, option or layer; for a mapping, a layer's message is
        prefixed ``probe 'name': ``.
    """
    single = not isinstance(x, Mapping)
    if not single and not x:
        raise ValueError("probes is empty; pass a mapping of probe name -> activations.")
    plan = _plan(methods, labels, num_classes, noise_var, bin_size, options)
    if single:
        return _estimate_layer(x, labels, plan, flatten=False)
    out = {}
    for name, act in x.items():
        try:
            out[name] = _estimate_layer(act, labels, plan, flatten=True)
        except ValueError as e:
            raise ValueError(f"probe {name!r}: {e}") from None
    return out


def estimate_mi(activations, labels, *, method: str, num_classes: int | None = None, noise_var: float = 0.1,
                bin_size: float = 0.5, **options) -> dict[str, float]:
    """I(X;T) and I(T;Y) in bits for one layer with one estimator.

    Args:
      activations: [N, D] float array, one flattened layer output per sample.
      labels: [N] integer class labels (the true labels, also for adversarial inputs).
      method: ``"kde_upper"``, ``"kde_lower"``, ``"binning"``, ``"renyi"``, ``"knn"`` or a
        registered name.
      num_classes: number of classes (default: max(labels) + 1).
      noise_var: KDE kernel variance σ² (0.1 in the paper).
      bin_size: binning width (0.5 in the paper).
      **options: as in :func:`estimate` (``bootstrap``, ``key``, ``inputs``, ``alpha``, ...).

    Returns:
      ``{"I_XT": float, "I_TY": float, "saturated": bool, ...}`` in bits, with the
      diagnostics of :func:`estimate` (plus error-bar keys with ``bootstrap``); for
      ``method="knn"`` ``{"I_XT": None, "I_TY": float, ...}`` (I(X;T) is not defined for it).
    """
    if not isinstance(method, str) or method not in available_methods():
        raise ValueError(f"unknown estimator method {method!r}; choose one of {list(available_methods())}.")
    if isinstance(activations, Mapping):
        raise ValueError("estimate_mi takes one layer's [N, D] activations; use estimate() for a mapping of probes.")
    return estimate(activations, labels, methods=(method,), num_classes=num_classes, noise_var=noise_var,
                    bin_size=bin_size, **options)[method]
