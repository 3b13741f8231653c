#!/usr/bin/env python
"""Cross-check of jaxmi's attacks against torchattacks on the same trained weights, same run.

Loads the NT and AT LeNets of a finished jaxmi MNIST run (``--run-dir``, e.g. the output of
``python experiments/finding2_information_amount.py --preset cpu --out runs/f2cpu``), copies
the weights into a PyTorch LeNet (``benchmarks/_torch_baseline.py``; HWIO kernels → OIHW, and
fc1's rows permuted from jaxmi's NHWC flatten order to PyTorch's NCHW one), checks that the
logits agree, and then compares accuracies under attack on the MNIST test set, at the run's
ε (``--eps`` to override):

=================  ==============================================  ===========================================
attack             jaxmi                                           torchattacks 3.5.1
=================  ==============================================  ===========================================
PGD (run's)        ``pgd``: the run's steps and step, clean start  ``PGD(random_start=False)``
PGD-50 restarts    ``pgd(random_start=True, restarts=R)``          ``PGD(random_start=True)`` R times, worst case
APGD-CE            ``apgd(loss="ce", steps=100)``                  ``APGD(loss="ce", steps=100)``
APGD-T             ``apgd_targeted(steps=100, n_targets=9)``       ``APGDT(steps=100, n_classes=10)``
AutoAttack-style   ``robust_accuracy`` (FGSM, PGD-20, APGD-CE,     ``MultiAttack([APGD-CE, APGDT])`` (100
                   APGD-T; 100 steps, 9 targets)                   steps each), and ``AutoAttack("standard")``
                                                                   as torchattacks configures it (10-step
                                                                   APGD/APGD-T, FAB-T, Square 5,000 queries)
=================  ==============================================  ===========================================

PGD, PGD-50 and APGD-CE run on ``--examples`` test images (default all 10,000), APGD-T and the
AutoAttack rows on the first ``--subset`` (default 1,000) of them. Targets: the two sides'
accuracies within 1 percentage point for PGD and 1.5 for APGD (random starts differ: JAX keys
against torch's generator). Speed: images per second of each side in the same process, jaxmi
after its first batch (which includes compilation; its time is reported separately).

Needs ``torch`` and ``torchattacks`` (not jaxmi dependencies). On the CPU machines here:
``pip install torch==2.13.0`` (the CPU wheel on disk) and ``pip install torchattacks --no-deps``
(torchattacks' declared torchvision dependency does not import here, and it is not needed).

    python benchmarks/attack_crosscheck.py --run-dir runs/f2cpu
    python benchmarks/attack_crosscheck.py --run-dir runs/f2cpu --examples 2000 --subset 500 --no-autoattack

Prints a Markdown table; writes JSON to ``--out`` (default ``benchmarks/results/attack_crosscheck.json``).
"""

from __future__ import annotations

import argparse
import datetime
import os
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

from jaxmi import attacks, data  # noqa: E402
from jaxmi.models import apply_model  # noqa: E402

TARGETS_PP = {"pgd": 1.0, "apgd": 1.5}


def _need_torch():
    return require("torch"), require("torchattacks")


def torch_lenet_from_jaxmi(params, in_channels: int = 1, hw: int = 28):
    """A PyTorch LeNet (``_torch_baseline.lenet``) holding jaxmi LeNet ``params``.

    Convolution kernels go from HWIO to OIHW. jaxmi flattens the last pooled map [B, h, w, C]
    in NHWC order (index (i·w + j)·C + c), PyTorch in NCHW order (c·h·w + i·w + j), so fc1's
    input rows are permuted; dense kernels [in, out] are transposed to [out, in].
    """
    torch, _ = _need_torch()
    model = tb.lenet(in_channels, hw)
    n = ((hw - 4) // 2 - 4) // 2
    p = {k: {kk: np.asarray(vv, np.float32) for kk, vv in v.items()} for k, v in params.items()}
    fc1 = p["fc1"]["kernel"].reshape(n, n, 16, -1).transpose(2, 0, 1, 3).reshape(16 * n * n, -1)
    weights = {"conv1.weight": p["conv1"]["kernel"].transpose(3, 2, 0, 1), "conv1.bias": p["conv1"]["bias"],
               "conv2.weight": p["conv2"]["kernel"].transpose(3, 2, 0, 1), "conv2.bias": p["conv2"]["bias"],
               "fc1.weight": fc1.T, "fc1.bias": p["fc1"]["bias"],
               "fc2.weight": p["fc2"]["kernel"].T, "fc2.bias": p["fc2"]["bias"],
               "fc3.weight": p["fc3"]["kernel"].T, "fc3.bias": p["fc3"]["bias"]}
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()})
    return model.eval()


