"""Publication figures for the NT-vs-AT mutual-information experiment.

Every plotting function takes the experiment's ``summary`` dict (the content of
``summary.json``) and an output directory, writes one or more PNG files (dpi 150)
and returns the list of :class:`pathlib.Path` objects it wrote.  Figures are built
with :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot global
state), and every file is written atomically by :func:`save_figure`: the figure is
rendered into a temporary file in the destination directory and then moved onto
the final name with :func:`os.replace`, so a half-written figure never exists
under the final name.

Summary layout (see ``validate_summary``)::

    summary = {
      "config": {...},                       # optional "dataset", "model", "samples"
      "layers": ["conv1", ...],              # probe names, >= 1
      "epochs_measured": [0, 1, ...],        # one int per measurement (M of them)
      "nt": {                                # same structure under "at"
        "train_acc": [...], "train_loss": [...],          # M floats (None/NaN allowed)
        "test_clean_acc": [...], "test_adv_acc": [...],
        "test_clean_loss": [...], "test_adv_loss": [...],
        "mi":    {estimator: {"clean": {"I_XT": [[P] * M], "I_TY": [[P] * M]},
                              "adv":   {...}}},
        "mi_se": {...},                      # optional, same structure: standard errors (bootstrap)
        "mi_sd": {...},                      # optional: standard deviations across seeds (--seeds K);
        "train_acc_sd": [...], ...           #   likewise "<metric>_sd" for the metrics above
      },
      "at": {...},
    }

Missing values (``None`` or NaN) are skipped point by point; they never raise.
Structural problems (missing keys, lists of the wrong length) raise ``ValueError``
with a message naming the offending entry.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # harmless when already Agg; we never use pyplot anyway.

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [
    "DPI",
    "REGIME_COLORS",
    "REGIME_LABELS",
    "save_figure",
    "validate_summary",
    "plot_information_planes",
    "plot_training_curves",
    "plot_final_information",
    "plot_mi_trajectories",
    "plot_all",
]

DPI = 150

#: Training regimes, in plotting order.
REGIMES = ("nt", "at")
#: Okabe-Ito (colour-blind safe): NT blue, AT vermilion.
REGIME_COLORS = {"nt": "#0072B2", "at": "#D55E00"}
REGIME_LABELS = {"nt": "NT (normal training)", "at": "AT (adversarial training)"}
REGIME_SHORT = {"nt": "NT", "at": "AT"}

INPUT_KINDS = ("clean", "adv")
INPUT_LABELS = {"clean": "clean inputs", "adv": "adversarial (PGD) inputs"}
INPUT_MARKERS = {"clean": "o", "adv": "+"}
INPUT_LINESTYLES = {"clean": "-", "adv": "--"}

QUANTITIES = ("I_XT", "I_TY")
QUANTITY_TEX = {"I_XT": r"$I(X;T)$", "I_TY": r"$I(T;Y)$"}

METRIC_KEYS = (
    "train_acc",
    "train_loss",
    "test_clean_acc",
    "test_adv_acc",
    "test_clean_loss",
    "test_adv_loss",
)
# (label, metric suffix, linestyle, marker) for the training-curve figure.
_CURVE_SPLITS = (
    ("train", "train_{}", "-", "o"),
    ("clean test", "test_clean_{}", "--", "s"),
    ("adversarial test", "test_adv_{}", ":", "^"),
)

ESTIMATOR_LABELS = {
    "kde_upper": "KDE upper bound",
    "kde_lower": "KDE lower bound",
    "binning": "binning",
}

EPOCH_CMAP = "viridis"


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------


def save_figure(fig: Figure, path, *, dpi: int = DPI) -> Path:
    """Saves ``fig`` to ``path`` atomically and returns the final path.

    The figure is rendered into a temporary file in the same directory (created if
    needed), which is then moved onto ``path`` with :func:`os.replace`; on any error
    the temporary file is removed and the exception propagates, leaving a previous
    file at ``path`` (if any) untouched.  The image format follows the suffix of
    ``path`` (PNG when there is none).  The figure is not closed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix[1:].lower() or "png"
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------------------
# Validation and data access
# --------------------------------------------------------------------------------------


def _as_float_array(value: Any, where: str) -> np.ndarray:
    """Converts a (nested) list with None entries to a float array (None -> NaN)."""
    try:
        return np.array(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"summary{where} is not a rectangular list of numbers: {exc}") from None


def _check_mi_block(block: Any, where: str, m: int, p: int) -> None:
    if not isinstance(block, Mapping):
        raise ValueError(f"summary{where} must be a dict estimator -> {{'clean'/'adv' -> ...}}")
    for est, per_input in block.items():
        w_est = f"{where}[{est!r}]"
        if not isinstance(per_input, Mapping):
            raise ValueError(f"summary{w_est} must be a dict with 'clean' and/or 'adv' entries")
        if not any(k in per_input for k in INPUT_KINDS):
            raise ValueError(f"summary{w_est} has neither a 'clean' nor an 'adv' entry")
        for kind in INPUT_KINDS:
            if kind not in per_input or per_input[kind] is None:
                continue
            q_block = per_input[kind]
            if not isinstance(q_block, Mapping):
                raise ValueError(f"summary{w_est}[{kind!r}] must be a dict with 'I_XT' and 'I_TY'")
            for q in QUANTITIES:
                w_q = f"{w_est}[{kind!r}][{q!r}]"
                if q not in q_block:
                    raise ValueError(f"summary{w_q} is missing")
                arr = _as_float_array(q_block[q], w_q)
                if arr.shape != (m, p):
                    raise ValueError(
                        f"summary{w_q} has shape {arr.shape}, expected (measurements, probes) = "
                        f"({m}, {p}) from 'epochs_measured' and 'layers'"
                    )


