"""Verdict records and the rules of the four findings on constructed inputs whose answer is known.

Each rule is shown to hold, to fail and to be untestable on summaries built here; no rule holds
on saturated-only input; the interval's statistics are checked against SciPy and closed forms,
and its coverage is measured on synthetic draws with the resampler the runs use.
"""

import numpy as np
import pytest
from scipy import stats

from jaxmi import verdicts as V
from jaxmi.estimators.bootstrap import bootstrap_weights
from jaxmi.findings import finding1, finding2, finding3, finding4

LAYERS = ["conv1", "fc1", "fc2"]
ESTS = ("kde_upper", "binning")
CEIL_XT, CEIL_TY = float(np.log2(1000)), 3.3


# ----------------------------------------------------------------------------- records


def test_interval_one_seed_is_effect_pm_z_sd_of_the_resamples():
    rng = np.random.default_rng(0)
    b = rng.normal(0.3, 0.1, size=500)
    effect, ci = V.interval([0.31], [b])
    half = stats.norm.ppf(0.975) * np.std(b, ddof=1)
    assert effect == 0.31 and ci == pytest.approx([0.31 - half, 0.31 + half])
    assert V.interval([0.31]) == (0.31, None)


def test_interval_k_seeds_adds_seed_and_draw_variance_with_t():
    e = [0.2, 0.5, 0.35]
    rng = np.random.default_rng(1)
    b = rng.normal(0, 0.05, size=(3, 400)) + np.asarray(e)[:, None]
    effect, ci = V.interval(e, b)
    a, v = np.var(e, ddof=1) / 3, np.var(b.mean(0), ddof=1)
    half = np.sqrt(stats.t.ppf(0.975, 2) ** 2 * a + stats.norm.ppf(0.975) ** 2 * v)
    assert effect == pytest.approx(np.mean(e)) and ci == pytest.approx([effect - half, effect + half])
    # no resamples: the seed t interval with K − 1 degrees of freedom
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(e), scale=stats.sem(e))
    assert V.interval(e)[1] == pytest.approx([lo, hi])


@pytest.mark.parametrize("boots,direction,null,want", [
    ([0.5, 0.52, 0.48, 0.51, 0.49], "greater", 0.0, True),   # far above 0
    ([0.5, -0.9, 1.6, 0.1, 1.2], "greater", 0.0, False),     # interval straddles 0
    ([-0.5, -0.52, -0.48, -0.51, -0.49], "less", 0.0, True),
    ([0.5, 0.52, 0.48, 0.51, 0.49], "greater", 0.6, False),  # above 0 but not above the null 0.6
])
def test_record_holds_only_when_the_interval_excludes_the_null(boots, direction, null, want):
    r = V.record([float(np.mean(boots))], [boots], unit="u", rule="r", null_value=null, direction=direction)
    assert r["holds"] is want and r["seeds"] == 1 and len(r["resamples"][0]) == len(boots)


def test_record_without_interval_is_untestable_and_bounds_clip():
    r = V.record([0.4], None, unit="u", rule="r")
    assert r["holds"] is None and "no interval" in r["reason"]
    r = V.record([0.98], [[0.9, 1.0, 1.0, 0.95, 1.0]], unit="rho", rule="r", bounds=(-1, 1))
    assert r["ci95"][1] == 1.0 and r["holds"] is True


def test_all_of_fails_on_a_failure_and_is_untestable_on_a_missing_part():
    yes = V.record([1.0], [[0.99, 1.01, 1.0]], unit="u", rule="r")
    no = V.record([0.0], [[-0.5, 0.5, 0.1]], unit="u", rule="r")
    na = V.untestable("saturated", unit="u", rule="r", seeds=1)
    assert V.all_of({"a": yes, "b": yes}, rule="x")["holds"] is True
    assert V.all_of({"a": yes, "b": no}, rule="x")["holds"] is False
    assert V.all_of({"a": yes, "b": na}, rule="x")["holds"] is None
    assert V.all_of({"a": na, "b": no}, rule="x")["holds"] is False
    assert V.all_of({"a": yes, "b": no}, rule="x")["weakest"] == "b"
    assert V.all_of({"a": na, "b": no}, rule="x")["weakest"] == "b"  # the failing part decides
    assert V.all_of({"a": yes, "b": na}, rule="x")["effect"] is None


