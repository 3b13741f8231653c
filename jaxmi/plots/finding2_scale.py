"""Finding 2's scale-free figure: ``shift_alignment.png``.

Per KDE bound (rows) and probe (columns): I(X;T) of NT and AT on the clean MI draw at the last
measurement against the absolute σ² of the scale-free sweep, and AT's curve shifted by the
fitted factor ĉ (:func:`jaxmi.findings.finding2_scale.shift_alignment`), i.e. drawn at σ²/ĉ².
Where the shifted AT curve lies on NT's, the two layers differ by activation scale alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from etils.epath import Path
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from jaxmi.findings.summary import seed_runs
from jaxmi.plots.style import REGIME_COLORS, estimator_label, figure_title, save_figure

__all__ = ["plot_shift_alignment"]


def plot_shift_alignment(summary: Mapping[str, Any], out_dir) -> list[Path]:
    """``shift_alignment.png`` (seed 0's full-sample curves, the seed-pooled ĉ), or nothing when
    the summary has no scale-free sweep or no shift alignment."""
    ev = ((summary.get("evidence") or {}).get("at_less_information_scale_free") or {}).get("shift_alignment")
    seeds = seed_runs(summary)
    if not ev or not seeds or not seeds[0]["nt"].get("scale_free") or not seeds[0]["at"].get("scale_free"):
        return []
    nt, at = seeds[0]["nt"]["scale_free"], seeds[0]["at"]["scale_free"]
    layers = list(summary["run"]["layers"])
    bounds = [m for m in ("kde_upper", "kde_lower") if m in ev]
    fig = Figure(figsize=(2.6 * len(layers), 2.4 * len(bounds) + 0.6))
    axes = fig.subplots(len(bounds), len(layers), squeeze=False)
    v = np.asarray(nt["noise_var"], np.float64)
    for i, m in enumerate(bounds):
        for j, probe in enumerate(layers):
            ax = axes[i, j]
            x_nt = v * float(nt["spread"][j])
            x_at = np.asarray(at["noise_var"], np.float64) * float(at["spread"][j])
            ax.plot(x_nt, nt[m]["I_XT"][j], color=REGIME_COLORS["nt"], lw=1.4, label="NT")
            ax.plot(x_at, at[m]["I_XT"][j], color=REGIME_COLORS["at"], lw=1.4, label="AT")
            row = ev[m][j]
            if row.get("c") is not None:
                ax.plot(x_at / row["c"] ** 2, at[m]["I_XT"][j], color=REGIME_COLORS["at"], lw=1.2, ls="--",
                        label=f"AT at σ²/ĉ², ĉ = {row['c']:.3g}")
            else:
                ax.text(0.5, 0.5, "ĉ undefined (flat curve)", transform=ax.transAxes, ha="center", fontsize=7)
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())  # decades only (minor ticks: most of the drawing)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(probe, fontsize=9, y=1.0)
            if j == 0:
                ax.set_ylabel(f"{estimator_label(m)}\nI(X;T), bits", fontsize=8)
            if i == len(bounds) - 1:
                ax.set_xlabel("σ² (absolute)", fontsize=8)
            ax.legend(fontsize=6, frameon=False, loc="lower left")  # the curves fall to the right
    cfg = summary.get("config") or {}
    where = {k: cfg[k] for k in ("dataset", "model") if isinstance(cfg.get(k), str)}  # no bands drawn: no band note
    fig.suptitle(figure_title("Clean I(X;T) against σ², last measurement: NT, AT and AT shifted by ĉ (seed 0, "
                              "full sample; ĉ pooled over seeds)", {"config": where}), fontsize=10)
    return [save_figure(fig, Path(out_dir) / "shift_alignment.png")]
