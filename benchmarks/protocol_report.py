#!/usr/bin/env python
"""The paper's protocol on this device: what one epoch costs, batched seeds, bfloat16, and the projection.

For one run configuration (by default the paper's: WideResNet-10-1 on CIFAR-10, PGD-7 AT,
MI of every probe on N = 5,000 test images) and several *settings* (compute precision ×
K seeds batched in one program), it builds the run's plan (:func:`jaxmi.plan.resolve`, the
same decisions a run makes), then measures, each after a warm-up that compiles:

* one NT and one AT training epoch on ``--train-examples`` images
  (:func:`jaxmi.run.make_epoch`), as images per second summed over the K seeds;
* one measurement after an epoch (:class:`jaxmi.measure.Measurer`: clean and PGD test
  accuracy on the evaluation draw, and every probe's KDE bounds and binning on clean,
  adversarial, random-noise and uniform-noise inputs with the bootstrap, for each seed),
  and one swept measurement (the first and last epoch add the σ² and scale-free sweeps);
* the projection of the whole protocol for the K seeds: per regime, ``epochs`` full epochs
  (``--epoch-examples`` images each, at the measured rate), ``epochs − 1`` measurements and 2
  swept ones, NT then AT. The final robust evaluation is not included.

It reports the ratios the protocol's speed depends on: AT images/s summed over K seeds against
K = 1 at the same precision, and bfloat16 against float32 at the same K.

``--accuracy-epochs E`` (> 0) also trains an NT/AT pair for E epochs at each precision of the
settings from the same initial weights (:func:`jaxmi.run.train_pair`) and compares their
clean, PGD and AutoAttack-style accuracies on ``--robust-samples`` test images.

Writes ``protocol_report.json`` and ``protocol_report.md`` into ``--out-dir`` after every part.

    python benchmarks/protocol_report.py --data-dir <CIFAR-10 image folders> --out-dir results/gpu
    python benchmarks/protocol_report.py --data-dir <CIFAR-10 image folders> --accuracy-epochs 10
    python benchmarks/protocol_report.py --quick --out-dir /tmp/p   # LeNet-MNIST, tiny: seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import finish_report, machine_info, save_report  # noqa: E402
from accelerator_report import matmul_rate  # noqa: E402

from jaxmi import data, parallel  # noqa: E402
from jaxmi.config import make_config  # noqa: E402
from jaxmi.history import REGIMES  # noqa: E402
from jaxmi.measure import Measurer  # noqa: E402
from jaxmi.plan import resolve  # noqa: E402
from jaxmi.probes import check_model  # noqa: E402
from jaxmi.run import initial_states, make_epoch, train_pair  # noqa: E402

QUICK = {"model": "lenet", "dataset": "mnist", "train_examples": 256, "batch_size": 32, "samples": 64,
         "eval_samples": 128, "eval_batch_size": 64, "bootstrap": 5, "robust_samples": 32, "apgd_steps": 5}


def parse_setting(text: str) -> tuple[str, int]:
    """``"bfloat16:3"`` → ``("bfloat16", 3)``."""
    try:
        precision, k = text.split(":")
        k = int(k)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a setting is PRECISION:SEEDS such as float32:3; got {text!r}") from None
    if precision not in ("float32", "bfloat16") or k < 1:
        raise argparse.ArgumentTypeError(f"a setting is PRECISION:SEEDS with PRECISION float32 or bfloat16 and "
                                         f"SEEDS ≥ 1; got {text!r}")
    return precision, k


def _block(tree):
    return jax.block_until_ready(tree)


def setting_row(overrides: dict, precision: str, seeds: int, *, epochs: int, epoch_examples: int,
                matmul_flops: float, log=print) -> dict:
    """One setting's epoch and measurement times and its protocol projection (module docstring)."""
    config = make_config("paper", **{**overrides, "precision": precision, "seeds": seeds})
    plan = resolve(config, log=lambda m: None)
    x_train, y_train = data.as_device_arrays(plan.train, parallel.replicated(plan.execution.mesh))
    images = plan.steps_per_epoch * config.optim.batch_size * seeds
    row = {"precision": precision, "seeds": seeds, "train_examples": len(plan.train), "batch": config.optim.batch_size}
    states = None
    for regime in REGIMES:
        epoch = make_epoch(plan, regime)
        states = initial_states(plan)
        keys = [jax.vmap(lambda k, e=e: jax.random.fold_in(k, e))(plan.train_keys) for e in (1, 2)]
        states, _ = _block(epoch(states, x_train, y_train, keys[0]))  # warm-up: compiles
        t0 = time.perf_counter()
        states, _ = _block(epoch(states, x_train, y_train, keys[1]))
        seconds = time.perf_counter() - t0
        row[regime] = {"seconds": seconds, "images_per_s": images / seconds}
        log(f"{precision} K={seeds} {regime.upper()} epoch: {images / seconds:,.0f} images/s over the seeds")
    measurer = Measurer(plan, x_train, y_train)
    means = [{"accuracy": 0.0, "loss": 0.0}] * seeds
    plain, swept = 1, config.optim.epochs  # epoch 1 is measured without sweeps, the last with them
    for name, e in (("measure", plain), ("swept_measure", swept)):
        measurer("at", states, means, e)  # warm-up: compiles
        t0 = time.perf_counter()
        measurer("at", states, means, e)
        row[f"{name}_seconds"] = time.perf_counter() - t0
    # The floor of a measurement: the KDE's distance products, 2·N²·D per probe, input kind and
    # seed, at the device's float32 matrix rate.
    n, widths = len(plan.draws.mi), check_model(plan.module, plan.input_shape)
    row["gram_flops"] = 2.0 * n * n * sum(widths.values()) * len(plan.mi.inputs) * seeds
    row["gram_floor_seconds"] = row["gram_flops"] / matmul_flops
    row["measure_tflops"] = row["gram_flops"] / row["measure_seconds"] / 1e12
    log(f"{precision} K={seeds}: one measurement {row['measure_seconds']:.2f} s "
        f"({row['measure_seconds'] / row['gram_floor_seconds']:.1f}× the Gram floor), swept "
        f"{row['swept_measure_seconds']:.2f} s (all {seeds} seed(s))")
    row["projection"] = projection(row, epochs=epochs, epoch_examples=epoch_examples)
    return row


