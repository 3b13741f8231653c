"""Every finding's verdicts as a forest plot, and finding 2's NT − AT differences per pair and
across the σ² / bin-size sweep."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from etils.epath import Path
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from jaxmi.plots.style import compact_yticks, figure_title, save_figure, set_margins, suptitle

__all__ = ["plot_verdicts", "plot_effects", "plot_sweep_delta"]

_COLORS = {True: "#1B7837", False: "#B2182B", None: "0.55"}
_STATE = {True: "holds", False: "does not hold", None: "untestable"}


def plot_effects(rows: Sequence[tuple[str, Mapping[str, Any]]], path, *, title: str) -> Path:
    """One panel per row: the effect (dot) with its 95 % interval (bar) and the null value
    (dashed line), coloured by whether it holds; untestable rows print their reason.

    Args:
      rows: ``(label, record)`` pairs; a record has ``effect``, ``ci95``, ``null_value``,
        ``unit``, ``holds`` and, when untestable, ``reason`` (:mod:`jaxmi.verdicts`).
      path: the PNG to write.
      title: the figure title.
    """
    n = max(len(rows), 1)
    fig = Figure(figsize=(8.0, 0.62 * n + 1.3), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, (label, r) in zip(axes, rows):
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        color = _COLORS[r.get("holds")]
        if r.get("effect") is not None:
            ax.axvline(r.get("null_value", 0.0), color="0.3", ls="--", lw=0.9)
        else:  # no null line through the reason; two lines at most, inside the panel
            lines = textwrap.wrap(f"untestable: {r.get('reason')}", 95)
            if len(lines) > 2:
                lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), 95, placeholder=" …")]
            ax.text(0.5, 0.5, "\n".join(lines), transform=ax.transAxes, ha="center",
                    va="center", fontsize=7, color=color)
            ax.set_xticks([])
            continue
        ci = r.get("ci95")
        if ci is not None:
            ax.plot(ci, [0, 0], color=color, lw=2.2, solid_capstyle="butt")
        ax.plot([r["effect"]], [0], "o", color=color, markersize=6)
        lo = min([r["effect"], r.get("null_value", 0.0)] + (list(ci) if ci else []))
        hi = max([r["effect"], r.get("null_value", 0.0)] + (list(ci) if ci else []))
        pad = 0.15 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1e-3)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(-1, 1)
        ax.tick_params(axis="x", labelsize=7)
        ax.text(1.0, 0.9, f"{_STATE[r.get('holds')]} · {r.get('unit', '')} · {r.get('seeds', 1)} seed(s)",
                transform=ax.transAxes, ha="right", va="top", fontsize=6.5, color=color)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, Path(path))


def plot_verdicts(summary: Mapping[str, Any], out_dir) -> list[Path]:
    """``verdicts.png``: every verdict's effect with its interval and null value (records with
    ``"role": "check"`` labelled as checks), and for
    finding 2 ``nt_minus_at_pairs.png``: NT − AT of every informative (estimator, probe)
    pair with its interval."""
    out_dir = Path(out_dir)
    verdicts = summary.get("verdicts") or {}
    if not verdicts:
        return []
    name = str(summary.get("finding", "")).split(":")[0]
    rows = [(n + ("\n(check)" if r.get("role") == "check" else ""), r) for n, r in verdicts.items()]
    written = [plot_effects(rows, out_dir / "verdicts.png",
                            title=figure_title(f"Finding {name}: effect and 95% interval per verdict "
                                               "(dashed: null value)", summary))]
    pairs = ((summary.get("evidence") or {}).get("at_less_information") or {}).get("pairs")
    if pairs:
        rows = [(f"{p['estimator']} {p['probe']}", p) for p in pairs if p.get("record")]
        rows = [(label, p["record"]) for label, p in rows]
        if rows:
            written.append(plot_effects(rows, out_dir / "nt_minus_at_pairs.png",
                                        title=figure_title("I(X;T) NT − AT on clean inputs per informative pair, "
                                                           "last measurement", summary)))
    sweep = ((summary.get("evidence") or {}).get("at_less_information") or {}).get("across_sweep")
    if sweep and any(m is not None for d in sweep.values() for m in d["nt_minus_at_bits"]):
        written.append(plot_sweep_delta(sweep, out_dir / "nt_minus_at_sweep.png", summary=summary))
    return written


def plot_sweep_delta(sweep: Mapping[str, Mapping[str, Any]], path, *, summary: Mapping[str, Any]) -> Path:
    """``nt_minus_at_sweep.png``: clean I(X;T) NT − AT at every grid value of the sweep (one
    panel per estimator; log-scaled σ² or bin width), with its interval and the number of
    pairs saturated in no seed; the run's σ² / bin width is marked."""
    cfg = summary.get("config") or {}
    fig = Figure(figsize=(4.0 * len(sweep), 3.3))
    axes = fig.subplots(1, len(sweep), squeeze=False)[0]
    set_margins(fig, 1, len(sweep), left=0.8, right=0.15, top=0.7, bottom=0.55, wspace=0.55)
    for ax, (est, d) in zip(axes, sweep.items()):
        binning = est == "binning"
        pts = [(g, m, ci, n) for g, m, ci, n in zip(d["grid"], d["nt_minus_at_bits"],
                                                  d.get("ci95") or [None] * len(d["grid"]), d["informative_pairs"])
               if m is not None]
        ax.axhline(0.0, color="0.3", lw=0.9, ls="--")
        here = cfg.get("bin_size" if binning else "noise_var")
        if here:
            ax.axvline(float(here), color="0.6", lw=0.9, ls=":")
        for g, m, ci, n in pts:
            if ci is not None:
                ax.plot([g, g], ci, color="#2166AC", lw=1.8)
            ax.plot([g], [m], "o", color="#2166AC", markersize=5)
            ax.annotate(str(n), (g, m), textcoords="offset points", xytext=(4, 4), fontsize=6.5, color="0.35")
        if not pts:
            ax.text(0.5, 0.5, "every pair saturated at every value", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="0.5")
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())  # decades only (minor ticks: most of the drawing)
        compact_yticks(ax)
        ax.set_xlim(min(d["grid"]) / 2, max(d["grid"]) * 2)
        ax.set_xlabel("bin width" if binning else "σ² (KDE noise variance)")
        ax.set_title(est.replace("_", " "), fontsize=9, y=1.0)
    axes[0].set_ylabel("clean I(X;T): NT − AT (bits)")
    suptitle(fig, figure_title("NT − AT across the sweep, last measurement\n(95% interval; number: pairs saturated "
                              "in no seed; dotted: the run's σ² / bin width)", summary), fontsize=9)
    return save_figure(fig, Path(path))

