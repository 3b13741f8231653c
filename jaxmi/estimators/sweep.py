"""Sweeps: the estimates as functions of the kernel variance σ² and of the bin size.

At the paper's σ² = 0.1 and bin size 0.5 most layers of a trained CNN sit at the log₂ N
ceiling (:mod:`jaxmi.estimators.diagnostics`). A sweep shows where they leave it and where
two networks separate. :func:`sweep_noise` gets every σ² from **one** Gram pass (the
distances are computed once; only the kernels differ); :func:`sweep_bins` runs the exact
binning per bin size (each a fast hashing pass).

``noise_scale="relative"`` (a secondary analysis, not the paper's protocol) reads σ² in units
of the layer's spread, its mean squared distance to the centroid
(:func:`jaxmi.estimators.kde.spread`), so layers and networks of different activation scale
are compared at the same *relative* kernel width, and a layer scaled by c reads the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxmi.config import DEFAULT_BIN_SIZES, DEFAULT_NOISE_VARS
from jaxmi.estimators.binning import binning_compute
from jaxmi.estimators.bootstrap import unit_weights
from jaxmi.estimators.kde import kde_sweep
from jaxmi.estimators.validation import check_bin_size, check_noise_scale, check_noise_var, validate

__all__ = ["sweep_noise", "sweep_kde_bounds", "sweep_bins", "DEFAULT_NOISE_VARS", "DEFAULT_BIN_SIZES"]

# The default grids (jaxmi.config, where the run's settings are): 13 σ² values 0.1·4^k,
# k = −5 … 7 (9.8e-5 to 1,638), log-spaced through the paper's 0.1 with ratio 4 so that the
# lower bound at σ² shares its kernel with the upper bound at 4σ²; 13 bin sizes 0.5·10^(k/2),
# k = −6 … 6 (5e-4 to 500), log-spaced through the paper's 0.5.


def _values(values: Sequence[float], check, what: str) -> np.ndarray:
    try:
        v = np.asarray(values, np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a sequence of numbers; got {values!r}.") from None
    if v.size == 0:
        raise ValueError(f"{what} is empty; pass at least one value.")
    for i, x in enumerate(v):
        try:
            check(float(x))
        except ValueError as e:
            raise ValueError(f"{what}[{i}]: {e}") from None
    return v


def sweep_kde_bounds(activations, labels, noise_vars: Sequence[float] = DEFAULT_NOISE_VARS, *,
                     num_classes: int | None = None, noise_scale: str = "absolute", block_size: int | None = None,
                     devices=None, precision: str = "auto", rows: str = "auto") -> dict:
    """Both KDE bounds at every σ² of ``noise_vars``, from one distance pass.

    Returns:
      ``{"noise_var": [...], "kde_upper": {"I_XT": [...], "I_TY": [...]}, "kde_lower": {...}}``
      (bits; one value per σ²); with ``noise_scale="relative"`` also ``"noise_var_absolute"``,
      the σ² used. Arguments as in :func:`sweep_noise`.
    """
    check_noise_scale(noise_scale)
    nv = _values(noise_vars, check_noise_var, "noise_vars")
    t, y, c = validate(activations, labels, num_classes, min_samples=2)
    res = kde_sweep(t, y, c, nv, block_size=block_size, devices=devices, noise_scale=noise_scale,
                    precision=precision, rows=rows)
    out = {"noise_var": nv.tolist(),
           **{m: {q: [float(v) for v in res[f"{m}_{q}"]] for q in ("I_XT", "I_TY")} for m in ("kde_upper", "kde_lower")}}
    if noise_scale == "relative":
        out["noise_var_absolute"] = [float(v) for v in res["noise_var"]]
    return out


def sweep_noise(activations, labels, noise_vars: Sequence[float] = DEFAULT_NOISE_VARS, *,
                method: str = "kde_upper", num_classes: int | None = None, noise_scale: str = "absolute",
                block_size: int | None = None, devices=None) -> dict[str, list[float]]:
    """A KDE bound at every kernel variance σ² of ``noise_vars``, from one distance pass.

    Each value equals :func:`jaxmi.estimators.estimate_mi` at that σ² (up to float32 rounding);
    the distances are computed once for all σ².

    Args:
      activations: [N, D] one flattened layer output per row.
      labels: [N] integer class labels.
      noise_vars: σ² values > 0 (default :data:`DEFAULT_NOISE_VARS`).
      method: ``"kde_upper"`` or ``"kde_lower"``.
      num_classes: number of classes (default: max(labels) + 1).
      noise_scale: ``"absolute"`` (σ² as given, the paper's protocol) or ``"relative"`` (σ² in
        units of the layer's spread, its mean squared distance to the centroid).
      block_size, devices: as in :func:`jaxmi.estimators.estimate`.

    Returns:
      ``{"noise_var": [...], "I_XT": [...], "I_TY": [...]}``: one value per σ², bits; with
      ``noise_scale="relative"`` also ``"noise_var_absolute"``, the σ² used.
    """
    if method not in ("kde_upper", "kde_lower"):
        raise ValueError(f"sweep_noise sweeps a KDE bound: method must be 'kde_upper' or 'kde_lower'; got "
                         f"{method!r} (bin sizes: sweep_bins).")
    res = sweep_kde_bounds(activations, labels, noise_vars, num_classes=num_classes, noise_scale=noise_scale,
                           block_size=block_size, devices=devices)
    return {"noise_var": res["noise_var"], **res[method],
            **({"noise_var_absolute": res["noise_var_absolute"]} if "noise_var_absolute" in res else {})}


def sweep_bins(activations, labels, bin_sizes: Sequence[float] = DEFAULT_BIN_SIZES, *,
               num_classes: int | None = None) -> dict[str, list[float]]:
    """Binning I(X;T), I(T;Y) at every bin size of ``bin_sizes`` (exact, one pass each).

    Returns:
      ``{"bin_size": [...], "I_XT": [...], "I_TY": [...]}``, bits.
    """
    sizes = _values(bin_sizes, check_bin_size, "bin_sizes")
    t, y, c = validate(activations, labels, num_classes, min_samples=2)
    w = unit_weights(t.shape[0])
    i_xt, i_ty = [], []
    for b in sizes:
        r = binning_compute(t, y, c, w, bin_size=float(b))["binning"]
        i_xt.append(float(r[0][0]))
        i_ty.append(float(r[1][0]))
    return {"bin_size": sizes.tolist(), "I_XT": i_xt, "I_TY": i_ty}
