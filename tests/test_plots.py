"""Tests for jaxmi.plots: files written, valid PNGs, atomic saving, validation errors."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from jaxmi import plots
from jaxmi.history import METRICS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAYERS = ["conv1", "conv2", "fc1"]
ESTIMATORS = ["kde_upper", "binning"]
EPOCHS = [0, 1, 2]


def _mi_block(rng, m, p, shift):
    out = {}
    for est in ESTIMATORS:
        out[est] = {}
        for kind, dx in (("clean", 0.0), ("adv", -0.5)):
            ixt = np.clip(9.0 - shift - np.arange(p)[None, :] - 0.3 * np.arange(m)[:, None] + dx
                          + 0.05 * rng.standard_normal((m, p)), 0, None)
            ity = np.clip(1.0 + 0.7 * np.arange(m)[:, None] + 0.1 * np.arange(p)[None, :] + dx
                          + 0.05 * rng.standard_normal((m, p)), 0, math.log2(10))
            out[est][kind] = {"I_XT": ixt.tolist(), "I_TY": ity.tolist()}
    return out


def make_summary(with_se: bool = False) -> dict:
    rng = np.random.default_rng(0)
    m, p = len(EPOCHS), len(LAYERS)
    run = {"layers": list(LAYERS), "epochs_measured": list(EPOCHS)}
    summary = {
        "config": {"dataset": "mnist", "model": "lenet5", "samples": 1000},
        "run": run,
        "verdicts": {"at_harder": True, "at_less_information": True},
        "evidence": {},
    }
    for regime, shift, acc in (("nt", 0.0, [0.1, 0.95, 0.98]), ("at", 1.5, [0.1, 0.85, 0.9])):
        res = {
            "train_acc": [float("nan")] + acc[1:],  # no train metrics before training
            "train_loss": [None, 0.3, 0.1],
            "test_clean_acc": acc,
            "test_adv_acc": [0.0, 0.05 + 0.6 * (regime == "at"), 0.02 + 0.7 * (regime == "at")],
            "test_clean_loss": [2.3, 0.2, 0.1],
            "test_adv_loss": [5.0, 3.0, 2.5],
            "mi": _mi_block(rng, m, p, shift),
        }
        if with_se:
            se = _mi_block(rng, m, p, 0.0)
            for est in se.values():
                for kind in est.values():
                    for q in kind:
                        kind[q] = (0.05 * np.ones((m, p))).tolist()
            res["mi_se"] = se
        run[regime] = res
    # A NaN MI point must be skipped, not crash.
    run["at"]["mi"]["binning"]["adv"]["I_XT"][1][2] = float("nan")
    return summary


def _check_pngs(paths, out_dir, expected_names):
    assert sorted(p.name for p in paths) == sorted(expected_names)
    for path in paths:
        assert path.exists() and path.parent == out_dir
        with open(path, "rb") as fh:
            assert fh.read(8) == PNG_SIGNATURE
        img = imread(path)
        h, w = img.shape[:2]
        assert 300 <= h <= 6000 and 300 <= w <= 8000, (path.name, img.shape)
        assert img.std() > 0.01, f"{path.name} looks blank"
    # Nothing but the final figures: no temporaries left behind.
    assert sorted(os.listdir(out_dir)) == sorted(expected_names)


def test_information_planes(tmp_path):
    paths = plots.plot_information_planes(make_summary(), tmp_path)
    _check_pngs(paths, tmp_path, [f"info_plane_{e}.png" for e in ESTIMATORS])


def test_training_curves(tmp_path):
    paths = plots.plot_training_curves(make_summary(), tmp_path)
    _check_pngs(paths, tmp_path, ["training_curves.png"])


def test_final_information(tmp_path):
    paths = plots.plot_final_information(make_summary(), tmp_path)
    _check_pngs(paths, tmp_path, ["final_IXT.png"])


def test_trajectories(tmp_path):
    paths = plots.plot_mi_trajectories(make_summary(), tmp_path)
    _check_pngs(paths, tmp_path, [f"trajectories_I_XT_{e}.png" for e in ESTIMATORS])
    sub = tmp_path / "ity"
    paths = plots.plot_mi_trajectories(make_summary(), sub, quantity="I_TY")
    _check_pngs(paths, sub, [f"trajectories_I_TY_{e}.png" for e in ESTIMATORS])


def test_plot_all_with_standard_errors(tmp_path):
    paths = plots.plot_all(make_summary(with_se=True), tmp_path)
    expected = (
        ["training_curves.png", "final_IXT.png", "final_ITY.png", "difference_IXT.png"]
        + [f"info_plane_{e}.png" for e in ESTIMATORS]
        + [f"trajectories_{q}_{e}.png" for q in ("I_XT", "I_TY") for e in ESTIMATORS]
    )
    _check_pngs(paths, tmp_path, expected)


def test_only_one_regime_and_single_measurement(tmp_path):
    s = make_summary()
    run = s["run"]
    del run["at"]
    run["epochs_measured"] = [0]
    for key in METRICS:
        run["nt"][key] = run["nt"][key][:1]
    for est in run["nt"]["mi"].values():
        for kind in est.values():
            for q in kind:
                kind[q] = kind[q][:1]
    paths = plots.plot_all(s, tmp_path)
    assert all(p.exists() for p in paths) and len(paths) == 9


def test_save_figure_atomic_and_overwrites(tmp_path):
    fig = Figure(figsize=(4, 3))
    fig.add_subplot().plot([0, 1], [1, 0])
    target = tmp_path / "nested" / "fig.png"
    assert plots.save_figure(fig, target) == target
    first = target.read_bytes()
    assert first.startswith(PNG_SIGNATURE)
    assert imread(target).shape[:2] == (450, 600)  # 4x3 inches at dpi 150
    plots.save_figure(fig, target)  # overwriting works
    assert os.listdir(target.parent) == ["fig.png"]


def test_save_figure_failure_leaves_old_file_and_no_temp(tmp_path):
    fig = Figure()
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")

    class Boom(Exception):
        pass

    def explode(*args, **kwargs):
        raise Boom

    fig.savefig = explode
    with pytest.raises(Boom):
        plots.save_figure(fig, target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["fig.png"]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda s: s.pop("layers"), "layers"),
        (lambda s: s.pop("epochs_measured"), "epochs_measured"),
        (lambda s: s.update(layers=[]), "layers"),
        (lambda s: (s.pop("nt"), s.pop("at")), "'nt'"),
        (lambda s: s["nt"].update(test_clean_acc=[0.5, 0.6]), r"test_clean_acc.*expected 3"),
        (lambda s: s["at"]["mi"]["kde_upper"]["clean"].update(I_XT=[[1.0] * 3] * 2),
         r"\['at'\]\['mi'\]\['kde_upper'\]\['clean'\]\['I_XT'\].*\(3, 3\)"),
        (lambda s: s["nt"]["mi"]["binning"]["adv"].update(I_TY=[[1.0, 2.0]] * 3), r"I_TY.*shape"),
        (lambda s: s["nt"]["mi"]["binning"]["adv"].update(I_TY=[[1.0, 2.0], [1.0], [1.0, 2.0]]),
         r"I_TY.*rectangular"),
        (lambda s: s["nt"]["mi"]["binning"]["clean"].pop("I_XT"), r"I_XT.*missing"),
    ],
)
def test_bad_summary_raises(tmp_path, mutate, match):  # mutate: the summary's run record
    s = copy.deepcopy(make_summary())
    mutate(s["run"])
    for fn in (plots.plot_information_planes, plots.plot_training_curves,
               plots.plot_final_information, plots.plot_mi_trajectories, plots.plot_all):
        with pytest.raises(ValueError, match=match):
            fn(s, tmp_path)
    assert os.listdir(tmp_path) == []


def test_summary_without_a_run_record_raises(tmp_path):
    for s in ({"config": {}}, {"config": {}, "run": None}):
        with pytest.raises(ValueError, match="no 'run' record"):
            plots.plot_all(s, tmp_path)
    assert os.listdir(tmp_path) == []


def test_bad_quantity(tmp_path):
    with pytest.raises(ValueError, match="quantity"):
        plots.plot_mi_trajectories(make_summary(), tmp_path, quantity="I_XY")


def test_partially_missing_estimates_are_skipped(tmp_path):
    s = make_summary()
    run = s["run"]
    del run["at"]["mi"]["kde_upper"]  # estimator measured for NT only
    del run["nt"]["mi"]["binning"]["adv"]  # no adversarial estimate
    run["at"]["mi"]["binning"]["clean"]["I_XT"][-1][1] = None  # missing final value
    run["nt"]["test_adv_loss"] = [None, None, None]  # an all-missing curve
    paths = plots.plot_all(s, tmp_path)
    assert len(paths) == 10 and all(p.read_bytes().startswith(PNG_SIGNATURE) for p in paths)


def test_sweep_and_ceiling_figures(tmp_path):
    """A summary with a sweep and ceilings: sweep figures per estimator, NT − AT differences."""
    s = make_summary()
    layers, grid = s["run"]["layers"], [0.01, 0.1, 1.0, 10.0]
    s["run"]["saturation"] = {"I_XT_ceiling": 6.0, "I_TY_ceiling": 3.3}
    curve = lambda shift: [[[6.0 - shift - j * 0.1 + v for v in (0.0, -0.5, -1.0, -2.0)] for j in range(len(layers))]
                           for _ in range(2)]  # noqa: E731
    s["run"]["sweep"] = {"noise_var": grid, "bin_size": grid, "estimators": list(ESTIMATORS), "epochs": [0, 2],
                  **{r: {i: {e: {"I_XT": curve(0.3 if r == "at" else 0.0), "I_TY": curve(3.0)} for e in ESTIMATORS}
                         for i in ("clean", "adv")} for r in ("nt", "at")}}
    paths = plots.plot_all(s, tmp_path)
    names = {p.name for p in paths}
    assert {f"sweep_{e}.png" for e in ESTIMATORS} <= names and "difference_IXT.png" in names
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in paths)
    del s["run"]["sweep"]
    assert not any(p.name.startswith("sweep_") for p in plots.plot_all(s, tmp_path / "b"))


def _layout_faults(fig) -> list[str]:
    """Texts outside the figure, axis labels or titles on another panel, a figure legend or the
    suptitle on a panel (the fixed margins of :func:`jaxmi.plots.style.set_margins`)."""
    fig.draw_without_rendering()
    renderer = fig._get_renderer()
    inside = fig.bbox.padded(1.0)
    faults = []

    def overlap(a, b):  # more than a pixel's touch
        return a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1

    parts = []
    for i, ax in enumerate(fig.axes):
        for name, artist in (("x axis", ax.xaxis), ("y axis", ax.yaxis), ("title", ax.title)):
            if artist.get_visible() and (name != "title" or artist.get_text()):
                box = artist.get_tightbbox(renderer) if name != "title" else artist.get_window_extent(renderer)
                if box is not None and box.width > 0:
                    parts.append((f"axes {i} {name}", i, box))
    for legend in fig.legends:
        parts.append(("figure legend", None, legend.get_window_extent(renderer)))
    if fig._suptitle is not None:
        parts.append(("suptitle", None, fig._suptitle.get_window_extent(renderer)))
    for label, owner, box in parts:
        if not (inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1):
            faults.append(f"{label} leaves the figure: {box.bounds}")
        for j, other in enumerate(fig.axes):
            if j != owner and overlap(box, other.bbox):
                faults.append(f"{label} overlaps the panel of axes {j}")
    return faults


def test_fixed_margins_keep_labels_inside_the_figure_and_off_other_panels(tmp_path, monkeypatch):
    """The grids drawn with fixed margins (no layout engine): every tick label, axis label,
    title, figure legend and suptitle inside the figure and off the other panels, also with
    tick labels of very small values (written as multiples of a power of ten)."""
    import jaxmi.plots.finding1 as f1
    import jaxmi.plots.finding2 as f2
    import jaxmi.plots.sweep as sw
    import jaxmi.plots.verdicts as vd

    figures = {}

    def keep(fig, path, **kwargs):  # laid out and measured below, not written (saving: the tests above)
        figures[os.path.basename(str(path))] = fig
        return path

    for module in (f1, f2, sw, vd):
        monkeypatch.setattr(module, "save_figure", keep)
    s = make_summary(with_se=True)
    for regime in ("nt", "at"):  # a probe whose estimates are tiny: long tick labels without the power of ten
        for kind in ("clean", "adv"):
            for q in ("I_XT", "I_TY"):
                values = s["run"][regime]["mi"]["binning"][kind][q]
                for row in values:
                    row[-1] = 1e-4 * (1.0 + 0.3 * len(values)) + 1.234e-5 * row[0]
    s["run"]["saturation"] = {"I_XT_ceiling": 10.0, "I_TY_ceiling": 3.3}
    grid = [0.01, 0.1, 1.0, 10.0]
    curve = [[[6.0 - j - v for v in range(4)] for j in range(len(LAYERS))] for _ in range(2)]
    s["run"]["sweep"] = {"noise_var": grid, "bin_size": grid, "estimators": list(ESTIMATORS), "epochs": [0, 2],
                         **{r: {i: {e: {"I_XT": curve, "I_TY": curve} for e in ESTIMATORS} for i in ("clean", "adv")}
                            for r in ("nt", "at")}}
    s["evidence"] = {"at_less_information": {"across_sweep": {
        e: {"grid": grid, "nt_minus_at_bits": [0.5, 0.0012, None, -0.3], "ci95": [[0.1, 0.9]] * 4,
            "informative_pairs": [3, 2, 0, 1]} for e in ESTIMATORS}}}
    plots.plot_all(s, tmp_path)
    plots.plot_trend_agreement(s, tmp_path)
    vd.plot_sweep_delta(s["evidence"]["at_less_information"]["across_sweep"], tmp_path / "nt_minus_at_sweep.png",
                        summary=s)
    names = {"training_curves.png", "final_IXT.png", "final_ITY.png", "difference_IXT.png", "nt_minus_at_sweep.png"}
    names |= {f"{kind}_{e}.png" for kind in ("info_plane", "sweep", "trajectories_I_XT", "trajectories_I_TY",
                                              "trend_agreement") for e in ESTIMATORS}
    assert names <= set(figures)
    faults = {name: f for name in sorted(names) if (f := _layout_faults(figures[name]))}
    assert not faults, faults
