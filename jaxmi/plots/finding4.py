"""Finding 4's figures: the KDE and binning estimates against the geometry of a layer's output."""

from __future__ import annotations

from etils.epath import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from jaxmi.history import QUANTITIES
from jaxmi.plots.style import QUANTITY_TEX, REGIME_COLORS, estimator_label, figure_title, save_figure

__all__ = ["plot_estimator_geometry"]

SWEEP_COLORS = {"scale": "#0072B2", "separation": "#009E73", "compactness": "#CC79A7", "width": "#E69F00"}
SWEEP_LABELS = {"scale": "scale T by c", "separation": "classes apart (s_b)", "compactness": "class size (s_w)",
                "width": "width D"}
# (estimator, quantity, geometry statistic, x label, log x axis, evidence entry) per scatter panel.
_SCATTER_PANELS = (
    ("kde_upper", "I_XT", "spread_kde_upper", "median ‖tᵢ−tⱼ‖² / 2σ²", True, "kde_ixt_tracks_spread"),
    ("kde_lower", "I_XT", "spread_kde_lower", "median ‖tᵢ−tⱼ‖² / 8σ²", True, "kde_ixt_tracks_spread"),
    ("kde_upper", "I_TY", "separation_kde_upper", "between / (within + 2σ²)", True, "kde_ity_tracks_separation"),
    ("kde_lower", "I_TY", "separation_kde_lower", "between / (within + 8σ²)", True, "kde_ity_tracks_separation"),
    ("binning", "I_XT", "spread_binning", "median ‖tᵢ−tⱼ‖² / bin²", True, "binning_tracks_spread"),
)
_EST_STYLES = {"kde_upper": ("-", "o"), "kde_lower": ("--", "s"), "binning": (":", "^")}


def _regime(lay: dict):
    """The regime of a trained probe's record (``"regime"``, or the older ``"mode"``)."""
    return lay.get("regime", lay.get("mode"))


def _geo_points(layers, est, q, stat):
    out = []
    for lay in layers:
        x, y = lay["geometry"].get(stat), lay["mi"][est][q]
        if x is None or y is None or not np.isfinite(x) or not np.isfinite(y):
            continue
        out.append((lay, float(x), float(y)))
    return out


