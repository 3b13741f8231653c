"""benchmarks/accelerator_report.py --quick: every part runs and the table and JSON are written."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import accelerator_report  # noqa: E402


def test_quick_report_on_cpu(tmp_path):
    report = accelerator_report.main(["--quick", "--out-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "accelerator_report.json").read_text())
    assert saved["quick"] and saved["device"].startswith("cpu")
    cases = {(r["case"], r["regime"]) for r in saved["training"]}
    assert cases == {("lenet-mnist", "nt"), ("lenet-mnist", "at"), ("wrn-cifar10", "nt"), ("wrn-cifar10", "at")}
    assert all(r["images_per_s"] > 0 for r in saved["training"] + saved["attack"])
    assert [r["case"] for r in saved["mi"]] == ["lenet-28px", "wrn-32px"] and all(r["peak_gib"] > 0 for r in saved["mi"])
    kde = saved["kde"][0]
    assert kde["seconds"] > 0 and kde["gram_floor_seconds"] > 0 and saved["matmul_tflops"] > 0
    table = (tmp_path / "accelerator_report.md").read_text()
    assert table.count("\n| ") >= 10 and "Gram floor" in table and "PGD-7" in table
    assert report["training"] == saved["training"]