def test_combine_seeds_pools_effects_and_resamples():
    rng = np.random.default_rng(2)
    seeds = []
    for e in (0.3, 0.4, 0.35):
        b = (e + rng.normal(0, 0.02, 300)).tolist()
        seeds.append({"x": V.record([e], [b], unit="bits", rule="r"),
                      "y": V.untestable("saturated", unit="bits", rule="r", seeds=1)})
        seeds[-1]["both"] = V.all_of({"x": seeds[-1]["x"], "y": seeds[-1]["y"]}, rule="both")
    out = V.combine_seeds(seeds)
    want = V.interval([0.3, 0.4, 0.35], [s["x"]["resamples"][0] for s in seeds])
    assert out["x"]["seeds"] == 3 and out["x"]["effect"] == pytest.approx(want[0])
    assert out["x"]["ci95"] == pytest.approx(want[1]) and out["x"]["holds"] is True
    assert out["y"]["holds"] is None and "every seed" in out["y"]["reason"]
    assert out["both"]["holds"] is None and out["both"]["parts"] == ["x", "y"]


# ----------------------------------------------------------------------------- statistics


def test_ccc_matches_its_definition_and_kendall_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=20), rng.normal(size=20) * 2 + 1
    cov = np.mean((a - a.mean()) * (b - b.mean()))
    assert V.ccc(a, b) == pytest.approx(2 * cov / (a.var() + b.var() + (a.mean() - b.mean()) ** 2))
    assert V.ccc(a, a) == pytest.approx(1.0) and V.ccc(a, a + 1.0) < 1.0  # an offset is penalised
    assert V.ccc([1.0, 1.0], [1.0, 1.0]) is None and V.ccc([1.0], [2.0]) is None
    x = np.array([1, 2, 2, 3, 4, 5, 5, 6], float)
    y = np.array([2, 1, 3, 3, 5, 4, 6, 6], float)
    assert V.kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)  # τ_b with ties
    assert V.kendall_tau(x, np.ones(8)) is None


def test_permutation_p_is_small_for_monotone_and_large_for_reversed():
    x = np.arange(8.0)
    p = V.permutation_p(x, x ** 2, permutations=4000)
    assert p < 0.002  # exact: 1/8! ≈ 2.5e-5, Monte Carlo floor 1/4001
    assert V.permutation_p(x, -x, permutations=500) > 0.9


def test_bootstrap_interval_covers_a_known_paired_effect_at_its_nominal_rate():
    """Paired data with a known mean difference 0.2, resampled by the runs' own multiplicity
    vectors; the one-seed interval covers 0.2 in about 95 % of draws."""
    import jax

    rng = np.random.default_rng(4)
    n, trials, hits = 150, 300, 0
    for t in range(trials):
        common = rng.normal(size=n)
        nt = common + rng.normal(0.2, 1.0, n)
        at = common + rng.normal(0.0, 1.0, n)
        w = bootstrap_weights(jax.random.key(t), n, 200)  # [R, N] multiplicities
        boots = (w @ (nt - at)) / n
        _, ci = V.interval([float(np.mean(nt - at))], [boots])
        hits += ci[0] <= 0.2 <= ci[1]
    assert 0.91 <= hits / trials <= 0.985


def test_seed_interval_covers_a_known_effect_at_least_at_its_nominal_rate():
    rng = np.random.default_rng(5)
    trials, hits = 400, 0
    for _ in range(trials):
        e = 0.5 + rng.normal(0, 0.2, 3)  # seed-to-seed spread
        b = e[:, None] + rng.normal(0, 0.05, (3, 200))  # each seed's bootstrap
        _, ci = V.interval(e, b)
        hits += ci[0] <= 0.5 <= ci[1]
    assert 0.93 <= hits / trials <= 1.0