def _scatter_panel(ax, layers, evidence, est, q, stat, xlabel, logx, verdict) -> None:
    pts = _geo_points(layers, est, q, stat)
    for lay, x, y in pts:
        if lay["source"] == "controlled":
            ax.scatter(x, y, s=18, color=SWEEP_COLORS.get(lay.get("sweep"), "0.5"), alpha=0.85, lw=0)
        else:
            color = REGIME_COLORS.get(_regime(lay), "0.3")
            clean = lay.get("inputs") == "clean"
            ax.scatter(x, y, s=40, marker="D" if _regime(lay) == "nt" else "s",
                       facecolors=color if clean else "none", edgecolors=color, lw=1.2)
    if logx and pts and min(p[1] for p in pts) > 0:
        ax.set_xscale("log")
    rec = (evidence.get("_verdicts") or {}).get(verdict) or {}
    stats = rec.get("per_statistic") or []
    names = [p[2] for p in _SCATTER_PANELS if p[5] == verdict]
    rho = stats[names.index(stat)] if stat in names and len(stats) == len(names) else None
    rec_t = (evidence.get("_verdicts") or {}).get(f"{verdict}_trained") or {}
    stats_t = rec_t.get("per_statistic") or []
    rho_t = stats_t[names.index(stat)] if stat in names and len(stats_t) == len(names) else None
    rho_text = f"\nSpearman ρ = {rho:.3f} (all)" if rho is not None else ""
    if rho_t is not None:
        rho_text += f", {rho_t:.3f} (trained)"
    ax.set_title(f"{estimator_label(est)} {QUANTITY_TEX[q]}{rho_text}", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{QUANTITY_TEX[q]} (bits)")
    ax.grid(True, lw=0.3, alpha=0.5)


def _plot_sweeps(layers, sweeps, path) -> Path:
    fig = Figure(figsize=(3.6 * len(sweeps) + 0.6, 5.6), layout="constrained")
    axes = fig.subplots(2, len(sweeps), squeeze=False, sharey="row")
    for j, s in enumerate(sweeps):
        items = sorted((lay for lay in layers if lay.get("sweep") == s), key=lambda lay: lay["value"])
        xs = [lay["value"] for lay in items]
        for i, q in enumerate(QUANTITIES):
            ax = axes[i, j]
            for est, (ls, mk) in _EST_STYLES.items():
                ax.plot(xs, [lay["mi"][est][q] for lay in items], ls=ls, marker=mk, markersize=4,
                        color=SWEEP_COLORS[s], label=estimator_label(est))
            ax.set_xscale("log", base=2 if s == "width" else 10)
            ax.grid(True, lw=0.3, alpha=0.5)
            if j == 0:
                ax.set_ylabel(f"{QUANTITY_TEX[q]} (bits)")
            if i == 1:
                ax.set_xlabel(SWEEP_LABELS[s])
        axes[0, j].set_title(s, fontsize=11)
    handles = [Line2D([], [], ls=ls, marker=mk, color="0.3", label=estimator_label(e))
               for e, (ls, mk) in _EST_STYLES.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle("Controlled cases: one geometric factor varied at a time")
    return save_figure(fig, path)


def plot_estimator_geometry(summary: dict, out_dir) -> list[Path]:
    """Finding 4's figures.

    * ``geometry_scatter.png``: estimator value against the geometry statistic it should track
      (columns: KDE-upper I(X;T) vs spread, KDE-lower I(X;T) vs spread, KDE-upper I(T;Y) vs
      separation, KDE-lower I(T;Y) vs separation, binning I(X;T) vs the spread in bin units);
      controlled cases coloured by sweep, trained probes as NT/AT markers
      (filled clean, hollow adversarial). Spearman ρ in each title, over all layers (a check)
      and over the trained layers alone (the verdict).
    * ``geometry_sweeps.png``: every estimator's I(X;T) and I(T;Y) against each controlled
      factor (one column per sweep).
    """
    layers = summary["results"]["layers_measured"]
    out_dir = Path(out_dir)
    ev = {**summary.get("evidence", {}), "_verdicts": summary.get("verdicts") or {}}
    fig = Figure(figsize=(4.0 * len(_SCATTER_PANELS), 4.3), layout="constrained")
    axes = fig.subplots(1, len(_SCATTER_PANELS), squeeze=False)[0]
    for ax, panel in zip(axes, _SCATTER_PANELS):
        _scatter_panel(ax, layers, ev, *panel)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=f"controlled: {SWEEP_LABELS[s]}")
               for s, c in SWEEP_COLORS.items()]
    if any(lay["source"] == "trained" for lay in layers):
        handles += [Line2D([], [], marker="D", ls="", color=REGIME_COLORS["nt"], label="trained NT probe (clean)"),
                    Line2D([], [], marker="s", ls="", color=REGIME_COLORS["at"], label="trained AT probe (clean)"),
                    Line2D([], [], marker="s", ls="", markerfacecolor="none", color="0.3",
                           label="hollow: adversarial inputs")]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)
    cfg = summary.get("config") or {}
    fig.suptitle(figure_title("Estimates against the geometry of the layer output", summary)
                 if cfg else "Estimates against the geometry of the layer output")
    written = [save_figure(fig, out_dir / "geometry_scatter.png")]
    sweeps = [s for s in SWEEP_COLORS if any(lay.get("sweep") == s for lay in layers)]
    if sweeps:
        written.append(_plot_sweeps(layers, sweeps, out_dir / "geometry_sweeps.png"))
    return written
