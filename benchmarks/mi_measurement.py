"""Times one full MI measurement: jaxmi.estimators.estimate vs a NumPy baseline.

One measurement = the three estimators (KDE upper bound, KDE lower bound, binning) × I(X;T)
and I(T;Y) × the five LeNet-MNIST probes (widths 3456, 1024, 120, 84, 10) on N samples,
which is what the paper computes at every logged epoch. Both implementations run in the
same process on the same activations: one warm-up call each (jaxmi compiles there), then
the median of ``--repeats`` timed calls, for the whole measurement and for its KDE and
binning parts separately. The baseline (``_baselines.py``) follows the paper's published
code: float32 NumPy, the full N × N distance matrix recomputed for each bound and class.

Activations (not timed): by default real ones, the first N bundled MNIST test images
through a LeNet with PyTorch-default random initialisation (nothing is trained);
``--synthetic`` uses Gaussian activations of the same widths instead.

    python benchmarks/mi_measurement.py [--samples 5000] [--repeats 3] [--synthetic] [--out PATH]

Runs unchanged on CPU, GPU or TPU (jaxmi on the default JAX device; the baseline always
on the host CPU with NumPy).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

try:  # imported as benchmarks.mi_measurement
    from . import _baselines
except ImportError:  # run as a script (benchmarks/ is on sys.path)
    import _baselines

import jax
import jax.numpy as jnp

import jaxmi
from jaxmi.estimators import METHODS, estimate
from jaxmi.models import apply_model, create_model, init_variables
from jaxmi.results import write_json

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "mi_measurement.json"
MNIST_DIR = Path(jaxmi.__file__).resolve().parent / "datasets" / "mnist"
LENET_MNIST_WIDTHS = {"conv1": 3456, "conv2": 1024, "fc1": 120, "fc2": 84, "fc3": 10}
KDE = ("kde_upper", "kde_lower")
PARTS = {"all": METHODS, "kde": KDE, "binning": ("binning",)}


def load_mnist_test(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` bundled MNIST test images [n, 28, 28, 1] in [0, 1] and their labels."""
    with gzip.open(MNIST_DIR / "t10k-images-idx3-ubyte.gz", "rb") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    if n > len(images):
        raise ValueError(f"--samples {n} exceeds the {len(images)} bundled MNIST test images; use --synthetic.")
    return images[:n].astype(np.float32) / 255.0, labels[:n].astype(np.int32)