def validate_summary(summary: Any, *, require_mi: bool = False) -> None:
    """Checks the structure of a summary dict; raises ``ValueError`` naming the problem.

    Requires ``layers`` (non-empty list of names), ``epochs_measured`` (non-empty list
    of finite numbers), at least one of ``nt``/``at``, per-measurement metric lists of
    the right length, and MI arrays of shape (measurements, probes).  With
    ``require_mi`` at least one regime must hold a non-empty ``mi`` block.
    """
    if not isinstance(summary, Mapping):
        raise ValueError(f"summary must be a dict, got {type(summary).__name__}")
    if "layers" not in summary:
        raise ValueError("summary is missing the 'layers' key (list of probe names)")
    layers = summary["layers"]
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or len(layers) == 0:
        raise ValueError("summary['layers'] must be a non-empty list of probe names")
    if "epochs_measured" not in summary:
        raise ValueError("summary is missing the 'epochs_measured' key (one epoch per measurement)")
    epochs = summary["epochs_measured"]
    if isinstance(epochs, (str, bytes)) or not isinstance(epochs, Sequence) or len(epochs) == 0:
        raise ValueError("summary['epochs_measured'] must be a non-empty list of epoch numbers")
    ep = _as_float_array(epochs, "['epochs_measured']")
    if ep.ndim != 1 or not np.all(np.isfinite(ep)):
        raise ValueError("summary['epochs_measured'] must be a flat list of finite epoch numbers")
    m, p = len(epochs), len(layers)

    present = [r for r in REGIMES if summary.get(r) is not None]
    if not present:
        raise ValueError("summary has neither an 'nt' nor an 'at' entry")
    any_mi = False
    for r in present:
        res = summary[r]
        if not isinstance(res, Mapping):
            raise ValueError(f"summary[{r!r}] must be a dict of results")
        for key in METRIC_KEYS:
            if key not in res or res[key] is None:
                continue
            arr = _as_float_array(res[key], f"[{r!r}][{key!r}]")
            if arr.shape != (m,):
                raise ValueError(
                    f"summary[{r!r}][{key!r}] has {arr.shape[0] if arr.ndim == 1 else arr.shape} "
                    f"entries, expected {m} (one per entry of 'epochs_measured')"
                )
        for block_key in ("mi", "mi_se", "mi_sd"):
            if res.get(block_key) is not None:
                _check_mi_block(res[block_key], f"[{r!r}][{block_key!r}]", m, p)
        if res.get("mi"):
            any_mi = True
    if require_mi and not any_mi:
        raise ValueError("summary holds no mutual-information estimates (no 'mi' under 'nt' or 'at')")


def _regimes(summary: Mapping) -> list[str]:
    return [r for r in REGIMES if summary.get(r) is not None]


def _estimators(summary: Mapping) -> list[str]:
    """Estimator names in order of first appearance across regimes."""
    names: list[str] = []
    for r in _regimes(summary):
        for est in (summary[r].get("mi") or {}):
            if est not in names:
                names.append(est)
    return names


def _mi(summary: Mapping, regime: str, est: str, kind: str, q: str, *, se: bool = False):
    """(M, P) float array, or None when that estimate is absent.

    ``se=True``: the error band of that estimate: bootstrap standard errors (``mi_se``) when
    the summary has them, else the standard deviation across seeds (``mi_sd``).
    """
    res = summary[regime]
    block = ((res.get("mi_se") or res.get("mi_sd")) if se else res.get("mi")) or {}
    try:
        values = block[est][kind][q]
    except (KeyError, TypeError):
        return None
    if values is None:
        return None
    return np.array(values, dtype=float)


def _metric(summary: Mapping, regime: str, key: str):
    values = summary[regime].get(key)
    return None if values is None else np.array(values, dtype=float)


def _epochs(summary: Mapping) -> np.ndarray:
    return np.array(summary["epochs_measured"], dtype=float)


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


def _title(main: str, summary: Mapping) -> str:
    sub = _subtitle(summary)
    return f"{main}  ({sub})" if sub else main


def _est_label(est: str) -> str:
    return ESTIMATOR_LABELS.get(est, est)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "unnamed"


def _finite(*arrays: np.ndarray) -> np.ndarray:
    mask = np.ones(arrays[0].shape, dtype=bool)
    for a in arrays:
        mask &= np.isfinite(a)
    return mask


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5")


def _samples(summary: Mapping) -> float | None:
    cfg = summary.get("config") or {}
    if not isinstance(cfg, Mapping):
        return None
    try:
        n = float(cfg.get("samples"))
    except (TypeError, ValueError):
        return None
    return n if math.isfinite(n) and n > 1 else None


# --------------------------------------------------------------------------------------
# Information planes
# --------------------------------------------------------------------------------------


