#!/usr/bin/env python
"""Training throughput: NT and PGD-AT epochs, jaxmi against a plain PyTorch baseline, same run.

For LeNet-MNIST and LeNet-CIFAR (real data: bundled MNIST; CIFAR-10 from ``--cifar-dir``, or
random uint8 images of CIFAR's shape when no copy is given — throughput does not depend on
pixel values), times one pass over ``--examples`` training images (default: a 12,800-image
slice, 100 batches, so the script finishes in minutes on a CPU; ``--examples 0`` = a full
epoch) for

* jaxmi: :func:`jaxmi.training.make_train_epoch` (the code the experiments run), and
* PyTorch: a Python loop over batches with PGD as a Python loop over steps
  (``benchmarks/_torch_baseline.py``), the way the paper's code is written,

with the same model, initialisation scheme, batch size (128), optimizer (SGD, momentum 0.9)
and attack (PGD-7 with random start; MNIST ε 45/255 step 8/255, CIFAR 8/255 step 2/255).
Each is warmed up first (jaxmi compiles there), then timed ``--repeats`` times; the median
is reported as images per second, with the jaxmi/PyTorch ratio. Prints a table and writes
JSON (``--out``, default ``benchmarks/results/training_throughput.json``, atomically).

    python benchmarks/training_throughput.py                       # CPU: a few minutes
    python benchmarks/training_throughput.py --examples 0 --repeats 1   # full epochs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _torch_baseline as tb  # noqa: E402
from _optional import require  # noqa: E402
from _report import machine_info, write_result  # noqa: E402

from jaxmi import backend, data, progress, training  # noqa: E402
from jaxmi.config import OptimConfig  # noqa: E402
from jaxmi.attacks import PGDConfig  # noqa: E402
from jaxmi.models import create_model  # noqa: E402

ATTACKS = {"mnist": PGDConfig(45 / 255, 8 / 255, 7, True), "cifar10": PGDConfig(8 / 255, 2 / 255, 7, True)}


def load(name: str, cifar_dir: str | None, n: int):
    if name == "mnist":
        ds = data.load_dataset("mnist", "train")
        return ds.images[:n], ds.labels[:n], "bundled MNIST"
    if cifar_dir:
        ds = data.load_dataset("cifar10", "train", data_dir=cifar_dir)
        return ds.images[:n], ds.labels[:n], f"CIFAR-10 from {cifar_dir}"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32),
            "random uint8 of CIFAR-10's shape")


def lenet_cases(datasets, modes, cifar_dir: str | None, examples: int):
    """(model name, mode, images, labels, data source, attack or None) for every dataset × mode."""
    for name in datasets:
        n = examples or (60000 if name == "mnist" else 50000)
        images, labels, source = load(name, cifar_dir, n)
        for mode in modes:
            yield f"lenet-{name}", mode, images, labels, source, (ATTACKS[name] if mode == "at" else None)


def time_jaxmi(images, labels, attack, *, batch_size, repeats, loop):
    module = create_model("lenet", 10)
    n = len(labels)
    tx = training.make_optimizer(OptimConfig(learning_rate=0.1, batch_size=batch_size), n // batch_size)
    state = training.stack([training.create_train_state(module, jax.random.key(0), images.shape[1:], tx)])
    epoch = training.make_train_epoch(module, tx, num_examples=n, batch_size=batch_size, attack=attack,
                                      show_progress=False, loop=loop)
    x, y = jnp.asarray(images), jnp.asarray(labels)
    state, m = epoch(state, x, y, jax.random.key(1)[None])  # warm-up (compiles)
    jax.block_until_ready(m)
    times, losses = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        state, m = epoch(state, x, y, jax.random.key(2 + r)[None])
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
        losses.append(training.epoch_means(m)[0]["loss"])
    return times, losses


def time_torch(images, labels, attack, *, batch_size, repeats, threads):
    torch = require("torch")

    torch.set_num_threads(threads)
    model, opt = tb.make(images.shape[-1], images.shape[1])
    warm = min(len(labels), 8 * batch_size)
    tb.train_epoch(model, opt, images[:warm], labels[:warm], batch_size=batch_size, attack=attack)
    times, losses = [], []
    for r in range(repeats):
        t, loss = tb.train_epoch(model, opt, images, labels, batch_size=batch_size, attack=attack, seed=r)
        times.append(t)
        losses.append(loss)
    return times, losses


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"], choices=["mnist", "cifar10"])
    p.add_argument("--modes", nargs="+", default=["nt", "at"], choices=["nt", "at"])
    p.add_argument("--examples", type=int, default=12800, help="training images per timed pass (0: the full split)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cifar-dir", default=None, help="CIFAR-10 copy (image folders / python batches)")
    p.add_argument("--loop", default="auto", help="jaxmi epoch loop: auto, scan, unrolled")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "training_throughput.json"))
    args = p.parse_args(argv)
    if not args.skip_torch:
        require("torch")  # before any timing: without torch, stop with the install line (or pass --skip-torch)
    progress.enabled(False)

    rows = []
    for model, mode, images, labels, source, attack in lenet_cases(args.datasets, args.modes, args.cifar_dir,
                                                                   args.examples):
        jt, jl = time_jaxmi(images, labels, attack, batch_size=args.batch_size, repeats=args.repeats, loop=args.loop)
        row = {"model": model, "mode": mode, "examples": len(labels), "data": source,
               "jaxmi_seconds": jt, "jaxmi_loss": jl, "jaxmi_images_per_s": len(labels) / statistics.median(jt)}
        if not args.skip_torch:
            tt, tl = time_torch(images, labels, attack, batch_size=args.batch_size, repeats=args.repeats,
                                threads=args.torch_threads)
            row.update(torch_seconds=tt, torch_loss=tl, torch_images_per_s=len(labels) / statistics.median(tt))
            row["ratio_jaxmi_over_torch"] = row["jaxmi_images_per_s"] / row["torch_images_per_s"]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}), flush=True)

    result = {
        **machine_info(),
        "torch": None if args.skip_torch else __import__("torch").__version__,
        "batch_size": args.batch_size, "repeats": args.repeats, "loop": backend.resolve_loop(args.loop),
        "rows": rows,
    }
    print(f"\ndevice: {result['device']} ({result['cpu_count']} CPUs), jax {jax.__version__}, torch {result['torch']}, "
          f"median of {args.repeats}, batch {args.batch_size}")
    print(f"{'model':<14} {'mode':<4} {'images':>7} {'jaxmi img/s':>12} {'torch img/s':>12} {'jaxmi/torch':>11}")
    for r in rows:
        print(f"{r['model']:<14} {r['mode']:<4} {r['examples']:>7} {r['jaxmi_images_per_s']:>12.0f} "
              f"{r.get('torch_images_per_s', float('nan')):>12.0f} {r.get('ratio_jaxmi_over_torch', float('nan')):>10.2f}×")
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
