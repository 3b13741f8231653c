"""Diagnostics that come with every estimate: how far it is from what the sample can show.

On N samples no estimate of I(X;T) can exceed log₂ N (every point its own cluster or bin),
and none of I(T;Y) can exceed Ĥ(Y), the entropy of the sample's labels. When the points of
a layer lie far apart relative to the kernel width (KDE) or the bin size (binning), the
estimates sit at these ceilings whatever the network does: they then report the activation
scale, not information (Saxe et al. 2018; Goldfeld et al. 2019; Geiger 2021). Every
estimate therefore carries:

* ``I_XT_ceiling`` = log₂ N and ``I_TY_ceiling`` = Ĥ(Y) (bits, of the full sample);
* ``I_XT_gap``, ``I_TY_gap``: ceiling − estimate;
* ``saturated``: ``I_XT_gap`` < :data:`SATURATION_GAP_BITS` (0.01 bits): I(X;T) is at its
  ceiling and the layer is indistinguishable from N isolated points;
* for the KDE bounds also ``nn_sq_dist_over_width`` (median nearest-neighbour squared
  distance over the exponent scale 2σ² or 8σ²: ≫ 1 means every point sees only itself) and
  ``self_dominated_share`` (the share of rows whose kernel sum is nearly only their own
  term).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["SATURATION_GAP_BITS", "ceilings", "diagnose"]

#: I(X;T) within this many bits of log₂ N counts as saturated.
SATURATION_GAP_BITS = 0.01


def ceilings(labels: Any) -> tuple[float, float]:
    """``(log₂ N, Ĥ(Y))`` in bits for the labels of a sample."""
    y = np.asarray(labels).reshape(-1)
    n = y.shape[0]
    p = np.bincount(y) / n
    p = p[p > 0]
    return math.log2(n), float(-(p * np.log2(p)).sum())


def diagnose(result: Mapping[str, float], labels: Any, extra: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The diagnostics of one estimate (``{"I_XT", "I_TY", ...}`` in bits) on a sample with ``labels``.

    Returns:
      ``saturated``, ``I_XT_ceiling``, ``I_TY_ceiling``, ``I_XT_gap``, ``I_TY_gap`` and the
      estimator's own ``extra`` diagnostics.
    """
    c_xt, c_ty = ceilings(labels)
    gap_xt, gap_ty = c_xt - result["I_XT"], c_ty - result["I_TY"]
    return {"saturated": bool(gap_xt < SATURATION_GAP_BITS), "I_XT_ceiling": c_xt, "I_TY_ceiling": c_ty,
            "I_XT_gap": float(gap_xt), "I_TY_gap": float(gap_ty), **dict(extra or {})}
