"""Finding 2's figures: how much NT and AT layers keep about the inputs and the labels.

Information planes, training curves, the final information per probe (bars) and MI
trajectories over epochs; :func:`plot_all` writes them all. Every function validates the
summary's ``run`` (:func:`jaxmi.plots.style.run_record`) before drawing anything.
"""

from __future__ import annotations

import math
from etils.epath import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from jaxmi.history import INPUTS, QUANTITIES
from jaxmi.plots.sweep import plot_information_difference, plot_noise_sweep
from jaxmi.plots.style import (EPOCH_CMAP, compact_yticks, INPUT_LABELS, INPUT_LINESTYLES, QUANTITY_TEX, REGIME_COLORS, REGIME_SHORT,
                               check_quantity, clean_adv_legend, draw_clean_adv_curves, epoch_axis, estimator_label,
                               estimators_present, figure_title, finite_mask, label_epoch_panel, mark_no_data,
                               metric_values, mi_values, regimes_present, run_record, safe_name, sample_count,
                               save_figure, set_margins, suptitle)

__all__ = ["plot_information_planes", "plot_training_curves", "plot_final_information", "plot_mi_trajectories",
           "plot_all"]

# (label, metric template, linestyle, marker) per split of the training curves.
_CURVE_SPLITS = (
    ("train", "train_{}", "-", "o"),
    ("clean test", "test_clean_{}", "--", "s"),
    ("adversarial test", "test_adv_{}", ":", "^"),
)


def _draw_plane(ax, summary, regime: str, est: str, j: int, epochs: np.ndarray, cmap, norm) -> bool:
    """Probe ``j``'s clean and adversarial trajectory in the plane; returns whether anything was drawn."""
    drawn = False
    for inputs in INPUTS:
        x = mi_values(summary, regime, est, inputs, "I_XT")
        y = mi_values(summary, regime, est, inputs, "I_TY")
        if x is None or y is None:
            continue
        xs, ys = x[:, j], y[:, j]
        ok = finite_mask(xs, ys)
        if not ok.any():
            continue
        drawn = True
        ax.plot(xs[ok], ys[ok], ls=INPUT_LINESTYLES[inputs], lw=0.7, color="0.55", zorder=1)
        xe = mi_values(summary, regime, est, inputs, "I_XT", band=True)
        ye = mi_values(summary, regime, est, inputs, "I_TY", band=True)
        if xe is not None or ye is not None:
            ax.errorbar(
                xs[ok], ys[ok],
                xerr=None if xe is None else np.nan_to_num(xe[:, j][ok]),
                yerr=None if ye is None else np.nan_to_num(ye[:, j][ok]),
                fmt="none", ecolor="0.7", elinewidth=0.6, capsize=0, zorder=1.5,
            )
        if inputs == "clean":
            style = dict(marker="o", s=26, edgecolors="0.2", linewidths=0.4)
        else:
            style = dict(marker="+", s=60, linewidths=1.4)
        ax.scatter(xs[ok], ys[ok], c=epochs[ok], cmap=cmap, norm=norm, zorder=2, **style)
    return drawn


