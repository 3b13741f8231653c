"""Finding 1's unrelated-input control and detrended series on constructed histories.

Each new rule (``beats_unrelated_control_*``, ``trends_agree_detrended_*``, and the gate on
``trends_agree_*``) is shown to hold, to fail and to be untestable on histories built here;
effects are checked against an independent float64 CCC; no rule passes on a pinned control.
"""

import numpy as np
import pytest

from jaxmi.findings import finding1

LAYERS = ["conv1", "fc1", "fc2"]
ESTS = ("kde_upper", "binning")
CEIL_XT, CEIL_TY = float(np.log2(1000)), 3.3
NEW = ("beats_unrelated_control_nt", "beats_unrelated_control_at", "trends_agree_detrended_nt",
       "trends_agree_detrended_at")


def _ccc(a, b):
    """Lin's CCC from its textbook definition with population moments (independent of jaxmi)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sab = np.mean(a * b) - a.mean() * b.mean()
    return 2 * sab / (a.var() + b.var() + (a.mean() - b.mean()) ** 2)


def _hist(curves, rng, se=0.01, r=60, train_acc=0.9):
    """One regime's history from {inputs: [M, P] I_XT curves}; I_TY = curve / 3; resamples =
    curve + N(0, se) jitter; the same jitter for every input kind (paired resamples)."""
    m, p = np.shape(next(iter(curves.values())))
    jitter = rng.normal(0, se, (m, p, r))
    mi, mi_se, boot = {}, {}, {}
    for est in ESTS:
        mi[est], mi_se[est], boot[est] = {}, {}, {}
        for inputs, c in curves.items():
            q = {"I_XT": np.asarray(c, float), "I_TY": np.asarray(c, float) / 3}
            mi[est][inputs] = {k: v.tolist() for k, v in q.items()}
            mi_se[est][inputs] = {k: np.full_like(v, se).tolist() for k, v in q.items()}
            boot[est][inputs] = {k: (v[..., None] + jitter + rng.normal(0, se / 4, jitter.shape)).tolist()
                                 for k, v in q.items()}
    metrics = {k: [0.5] * m for k in ("train_loss", "test_clean_loss", "test_adv_loss", "test_adv_acc",
                                      "test_clean_acc")}
    return {**metrics, "train_acc": [train_acc] * m, "mi": mi, "mi_se": mi_se, "mi_boot": boot}


def _summary(make, m=12, seed=0):
    rng = np.random.default_rng(seed)
    run = {"layers": LAYERS, "epochs_measured": list(range(m)), "num_classes": 10,
           "saturation": {"I_XT_ceiling": CEIL_XT, "I_TY_ceiling": CEIL_TY}}
    for regime in ("nt", "at"):
        run[regime] = _hist(make(rng, m), rng)
    return {"run": run}


def _walk(rng, m, start=3.0, step=0.3):
    return start + np.cumsum(rng.normal(0, step, (m, len(LAYERS))), axis=0)


def _expected(summary, regime, fn):
    """Mean over every series of fn(curves from epoch 1) computed here from the point curves."""
    h = summary["run"][regime]
    vals = []
    for est in ESTS:
        for q in ("I_XT", "I_TY"):
            cur = {i: np.asarray(h["mi"][est][i][q])[1:] for i in h["mi"][est]}
            vals += [fn({i: c[:, j] for i, c in cur.items()}) for j in range(len(LAYERS))]
    return float(np.mean(vals))


def test_adversarial_agreement_beyond_an_unrelated_control_holds():
    def make(rng, m):
        c = _walk(rng, m)
        return {"clean": c, "adv": c + rng.normal(0, 0.01, c.shape), "noise": c + rng.normal(0, 0.01, c.shape),
                "unrelated": _walk(rng, m)}  # moves, but on its own
    s = _summary(make)
    v, e = finding1.decide(s)
    assert all(v[n]["holds"] is True for n in v), {n: (r["holds"], r["ci95"], r.get("reason")) for n, r in v.items()}
    want = _expected(s, "nt", lambda c: _ccc(np.diff(c["clean"]), np.diff(c["adv"]))
                     - _ccc(np.diff(c["clean"]), np.diff(c["unrelated"])))
    assert v["beats_unrelated_control_nt"]["effect"] == pytest.approx(want, abs=1e-9)
    want = _expected(s, "at", lambda c: _ccc(np.diff(c["clean"] / c["unrelated"]),
                                             np.diff(c["adv"] / c["unrelated"])))
    assert v["trends_agree_detrended_at"]["effect"] == pytest.approx(want, abs=1e-9)
    assert v["trends_agree_nt"]["ccc_interval_above_null"] is True
    assert e["nt"]["per_seed"][0]["unrelated_can_move"] == 12 and e["nt"]["per_seed"][0]["unrelated_flat"] == 0
    want = _expected(s, "nt", lambda c: _ccc(np.diff(c["clean"]), np.diff(c["unrelated"])))
    assert e["nt"]["mean_ccc_per_seed"][0]["ccc_clean_unrelated"] == pytest.approx(want, abs=1e-9)
    table = finding1.verdict_table({"verdicts": v, "evidence": e})
    assert f"mean CCC with the unrelated input {want:+.3f} over 12 series" in table
    assert set(v["trends_agree"]["parts"]) >= set(NEW)


def test_an_unrelated_curve_that_moves_like_the_clean_one_fails_the_control_and_the_agreement():
    def make(rng, m):  # the "every curve moves together" explanation: the unrelated curve follows clean exactly
        c = _walk(rng, m)
        return {"clean": c, "adv": c + rng.normal(0, 0.05, c.shape), "noise": c, "unrelated": c + 0.5}
    v, e = finding1.decide(_summary(make))
    for regime in ("nt", "at"):
        assert v[f"beats_unrelated_control_{regime}"]["holds"] is False
        assert v[f"beats_unrelated_control_{regime}"]["effect"] < 0
        # a high CCC alone no longer makes the trends agree
        t = v[f"trends_agree_{regime}"]
        assert t["ccc_interval_above_null"] is True and t["holds"] is False and t["effect"] > 0.9
    assert v["trends_agree"]["holds"] is False
    assert all(s["ccc_clean_unrelated"] == pytest.approx(1.0) for s in e["nt"]["series"])


def test_detrended_agreement_fails_when_only_the_common_drift_is_shared():
    def make(rng, m):  # clean and adversarial = one drift × independent factors
        u = _walk(rng, m, start=4.0, step=0.4)
        w1, w2 = (1 + np.cumsum(rng.normal(0, 0.05, u.shape), axis=0) for _ in range(2))
        return {"clean": u * w1, "adv": u * w2, "noise": u * w1, "unrelated": u}
    v, _ = finding1.decide(_summary(make))
    for regime in ("nt", "at"):
        r = v[f"trends_agree_detrended_{regime}"]
        assert r["holds"] is False and r["effect"] < 0.5
    assert v["trends_agree"]["holds"] is False


def test_a_purely_multiplicative_drift_is_not_a_pass():
    """Every curve = g_e × a level: the CCC penalises the unrelated curve's different size of
    change, so beats_unrelated may hold; the detrended series are flat, hence untestable,
    and the combined verdict does not pass."""
    def make(rng, m):
        g = np.cumprod(1 + np.abs(rng.normal(0.05, 0.03, (m, 1))), axis=0) * np.ones((1, len(LAYERS)))
        return {"clean": 2.0 * g, "adv": 2.0 * g, "noise": 2.0 * g, "unrelated": 1.0 * g}
    v, e = finding1.decide(_summary(make))
    assert v["trends_agree_detrended_nt"]["holds"] is None
    assert "after detrending" in v["trends_agree_detrended_nt"]["reason"]
    assert e["nt"]["per_seed"][0]["detrended_informative"] == 0
    assert v["trends_agree"]["holds"] is not True


@pytest.mark.parametrize("level", [CEIL_XT - 0.001, 0.002])
def test_a_control_pinned_at_the_ceiling_or_at_zero_cannot_pass(level):
    def make(rng, m):
        c = _walk(rng, m)
        u = np.full_like(c, level)
        return {"clean": c, "adv": c, "noise": c, "unrelated": u}
    v, e = finding1.decide(_summary(make))
    for name in NEW:
        assert v[name]["holds"] is None, name
    assert "could not move" in v["beats_unrelated_control_nt"]["reason"]
    # the CCC part alone would hold; the gate makes the agreement untestable, not a pass
    t = v["trends_agree_nt"]
    assert t["ccc_interval_above_null"] is True and t["holds"] is None and "beats_unrelated" in t["reason"]
    assert v["trends_agree"]["holds"] is None
    assert e["nt"]["per_seed"][0]["unrelated_can_move"] == 0


def test_a_free_but_flat_unrelated_curve_counts_with_a_ccc_of_zero():
    def make(rng, m):
        c = _walk(rng, m)
        return {"clean": c, "adv": c, "noise": c, "unrelated": np.full_like(c, 2.0)}
    v, e = finding1.decide(_summary(make))
    assert all(s["ccc_clean_unrelated"] == 0.0 and s["unrelated_flat"] for s in e["at"]["series"])
    assert e["at"]["per_seed"][0]["unrelated_flat"] == 12
    assert v["beats_unrelated_control_at"]["holds"] is True
    assert v["beats_unrelated_control_at"]["effect"] == pytest.approx(1.0)


def test_a_summary_without_the_unrelated_control_is_read_and_says_so():
    def make(rng, m):
        c = _walk(rng, m)
        return {"clean": c, "adv": c + rng.normal(0, 0.01, c.shape), "noise": c + rng.normal(0, 0.01, c.shape)}
    v, _ = finding1.decide(_summary(make))
    for name in NEW:
        assert v[name]["holds"] is None and "unrelated-input control is absent" in v[name]["reason"], name
    assert v["adv_not_below_noise_nt"]["holds"] is True  # the older verdicts are still decided
    assert v["trends_agree_nt"]["holds"] is None and v["trends_agree_nt"]["ccc_interval_above_null"] is True
    assert v["trends_agree"]["holds"] is None


def test_series_an_estimator_does_not_report_are_skipped():
    def make(rng, m):
        c = _walk(rng, m)
        return {"clean": c, "adv": c + rng.normal(0, 0.01, c.shape), "noise": c, "unrelated": _walk(rng, m)}
    s = _summary(make)
    for regime in ("nt", "at"):  # an estimator without an I(X;T): null values, null resamples
        h = s["run"][regime]
        knn = {i: {"I_XT": [[None] * len(LAYERS)] * 12, "I_TY": blk["I_TY"]} for i, blk in h["mi"]["binning"].items()}
        h["mi"]["knn"] = knn
        h["mi_se"]["knn"] = {i: {"I_XT": knn[i]["I_XT"], "I_TY": b["I_TY"]} for i, b in h["mi_se"]["binning"].items()}
        h["mi_boot"]["knn"] = {i: {"I_XT": None, "I_TY": b["I_TY"]} for i, b in h["mi_boot"]["binning"].items()}
    v, e = finding1.decide(s)
    keys = {(d["estimator"], d["quantity"]) for d in e["nt"]["series"]}
    assert ("knn", "I_TY") in keys and ("knn", "I_XT") not in keys
    assert e["nt"]["per_seed"][0]["series"] == 3 * len(LAYERS) * 2 - len(LAYERS)
    assert v["beats_unrelated_control_nt"]["holds"] is True


def test_the_forest_plot_has_a_row_for_every_new_verdict(monkeypatch, tmp_path):
    from jaxmi.plots import verdicts as plot_lib
    rows = []
    monkeypatch.setattr(plot_lib, "plot_effects", lambda r, path, title: rows.extend(r) or path)

    def make(rng, m):
        c = _walk(rng, m)
        return {"clean": c, "adv": c, "noise": c, "unrelated": _walk(rng, m)}
    v, e = finding1.decide(_summary(make))
    plot_lib.plot_verdicts({"finding": "1: trends", "verdicts": v, "evidence": e}, tmp_path)
    assert [label for label, _ in rows] == list(v) and set(NEW) <= set(v)
    assert all(r["effect"] is not None and r["ci95"] is not None for _, r in rows)
