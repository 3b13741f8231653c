"""Estimator throughput: jaxmi vs the paper-way NumPy baseline, against the Gram-matrix floor.

For the probe shapes of LeNet-MNIST, LeNet-CIFAR and WideResNet-CIFAR and N samples
(default N ∈ {1000, 5000, 10000, 50000}), times one full MI measurement (KDE upper + lower
bound, binning; I(X;T) and I(T;Y); every probe) and each part:

* **jaxmi**: ``jaxmi.estimators.estimate`` on the default JAX device(s).
* **baseline** (``_baselines.py``): the paper's way in float32 NumPy — the full N × N
  distance matrix recomputed for every bound and every class, ``np.unique`` binning per
  layer and per class. Cases whose N × N temporaries would not fit in memory are skipped
  and reported as such (``--baseline-max-n`` caps it further).

Every timing is the median of ``--repeats`` runs after one warm-up run (jaxmi compiles
there; the baseline warms up on the first 500 rows, enough to load BLAS, to avoid paying a
minutes-long case twice). The baseline's full measurement is the sum of its KDE and binning
medians (it computes them independently). The same run measures the machine's dense
float32 matrix-product rate (``jnp.dot`` at ``Precision.HIGHEST``, the precision jaxmi's
Gram products use; best of several square sizes) and reports jaxmi's KDE time as a multiple
of the Gram-matrix floor Σ_probes 2·N²·D / rate (the full, unsymmetrised Gram product; jaxmi
computes only the upper triangle, so < 1× is possible).

Activations are synthetic (MNIST's test split has 10,000 images; N = 50,000 needs more):
Gaussian with class-dependent means, scaled so ‖t‖² ≈ min(D, 2000) — the regime where
jaxmi's float32 Gram pass is used (its float64 host fallback, taken only for huge norms
with close neighbours, is reported if it triggers). Labels: 10 balanced random classes.

    python benchmarks/estimator_throughput.py                      # the full grid (slow on CPU)
    python benchmarks/estimator_throughput.py --models lenet-mnist --samples 1000 5000 10000 50000
    python benchmarks/estimator_throughput.py --quick              # seconds: a smoke run
    python benchmarks/estimator_throughput.py --max-gram-tflop 50  # skip jaxmi cases above a budget
    python benchmarks/estimator_throughput.py --parts kde binning --single-run-above-tflop 100
                                                 # the CPU grid of the README (WRN N=50k run once)

Output: a table on stdout and JSON (``--out``, default
``benchmarks/results/estimator_throughput.json``, written atomically and updated after every
case, so an interrupted run keeps what it measured). Runs unchanged on CPU, GPU and TPU
(jaxmi on the default backend; the baseline always on the host CPU).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

try:  # imported as benchmarks.estimator_throughput
    from . import _baselines
    from .mi_measurement import cpu_name
except ImportError:  # run as a script (benchmarks/ is on sys.path)
    import _baselines
    from mi_measurement import cpu_name

import jax
import jax.numpy as jnp

from jaxmi import backend, estimators
from jaxmi.estimators import kde_pass
from jaxmi.results import write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "estimator_throughput.json"
SHAPES = {  # probe widths of the paper's models (jaxmi.models.probe_widths)
    "lenet-mnist": {"conv1": 3456, "conv2": 1024, "fc1": 120, "fc2": 84, "fc3": 10},
    "lenet-cifar": {"conv1": 4704, "conv2": 1600, "fc1": 120, "fc2": 84, "fc3": 10},
    "wrn-cifar": {"conv": 16384, "block1": 16384, "block2": 16384, "block3": 8192, "logits": 10},
}
PARTS = {"kde": ("kde_upper", "kde_lower"), "binning": ("binning",), "full": estimators.METHODS}
NUM_CLASSES = 10


def matmul_rate(repeats: int = 5, sizes=None) -> dict:
    """Best dense float32 matmul rate (FLOP/s) of ``jnp.dot`` at HIGHEST precision over square sizes."""
    if not sizes:
        sizes = (1024, 2048, 4096) if jax.default_backend() == "cpu" else (4096, 8192, 16384)
    f = jax.jit(lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST))
    per_size = {}
    for s in sizes:
        ka, kb = jax.random.split(jax.random.key(s))
        a = jax.random.normal(ka, (s, s), jnp.float32)
        b = jax.random.normal(kb, (s, s), jnp.float32)
        f(a, b).block_until_ready()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a, b).block_until_ready()
            times.append(time.perf_counter() - t0)
        per_size[s] = 2.0 * s ** 3 / statistics.median(times)
    best = max(per_size, key=per_size.get)
    return {"flops_per_s": per_size[best], "best_size": best, "per_size_flops_per_s": per_size}


def synthetic_probes(n: int, widths: dict[str, int], seed: int):
    """Gaussian activations with class-dependent means, ‖t‖² ≈ min(D, 2000), generated on the device."""
    key = jax.random.key(seed)
    y = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), jnp.arange(n) % NUM_CLASSES), np.int32)
    probes = {}
    for i, (name, d) in enumerate(widths.items()):
        km, kn = jax.random.split(jax.random.fold_in(key, i + 1))
        scale = float(np.sqrt(min(d, 2000) / d))
        means = jax.random.normal(km, (NUM_CLASSES, d), jnp.float32) * (0.6 * scale)
        probes[name] = means[jnp.asarray(y)] + jax.random.normal(kn, (n, d), jnp.float32) * (0.8 * scale)
    return jax.block_until_ready(probes), y


def _median_time(fn, repeats: int, warmup=None) -> tuple[float, list[float]]:
    """Median of ``repeats`` timed calls after one warm-up (``warmup``, default ``fn``;
    ``False``: none, so compilation is timed too)."""
    if warmup is not False:
        (warmup or fn)()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def baseline_fits(n: int, widths: dict[str, int], available: int) -> tuple[bool, str]:
    """Whether the paper-way baseline's N × N float32 temporaries fit in 80 % of the free memory."""
    need = 5 * 4 * n * n + 4 * n * sum(widths.values())  # ~5 live N×N arrays (dists, scaled, exp, ...)
    if need > 0.8 * available:
        return False, (f"baseline skipped: its N x N temporaries need ~{need / 2**30:.1f} GiB, "
                       f"more than 80% of the {available / 2**30:.1f} GiB free")
    return True, ""


