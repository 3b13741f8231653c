#!/usr/bin/env python
"""Peak memory of one full MI measurement: clean and PGD-7 adversarial probes, three estimators.

Runs the measurement a finding performs on a trained model (and a run after every epoch), on a
randomly initialised model and random images of the model's input size:

1. the PGD-7 examples of the N images (evaluation attack from the clean image);
2. for every probe group (no group wider than the widest probe,
   :func:`jaxmi.plan.probe_groups`), on clean and then on adversarial inputs, the
   group's activations [N, D], estimated with the KDE upper and lower bounds and binning
   (:func:`jaxmi.estimators.estimate`) and released before the next group.

So at most one probe layer's activations (all N rows) is held at a time, beside the images.
It prints the time of each part and the peak memory: the peak RSS of the process (reset once
the inputs are built, read from ``/proc/self/status``) on CPU, the device's
``peak_bytes_in_use`` on an accelerator. ``--unbounded`` instead computes every probe of both
inputs at once (the pre-streaming way) for comparison, and ``--compare`` runs both on the same
inputs and reports the largest difference of the estimates.

    python benchmarks/measurement_memory.py --model wrn --image-size 96 --samples 5000   # ~20 min on 2 cores
    python benchmarks/measurement_memory.py --model lenet --image-size 28 --samples 2000 --compare
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine_info, write_result  # noqa: E402

from jaxmi.config import make_config  # noqa: E402
from jaxmi.estimators import METHODS, estimate  # noqa: E402
from jaxmi.findings.common import model_passes  # noqa: E402
from jaxmi.models import create_model, init_variables, probe_widths  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "measurement_memory.json"
_DATASET = {1: "mnist", 3: "cifar10"}  # for the paper's PGD settings by channel count


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1))


def reset_peak() -> None:
    """Resets the peak-memory counter this benchmark reads (CPU: VmHWM; accelerators: nothing)."""
    if jax.default_backend() == "cpu":
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_bytes() -> int:
    """Peak memory since :func:`reset_peak`: RSS on CPU, the device's peak bytes in use elsewhere."""
    if jax.default_backend() == "cpu":
        return _status_kib("VmHWM") * 1024
    return int(jax.devices()[0].memory_stats().get("peak_bytes_in_use", 0))


def inputs(model: str, image_size: int, samples: int, seed: int = 0):
    """A randomly initialised model and random images: ``(module, variables, x [N,H,W,C] float, y)``."""
    channels = 1 if model in ("lenet", "mlp") and image_size == 28 else 3
    module = create_model(model, 10)
    shape = (image_size, image_size, channels)
    variables = init_variables(module, jax.random.key(seed), shape)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.integers(0, 256, (samples, *shape), dtype=np.uint8)).astype(jnp.float32) / 255.0
    y = rng.integers(0, 10, samples).astype(np.int32)
    return module, variables, jax.block_until_ready(x), y, _DATASET[channels]


def measure(module, variables, x, y, dataset: str, *, eval_batch_size: int = 250, unbounded: bool = False,
            passes: dict | None = None) -> dict:
    """One full measurement (see the module docstring); returns times and the estimates.

    ``passes``: a dict that keeps the compiled passes between calls (filled on the first).
    """
    config = make_config("paper", dataset=dataset, samples=len(y), eval_batch_size=eval_batch_size)
    cache = passes if passes is not None else {}
    if "passes" not in cache:
        cache["passes"] = model_passes(module, config, len(y), tuple(x.shape[1:]))
    passes = cache["passes"]
    params, stats = variables["params"], variables["batch_stats"]
    y_dev = jnp.asarray(y)
    out: dict = {"groups": [list(g) for g in passes.probes], "widths": probe_widths(module, tuple(x.shape[1:]))}
    t0 = time.perf_counter()
    x_adv = jax.block_until_ready(passes.adversary(params, stats, x, y_dev))
    out["attack_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    est = {}
    for inputs_name, xi in (("clean", x), ("adv", x_adv)):
        if unbounded:  # every probe at once
            probes = {p: a for fn in passes.probes.values() for p, a in fn(params, stats, xi, y_dev)["probes"].items()}
            est[inputs_name] = estimate(probes, y, methods=METHODS, num_classes=10)
            del probes
        else:
            est[inputs_name] = passes.information(params, stats, xi, y_dev, y, methods=METHODS, num_classes=10)
    out["information_seconds"] = time.perf_counter() - t0
    out["estimates"] = {i: {p: {m: {q: r[m][q] for q in ("I_XT", "I_TY")} for m in METHODS} for p, r in e.items()}
                        for i, e in est.items()}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="wrn", choices=["lenet", "mlp", "wrn"])
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--eval-batch-size", type=int, default=250)
    ap.add_argument("--unbounded", action="store_true", help="every probe at once (for comparison)")
    ap.add_argument("--compare", action="store_true", help="streamed and unbounded on the same inputs")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    module, variables, x, y, dataset = inputs(args.model, args.image_size, args.samples)
    widths = probe_widths(module, tuple(x.shape[1:]))
    layer_gib = max(widths.values()) * args.samples * 4 / 2 ** 30
    print(f"{args.model} at {args.image_size} px, N = {args.samples}: probe widths {widths}; one widest layer "
          f"{layer_gib:.2f} GiB; the images {x.nbytes / 2 ** 30:.2f} GiB", flush=True)
    result = {**machine_info(), "model": args.model, "image_size": args.image_size, "samples": args.samples,
              "widest_layer_gib": layer_gib, "runs": {}}
    for mode in (("streamed", "unbounded") if args.compare else ("unbounded" if args.unbounded else "streamed",)):
        reset_peak()
        r = measure(module, variables, x, y, dataset, eval_batch_size=args.eval_batch_size,
                    unbounded=mode == "unbounded")
        r["peak_gib"] = peak_bytes() / 2 ** 30
        result["runs"][mode] = r
        print(f"{mode}: attack {r['attack_seconds']:.1f} s, information {r['information_seconds']:.1f} s, peak "
              f"{'RSS' if jax.default_backend() == 'cpu' else 'device memory'} {r['peak_gib']:.2f} GiB", flush=True)
    if args.compare:
        a, b = (result["runs"][m]["estimates"] for m in ("streamed", "unbounded"))
        diff = max(abs(a[i][p][m][q] - b[i][p][m][q]) for i in a for p in a[i] for m in METHODS for q in ("I_XT", "I_TY"))
        result["max_abs_diff_bits"] = diff
        print(f"largest |streamed − unbounded| over inputs, probes, estimators, quantities: {diff:.2e} bits")
    return write_result(str(args.out), result)


if __name__ == "__main__":
    main()
