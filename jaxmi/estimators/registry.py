"""The estimator registry: names usable wherever a method is accepted, and their options.

Every estimator is a *compute function* ``compute(t, y, c, weights, **options) ->
{method: (I_XT [R], I_TY [R])}`` over checked activations t [N, D], int32 labels y [N], the
class count c and the point multiplicities ``weights`` [R, N] (row 0: the full sample, then
bootstrap resamples). Methods of one *group* are computed by one call (both KDE bounds from
one Gram pass).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxmi import backend
from jaxmi.config import ESTIMATORS
from jaxmi.estimators.binning import binning_compute
from jaxmi.estimators.kde import kde_compute
from jaxmi.estimators.knn_mixed import DEFAULT_K, check_knn_k, knn_compute
from jaxmi.estimators.renyi import renyi_compute
from jaxmi.estimators.validation import check_alpha, check_bin_size, check_noise_scale, check_noise_var


__all__ = ["METHODS", "Estimator", "available_methods", "register_estimator", "unregister_estimator",
           "lookup", "check_methods", "check_options", "SHARED_OPTIONS"]

#: The paper's three estimators, the default of every entry point (the names a run's
#: configuration accepts, :data:`jaxmi.config.ESTIMATORS`).
METHODS: tuple[str, ...] = ESTIMATORS
#: Options every estimator is handed (those it does not name are dropped for it).
SHARED_OPTIONS = frozenset({"noise_var", "bin_size", "block_size", "devices", "inputs"})


@dataclasses.dataclass(frozen=True)
class Estimator:
    """One registered estimator. Entries of the same ``group`` are computed by one call.

    Attributes:
      name: the method name.
      group: entries with the same group share one ``compute`` call.
      compute: the compute function (module docstring).
      options: the keyword options it takes (None: any).
      check: checks its parameters once per call, given the options it receives.
      i_xt: whether it estimates I(X;T); when not (``"knn"``), its compute function returns
        NaN for it and every public result stores ``None``.
    """

    name: str
    group: str
    compute: Callable[..., dict[str, tuple[np.ndarray, np.ndarray]]]
    options: frozenset[str] | None
    check: Callable[[Mapping[str, Any]], None] | None = None
    i_xt: bool = True


_REGISTRY: dict[str, Estimator] = {}
_BUILTIN = frozenset({"kde_upper", "kde_lower", "binning", "renyi", "knn"})


def _add(name, group, compute, options, check=None, i_xt=True):
    _REGISTRY[name] = Estimator(name, group, compute, None if options is None else frozenset(options), check, i_xt)


def _check_kde(opts):
    check_noise_var(opts.get("noise_var", 0.1))
    check_noise_scale(opts.get("noise_scale", "absolute"))
    backend.resolve_kde_precision(opts.get("precision", "auto"))
    backend.resolve_kde_rows(opts.get("rows", "auto"), 0)


def _check_binning(opts):
    check_bin_size(opts.get("bin_size", 0.5))


def _check_renyi(opts):
    if "alpha" in opts:
        check_alpha(opts["alpha"])


_KDE_OPTIONS = ("noise_var", "block_size", "devices", "noise_scale", "precision", "rows")
_add("kde_upper", "kde", kde_compute, _KDE_OPTIONS, _check_kde)
_add("kde_lower", "kde", kde_compute, _KDE_OPTIONS, _check_kde)
_add("binning", "binning", binning_compute, ("bin_size",), _check_binning)
_add("renyi", "renyi", renyi_compute, ("alpha", "kernel_width", "k_neighbors", "inputs", "input_kernel_width"),
     _check_renyi)
_add("knn", "knn", knn_compute, ("knn_k",), lambda opts: check_knn_k(opts.get("knn_k", DEFAULT_K)), i_xt=False)


def available_methods() -> tuple[str, ...]:
    """Names of every registered estimator (the built-ins first)."""
    return tuple(_REGISTRY)


def lookup(name: str) -> Estimator:
    """The registry entry of ``name`` (a name from :func:`available_methods`)."""
    return _REGISTRY[name]


def register_estimator(name: str, fn: Callable[..., Mapping[str, float]], *, overwrite: bool = False) -> None:
    """Adds an estimator under ``name``, usable wherever a method name is accepted.

    ``fn(activations, labels, *, num_classes, **options) -> {"I_XT": float, "I_TY": float}``
    (bits) receives a validated [N, D] float array, [N] int32 labels and the number of
    classes, plus those keyword options of :func:`jaxmi.estimators.estimate` (``noise_var``,
    ``bin_size``, ``inputs``, or any other option) that its signature names (all of them if
    it has ``**kwargs``). With ``bootstrap=R``, ``fn`` is called once more per resample on
    the resampled rows (built-in estimators instead reuse one pass for all resamples).

    Args:
      name: the method name; must not shadow a built-in.
      fn: the estimator.
      overwrite: replace an earlier registration of ``name``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an estimator name must be a non-empty string; got {name!r}.")
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in estimator and cannot be replaced; pick another name.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"an estimator named {name!r} is already registered; pass overwrite=True to replace it.")
    if not callable(fn):
        raise ValueError(f"fn must be callable; got {type(fn).__name__}.")
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = None if takes_all else frozenset(params) - {"num_classes"}

    def compute(t, y, c, weights, **opts):
        kw = {k: v for k, v in opts.items() if accepted is None or k in accepted}
        n = t.shape[0]
        i_xt, i_ty = [], []
        for w in np.asarray(weights):
            if np.all(w == 1):
                tt, yy = t, y
            else:
                rows = jnp.asarray(np.repeat(np.arange(n), w.astype(np.int64)))
                tt, yy = t[rows], y[rows]
            res = fn(tt, yy, num_classes=c, **kw)
            i_xt.append(float(res["I_XT"]))
            i_ty.append(float(res["I_TY"]))
        return {name: (np.asarray(i_xt), np.asarray(i_ty))}

    _add(name, f"user:{name}", compute, accepted)


def unregister_estimator(name: str) -> None:
    """Removes an estimator added with :func:`register_estimator`."""
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in estimator and cannot be removed.")
    if name not in _REGISTRY:
        raise ValueError(f"no estimator named {name!r} is registered; registered: {list(_REGISTRY)}.")
    del _REGISTRY[name]


def check_methods(methods: str | Iterable[str]) -> tuple[str, ...]:
    """The requested method names as a tuple; raises a ValueError on unknown or no names."""
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(methods)
    unknown = [m for m in methods if m not in _REGISTRY]
    if unknown or not methods:
        raise ValueError(f"unknown estimator(s) {unknown or list(methods)}; choose from {list(_REGISTRY)}.")
    return methods


def check_options(methods: tuple[str, ...], options: Mapping[str, Any]) -> None:
    """Rejects estimator options that none of ``methods`` takes (catches typos); options in
    :data:`SHARED_OPTIONS` are always allowed."""
    accepted: set[str] = set()
    for m in methods:
        if _REGISTRY[m].options is None:
            return
        accepted |= _REGISTRY[m].options
    extra = sorted(set(options) - accepted - SHARED_OPTIONS)
    if extra:
        raise ValueError(f"unknown option(s) {extra} for estimator(s) {list(methods)}; they accept "
                         f"{sorted(accepted)}.")
