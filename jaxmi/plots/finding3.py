"""Finding 3's figures: texture vs shape — accuracy and MI under distortions, the adversarial
confusion matrices, attribution maps and example images."""

from __future__ import annotations

from collections.abc import Mapping
from etils.epath import Path

import numpy as np
from matplotlib.figure import Figure

from jaxmi.history import INPUTS, QUANTITIES, REGIMES
from jaxmi.plots.style import (INPUT_LABELS, INPUT_LINESTYLES, INPUT_MARKERS, QUANTITY_TEX, REGIME_COLORS,
                               REGIME_SHORT, estimator_label, figure_title, save_figure)

__all__ = ["plot_distortion_accuracy", "plot_distortion_information", "plot_confusion", "plot_attribution_maps",
           "plot_image_grid"]

DISTORTION_LABELS = {"saturation": "saturation level p", "shuffle": "patch-shuffle grid k"}


def _line_style(regime: str, inputs: str, *, lw: float, markersize: float) -> dict:
    """Regime colour, inputs line style and marker (adversarial markers 3 pt larger), and a label."""
    return dict(ls=INPUT_LINESTYLES[inputs], marker=INPUT_MARKERS[inputs], color=REGIME_COLORS[regime],
                markersize=markersize if inputs == "clean" else markersize + 3, lw=lw,
                label=f"{REGIME_SHORT[regime]}, {INPUT_LABELS[inputs]}")


def _level_ticks(ax, levels) -> np.ndarray:
    """Puts the distortion levels on a categorical x axis; returns the positions."""
    xs = np.arange(len(levels))
    ax.set_xticks(xs, [f"{lv:g}" for lv in levels])
    return xs


def plot_distortion_accuracy(summary: dict, out_dir) -> list[Path]:
    """``distortion_accuracy.png``: accuracy (top) and retention (bottom) against the distortion level.

    Columns: saturation, patch shuffling (levels on a categorical axis). NT blue, AT
    vermilion; clean inputs solid with ``o``, adversarial inputs dashed with ``+``. Retention
    is the accuracy divided by the undistorted accuracy (p = 2, k ≤ 1); chance is dotted.
    """
    res = summary["results"]
    dist = res["distortion"]
    out_dir = Path(out_dir)
    distortions = [k for k in ("saturation", "shuffle") if k in dist[next(iter(dist))]]
    fig = Figure(figsize=(4.6 * len(distortions), 6.4), layout="constrained")
    axes = fig.subplots(2, len(distortions), squeeze=False)
    for j, distortion in enumerate(distortions):
        for r in REGIMES:
            if r not in dist:
                continue
            block = dist[r][distortion]
            levels = block["levels"]
            xs = np.arange(len(levels))
            ref_i = [i for i, lv in enumerate(levels) if (distortion == "saturation" and float(lv) == 2.0)
                     or (distortion == "shuffle" and int(lv) <= 1)]
            for inputs in INPUTS:
                acc = np.array(block[inputs]["accuracy"], dtype=float)
                style = _line_style(r, inputs, lw=1.5, markersize=5)
                axes[0, j].plot(xs, acc, **style)
                if ref_i and acc[ref_i[0]] > 0:
                    axes[1, j].plot(xs, acc / acc[ref_i[0]], **style)
            for ax in axes[:, j]:
                _level_ticks(ax, levels)
        axes[0, j].set_title(distortion, fontsize=11)
        axes[0, j].set_ylabel("accuracy")
        axes[0, j].set_ylim(-0.02, 1.02)
        axes[1, j].set_ylabel("retention (acc / undistorted acc)")
        axes[1, j].set_xlabel(DISTORTION_LABELS.get(distortion, distortion))
        for ax in axes[:, j]:
            ax.grid(True, lw=0.3, alpha=0.5)
    chance = 1.0 / res["num_classes"] if res.get("num_classes") else None
    if chance:
        for ax in axes[0]:
            ax.axhline(chance, color="0.5", lw=0.8, ls=":")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle(figure_title("Accuracy under texture-removing and shape-destroying distortions", summary))
    return [save_figure(fig, out_dir / "distortion_accuracy.png")]


def plot_distortion_information(summary: dict, out_dir) -> list[Path]:
    """``distortion_mi_{distortion}.png``: I(X;T) and I(T;Y) (rows) of every probe (columns)
    against the distortion level, NT and AT, clean and adversarial inputs."""
    res = summary["results"]
    dist = res["distortion"]
    out_dir = Path(out_dir)
    layers = list(res["layers"])
    written = []
    est = estimator_label(res.get("estimator", ""))
    for distortion in ("saturation", "shuffle"):
        fig = Figure(figsize=(2.6 * len(layers) + 0.8, 5.2), layout="constrained")
        axes = fig.subplots(2, len(layers), squeeze=False, sharex=True)
        for i, q in enumerate(QUANTITIES):
            for j, layer in enumerate(layers):
                ax = axes[i, j]
                for r in REGIMES:
                    if r not in dist or distortion not in dist[r]:
                        continue
                    block = dist[r][distortion]
                    xs = np.arange(len(block["levels"]))
                    for inputs in INPUTS:
                        v = np.array([row[j] for row in block[inputs][q]], dtype=float)
                        ax.plot(xs, v, **_line_style(r, inputs, lw=1.3, markersize=4))
                    _level_ticks(ax, block["levels"])
                ax.grid(True, lw=0.3, alpha=0.5)
                if i == 0:
                    ax.set_title(layer, fontsize=11)
                if i == 1:
                    ax.set_xlabel(DISTORTION_LABELS[distortion])
                if j == 0:
                    ax.set_ylabel(f"{QUANTITY_TEX[q]} (bits)")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=4, frameon=False)
        fig.suptitle(figure_title(f"MI under {distortion} — {est}", summary))
        written.append(save_figure(fig, out_dir / f"distortion_mi_{distortion}.png"))
    return written


def plot_confusion(confusions: Mapping[str, Mapping], out_dir, *, class_names=None, title: str = "") -> list[Path]:
    """``adversarial_confusion.png``: row-normalised true → predicted matrices, one panel per regime.

    ``confusions[regime]`` holds ``counts`` and ``mean_confidence`` (K × K lists); each cell
    holding at least 5 % of its row shows that share and, below it, the mean confidence.
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
    """A grid of images at ``path``: one column per entry of ``columns`` ({title: [B, H, W, C]
    in [0, 1]}), one row per image."""
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