def test_seed_interval_with_a_shared_test_draw_is_near_nominal_and_no_wider_than_one_seed():
    """Three seeds that agree, measured on one shared test draw whose noise dominates: the
    interval covers the true effect at about its nominal rate (the K − 1 t quantile on the
    whole variance would cover it ~100 % of the time, ~2.2 times wider than one seed's)."""
    rng = np.random.default_rng(7)
    trials, hits, ratio = 400, 0, []
    for _ in range(trials):
        draw = rng.normal(0, 0.1)  # the shared test draw's error
        e = 0.5 + draw + rng.normal(0, 0.005, 3)
        b = e[:, None] + rng.normal(0, 0.1, 200)[None, :] + rng.normal(0, 0.005, (3, 200))  # shared resamples
        _, ci = V.interval(e, b)
        _, ci1 = V.interval(e[:1], b[:1])
        hits += ci[0] <= 0.5 <= ci[1]
        ratio.append((ci[1] - ci[0]) / (ci1[1] - ci1[0]))
    assert 0.91 <= hits / trials <= 0.985
    assert 0.9 < np.median(ratio) < 1.1


def test_combine_seeds_recombines_parts_carried_inside_a_composite():
    seeds = []
    for e in (0.8, 0.85, 0.9):
        parts = {"s1": V.record([e], [list(e + np.linspace(-0.02, 0.02, 40))], unit="tau", rule="r"),
                 "s2": V.record([e - 0.1], [list(e - 0.1 + np.linspace(-0.02, 0.02, 40))], unit="tau", rule="r")}
        seeds.append({"sweeps": V.all_of(parts, rule="all", keep_parts=True)})
    out = V.combine_seeds(seeds)["sweeps"]
    assert out["holds"] is True and out["weakest"] == "s2"
    assert out["effect"] == pytest.approx(np.mean([0.7, 0.75, 0.8])) and out["part_records"]["s1"]["seeds"] == 3


def test_combine_seeds_with_unequal_resample_counts():
    recs = [{"x": V.record([e], [list(e + np.linspace(-0.01, 0.01, r))], unit="u", rule="r")}
            for e, r in ((0.5, 50), (0.52, 48), (0.51, 49))]
    out = V.combine_seeds(recs)["x"]
    assert out["holds"] is True and out["seeds"] == 3 and [len(r) for r in out["resamples"]] == [50, 48, 49]


def test_did_not_learn():
    assert V.did_not_learn({"nt": 0.98, "at": 0.9}, 10) is None
    msg = V.did_not_learn({"nt": 0.095, "at": 0.9}, 10)
    assert "NT 0.0950" in msg and "untestable" in msg and "--eps-warmup" not in msg
    msg = V.did_not_learn({"nt": 0.6, "at": 0.0977}, 10)  # PGD-AT stuck at the constant prediction
    assert "AT 0.0977" in msg and "NT" not in msg.split(";")[0] and "--eps-warmup" in msg


# ----------------------------------------------------------------------------- finding 1


def _hist(curves, se, rng, train_acc=0.9, r=60):
    """One regime's history from {inputs: [M, P] I_XT curves} (I_TY = curve / 3)."""
    mi, mi_se, boot = {}, {}, {}
    for est in ESTS:
        mi[est], mi_se[est], boot[est] = {}, {}, {}
        for inputs, c in curves.items():
            c = np.asarray(c, float)
            q = {"I_XT": c, "I_TY": c / 3}
            mi[est][inputs] = {k: v.tolist() for k, v in q.items()}
            mi_se[est][inputs] = {k: np.full_like(v, se).tolist() for k, v in q.items()}
            boot[est][inputs] = {k: (v[..., None] + rng.normal(0, se, v.shape + (r,))).tolist() for k, v in q.items()}
    m = len(next(iter(curves.values())))
    metrics = {k: [0.5] * m for k in ("train_loss", "test_clean_loss", "test_adv_loss", "test_adv_acc")}
    acc = np.linspace(0.1, 0.95, m).tolist()
    return {**metrics, "train_acc": [0.1] * (m - 1) + [train_acc], "test_clean_acc": acc, "mi": mi, "mi_se": mi_se,
            "mi_boot": boot}


def _f1_summary(make, m=10, se=0.01, train_acc=0.9, seed=0):
    rng = np.random.default_rng(seed)
    out = {"layers": LAYERS, "epochs_measured": list(range(m)), "num_classes": 10,
           "saturation": {"I_XT_ceiling": CEIL_XT, "I_TY_ceiling": CEIL_TY}}
    for regime in ("nt", "at"):
        out[regime] = _hist(make(rng, m), se, rng, train_acc=train_acc)
    return {"run": out}


