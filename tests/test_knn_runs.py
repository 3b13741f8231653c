"""The kNN estimator in runs: configuration, history and summary (I(X;T) null), seed means,
the saturation report, finding 1's series, finding 2's evidence, figures, and a finding-2
smoke run with ``--estimators kde_upper kde_lower binning knn`` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxmi.config import ESTIMATORS, make_config
from jaxmi.history import History, validate_summary
from jaxmi.result import RunResult
from jaxmi.results import to_jsonable

LAYERS = ["conv1", "conv2", "fc1"]


def test_config_accepts_knn_but_keeps_the_papers_default():
    assert make_config("smoke").mi.estimators == ESTIMATORS == ("kde_upper", "kde_lower", "binning")
    assert make_config("smoke", estimators=("kde_upper", "knn")).mi.estimators == ("kde_upper", "knn")
    with pytest.raises(ValueError, match=r"unknown estimator\(s\) \['knm'\].*'knn'"):
        make_config("smoke", estimators=("knm",))


def _measurement(rng, p=2, r=3):
    """What Measurer hands History.record for one measurement: {inputs: {est: {key: [per probe]}}}."""
    out = {}
    for inputs in ("clean", "adv"):
        kde = {"I_XT": list(rng.uniform(1, 5, p)), "I_TY": list(rng.uniform(0, 2, p)),
               "I_XT_se": [0.1] * p, "I_TY_se": [0.1] * p,
               "I_XT_resamples": [list(rng.uniform(1, 5, r)) for _ in range(p)],
               "I_TY_resamples": [list(rng.uniform(0, 2, r)) for _ in range(p)],
               "saturated": [False] * p, "I_XT_gap": [1.0] * p, "I_TY_gap": [1.0] * p}
        knn = {"I_XT": [None] * p, "I_TY": list(rng.uniform(0, 2, p)), "I_XT_se": [None] * p,
               "I_TY_se": [0.1] * p, "I_XT_resamples": [None] * p,
               "I_TY_resamples": [list(rng.uniform(0, 2, r)) for _ in range(p)],
               "saturated": [None] * p, "I_XT_gap": [None] * p, "I_TY_gap": [1.0] * p}
        out[inputs] = {"kde_upper": kde, "knn": knn}
    return out


@pytest.mark.parametrize("seeds", [1, 2])
def test_history_and_summary_store_null_i_xt(seeds):
    rng = np.random.default_rng(0)
    metrics = {k: 0.5 for k in ("train_acc", "train_loss", "test_clean_acc", "test_adv_acc", "test_clean_loss",
                                "test_adv_loss")}
    histories = []
    for _ in range(seeds):
        hs = {}
        for regime in ("nt", "at"):
            h = History.empty(("kde_upper", "knn"), with_se=True)
            for _ in range(2):
                h.record(metrics, _measurement(rng))
            hs[regime] = h
        histories.append(hs)
    res = RunResult(["a", "b"], [0, 1], 10, {}, list(range(seeds)), histories, {},
                    ceilings={"I_XT": 7.0, "I_TY": 3.3})
    s = json.loads(json.dumps(to_jsonable(res.summary_fields()), allow_nan=False))
    validate_summary(s, require_mi=True)
    nt = s["nt"]
    assert nt["mi"]["knn"]["clean"]["I_XT"] == [[None, None]] * 2
    assert all(v is not None for row in nt["mi"]["knn"]["clean"]["I_TY"] for v in row)
    assert nt["diagnostics"]["knn"]["clean"]["saturated"] == [[None, None]] * 2
    assert nt["diagnostics"]["kde_upper"]["clean"]["saturated"] == [[False, False]] * 2
    if seeds == 1:
        assert nt["mi_boot"]["knn"]["clean"]["I_XT"] == [[None, None]] * 2
        assert np.asarray(nt["mi_boot"]["knn"]["clean"]["I_TY"]).shape == (2, 2, 3)
    sat = s["saturation"]
    assert set(sat["by_estimator"]) == {"kde_upper"} and sat["final_estimates"] == 2 * 2 * 2  # regimes × inputs × P


def _summary(nt_ity, at_ity, m=6, r=40, boot=True, acc=0.9):
    """A finding-2-style summary with kde_upper and knn; knn's I(X;T) is null. ``nt_ity`` and
    ``at_ity`` give knn's clean I(T;Y) as functions of (epoch, probe); the adversarial and
    noise curves follow the clean one with a shift."""
    rng = np.random.default_rng(0)

    def block(fn):
        return np.array([[float(fn(t, j)) for j in range(len(LAYERS))] for t in range(m)])

    def hist(ity):
        mi, se, bt = {}, {}, {}
        grow = block(lambda t, j: 1 + j + 0.3 * t + 0.2 * math.sin(1.3 * t + j))
        curves = {i: {"I_XT": grow + s_, "I_TY": 0.5 * grow + s_} for i, s_ in (("clean", 0), ("adv", .1),
                                                                               ("noise", .1))}
        knn = {i: {"I_XT": None, "I_TY": block(ity) + s_} for i, s_ in (("clean", 0), ("adv", .1), ("noise", .1))}
        for est, q in (("kde_upper", curves), ("knn", knn)):
            mi[est] = {i: {k: (np.full((m, len(LAYERS)), None) if v is None else v).tolist() for k, v in d.items()}
                       for i, d in q.items()}
            se[est] = {i: {k: (np.full((m, len(LAYERS)), None) if v is None else np.full_like(v, 0.005)).tolist()
                           for k, v in d.items()} for i, d in q.items()}
            bt[est] = {i: {k: (np.full((m, len(LAYERS)), None) if v is None
                               else v[..., None] + rng.normal(0, 0.005, v.shape + (r,))).tolist()
                           for k, v in d.items()} for i, d in q.items()}
        h = {k: [0.5] * m for k in ("train_loss", "test_clean_acc", "test_adv_acc", "test_clean_loss",
                                    "test_adv_loss")}
        return {**h, "train_acc": [acc] * m, "mi": mi, "mi_se": se, **({"mi_boot": bt} if boot else {})}

    run = {"layers": LAYERS, "num_classes": 10, "saturation": {"I_XT_ceiling": 20.0, "I_TY_ceiling": 20.0},
           "epochs_measured": list(range(m)), "nt": hist(nt_ity), "at": hist(at_ity)}
    return {"finding": "2: ...", "config": {"dataset": "mnist", "model": "lenet", "samples": 100}, "options": {},
            "source": {"trained": True}, "run": run, "results": {}, "verdicts": {}, "evidence": {}, "figures": []}


def _curve(t, j):
    return 0.5 + 0.1 * j + 0.15 * t + 0.1 * math.cos(1.1 * t + j)


@pytest.mark.parametrize("shift,boot,acc,holds", [(0.3, True, 0.9, True), (-0.3, True, 0.9, False),
                                                  (0.3, False, 0.9, None), (0.3, True, 0.1, None)])
def test_finding2_evidence_has_the_knn_rows(shift, boot, acc, holds):
    from jaxmi.findings import finding2
    s = _summary(lambda t, j: _curve(t, j) + shift, _curve, boot=boot, acc=acc)
    verdicts, ev = finding2.decide(json.loads(json.dumps(s)))
    knn = ev["at_less_information"]["knn_I_TY"]
    assert [r["probe"] for r in knn["probes"]] == LAYERS
    for j, row in enumerate(knn["probes"]):
        assert row["nt"] - row["at"] == pytest.approx(shift)
        assert row["at"] == pytest.approx(_curve(5, j))
        if acc > 0.5:
            assert row["record"]["effect"] == pytest.approx(shift) and row["record"]["holds"] is holds
        else:
            assert "record" not in row  # a network that did not learn: no records
    if acc > 0.5:
        assert knn["mean_over_probes"]["holds"] is holds
        assert knn["mean_over_probes"]["effect"] == pytest.approx(shift)
    # knn has no I(X;T): the pooled ΔI and its pairs are kde_upper's alone
    assert {p["estimator"] for p in ev["at_less_information"]["pairs"]} == {"kde_upper"}
    if acc > 0.5:
        assert verdicts["at_less_information"]["effect"] == pytest.approx(0.0, abs=1e-12)
    no_knn = json.loads(json.dumps(s))
    for r in ("nt", "at"):
        for block in ("mi", "mi_se", "mi_boot"):
            no_knn["run"][r].get(block, {}).pop("knn", None)
    assert finding2.decide(no_knn)[1]["at_less_information"]["knn_I_TY"] is None


def test_finding1_counts_knn_i_ty_series_only():
    from jaxmi.findings import finding1
    s = _summary(_curve, _curve)
    verdicts, ev = finding1.decide(json.loads(json.dumps(s)))
    keys = {(d["estimator"], d["quantity"]) for d in ev["nt"]["series"]}
    assert keys == {("kde_upper", "I_XT"), ("kde_upper", "I_TY"), ("knn", "I_TY")}
    knn = [d for d in ev["nt"]["series"] if d["estimator"] == "knn"]
    assert all(d["informative"] and d["ccc_clean_adv"] == pytest.approx(1.0) for d in knn)  # a level shift
    assert ev["nt"]["per_seed"][0]["series"] == 3 * len(LAYERS)
    # the CCC part holds; the verdict itself waits for the unrelated-input control, absent here
    assert verdicts["trends_agree_nt"]["ccc_interval_above_null"] is True
    assert verdicts["trends_agree"]["holds"] is None and "unrelated" in verdicts["trends_agree_nt"]["reason"]
    # the knn series count: anti-concordant knn adversarial curves pull the mean CCC down
    s2 = _summary(_curve, _curve)
    for r in ("nt", "at"):
        adv = np.asarray(s2["run"][r]["mi"]["knn"]["clean"]["I_TY"])
        s2["run"][r]["mi"]["knn"]["adv"]["I_TY"] = (2 * adv.mean(0) - adv).tolist()
    v2, e2 = finding1.decide(s2)
    knn2 = [d["ccc_clean_adv"] for d in e2["nt"]["series"] if d["estimator"] == "knn"]
    assert len(knn2) == len(LAYERS) and all(c < 0 for c in knn2)
    pooled = [d["ccc_clean_adv"] for d in e2["nt"]["series"] if d["informative"]]
    assert len(pooled) == 3 * len(LAYERS)
    assert v2["trends_agree_nt"]["effect"] == pytest.approx(float(np.mean(pooled)), abs=1e-9)
    assert v2["trends_agree_nt"]["effect"] < 0.7


def test_figures_skip_the_missing_i_xt(tmp_path):
    from jaxmi import plots
    s = _summary(_curve, _curve)
    names = {p.name for p in plots.plot_all(s, tmp_path)}
    assert "trajectories_I_TY_knn.png" in names and "info_plane_kde_upper.png" in names
    assert "info_plane_knn.png" not in names and "trajectories_I_XT_knn.png" not in names
    f1 = {p.name for p in plots.plot_trend_agreement(s, tmp_path)}
    assert "trend_agreement_knn.png" in f1


# The end-to-end run with --estimators … knn: tests/test_finding2.py::test_knn_end_to_end.