class _CountFloat64Path:
    """Counts calls of jaxmi's float64 host fallback (see estimators.kde_mi) while active."""

    def __enter__(self):
        self.calls, self._real = 0, kde_pass.kde_sums_float64

        def counted(*a, **k):
            self.calls += 1
            return self._real(*a, **k)

        kde_pass.kde_sums_float64 = counted
        return self

    def __exit__(self, *exc):
        kde_pass.kde_sums_float64 = self._real


def _merge(a: dict, b: dict) -> dict:
    """Two {probe: {method: {...}}} results for different methods, merged per probe."""
    return {p: {**a[p], **b[p]} for p in a}


def run_case(model: str, n: int, args, rate: float, available: int) -> dict:
    widths = SHAPES[model]
    gram_flop = float(sum(2.0 * n * n * d for d in widths.values()))
    case = {"model": model, "samples": n, "probe_widths": widths, "gram_flop": gram_flop,
            "gram_floor_s": gram_flop / rate}
    if args.max_gram_tflop is not None and gram_flop > args.max_gram_tflop * 1e12:
        case["skipped"] = (f"skipped: Gram floor {gram_flop / 1e12:.1f} TFLOP > --max-gram-tflop "
                           f"{args.max_gram_tflop}")
        return case
    single = args.single_run_above_tflop is not None and gram_flop > args.single_run_above_tflop * 1e12
    parts = [p for p in args.parts if not (single and p == "full")]
    repeats, warmup = (1, False) if single else (args.repeats, None)
    if single:
        case["timing"] = (f"one run, no warm-up (compilation included), KDE and binning only: Gram floor "
                          f"{gram_flop / 1e12:.0f} TFLOP > --single-run-above-tflop {args.single_run_above_tflop}")
    probes, labels = synthetic_probes(n, widths, args.seed)
    labels_dev = jnp.asarray(labels)
    case["jaxmi_s"], case["jaxmi_times_s"], results = {}, {}, {}
    for part, methods in PARTS.items():
        if part not in parts:
            continue

        def call(methods=methods, part=part):
            results[part] = estimators.estimate(probes, labels_dev, methods=methods, num_classes=NUM_CLASSES,
                                                block_size=args.block_size)
        with _CountFloat64Path() as f64:
            case["jaxmi_s"][part], case["jaxmi_times_s"][part] = _median_time(call, repeats, warmup)
        case["float64_fallback"] = case.get("float64_fallback", False) or f64.calls > 0
        print(f"  jaxmi {model} N={n} {part}: {case['jaxmi_s'][part]:.3f} s", flush=True)
    if "full" not in parts:  # the full measurement runs the two parts one after the other
        case["jaxmi_s"]["full"] = case["jaxmi_s"]["kde"] + case["jaxmi_s"]["binning"]
        results["full"] = _merge(results["kde"], results["binning"])
        case["jaxmi_full_is"] = "sum of the KDE and binning medians (--parts without full)"
    case["jaxmi_samples_per_s"] = {p: n / t for p, t in case["jaxmi_s"].items()}
    case["kde_x_gram_floor"] = case["jaxmi_s"]["kde"] / case["gram_floor_s"]
    case["mi_bits_jaxmi"] = results["full"]

    fits, why = baseline_fits(n, widths, available)
    if args.baseline_max_n is not None and n > args.baseline_max_n:
        fits, why = False, f"baseline skipped: N > --baseline-max-n {args.baseline_max_n}"
    if args.no_baseline:
        fits, why = False, "baseline skipped: --no-baseline"
    if fits:
        host = {k: np.asarray(v, np.float32) for k, v in probes.items()}
        small = {k: v[:500] for k, v in host.items()}
        case["baseline_s"], case["baseline_times_s"], bres = {}, {}, {}
        for part in ("kde", "binning"):
            methods = PARTS[part]

            def call(methods=methods, part=part):
                bres[part] = _baselines.baseline_measure(host, labels, methods=methods)

            case["baseline_s"][part], case["baseline_times_s"][part] = _median_time(
                call, repeats, warmup=lambda methods=methods: _baselines.baseline_measure(
                    small, labels[:500], methods=methods))
            print(f"  baseline {model} N={n} {part}: {case['baseline_s'][part]:.3f} s", flush=True)
        case["baseline_s"]["full"] = case["baseline_s"]["kde"] + case["baseline_s"]["binning"]
        case["baseline_samples_per_s"] = {p: n / t for p, t in case["baseline_s"].items()}
        case["speedup"] = {p: case["baseline_s"][p] / case["jaxmi_s"][p] for p in PARTS}
        full_b = _merge(bres["kde"], bres["binning"])
        case["max_abs_diff_bits"] = {m: float(max(abs(results["full"][p][m][k] - full_b[p][m][k])
                                                  for p in full_b for k in ("I_XT", "I_TY")))
                                     for m in estimators.METHODS}
    else:
        case["baseline_skipped"] = why
    del probes
    return case


