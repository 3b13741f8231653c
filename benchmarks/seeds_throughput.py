#!/usr/bin/env python
"""Many seeds at once: K vmapped training runs in one program against K sequential runs.

For LeNet-MNIST (bundled data) and LeNet-CIFAR (``--cifar-dir``, or random uint8 images of
CIFAR's shape: throughput does not depend on pixel values), NT and PGD-AT (7 steps, random
start), times one pass over ``--examples`` training images for

* one program: ``make_train_epoch(..., seed_loop=...)`` on K stacked states,
  one compiled program, with the seeds batched by ``jax.vmap`` (``vmap``) or looped over
  inside each step by ``lax.map`` (``map``, the CPU default);
* sequential: the single-run ``make_train_epoch`` called once per seed, K times (the cost of
  K separate runs, without their start-up and compilation).

Mode ``eval`` times what a multi-seed run does at every measurement instead: the clean and
PGD-7 evaluation (``jaxmi.evaluation.make_evaluator``, from the clean image) of K stacked
models on ``--examples`` images, on the mesh a K-seed run builds on this machine
(``jaxmi.plan.run_mesh``), against K single-model passes.

Both are compiled and warmed up first; each timed repeat runs all K seeds, and the median of
``--repeats`` is reported as seconds for the K seeds and the sequential/vmapped ratio. Prints
a table and writes JSON (``--out``, default ``benchmarks/results/seeds_throughput.json``,
atomically).

    python benchmarks/seeds_throughput.py                 # K = 4, 6,400 images, both models
    python benchmarks/seeds_throughput.py --seeds 8 --datasets mnist --modes at
    python benchmarks/seeds_throughput.py --seeds 3 --datasets mnist --modes eval --examples 2000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine_info, write_result  # noqa: E402
from training_throughput import lenet_cases  # noqa: E402

from jaxmi import backend, progress, training  # noqa: E402
from jaxmi.config import OptimConfig, make_config  # noqa: E402
from jaxmi.evaluation import make_evaluator  # noqa: E402
from jaxmi.plan import pgd_config, run_mesh  # noqa: E402
from jaxmi.models import create_model  # noqa: E402


def time_case(images, labels, attack, *, seeds: int, batch_size: int, repeats: int,
              seed_loops: tuple[str, ...]) -> dict:
    module = create_model("lenet", 10)
    n = len(labels)
    tx = training.make_optimizer(OptimConfig(learning_rate=0.05, batch_size=batch_size), n // batch_size)
    init_keys = jax.random.split(jax.random.key(0), seeds)
    kw = dict(num_examples=n, batch_size=batch_size, attack=attack, show_progress=False)
    multi = {sl: training.make_train_epoch(module, tx, seed_loop=sl, **kw) for sl in seed_loops}
    single = training.make_train_epoch(module, tx, **kw)  # on a stack of one: the unbatched step
    x, y = jnp.asarray(images), jnp.asarray(labels)
    shape = tuple(images.shape[1:])

    stacked = {sl: training.create_train_states(module, init_keys, shape, tx) for sl in seed_loops}
    separate = [training.stack([training.create_train_state(module, k, shape, tx)]) for k in init_keys]
    # Warm-up: compiles every program.
    for sl in seed_loops:
        stacked[sl], m = multi[sl](stacked[sl], x, y, jax.random.split(jax.random.key(1), seeds))
        jax.block_until_ready(m)
    for i in range(seeds):
        separate[i], m = single(separate[i], x, y, jax.random.key(100 + i)[None])
    jax.block_until_ready(m)

    times = {sl: [] for sl in seed_loops}
    t_seq = []
    for r in range(repeats):  # interleaved, so drifts in machine speed hit every variant alike
        keys = jax.random.split(jax.random.key(2 + r), seeds)
        for sl in seed_loops:
            t0 = time.perf_counter()
            stacked[sl], m = multi[sl](stacked[sl], x, y, keys)
            jax.block_until_ready(m)
            times[sl].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(seeds):
            separate[i], m = single(separate[i], x, y, keys[i:i + 1])
        jax.block_until_ready(m)
        t_seq.append(time.perf_counter() - t0)
    med_s = statistics.median(t_seq)
    out = {"sequential_seconds": t_seq, "sequential_median_s": med_s, "sequential_images_per_s": seeds * n / med_s}
    for sl in seed_loops:
        med = statistics.median(times[sl])
        out.update({f"{sl}_seconds": times[sl], f"{sl}_median_s": med, f"{sl}_images_per_s": seeds * n / med,
                    f"speedup_{sl}_over_sequential": med_s / med})
    return out


def time_eval_case(images, labels, attack, *, seeds: int, batch_size: int, repeats: int,
                   seed_loops: tuple[str, ...]) -> dict:
    """Clean + PGD evaluation of K stacked models on the K-seed run mesh against K one-model passes."""
    module = create_model("lenet", 10)
    shape = tuple(images.shape[1:])
    tx = training.make_optimizer(OptimConfig(learning_rate=0.05, batch_size=128), 1)
    init_keys = jax.random.split(jax.random.key(0), seeds)
    stacked = training.create_train_states(module, init_keys, shape, tx)
    separate = [training.stack([training.create_train_state(module, k, shape, tx)]) for k in init_keys]
    mesh = run_mesh(make_config("cpu", seeds=seeds))
    multi = {sl: make_evaluator(module, attack, batch_size=batch_size, mesh=mesh, seed_loop=sl) for sl in seed_loops}
    single = make_evaluator(module, attack, batch_size=batch_size, mesh=run_mesh(make_config("cpu")))
    x, y = jnp.asarray(images), jnp.asarray(labels)
    for sl in seed_loops:  # warm-up: compiles every program
        jax.block_until_ready(multi[sl](stacked.params, stacked.batch_stats, x, y))
    jax.block_until_ready(single(separate[0].params, separate[0].batch_stats, x, y))
    times = {sl: [] for sl in seed_loops}
    t_seq = []
    for _ in range(repeats):
        for sl in seed_loops:
            t0 = time.perf_counter()
            jax.block_until_ready(multi[sl](stacked.params, stacked.batch_stats, x, y))
            times[sl].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for st in separate:
            jax.block_until_ready(single(st.params, st.batch_stats, x, y))
        t_seq.append(time.perf_counter() - t0)
    n, med_s = len(labels), statistics.median(t_seq)
    out = {"mesh": dict(mesh.shape), "sequential_seconds": t_seq, "sequential_median_s": med_s,
           "sequential_images_per_s": seeds * n / med_s}
    for sl in seed_loops:
        med = statistics.median(times[sl])
        out.update({f"{sl}_seconds": times[sl], f"{sl}_median_s": med, f"{sl}_images_per_s": seeds * n / med,
                    f"speedup_{sl}_over_sequential": med_s / med})
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"], choices=["mnist", "cifar10"])
    p.add_argument("--modes", nargs="+", default=["nt", "at"], choices=["nt", "at", "eval"],
                   help="NT or PGD-AT training passes, or eval: a measurement's clean + PGD-7 evaluation")
    p.add_argument("--seeds", type=int, default=4, help="K, the number of seeds trained at once")
    p.add_argument("--examples", type=int, default=6400, help="training images per timed pass (0: the full split)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=500, help="images per compiled evaluation batch (eval)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed-loops", nargs="+", default=["map", "vmap"], choices=["map", "vmap"],
                   help="how the K seeds share the program (jaxmi.backend.resolve_seed_loop)")
    p.add_argument("--cifar-dir", default=None, help="CIFAR-10 copy (image folders / python batches)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "seeds_throughput.json"))
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be ≥ 1")
    progress.enabled(False)
    rows = []
    for model, mode, images, labels, source, attack in lenet_cases(args.datasets, args.modes, args.cifar_dir,
                                                                   args.examples):
        row = {"model": model, "mode": mode, "examples": len(labels), "data": source, "seeds": args.seeds}
        if mode == "eval":
            name = model.removeprefix("lenet-")
            attack = pgd_config(make_config("cpu", dataset=name))
            row.update(time_eval_case(images, labels, attack, seeds=args.seeds, batch_size=args.eval_batch_size,
                                      repeats=args.repeats, seed_loops=tuple(args.seed_loops)))
        else:
            row.update(time_case(images, labels, attack, seeds=args.seeds, batch_size=args.batch_size,
                                 repeats=args.repeats, seed_loops=tuple(args.seed_loops)))
        rows.append(row)
        print({k: v for k, v in row.items() if not isinstance(v, list)}, flush=True)
    result = {**machine_info(),
              "batch_size": args.batch_size, "repeats": args.repeats, "loop": backend.resolve_loop("auto"),
              "rows": rows}
    print(f"\ndevice: {result['device']} ({result['cpu_count']} CPUs), jax {jax.__version__}, K = {args.seeds} seeds, "
          f"median of {args.repeats}, batch {args.batch_size} (training), {args.eval_batch_size} (eval)")
    loops = args.seed_loops
    print(f"{'model':<14} {'mode':<4} {'images':>7} {'sequential (s)':>15} "
          + " ".join(f"{sl + ' (s)':>9} {'speed-up':>8}" for sl in loops))
    for r in rows:
        print(f"{r['model']:<14} {r['mode']:<4} {r['examples']:>7} {r['sequential_median_s']:>15.2f} "
              + " ".join(f"{r[sl + '_median_s']:>9.2f} {r['speedup_' + sl + '_over_sequential']:>7.2f}×"
                         for sl in loops))
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
