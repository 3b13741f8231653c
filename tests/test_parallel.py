"""Data parallelism: 8 forced CPU devices give the same training and evaluation results as one,
K = 2 seeds on a (seeds=2, data=4) mesh give the results of two single runs, and the KDE with
the layer's rows sharded over 8 devices gives the estimates of one device.

Runs in a separate process because XLA_FLAGS must be set before JAX is imported.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(r'''
    import flax.linen as nn
    import jax, jax.numpy as jnp, numpy as np
    from jaxmi import estimators, parallel, training
    from jaxmi.attacks import PGDConfig
    from jaxmi.config import OptimConfig
    from jaxmi.evaluation import make_evaluator
    from jaxmi.estimators import kde_pass, kde_ring
    assert len(jax.devices()) == 8, jax.devices()


    class TinyBN(nn.Module):
        """conv → BatchNorm → ReLU → conv → BatchNorm → ReLU → pool → dense, in jaxmi's model
        protocol: BatchNorm statistics must be over the global batch, and it compiles in
        seconds (8 devices share 2 cores here)."""
        probe_names = ("conv1", "conv2", "logits")

        @nn.compact
        def __call__(self, x, train: bool = False):
            h1 = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Conv(8, (3, 3))(x)))
            h2 = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(
                nn.Conv(8, (3, 3), strides=(2, 2))(h1)))
            logits = nn.Dense(10)(jnp.mean(h2, axis=(1, 2)))
            flat = lambda a: a.reshape(a.shape[0], -1)
            return logits, {"conv1": flat(h1), "conv2": flat(h2), "logits": logits}


    rng = np.random.default_rng(0)
    n, batch, hw = 32, 16, (12, 12, 3)  # 2 examples per device, 2 steps
    x = jnp.asarray(rng.integers(0, 256, (n, *hw)).astype(np.uint8))
    y = jnp.asarray(rng.integers(0, 10, n).astype(np.int32))
    module = TinyBN()
    tx = training.make_optimizer(OptimConfig(learning_rate=0.05, batch_size=batch), n // batch)
    train_attack = PGDConfig(eps=8 / 255, step_size=2 / 255, steps=2, random_start=True)
    eval_attack = PGDConfig(eps=8 / 255, step_size=2 / 255, steps=2)

    # 1. Data parallelism: 8 devices against 1, NT and AT.
    out = {}
    for devices in (1, 8):
        mesh = parallel.make_mesh(devices)
        assert mesh.size == devices and mesh.axis_names == ("data",)
        state0 = parallel.replicate(training.stack([training.create_train_state(module, jax.random.key(0),
                                                                                 hw, tx)]), mesh)
        xs, ys = parallel.replicate((x, y), mesh)
        res = {}
        for mode, attack in (("nt", None), ("at", train_attack)):
            epoch = training.make_train_epoch(module, tx, num_examples=n, batch_size=batch, attack=attack,
                                              show_progress=False, mesh=mesh)
            state = jax.tree.map(jnp.copy, state0)
            state, m = epoch(state, xs, ys, jax.random.key(1)[None])
            ev = make_evaluator(module, eval_attack, batch_size=16, with_probes=True, mesh=mesh)
            r = ev(state.params, state.batch_stats, xs[:16], ys[:16])
            if devices == 8:
                leaf = jax.tree.leaves(state.params)[0]
                assert leaf.sharding.is_fully_replicated, leaf.sharding
            state, m, r = jax.tree.map(lambda a: a[0], (state, m, r))
            res[mode] = jax.device_get((state.params, state.batch_stats, m, r))
        out[devices] = res

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
        c1, c8 = r1["clean_probes"]["conv2"], r8["clean_probes"]["conv2"]
        np.testing.assert_allclose(c1, c8, rtol=0, atol=1e-2 * np.abs(c1).max())
        # adversarial probes: a sign flip in the evaluation PGD moves a pixel by 2 steps, so only
        # their overall size is compared
        np.testing.assert_allclose(np.abs(r1["adv_probes"]["conv2"]).mean(), np.abs(r8["adv_probes"]["conv2"]).mean(),
                                   rtol=1e-2)
        assert np.mean(r1["adv_correct"] == r8["adv_correct"]) >= 0.9
        print(mode, "loss", m1["loss"].tolist(), "max |dloss|", float(np.max(np.abs(m1["loss"] - m8["loss"]))))

    # 2. Seeds × devices: K = 2 stacked seeds on a (seeds=2, data=4) mesh equal two single runs.
    mesh = parallel.make_mesh(8, seeds=2)
    assert mesh.axis_names == ("seeds", "data") and dict(mesh.shape) == {"seeds": 2, "data": 4}
    init_keys, epoch_keys = jax.random.split(jax.random.key(0), 2), jax.random.split(jax.random.key(1), 2)
    two = parallel.place_states(training.create_train_states(module, init_keys, hw, tx), mesh)
    assert jax.tree.leaves(two.params)[0].sharding.spec[0] == "seeds"
    xs, ys = parallel.replicate((x, y), mesh)
    epoch = training.make_train_epoch(module, tx, num_examples=n, batch_size=batch, attack=train_attack,
                                      show_progress=False, mesh=mesh)
    two, m2 = epoch(two, xs, ys, epoch_keys)
    ev = make_evaluator(module, eval_attack, batch_size=16, mesh=mesh)
    r2 = jax.device_get(ev(two.params, two.batch_stats, xs[:16], ys[:16]))
    single_epoch = training.make_train_epoch(module, tx, num_examples=n, batch_size=batch, attack=train_attack,
                                             show_progress=False)
    single_ev = make_evaluator(module, eval_attack, batch_size=16)
    for k in range(2):
        one = training.stack([training.create_train_state(module, init_keys[k], hw, tx)])
        one, m1 = single_epoch(one, x, y, epoch_keys[k:k + 1])
        np.testing.assert_allclose(np.asarray(m2["loss"][k]), np.asarray(m1["loss"][0]), rtol=2e-4, atol=2e-5)
        for a, b in zip(jax.tree.leaves(two.params), jax.tree.leaves(one.params)):
            np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[0]), rtol=0, atol=2e-3)
        r1 = jax.device_get(single_ev(one.params, one.batch_stats, x[:16], y[:16]))
        np.testing.assert_allclose(r2["clean_loss"][k], r1["clean_loss"][0], rtol=1e-3, atol=1e-3)
    assert not np.allclose(np.asarray(m2["loss"][0]), np.asarray(m2["loss"][1]))  # the seeds differ
    # a (data,)-only mesh cannot hold several stacked seeds: a clear error
    try:
        training.make_train_epoch(module, tx, num_examples=n, batch_size=batch, show_progress=False,
                                  mesh=parallel.make_mesh(8))(parallel.replicate(two, parallel.make_mesh(8)),
                                                              xs, ys, epoch_keys)
        raise AssertionError("stacked seeds on a data-only mesh were not refused")
    except ValueError as e:
        assert "('seeds', 'data') mesh" in str(e), e

    # 3. KDE with the layer's rows sharded over the 8 devices (a ring pass) against one device,
    # N not a multiple of 8, with bootstrap resamples, a sweep and the exact-distance pass.
    n, d = 203, 37
    t = (rng.normal(size=(n, d)) * 0.1).astype(np.float32)
    yk = rng.integers(0, 4, n)
    one_dev = jax.devices()[:1]
    bounds = ("kde_upper", "kde_lower")
    for nv in (0.1, 1.0):
        a = estimators.estimate(t, yk, methods=bounds, noise_var=nv, devices=one_dev, block_size=16, bootstrap=3)
        b = estimators.estimate(t, yk, methods=bounds, noise_var=nv, rows="sharded", block_size=8, bootstrap=3)
        for m in bounds:
            for q in ("I_XT", "I_TY", "I_XT_se", "I_TY_se", "nn_sq_dist_over_width", "self_dominated_share"):
                np.testing.assert_allclose(b[m][q], a[m][q], rtol=1e-5, atol=1e-5, err_msg=f"{m} {q} σ²={nv}")
        if nv == 0.1:  # neither floor nor ceiling: a real test
            assert 0.5 < a["kde_upper"]["I_XT"] < np.log2(n) - 0.5 and 0.5 < a["kde_lower"]["I_XT"], a
    grid = [1e-3, 4e-3, 1.6e-2, 0.064, 0.256]
    sa = estimators.sweep_kde_bounds(t, yk, grid, devices=one_dev)
    sb = estimators.sweep_kde_bounds(t, yk, grid, rows="sharded", block_size=8)
    for m in bounds:
        np.testing.assert_allclose(sb[m]["I_XT"], sa[m]["I_XT"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sb[m]["I_TY"], sa[m]["I_TY"], rtol=1e-5, atol=1e-5)
    # a layer whose float32 Gram distances are too coarse (clusters of norm ~500, spread 0.05):
    # redone in float64 on the host from the unpadded layer, the same with sharded rows
    yf = rng.integers(0, 3, 123)
    far = (rng.standard_normal((123, 50)) * 0.05 + rng.standard_normal((3, 50))[yf] * 500).astype(np.float32)
    fa = estimators.estimate(far, yf, methods=bounds, devices=one_dev)
    fb = estimators.estimate(far, yf, methods=bounds, rows="sharded", block_size=8)
    for m in bounds:
        for q in ("I_XT", "I_TY", "nn_sq_dist_over_width"):
            np.testing.assert_allclose(fb[m][q], fa[m][q], rtol=1e-5, atol=1e-5, err_msg=f"float64 path {m} {q}")
    args = (jnp.asarray(t), jnp.asarray(yk, jnp.int32), jnp.ones((1, n), jnp.float32), jnp.float32(0.1))
    ref = kde_pass.kde_sums(*args, num_classes=4, block_size=16, exact=True)
    ring = kde_ring.kde_sums_ring(*args, num_classes=4, block_size=8, mesh=parallel.make_mesh(8), exact=True)
    np.testing.assert_allclose(ring[0], ref[0], rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(ring[3], ref[3], rtol=1e-5)

    # 4. A measurement on a mesh never holds a whole layer on one device: the probes come out
    # split over the data devices (both loops), and the ring pass's per-device memory is a
    # fraction of the layer's.
    from jaxmi.evaluation import make_forward
    mesh8 = parallel.make_mesh(8)
    state = training.create_train_state(module, jax.random.key(0), hw, tx)
    xf = x.astype(jnp.float32) / 255.0
    for loop in ("unrolled", "scan"):
        fwd = make_forward(module, with_probes=("conv1",), with_probs=False, stacked=False, batch_size=16,
                           mesh=mesh8, loop=loop)
        pr = fwd(state.params, state.batch_stats, xf, y)["probes"]["conv1"]
        assert pr.sharding.shard_shape(pr.shape)[0] == x.shape[0] // 8, (loop, pr.sharding)
        ref = make_forward(module, with_probes=("conv1",), with_probs=False, stacked=False, batch_size=16,
                           loop=loop)(state.params, state.batch_stats, xf, y)["probes"]["conv1"]
        np.testing.assert_allclose(np.asarray(pr), np.asarray(ref), rtol=1e-4, atol=1e-4 * float(jnp.abs(ref).max()))
    big_n, big_d = 4000, 4096  # 65.5 MB
    spec = (jax.ShapeDtypeStruct((big_n, big_d), jnp.float32,
                                 sharding=jax.sharding.NamedSharding(mesh8, jax.sharding.PartitionSpec("data"))),
            jax.ShapeDtypeStruct((big_n,), jnp.int32), jax.ShapeDtypeStruct((1, big_n), jnp.float32),
            jax.ShapeDtypeStruct((), jnp.float32))
    mem = kde_ring.kde_sums_ring.lower(*spec, num_classes=10, block_size=256, mesh=mesh8).compile().memory_analysis()
    per_device = mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
    assert per_device < 0.7 * 4 * big_n * big_d, mem  # replicated: the whole layer on every device
    print("ring pass per device", per_device / (4 * big_n * big_d), "of the layer")
    print("OK")
''')


def test_eight_devices_match_one_device_seeds_times_devices_and_sharded_kde():
    # 8 host "devices" share the CI's 2 cores: give slow collectives time instead of aborting after 40 s.
    flags = ("--xla_force_host_platform_device_count=8 --xla_cpu_collective_timeout_seconds=900 "
             "--xla_cpu_collective_call_terminate_timeout_seconds=900")
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert proc.stdout.strip().endswith("OK")