def plot_information_planes(summary: dict, out_dir) -> list[Path]:
    """One information-plane grid per estimator: ``info_plane_{estimator}.png``.

    Rows are the regimes (NT, AT), columns the probes. Each panel plots I(T;Y) against
    I(X;T) (bits) at every measurement, coloured by epoch (shared viridis colour bar);
    clean inputs as ``o``, adversarial inputs as ``+``, each trajectory joined by a thin
    line in epoch order. Axes are shared within a row, so the probes of one network compare
    directly, and the ceilings (log₂ N, Ĥ(Y)) are drawn as dotted lines when the summary has
    them: points on them are saturated.
    """
    run = run_record(summary, require_mi=True)
    out_dir = Path(out_dir)
    layers = list(run["layers"])
    regimes = regimes_present(summary)
    epochs = epoch_axis(summary)
    norm = Normalize(vmin=epochs.min(), vmax=max(epochs.max(), epochs.min() + 1))
    cmap = colormaps[EPOCH_CMAP]
    written = []
    for est in estimators_present(summary, "I_XT"):  # a plane needs both quantities
        n_rows, n_cols = len(regimes), len(layers)
        fig = Figure(figsize=(2.7 * n_cols + 1.4, 2.5 * n_rows + 1.2))
        axes = fig.subplots(n_rows, n_cols, sharex="row", sharey="row", squeeze=False)
        set_margins(fig, n_rows, n_cols, left=0.9, right=0.8, top=0.55, bottom=0.85, wspace=0.15, hspace=0.45)
        ceil = run.get("saturation") or {}
        for i, r in enumerate(regimes):
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                if not _draw_plane(ax, summary, r, est, j, epochs, cmap, norm):
                    mark_no_data(ax)
                if "I_XT_ceiling" in ceil:
                    ax.axvline(ceil["I_XT_ceiling"], color="0.45", lw=0.8, ls=":", zorder=0)
                    ax.axhline(ceil["I_TY_ceiling"], color="0.45", lw=0.8, ls=":", zorder=0)
                ax.grid(True, lw=0.3, alpha=0.5)
                if i == 0:
                    ax.set_title(layer, fontsize=11, y=1.0)
                if i == n_rows - 1:
                    ax.set_xlabel(r"$I(X;T)$ (bits)")
                if j == 0:
                    ax.set_ylabel(f"{REGIME_SHORT[r]}\n" + r"$I(T;Y)$ (bits)")
                    ax.yaxis.label.set_color(REGIME_COLORS[r])
        top, bottom = axes[0, -1].get_position(), axes[-1, -1].get_position()  # the colour bar beside the grid
        w = fig.get_size_inches()[0]
        cax = fig.add_axes((top.x1 + 0.15 / w, bottom.y0 + 0.05 * (top.y1 - bottom.y0), 0.14 / w,
                            0.9 * (top.y1 - bottom.y0)))
        cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
        cbar.set_label("epoch")
        cbar.locator = MaxNLocator(integer=True)
        cbar.update_ticks()
        handles = [
            Line2D([], [], ls=INPUT_LINESTYLES["clean"], lw=0.7, color="0.55", marker="o",
                   markersize=6, markerfacecolor="0.6", markeredgecolor="0.2", label=INPUT_LABELS["clean"]),
            Line2D([], [], ls=INPUT_LINESTYLES["adv"], lw=0.7, color="0.55", marker="+",
                   markersize=8, markeredgewidth=1.4, markeredgecolor="0.3", label=INPUT_LABELS["adv"]),
        ]
        if "I_XT_ceiling" in ceil:
            handles.append(Line2D([], [], ls=":", lw=0.8, color="0.45", label=r"ceilings $\log_2 N$, $\hat H(Y)$"))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
        suptitle(fig, figure_title(f"Information plane — {estimator_label(est)} estimator", summary))
        written.append(save_figure(fig, out_dir / f"info_plane_{safe_name(est)}.png"))
    return written