def plot_information_planes(summary: dict, out_dir) -> list[Path]:
    """One information-plane grid per estimator: ``info_plane_{estimator}.png``.

    Rows are the training regimes (NT, AT), columns the probes.  Each panel plots
    I(T;Y) against I(X;T) (bits) at every measurement, coloured by epoch (shared
    viridis colour map, colour bar "epoch"); clean inputs as ``o``, adversarial
    inputs as ``+``, each trajectory joined by a thin line in epoch order.  Axes are
    shared within a column so NT and AT can be compared directly.
    """
    validate_summary(summary, require_mi=True)
    out_dir = Path(out_dir)
    layers = list(summary["layers"])
    regimes = _regimes(summary)
    epochs = _epochs(summary)
    norm = Normalize(vmin=epochs.min(), vmax=max(epochs.max(), epochs.min() + 1))
    cmap = colormaps[EPOCH_CMAP]
    written = []
    for est in _estimators(summary):
        n_rows, n_cols = len(regimes), len(layers)
        fig = Figure(figsize=(2.7 * n_cols + 1.4, 2.5 * n_rows + 1.2), layout="constrained")
        axes = fig.subplots(n_rows, n_cols, sharex="col", sharey="col", squeeze=False)
        for i, r in enumerate(regimes):
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                drawn = False
                for kind in INPUT_KINDS:
                    x = _mi(summary, r, est, kind, "I_XT")
                    y = _mi(summary, r, est, kind, "I_TY")
                    if x is None or y is None:
                        continue
                    xs, ys = x[:, j], y[:, j]
                    ok = _finite(xs, ys)
                    if not ok.any():
                        continue
                    drawn = True
                    ax.plot(xs[ok], ys[ok], ls=INPUT_LINESTYLES[kind], lw=0.7, color="0.55", zorder=1)
                    xe = _mi(summary, r, est, kind, "I_XT", se=True)
                    ye = _mi(summary, r, est, kind, "I_TY", se=True)
                    if xe is not None or ye is not None:
                        ax.errorbar(
                            xs[ok], ys[ok],
                            xerr=None if xe is None else np.nan_to_num(xe[:, j][ok]),
                            yerr=None if ye is None else np.nan_to_num(ye[:, j][ok]),
                            fmt="none", ecolor="0.7", elinewidth=0.6, capsize=0, zorder=1.5,
                        )
                    if kind == "clean":
                        style = dict(marker="o", s=26, edgecolors="0.2", linewidths=0.4)
                    else:
                        style = dict(marker="+", s=60, linewidths=1.4)
                    ax.scatter(xs[ok], ys[ok], c=epochs[ok], cmap=cmap, norm=norm, zorder=2, **style)
                if not drawn:
                    _no_data(ax)
                ax.grid(True, lw=0.3, alpha=0.5)
                if i == 0:
                    ax.set_title(layer, fontsize=11)
                if i == n_rows - 1:
                    ax.set_xlabel(r"$I(X;T)$ (bits)")
                if j == 0:
                    ax.set_ylabel(f"{REGIME_SHORT[r]}\n" + r"$I(T;Y)$ (bits)")
                    ax.yaxis.label.set_color(REGIME_COLORS[r])
        cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.9, pad=0.02)
        cbar.set_label("epoch")
        cbar.locator = MaxNLocator(integer=True)
        cbar.update_ticks()
        handles = [
            Line2D([], [], ls=INPUT_LINESTYLES["clean"], lw=0.7, color="0.55", marker="o",
                   markersize=6, markerfacecolor="0.6", markeredgecolor="0.2", label=INPUT_LABELS["clean"]),
            Line2D([], [], ls=INPUT_LINESTYLES["adv"], lw=0.7, color="0.55", marker="+",
                   markersize=8, markeredgewidth=1.4, markeredgecolor="0.3", label=INPUT_LABELS["adv"]),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle(_title(f"Information plane — {_est_label(est)} estimator", summary))
        written.append(save_figure(fig, out_dir / f"info_plane_{_safe_name(est)}.png"))
    return written


# --------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------


def plot_training_curves(summary: dict, out_dir) -> list[Path]:
    """``training_curves.png``: accuracy (%) and loss against epoch for NT and AT.

    Colour encodes the regime (NT blue, AT vermilion), line style the split
    (train solid, clean test dashed, adversarial test dotted).  Missing values
    (e.g. train metrics at epoch 0) are skipped.
    """
    validate_summary(summary)
    out_dir = Path(out_dir)
    epochs = _epochs(summary)
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2, sharex=True)
    handles = []
    for r in _regimes(summary):
        for label, tmpl, ls, marker in _CURVE_SPLITS:
            for ax, kind, scale in ((ax_acc, "acc", 100.0), (ax_loss, "loss", 1.0)):
                vals = _metric(summary, r, tmpl.format(kind))
                if vals is None:
                    continue
                ok = np.isfinite(vals)
                if not ok.any():
                    continue
                ax.plot(epochs[ok], vals[ok] * scale, ls=ls, marker=marker, markersize=3.5,
                        lw=1.5, color=REGIME_COLORS[r])
                sd = _metric(summary, r, tmpl.format(kind) + "_sd")  # across seeds (--seeds K)
                if sd is not None and sd.shape == vals.shape:
                    s = np.nan_to_num(sd[ok]) * scale
                    ax.fill_between(epochs[ok], vals[ok] * scale - s, vals[ok] * scale + s,
                                    color=REGIME_COLORS[r], alpha=0.15, lw=0)
            handles.append(Line2D([], [], ls=ls, marker=marker, markersize=3.5, lw=1.5,
                                  color=REGIME_COLORS[r], label=f"{REGIME_SHORT[r]} {label}"))
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_title("Accuracy")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_title("Loss")
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(True, lw=0.3, alpha=0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax_acc.get_ylim()
    ax_acc.set_ylim(max(lo, -2.0), min(hi, 102.0))
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    fig.suptitle(_title("Training curves — NT vs AT", summary))
    return [save_figure(fig, out_dir / "training_curves.png")]


# --------------------------------------------------------------------------------------
# Final information (bars)
# --------------------------------------------------------------------------------------


def plot_final_information(summary: dict, out_dir, *, quantity: str = "I_XT") -> list[Path]:
    """``final_IXT.png`` (or ``final_ITY.png``): the last measurement's MI per probe.

    One panel per estimator; per probe four bars: NT clean, NT adversarial
    (hatched), AT clean, AT adversarial (hatched).  For I(X;T), when
    ``summary["config"]["samples"]`` is given, the ``log2(N)`` ceiling of the
    plug-in estimators is drawn as a dashed line.
    """
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
    validate_summary(summary, require_mi=True)
    out_dir = Path(out_dir)
    layers = list(summary["layers"])
    regimes = _regimes(summary)
    estimators = _estimators(summary)
    epochs = summary["epochs_measured"]
    n_samples = _samples(summary) if quantity == "I_XT" else None
    ceiling = math.log2(n_samples) if n_samples else None

    n_est, p = len(estimators), len(layers)
    fig = Figure(figsize=(max(5.0, 1.1 * p + 2.0), 3.0 * n_est + 1.2), layout="constrained")
    axes = fig.subplots(n_est, 1, sharex=True, squeeze=False)[:, 0]
    bars = [(r, kind) for r in regimes for kind in INPUT_KINDS]
    width = 0.8 / len(bars)
    x = np.arange(p)
    for ax, est in zip(axes, estimators):
        top = 0.0
        for b, (r, kind) in enumerate(bars):
            pos = x + (b - (len(bars) - 1) / 2) * width
            vals = _mi(summary, r, est, kind, quantity)
            final = np.full(p, np.nan) if vals is None else vals[-1]
            ok = np.isfinite(final)
            for xp in pos[~ok]:  # mark missing estimates instead of leaving a silent gap
                ax.annotate("n/a", xy=(xp, 0), xytext=(0, 3), textcoords="offset points",
                            rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
            if not ok.any():
                continue
            se = _mi(summary, r, est, kind, quantity, se=True)
            err = None if se is None else np.nan_to_num(se[-1])
            ax.bar(
                pos[ok], final[ok], width=width * 0.95,
                color=REGIME_COLORS[r] if kind == "clean" else "white",
                edgecolor=REGIME_COLORS[r], linewidth=1.0,
                hatch=None if kind == "clean" else "////",
                yerr=None if err is None else err[ok],
                error_kw=dict(elinewidth=0.8, capsize=2, ecolor="0.25"),
            )
            top = max(top, float(np.nanmax(final[ok])))
        if ceiling is not None:
            ax.axhline(ceiling, color="0.35", ls="--", lw=1.0)
            ax.annotate(
                rf"$\log_2 N$ = {ceiling:.2f} bits (N = {int(n_samples)})",
                xy=(1.0, ceiling), xycoords=("axes fraction", "data"),
                xytext=(-4, 3), textcoords="offset points", ha="right", va="bottom",
                fontsize=8, color="0.3",
            )
            top = max(top, ceiling)
        if top > 0:
            ax.set_ylim(0, top * 1.15)
        ax.set_ylabel(f"{QUANTITY_TEX[quantity]} (bits)")
        ax.set_title(f"{_est_label(est)} estimator", fontsize=11)
        ax.grid(True, axis="y", lw=0.3, alpha=0.5)
        ax.set_axisbelow(True)
    axes[-1].set_xticks(x, layers)
    axes[-1].set_xlabel("probe layer")
    handles = []
    for r in regimes:
        handles.append(Patch(facecolor=REGIME_COLORS[r], edgecolor=REGIME_COLORS[r],
                             label=f"{REGIME_SHORT[r]}, {INPUT_LABELS['clean']}"))
        handles.append(Patch(facecolor="white", edgecolor=REGIME_COLORS[r], hatch="////",
                             label=f"{REGIME_SHORT[r]}, {INPUT_LABELS['adv']}"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle(_title(f"Final {QUANTITY_TEX[quantity]} (epoch {epochs[-1]:g})", summary))
    return [save_figure(fig, out_dir / f"final_{quantity.replace('_', '')}.png")]


# --------------------------------------------------------------------------------------
# Trajectories over epochs
# --------------------------------------------------------------------------------------


def _draw_clean_adv_curves(ax, summary: Mapping, regime: str, est: str, quantity: str, j: int,
                           epochs: np.ndarray, color: str, *, size: float = 1.0) -> bool:
    """Clean (solid, ``o``) and adversarial (dashed, ``+``) MI of probe ``j`` over epochs on ``ax``.

    Error bands (bootstrap s.e. or the sd across seeds, see :func:`_mi`) are shaded when the
    summary has them. Returns whether anything was drawn.
    """
    drawn = False
    for kind in INPUT_KINDS:
        vals = _mi(summary, regime, est, kind, quantity)
        if vals is None:
            continue
        v = vals[:, j]
        ok = np.isfinite(v)
        if not ok.any():
            continue
        drawn = True
        ax.plot(epochs[ok], v[ok], ls=INPUT_LINESTYLES[kind], marker=INPUT_MARKERS[kind],
                markersize=(4 if kind == "clean" else 7) * size, lw=1.4 * size, color=color,
                markerfacecolor=color if kind == "clean" else "none")
        se = _mi(summary, regime, est, kind, quantity, se=True)
        if se is not None:
            s = np.nan_to_num(se[:, j][ok])
            ax.fill_between(epochs[ok], v[ok] - s, v[ok] + s, color=color,
                            alpha=0.18 if kind == "clean" else 0.10, lw=0)
    return drawn


def plot_mi_trajectories(summary: dict, out_dir, *, quantity: str = "I_XT") -> list[Path]:
    """``trajectories_{quantity}_{estimator}.png``: MI of each probe against epoch.

    Rows are the regimes (NT, AT), columns the probes; each panel shows the clean
    (solid, ``o``) and adversarial (dashed, ``+``) value over epochs.  Standard
    errors, when the summary has ``mi_se``, are drawn as shaded bands.
    """
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
    validate_summary(summary, require_mi=True)
    out_dir = Path(out_dir)
    layers = list(summary["layers"])
    regimes = _regimes(summary)
    epochs = _epochs(summary)
    written = []
    for est in _estimators(summary):
        n_rows, n_cols = len(regimes), len(layers)
        fig = Figure(figsize=(2.6 * n_cols + 0.8, 2.3 * n_rows + 1.2), layout="constrained")
        axes = fig.subplots(n_rows, n_cols, sharex=True, sharey="col", squeeze=False)
        for i, r in enumerate(regimes):
            color = REGIME_COLORS[r]
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                if not _draw_clean_adv_curves(ax, summary, r, est, quantity, j, epochs, color):
                    _no_data(ax)
                ax.grid(True, lw=0.3, alpha=0.5)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if i == 0:
                    ax.set_title(layer, fontsize=11)
                if i == n_rows - 1:
                    ax.set_xlabel("epoch")
                if j == 0:
                    ax.set_ylabel(f"{REGIME_SHORT[r]}\n{QUANTITY_TEX[quantity]} (bits)", color=color)
        handles = [
            Line2D([], [], ls=INPUT_LINESTYLES["clean"], marker="o", markersize=4, lw=1.4,
                   color="0.3", label=INPUT_LABELS["clean"]),
            Line2D([], [], ls=INPUT_LINESTYLES["adv"], marker="+", markersize=7, lw=1.4,
                   color="0.3", label=INPUT_LABELS["adv"]),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle(_title(f"{QUANTITY_TEX[quantity]} over training — {_est_label(est)} estimator",
                            summary))
        written.append(save_figure(fig, out_dir / f"trajectories_{quantity}_{_safe_name(est)}.png"))
    return written


# --------------------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------------------


def plot_all(summary: dict, out_dir) -> list[Path]:
    """Writes every figure above and returns all paths.

    Training curves are always drawn; the MI figures (information planes, final
    I(X;T) and I(T;Y) bars, I(X;T) and I(T;Y) trajectories) only when the summary
    holds MI estimates.
    """
    validate_summary(summary)
    written = plot_training_curves(summary, out_dir)
    if _estimators(summary):
        written += plot_information_planes(summary, out_dir)
        for q in QUANTITIES:
            written += plot_final_information(summary, out_dir, quantity=q)
        for q in QUANTITIES:
            written += plot_mi_trajectories(summary, out_dir, quantity=q)
    return written


# --------------------------------------------------------------------------------------
# Finding 1: clean vs adversarial trends
# --------------------------------------------------------------------------------------


def plot_trend_agreement(summary: dict, out_dir) -> list[Path]:
    """``trend_agreement_{estimator}.png``: clean and adversarial MI over epochs, side by side per probe.

    Rows: NT I(X;T), NT I(T;Y), AT I(X;T), AT I(T;Y); columns: probes. Each panel draws the
    clean (solid, ``o``) and adversarial (dashed, ``+``) curve and, when
    ``summary["evidence"]["series"]`` holds finding 1's agreement numbers, prints Pearson r,
    Spearman ρ and the mean absolute gap (or "flat") in the corner.
    """
    validate_summary(summary, require_mi=True)
    out_dir = Path(out_dir)
    layers = list(summary["layers"])
    regimes = _regimes(summary)
    epochs = _epochs(summary)
    series = ((summary.get("evidence") or {}).get("series") or {})
    rows = [(r, q) for r in regimes for q in QUANTITIES]
    written = []
    for est in _estimators(summary):
        fig = Figure(figsize=(2.6 * len(layers) + 0.8, 2.1 * len(rows) + 1.2), layout="constrained")
        axes = fig.subplots(len(rows), len(layers), sharex=True, squeeze=False)
        for i, (r, q) in enumerate(rows):
            color = REGIME_COLORS[r]
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                if not _draw_clean_adv_curves(ax, summary, r, est, q, j, epochs, color, size=0.85):
                    _no_data(ax)
                s = (((series.get(r) or {}).get(est) or {}).get(q) or {}).get(layer)
                if s:
                    if s.get("flat"):
                        text = "flat"
                    else:
                        pr, sp = s.get("pearson"), s.get("spearman")
                        text = (f"r={'n/a' if pr is None else f'{pr:.2f}'} "
                                f"ρ={'n/a' if sp is None else f'{sp:.2f}'}")
                    gap = s.get("mean_abs_gap_bits")
                    if gap is not None:
                        text += f"\n|Δ|={gap:.2f} b"
                    ax.text(0.03, 0.04, text, transform=ax.transAxes, fontsize=7, va="bottom", ha="left",
                            color="0.15" if s.get("agrees", True) else "#B00000",
                            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.7))
                ax.grid(True, lw=0.3, alpha=0.5)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if i == 0:
                    ax.set_title(layer, fontsize=11)
                if i == len(rows) - 1:
                    ax.set_xlabel("epoch")
                if j == 0:
                    ax.set_ylabel(f"{REGIME_SHORT[r]} {QUANTITY_TEX[q]}\n(bits)", color=color)
        handles = [
            Line2D([], [], ls=INPUT_LINESTYLES["clean"], marker="o", markersize=4, lw=1.3, color="0.3",
                   label=INPUT_LABELS["clean"]),
            Line2D([], [], ls=INPUT_LINESTYLES["adv"], marker="+", markersize=7, lw=1.3, color="0.3",
                   label=INPUT_LABELS["adv"]),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle(_title(f"Clean vs adversarial MI over training — {_est_label(est)} "
                            "(r: Pearson, ρ: Spearman, |Δ|: mean gap)", summary))
        written.append(save_figure(fig, out_dir / f"trend_agreement_{_safe_name(est)}.png"))
    return written


__all__ += ["plot_trend_agreement"]


# --------------------------------------------------------------------------------------
# Finding 3: texture vs shape
# --------------------------------------------------------------------------------------

DISTORTION_LABELS = {"saturation": "saturation level p", "shuffle": "patch-shuffle grid k"}


def plot_distortion_accuracy(summary: dict, out_dir) -> list[Path]:
    """``distortion_accuracy.png``: accuracy (top) and retention (bottom) against the distortion level.

    Columns: saturation, patch shuffling (levels on a categorical axis). NT blue, AT
    vermilion; clean inputs solid with ``o``, adversarial inputs dashed with ``+``. Retention
    is the accuracy divided by the undistorted accuracy (p = 2, k = 0).
    """
    dist = summary["distortion"]
    out_dir = Path(out_dir)
    kinds = [k for k in ("saturation", "shuffle") if k in dist[next(iter(dist))]]
    fig = Figure(figsize=(4.6 * len(kinds), 6.4), layout="constrained")
    axes = fig.subplots(2, len(kinds), squeeze=False)
    for j, kind in enumerate(kinds):
        for r in REGIMES:
            if r not in dist:
                continue
            block = dist[r][kind]
            levels = block["levels"]
            xs = np.arange(len(levels))
            ref_i = [i for i, lv in enumerate(levels) if (kind == "saturation" and float(lv) == 2.0)
                     or (kind == "shuffle" and int(lv) <= 1)]
            for kind_in in INPUT_KINDS:
                acc = np.array(block[kind_in]["accuracy"], dtype=float)
                style = dict(ls=INPUT_LINESTYLES[kind_in], marker=INPUT_MARKERS[kind_in], color=REGIME_COLORS[r],
                             markersize=5 if kind_in == "clean" else 8, lw=1.5,
                             label=f"{REGIME_SHORT[r]}, {INPUT_LABELS[kind_in]}")
                axes[0, j].plot(xs, acc, **style)
                if ref_i and acc[ref_i[0]] > 0:
                    axes[1, j].plot(xs, acc / acc[ref_i[0]], **style)
            for ax in axes[:, j]:
                ax.set_xticks(xs, [f"{lv:g}" for lv in levels])
        axes[0, j].set_title(kind, fontsize=11)
        axes[0, j].set_ylabel("accuracy")
        axes[0, j].set_ylim(-0.02, 1.02)
        axes[1, j].set_ylabel("retention (acc / undistorted acc)")
        axes[1, j].set_xlabel(DISTORTION_LABELS.get(kind, kind))
        for ax in axes[:, j]:
            ax.grid(True, lw=0.3, alpha=0.5)
    chance = 1.0 / summary["num_classes"] if summary.get("num_classes") else None
    if chance:
        for ax in axes[0]:
            ax.axhline(chance, color="0.5", lw=0.8, ls=":")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle(_title("Accuracy under texture-removing and shape-destroying distortions", summary))
    return [save_figure(fig, out_dir / "distortion_accuracy.png")]


def plot_distortion_information(summary: dict, out_dir) -> list[Path]:
    """``distortion_mi_{kind}.png``: I(X;T) and I(T;Y) (rows) of every probe (columns) against the level."""
    dist = summary["distortion"]
    out_dir = Path(out_dir)
    layers = list(summary["layers"])
    written = []
    est = _est_label(summary.get("estimator", ""))
    for kind in ("saturation", "shuffle"):
        fig = Figure(figsize=(2.6 * len(layers) + 0.8, 5.2), layout="constrained")
        axes = fig.subplots(2, len(layers), squeeze=False, sharex=True)
        for i, q in enumerate(QUANTITIES):
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                for r in REGIMES:
                    if r not in dist or kind not in dist[r]:
                        continue
                    block = dist[r][kind]
                    xs = np.arange(len(block["levels"]))
                    for kind_in in INPUT_KINDS:
                        v = np.array([row[j] for row in block[kind_in][q]], dtype=float)
                        ax.plot(xs, v, ls=INPUT_LINESTYLES[kind_in], marker=INPUT_MARKERS[kind_in],
                                color=REGIME_COLORS[r], lw=1.3, markersize=4 if kind_in == "clean" else 7,
                                label=f"{REGIME_SHORT[r]}, {INPUT_LABELS[kind_in]}")
                    ax.set_xticks(xs, [f"{lv:g}" for lv in block["levels"]])
                ax.grid(True, lw=0.3, alpha=0.5)
                if i == 0:
                    ax.set_title(layer, fontsize=11)
                if i == 1:
                    ax.set_xlabel(DISTORTION_LABELS[kind])
                if j == 0:
                    ax.set_ylabel(f"{QUANTITY_TEX[q]} (bits)")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=4, frameon=False)
        fig.suptitle(_title(f"MI under {kind} — {est}", summary))
        written.append(save_figure(fig, out_dir / f"distortion_mi_{kind}.png"))
    return written


def plot_confusion(confusions: Mapping[str, Mapping], out_dir, *, class_names=None, title: str = "") -> list[Path]:
    """``adversarial_confusion.png``: row-normalised true → predicted matrices, one panel per regime.

    ``confusions[regime]`` holds ``counts`` and ``mean_confidence`` (K × K lists); each
    non-empty cell shows its share of the row and, below it, the mean confidence.
    """
    out_dir = Path(out_dir)
    regimes = [r for r in REGIMES if r in confusions]
    k = len(confusions[regimes[0]]["counts"])
    names = list(class_names) if class_names is not None and len(class_names) == k else [str(i) for i in range(k)]
    fig = Figure(figsize=(5.6 * len(regimes) + 0.8, 5.6), layout="constrained")
    axes = fig.subplots(1, len(regimes), squeeze=False)[0]
    im = None
    for ax, r in zip(axes, regimes):
        counts = np.array(confusions[r]["counts"], dtype=float)
        conf = np.array(confusions[r]["mean_confidence"], dtype=float)
        share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        im = ax.imshow(share, cmap="magma_r", vmin=0, vmax=1)
        for t in range(k):
            for p in range(k):
                if counts[t, p] > 0 and share[t, p] >= 0.05:
                    ax.text(p, t, f"{share[t, p]:.2f}\n{conf[t, p]:.2f}", ha="center", va="center", fontsize=5.5,
                            color="white" if share[t, p] > 0.5 else "black")
        ax.set_xticks(range(k), names, rotation=60, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        acc = confusions[r].get("accuracy")
        ax.set_title(f"{REGIME_SHORT[r]}" + (f" (adversarial accuracy {acc:.3f})" if acc is not None else ""),
                     color=REGIME_COLORS[r])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="share of the true class (cell: share / mean confidence)")
    if title:
        fig.suptitle(title)
    return [save_figure(fig, out_dir / "adversarial_confusion.png")]


def _show_image(ax, img: np.ndarray) -> None:
    img = np.clip(np.asarray(img, dtype=float), 0, 1)
    if img.ndim == 3 and img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_attribution_maps(images: np.ndarray, labels, maps: Mapping[str, Mapping[str, np.ndarray]], out_dir, *,
                          class_names=None, title: str = "") -> list[Path]:
    """``attribution_maps.png``: rows = images; columns = the image, then each regime's maps.

    ``maps[regime][method]`` is a [B, H, W] heatmap in [0, 1] (see
    :func:`jaxmi.attribution.to_heatmap`).
    """
    out_dir = Path(out_dir)
    regimes = [r for r in REGIMES if r in maps]
    methods = list(next(iter(maps.values())))
    short = {"saliency": "saliency", "smoothgrad": "SmoothGrad", "integrated_gradients": "Integrated Gr."}
    b = len(images)
    cols = 1 + len(regimes) * len(methods)
    fig = Figure(figsize=(1.45 * cols, 1.5 * b + 0.9), layout="constrained")
    axes = fig.subplots(b, cols, squeeze=False)
    for i in range(b):
        _show_image(axes[i, 0], images[i])
        lab = int(labels[i])
        axes[i, 0].set_ylabel(class_names[lab] if class_names is not None and lab < len(class_names) else str(lab),
                              fontsize=8)
        c = 1
        for r in regimes:
            for m in methods:
                ax = axes[i, c]
                ax.imshow(np.asarray(maps[r][m][i]), cmap="inferno", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{REGIME_SHORT[r]} {short.get(m, m)}", fontsize=8, color=REGIME_COLORS[r])
                c += 1
    axes[0, 0].set_title("image", fontsize=8)
    if title:
        fig.suptitle(title)
    return [save_figure(fig, out_dir / "attribution_maps.png")]


def plot_image_grid(columns: Mapping[str, np.ndarray], path, *, title: str = "") -> list[Path]:
    """A grid of images: one column per entry of ``columns`` ({title: [B, H, W, C] in [0, 1]}), rows = images."""
    names = list(columns)
    b = len(columns[names[0]])
    fig = Figure(figsize=(1.3 * len(names) + 0.4, 1.35 * b + 0.8), layout="constrained")
    axes = fig.subplots(b, len(names), squeeze=False)
    for j, n in enumerate(names):
        for i in range(b):
            _show_image(axes[i, j], columns[n][i])
        axes[0, j].set_title(n, fontsize=7)
    if title:
        fig.suptitle(title)
    return [save_figure(fig, path)]


__all__ += ["plot_distortion_accuracy", "plot_distortion_information", "plot_confusion", "plot_attribution_maps",
            "plot_image_grid"]


# --------------------------------------------------------------------------------------
# Finding 4: estimators vs geometry
# --------------------------------------------------------------------------------------

SWEEP_COLORS = {"scale": "#0072B2", "separation": "#009E73", "compactness": "#CC79A7", "width": "#E69F00"}
SWEEP_LABELS = {"scale": "scale T by c", "separation": "classes apart (s_b)", "compactness": "class size (s_w)",
                "width": "width D"}


def _geo_points(layers, est, q, stat):
    out = []
    for lay in layers:
        x, y = lay["geometry"].get(stat), lay["mi"][est][q]
        if x is None or y is None or not np.isfinite(x) or not np.isfinite(y):
            continue
        out.append((lay, float(x), float(y)))
    return out


def plot_estimator_geometry(summary: dict, out_dir) -> list[Path]:
    """Finding 4's figures.

    * ``geometry_scatter.png``: estimator value against the geometry statistic it should track
      (columns: KDE-upper I(X;T) vs spread, KDE-lower I(X;T) vs spread, KDE-upper I(T;Y) vs
      separation, KDE-lower I(T;Y) vs separation, binning I(X;T) vs log₂ occupied bins with the
      bound y = x); controlled cases coloured by sweep, trained probes as NT/AT markers
      (filled clean, hollow adversarial). Spearman ρ in each title.
    * ``geometry_sweeps.png``: every estimator's I(X;T) and I(T;Y) against each controlled
      factor (one column per sweep).
    """
    layers = summary["layers_measured"]
    out_dir = Path(out_dir)
    ev = summary.get("evidence", {})
    panels = [("kde_upper", "I_XT", "spread_kde_upper", "median ‖tᵢ−tⱼ‖² / 2σ²", True, "kde_ixt_tracks_spread"),
              ("kde_lower", "I_XT", "spread_kde_lower", "median ‖tᵢ−tⱼ‖² / 8σ²", True, "kde_ixt_tracks_spread"),
              ("kde_upper", "I_TY", "separation_kde_upper", "between / (within + 2σ²)", True,
               "kde_ity_tracks_separation"),
              ("kde_lower", "I_TY", "separation_kde_lower", "between / (within + 8σ²)", True,
               "kde_ity_tracks_separation"),
              ("binning", "I_XT", "log2_occupied_bins", "log₂ occupied bins", False, "binning_tracks_occupied_bins")]
    fig = Figure(figsize=(4.0 * len(panels), 4.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (est, q, stat, xlabel, logx, verdict) in zip(axes, panels):
        pts = _geo_points(layers, est, q, stat)
        for lay, x, y in pts:
            if lay["source"] == "controlled":
                ax.scatter(x, y, s=18, color=SWEEP_COLORS.get(lay.get("sweep"), "0.5"), alpha=0.85, lw=0)
            else:
                color = REGIME_COLORS.get(lay.get("mode"), "0.3")
                clean = lay.get("inputs") == "clean"
                ax.scatter(x, y, s=40, marker="D" if lay.get("mode") == "nt" else "s",
                           facecolors=color if clean else "none", edgecolors=color, lw=1.2)
        if logx and pts and min(p[1] for p in pts) > 0:
            ax.set_xscale("log")
        if stat == "log2_occupied_bins" and pts:
            hi = max(max(p[1] for p in pts), max(p[2] for p in pts))
            ax.plot([0, hi], [0, hi], color="0.4", ls="--", lw=0.9, label="I = log₂ bins")
        rho = ((ev.get(verdict) or {}).get(f"{est}_{q}_vs_{stat}") or {}).get("spearman", {}).get("all")
        ax.set_title(f"{_est_label(est)} {QUANTITY_TEX[q]}" + (f"\nSpearman ρ = {rho:.3f}" if rho is not None else ""),
                     fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{QUANTITY_TEX[q]} (bits)")
        ax.grid(True, lw=0.3, alpha=0.5)
    handles = [Line2D([], [], marker="o", ls="", color=c, label=f"controlled: {SWEEP_LABELS[s]}")
               for s, c in SWEEP_COLORS.items()]
    if any(lay["source"] == "trained" for lay in layers):
        handles += [Line2D([], [], marker="D", ls="", color=REGIME_COLORS["nt"], label="trained NT probe (clean)"),
                    Line2D([], [], marker="s", ls="", color=REGIME_COLORS["at"], label="trained AT probe (clean)"),
                    Line2D([], [], marker="s", ls="", markerfacecolor="none", color="0.3",
                           label="hollow: adversarial inputs")]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)
    cfg = summary.get("config") or {}
    fig.suptitle(_title("Estimates against the geometry of the layer output", summary)
                 if cfg else "Estimates against the geometry of the layer output")
    written = [save_figure(fig, out_dir / "geometry_scatter.png")]

    sweeps = [s for s in SWEEP_COLORS if any(lay.get("sweep") == s for lay in layers)]
    if sweeps:
        fig = Figure(figsize=(3.6 * len(sweeps) + 0.6, 5.6), layout="constrained")
        axes = fig.subplots(2, len(sweeps), squeeze=False, sharey="row")
        est_styles = {"kde_upper": ("-", "o"), "kde_lower": ("--", "s"), "binning": (":", "^")}
        for j, s in enumerate(sweeps):
            items = sorted((lay for lay in layers if lay.get("sweep") == s), key=lambda lay: lay["value"])
            xs = [lay["value"] for lay in items]
            for i, q in enumerate(QUANTITIES):
                ax = axes[i, j]
                for est, (ls, mk) in est_styles.items():
                    ax.plot(xs, [lay["mi"][est][q] for lay in items], ls=ls, marker=mk, markersize=4,
                            color=SWEEP_COLORS[s], label=_est_label(est))
                ax.set_xscale("log", base=2 if s == "width" else 10)
                ax.grid(True, lw=0.3, alpha=0.5)
                if j == 0:
                    ax.set_ylabel(f"{QUANTITY_TEX[q]} (bits)")
                if i == 1:
                    ax.set_xlabel(SWEEP_LABELS[s])
            axes[0, j].set_title(s, fontsize=11)
        handles = [Line2D([], [], ls=ls, marker=mk, color="0.3", label=_est_label(e))
                   for e, (ls, mk) in est_styles.items()]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        fig.suptitle("Controlled cases: one geometric factor varied at a time")
        written.append(save_figure(fig, out_dir / "geometry_sweeps.png"))
    return written


__all__ += ["plot_estimator_geometry"]
