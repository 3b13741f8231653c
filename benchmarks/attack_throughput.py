#!/usr/bin/env python
"""Attack throughput: PGD-7 on batches of 2,500 test images, jaxmi against plain PyTorch, same run.

LeNet-MNIST (ε 45/255, step 8/255) and LeNet-CIFAR (8/255, 2/255), 7 steps from the clean
image, model in evaluation mode, randomly initialised with PyTorch's default scheme (attack
cost does not depend on the weights). jaxmi: :func:`jaxmi.attacks.pgd` jitted on one batch;
PyTorch: a Python loop over steps (``benchmarks/_torch_baseline.py``). Warm-up, then the
median of ``--repeats``; images per second and the ratio. Table on stdout, JSON in ``--out``.

    python benchmarks/attack_throughput.py
"""

from __future__ import annotations

import argparse
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

from jaxmi import data  # noqa: E402
from jaxmi.attacks import pgd  # noqa: E402
from jaxmi.models import apply_model, create_model, init_variables  # noqa: E402

SETTINGS = {"mnist": ((28, 28, 1), 45 / 255, 8 / 255), "cifar10": ((32, 32, 3), 8 / 255, 2 / 255)}


def images_for(name: str, n: int):
    if name == "mnist":
        ds = data.load_dataset("mnist", "test", max_examples=n)
        return ds.images, ds.labels
    rng = np.random.default_rng(0)  # attack cost does not depend on the pixels
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"], choices=sorted(SETTINGS))
    p.add_argument("--batch", type=int, default=2500)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "attack_throughput.json"))
    args = p.parse_args(argv)
    torch = require("torch")

    torch.set_num_threads(args.torch_threads)
    rows = []
    for name in args.datasets:
        shape, eps, step = SETTINGS[name]
        images, labels = images_for(name, args.batch)
        module = create_model("lenet", 10)
        v = init_variables(module, jax.random.key(0), shape)

        @jax.jit
        def attack(x, y):
            x = x.astype(jnp.float32) / 255.0
            f = lambda z: apply_model(module, v["params"], v["batch_stats"], z, train=False)[0]  # noqa: E731
            return pgd(f, x, y, eps=eps, step_size=step, steps=args.steps)

        x, y = jnp.asarray(images), jnp.asarray(labels)
        jax.block_until_ready(attack(x, y))
        jt = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(attack(x, y))
            jt.append(time.perf_counter() - t0)

        model, _ = tb.make(shape[-1], shape[0])
        model.eval()
        xt = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).contiguous()
        yt = torch.from_numpy(labels.astype(np.int64))
        tb.pgd(model, xt[:256], yt[:256], eps=eps, step_size=step, steps=args.steps, random_start=False)
        tt = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            tb.pgd(model, xt, yt, eps=eps, step_size=step, steps=args.steps, random_start=False)
            tt.append(time.perf_counter() - t0)
        row = {"model": f"lenet-{name}", "batch": args.batch, "steps": args.steps, "jaxmi_seconds": jt,
               "torch_seconds": tt, "jaxmi_images_per_s": args.batch / statistics.median(jt),
               "torch_images_per_s": args.batch / statistics.median(tt)}
        row["ratio_jaxmi_over_torch"] = row["jaxmi_images_per_s"] / row["torch_images_per_s"]
        rows.append(row)
    result = {**machine_info(), "torch": torch.__version__, "repeats": args.repeats, "rows": rows}
    print(f"device: {result['device']} ({result['cpu_count']} CPUs), jax {jax.__version__}, torch {torch.__version__}, "
          f"PGD-{args.steps} on {args.batch} images, median of {args.repeats}")
    print(f"{'model':<14} {'jaxmi img/s':>12} {'torch img/s':>12} {'jaxmi/torch':>11}")
    for r in rows:
        print(f"{r['model']:<14} {r['jaxmi_images_per_s']:>12.0f} {r['torch_images_per_s']:>12.0f} "
              f"{r['ratio_jaxmi_over_torch']:>10.2f}×")
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
