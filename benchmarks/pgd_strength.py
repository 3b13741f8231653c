#!/usr/bin/env python
"""How strong is the paper's evaluation attack against a trained model? PGD variants compared.

Loads the NT (and AT) model of a finished run directory (``jaxmi.run.load_trained``)
and reports accuracy on the first ``--images`` test images under PGD at the run's ε: the
paper's evaluation attack (its step size and steps, from the clean image), the same with a
random start, and ``--long-steps`` steps of ``--long-step-size``, with and without a random
start; plus the fraction of images whose input gradient is
exactly zero at the clean image (gradient masking by dead units would show here).

    python benchmarks/pgd_strength.py --run runs/finding2_mnist_lenet
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from jaxmi import data, models
from jaxmi.attacks import pgd
from jaxmi.plan import pgd_config
from jaxmi.run import load_trained


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished finding-1/2 run directory (--out)")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--long-steps", type=int, default=40)
    p.add_argument("--long-step-size", type=float, default=2 / 255)
    args = p.parse_args(argv)
    cfg, module, variables = load_trained(args.run)
    test = data.load_dataset(cfg.data.dataset, "test", data_dir=cfg.data.data_dir)
    x = data.to_float(jnp.asarray(test.images[:args.images]))
    y = jnp.asarray(test.labels[:args.images])
    att = pgd_config(cfg)
    variants = [(att.steps, att.step_size, False), (att.steps, att.step_size, True),
                (args.long_steps, args.long_step_size, False), (args.long_steps, args.long_step_size, True)]
    out = {}
    for mode, (params, stats) in variables.items():
        def logits(z, params=params, stats=stats):
            return models.apply_model(module, params, stats, z)[0]

        def acc(z):
            return float((logits(z).argmax(-1) == y).mean())

        grad = jax.grad(lambda z: -jnp.sum(jax.nn.log_softmax(logits(z))[jnp.arange(len(y)), y]))(x)
        row = {"clean": acc(x), "zero_gradient_fraction": float((jnp.abs(grad).reshape(len(y), -1).max(1) == 0).mean())}
        for steps, step, rs in variants:
            xa = jax.jit(lambda x, y, k, steps=steps, step=step, rs=rs: pgd(
                logits, x, y, eps=att.eps, step_size=step, steps=steps, key=k, random_start=rs))(x, y, jax.random.key(0))
            row[f"pgd_{steps}x{step:.4f}{'_random_start' if rs else ''}"] = acc(xa)
        out[mode] = row
        print(mode.upper(), ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    return out


if __name__ == "__main__":
    main()
