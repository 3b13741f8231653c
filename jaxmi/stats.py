"""Small statistics used by the verdicts: ranks, Pearson and Spearman correlations, mean ± sd.

All in float64 NumPy on the host; undefined values (a constant series, too few points) are
``None`` rather than NaN, so they survive JSON and cannot pass a threshold by accident.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["rank", "pearson", "spearman", "mean_sd", "numbers_mean_sd"]


def rank(x: Sequence[float]) -> np.ndarray:
    """Average ranks, 0-based (ties share the mean of their ranks), as Spearman's ρ needs."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), float)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson's r = Σ(a−ā)(b−b̄) / √(Σ(a−ā)² Σ(b−b̄)²); ``None`` when either side is constant."""
    a = np.asarray(a, float) - np.mean(a)
    b = np.asarray(b, float) - np.mean(b)
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return None if den == 0 else float((a * b).sum() / den)


def spearman(a: Sequence[float], b: Sequence[float], *, min_points: int = 2) -> float | None:
    """Spearman's ρ: Pearson's r of the average ranks, over the pairs where both are finite.

    ``None`` when fewer than ``min_points`` pairs remain or either side is constant.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < min_points:
        return None
    return pearson(rank(a[ok]), rank(b[ok]))


def mean_sd(values: Sequence[Any]) -> tuple[Any, Any]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) over the first axis, as lists."""
    a = np.asarray(values, dtype=float)
    sd = a.std(axis=0, ddof=1) if a.shape[0] > 1 else np.zeros(a.shape[1:])
    return a.mean(axis=0).tolist(), sd.tolist()


def numbers_mean_sd(items: list[Any]) -> Any:
    """Numeric leaves of equally shaped dicts → ``{"mean", "sd", "values"}``; other leaves dropped.

    Returns ``None`` when nothing numeric is left.
    """
    first = items[0]
    if isinstance(first, Mapping):
        out = {}
        for k in first:
            if all(isinstance(i, Mapping) and k in i for i in items):
                v = numbers_mean_sd([i[k] for i in items])
                if v is not None:
                    out[k] = v
        return out or None
    if all(isinstance(i, (int, float)) and not isinstance(i, bool) and i is not None for i in items):
        a = np.asarray(items, dtype=float)
        return {"mean": float(np.mean(a)), "sd": float(np.std(a, ddof=1)) if a.size > 1 else 0.0,
                "values": [float(x) for x in a]}
    return None