def _walk(rng, m, p=len(LAYERS), start=3.0, step=0.3):
    return start + np.cumsum(rng.normal(0, step, (m, p)), axis=0)


def test_f1_holds_when_adversarial_changes_follow_the_clean_ones():
    def make(rng, m):
        c = _walk(rng, m)
        return {"clean": c, "adv": c + rng.normal(0, 0.01, c.shape), "noise": c + rng.normal(0, 0.01, c.shape),
                "unrelated": _walk(rng, m)}  # an unrelated input whose curve moves on its own
    v, e = finding1.decide(_f1_summary(make))
    assert all(v[n]["holds"] is True for n in v), {n: (r["holds"], r["ci95"]) for n, r in v.items()}
    assert v["trends_agree_nt"]["effect"] > 0.95 and e["nt"]["per_seed"][0]["informative"] == 12


def test_f1_fails_when_adversarial_curves_move_independently():
    def make(rng, m):
        c = _walk(rng, m)
        return {"clean": c, "adv": _walk(rng, m), "noise": c}
    v, _ = finding1.decide(_f1_summary(make))
    assert v["trends_agree_nt"]["holds"] is False and v["trends_agree"]["holds"] is False
    assert v["adv_not_below_noise_at"]["holds"] is False  # noise agrees perfectly, adversarial does not


def test_f1_is_untestable_on_saturated_flat_short_or_unlearned_runs():
    def saturated(rng, m):
        c = np.full((m, len(LAYERS)), CEIL_XT - 0.002) + rng.normal(0, 0.001, (m, len(LAYERS)))
        return {"clean": c, "adv": c, "noise": c}
    v, e = finding1.decide(_f1_summary(saturated))
    assert all(r["holds"] is None for r in v.values()) and e["nt"]["per_seed"][0]["saturated"] >= 6
    # the noise control was run: the reason is the saturation, not a missing control
    assert "no informative series (all saturated" in v["adv_not_below_noise_nt"]["reason"]

    def flat(rng, m):  # ranges of ~0.01 bits under a bootstrap SE of 0.05: within noise
        c = 3.0 + rng.normal(0, 0.003, (m, len(LAYERS)))
        return {"clean": c, "adv": c, "noise": c}
    v, _ = finding1.decide(_f1_summary(flat, se=0.05))
    assert all(r["holds"] is None for r in v.values())

    def good(rng, m):
        c = _walk(rng, m)
        return {"clean": c, "adv": c, "noise": c}
    v, _ = finding1.decide(_f1_summary(good, m=3))  # epochs 0, 1, 2: one change from epoch 1
    assert all(r["holds"] is None for r in v.values()) and "changes" in v["trends_agree_nt"]["reason"]
    v, _ = finding1.decide(_f1_summary(good, train_acc=0.1))
    assert all(r["holds"] is None for r in v.values()) and "did not learn" in v["trends_agree_at"]["reason"]


def test_f1_uses_every_seed():
    def make(rng, m):
        c = _walk(rng, m)
        return {"clean": c, "adv": c + rng.normal(0, 0.02, c.shape), "noise": c + rng.normal(0, 0.02, c.shape)}
    seeds = [_f1_summary(make, seed=s) for s in range(3)]
    summary = {"run": {**seeds[0]["run"], "seeds": [{"seed": s, "nt": x["run"]["nt"], "at": x["run"]["at"]}
                                                    for s, x in enumerate(seeds)]}}
    v, _ = finding1.decide(summary)
    single = [finding1.decide(x)[0]["trends_agree_nt"]["effect"] for x in seeds]
    assert v["trends_agree_nt"]["seeds"] == 3
    assert v["trends_agree_nt"]["effect"] == pytest.approx(np.mean(single))


# ----------------------------------------------------------------------------- finding 2


