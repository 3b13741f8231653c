"""Data parallelism: 8 forced CPU devices give the same training and evaluation results as one.

Runs in a separate process because XLA_FLAGS must be set before JAX is imported.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(r'''
    import jax, jax.numpy as jnp, numpy as np
    from jaxmi import models, parallel, training
    from jaxmi.attacks import PGDConfig
    from jaxmi.config import OptimConfig
    from jaxmi.evaluation import make_evaluator
    assert len(jax.devices()) == 8, jax.devices()

    rng = np.random.default_rng(0)
    n, batch = 48, 16  # 2 examples per device, 3 steps
    x = jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8))
    y = jnp.asarray(rng.integers(0, 10, n).astype(np.int32))
    module = models.create_model("wrn", 10)  # BatchNorm: statistics must be over the global batch
    tx = training.make_optimizer(OptimConfig(learning_rate=0.05, batch_size=batch), n // batch)
    train_attack = PGDConfig(eps=8 / 255, step_size=2 / 255, steps=2, random_start=True)
    eval_attack = PGDConfig(eps=8 / 255, step_size=2 / 255, steps=2)

    out = {}
    for devices in (1, 8):
        mesh = parallel.make_mesh(devices)
        assert mesh.size == devices and mesh.axis_names == ("data",)
        state0 = parallel.replicate(training.stack([training.create_train_state(module, jax.random.key(0),
                                                                                 (32, 32, 3), tx)]), mesh)
        xs, ys = parallel.replicate((x, y), mesh)
        res = {}
        for mode, attack in (("nt", None), ("at", train_attack)):
            epoch = training.make_train_epoch(module, tx, num_examples=n, batch_size=batch, attack=attack,
                                              augment=True, show_progress=False, mesh=mesh)
            state = jax.tree.map(jnp.copy, state0)
            state, m = epoch(state, xs, ys, jax.random.key(1)[None])
            ev = make_evaluator(module, eval_attack, batch_size=20, with_probes=True, mesh=mesh)
            r = ev(state.params, state.batch_stats, xs[:36], ys[:36])
            if devices == 8:
                leaf = jax.tree.leaves(state.params)[0]
                assert leaf.sharding.is_fully_replicated, leaf.sharding
            state, m, r = jax.tree.map(lambda a: a[0], (state, m, r))
            res[mode] = jax.device_get((state.params, state.batch_stats, m, r))
        out[devices] = res

    # Several stacked seeds cannot also be split over the data axis (yet): a clear error.
    mesh = parallel.make_mesh(8)
    two = parallel.replicate(training.create_train_states(module, jax.random.split(jax.random.key(0), 2),
                                                          (32, 32, 3), tx), mesh)
    epoch = training.make_train_epoch(module, tx, num_examples=n, batch_size=batch, show_progress=False, mesh=mesh)
    try:
        epoch(two, xs, ys, jax.random.split(jax.random.key(1), 2))
        raise AssertionError("stacked seeds on an 8-device mesh were not refused")
    except ValueError as e:
        assert "cannot be split over a mesh of 8" in str(e), e

    for mode in ("nt", "at"):
        (p1, s1, m1, r1), (p8, s8, m8, r8) = out[1][mode], out[8][mode]
        np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(m1["accuracy"], m8["accuracy"], atol=1e-6)
        # NT: float32 rounding only. AT: PGD steps along sign(∇x), and a pixel whose gradient is
        # ~0 can flip sign when the reduction order changes, so parameters agree less tightly.
        tol = dict(rtol=1e-4, atol=1e-5) if mode == "nt" else dict(rtol=0, atol=2e-3)
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
            np.testing.assert_allclose(a, b, **tol)
        for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):  # running BatchNorm statistics
            np.testing.assert_allclose(a, b, **tol)
        np.testing.assert_allclose(r1["clean_loss"], r8["clean_loss"], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(r1["adv_loss"], r8["adv_loss"], rtol=1e-3, atol=1e-4)
        # deep WideResNet features amplify the parameters' rounding differences through 10 layers
        # of evaluation-mode BatchNorm: agreement to 1 % of their scale
        c1, c8 = r1["clean_probes"]["block3"], r8["clean_probes"]["block3"]
        np.testing.assert_allclose(c1, c8, rtol=0, atol=1e-2 * np.abs(c1).max())
        # adversarial probes: a sign flip in the evaluation PGD moves a pixel by 2 steps, so only
        # their overall size is compared
        np.testing.assert_allclose(np.abs(r1["adv_probes"]["block3"]).mean(), np.abs(r8["adv_probes"]["block3"]).mean(),
                                   rtol=1e-2)
        assert np.mean(r1["adv_correct"] == r8["adv_correct"]) >= 0.95
        print(mode, "loss", m1["loss"].tolist(), "max |dloss|", float(np.max(np.abs(m1["loss"] - m8["loss"]))))
    print("OK")
''')


def test_eight_devices_match_one_device():
    # 8 host "devices" share the CI's 2 cores: give slow collectives time instead of aborting after 40 s.
    flags = ("--xla_force_host_platform_device_count=8 --xla_cpu_collective_timeout_seconds=900 "
             "--xla_cpu_collective_call_terminate_timeout_seconds=900")
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert proc.stdout.strip().endswith("OK")
