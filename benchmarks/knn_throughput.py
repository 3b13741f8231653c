#!/usr/bin/env python
"""The kNN estimator's cost in a measurement: :func:`jaxmi.estimators.estimate` with the
paper's three estimators, with those three plus ``"knn"``, and with ``"knn"`` alone.

Data: N "activations" of width D, the ReLU of Gaussian coordinates plus a class-dependent
mean (10 classes, seed 0), float32; bootstrap R resamples as in a run. Every configuration is
called once to compile, then timed as the median of ``--repeats`` calls. Also reports how many
(row, resample) pairs the float32 pass left to the float64 host recount
(:func:`jaxmi.estimators.knn_mixed.mixed_counts`). Writes JSON (``--out``, default
``benchmarks/results/knn_throughput.json``) with the machine and load average.

    python benchmarks/knn_throughput.py                               # N = 128 and 1,000; D = 3456 and 84; R = 20
    python benchmarks/knn_throughput.py --samples 2000 --widths 500 --bootstrap 100
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

from jaxmi.estimators import METHODS, estimate  # noqa: E402
from jaxmi.estimators.bootstrap import bootstrap_weights  # noqa: E402
from jaxmi.estimators.knn_mixed import mixed_counts  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "knn_throughput.json"


def activations(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    means = rng.normal(size=(10, d))
    return np.maximum(rng.normal(size=(n, d)) + 0.5 * means[y], 0).astype(np.float32), y


def median_seconds(fn, repeats: int) -> float:
    fn()  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, nargs="+", default=[128, 1000])
    p.add_argument("--widths", type=int, nargs="+", default=[3456, 84])
    p.add_argument("--bootstrap", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    rows = []
    for n in args.samples:
        for d in args.widths:
            a, y = activations(n, d)
            row = {"samples": n, "width": d, "bootstrap": args.bootstrap}
            for name, methods in (("paper", METHODS), ("paper_and_knn", METHODS + ("knn",)), ("knn", ("knn",))):
                row[f"{name}_s"] = median_seconds(
                    lambda m=methods, a=a, y=y: estimate(a, y, methods=m, bootstrap=args.bootstrap), args.repeats)
            w = bootstrap_weights(jax.random.key(0), n, args.bootstrap) if args.bootstrap else None
            c = mixed_counts(a, y, 3, weights=w)
            row["pairs"] = int(n * (1 + args.bootstrap))
            row["recounted_pairs"] = c.recounted
            print(f"N = {n:6d}, D = {d:5d}, R = {args.bootstrap}: paper three {row['paper_s']:.3f} s, with knn "
                  f"{row['paper_and_knn_s']:.3f} s, knn alone {row['knn_s']:.3f} s; "
                  f"{c.recounted} of {row['pairs']} pairs recounted in float64", flush=True)
            rows.append(row)
    return write_result(args.out, {"machine": machine_info(), "rows": rows})


if __name__ == "__main__":
    main()
