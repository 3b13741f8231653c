"""Shared style and helpers of the figures: colours, labels, atomic saving, summary accessors.

NT is blue and AT vermilion (Okabe-Ito, colour-blind safe); clean inputs are drawn solid
with ``o``, adversarial inputs dashed with ``+``. The accessors read the ``run`` of a summary
(:mod:`jaxmi.findings.summary`), laid out as in :mod:`jaxmi.history`; missing values
(``None``/NaN) come back as NaN.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # harmless when already Agg; pyplot is never used.

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from jaxmi.history import INPUTS, QUANTITIES, REGIMES, validate_summary  # noqa: E402
from jaxmi.results import as_path, atomic_write_bytes  # noqa: E402

__all__ = ["DPI", "REGIME_COLORS", "REGIME_LABELS", "REGIME_SHORT", "INPUT_LABELS", "INPUT_MARKERS",
           "INPUT_LINESTYLES", "QUANTITY_TEX", "ESTIMATOR_LABELS", "EPOCH_CMAP", "save_figure", "run_record",
           "regimes_present",
           "estimators_present", "mi_values", "metric_values", "epoch_axis", "figure_title", "estimator_label",
           "safe_name", "finite_mask", "mark_no_data", "sample_count", "check_quantity", "draw_clean_adv_curves",
           "clean_adv_legend", "label_epoch_panel", "set_margins", "suptitle", "compact_yticks"]

DPI = 150

REGIME_COLORS = {"nt": "#0072B2", "at": "#D55E00"}
REGIME_LABELS = {"nt": "NT (normal training)", "at": "AT (adversarial training)"}
REGIME_SHORT = {"nt": "NT", "at": "AT"}

INPUT_LABELS = {"clean": "clean inputs", "adv": "adversarial (PGD) inputs"}
INPUT_MARKERS = {"clean": "o", "adv": "+"}
INPUT_LINESTYLES = {"clean": "-", "adv": "--"}

QUANTITY_TEX = {"I_XT": r"$I(X;T)$", "I_TY": r"$I(T;Y)$"}

ESTIMATOR_LABELS = {
    "kde_upper": "KDE upper bound",
    "kde_lower": "KDE lower bound",
    "binning": "binning",
}

EPOCH_CMAP = "viridis"


def save_figure(fig: Figure, path, *, dpi: int = DPI):
    """Saves ``fig`` to ``path`` atomically and returns the final path.

    The figure is rendered in memory and written through :func:`jaxmi.results.atomic_write_bytes`
    (a temporary file beside ``path``, then a rename), so a previous file at ``path`` stays
    untouched on any error; ``path`` may be local or remote (``gs://``). The format follows the
    suffix of ``path`` (PNG when there is none). The figure is not closed.
    """
    path = as_path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix[1:].lower() or "png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def set_margins(fig: Figure, nrows: int, ncols: int, *, left: float, right: float, top: float, bottom: float,
                wspace: float = 0.0, hspace: float = 0.0) -> None:
    """Places the figure's ``nrows`` × ``ncols`` grid of subplots with fixed margins and gaps, in inches.

    The grids of the MI figures have a known frame (suptitle, titles on the top row, a legend
    below, labels on the outer panels), so fixed room for it replaces a layout engine, which
    measures every text of the figure again at each save (two to three times the drawing itself).
    """
    w, h = fig.get_size_inches()
    width = (w - left - right - wspace * (ncols - 1)) / ncols
    height = (h - top - bottom - hspace * (nrows - 1)) / nrows
    if width <= 0 or height <= 0:
        raise ValueError(f"margins leave no room for the panels of a {w:g} × {h:g} in figure")
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=wspace / width, hspace=hspace / height)


def suptitle(fig: Figure, text: str, **kwargs) -> None:
    """The figure's title, its top 0.08 in below the figure's top edge (whatever the figure's
    height), inside the top margin of :func:`set_margins`."""
    fig.suptitle(text, y=1 - 0.08 / fig.get_size_inches()[1], va="top", **kwargs)


# --------------------------------------------------------------------------------------
# Summary accessors


def run_record(summary: Mapping, *, require_mi: bool = False) -> Mapping:
    """``summary["run"]``, checked (:func:`jaxmi.history.validate_summary`; ``ValueError``
    naming the offending entry)."""
    run = summary.get("run")
    if not isinstance(run, Mapping):
        raise ValueError("summary has no 'run' record (the NT-vs-AT histories the figure draws)")
    validate_summary(run, require_mi=require_mi)
    return run


def regimes_present(summary: Mapping) -> list[str]:
    """The regimes the summary's run holds, in plotting order (NT, AT)."""
    return [r for r in REGIMES if summary["run"].get(r) is not None]


def estimators_present(summary: Mapping, quantity: str | None = None) -> list[str]:
    """Estimator names in order of first appearance across regimes; with ``quantity``, only
    those with a finite value of it (``knn`` has no I(X;T): its values are null)."""
    names: list[str] = []
    for r in regimes_present(summary):
        for est in (summary["run"][r].get("mi") or {}):
            if est not in names:
                names.append(est)
    if quantity is None:
        return names
    return [est for est in names if any(np.isfinite(v).any() for r in regimes_present(summary) for i in INPUTS
                                        if (v := mi_values(summary, r, est, i, quantity)) is not None)]


def mi_values(summary: Mapping, regime: str, estimator: str, inputs: str, quantity: str, *, band: bool = False):
    """(measurements, probes) float array, or None when that estimate is absent.

    ``band=True``: the error band of that estimate: bootstrap standard errors (``mi_se``)
    when the summary has them, else the standard deviation across seeds (``mi_sd``).
    """
    res = summary["run"][regime]
    block = ((res.get("mi_se") or res.get("mi_sd")) if band else res.get("mi")) or {}
    try:
        values = block[estimator][inputs][quantity]
    except (KeyError, TypeError):
        return None
    if values is None:
        return None
    return np.array(values, dtype=float)


def metric_values(summary: Mapping, regime: str, key: str):
    """One float per measurement for metric ``key`` (or ``"<metric>_sd"``), or None."""
    values = summary["run"][regime].get(key)
    return None if values is None else np.array(values, dtype=float)


def epoch_axis(summary: Mapping) -> np.ndarray:
    """The epoch of every measurement, as floats."""
    return np.array(summary["run"]["epochs_measured"], dtype=float)


def _subtitle(summary: Mapping) -> str:
    cfg = summary.get("config") or {}
    parts = []
    if isinstance(cfg, Mapping):
        for key in ("dataset", "model"):
            val = cfg.get(key)
            if isinstance(val, str) and val:
                parts.append(val)
        seeds = cfg.get("seeds")
        if isinstance(seeds, int) and seeds > 1:
            parts.append(f"mean of {seeds} seeds, bands ±1 sd")
        elif isinstance(cfg.get("bootstrap"), int) and cfg["bootstrap"] > 1:
            parts.append(f"bands ±1 bootstrap s.e. ({cfg['bootstrap']} resamples)")
    return " · ".join(parts)


def figure_title(main: str, summary: Mapping) -> str:
    """``main`` followed by the dataset, model and what the error bands are, when known."""
    sub = _subtitle(summary)
    return f"{main}  ({sub})" if sub else main


def estimator_label(estimator: str) -> str:
    return ESTIMATOR_LABELS.get(estimator, estimator)


def safe_name(name: str) -> str:
    """``name`` with every run of characters unsafe in a file name replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "unnamed"


def finite_mask(*arrays: np.ndarray) -> np.ndarray:
    """True where every array is finite."""
    mask = np.ones(arrays[0].shape, dtype=bool)
    for a in arrays:
        mask &= np.isfinite(a)
    return mask


def mark_no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5")


def sample_count(summary: Mapping) -> float | None:
    """``config["samples"]`` (the N of the MI estimates) when it is a number > 1, else None."""
    cfg = summary.get("config") or {}
    if not isinstance(cfg, Mapping):
        return None
    try:
        n = float(cfg.get("samples"))
    except (TypeError, ValueError):
        return None
    return n if math.isfinite(n) and n > 1 else None


def check_quantity(quantity: str) -> None:
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")


# --------------------------------------------------------------------------------------
# Drawing shared by the epoch-axis figures (trajectories, trend agreement)


def draw_clean_adv_curves(ax, summary: Mapping, regime: str, estimator: str, quantity: str, j: int,
                          epochs: np.ndarray, color: str, *, size: float = 1.0) -> bool:
    """Clean (solid, ``o``) and adversarial (dashed, ``+``) MI of probe ``j`` over epochs.

    Error bands (see :func:`mi_values`) are shaded when the summary has them. Returns
    whether anything was drawn.
    """
    drawn = False
    for inputs in INPUTS:
        vals = mi_values(summary, regime, estimator, inputs, quantity)
        if vals is None:
            continue
        v = vals[:, j]
        ok = np.isfinite(v)
        if not ok.any():
            continue
        drawn = True
        ax.plot(epochs[ok], v[ok], ls=INPUT_LINESTYLES[inputs], marker=INPUT_MARKERS[inputs],
                markersize=(4 if inputs == "clean" else 7) * size, lw=1.4 * size, color=color,
                markerfacecolor=color if inputs == "clean" else "none")
        band = mi_values(summary, regime, estimator, inputs, quantity, band=True)
        if band is not None:
            s = np.nan_to_num(band[:, j][ok])
            ax.fill_between(epochs[ok], v[ok] - s, v[ok] + s, color=color,
                            alpha=0.18 if inputs == "clean" else 0.10, lw=0)
    return drawn


def clean_adv_legend(lw: float) -> list[Line2D]:
    """Legend handles for the clean and adversarial curves of :func:`draw_clean_adv_curves`."""
    return [Line2D([], [], ls=INPUT_LINESTYLES[inputs], marker=INPUT_MARKERS[inputs],
                   markersize=4 if inputs == "clean" else 7, lw=lw, color="0.3", label=INPUT_LABELS[inputs])
            for inputs in INPUTS]


def compact_yticks(ax) -> None:
    """At most six y ticks, values below 0.01 or from 10⁴ on written as multiples of a power
    of ten shown above the axis, so that the tick labels stay short enough for the fixed gap
    between panels (:func:`set_margins`)."""
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 4), useMathText=True)


def label_epoch_panel(ax, i: int, j: int, n_rows: int, layer: str, ylabel: str, color: str) -> None:
    """Grid, integer epoch ticks, the probe name on the top row, "epoch" on the bottom row and
    ``ylabel`` (in ``color``) in the first column of a regime-by-probe grid of panels."""
    ax.grid(True, lw=0.3, alpha=0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    compact_yticks(ax)
    if i == 0:  # y given: the title sits at the axes' top (nothing above it) and drawing skips searching for room
        ax.set_title(layer, fontsize=11, y=1.0)
    if i == n_rows - 1:
        ax.set_xlabel("epoch")
    if j == 0:
        ax.set_ylabel(ylabel, color=color)
