"""Finding 1's figure: do the clean and adversarial MI curves follow the same trend?"""

from __future__ import annotations

from collections.abc import Mapping
from etils.epath import Path

from matplotlib.figure import Figure

from jaxmi.history import QUANTITIES
from jaxmi.plots.style import (QUANTITY_TEX, REGIME_COLORS, REGIME_SHORT, clean_adv_legend, draw_clean_adv_curves,
                               epoch_axis, estimator_label, estimators_present, figure_title, label_epoch_panel,
                               mark_no_data, regimes_present, run_record, safe_name, save_figure, set_margins,
                               suptitle)

__all__ = ["plot_trend_agreement"]


def _agreement_text(ax, s: Mapping) -> None:
    """The series' concordance of changes with the adversarial, the noise and the unrelated-input
    curve, and of the detrended changes (or why it is not informative), in the panel's corner;
    grey when the series does not count."""
    if s.get("saturated"):
        text = "saturated"
    elif not s.get("informative"):
        text = "within noise"
    else:
        ca, cn, cu = s.get("ccc_clean_adv"), s.get("ccc_clean_noise"), s.get("ccc_clean_unrelated")
        text = f"CCC adv {'n/a' if ca is None else f'{ca:.2f}'}"
        if cn is not None:
            text += f"\nCCC noise {cn:.2f}"
        if cu is not None:
            text += f"\nCCC unrelated {cu:.2f}" + ("" if s.get("unrelated_can_move") else " (pinned)")
        d = s.get("detrended") or {}
        if d.get("informative") and d.get("ccc_clean_adv") is not None:
            text += f"\nCCC detrended {d['ccc_clean_adv']:.2f}"
    ax.text(0.03, 0.04, text, transform=ax.transAxes, fontsize=7, va="bottom", ha="left",
            color="0.15" if s.get("informative") else "0.55",
            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.7))


def plot_trend_agreement(summary: dict, out_dir) -> list[Path]:
    """``trend_agreement_{estimator}.png``: clean and adversarial MI over epochs, per probe.

    Rows: NT I(X;T), NT I(T;Y), AT I(X;T), AT I(T;Y); columns: probes. Each panel draws the
    clean (solid, ``o``) and adversarial (dashed, ``+``) curve and, when
    ``summary["evidence"][regime]["series"]`` holds finding 1's numbers, the concordance of
    the epoch-to-epoch changes with the adversarial and the noise-control curve (or
    "saturated" / "within noise" for a series that does not count) in the corner.
    """
    run = run_record(summary, require_mi=True)
    out_dir = Path(out_dir)
    layers = list(run["layers"])
    epochs = epoch_axis(summary)
    evidence = summary.get("evidence") or {}
    series = {(r, d["estimator"], d["quantity"], d["probe"]): d for r in regimes_present(summary)
              for d in (evidence.get(r) or {}).get("series", [])}
    rows = [(r, q) for r in regimes_present(summary) for q in QUANTITIES]
    written = []
    for est in estimators_present(summary):
        fig = Figure(figsize=(2.6 * len(layers) + 0.8, 2.1 * len(rows) + 1.2))
        axes = fig.subplots(len(rows), len(layers), sharex=True, squeeze=False)
        set_margins(fig, len(rows), len(layers), left=0.9, right=0.15, top=0.75, bottom=0.85, wspace=0.5,
                    hspace=0.3)
        for i, (r, q) in enumerate(rows):
            color = REGIME_COLORS[r]
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                if not draw_clean_adv_curves(ax, summary, r, est, q, j, epochs, color, size=0.85):
                    mark_no_data(ax)
                s = series.get((r, est, q, layer))
                if s:
                    _agreement_text(ax, s)
                label_epoch_panel(ax, i, j, len(rows), layer, f"{REGIME_SHORT[r]} {QUANTITY_TEX[q]}\n(bits)", color)
        fig.legend(handles=clean_adv_legend(1.3), loc="outside lower center", ncols=2, frameon=False)
        suptitle(fig, figure_title(f"Clean vs adversarial MI over training — {estimator_label(est)}\n"
                                  "(CCC: concordance of epoch-to-epoch changes from epoch 1)", summary), fontsize=10)
        written.append(save_figure(fig, out_dir / f"trend_agreement_{safe_name(est)}.png"))
    return written