def lenet_probes(n: int, seed: int) -> tuple[dict[str, jax.Array], np.ndarray]:
    """Real activations: LeNet (PyTorch-default random init) on the first n MNIST test images."""
    x, y = load_mnist_test(n)
    module = create_model("lenet")
    params = init_variables(module, jax.random.key(seed), (28, 28, 1))["params"]
    fwd = jax.jit(lambda p, xb: apply_model(module, p, {}, xb)[1])
    chunks = [fwd(params, jnp.asarray(x[s:s + 1000])) for s in range(0, n, 1000)]
    probes = {k: jnp.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    widths = {k: int(v.shape[1]) for k, v in probes.items()}
    if widths != LENET_MNIST_WIDTHS:
        raise RuntimeError(f"unexpected LeNet probe widths {widths}; expected {LENET_MNIST_WIDTHS}")
    return jax.block_until_ready(probes), y


def synthetic_probes(n: int, seed: int) -> tuple[dict[str, jax.Array], np.ndarray]:
    """Gaussian activations of the LeNet-MNIST widths with class-dependent means."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.int32)
    probes = {}
    for name, d in LENET_MNIST_WIDTHS.items():
        means = rng.standard_normal((10, d)).astype(np.float32) * 0.3
        probes[name] = jnp.asarray(means[y] + rng.standard_normal((n, d)).astype(np.float32) * 0.5)
    return probes, y


def _time(fn, repeats: int) -> tuple[list[float], object]:
    fn()  # warm-up (compilation for jaxmi, page-in/BLAS start-up for the baseline)
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def _max_abs_diff(a, b, methods) -> dict[str, float]:
    """Per method, max |a − b| over the probes and I(X;T), I(T;Y) ({probe: {method: {...}}} results)."""
    return {m: float(max(abs(a[p][m][k] - b[p][m][k]) for p in a for k in ("I_XT", "I_TY")))
            for m in methods}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_table(res: dict) -> str:
    lines = [
        f"MI measurement: 3 estimators x I(X;T), I(T;Y) x LeNet-MNIST probes {list(res['probe_widths'].values())}, "
        f"N = {res['samples']} ({res['activations']} activations)",
        f"jaxmi device: {res['device']} (platform {res['platform']}); baseline: NumPy on host CPU "
        f"({res['host_cpu']}, {res['host_cores']} cores)",
        f"median of {res['repeats']} runs after one warm-up; load average before/after: "
        f"{res['loadavg_before'][0]:.2f} / {res['loadavg_after'][0]:.2f}",
        "",
        f"{'part':<24}{'jaxmi (s)':>12}{'baseline (s)':>15}{'baseline/jaxmi':>17}",
    ]
    names = {"all": "full measurement", "kde": "KDE (upper + lower)", "binning": "binning"}
    for part, label in names.items():
        j, b = res["median_s"]["jaxmi"][part], res["median_s"]["baseline"][part]
        lines.append(f"{label:<24}{j:>12.3f}{b:>15.3f}{b / j:>16.1f}x")
    lines.append("")
    lines.append("agreement, max |jaxmi - baseline| over probes and I(X;T), I(T;Y) (bits): "
                 + ", ".join(f"{m} {v:.1e}" for m, v in res["max_abs_diff_bits"].items()))
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=5000, help="N, samples per measurement (default 5000)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per implementation (median; default 3)")
    ap.add_argument("--synthetic", action="store_true", help="Gaussian activations instead of LeNet on MNIST")
    ap.add_argument("--seed", type=int, default=0, help="LeNet init / synthetic data seed")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = ap.parse_args(argv)
    if args.samples < 2 or args.repeats < 1:
        ap.error("--samples must be >= 2 and --repeats >= 1")

    load_before = os.getloadavg()
    make = synthetic_probes if args.synthetic else lenet_probes
    probes, labels = make(args.samples, args.seed)
    probes_host = {k: np.asarray(v, np.float32) for k, v in probes.items()}
    labels_dev = jnp.asarray(labels)

    times: dict[str, dict[str, list[float]]] = {"jaxmi": {}, "baseline": {}}
    results: dict[str, dict] = {"jaxmi": {}, "baseline": {}}
    for part, methods in PARTS.items():
        times["jaxmi"][part], results["jaxmi"][part] = _time(
            lambda: estimate(probes, labels_dev, methods=methods, num_classes=10), args.repeats)
        times["baseline"][part], results["baseline"][part] = _time(
            lambda: _baselines.baseline_measure(probes_host, labels, methods=methods), args.repeats)
    load_after = os.getloadavg()

    jx, bl = results["jaxmi"]["all"], results["baseline"]["all"]
    dev = jax.devices()[0]
    res = {
        "benchmark": "mi_measurement",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "activations": "synthetic Gaussian" if args.synthetic else "LeNet (PyTorch-default random init) on MNIST test",
        "samples": args.samples,
        "repeats": args.repeats,
        "seed": args.seed,
        "probe_widths": {k: int(v.shape[1]) for k, v in probes_host.items()},
        "device": getattr(dev, "device_kind", str(dev)),
        "platform": dev.platform,
        "device_count": jax.device_count(),
        "host_cpu": cpu_name(),
        "host_cores": os.cpu_count(),
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        "versions": {"jax": jax.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "times_s": times,
        "median_s": {impl: {p: statistics.median(v) for p, v in t.items()} for impl, t in times.items()},
        "max_abs_diff_bits": _max_abs_diff(jx, bl, METHODS),
        "mi_bits": {"jaxmi": jx, "baseline": bl},
    }
    res["speedup_baseline_over_jaxmi"] = {p: res["median_s"]["baseline"][p] / res["median_s"]["jaxmi"][p]
                                          for p in PARTS}
    print(format_table(res))
    write_json(args.out, res)
    print(f"\nwrote {args.out}")
    return res


if __name__ == "__main__":
    main()
