"""Figures that show when MI estimates are saturated: σ² and bin-size sweeps, NT − AT differences.

At the paper's σ² = 0.1 and bin size 0.5 most probes of a trained CNN sit at the log₂ N
ceiling, so side-by-side bars of NT and AT all reach the same height. These figures show
the estimate as a function of the kernel variance (or bin size), where the two networks
separate, and the NT − AT difference per probe directly.
"""

from __future__ import annotations

from etils.epath import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from jaxmi.history import INPUTS
from jaxmi.plots.style import (INPUT_LABELS, INPUT_LINESTYLES, INPUT_MARKERS, QUANTITY_TEX, REGIME_COLORS,
                               REGIME_SHORT, estimator_label, estimators_present, figure_title, mi_values, regimes_present,
                               run_record, safe_name, save_figure, set_margins, suptitle)

__all__ = ["plot_noise_sweep", "plot_information_difference", "PAPER_NOISE_VAR", "PAPER_BIN_SIZE"]

PAPER_NOISE_VAR = 0.1
PAPER_BIN_SIZE = 0.5


def plot_noise_sweep(summary: dict, out_dir, *, quantity: str = "I_XT") -> list[Path]:
    """``sweep_{estimator}.png``: the estimate against σ² (KDE) or the bin size (binning).

    Rows are the probes, columns NT and AT; clean inputs solid, adversarial dashed; the
    first measured epoch light, the last dark. The paper's σ² = 0.1 (bin size 0.5) is the
    vertical line, the ceiling (log₂ N for I(X;T), Ĥ(Y) for I(T;Y)) the dotted horizontal one.
    Nothing is written when the summary's run has no ``"sweep"``.
    """
    run = summary["run"]
    sweep = run.get("sweep")
    if not sweep:
        return []
    out_dir = Path(out_dir)
    layers = list(run["layers"])
    regimes = [r for r in ("nt", "at") if r in sweep]
    ceiling = (run.get("saturation") or {}).get(f"{quantity}_ceiling")
    written = []
    for est in sweep["estimators"]:
        axis_key, paper = ("bin_size", PAPER_BIN_SIZE) if est == "binning" else ("noise_var", PAPER_NOISE_VAR)
        xs = np.asarray(sweep[axis_key], float)
        fig = Figure(figsize=(3.3 * len(regimes) + 1.0, 1.9 * len(layers) + 1.3))
        axes = fig.subplots(len(layers), len(regimes), sharex=True, sharey="row", squeeze=False)
        set_margins(fig, len(layers), len(regimes), left=0.95, right=0.15, top=0.6, bottom=1.05, wspace=0.15,
                    hspace=0.15)
        n_epochs = len(sweep["epochs"])
        for col, r in enumerate(regimes):
            for row, layer in enumerate(layers):
                ax = axes[row, col]
                for inputs in INPUTS:
                    values = sweep[r].get(inputs, {}).get(est, {}).get(quantity)
                    if values is None:
                        continue
                    for e in range(n_epochs):
                        alpha = 0.35 + 0.65 * (e + 1) / n_epochs
                        ax.plot(xs, np.asarray(values[e][row], float), ls=INPUT_LINESTYLES[inputs],
                                color=REGIME_COLORS[r], alpha=alpha, lw=1.3, marker=INPUT_MARKERS[inputs], ms=3)
                ax.axvline(paper, color="0.3", lw=0.8, ls=":")
                if ceiling is not None:
                    ax.axhline(ceiling, color="0.5", lw=0.8, ls=(0, (1, 2)))
                ax.set_xscale("log")
                ax.xaxis.set_minor_locator(NullLocator())  # decades only (minor ticks cost 60 % of the drawing)
                ax.grid(True, lw=0.3, alpha=0.5)
                if row == 0:
                    ax.set_title(REGIME_SHORT[r], color=REGIME_COLORS[r], y=1.0)
                if col == 0:
                    ax.set_ylabel(f"{layer}\n{QUANTITY_TEX[quantity]} (bits)")
                if row == len(layers) - 1:
                    ax.set_xlabel("bin size" if est == "binning" else r"kernel variance $\sigma^2$")
        handles = [Line2D([], [], ls=INPUT_LINESTYLES[i], color="0.3", marker=INPUT_MARKERS[i], ms=4,
                          label=INPUT_LABELS[i]) for i in INPUTS]
        handles += [Line2D([], [], color="0.3", alpha=a, lw=2, label=f"epoch {ep}")
                    for a, ep in zip((0.35 + 0.65 / n_epochs, 1.0), (sweep["epochs"][0], sweep["epochs"][-1]))]
        handles.append(Line2D([], [], color="0.3", ls=":", label="the paper's value"))
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        suptitle(fig, figure_title(f"{estimator_label(est)} against its scale", summary), fontsize=10)
        written.append(save_figure(fig, out_dir / f"sweep_{safe_name(est)}.png"))
    return written


def plot_information_difference(summary: dict, out_dir, *, quantity: str = "I_XT") -> list[Path]:
    """``difference_IXT.png``: NT − AT at the last measurement, per probe and estimator.

    One panel per estimator; clean inputs ``o``, adversarial ``+``; error bars ±1 sd across
    seeds (or bootstrap s.e.) when the summary has them, combined as √(sd_NT² + sd_AT²).
    Points above zero: NT's layer carries more.
    """
    run = run_record(summary, require_mi=True)
    if set(regimes_present(summary)) != {"nt", "at"}:
        return []
    out_dir = Path(out_dir)
    layers = list(run["layers"])
    ests = estimators_present(summary)
    fig = Figure(figsize=(3.2 * len(ests) + 0.8, 3.4))
    axes = fig.subplots(1, len(ests), sharey=True, squeeze=False)[0]
    set_margins(fig, 1, len(ests), left=0.85, right=0.3, top=0.6, bottom=0.75, wspace=0.25)
    x = np.arange(len(layers))
    for ax, est in zip(axes, ests):
        for k, inputs in enumerate(INPUTS):
            nt = mi_values(summary, "nt", est, inputs, quantity)
            at = mi_values(summary, "at", est, inputs, quantity)
            if nt is None or at is None:
                continue
            diff = nt[-1] - at[-1]
            err = None
            sd_nt = mi_values(summary, "nt", est, inputs, quantity, band=True)
            sd_at = mi_values(summary, "at", est, inputs, quantity, band=True)
            if sd_nt is not None and sd_at is not None:
                err = np.sqrt(np.nan_to_num(sd_nt[-1]) ** 2 + np.nan_to_num(sd_at[-1]) ** 2)
            ax.errorbar(x + (k - 0.5) * 0.18, diff, yerr=err, fmt=INPUT_MARKERS[inputs], ms=6, capsize=2,
                        color="0.15" if inputs == "clean" else "0.5", label=INPUT_LABELS[inputs])
        ax.axhline(0.0, color="0.4", lw=0.8)
        ax.set_xticks(x, layers, rotation=30)
        ax.set_title(estimator_label(est), y=1.0)
        ax.grid(True, axis="y", lw=0.3, alpha=0.5)
    axes[0].set_ylabel(f"{QUANTITY_TEX[quantity]}: NT − AT (bits)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False, fontsize=8)
            break
    suptitle(fig, figure_title("NT − AT at the last measurement", summary))
    name = "difference_IXT.png" if quantity == "I_XT" else "difference_ITY.png"
    return [save_figure(fig, out_dir / name)]