def format_table(res: dict) -> str:
    lines = [
        f"MI estimator throughput: KDE upper+lower, binning; I(X;T) and I(T;Y); all probes; {NUM_CLASSES} classes",
        f"jaxmi device: {res['device']} x{res['device_count']} ({res['platform']}); baseline: NumPy on host CPU "
        f"({res['host_cpu']}, {res['host_cores']} cores)",
        f"dense float32 matmul rate (jnp.dot, HIGHEST, {res['matmul']['best_size']}^2): "
        f"{res['matmul']['flops_per_s'] / 1e9:.0f} GFLOP/s; median of {res['repeats']} after one warm-up; "
        f"load average before/after: {res['loadavg_before'][0]:.2f} / {res['loadavg_after'][0]:.2f}",
        "",
        f"{'model':<12}{'N':>7}  {'part':<8}{'jaxmi s':>10}{'samples/s':>11}{'baseline s':>12}"
        f"{'samples/s':>11}{'speedup':>9}{'KDE/floor':>11}",
    ]
    for c in res["cases"]:
        if "skipped" in c:
            lines.append(f"{c['model']:<12}{c['samples']:>7}  {c['skipped']}")
            continue
        for part in PARTS:
            j = c["jaxmi_s"][part]
            b = c.get("baseline_s", {}).get(part)
            bs = f"{b:>12.3f}{c['samples'] / b:>11.0f}{b / j:>8.1f}x" if b else f"{'-':>12}{'-':>11}{'-':>9}"
            floor = f"{c['kde_x_gram_floor']:>10.2f}x" if part == "kde" else ""
            lines.append(f"{c['model']:<12}{c['samples']:>7}  {part:<8}{j:>10.3f}{c['samples'] / j:>11.0f}{bs}{floor}")
        notes = [c["timing"]] if "timing" in c else []
        if "baseline_skipped" in c:
            notes.append(c["baseline_skipped"])
        if c.get("float64_fallback"):
            notes.append("jaxmi took its float64 host path on some probe")
        if "max_abs_diff_bits" in c:
            notes.append("max |jaxmi - baseline| bits: "
                         + ", ".join(f"{m} {v:.1e}" for m, v in c["max_abs_diff_bits"].items()))
        notes.append(f"Gram floor {c['gram_floor_s']:.3f} s ({c['gram_flop'] / 1e12:.2f} TFLOP)")
        lines.append(f"{'':<21}" + "; ".join(notes))
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    ap.add_argument("--samples", nargs="+", type=int, default=[1000, 5000, 10000, 50000], help="N values")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per case (median; default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: LeNet-MNIST shapes, N = 500, 1 repeat (overrides --models/--samples/--repeats)")
    ap.add_argument("--baseline-max-n", type=int, default=None, help="skip the baseline above this N")
    ap.add_argument("--no-baseline", action="store_true", help="time jaxmi only")
    ap.add_argument("--max-gram-tflop", type=float, default=None,
                    help="skip cases whose Gram floor exceeds this many TFLOP (e.g. WRN at N = 50,000 on a CPU)")
    ap.add_argument("--single-run-above-tflop", type=float, default=None,
                    help="cases whose Gram floor exceeds this many TFLOP run once, without a warm-up "
                         "(compilation, seconds, is then timed too) and without the separate full pass "
                         "(e.g. 100: WRN at N = 50,000 takes ~15 min per KDE pass on a 2-core CPU)")
    ap.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS),
                    help="jaxmi parts to time (default all; without 'full', jaxmi's full time is the sum "
                         "of the KDE and binning medians, which saves one KDE pass per repeat at large N)")
    ap.add_argument("--block-size", type=int, default=None, help="KDE block size (default: automatic)")
    ap.add_argument("--matmul-sizes", nargs="+", type=int, default=None,
                    help="square sizes for the matmul-rate measurement (default 1024 2048 4096 on CPU, "
                         "4096 8192 16384 on accelerators)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.samples, args.repeats = ["lenet-mnist"], [500], 1
    if args.repeats < 1 or min(args.samples) < 2:
        ap.error("--repeats must be >= 1 and every N >= 2")
    if not {"kde", "binning"} <= set(args.parts):
        ap.error("--parts must include kde and binning")

    dev = jax.devices()[0]
    res = {
        "benchmark": "estimator_throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": getattr(dev, "device_kind", str(dev)),
        "platform": dev.platform,
        "device_count": jax.local_device_count(),
        "host_cpu": cpu_name(),
        "host_cores": os.cpu_count(),
        "loadavg_before": list(os.getloadavg()),
        "versions": {"jax": jax.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "repeats": args.repeats,
        "activations": "synthetic Gaussian, class-dependent means, |t|^2 ~ min(D, 2000); 10 balanced classes",
        "baseline_full_is": "sum of its KDE and binning medians",
        "cases": [],
    }
    res["matmul"] = matmul_rate(sizes=args.matmul_sizes)
    rate = res["matmul"]["flops_per_s"]
    for model in args.models:
        for n in args.samples:
            available = backend.available_memory_bytes(jax.devices("cpu")[0])
            res["cases"].append(run_case(model, n, args, rate, available))
            res["loadavg_after"] = list(os.getloadavg())
            write_json(args.out, res)
            print(f"[done] {model} N={n}", flush=True)
    res["loadavg_after"] = list(os.getloadavg())
    print(format_table(res))
    write_json(args.out, res)
    print(f"\nwrote {args.out}")
    return res


if __name__ == "__main__":
    main()
