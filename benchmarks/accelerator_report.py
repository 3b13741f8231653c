#!/usr/bin/env python
"""What an accelerator user needs to know, in one command: training, attack and MI speed, memory.

On the default JAX device it measures, each after a warm-up (compilation) and with the result
blocked on:

* **training**: NT and PGD-7 AT epochs of LeNet on MNIST (bundled) and WideResNet-10-1 on
  CIFAR-10-shaped random images (throughput does not depend on pixel values), batch 128:
  images per second and the time of a full epoch at that rate (60,000 / 50,000 images);
* **attack**: the paper's evaluation PGD-7 on LeNet-MNIST and WideResNet-CIFAR, images/s;
* **MI measurement**: one full measurement at N = ``--samples`` (PGD-7 examples, then the
  KDE upper/lower bounds and binning on every probe, clean and adversarial, one probe group
  at a time: ``benchmarks/measurement_memory.py``) for LeNet-MNIST and the 96-px WideResNet
  (STL-10's size), with the peak memory of each;
* **KDE at scale**: both KDE bounds on the LeNet-MNIST probe widths at N = ``--kde-samples``
  (synthetic activations), against the Gram-matrix floor Σ 2·N²·D / rate with the matrix
  rate (float32, ``Precision.HIGHEST``) measured in the same run;
* the device, its memory and the overall peak memory.

Writes ``accelerator_report.json`` and ``accelerator_report.md`` (a Markdown table) into
``--out-dir``, updated after every part, so an interrupted run keeps what it measured.
``--quick`` uses tiny sizes (what the test suite runs on CPU).

    python benchmarks/accelerator_report.py --out-dir results/gpu     # ≤ 8 minutes on one GPU
    python benchmarks/accelerator_report.py --quick --out-dir /tmp/r  # seconds, any device
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import finish_report, machine_info, save_report  # noqa: E402
from measurement_memory import inputs as mi_inputs  # noqa: E402
from measurement_memory import measure, peak_bytes, reset_peak  # noqa: E402

from jaxmi import data, training  # noqa: E402
from jaxmi.config import OptimConfig, make_config  # noqa: E402
from jaxmi.estimators import estimate  # noqa: E402
from jaxmi.evaluation import make_adversary  # noqa: E402
from jaxmi.models import create_model, init_variables  # noqa: E402
from jaxmi.plan import pgd_config  # noqa: E402

LENET_WIDTHS = {"conv1": 3456, "conv2": 1024, "fc1": 120, "fc2": 84, "fc3": 10}
FULL_EPOCH = {"lenet-mnist": 60000, "wrn-cifar10": 50000}


def _images(case: str, n: int, seed: int = 0):
    if case == "lenet-mnist":
        ds = data.load_dataset("mnist", "train", max_examples=n)
        return ds.images, ds.labels
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


def _timed(fn, repeats: int = 1) -> tuple[float, object]:
    out = jax.block_until_ready(fn())  # warm-up: compiles
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def training_rows(examples: int, batch: int) -> list[dict]:
    rows = []
    for case, model in (("lenet-mnist", "lenet"), ("wrn-cifar10", "wrn")):
        x, y = _images(case, examples)
        x, y = jnp.asarray(x), jnp.asarray(y)
        module = create_model(model, 10)
        dataset = case.split("-")[1]
        for regime in ("nt", "at"):
            config = make_config("paper", dataset=dataset)
            tx = training.make_optimizer(OptimConfig(batch_size=batch), examples // batch)
            state = training.stack([training.create_train_state(module, jax.random.key(0), tuple(x.shape[1:]), tx)])
            epoch = training.make_train_epoch(module, tx, num_examples=examples, batch_size=batch, show_progress=False,
                                              attack=pgd_config(config, random_start=True) if regime == "at" else None,
                                              augment=dataset == "cifar10")
            holder = {"state": state}

            def run(epoch=epoch, holder=holder):
                holder["state"], m = epoch(holder["state"], x, y, jax.random.key(1)[None])
                return m

            seconds, _ = _timed(run)
            ips = (examples // batch) * batch / seconds
            rows.append({"case": case, "regime": regime, "examples": examples, "batch": batch, "seconds": seconds,
                         "images_per_s": ips, "full_epoch_seconds_at_this_rate": FULL_EPOCH[case] / ips})
            print(f"train {case} {regime.upper()}: {ips:,.0f} images/s", flush=True)
    return rows


def attack_rows(n: int) -> list[dict]:
    rows = []
    for case, model, shape, dataset in (("lenet-mnist", "lenet", (28, 28, 1), "mnist"),
                                        ("wrn-cifar10", "wrn", (32, 32, 3), "cifar10")):
        module = create_model(model, 10)
        v = init_variables(module, jax.random.key(0), shape)
        x, y = _images(case, n)
        x, y = data.to_float(jnp.asarray(x)), jnp.asarray(y)
        adversary = make_adversary(module, pgd_config(make_config("paper", dataset=dataset)), batch_size=min(n, 2500),
                                   stacked=False)
        seconds, _ = _timed(lambda: adversary(v["params"], v["batch_stats"], x, y))
        rows.append({"case": case, "images": n, "seconds": seconds, "images_per_s": n / seconds})
        print(f"PGD-7 {case}: {n / seconds:,.0f} images/s", flush=True)
    return rows


def mi_rows(samples: int, wrn_size: int) -> list[dict]:
    rows = []
    for model, size in (("lenet", 28), ("wrn", wrn_size)):
        module, variables, x, y, dataset = mi_inputs(model, size, samples)
        passes = {}
        measure(module, variables, x, y, dataset, passes=passes)  # warm-up: compiles every part at this size
        reset_peak()
        t0 = time.perf_counter()
        r = measure(module, variables, x, y, dataset, passes=passes)
        rows.append({"case": f"{model}-{size}px", "samples": samples, "seconds": time.perf_counter() - t0,
                     "attack_seconds": r["attack_seconds"], "information_seconds": r["information_seconds"],
                     "peak_gib": peak_bytes() / 2 ** 30, "widest_probe": max(r["widths"].values())})
        print(f"MI measurement {model} {size}px N={samples}: {rows[-1]['seconds']:.1f} s, peak "
              f"{rows[-1]['peak_gib']:.2f} GiB", flush=True)
    return rows


def matmul_rate(size: int) -> float:
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    f = jax.jit(lambda a: jnp.dot(a, a, precision=jax.lax.Precision.HIGHEST))
    seconds, _ = _timed(lambda: f(a), repeats=3)
    return 2.0 * size ** 3 / seconds


def kde_rows(n: int, rate: float) -> list[dict]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n)
    probes = {p: jnp.asarray(rng.standard_normal((n, d)).astype(np.float32) * (2.0 / np.sqrt(d)))
              for p, d in LENET_WIDTHS.items()}
    seconds, _ = _timed(lambda: estimate(probes, y, methods=("kde_upper", "kde_lower"), num_classes=10))
    floor = sum(2.0 * n * n * d for d in LENET_WIDTHS.values()) / rate
    print(f"KDE N={n}: {seconds:.2f} s, {seconds / floor:.1f}× the Gram floor", flush=True)
    return [{"case": "lenet-mnist widths", "samples": n, "seconds": seconds, "gram_floor_seconds": floor,
             "times_floor": seconds / floor}]


def markdown(report: dict) -> str:
    lines = [f"Device: {report['device']} (JAX {report['jax']}); {report.get('memory', '')}", "",
             "| part | case | figure |", "| --- | --- | --- |"]
    for r in report.get("training", []):
        lines.append(f"| training, batch {r['batch']} | {r['case']} {r['regime'].upper()} | {r['images_per_s']:,.0f} images/s "
                     f"(full epoch {r['full_epoch_seconds_at_this_rate']:.1f} s at this rate) |")
    for r in report.get("attack", []):
        lines.append(f"| PGD-7 (evaluation) | {r['case']} | {r['images_per_s']:,.0f} images/s |")
    for r in report.get("mi", []):
        lines.append(f"| one MI measurement, N = {r['samples']:,} | {r['case']} | {r['seconds']:.1f} s "
                     f"(attack {r['attack_seconds']:.1f} s, estimators {r['information_seconds']:.1f} s); "
                     f"peak {r['peak_gib']:.2f} GiB |")
    for r in report.get("kde", []):
        lines.append(f"| KDE both bounds, N = {r['samples']:,} | {r['case']} | {r['seconds']:.2f} s = "
                     f"{r['times_floor']:.1f}× the Gram floor ({report['matmul_tflops']:.1f} TFLOP/s float32) |")
    if "peak_gib" in report:
        lines.append(f"| peak memory, whole report | | {report['peak_gib']:.2f} GiB |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds; the test suite)")
    ap.add_argument("--samples", type=int, default=5000, help="N of the MI measurements")
    ap.add_argument("--kde-samples", type=int, default=50000)
    ap.add_argument("--train-examples", type=int, default=25600)
    ap.add_argument("--parts", nargs="+", default=["training", "attack", "mi", "kde"],
                    choices=["training", "attack", "mi", "kde"])
    args = ap.parse_args(argv)
    if args.quick:
        args.samples, args.kde_samples, args.train_examples = 48, 200, 256
    report = {**machine_info(), "quick": args.quick}
    try:
        stats = jax.devices()[0].memory_stats() or {}
        report["memory"] = f"{stats['bytes_limit'] / 2 ** 30:.1f} GiB device memory" if "bytes_limit" in stats else ""
    except Exception:  # noqa: BLE001 - backends without statistics
        report["memory"] = ""

    def save():
        report["peak_gib"] = peak_bytes() / 2 ** 30
        save_report(report, args.out_dir, "accelerator_report", markdown)

    reset_peak()
    if "training" in args.parts:
        report["training"] = training_rows(args.train_examples, 128 if not args.quick else 32)
        save()
    if "attack" in args.parts:
        report["attack"] = attack_rows(10000 if not args.quick else 64)
        save()
    if "mi" in args.parts:
        report["mi"] = mi_rows(args.samples, 96 if not args.quick else 32)
        save()
    if "kde" in args.parts:
        report["matmul_tflops"] = matmul_rate(8192 if not args.quick else 256) / 1e12
        report["kde"] = kde_rows(args.kde_samples, report["matmul_tflops"] * 1e12)
        save()
    report["peak_gib"] = peak_bytes() / 2 ** 30
    return finish_report(report, args.out_dir, "accelerator_report", markdown)


if __name__ == "__main__":
    main()