def plot_training_curves(summary: dict, out_dir) -> list[Path]:
    """``training_curves.png``: accuracy (%) and loss against epoch for NT and AT.

    Colour encodes the regime (NT blue, AT vermilion), line style the split (train solid,
    clean test dashed, adversarial test dotted); the sd across seeds is shaded when the
    summary has it. Missing values (e.g. train metrics at epoch 0) are skipped.
    """
    run_record(summary)
    out_dir = Path(out_dir)
    epochs = epoch_axis(summary)
    fig = Figure(figsize=(10.0, 4.2))
    ax_acc, ax_loss = fig.subplots(1, 2, sharex=True)
    set_margins(fig, 1, 2, left=0.75, right=1.9, top=0.6, bottom=0.55, wspace=0.75)
    handles = []
    for r in regimes_present(summary):
        for label, tmpl, ls, marker in _CURVE_SPLITS:
            for ax, stat, scale in ((ax_acc, "acc", 100.0), (ax_loss, "loss", 1.0)):
                vals = metric_values(summary, r, tmpl.format(stat))
                if vals is None:
                    continue
                ok = np.isfinite(vals)
                if not ok.any():
                    continue
                ax.plot(epochs[ok], vals[ok] * scale, ls=ls, marker=marker, markersize=3.5,
                        lw=1.5, color=REGIME_COLORS[r])
                sd = metric_values(summary, r, tmpl.format(stat) + "_sd")
                if sd is not None and sd.shape == vals.shape:
                    s = np.nan_to_num(sd[ok]) * scale
                    ax.fill_between(epochs[ok], vals[ok] * scale - s, vals[ok] * scale + s,
                                    color=REGIME_COLORS[r], alpha=0.15, lw=0)
            handles.append(Line2D([], [], ls=ls, marker=marker, markersize=3.5, lw=1.5,
                                  color=REGIME_COLORS[r], label=f"{REGIME_SHORT[r]} {label}"))
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_title("Accuracy", y=1.0)
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_title("Loss", y=1.0)
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(True, lw=0.3, alpha=0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax_acc.get_ylim()
    ax_acc.set_ylim(max(lo, -2.0), min(hi, 102.0))
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    suptitle(fig, figure_title("Training curves — NT vs AT", summary))
    return [save_figure(fig, out_dir / "training_curves.png")]


def _draw_final_bars(ax, summary, est: str, quantity: str, bars: list[tuple[str, str]], p: int) -> float:
    """The last measurement's bars of one estimator; returns the tallest bar (0 if none)."""
    width = 0.8 / len(bars)
    x = np.arange(p)
    top = 0.0
    for b, (r, inputs) in enumerate(bars):
        pos = x + (b - (len(bars) - 1) / 2) * width
        vals = mi_values(summary, r, est, inputs, quantity)
        final = np.full(p, np.nan) if vals is None else vals[-1]
        ok = np.isfinite(final)
        for xp in pos[~ok]:  # mark missing estimates instead of leaving a silent gap
            ax.annotate("n/a", xy=(xp, 0), xytext=(0, 3), textcoords="offset points",
                        rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
        if not ok.any():
            continue
        band = mi_values(summary, r, est, inputs, quantity, band=True)
        err = None if band is None else np.nan_to_num(band[-1])
        ax.bar(
            pos[ok], final[ok], width=width * 0.95,
            color=REGIME_COLORS[r] if inputs == "clean" else "white",
            edgecolor=REGIME_COLORS[r], linewidth=1.0,
            hatch=None if inputs == "clean" else "////",
            yerr=None if err is None else err[ok],
            error_kw=dict(elinewidth=0.8, capsize=2, ecolor="0.25"),
        )
        top = max(top, float(np.nanmax(final[ok])))
    return top


def plot_final_information(summary: dict, out_dir, *, quantity: str = "I_XT") -> list[Path]:
    """``final_IXT.png`` (or ``final_ITY.png``): the last measurement's MI per probe.

    One panel per estimator; per probe four bars: NT clean, NT adversarial (hatched), AT
    clean, AT adversarial (hatched); "n/a" marks a missing estimate. For I(X;T), when
    ``summary["config"]["samples"]`` is given, the ``log2(N)`` ceiling of the plug-in
    estimators is drawn as a dashed line.
    """
    check_quantity(quantity)
    run = run_record(summary, require_mi=True)
    out_dir = Path(out_dir)
    n_samples = sample_count(summary) if quantity == "I_XT" else None
    ceiling = math.log2(n_samples) if n_samples else None
    layers, estimators = list(run["layers"]), estimators_present(summary, quantity)
    regimes = regimes_present(summary)
    bars = [(r, inputs) for r in regimes for inputs in INPUTS]

    n_est, p = len(estimators), len(layers)
    fig = Figure(figsize=(max(5.0, 1.1 * p + 2.0), 3.0 * n_est + 1.2))
    axes = fig.subplots(n_est, 1, sharex=True, squeeze=False)[:, 0]
    set_margins(fig, n_est, 1, left=0.85, right=0.15, top=0.65, bottom=1.05, hspace=0.4)
    for ax, est in zip(axes, estimators):
        top = _draw_final_bars(ax, summary, est, quantity, bars, p)
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
        compact_yticks(ax)
        ax.set_ylabel(f"{QUANTITY_TEX[quantity]} (bits)")
        ax.set_title(f"{estimator_label(est)} estimator", fontsize=11, y=1.0)
        ax.grid(True, axis="y", lw=0.3, alpha=0.5)
        ax.set_axisbelow(True)
    axes[-1].set_xticks(np.arange(p), layers)
    axes[-1].set_xlabel("probe layer")
    handles = []
    for r in regimes:
        handles.append(Patch(facecolor=REGIME_COLORS[r], edgecolor=REGIME_COLORS[r],
                             label=f"{REGIME_SHORT[r]}, {INPUT_LABELS['clean']}"))
        handles.append(Patch(facecolor="white", edgecolor=REGIME_COLORS[r], hatch="////",
                             label=f"{REGIME_SHORT[r]}, {INPUT_LABELS['adv']}"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    suptitle(fig, figure_title(f"Final {QUANTITY_TEX[quantity]} (epoch {run['epochs_measured'][-1]:g})",
                              summary))
    return [save_figure(fig, out_dir / f"final_{quantity.replace('_', '')}.png")]


def plot_mi_trajectories(summary: dict, out_dir, *, quantity: str = "I_XT") -> list[Path]:
    """``trajectories_{quantity}_{estimator}.png``: MI of each probe against epoch.

    Rows are the regimes (NT, AT), columns the probes; each panel shows the clean (solid,
    ``o``) and adversarial (dashed, ``+``) value over epochs, with error bands shaded when
    the summary has them.
    """
    check_quantity(quantity)
    run = run_record(summary, require_mi=True)
    out_dir = Path(out_dir)
    layers = list(run["layers"])
    regimes = regimes_present(summary)
    epochs = epoch_axis(summary)
    written = []
    for est in estimators_present(summary, quantity):
        n_rows, n_cols = len(regimes), len(layers)
        fig = Figure(figsize=(2.6 * n_cols + 0.8, 2.3 * n_rows + 1.2))
        axes = fig.subplots(n_rows, n_cols, sharex=True, sharey="col", squeeze=False)
        set_margins(fig, n_rows, n_cols, left=0.9, right=0.15, top=0.55, bottom=0.85, wspace=0.5, hspace=0.3)
        for i, r in enumerate(regimes):
            color = REGIME_COLORS[r]
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                if not draw_clean_adv_curves(ax, summary, r, est, quantity, j, epochs, color):
                    mark_no_data(ax)
                label_epoch_panel(ax, i, j, n_rows, layer, f"{REGIME_SHORT[r]}\n{QUANTITY_TEX[quantity]} (bits)",
                                  color)
        fig.legend(handles=clean_adv_legend(1.4), loc="outside lower center", ncols=2, frameon=False)
        suptitle(fig, figure_title(f"{QUANTITY_TEX[quantity]} over training — {estimator_label(est)} estimator",
                                  summary))
        written.append(save_figure(fig, out_dir / f"trajectories_{quantity}_{safe_name(est)}.png"))
    return written


def plot_all(summary: dict, out_dir) -> list[Path]:
    """Writes finding 2's figures and returns all paths.

    Training curves are always drawn; the MI figures (information planes, final I(X;T) and
    I(T;Y) bars, the NT − AT difference per probe, I(X;T) and I(T;Y) trajectories, and the
    σ² / bin-size sweeps when the run swept) only when the summary holds MI estimates.
    """
    run_record(summary)
    written = plot_training_curves(summary, out_dir)
    if estimators_present(summary):
        written += plot_information_planes(summary, out_dir)
        for q in QUANTITIES:
            written += plot_final_information(summary, out_dir, quantity=q)
        written += plot_information_difference(summary, out_dir)
        for q in QUANTITIES:
            written += plot_mi_trajectories(summary, out_dir, quantity=q)
        written += plot_noise_sweep(summary, out_dir)
    return written
