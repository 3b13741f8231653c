#!/usr/bin/env python
"""One swept measurement's KDE work on the LeNet-MNIST probes: a pass per product against one joint pass.

At its first and last measurement a run computes, per probe on the clean inputs, the estimate
of both KDE bounds at σ² = 0.1 with ``bootstrap=R`` resamples, the σ² sweep (both bounds over
:data:`jaxmi.estimators.DEFAULT_NOISE_VARS`, full sample) and the scale-free sweep (both bounds
over :data:`jaxmi.estimators.scale_free.RELATIVE_GRID` with the same resamples). On real
activations (the first N bundled MNIST test images through a LeNet with PyTorch-default random
initialisation, as in ``mi_measurement.py``) it times, after a warm-up (compilation), as the
median of ``--repeats`` interleaved runs, in the same process:

* **separate**: :func:`jaxmi.estimators.estimate` + :func:`jaxmi.estimators.sweep_kde_bounds` +
  :func:`jaxmi.estimators.scale_free.scale_free_sweep`, three distance passes per probe;
* **joint**: :func:`jaxmi.estimators.joint_pass.joint_estimate`, one distance pass per probe;
* **estimate**: the estimate alone (what every other measurement computes), for the sweeps'
  marginal cost.

It checks that joint and separate agree (the largest |difference| in bits over every value)
and writes JSON (``--out``, default ``benchmarks/results/swept_measurement.json``).

    python benchmarks/swept_measurement.py                          # N = 5,000, R = 100, median of 3
    python benchmarks/swept_measurement.py --resamples 0 --no-scale-free   # the estimate and the σ² sweep alone
    python benchmarks/swept_measurement.py --samples 500 --resamples 10 --repeats 1   # seconds
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

from jaxmi.estimators import DEFAULT_NOISE_VARS, estimate, sweep_kde_bounds  # noqa: E402
from jaxmi.estimators.bootstrap import resample_weights  # noqa: E402
from jaxmi.estimators.joint_pass import joint_estimate  # noqa: E402
from jaxmi.estimators.scale_free import RELATIVE_GRID, scale_free_sweep  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "swept_measurement.json"
KDE = ("kde_upper", "kde_lower")


def _largest_difference(joint, separate) -> float:
    worst = 0.0
    for p in joint:
        est, sw, sf = separate[p]
        for m in KDE:
            for q in ("I_XT", "I_TY"):
                pairs = [(joint[p]["estimate"][m][q], est[m][q]), (joint[p]["sweep"][m][q], sw[m][q])]
                if sf is not None:
                    pairs.append((joint[p]["scale_free"][m][q], sf[m][q]))
                worst = max([worst] + [float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs])
    return worst


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=5000, help="N (default 5000)")
    ap.add_argument("--resamples", type=int, default=100, help="bootstrap resamples R (default 100, a run's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-scale-free", action="store_true",
                    help="leave the scale-free sweep out (the estimate and the σ² sweep alone, as on adversarial inputs)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    probes, labels = lenet_probes(args.samples, 0)
    probes = {k: np.asarray(v).reshape(args.samples, -1) for k, v in probes.items()}
    key, r, grid = jax.random.key(1), args.resamples, list(DEFAULT_NOISE_VARS)
    sf_grid = None if args.no_scale_free else RELATIVE_GRID
    opts = dict(num_classes=10, noise_var=0.1, bootstrap=r, key=key)
    w = resample_weights(args.samples, r, key)

    def one():
        return {p: estimate(a, labels, methods=KDE, **opts) for p, a in probes.items()}

    def separate():
        return {p: (estimate(a, labels, methods=KDE, **opts), sweep_kde_bounds(a, labels, grid, num_classes=10),
                    None if sf_grid is None else scale_free_sweep(a, labels, w, num_classes=10))
                for p, a in probes.items()}

    def joint():
        return {p: joint_estimate(a, labels, methods=KDE, sweep=grid, scale_free=sf_grid, **opts)
                for p, a in probes.items()}

    fns = {"estimate": one, "separate": separate, "joint": joint}
    results = {name: fn() for name, fn in fns.items()}  # warm-up: compiles
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeats):  # interleaved, so that a change of load hits all three
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    worst = _largest_difference(results["joint"], results["separate"])
    result = {**machine_info(), "samples": args.samples, "resamples": r, "noise_vars": grid,
              "relative_grid": None if sf_grid is None else list(sf_grid), "probes": {p: int(a.shape[1]) for p, a in probes.items()},
              "seconds": times, "median_s": med, "separate_over_joint": med["separate"] / med["joint"],
              "joint_over_estimate": med["joint"] / med["estimate"], "max_abs_diff_bits": worst}
    print(f"device: {result['device']}; N = {args.samples}, R = {r}, {len(probes)} probes, median of {args.repeats}")
    print(f"estimate alone (both bounds, σ² = 0.1): {med['estimate']:.2f} s")
    sf_text = "" if sf_grid is None else f" + {len(sf_grid)}-value scale-free sweep"
    print(f"separate passes (estimate + {len(grid)}-value σ² sweep{sf_text}): {med['separate']:.2f} s")
    print(f"joint pass (the same products): {med['joint']:.2f} s  ->  separate / joint "
          f"{med['separate'] / med['joint']:.2f}×, joint / estimate {med['joint'] / med['estimate']:.2f}×")
    print(f"largest |joint − separate| over every value: {worst:.2e} bits")
    return write_result(str(args.out), result)


if __name__ == "__main__":
    main()
