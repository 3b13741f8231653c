#!/usr/bin/env python
"""The plain KDE estimate of every measurement on the LeNet-MNIST probes: the registry's pass against the joint pass.

At every measurement that is not swept a run computes, per probe, both KDE bounds at σ² = 0.1
with ``bootstrap=R`` resamples through the estimator registry
(:func:`jaxmi.estimators.estimate` → :func:`jaxmi.estimators.kde.kde_compute` →
:func:`jaxmi.estimators.kde_pass.kde_sums`). On real activations (the first N bundled MNIST test
images through a LeNet with PyTorch-default random initialisation, as in ``mi_measurement.py``)
it times, after a warm-up (compilation), as the median of ``--repeats`` interleaved runs, in the
same process:

* **estimate**: :func:`jaxmi.estimators.estimate` with ``methods=("kde_upper", "kde_lower")``,
  end to end (input checks, the resample weights, the pass, the summaries);
* **kde_compute**: the registry's pass alone, :func:`jaxmi.estimators.kde.kde_compute` on checked
  inputs and the same weights;
* **kde_compute_unsorted**: the same with the pass's class-order skip off
  (``kde_sums(..., class_order=False)``: every block pair computes the same-class sums), the
  pass as it was before the skip;
* **joint**: :func:`jaxmi.estimators.joint_pass.joint_kde` with only the estimate product, on
  the same checked inputs and weights.

It prints the largest |difference| in bits of each against ``kde_compute`` over every value (both
bounds, I(X;T) and I(T;Y), every resample) and writes JSON (``--out``, default
``benchmarks/results/plain_estimate.json``).

    python benchmarks/plain_estimate.py                     # N = 5,000, R = 100, median of 3
    python benchmarks/plain_estimate.py --samples 500 --resamples 10 --repeats 1   # seconds
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine_info, write_result  # noqa: E402
from mi_measurement import lenet_probes  # noqa: E402

from jaxmi.estimators import estimate, kde  # noqa: E402
from jaxmi.estimators.bootstrap import resample_weights  # noqa: E402
from jaxmi.estimators.joint_pass import joint_kde  # noqa: E402
from jaxmi.estimators.kde_pass import kde_sums  # noqa: E402
from jaxmi.estimators.validation import validate  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "plain_estimate.json"
KDE = ("kde_upper", "kde_lower")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=5000, help="N (default 5000)")
    ap.add_argument("--resamples", type=int, default=100, help="bootstrap resamples R (default 100, a run's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    probes, labels = lenet_probes(args.samples, 0)
    probes = {k: np.asarray(v).reshape(args.samples, -1) for k, v in probes.items()}
    key, r = jax.random.key(1), args.resamples
    opts = dict(num_classes=10, noise_var=0.1, bootstrap=r, key=key)
    w = np.asarray(resample_weights(args.samples, r, key), np.float32)
    checked = {p: validate(a, labels, 10, min_samples=2) for p, a in probes.items()}

    def values(res):  # {probe: {bound: (I_XT [1 + R], I_TY [1 + R])}}
        return {p: {m: (np.asarray(v[m][0]), np.asarray(v[m][1])) for m in KDE} for p, v in res.items()}

    def end_to_end():
        out = {p: estimate(a, labels, methods=KDE, **opts) for p, a in probes.items()}
        return {p: {m: (np.asarray([v[m]["I_XT"]] + v[m]["I_XT_resamples"]),
                        np.asarray([v[m]["I_TY"]] + v[m]["I_TY_resamples"])) for m in KDE} for p, v in out.items()}

    def registry():
        return values({p: kde.kde_compute(t, y, c, w, noise_var=0.1) for p, (t, y, c) in checked.items()})

    def unsorted():
        saved = kde.kde_sums
        kde.kde_sums = functools.partial(kde_sums, class_order=False)
        try:
            return registry()
        finally:
            kde.kde_sums = saved

    def joint():
        return values({p: joint_kde(t, y, c, w, noise_var=0.1)["estimate"] for p, (t, y, c) in checked.items()})

    fns = {"estimate": end_to_end, "kde_compute": registry, "kde_compute_unsorted": unsorted, "joint": joint}
    if "class_order" not in getattr(kde_sums, "__wrapped__", kde_sums).__code__.co_varnames:
        del fns["kde_compute_unsorted"]  # a pass without the skip: it is kde_compute itself
    results = {name: fn() for name, fn in fns.items()}  # warm-up: compiles
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeats):  # interleaved, so that a change of load hits all of them
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}

    def worst(a, b):
        return max(float(np.max(np.abs(a[p][m][q] - b[p][m][q]))) for p in a for m in KDE for q in (0, 1))

    diff = {name: worst(results[name], results["kde_compute"]) for name in fns}
    result = {**machine_info(), "samples": args.samples, "resamples": r, "probes": {p: int(a.shape[1])
              for p, a in probes.items()}, "seconds": times, "median_s": med,
              "over_kde_compute": {name: med[name] / med["kde_compute"] for name in fns},
              "max_abs_diff_bits_vs_kde_compute": diff}
    print(f"device: {result['device']}; N = {args.samples}, R = {r}, {len(probes)} probes, median of {args.repeats}, "
          f"load {result['load_avg'][0]:.1f}")
    for name in fns:
        print(f"{name:20s} {med[name]:6.2f} s  ({med[name] / med['kde_compute']:.2f}× kde_compute; "
              f"max |Δ| vs kde_compute {diff[name]:.1e} bits)")
    return write_result(str(args.out), result)


if __name__ == "__main__":
    main()
