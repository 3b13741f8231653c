"""Smoke test of benchmarks/estimator_throughput.py on a tiny case (structure only, no timing checks)."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import estimator_throughput  # noqa: E402

from jaxmi.models import create_model, probe_widths  # noqa: E402


def test_throughput_script_writes_table_and_json(tmp_path, capsys, monkeypatch):
    # A tiny two-probe "model" keeps compilation short; the real shapes are checked below.
    monkeypatch.setitem(estimator_throughput.SHAPES, "tiny", {"wide": 300, "narrow": 3})
    out = tmp_path / "t.json"
    res = estimator_throughput.main(["--models", "tiny", "--samples", "40", "--repeats", "1",
                                     "--matmul-sizes", "64", "--out", str(out)])
    table = capsys.readouterr().out
    assert "tiny" in table and "KDE/floor" in table
    saved = json.loads(out.read_text())
    assert saved["cases"][0]["samples"] == 40 and saved["matmul"]["flops_per_s"] > 0
    case = res["cases"][0]
    assert case["gram_flop"] == 2 * 40 * 40 * (300 + 3)
    # The benchmark's shapes are the models' probe widths (eval_shape, no compute).
    for name, model, shape in (("lenet-mnist", "lenet", (28, 28, 1)), ("lenet-cifar", "lenet", (32, 32, 3)),
                               ("wrn-cifar", "wrn", (32, 32, 3))):
        assert estimator_throughput.SHAPES[name] == probe_widths(create_model(model), shape)
    assert set(case["jaxmi_s"]) == set(case["baseline_s"]) == {"kde", "binning", "full"}
    assert case["baseline_s"]["full"] == case["baseline_s"]["kde"] + case["baseline_s"]["binning"]
    assert case["kde_x_gram_floor"] == case["jaxmi_s"]["kde"] / case["gram_floor_s"]
    # jaxmi and the paper-way baseline compute the same quantities.
    assert max(case["max_abs_diff_bits"].values()) < 5e-3
    assert not case["float64_fallback"]
    # The baseline is skipped (and says so) when its N x N temporaries cannot fit.
    fits, why = estimator_throughput.baseline_fits(50_000, estimator_throughput.SHAPES["lenet-mnist"], 24 << 30)
    assert not fits and "GiB" in why
    assert np.isfinite([r["kde_upper"]["I_XT"] for r in case["mi_bits_jaxmi"].values()]).all()


def test_throughput_single_run_for_huge_cases(tmp_path, monkeypatch):
    monkeypatch.setitem(estimator_throughput.SHAPES, "tiny", {"wide": 300, "narrow": 3})
    res = estimator_throughput.main(["--models", "tiny", "--samples", "40", "--repeats", "3", "--no-baseline",
                                     "--single-run-above-tflop", "0", "--matmul-sizes", "64",
                                     "--out", str(tmp_path / "t.json")])
    case = res["cases"][0]
    assert "one run, no warm-up" in case["timing"]
    # One timed run per part, no separate full pass: full is the sum of the two parts.
    assert {k: len(v) for k, v in case["jaxmi_times_s"].items()} == {"kde": 1, "binning": 1}
    assert case["jaxmi_s"]["full"] == case["jaxmi_s"]["kde"] + case["jaxmi_s"]["binning"]
    assert case["baseline_skipped"] == "baseline skipped: --no-baseline"


def test_scale_script_runs_both_cases_in_subprocesses(tmp_path):
    import estimator_scale

    res = estimator_scale.main(["--samples", "48", "--out", str(tmp_path / "s.json")])
    saved = json.loads((tmp_path / "s.json").read_text())
    assert [c["case"] for c in saved["cases"]] == ["mnist-train", "wrn-stl10"] == [c["case"] for c in res["cases"]]
    for case in saved["cases"]:
        assert "failed" not in case, case.get("stderr")
        assert case["samples"] == 48 and case["peak_rss_gib"] >= case["activations_gib"] > 0
        # 48 well-separated synthetic points: every estimate at the log2 N ceiling for I(X;T).
        for part in ("kde_bits", "binning_bits"):
            for per_method in case[part].values():  # {probe: {method: {...}}}
                for v in per_method.values():
                    np.testing.assert_allclose(v["I_XT"], np.log2(48), atol=0.05)
    assert saved["cases"][1]["probe_widths"] == {"block1": 147_456}