def projection(row: dict, *, epochs: int, epoch_examples: int) -> dict:
    """The protocol's time for the row's K seeds from its measured rates: per regime ``epochs``
    epochs of ``epoch_examples`` images per seed, ``epochs − 1`` plain and 2 swept measurements."""
    k = row["seeds"]
    train = {r: epochs * epoch_examples * k / row[r]["images_per_s"] for r in REGIMES}
    mi = 2 * ((epochs - 1) * row["measure_seconds"] + 2 * row["swept_measure_seconds"])
    total = sum(train.values()) + mi
    return {"epochs": epochs, "epoch_examples": epoch_examples, "train_nt_s": train["nt"], "train_at_s": train["at"],
            "mi_s": mi, "total_s": total, "total_min": total / 60}


def ratios(rows: list[dict]) -> list[dict]:
    """AT images/s of K > 1 seeds against K = 1, and of bfloat16 against float32, where both were measured."""
    by = {(r["precision"], r["seeds"]): r for r in rows}
    out = []
    for (p, k), r in by.items():
        if k > 1 and (p, 1) in by:
            out.append({"what": f"{p}: K={k} vs K=1", "at_images_per_s_ratio":
                        r["at"]["images_per_s"] / by[(p, 1)]["at"]["images_per_s"]})
        if p == "bfloat16" and ("float32", k) in by:
            out.append({"what": f"K={k}: bfloat16 vs float32", "at_images_per_s_ratio":
                        r["at"]["images_per_s"] / by[("float32", k)]["at"]["images_per_s"]})
    return out


def accuracy_rows(overrides: dict, precisions: list[str], epochs: int, log=print) -> list[dict]:
    """NT and AT trained for ``epochs`` at each precision from the same initial weights, with the
    final robust evaluation (clean, the paper's PGD, APGD-CE, the ensemble)."""
    rows = []
    for p in precisions:
        config = make_config("paper", **{**overrides, "precision": p, "seeds": 1, "epochs": epochs})
        _, _, history = train_pair(config, log=lambda m: None, show_progress=False)
        for regime in REGIMES:
            r = history[regime]["robust"]
            rows.append({"precision": p, "regime": regime, "epochs": epochs, "samples": r["samples"],
                         "clean_acc": r["clean_acc"], "pgd_acc": r["pgd_paper_acc"],
                         "apgd_ce_acc": r["attack_acc"]["apgd-ce"], "robust_acc": r["robust_acc"]})
            log(f"{p} {regime.upper()} after {epochs} epochs: clean {r['clean_acc']:.4f}, PGD {r['pgd_paper_acc']:.4f}, "
                f"ensemble {r['robust_acc']:.4f}")
    return rows


