#!/usr/bin/env python
"""KSG throughput: jaxmi's device KSG against the bmi package's, same points, one process.

Data: d + d correlated Gaussian coordinates (pairs with correlation ρ = 0.5), float64, seed 0.
Both estimators use k = 3, the Euclidean norm per space and standardised columns, and are
timed on the same points:

* **jaxmi**: :func:`jaxmi.estimators.ksg_mi` after one warm-up call (compilation), median of
  ``--repeats``, with its rows split over ``--devices`` CPU devices (default 2, or the core
  count if smaller: XLA's CPU client runs one program per device, each on its own thread) and
  again on one of them;
* **bmi** (``KSGEnsembleFirstEstimator(neighborhoods=(3,))``, NumPy and scikit-learn on the
  host): median of ``--repeats``; skipped when bmi is not installed.

Reports seconds each, the ratio bmi / jaxmi and |jaxmi − bmi| in nats (bmi clips its
estimate at 0; the true MI of these data is −(d/2)·ln(1 − ρ²) = 1.44 nats at d = 10). Then
times jaxmi alone at ``--large`` points
(default 50,000; bmi is not run there): the first call (with compilation) and the median of
``--large-repeats`` further calls. Writes JSON (``--out``, default
``benchmarks/results/ksg_throughput.json``) with the machine, the load average before and
after, and every timing.

    python benchmarks/ksg_throughput.py                         # N = 5,000, d = 10 + 10; then N = 50,000
    python benchmarks/ksg_throughput.py --samples 1000 --large 0   # seconds
    python benchmarks/ksg_throughput.py --devices 1               # one CPU device only
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine_info, write_result  # noqa: E402
from estimator_calibration import import_bmi  # noqa: E402

from jaxmi.estimators import ksg_mi  # noqa: E402
from jaxmi.estimators.knn import ksg_block_size, ksg_counts  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ksg_throughput.json"
LN2 = math.log(2.0)
K = 3


def gaussian_pairs(n: int, dim: int, rho: float = 0.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    return x, rho * x + math.sqrt(1 - rho ** 2) * rng.normal(size=(n, dim))


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=5000, help="N of the comparison (default 5000)")
    ap.add_argument("--dim", type=int, default=10, help="d of each space (default 10)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large", type=int, default=50_000, help="N of the jaxmi-only timing (0: skip)")
    ap.add_argument("--large-repeats", type=int, default=1)
    ap.add_argument("--devices", type=int, default=min(2, os.cpu_count() or 1),
                    help="CPU devices jaxmi splits the rows over (default 2, or the core count if smaller)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.devices < 1:
        ap.error(f"--devices must be ≥ 1; got {args.devices}.")
    jax.config.update("jax_num_cpu_devices", args.devices)  # before the first JAX computation
    before = machine_info()
    if len(jax.devices()) != args.devices:
        ap.error(f"asked for {args.devices} CPU devices, JAX has {jax.devices()} (another platform, or JAX "
                 f"started before the option was set).")
    one = jax.devices()[:1]
    x, y = gaussian_pairs(args.samples, args.dim)
    t0 = time.perf_counter()
    ksg_mi(x, y, K)  # warm-up: compiles
    first = time.perf_counter() - t0
    ksg_mi(x, y, K, devices=one)
    # alternate the two layouts, so that both see the same load
    times_j, times_1 = [], []
    for _ in range(args.repeats):
        times_j += timed(lambda: ksg_mi(x, y, K), 1)[0]
        times_1 += timed(lambda: ksg_mi(x, y, K, devices=one), 1)[0]
    est, est_1 = ksg_mi(x, y, K), ksg_mi(x, y, K, devices=one)
    counts = ksg_counts(x, y, K)
    result = {**before, "samples": args.samples, "dim": args.dim, "k": K, "devices": args.devices,
              "block_size": ksg_block_size(args.samples), "direct_rows": counts.direct,
              "recounted_rows": counts.recounted, "jaxmi_first_s": first, "jaxmi_s": times_j,
              "jaxmi_median_s": statistics.median(times_j), "jaxmi_bits": est, "jaxmi_one_device_s": times_1,
              "jaxmi_one_device_median_s": statistics.median(times_1), "jaxmi_one_device_bits": est_1}
    print(f"N = {args.samples:,}, d = {args.dim} + {args.dim}, k = {K}")
    print(f"jaxmi, {args.devices} CPU device(s): {statistics.median(times_j):.3f} s (median of {args.repeats}; "
          f"first call {first:.2f} s), {est * LN2:.9f} nats; {counts.direct} rows counted again from direct "
          f"differences, {counts.recounted} in float64")
    print(f"jaxmi, 1 CPU device: {statistics.median(times_1):.3f} s, {est_1 * LN2:.9f} nats")
    bmi = import_bmi()
    if bmi is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator = bmi.estimators.KSGEnsembleFirstEstimator(neighborhoods=(K,), standardize=True)
            times_b, ref = timed(lambda: estimator.estimate(x, y), args.repeats)
        ratio = statistics.median(times_b) / statistics.median(times_j)
        ratio_1 = statistics.median(times_b) / statistics.median(times_1)
        diff = abs(est * LN2 - ref)
        result.update(bmi_version=importlib.metadata.version("benchmark-mi"), bmi_s=times_b,
                      bmi_median_s=statistics.median(times_b), bmi_nats=ref, ratio=ratio,
                      ratio_one_device=ratio_1, abs_diff_nats=diff)
        print(f"bmi:   {statistics.median(times_b):.3f} s (median of {args.repeats}), {ref:.9f} nats")
        print(f"bmi / jaxmi = {ratio:.1f}x ({args.devices} device(s)), {ratio_1:.1f}x (1 device); "
              f"|difference| = {diff:.1e} nats")
    else:
        print("bmi is not installed: no comparison")
    if args.large:
        xl, yl = gaussian_pairs(args.large, args.dim)
        t0 = time.perf_counter()
        big = ksg_mi(xl, yl, K)
        first_l = time.perf_counter() - t0
        times_l, _ = timed(lambda: ksg_mi(xl, yl, K), args.large_repeats)
        times_l1, big_1 = timed(lambda: ksg_mi(xl, yl, K, devices=one), args.large_repeats)
        result.update(large_samples=args.large, large_block_size=ksg_block_size(args.large),
                      large_first_s=first_l, large_s=times_l, large_median_s=statistics.median(times_l),
                      large_bits=big, large_one_device_s=times_l1,
                      large_one_device_median_s=statistics.median(times_l1), large_one_device_bits=big_1)
        print(f"jaxmi at N = {args.large:,}: {statistics.median(times_l):.2f} s on {args.devices} device(s) "
              f"(median of {args.large_repeats}; first call {first_l:.2f} s), "
              f"{statistics.median(times_l1):.2f} s on 1; {big * LN2:.6f} nats")
    result["load_avg_after"] = machine_info()["load_avg"]
    return write_result(str(args.out), result)


if __name__ == "__main__":
    main()