def _jax_pass(fn, x, y, key, batch):
    """``fn(xb, yb, key) -> x_adv or correct mask`` over batches; returns (correct [N], first_s, rest_s)."""
    out, first, rest = [], 0.0, 0.0
    for i, s in enumerate(range(0, len(y), batch)):
        t0 = time.perf_counter()
        res = jax.block_until_ready(fn(x[s:s + batch], y[s:s + batch], jax.random.fold_in(key, i)))
        dt = time.perf_counter() - t0
        if i == 0:
            first = dt
        else:
            rest += dt
        out.append(np.asarray(res))
    return np.concatenate(out), first, rest


def _torch_pass(fn, x, y, batch):
    """``fn(xb, yb) -> correct mask`` over batches; returns (correct [N], seconds)."""
    out = []
    t0 = time.perf_counter()
    for s in range(0, len(y), batch):
        out.append(fn(x[s:s + batch], y[s:s + batch]))
    return np.concatenate(out), time.perf_counter() - t0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="a finished jaxmi MNIST LeNet run (the --out of a finding script)")
    p.add_argument("--eps", type=float, default=None, help="L∞ radius (default: the run's attack eps)")
    p.add_argument("--examples", type=int, default=10000, help="test images for PGD and APGD-CE (max 10,000)")
    p.add_argument("--subset", type=int, default=1000, help="test images for APGD-T and the AutoAttack rows")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--restarts", type=int, default=3, help="restarts of the PGD-50 row")
    p.add_argument("--regimes", nargs="+", default=["nt", "at"], choices=["nt", "at"])
    p.add_argument("--no-autoattack", action="store_true", help="skip torchattacks' AutoAttack('standard') row")
    p.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "attack_crosscheck.json"))
    args = p.parse_args(argv)
    torch, torchattacks = _need_torch()
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)

    run_dir = Path(args.run_dir)
    if not (run_dir / "models").is_dir():
        raise SystemExit(f"--run-dir {run_dir} holds no trained models (no {run_dir / 'models'}): pass the --out of "
                         "a finished MNIST LeNet run, e.g. python experiments/finding2_information_amount.py "
                         "--preset cpu --out runs/f2cpu")
    from jaxmi.plan import pgd_config
    from jaxmi.run import load_trained

    config, module, trained = load_trained(run_dir)
    if config.model.model != "lenet" or config.data.dataset != "mnist":
        raise SystemExit(f"the cross-check compares LeNet on MNIST; {run_dir} holds {config.model.model} on "
                         f"{config.data.dataset}.")
    attack_cfg = pgd_config(config)
    eps = attack_cfg.eps if args.eps is None else args.eps
    step = attack_cfg.step_size if args.eps is None else eps / 4
    steps = attack_cfg.steps
    test = data.load_dataset("mnist", "test", max_examples=args.examples)
    x_np = test.images.astype(np.float32) / 255.0
    y_np = test.labels.astype(np.int64)
    n_sub = min(args.subset, len(y_np))
    x_j, y_j = jnp.asarray(x_np), jnp.asarray(y_np.astype(np.int32))
    x_t = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy())
    y_t = torch.from_numpy(y_np)
    key = jax.random.key(args.seed)
    b = args.batch
    rows, checks = [], {}
    print(f"run {run_dir}: eps {eps:.4f}, PGD-{steps} step {step:.4f}; {len(y_np)} test images "
          f"(APGD-T, AutoAttack rows: first {n_sub}); batches of {b}", flush=True)

    for regime in args.regimes:
        params, stats = trained[regime]
        logits_fn = jax.jit(lambda z, params=params, stats=stats: apply_model(module, params, stats, z)[0])
        model = torch_lenet_from_jaxmi(params)

        def t_correct(xb, yb, model=model):
            with torch.no_grad():
                return (model(xb).argmax(1) == yb).numpy()

        lj = np.asarray(logits_fn(x_j[:1000]))
        with torch.no_grad():
            lt = model(x_t[:1000]).numpy()
        diff = float(np.abs(lj - lt).max())
        checks[regime] = {"max_abs_logit_diff": diff, "max_abs_logit": float(np.abs(lj).max()),
                          "argmax_agree": float(np.mean(lj.argmax(1) == lt.argmax(1)))}
        print(f"[{regime}] logits: max |jaxmi − torch| = {diff:.2e} (max |logit| {np.abs(lj).max():.1f}), "
              f"argmax agree {checks[regime]['argmax_agree']:.2%}", flush=True)
        if diff > 1e-3 * max(1.0, float(np.abs(lj).max())):
            raise SystemExit(f"the PyTorch copy of the {regime} model disagrees with jaxmi (max logit difference "
                             f"{diff:.3g}): the weight conversion is wrong.")
        clean = float(np.mean(np.asarray(jnp.argmax(logits_fn(x_j), -1)) == y_np))

        def row(name, kind, n, jx, tx, note=""):
            (cj, first, rest), (ct, tt) = jx, tx
            acc_j, acc_t = float(np.mean(cj)), float(np.mean(ct))
            nb = -(-n // b)
            ips_j = (n - min(b, n)) / rest if nb > 1 and rest > 0 else n / (first + rest)
            r = {"regime": regime, "attack": name, "kind": kind, "examples": n, "jaxmi_acc": acc_j, "torch_acc": acc_t,
                 "diff_pp": 100 * (acc_j - acc_t), "target_pp": TARGETS_PP.get(kind),
                 "per_example_agreement": float(np.mean(cj == ct)),
                 "jaxmi_images_per_s": ips_j, "torch_images_per_s": n / tt, "jaxmi_first_batch_s": first,
                 "jaxmi_total_s": first + rest, "torch_total_s": tt, "note": note}
            r["within_target"] = None if r["target_pp"] is None else abs(r["diff_pp"]) <= r["target_pp"]
            rows.append(r)
            print(f"[{regime}] {name:<28} jaxmi {acc_j:.2%}  torch {acc_t:.2%}  Δ {r['diff_pp']:+.2f} pp  "
                  f"jaxmi {ips_j:,.0f} img/s (first batch {first:.1f} s)  torch {n / tt:,.0f} img/s", flush=True)

        n = len(y_np)
        # 1. PGD as the run evaluates it, from the clean image
        f_pgd = jax.jit(lambda xb, yb, k: jnp.argmax(logits_fn(attacks.pgd(
            logits_fn, xb, yb, eps=eps, step_size=step, steps=steps)), -1) == yb)
        atk = torchattacks.PGD(model, eps=eps, alpha=step, steps=steps, random_start=False)
        row(f"PGD-{steps}, clean start", "pgd", n, _jax_pass(f_pgd, x_j, y_j, key, b),
            _torch_pass(lambda xb, yb: t_correct(atk(xb, yb), yb), x_t, y_t, b))

        # 2. PGD-50 from random starts, with restarts, worst case per example
        alpha50 = 2.5 * eps / 50
        f_pgd50 = jax.jit(lambda xb, yb, k: jnp.argmax(logits_fn(attacks.pgd(
            logits_fn, xb, yb, eps=eps, step_size=alpha50, steps=50, key=k, random_start=True,
            restarts=args.restarts)), -1) == yb)
        atk50 = torchattacks.PGD(model, eps=eps, alpha=alpha50, steps=50, random_start=True)

        def t_pgd50(xb, yb):
            ok = t_correct(xb, yb)
            for _ in range(args.restarts):
                ok &= t_correct(atk50(xb, yb), yb)
            return ok

        row(f"PGD-50 ×{args.restarts} restarts", "pgd", n, _jax_pass(f_pgd50, x_j, y_j, key, b),
            _torch_pass(t_pgd50, x_t, y_t, b), note="α = 2.5ε/50, random start")

        # 3. APGD-CE
        f_ce = jax.jit(lambda xb, yb, k: jnp.argmax(logits_fn(attacks.apgd(
            logits_fn, xb, yb, eps=eps, key=k, steps=100, loss="ce")), -1) == yb)
        atk_ce = torchattacks.APGD(model, eps=eps, steps=100, loss="ce", n_restarts=1, seed=args.seed)
        row("APGD-CE (100 steps)", "apgd", n, _jax_pass(f_ce, x_j, y_j, key, b),
            _torch_pass(lambda xb, yb: t_correct(atk_ce(xb, yb), yb), x_t, y_t, b))

        # 4. APGD-T on the subset
        xs_j, ys_j, xs_t, ys_t = x_j[:n_sub], y_j[:n_sub], x_t[:n_sub], y_t[:n_sub]
        f_t = jax.jit(lambda xb, yb, k: jnp.argmax(logits_fn(attacks.apgd_targeted(
            logits_fn, xb, yb, eps=eps, key=k, steps=100, n_targets=9)), -1) == yb)
        atk_t = torchattacks.APGDT(model, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=args.seed)
        row("APGD-T (100 steps, 9 targets)", "apgd", n_sub, _jax_pass(f_t, xs_j, ys_j, key, b),
            _torch_pass(lambda xb, yb: t_correct(atk_t(xb, yb), yb), xs_t, ys_t, b))

        # 5. robust_accuracy against the same two APGDs composed in torchattacks, and AutoAttack
        def f_robust(xb, yb, k):
            return attacks.robust_accuracy(logits_fn, xb, yb, eps=eps, key=k).robust

        multi = torchattacks.MultiAttack([
            torchattacks.APGD(model, eps=eps, steps=100, loss="ce", n_restarts=1, seed=args.seed),
            torchattacks.APGDT(model, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=args.seed)])
        jr = _jax_pass(f_robust, xs_j, ys_j, key, b)
        row("robust_accuracy vs APGD-CE+APGD-T", "apgd", n_sub, jr,
            _torch_pass(lambda xb, yb: t_correct(multi(xb, yb), yb), xs_t, ys_t, b),
            note="torch: MultiAttack([APGD(ce, 100), APGDT(100)])")
        if not args.no_autoattack:
            aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=args.seed)
            row("robust_accuracy vs AutoAttack", "autoattack", n_sub, jr,
                _torch_pass(lambda xb, yb: t_correct(aa(xb, yb), yb), xs_t, ys_t, b),
                note="torch: AutoAttack('standard') as torchattacks sets it (APGD/APGDT 10 steps, FAB-T, Square)")
        rows.append({"regime": regime, "attack": "clean", "jaxmi_acc": clean})

    result = {**machine_info(), "torch": torch.__version__, "torchattacks": torchattacks.__version__,
              "date": datetime.date.today().isoformat(), "run_dir": str(run_dir), "eps": eps, "pgd_step": step,
              "pgd_steps": steps, "examples": len(y_np), "subset": n_sub, "batch": b, "restarts": args.restarts,
              "torch_threads": args.torch_threads, "logit_checks": checks, "rows": rows}
    print()
    print(f"{result['device']} ({result['cpu_count']} CPUs), jax {jax.__version__}, torch {torch.__version__}, "
          f"torchattacks {torchattacks.__version__}, {result['date']}; eps = {eps:.4f}")
    print()
    print("| model | attack | images | jaxmi acc | torchattacks acc | Δ (pp) | target | jaxmi img/s | torch img/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for r in rows:
        if r["attack"] == "clean":
            print(f"| {r['regime'].upper()} | clean | {len(y_np)} | {r['jaxmi_acc']:.2%} | | | | | |")
            continue
        tgt = "—" if r["target_pp"] is None else (f"±{r['target_pp']} {'met' if r['within_target'] else 'MISSED'}")
        print(f"| {r['regime'].upper()} | {r['attack']} | {r['examples']} | {r['jaxmi_acc']:.2%} | {r['torch_acc']:.2%} "
              f"| {r['diff_pp']:+.2f} | {tgt} | {r['jaxmi_images_per_s']:,.0f} | {r['torch_images_per_s']:,.0f} |")
    return write_result(args.out, result)


if __name__ == "__main__":
    main()