def _f2_summary(nt_final, at_final, *, nt_by_epoch=None, train=(0.99, 0.7), n_train=60000, se=0.02):
    rng = np.random.default_rng(6)
    m = 4
    nt_curves = nt_by_epoch if nt_by_epoch is not None else np.tile(nt_final, (m, 1))
    out = {"layers": LAYERS, "epochs_measured": list(range(m)), "num_classes": 10,
           "data": {"train_examples": n_train}, "saturation": {"I_XT_ceiling": CEIL_XT, "I_TY_ceiling": CEIL_TY}}
    shared = rng.normal(0, se, (m, len(LAYERS), 60))  # the same resamples for NT and AT
    for regime, curves, acc in (("nt", nt_curves, train[0]), ("at", np.tile(at_final, (m, 1)), train[1])):
        h = _hist({"clean": curves, "adv": curves}, se, rng, train_acc=acc)
        for est in ESTS:
            h["mi_boot"][est]["clean"]["I_XT"] = (np.asarray(curves)[..., None] + shared
                                                  + rng.normal(0, 0.002, shared.shape)).tolist()
        out[regime] = h
    out["nt"]["test_clean_acc"] = [0.1, 0.5, 0.9, 0.97]
    out["at"]["test_clean_acc"] = [0.1, 0.3, 0.45, 0.52]
    return {"run": out}


def test_f2_holds_fails_and_is_untestable_on_known_differences():
    v, e = finding2.decide(_f2_summary([6.0, 5.0, 4.0], [5.5, 4.5, 3.5]))
    assert v["at_less_information"]["holds"] is True
    assert v["at_less_information"]["effect"] == pytest.approx(0.5)
    assert e["at_less_information"]["informative_pairs"] == 6
    assert v["at_harder"]["holds"] is True and v["at_harder"]["effect"] == pytest.approx(0.29)
    half = 1.96 * np.sqrt(0.99 * 0.01 / 60000 + 0.7 * 0.3 / 60000)
    assert v["at_harder"]["ci95"] == pytest.approx([0.29 - half, 0.29 + half])
    v, _ = finding2.decide(_f2_summary([5.5, 4.5, 3.5], [6.0, 5.0, 4.0]))
    assert v["at_less_information"]["holds"] is False
    top = CEIL_XT - 0.001
    v, _ = finding2.decide(_f2_summary([top] * 3, [top - 0.002] * 3))  # every pair at the ceiling
    assert v["at_less_information"]["holds"] is None and "saturated" in v["at_less_information"]["reason"]
    v, _ = finding2.decide(_f2_summary([6.0, 5.0, 4.0], [5.5, 4.5, 3.5], train=(0.11, 0.08)))
    assert all(r["holds"] is None for r in v.values())


def test_f2_matched_control_takes_nt_at_ats_accuracy():
    """AT ends at 0.52 clean accuracy; NT had 0.5 at epoch 1, when its I(X;T) was below AT's."""
    nt = np.array([[4, 3, 2], [4.5, 3.5, 2.5], [6, 5, 4], [6, 5, 4]], float)
    v, e = finding2.decide(_f2_summary(None, [5.5, 4.5, 3.5], nt_by_epoch=nt))
    assert e["at_less_information_matched"]["nt_epochs"] == [1]
    assert v["at_less_information"]["holds"] is True
    assert v["at_less_information_matched"]["effect"] == pytest.approx(-1.0)
    assert v["at_less_information_matched"]["holds"] is False


def test_f2_across_sweep_pools_unsaturated_pairs_with_the_seed_interval():
    """Three seeds' sweeps (3 probes x 3 sigma^2 values): ΔI is the seed mean of the pair means
    over the pairs saturated in no seed; its interval is SciPy's t interval over the seeds."""
    top = CEIL_XT - 0.001
    diffs = np.array([0.5, 0.7, 0.6])  # per-seed ΔI of every unsaturated pair
    seeds = []
    for d in diffs:
        at = np.array([[top, 3.0, 2.0], [top, top, 1.0], [top, 4.0, 3.0]])  # [P, S]; grid value 0 saturated
        nt = np.where(at >= top, top, at + d)
        sweep = {"epochs": [0, 3], "clean": {}}
        seeds.append({r: {"sweep": {**sweep, "clean": {est: {"I_XT": [v.tolist(), v.tolist()]} for est in ESTS}}}
                      for r, v in (("nt", nt), ("at", at))})
    s = _f2_summary([6.0, 5.0, 4.0], [5.5, 4.5, 3.5])
    run = s["run"]
    run["sweep"] = {"noise_var": [0.1, 1.0, 10.0], "bin_size": [0.5, 5.0, 50.0], "estimators": list(ESTS),
                    "nt": seeds[0]["nt"]["sweep"], "at": seeds[0]["at"]["sweep"]}
    run["seeds"] = [{"seed": i, "nt": {**run["nt"], **x["nt"]}, "at": {**run["at"], **x["at"]}}
                    for i, x in enumerate(seeds)]
    _, e = finding2.decide(s)
    got = e["at_less_information"]["across_sweep"]["kde_upper"]
    assert got["informative_pairs"] == [0, 2, 3] and got["nt_minus_at_bits"][0] is None and got["seeds"] == 3
    lo, hi = stats.t.interval(0.95, 2, loc=diffs.mean(), scale=stats.sem(diffs))
    for j in (1, 2):
        assert got["nt_minus_at_bits"][j] == pytest.approx(diffs.mean())
        assert got["ci95"][j] == pytest.approx([lo, hi])


