"""Every finding's verdicts as a forest plot, and finding 2's NT − AT differences per pair."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from etils.epath import Path
from matplotlib.figure import Figure

from jaxmi.plots.style import figure_title, save_figure

__all__ = ["plot_verdicts", "plot_effects"]

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
        else:  # no null line through the reason
            ax.text(0.5, 0.5, f"untestable: {str(r.get('reason'))[:110]}", transform=ax.transAxes, ha="center",
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
    """``verdicts.png``: every verdict's effect with its interval and null value, and for
    finding 2 ``nt_minus_at_pairs.png``: NT − AT of every informative (estimator, probe)
    pair with its interval."""
    out_dir = Path(out_dir)
    verdicts = summary.get("verdicts") or {}
    if not verdicts:
        return []
    name = str(summary.get("finding", "")).split(":")[0]
    written = [plot_effects(list(verdicts.items()), out_dir / "verdicts.png",
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
    return written

