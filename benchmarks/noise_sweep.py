#!/usr/bin/env python
"""σ² sweep cost: one 13-value KDE sweep against one σ², on the LeNet-MNIST probes, same run.

The activations are real (the first N bundled MNIST test images through a LeNet with
PyTorch-default random initialisation, as in ``mi_measurement.py``). For the five probes
(widths 3456, 1024, 120, 84, 10) it times, after a warm-up (compilation) and as the median
of ``--repeats`` runs:

* **one σ²**: :func:`jaxmi.estimators.estimate_mi` with ``method="kde_upper"`` at σ² = 0.1
  (one Gram pass per probe, which also yields the lower bound);
* **the sweep**: :func:`jaxmi.estimators.sweep_kde_bounds` over the default grid
  (:data:`jaxmi.estimators.DEFAULT_NOISE_VARS`, 13 values 0.1·4^k from 9.8e-5 to 1,638; one
  Gram pass per probe for all σ² and both bounds).

It reports the cost ratio sweep / one σ² and the agreement of every swept value with
``estimate_mi`` at that σ² (both bounds, I(X;T) and I(T;Y); the largest |difference| in bits),
and writes JSON (``--out``, default ``benchmarks/results/noise_sweep.json``).

    python benchmarks/noise_sweep.py                     # N = 5,000, the 13-value grid, median of 3
    python benchmarks/noise_sweep.py --samples 500 --repeats 1   # seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine_info, write_result  # noqa: E402
from mi_measurement import lenet_probes  # noqa: E402

from jaxmi.estimators import DEFAULT_NOISE_VARS, estimate_mi, sweep_kde_bounds  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "noise_sweep.json"


def _median_time(fn, repeats: int) -> tuple[float, list[float], object]:
    out = fn()  # warm-up: compiles
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=5000, help="N (default 5000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    probes, labels = lenet_probes(args.samples, 0)
    probes = {k: jax.block_until_ready(v) for k, v in probes.items()}
    grid = list(DEFAULT_NOISE_VARS)

    def one():
        return {p: estimate_mi(a, labels, method="kde_upper", noise_var=0.1, num_classes=10) for p, a in probes.items()}

    def sweep():
        return {p: sweep_kde_bounds(a, labels, grid, num_classes=10) for p, a in probes.items()}

    t_one, times_one, _ = _median_time(one, args.repeats)
    t_sweep, times_sweep, swept = _median_time(sweep, args.repeats)
    worst = 0.0
    for j, v in enumerate(grid):  # every swept value against the single-σ² estimate
        for p, a in probes.items():
            for m in ("kde_upper", "kde_lower"):
                ref = estimate_mi(a, labels, method=m, noise_var=v, num_classes=10)
                for q in ("I_XT", "I_TY"):
                    worst = max(worst, abs(swept[p][m][q][j] - ref[q]))
    result = {**machine_info(), "samples": args.samples, "values": len(grid), "noise_vars": grid,
              "probes": {p: int(np.prod(a.shape[1:])) for p, a in probes.items()},
              "one_noise_var_seconds": times_one, "sweep_seconds": times_sweep,
              "one_noise_var_median_s": t_one, "sweep_median_s": t_sweep, "ratio": t_sweep / t_one,
              "max_abs_diff_bits": worst}
    print(f"device: {result['device']}; N = {args.samples}, {len(probes)} probes, median of {args.repeats}")
    print(f"one σ² (kde_upper, σ² = 0.1): {t_one:.3f} s")
    print(f"sweep of {len(grid)} σ² (both bounds): {t_sweep:.3f} s  ->  {t_sweep / t_one:.2f}× one σ²")
    print(f"largest |sweep − estimate_mi| over every σ², probe, bound and quantity: {worst:.2e} bits")
    return write_result(str(args.out), result)


if __name__ == "__main__":
    main()