# ----------------------------------------------------------------------------- finding 3


def _bits(acc, n, rng):
    c = np.zeros(n, bool)
    c[rng.choice(n, int(round(acc * n)), replace=False)] = True
    return np.packbits(c).tobytes().hex()


def _f3_summary(acc, n=2000):
    """acc[regime][kind] = accuracies per level (first = undistorted)."""
    rng = np.random.default_rng(7)
    levels = {"saturation": [2.0, 64.0, 1024.0], "shuffle": [0, 2, 4]}
    dist = {r: {k: {"levels": levels[k], "clean": {"accuracy": a, "correct_bits": [_bits(x, n, rng) for x in a]},
                    "adv": {"accuracy": [0.0] * 3}} for k, a in acc[r].items()} for r in acc}
    for r in dist:  # one undistorted measurement shared by both kinds
        dist[r]["shuffle"]["clean"]["correct_bits"][0] = dist[r]["saturation"]["clean"]["correct_bits"][0]
    pixel = {k: [0.0, 0.2, 0.3] for k in levels}  # every level changes the images (the no-op rule)
    return {"results": {"num_classes": 10, "data": {"images": n}, "distortion": dist, "adversarial_confusion": {},
                        "pixel_change": pixel}, "run": {r: {"train_acc": [0.95]} for r in acc}}


def _ret(a, a0):
    return (a - 0.1) / (a0 - 0.1)


def test_f3_interaction_holds_for_a_shape_preference_and_not_for_general_robustness():
    acc = {"nt": {"saturation": [0.9, 0.4, 0.3], "shuffle": [0.9, 0.7, 0.6]},
           "at": {"saturation": [0.8, 0.7, 0.6], "shuffle": [0.8, 0.4, 0.3]}}
    v, e = finding3.decide(_f3_summary(acc))
    d_sat = np.mean([_ret(0.7, 0.8) - _ret(0.4, 0.9), _ret(0.6, 0.8) - _ret(0.3, 0.9)])
    d_shuf = np.mean([_ret(0.4, 0.8) - _ret(0.7, 0.9), _ret(0.3, 0.8) - _ret(0.6, 0.9)])
    assert v["at_prefers_shape"]["effect"] == pytest.approx(d_sat, abs=1e-9)
    assert v["shape_texture_interaction"]["effect"] == pytest.approx(d_sat - d_shuf, abs=1e-9)
    assert all(v[n]["holds"] is True for n in ("at_prefers_shape", "nt_prefers_texture", "shape_texture_interaction"))
    # AT merely more robust to both distortions by the same margin: D ≈ 0 does not hold
    acc = {"nt": {"saturation": [0.9, 0.5, 0.4], "shuffle": [0.9, 0.5, 0.4]},
           "at": {"saturation": [0.8, 0.6, 0.5], "shuffle": [0.8, 0.6, 0.5]}}
    v, _ = finding3.decide(_f3_summary(acc))
    assert v["at_prefers_shape"]["holds"] is True and v["nt_prefers_texture"]["holds"] is False
    assert abs(v["shape_texture_interaction"]["effect"]) < 1e-9
    assert v["shape_texture_interaction"]["holds"] is False


