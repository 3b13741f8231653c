"""Finding 4 decided on trained layers: the trained-only ρ records and the composite, on
constructed layers whose answer is known (hold, fail, untestable), against SciPy's Spearman ρ;
the pooled and synthetic-sweep records stay as checks that no longer decide the finding."""

import numpy as np
import pytest
from scipy import stats

from jaxmi.findings import finding4

ESTS = ("kde_upper", "kde_lower", "binning")
TRAINED = ("kde_ixt_tracks_spread_trained", "kde_ity_tracks_separation_trained", "binning_tracks_spread_trained")
CHECKS = ("sweeps_monotone", "kde_ixt_tracks_spread", "kde_ity_tracks_separation", "binning_tracks_spread")


def _geo(spread, separation):
    return {"spread_kde_upper": spread, "spread_kde_lower": spread / 4, "separation_kde_upper": separation,
            "separation_kde_lower": separation / 2, "spread_binning": spread, "log2_occupied_bins": 12.0}


def _controlled(n=9):
    """Synthetic sweeps whose estimates follow the geometry exactly (every check holds)."""
    out = []
    for sw in ("scale", "separation", "compactness", "width"):
        for x in np.logspace(-1, 2, n):
            y = float(np.log1p(x))
            out.append({"source": "controlled", "sweep": sw, "value": float(x), "geometry": _geo(x, x),
                        "mi": {e: {"I_XT": y, "I_TY": y / 4} for e in ESTS}})
    return out


def _trained(rng, follows: bool, probes=6):
    """Trained layers (NT/AT × clean/adv × probes): estimates that follow the geometry (plus an
    NT/AT offset), or that are unrelated to it."""
    out = []
    for mode in ("nt", "at"):
        for inputs in ("clean", "adv"):
            for p in range(probes):
                s, sep = float(np.exp(rng.normal(0, 1.0))), float(np.exp(rng.normal(0, 1.0)))
                if follows:
                    ixt = 2.0 * np.log(s) + 0.3 * (mode == "at") + rng.normal(0, 0.05)
                    ity = np.log1p(sep) + rng.normal(0, 0.01)
                else:
                    ixt, ity = rng.uniform(0.5, 2.0), rng.uniform(0.1, 0.5)
                out.append({"source": "trained", "mode": mode, "inputs": inputs, "probe": f"p{p}",
                            "geometry": _geo(s, sep),
                            "mi": {e: {"I_XT": float(ixt), "I_TY": float(ity)} for e in ESTS}})
    return out


def _spearman_mean(layers, items):
    return float(np.mean([stats.spearmanr([round(la["mi"][e][q], 3) for la in layers],
                                          [la["geometry"][g] for la in layers]).statistic for e, q, g in items]))


def test_trained_layers_that_follow_the_geometry_decide_the_finding():
    rng = np.random.default_rng(1)
    trained = _trained(rng, follows=True)
    v, _ = finding4.decide(_controlled() + trained, scale_check={"factors": [0.1, 10], "max_abs_diff_bits": 0.0})
    assert all(v[n]["holds"] is True for n in ("geometry_explains_trained", *TRAINED, "estimators_trace_geometry"))
    assert set(v["estimators_trace_geometry"]["parts"]) == {"geometry_explains_trained", *TRAINED}
    want = _spearman_mean(trained, [("kde_upper", "I_XT", "spread_kde_upper"),
                                    ("kde_lower", "I_XT", "spread_kde_lower")])
    assert v["kde_ixt_tracks_spread_trained"]["effect"] == pytest.approx(want, abs=1e-12)
    want = _spearman_mean(trained, [("binning", "I_XT", "spread_binning")])
    assert v["binning_tracks_spread_trained"]["effect"] == pytest.approx(want, abs=1e-12)
    assert all(v[n].get("role") == "check" for n in (*CHECKS, "scale_identity"))
    assert all("role" not in v[n] for n in TRAINED)
    assert list(v)[:5] == ["geometry_explains_trained", *TRAINED, "estimators_trace_geometry"]  # verdicts first


def test_synthetic_layers_cannot_carry_a_finding_the_trained_layers_do_not_show():
    rng = np.random.default_rng(2)
    v, _ = finding4.decide(_controlled() + _trained(rng, follows=False))
    assert v["kde_ixt_tracks_spread"]["holds"] is True  # the pooled check, inflated by the designed sweeps
    assert v["sweeps_monotone"]["holds"] is True
    for name in TRAINED:
        assert v[name]["holds"] is False, name
    assert v["estimators_trace_geometry"]["holds"] is False
    assert v["kde_ixt_tracks_spread_trained"]["effect"] < v["kde_ixt_tracks_spread"]["effect"] - 0.3


def test_without_trained_layers_the_finding_is_untestable_whatever_the_checks_say():
    v, _ = finding4.decide(_controlled())
    assert all(v[n]["holds"] is True for n in CHECKS)
    for name in ("geometry_explains_trained", *TRAINED, "estimators_trace_geometry"):
        assert v[name]["holds"] is None, name
    assert "fewer than 8 trained layers" in v["kde_ity_tracks_separation_trained"]["reason"]
    rng = np.random.default_rng(3)
    v, _ = finding4.decide(_controlled(), trained_reason="did not learn: NT 0.1")
    assert v["binning_tracks_spread_trained"]["reason"] == "did not learn: NT 0.1"
    # trained estimates all tied at a ceiling: no ρ, untestable rather than a pass
    tied = _trained(rng, follows=True)
    for la in tied:
        la["mi"] = {e: {"I_XT": 9.966, "I_TY": 3.3} for e in ESTS}
    v, _ = finding4.decide(_controlled() + tied)
    assert all(v[n]["holds"] is None for n in TRAINED) and v["estimators_trace_geometry"]["holds"] is None


def test_checks_are_labelled_in_the_table_and_survive_combining_seeds():
    from jaxmi import verdicts as V
    rng = np.random.default_rng(4)
    runs = [finding4.decide(_controlled() + _trained(rng, follows=True), seed=s)[0] for s in range(2)]
    combined = V.combine_seeds(runs)
    assert combined["sweeps_monotone"]["role"] == "check" and combined["kde_ixt_tracks_spread"]["role"] == "check"
    assert combined["estimators_trace_geometry"]["holds"] is True
    assert combined["kde_ixt_tracks_spread_trained"]["seeds"] == 2
    table = finding4.verdict_table({"verdicts": combined})
    assert "sweeps_monotone (check)" in table and "kde_ixt_tracks_spread_trained (check)" not in table


def test_the_forest_plot_lists_the_verdicts_then_the_labelled_checks(monkeypatch, tmp_path):
    from jaxmi.plots import verdicts as plot_lib
    rows = []
    monkeypatch.setattr(plot_lib, "plot_effects", lambda r, path, title: rows.extend(r) or path)
    v, e = finding4.decide(_controlled() + _trained(np.random.default_rng(5), follows=True))
    plot_lib.plot_verdicts({"finding": "4: geometry", "verdicts": v, "evidence": e}, tmp_path)
    labels = [label for label, _ in rows]
    assert labels[:5] == ["geometry_explains_trained", *TRAINED, "estimators_trace_geometry"]
    assert labels[5:] == [f"{n}\n(check)" for n in ("sweeps_monotone", *CHECKS[1:])]
