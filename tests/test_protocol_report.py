"""benchmarks/protocol_report.py: the projection and ratios from measured rows, and a quick run on CPU."""

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import protocol_report  # noqa: E402


def _row(precision, seeds, nt_ips, at_ips, measure, swept):
    return {"precision": precision, "seeds": seeds, "nt": {"images_per_s": nt_ips}, "at": {"images_per_s": at_ips},
            "measure_seconds": measure, "swept_measure_seconds": swept}


def test_projection_is_the_protocols_arithmetic():
    # 3 seeds, 200 epochs of 50,000 images: NT 3·200·50,000 / 30,000 = 1,000 s, AT 3·200·50,000 / 6,000 = 5,000 s;
    # MI per regime 199 plain measurements of 1.5 s and 2 swept ones of 4 s, for NT and AT: 2·(298.5 + 8) = 613 s.
    p = protocol_report.projection(_row("float32", 3, 30000.0, 6000.0, 1.5, 4.0), epochs=200, epoch_examples=50000)
    assert p["train_nt_s"] == pytest.approx(1000.0) and p["train_at_s"] == pytest.approx(5000.0)
    assert p["mi_s"] == pytest.approx(613.0)
    assert p["total_s"] == pytest.approx(6613.0) and p["total_min"] == pytest.approx(6613.0 / 60)


def test_ratios_pair_like_with_like():
    rows = [_row("float32", 1, 1, 100.0, 1, 1), _row("float32", 3, 1, 250.0, 1, 1), _row("bfloat16", 3, 1, 400.0, 1, 1)]
    got = {q["what"]: q["at_images_per_s_ratio"] for q in protocol_report.ratios(rows)}
    assert got == {"float32: K=3 vs K=1": pytest.approx(2.5), "K=3: bfloat16 vs float32": pytest.approx(1.6)}
    assert protocol_report.ratios(rows[1:2]) == []  # nothing to compare with


@pytest.mark.parametrize("text", ["float32", "float16:3", "float32:0", "bfloat16:x"])
def test_bad_setting_is_refused(text):
    with pytest.raises(Exception, match="PRECISION:SEEDS"):
        protocol_report.parse_setting(text)


def test_quick_report_on_cpu(tmp_path):
    report = protocol_report.main(["--quick", "--settings", "float32:1", "--out-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "protocol_report.json").read_text())
    (row,) = saved["settings"]
    assert (row["precision"], row["seeds"], row["train_examples"]) == ("float32", 1, 256)
    assert all(row[r]["images_per_s"] > 0 for r in ("nt", "at")) and row["at"]["images_per_s"] < row["nt"]["images_per_s"]
    assert row["measure_seconds"] > 0 and row["swept_measure_seconds"] > 0
    # LeNet's probes 3456 + 1024 + 120 + 84 + 10 wide, N = 64, four input kinds (clean, PGD, both controls)
    assert row["gram_flops"] == 2.0 * 64 * 64 * (3456 + 1024 + 120 + 84 + 10) * 4
    assert math.isclose(row["projection"]["total_s"],
                        protocol_report.projection(row, epochs=200, epoch_examples=50000)["total_s"])
    table = (tmp_path / "protocol_report.md").read_text()
    assert "| float32 | 1 |" in table and "Gram floor" in table
    assert report["settings"] == saved["settings"]