def test_f3_levels_at_the_chance_floor_are_left_out_and_all_floor_is_untestable():
    acc = {"nt": {"saturation": [0.9, 0.4, 0.3], "shuffle": [0.9, 0.7, 0.12]},
           "at": {"saturation": [0.8, 0.7, 0.6], "shuffle": [0.8, 0.4, 0.11]}}
    v, e = finding3.decide(_f3_summary(acc))
    assert {k: e["levels_shuffle"][k] for k in ("used", "skipped_at_floor", "untestable")} == {
        "used": [2], "skipped_at_floor": [4], "untestable": []}
    acc["nt"]["shuffle"] = [0.9, 0.11, 0.1]
    v, _ = finding3.decide(_f3_summary(acc))
    assert v["nt_prefers_texture"]["holds"] is None and v["shape_texture_interaction"]["holds"] is None
    assert v["at_prefers_shape"]["holds"] is True


# ----------------------------------------------------------------------------- finding 4


def _layers(sweep_values, estimates, geometry_fn):
    out = []
    for sw in ("scale", "separation", "compactness", "width"):
        for x, y in zip(sweep_values, estimates):
            mi = {est: {"I_XT": y, "I_TY": y / 4} for est in ("kde_upper", "kde_lower", "binning")}
            out.append({"source": "controlled", "sweep": sw, "value": x, "mi": mi, "geometry": geometry_fn(x)})
    return out


def _geo(x):
    return {"spread_kde_upper": x, "spread_kde_lower": x / 4, "separation_kde_upper": x, "separation_kde_lower": x,
            "spread_binning": x, "log2_occupied_bins": 1.0}


def test_f4_monotone_sweeps_hold_and_saturated_ones_are_untestable():
    xs = np.logspace(-1, 2, 9)
    v, e = finding4.decide(_layers(xs, np.log1p(xs), _geo), scale_check={"factors": [0.1, 10], "max_abs_diff_bits": 0.0})
    assert v["sweeps_monotone"]["holds"] is True and v["scale_identity"]["holds"] is True
    assert v["kde_ixt_tracks_spread"]["holds"] is True and v["kde_ixt_tracks_spread"]["effect"] == pytest.approx(1.0)
    assert e["sweeps"]["scale:kde_upper:I_XT"]["permutation_p"] < 0.01
    assert v["geometry_explains_trained"]["holds"] is None  # no trained layers
    v, _ = finding4.decide(_layers(xs, np.full(9, 9.966), _geo))  # every estimate at the ceiling
    assert v["sweeps_monotone"]["holds"] is None and v["kde_ixt_tracks_spread"]["holds"] is None
    assert v["estimators_trace_geometry"]["holds"] is None
    v, _ = finding4.decide(_layers(xs, -np.log1p(xs), _geo))  # the wrong direction
    assert v["sweeps_monotone"]["holds"] is False and v["kde_ixt_tracks_spread"]["holds"] is False
    v, _ = finding4.decide(_layers(xs, np.log1p(xs), _geo), scale_check={"factors": [10], "max_abs_diff_bits": 0.02})
    assert v["scale_identity"]["holds"] is False


def test_f4_scale_identity_of_the_real_estimator():
    rng = np.random.default_rng(8)
    t = rng.normal(size=(300, 6)).astype(np.float32)
    got = finding4.scale_identity(t, np.arange(300) % 3, 3, 0.1)
    assert got["max_abs_diff_bits"] < 1e-3


def test_f4_geometry_beyond_indicators_on_trained_layers():
    rng = np.random.default_rng(9)
    layers = []
    for mode in ("nt", "at"):
        for inputs in ("clean", "adv"):
            for p in range(6):
                s = float(np.exp(rng.normal()))
                y = 2.0 * np.log(s) + 0.5 * (mode == "at") + rng.normal(0, 0.05)
                g = {"spread_kde_upper": s, "spread_kde_lower": s / 4, "separation_kde_upper": 1.0,
                     "separation_kde_lower": 1.0, "spread_binning": s, "log2_occupied_bins": 3.0}
                layers.append({"source": "trained", "mode": mode, "inputs": inputs, "probe": f"p{p}", "geometry": g,
                               "mi": {e: {"I_XT": y, "I_TY": 1.0} for e in ("kde_upper", "kde_lower", "binning")}})
    v, _ = finding4.decide(layers)
    assert v["geometry_explains_trained"]["holds"] is True and v["geometry_explains_trained"]["effect"] > 0.5
