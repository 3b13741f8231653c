"""Estimators at scale on one host: wall time and peak memory of KDE and binning on big layers.

Two cases the issue names, each in a fresh subprocess so its peak memory is its own:

* ``mnist-train``: N = 60,000 (all of MNIST's training set) on the five LeNet-MNIST probe
  widths (3456, 1024, 120, 84, 10). A dense N × N float32 matrix would need 13.4 GiB per
  probe (the paper's code needs several of them at once).
* ``wrn-stl10``: the widest probe of a WideResNet on 96 × 96 STL-10 images, D = 147,456, at
  N = 8,000 (the size of STL-10's test split): 4.4 GiB of activations.

Activations are synthetic (Gaussian, class-dependent means, ‖t‖² ≈ 2000 as in
``estimator_throughput.py``), generated in NumPy row chunks straight into one float32
array. After they are on the device the process's peak-RSS counter is reset
(``/proc/self/clear_refs``), so the reported peak is that of the estimation, with the
activations themselves included. One run per case (no warm-up: compilation, seconds, is
timed too).

    python benchmarks/estimator_scale.py                    # both cases (~4 min on a 2-core CPU)
    python benchmarks/estimator_scale.py --cases wrn-stl10 --samples 5000

Output: a line per case and JSON (``--out``, default ``benchmarks/results/estimator_scale.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from jaxmi.results import write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "estimator_scale.json"
CASES = {
    "mnist-train": (60_000, {"conv1": 3456, "conv2": 1024, "fc1": 120, "fc2": 84, "fc3": 10}),
    "wrn-stl10": (8_000, {"block1": 147_456}),
}
NUM_CLASSES = 10


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1))


def _activations(n: int, d: int, y: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = float(np.sqrt(min(d, 2000) / d))
    means = rng.standard_normal((NUM_CLASSES, d), dtype=np.float32) * np.float32(0.6 * scale)
    out = np.empty((n, d), np.float32)
    for a in range(0, n, 1024):
        rows = slice(a, min(n, a + 1024))
        out[rows] = rng.standard_normal((out[rows].shape[0], d), dtype=np.float32) * np.float32(0.8 * scale)
        out[rows] += means[y[rows]]
    return out


def child(name: str, n: int, seed: int) -> dict:
    """Runs one case in this process; returns its record."""
    import jax

    from jaxmi import estimators

    _, widths = CASES[name]
    y = np.arange(n) % NUM_CLASSES
    np.random.default_rng(seed).shuffle(y)
    probes = {}
    for i, (probe, d) in enumerate(widths.items()):
        host = _activations(n, d, y, seed + i)
        probes[probe] = jax.device_put(host)
        del host
    jax.block_until_ready(probes)
    data_gib = sum(n * d * 4 for d in widths.values()) / 2**30
    rss_before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM (peak RSS) to the current RSS
        f.write("5")
    record = {"case": name, "samples": n, "probe_widths": widths, "activations_gib": data_gib,
              "dense_nxn_float32_gib": n * n * 4 / 2**30, "rss_before_gib": rss_before / 2**20,
              "block_size": {p: estimators.choose_block_size(n, d, columns=NUM_CLASSES + 1)
                             for p, d in widths.items()}}
    for part, methods in (("kde", ("kde_upper", "kde_lower")), ("binning", ("binning",))):
        t0 = time.perf_counter()
        res = estimators.estimate(probes, y, methods=methods, num_classes=NUM_CLASSES)
        record[f"{part}_s"] = time.perf_counter() - t0
        record[f"{part}_bits"] = res
    record["peak_rss_gib"] = _status_kib("VmHWM") / 2**20
    record["device"] = str(jax.devices()[0])
    return record


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--samples", type=int, default=None, help="override N for every case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.samples or CASES[args.child][0], args.seed)))
        return {}
    with open("/proc/meminfo") as f:
        total = int(re.search(r"MemTotal:\s+(\d+) kB", f.read()).group(1)) / 2**20
    res = {"benchmark": "estimator_scale", "host_memory_gib": total, "host_cores": os.cpu_count(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "cases": []}
    for name in args.cases:
        n = args.samples or CASES[name][0]
        cmd = [sys.executable, __file__, "--child", name, "--samples", str(n), "--seed", str(args.seed)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            rec = {"case": name, "samples": n, "failed": f"exit {proc.returncode}", "stderr": proc.stderr[-2000:]}
        else:
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
        rec["process_wall_s"] = time.perf_counter() - t0
        res["cases"].append(rec)
        if "failed" in rec:
            print(f"{name}: N={n} FAILED ({rec['failed']}): {rec['stderr'][-300:]}", flush=True)
        else:
            print(f"{name}: N={n:,} widths {list(rec['probe_widths'].values())}: KDE {rec['kde_s']:.1f} s, "
                  f"binning {rec['binning_s']:.2f} s; peak RSS {rec['peak_rss_gib']:.2f} GiB "
                  f"(activations {rec['activations_gib']:.2f} GiB; one dense N x N float32 matrix "
                  f"{rec['dense_nxn_float32_gib']:.1f} GiB; host {total:.1f} GiB)", flush=True)
        write_json(args.out, res)  # atomic, after every case
    return res


if __name__ == "__main__":
    main()