def markdown(report: dict) -> str:
    lines = [f"Device: {report['device']} (JAX {report['jax']}); {report['case']}; float32 matrix rate "
             f"{report['matmul_tflops']:.2f} TFLOP/s", "",
             "| precision | K seeds | NT images/s | AT images/s | measurement (s) | measurement / Gram floor | "
             f"swept (s) | protocol, {report['epochs']} epochs (min) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report.get("settings", []):
        pr = r["projection"]
        lines.append(f"| {r['precision']} | {r['seeds']} | {r['nt']['images_per_s']:,.0f} | {r['at']['images_per_s']:,.0f} "
                     f"| {r['measure_seconds']:.2f} | {r['measure_seconds'] / r['gram_floor_seconds']:.1f}× "
                     f"({r['measure_tflops']:.2f} TFLOP/s) | {r['swept_measure_seconds']:.2f} | {pr['total_min']:.1f} (train NT "
                     f"{pr['train_nt_s'] / 60:.1f}, AT {pr['train_at_s'] / 60:.1f}, MI {pr['mi_s'] / 60:.1f}) |")
    for q in report.get("ratios", []):
        lines.append(f"\nAT images/s, {q['what']}: {q['at_images_per_s_ratio']:.2f}×")
    if report.get("accuracy"):
        lines += ["", "| precision | regime | epochs | clean | PGD | APGD-CE | ensemble |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for a in report["accuracy"]:
            lines.append(f"| {a['precision']} | {a['regime'].upper()} | {a['epochs']} | {a['clean_acc']:.4f} | "
                         f"{a['pgd_acc']:.4f} | {a['apgd_ce_acc']:.4f} | {a['robust_acc']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--model", default="wrn")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-dir", default=None, help="CIFAR-10 image folders (the offline copy) or TFDS data")
    ap.add_argument("--settings", nargs="+", type=parse_setting, default=[("float32", 1), ("float32", 3),
                                                                          ("bfloat16", 3)],
                    help="PRECISION:SEEDS, e.g. float32:1 float32:3 bfloat16:3 (the default)")
    ap.add_argument("--train-examples", type=int, default=25600, help="images of each timed epoch")
    ap.add_argument("--samples", type=int, default=5000, help="N of the MI measurements")
    ap.add_argument("--epochs", type=int, default=200, help="epochs of the projected protocol")
    ap.add_argument("--epoch-examples", type=int, default=50000, help="images of one full epoch")
    ap.add_argument("--accuracy-epochs", type=int, default=0, help="E > 0: train NT/AT E epochs per precision")
    ap.add_argument("--robust-samples", type=int, default=1000)
    ap.add_argument("--matmul-size", type=int, default=8192, help="side of the matrices that measure the float32 rate")
    ap.add_argument("--quick", action="store_true", help="LeNet-MNIST at tiny sizes (seconds; the test suite)")
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error(f"--epochs must be at least 2 (a plain measurement between the two swept ones); got {args.epochs}")
    overrides = {"model": args.model, "dataset": args.dataset, "data_dir": args.data_dir,
                 "train_examples": args.train_examples, "samples": args.samples,
                 "robust_samples": args.robust_samples}
    if args.quick:
        overrides.update(QUICK)
        args.matmul_size = 256
    overrides = {k: v for k, v in overrides.items() if v is not None}
    report = {**machine_info(), "quick": args.quick, "epochs": args.epochs,
              "case": f"{overrides['model']} on {overrides['dataset']}, N = {overrides['samples']:,} for MI, "
                      f"{overrides['train_examples']:,} images per timed epoch"}

    def save():
        save_report(report, args.out_dir, "protocol_report", markdown)

    report["matmul_tflops"] = matmul_rate(args.matmul_size) / 1e12
    report["settings"] = []
    for precision, seeds in args.settings:
        report["settings"].append(setting_row({**overrides, "epochs": args.epochs}, precision, seeds,
                                              epochs=args.epochs, epoch_examples=args.epoch_examples,
                                              matmul_flops=report["matmul_tflops"] * 1e12))
        report["ratios"] = ratios(report["settings"])
        save()
    if args.accuracy_epochs > 0:
        precisions = sorted({p for p, _ in args.settings})
        report["accuracy"] = accuracy_rows(overrides, precisions, args.accuracy_epochs)
        save()
    return finish_report(report, args.out_dir, "protocol_report", markdown)


if __name__ == "__main__":
    main()
