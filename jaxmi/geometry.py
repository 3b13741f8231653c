"""The geometry of a layer's output: the statistics KDE and binning estimates depend on.

For a layer T (N points [N, D], labels Y), :func:`geometry` gives, with s the kernel scale
(2σ² for the KDE upper bound, 8σ² for the lower bound):

* ``spread`` = median pairwise squared distance / s (all pairs, or a seeded sample);
* ``separation`` = mean between-class squared distance / (mean within-class squared distance
  + s), exact from class sums: ≫ 1 when classes are far apart relative to their own size
  and to the kernel;
* ``occupied_bins``: the number of distinct bin vectors floor(t / bin_size);
* ``spread_binning`` = median pairwise squared distance / bin_size².

:func:`controlled_cases` builds layers whose geometry is varied one factor at a time.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

__all__ = ["geometry", "controlled_cases", "SWEEPS"]

SWEEPS = ("scale", "separation", "compactness", "width")


def geometry(t, labels, *, noise_var: float = 0.1, bin_size: float = 0.5, key=None, pairs: int = 200_000,
             num_classes: int | None = None) -> dict[str, Any]:
    """Geometry statistics of one layer output ``t`` [N, D] with labels [N] (see the module docstring)."""
    t = np.asarray(t, np.float64).reshape(len(t), -1)
    y = np.asarray(labels)
    n = t.shape[0]
    k = int(num_classes or y.max() + 1)
    tc = t - t.mean(0)
    sq = np.einsum("nd,nd->n", tc, tc)
    # Σ_{i,j} ‖t_i − t_j‖² over a set S = 2|S| Σ‖t‖² − 2‖Σ t‖².
    total = 2 * n * sq.sum() - 2 * float(np.sum(tc.sum(0) ** 2))
    within_sum, within_pairs = 0.0, 0
    for c in range(k):
        m = y == c
        nc = int(m.sum())
        if nc < 2:
            continue
        within_sum += 2 * nc * sq[m].sum() - 2 * float(np.sum(tc[m].sum(0) ** 2))
        within_pairs += nc * (nc - 1)
    between_pairs = n * (n - 1) - within_pairs
    mean_within = within_sum / max(within_pairs, 1)
    mean_between = (total - within_sum) / max(between_pairs, 1)
    if n * (n - 1) // 2 <= int(pairs):  # every pair: the exact median
        i, j = np.triu_indices(n, 1)
    else:  # a seeded random sample of pairs i ≠ j
        rng = np.random.default_rng(0 if key is None else int(np.asarray(jax.random.key_data(key)).ravel()[-1]))
        i = rng.integers(0, n, int(pairs))
        j = (i + rng.integers(1, n, int(pairs))) % n
    d = np.einsum("nd,nd->n", tc[i] - tc[j], tc[i] - tc[j])
    med = float(np.median(d))
    sym = np.floor(t / bin_size)
    occupied = int(np.unique(sym, axis=0).shape[0])
    out = {"mean_sq_dist": float(total / (n * (n - 1))), "median_sq_dist": med,
           "mean_within_sq_dist": float(mean_within), "mean_between_sq_dist": float(mean_between),
           "occupied_bins": occupied, "log2_occupied_bins": math.log2(occupied), "points": n, "width": t.shape[1]}
    out["spread_binning"] = med / bin_size ** 2  # the spread in squared bin widths
    for est, s in (("kde_upper", 2 * noise_var), ("kde_lower", 8 * noise_var)):
        out[f"spread_{est}"] = med / s
        out[f"separation_{est}"] = float(mean_between / (mean_within + s))
        out[f"frac_pairs_within_scale_{est}"] = float(np.mean(d < s))
    return out


def controlled_cases(key: jax.Array, *, points: int = 2000, classes: int = 10, width: int = 32,
                     within_std: float = 0.056, between_std: float = 0.17, steps: int = 9) -> list[dict[str, Any]]:
    """Controlled layers: K Gaussian class clusters, one factor varied at a time.

    Class centres ~ N(0, s_b² I_D), points around them ~ N(0, s_w² I_D), from one key, so only
    the varied factor changes between the cases of a sweep (``steps`` values each):

    * ``scale``: T ↦ c·T, c log-spaced in [0.1, 100];
    * ``separation``: s_b × f, f log-spaced in [0.1, 10] (classes moved apart);
    * ``compactness``: s_w × f (classes shrunk or spread);
    * ``width``: D = 2, 4, …, 2^steps with the per-coordinate spreads fixed.

    Returns:
      ``{"sweep", "value", "t" [N, D] float32, "labels" [N]}`` per case.
    """
    n, k = points, classes
    labels = np.arange(n) % k
    k_c, k_w = jax.random.split(key)
    max_width = max(width, 2 ** steps)
    centres = np.asarray(jax.random.normal(k_c, (k, max_width)))  # unit normal, scaled below
    noise = np.asarray(jax.random.normal(k_w, (n, max_width)))

    def make(s_b, s_w, d):
        return (s_b * centres[labels, :d] + s_w * noise[:, :d]).astype(np.float32)

    base = (between_std, within_std, width)
    cases = []
    grid = np.logspace(-1, 1, steps)
    for c in np.logspace(-1, 2, steps):
        cases.append({"sweep": "scale", "value": float(c), "t": c * make(*base)})
    for f in grid:
        cases.append({"sweep": "separation", "value": float(f * between_std),
                      "t": make(f * between_std, within_std, width)})
    for f in grid:
        cases.append({"sweep": "compactness", "value": float(f * within_std),
                      "t": make(between_std, f * within_std, width)})
    for p in range(1, steps + 1):
        cases.append({"sweep": "width", "value": 2 ** p, "t": make(between_std, within_std, 2 ** p)})
    for c in cases:
        c["labels"] = labels
    return cases
