#!/usr/bin/env python
"""Estimator calibration: jaxmi's estimates on distributions whose mutual information is known.

Two kinds of task:

* **KSG** (:func:`jaxmi.estimators.ksg_mi`, k = 3, Euclidean, standardised columns) on pairs
  (X, Y) of continuous variables. With the ``bmi`` package installed (PyPI: benchmark-mi; its
  install is in benchmarks/README.md) the tasks are bmi's own (``bmi.benchmark.BENCHMARK_TASKS``:
  multivariate normal and Student-t tasks and some transformed ones), and bmi's
  ``KSGEnsembleFirstEstimator`` (neighborhoods=(3,), the same k) runs on the same points as
  jaxmi's first draw. Without bmi, two correlated-Gaussian tasks written here (closed form
  I = −Σ ½ ln(1 − ρ²)) run and the bmi columns are empty.
* **KDE bounds on I(T;Y)** for a Gaussian mixture with labels: C classes with equal weights,
  T | Y = c ~ N(μ_c, s²·I_d). The true I(T;Y) = H(Y) − E[−log p(Y|T)] comes from a Monte Carlo
  average over M draws, with its standard error. The KDE bounds
  (``estimate(..., methods=("kde_upper", "kde_lower"), noise_var=σ²)``) are bounds on the MI
  of T + Z with Z ~ N(0, σ²·I), not of T: the table also gives the true I(T + Z; Y)
  (the same mixture with variance s² + σ²), which is what they bracket as N grows.

For every task: R independent draws of N points (``--draws``, ``--samples``); jaxmi's
column is the mean over the draws ± the standard deviation of one draw (the standard error of
a single N-point estimate; resampling with replacement is not used because duplicated points
are zero-distance neighbours to KSG); seconds are jaxmi's median per estimate after a warm-up
(compilation) call and bmi's single run. Writes a markdown table to stdout and JSON
(``--out``, default ``benchmarks/results/estimator_calibration.json``).

    python benchmarks/estimator_calibration.py                       # N = 5,000, 5 draws
    python benchmarks/estimator_calibration.py --samples 1000 --draws 3   # a quick look
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine_info, write_result  # noqa: E402

from jaxmi.estimators import estimate, ksg_mi  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "estimator_calibration.json"
LN2 = math.log(2.0)
#: bmi tasks (names in ``bmi.benchmark.BENCHMARK_TASKS``): normal, Student-t, transformed.
BMI_TASKS = (
    "multinormal-dense-2-2-0.5",
    "multinormal-dense-5-5-0.5",
    "multinormal-sparse-5-5-2-2.0",
    "student-identity-2-2-1",
    "student-identity-5-5-3",
    "normal_cdf-multinormal-sparse-3-3-2-2.0",
    "half_cube-multinormal-sparse-5-5-2-2.0",
    "asinh-student-identity-3-3-2",
    "spiral-multinormal-sparse-3-3-2-2.0",
)
K = 3


def import_bmi():
    """bmi, or None when it is not installed (or does not import)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import bmi
        return bmi
    except Exception:  # noqa: BLE001 (any import failure means: no bmi columns)
        return None


class GaussianPairs:
    """d pairs of coordinates (x_k, y_k) with correlation ρ: I = −d/2 · ln(1 − ρ²) nats."""

    def __init__(self, dim: int, rho: float):
        self.dim, self.rho = dim, rho
        self.name = f"gaussian-pairs-{dim}-{dim}-{rho}"

    def mutual_information(self) -> float:
        return -0.5 * self.dim * math.log(1 - self.rho ** 2)

    def sample(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, self.dim))
        return x, self.rho * x + math.sqrt(1 - self.rho ** 2) * rng.normal(size=(n, self.dim))


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def ksg_task(name, sample, truth_nats, n, draws, bmi) -> dict:
    """jaxmi's KSG on ``draws`` draws, bmi's on the first one. Both get float64 points: bmi's
    samplers return float32, and bmi standardises float32 input in float32, which moves the
    distances by ~1e-7 relative and can flip a count at ε (before this cast two tasks
    differed by 2.6e-6 and 3.1e-6 nats at N = 5,000)."""
    sample64 = sample
    sample = lambda n, seed: tuple(np.asarray(a, np.float64) for a in sample64(n, seed))  # noqa: E731
    x0, y0 = sample(n, 0)
    ksg_mi(x0, y0, K)  # warm-up: compiles for this shape
    est, secs = [], []
    for r in range(draws):
        x, y = (x0, y0) if r == 0 else sample(n, r)
        v, s = _timed(lambda: ksg_mi(x, y, K))
        est.append(v)
        secs.append(s)
    row = {"task": name, "estimator": f"KSG k={K}", "N": n, "true_bits": truth_nats / LN2,
           "jaxmi_bits": float(np.mean(est)), "jaxmi_sd_bits": float(np.std(est, ddof=1)) if draws > 1 else None,
           "jaxmi_draws_bits": est, "jaxmi_s": statistics.median(secs)}
    if bmi is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator = bmi.estimators.KSGEnsembleFirstEstimator(neighborhoods=(K,), standardize=True)
            ref, s = _timed(lambda: estimator.estimate(x0, y0))
        row.update(bmi_bits=ref / LN2, bmi_s=s, abs_diff_draw0_nats=abs(est[0] * LN2 - ref))
    return row


