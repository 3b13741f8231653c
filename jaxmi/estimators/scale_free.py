"""Scale-free KDE sweeps: both bounds over a grid of σ² in units of the layer's spread.

A KDE estimate at an absolute σ² mixes information with activation scale: the estimate of
c·T at σ² equals that of T at σ²/c². Read at σ² = v · spread(T), with spread(T) the mean
squared distance of the rows to their centroid (:func:`jaxmi.estimators.kde.spread`,
spread(c·T) = c² spread(T)), the estimate of c·T equals that of T at every v: a network can
no longer read as carrying less information by having smaller activations.

:func:`scale_free_sweep` computes both KDE bounds at every relative σ² of a grid
(:data:`RELATIVE_GRID`, ratio 2) for the full sample and every bootstrap resample, from one
Gram pass. Because the grid has ratio 2, the same values read as an *absolute* sweep of ratio
2 (σ² = v · spread), which the shift alignment of finding 2 uses. :data:`BAND` is the
pre-registered band of finding 2's scale-free endpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxmi.estimators.kde import kde_sweep, spread
from jaxmi.estimators.validation import validate

__all__ = ["RELATIVE_GRID", "BAND", "TEMPERATURES", "scale_free_sweep", "scale_free_scales", "spread",
           "nll_at_temperatures", "temperature_curve"]

#: Relative σ² (units of the layer's spread) of the scale-free sweep: 2^k, k = −14 … 2
#: (6.1e-5 … 4), ratio 2. At v = 4 the lower bound's kernel (8σ² = 32 · spread) is wider than
#: any cloud (I → 0); at v = 2^-14 only rows closer than ~1 % of the spread's root stay apart.
RELATIVE_GRID: tuple[float, ...] = tuple(2.0 ** k for k in range(-14, 3))
#: The pre-registered band of ``at_less_information_scale_free``: v = 2^k, k = −8 … 0
#: (0.0039 … 1), a subset of :data:`RELATIVE_GRID`. Chosen before any NT/AT comparison: a LeNet
#: layer at initialisation (160 MNIST test images) leaves the log₂ N ceiling at v ≈ 2^-5 and
#: falls below a bit near v = 2^0; the band reaches three octaves lower for the denser
#: 5,000-image draw and the clustered layers of trained networks.
BAND: tuple[float, ...] = tuple(2.0 ** k for k in range(-8, 1))


def scale_free_scales(grid=RELATIVE_GRID) -> int:
    """The distinct exponent scales (2v, 8v) of one scale-free pass over ``grid``."""
    g = np.asarray(grid, np.float64)
    return int(np.unique(np.concatenate([2.0 * g, 8.0 * g])).size)


def scale_free_sweep(activations, labels, weights, grid=RELATIVE_GRID, *, num_classes: int | None = None,
                     block_size: int | None = None, devices=None, precision: str = "auto",
                     rows: str = "auto") -> dict[str, Any]:
    """Both KDE bounds at σ² = v · spread(T) for every v of ``grid``, on every resample.

    Args:
      activations: [N, D] one flattened layer output per row.
      labels: [N] integer class labels.
      weights: [R, N] point multiplicities (row 0 the full sample;
        :func:`jaxmi.estimators.bootstrap.resample_weights`), so that two networks measured
        with the same weights are paired.
      grid: relative σ² values > 0.
      num_classes, block_size, devices, precision, rows: as in :func:`jaxmi.estimators.estimate`.

    Returns:
      ``{"spread": float, "noise_var": [S] relative σ², "kde_upper": {"I_XT": [S, R],
      "I_TY": [S, R]}, "kde_lower": {...}}``, bits (numpy arrays; column 0 the full sample).
    """
    g = np.asarray(grid, np.float64).reshape(-1)
    if g.size == 0 or not np.all(np.isfinite(g) & (g > 0)):
        raise ValueError(f"grid must be a non-empty list of relative σ² > 0; got {grid!r}.")
    t, y, c = validate(activations, labels, num_classes, min_samples=2)
    w = np.asarray(weights, np.float32)
    if w.ndim != 2 or w.shape[1] != t.shape[0]:
        raise ValueError(f"weights must be [R, N] with N = {t.shape[0]} rows of the layer; got shape {w.shape}. "
                         "Use jaxmi.estimators.bootstrap.resample_weights(N, R, key).")
    res = kde_sweep(t, y, c, g, block_size=block_size, devices=devices, noise_scale="relative",
                    precision=precision, rows=rows, weights=w)
    return {"spread": spread(t), "noise_var": g,
            **{m: {q: np.asarray(res[f"{m}_{q}"]) for q in ("I_XT", "I_TY")} for m in ("kde_upper", "kde_lower")}}


#: Temperatures of :func:`temperature_curve`: τ = 2^(j/8), j = −32 … 32 (1/16 … 16).
TEMPERATURES: tuple[float, ...] = tuple(2.0 ** (j / 8) for j in range(-32, 33))


def nll_at_temperatures(logits, labels, taus) -> np.ndarray:
    """Mean cross-entropy (nats) of softmax(logits / τ) for every τ, float64 on the host: [T]."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.int64)
    tau = np.asarray(taus, np.float64).reshape(-1, 1, 1)
    s = z[None] / tau  # [T, N, C]
    m = s.max(axis=2, keepdims=True)
    lse = (m[..., 0] + np.log(np.exp(s - m).sum(axis=2)))
    return (lse - np.take_along_axis(s, y[None, :, None].repeat(len(tau), 0), axis=2)[..., 0]).mean(axis=1)


def temperature_curve(logits, labels, noise_var: float, taus=TEMPERATURES, *, num_classes: int | None = None,
                      precision: str = "auto") -> dict[str, Any]:
    """NLL and both KDE bounds of the logits divided by τ, at the absolute σ² ``noise_var``, for every τ.

    The KDE estimate of logits/τ at σ² is that of the logits at σ²·τ², so one Gram pass gives
    every τ. Finding 2 finds the τ at which NT's NLL equals AT's
    (:func:`jaxmi.findings.finding2_scale.temperature_match`) and compares the information of
    NT's tempered logits with AT's, so that "AT's logits carry less" is not merely "AT's
    logits are smaller".

    Returns:
      ``{"tau": [T], "nll": [T] nats, "kde_upper": {"I_XT": [T], "I_TY": [T]}, "kde_lower": {...}}`` (lists).
    """
    tau = np.asarray(taus, np.float64)
    t, y, c = validate(logits, labels, num_classes, min_samples=2)
    res = kde_sweep(t, y, c, float(noise_var) * tau ** 2, precision=precision)
    return {"tau": tau.tolist(), "nll": nll_at_temperatures(logits, labels, tau).tolist(),
            **{m: {q: [float(v) for v in res[f"{m}_{q}"]] for q in ("I_XT", "I_TY")}
               for m in ("kde_upper", "kde_lower")}}
