#!/usr/bin/env python
"""Cost of the scale-free sweep against one estimate of both KDE bounds, with the same resamples.

On synthetic clustered activations (10 classes, N rows, widths 10, 120 and 1,024: the
LeNet-MNIST logits, fc1 and about conv2), it times, after a warm-up (compilation) and as the
best of two runs:

* **one estimate**: :func:`jaxmi.estimators.estimate` of both KDE bounds at one σ² with
  ``bootstrap=R`` (what a run computes per probe and measurement);
* **the scale-free sweep**: :func:`jaxmi.estimators.scale_free.scale_free_sweep` over
  :data:`~jaxmi.estimators.scale_free.RELATIVE_GRID` (17 relative σ², both bounds) with the same
  1 + R weight rows (what a run adds per probe at its last measurement).

    python benchmarks/scale_free_cost.py --samples 2000 --resamples 100
"""

import argparse
import time

import jax
import numpy as np

from jaxmi.estimators import estimate
from jaxmi.estimators.bootstrap import resample_weights
from jaxmi.estimators.scale_free import scale_free_sweep


def _best(f, repeats: int = 2) -> float:
    f()  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--resamples", type=int, default=100)
    args = ap.parse_args()
    n, r = args.samples, args.resamples
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n).astype(np.int32)
    key = jax.random.key(1)
    w = resample_weights(n, r, key)
    for d in (10, 120, 1024):
        t = (rng.normal(0, 1, (10, d))[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
        one = _best(lambda t=t: estimate(t, y, methods=("kde_upper", "kde_lower"), bootstrap=r, key=key))
        sweep = _best(lambda t=t: scale_free_sweep(t, y, w))
        print(f"N={n} D={d} R={r}: one estimate (both bounds) {one:.2f} s, scale-free sweep {sweep:.2f} s, "
              f"ratio {sweep / one:.1f}", flush=True)


if __name__ == "__main__":
    main()