class LabelledMixture:
    """C equally likely classes, T | Y = c ~ N(μ_c, s²·I_d), the means drawn once (seeded)
    with independent N(0, spread²) coordinates."""

    def __init__(self, classes: int = 4, dim: int = 5, spread: float = 1.0, s: float = 1.0, seed: int = 0):
        self.classes, self.dim, self.s = classes, dim, s
        self.means = np.random.default_rng(seed).normal(scale=spread, size=(classes, dim))
        self.name = f"mixture-C{classes}-d{dim}-s{s}"

    def sample(self, n: int, seed: int, extra_var: float = 0.0):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, self.classes, size=n)
        t = self.means[y] + math.sqrt(self.s ** 2 + extra_var) * rng.normal(size=(n, self.dim))
        return t, y

    def true_mi_bits(self, extra_var: float = 0.0, draws: int = 1_000_000, seed: int = 12345) -> tuple[float, float]:
        """I(T + Z; Y), Z ~ N(0, extra_var·I), in bits, by Monte Carlo: (estimate, standard error)."""
        var = self.s ** 2 + extra_var
        out = []
        for part in range(0, draws, 200_000):
            t, y = self.sample(min(200_000, draws - part), seed + part, extra_var)
            logits = -((t[:, None, :] - self.means[None]) ** 2).sum(-1) / (2 * var)  # equal priors cancel
            logp = logits[np.arange(len(y)), y] - np.logaddexp.reduce(logits, axis=1)
            out.append(math.log(self.classes) + logp)  # H(Y) − (−log p(y|t)), per draw
        v = np.concatenate(out) / LN2
        return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))


def kde_task(mix: LabelledMixture, noise_var: float, n: int, draws: int) -> list[dict]:
    truth, truth_se = mix.true_mi_bits()
    smooth, smooth_se = mix.true_mi_bits(extra_var=noise_var)
    methods = ("kde_upper", "kde_lower")
    t0, y0 = mix.sample(n, 0)
    estimate(t0, y0, methods=methods, num_classes=mix.classes, noise_var=noise_var)  # warm-up
    vals = {m: [] for m in methods}
    secs = []
    for r in range(draws):
        t, y = mix.sample(n, r)
        res, s = _timed(lambda: estimate(t, y, methods=methods, num_classes=mix.classes, noise_var=noise_var))
        secs.append(s)
        for m in methods:
            vals[m].append(res[m]["I_TY"])
    rows = []
    for m in methods:
        rows.append({"task": f"{mix.name} I(T;Y)", "estimator": f"{m} σ²={noise_var} (bounds MI of T+Z)", "N": n,
                     "true_bits": truth, "true_se_bits": truth_se,
                     "true_T_plus_Z_bits": smooth, "true_T_plus_Z_se_bits": smooth_se,
                     "jaxmi_bits": float(np.mean(vals[m])),
                     "jaxmi_sd_bits": float(np.std(vals[m], ddof=1)) if draws > 1 else None,
                     "jaxmi_draws_bits": vals[m], "jaxmi_s": statistics.median(secs)})
    return rows


def _fmt(v, spec=".3f"):
    return "" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    lines = ["| task | estimator | N | true MI (bits) | jaxmi (bits) ± sd of one draw | bmi KSG (bits) | "
             "\\|jaxmi − bmi\\| draw 0 (nats) | jaxmi s | bmi s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        truth = _fmt(r["true_bits"])
        if "true_se_bits" in r:
            truth = (f"{r['true_bits']:.3f} ± {r['true_se_bits']:.3f}; T+Z: "
                     f"{r['true_T_plus_Z_bits']:.3f} ± {r['true_T_plus_Z_se_bits']:.3f}")
        est = _fmt(r["jaxmi_bits"]) + (f" ± {r['jaxmi_sd_bits']:.3f}" if r.get("jaxmi_sd_bits") is not None else "")
        diff = r.get("abs_diff_draw0_nats")
        lines.append(f"| {r['task']} | {r['estimator']} | {r['N']:,} | {truth} | {est} | {_fmt(r.get('bmi_bits'))} | "
                     f"{'' if diff is None else f'{diff:.1e}'} | {r['jaxmi_s']:.3f} | {_fmt(r.get('bmi_s'))} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=5000, help="N per draw (default 5000)")
    ap.add_argument("--draws", type=int, default=5, help="independent draws per task (default 5)")
    ap.add_argument("--noise-vars", type=float, nargs="+", default=[0.1, 1.0], help="σ² of the KDE bounds")
    ap.add_argument("--no-bmi", action="store_true", help="do not use bmi even if it is installed")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    bmi = None if args.no_bmi else import_bmi()
    before = machine_info()
    rows = []
    if bmi is not None:
        for name in BMI_TASKS:
            task = bmi.benchmark.BENCHMARK_TASKS[name]
            rows.append(ksg_task(name, lambda n, seed, task=task: task.sample(n, seed), task.mutual_information,
                                 args.samples, args.draws, bmi))
            print(f"{name}: done", file=sys.stderr)
    else:
        for task in (GaussianPairs(2, 0.6), GaussianPairs(5, 0.9)):
            rows.append(ksg_task(task.name, task.sample, task.mutual_information(), args.samples, args.draws, None))
    mix = LabelledMixture()
    for nv in args.noise_vars:
        rows.extend(kde_task(mix, nv, args.samples, args.draws))
    md = table(rows)
    print(md)
    result = {**before, "load_avg_after": machine_info()["load_avg"], "samples": args.samples, "draws": args.draws,
              "k": K, "bmi": None if bmi is None else importlib.metadata.version("benchmark-mi"),
              "mixture_means": mix.means, "rows": rows, "markdown": md}
    return write_result(str(args.out), result)


if __name__ == "__main__":
    main()
