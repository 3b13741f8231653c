import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmi import backend, models, training
from jaxmi.attacks import PGDConfig, pgd
from jaxmi.config import OptimConfig
from jaxmi.evaluation import make_evaluator


def _toy_data(n=192, seed=0):
    """Class-dependent bright squares on noise: learnable by LeNet in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.int32)
    x = rng.integers(0, 60, (n, 28, 28, 1)).astype(np.uint8)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 5)
        x[i, 4 + 10 * r:10 + 10 * r, 2 + 5 * col:6 + 5 * col, 0] = 255
    return jnp.asarray(x), jnp.asarray(y)


def _setup(batch=32, n=192, attack=None, loop="auto", chunk=4):
    """One run as a stack of one: the state and keys carry a leading axis of size 1."""
    module = models.create_model("lenet")
    opt = OptimConfig(learning_rate=0.03, batch_size=batch)
    tx = training.make_optimizer(opt, n // batch)
    state = training.stack([training.create_train_state(module, jax.random.key(0), (28, 28, 1), tx)])
    epoch = training.make_train_epoch(module, tx, num_examples=n, batch_size=batch, attack=attack,
                                      loop=loop, chunk=chunk, show_progress=False)
    return module, state, epoch


def _key(i):
    return jax.random.key(i)[None]


def _unstacked(tree):
    return jax.tree.map(lambda a: a[0], tree)


def test_training_lowers_the_loss():
    x, y = _toy_data()
    module, state, epoch = _setup()
    losses = []
    for e in range(12):
        state, m = epoch(state, x, y, _key(e))
        losses.append(training.epoch_means(m)[0]["loss"])
    assert losses[0] > 2.0  # chance level: ln 10 = 2.30
    assert losses[-1] < 0.3
    assert int(state.step[0]) == 12 * (192 // 32)


def test_eps_warmup_attacks_with_a_linearly_growing_radius():
    """Step t of a W-step warm-up equals a plain AT step whose attack is scaled by min(1, (t+1)/W)."""
    x, y = _toy_data(n=32)
    xf = x.astype(jnp.float32) / 255.0
    module = models.create_model("lenet")
    tx = training.make_optimizer(OptimConfig(learning_rate=0.03), 10)
    state = training.create_train_state(module, jax.random.key(0), (28, 28, 1), tx)
    attack = PGDConfig(eps=0.3, step_size=0.1, steps=3, random_start=True)
    warm = jax.jit(training.make_train_step(module, tx, attack=attack, eps_warmup_steps=4))
    key = jax.random.key(5)
    losses = {}
    for t, scale in ((0, 0.25), (1, 0.5), (3, 1.0), (10, 1.0)):
        st = state._replace(step=jnp.int32(t))
        ref = training.make_train_step(module, tx, attack=PGDConfig(eps=0.3 * scale, step_size=0.1 * scale, steps=3,
                                                                    random_start=True))
        got, want = warm(st, xf, y, key), jax.jit(ref)(st, xf, y, key)
        for a, b in zip(jax.tree.leaves(got[0].params), jax.tree.leaves(want[0].params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1]["loss"], want[1]["loss"], rtol=1e-5)
        losses[t] = got[1]["loss"]
    assert float(losses[0]) < float(losses[10])  # a smaller radius: a weaker attack, a lower loss
    with pytest.raises(ValueError, match="eps_warmup_steps must be a non-negative integer"):
        training.make_train_step(module, tx, attack=attack, eps_warmup_steps=-1)
    with pytest.raises(ValueError, match="normal training"):
        training.make_train_step(module, tx, eps_warmup_steps=4)


def test_epoch_does_not_retrace_on_second_call():
    x, y = _toy_data()
    _, state, epoch = _setup(chunk=4)  # 6 steps: one chunk of 4 and one remainder of 2
    state, _ = epoch(state, x, y, _key(0))
    size = epoch.chunk_fn._cache_size()
    assert size == 2
    for k in (1, 2):
        state, _ = epoch(state, x, y, _key(k))
    assert epoch.chunk_fn._cache_size() == size


def test_scan_and_unrolled_loops_agree():
    x, y = _toy_data()
    results = {}
    for loop in ("scan", "unrolled"):
        _, state, epoch = _setup(loop=loop)
        state, m = epoch(state, x, y, _key(7))
        results[loop] = (state, jax.device_get(m))
    (s1, m1), (s2, m2) = results["scan"], results["unrolled"]
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-5)


def test_adversarial_epoch_trains_on_pgd_examples():
    x, y = _toy_data()
    attack = PGDConfig(eps=0.3, step_size=0.1, steps=3, random_start=True)
    module, state0, nt_epoch = _setup()
    _, _, at_epoch = _setup(attack=attack)
    params0 = state0.params
    # The first AT batch's reported loss is the loss on PGD examples: higher than on clean ones.
    copy = jax.tree.map(jnp.copy, state0)
    _, m_at = at_epoch(copy, x, y, _key(0))
    copy = jax.tree.map(jnp.copy, state0)
    _, m_nt = nt_epoch(copy, x, y, _key(0))
    assert m_at["loss"].shape == (1, 192 // 32)
    assert float(m_at["loss"][0, 0]) > float(m_nt["loss"][0, 0])
    del params0, module


def test_evaluator_matches_direct_computation_and_is_batch_size_invariant():
    x, y = _toy_data(n=50)
    module = models.create_model("lenet")
    v = models.init_variables(module, jax.random.key(0), (28, 28, 1))
    attack = PGDConfig(eps=0.2, step_size=0.05, steps=2)
    params = training.stack([v["params"]])
    r1 = _unstacked(jax.device_get(make_evaluator(module, attack, batch_size=16, with_probes=True)(
        params, {}, x, y)))
    r2 = _unstacked(jax.device_get(make_evaluator(module, attack, batch_size=50, with_probes=True, loop="scan")(
        params, {}, x, y)))
    xf = x.astype(jnp.float32) / 255
    logits, probes, _ = models.apply_model(module, v["params"], {}, xf)

    def f(z):
        return models.apply_model(module, v["params"], {}, z)[0]

    x_adv = pgd(f, xf, y, eps=0.2, step_size=0.05, steps=2)
    la = f(x_adv)
    np.testing.assert_array_equal(r1["clean_correct"], np.asarray(jnp.argmax(logits, -1) == y))
    np.testing.assert_array_equal(r1["adv_correct"], np.asarray(jnp.argmax(la, -1) == y))
    for r in (r1, r2):
        assert r["clean_loss"].shape == (50,)
        np.testing.assert_allclose(r["clean_probes"]["conv1"], np.asarray(probes["conv1"]), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r["adv_probes"]["fc3"], np.asarray(la), rtol=1e-4, atol=1e-4)
    assert np.all(r1["adv_loss"] >= r1["clean_loss"] - 1e-5)


def test_schedule_halves_per_epoch():
    opt = OptimConfig(learning_rate=0.1, milestones=(2, 3))
    tx = training.make_optimizer(opt, steps_per_epoch=10)
    # optax.sgd with a schedule: inspect by applying to a unit gradient with momentum 0
    tx0 = training.make_optimizer(OptimConfig(learning_rate=0.1, momentum=0.0, milestones=(2, 3)), 10)
    params = jnp.zeros(())
    st = tx0.init(params)
    rates = []
    for _ in range(40):
        u, st = tx0.update(jnp.ones(()), st)
        rates.append(-float(u))
    assert rates[0] == pytest.approx(0.1) and rates[19] == pytest.approx(0.1)
    assert rates[20] == pytest.approx(0.05) and rates[29] == pytest.approx(0.05)
    assert rates[30] == pytest.approx(0.025) and rates[39] == pytest.approx(0.025)
    del tx


def test_bad_optimizer_and_batch():
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        OptimConfig(learning_rate=0)
    module = models.create_model("lenet")
    tx = training.make_optimizer(OptimConfig(), 1)
    with pytest.raises(ValueError, match="larger than the training set"):
        training.make_train_epoch(module, tx, num_examples=10, batch_size=128)
    with pytest.raises(ValueError, match="unknown loop strategy"):
        backend.resolve_loop("fast")


AT_TOY = PGDConfig(0.2, 0.05, 2, True)


# Each loop with each seed loop once: the CPU defaults (unrolled, map) and the accelerator
# defaults (scan, vmap: K = 3 seeds in one vmapped program on one device), both with PGD-AT.
@pytest.mark.parametrize("loop,seed_loop,attack", [("unrolled", "map", AT_TOY), ("scan", "vmap", AT_TOY)],
                         ids=["at-unrolled-map", "at-scan-vmap"])
def test_vmapped_seeds_match_separate_runs(loop, seed_loop, attack):
    """K seeds in one program = K single runs with the same initial state and key."""
    x, y = _toy_data(n=96)
    module = models.create_model("lenet")
    tx = training.make_optimizer(OptimConfig(learning_rate=0.03, batch_size=32), 3)
    init_keys = jax.random.split(jax.random.key(0), 3)
    epoch_keys = jax.random.split(jax.random.key(1), 3)
    states = training.create_train_states(module, init_keys, (28, 28, 1), tx)
    epoch = training.make_train_epoch(module, tx, num_examples=96, batch_size=32, attack=attack, loop=loop,
                                      show_progress=False, seed_loop=seed_loop)
    states, m = epoch(states, x, y, epoch_keys)
    assert m["loss"].shape == (3, 3)
    finals = training.unstack(states)
    for k in range(3):  # the same epoch function on a stack of one: the single run
        s = training.stack([training.create_train_state(module, init_keys[k], (28, 28, 1), tx)])
        s, mk = epoch(s, x, y, epoch_keys[k:k + 1])
        s, mk = _unstacked(s), _unstacked(mk)
        np.testing.assert_allclose(m["loss"][k], mk["loss"], rtol=1e-4, atol=1e-5)
        for a, b in zip(jax.tree.leaves(finals[k].params), jax.tree.leaves(s.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # The seeds really differ (initial weights and data order).
    assert not np.allclose(m["loss"][0], m["loss"][1])


@pytest.mark.parametrize("loop,seed_loop", [("unrolled", "vmap"), ("scan", "map")])
def test_vmapped_evaluator_matches_per_seed(loop, seed_loop):
    x, y = _toy_data(n=70)
    module = models.create_model("lenet")
    tx = training.make_optimizer(OptimConfig(), 1)
    states = training.create_train_states(module, jax.random.split(jax.random.key(2), 2), (28, 28, 1), tx)
    att = PGDConfig(0.1, 0.05, 2)
    evaluate = make_evaluator(module, att, batch_size=32, with_probes=True, loop=loop, seed_loop=seed_loop)
    out = evaluate(states.params, states.batch_stats, x, y)
    assert out["adv_loss"].shape == (2, 70) and out["clean_probes"]["conv1"].shape == (2, 70, 3456)
    for k, s in enumerate(training.unstack(states)):
        ref = _unstacked(evaluate(training.stack([s.params]), training.stack([s.batch_stats]), x, y))
        jax.tree.map(lambda a, b, k=k: np.testing.assert_allclose(a[k], b, rtol=1e-4, atol=1e-5), out, ref)


def test_seed_stacking_errors():
    module = models.create_model("lenet")
    tx = training.make_optimizer(OptimConfig(), 1)
    with pytest.raises(ValueError, match="unknown seed loop"):
        training.make_train_epoch(module, tx, num_examples=64, batch_size=32, seed_loop="pmap")
    with pytest.raises(ValueError, match="1-D array of K PRNG keys"):
        training.create_train_states(module, jax.random.key(0), (28, 28, 1), tx)


def test_bfloat16_lenet_trains_like_float32_with_float32_parameters_and_outputs():
    """Mixed precision: bfloat16 compute, float32 parameters, optimizer state, loss and outputs;
    trained from the same initial weights with the same keys, it follows the float32 run.

    Measured on this setting (PGD-AT LeNet, 18 epochs of 6 steps): the epoch losses of epochs
    1–8 differ by at most 4e-4 (bfloat16 rounding of near-chance networks); in the fast-learning
    epochs 11–15 the runs drift apart (float32 learns first: loss differences up to 0.52, accuracy
    up to 0.15); both end at loss < 0.002 and 100 % training accuracy, where clean and PGD
    accuracies are equal. Tolerances: 3e-3 on the loss of epochs 1–8 (7× the difference seen),
    and the end state (loss < 0.05, equal accuracies within one image)."""
    x, y = _toy_data()
    n, batch = 192, 32
    module = models.create_model("lenet", precision="bfloat16")
    ref = models.create_model("lenet")
    opt = OptimConfig(learning_rate=0.03, batch_size=batch)
    tx = training.make_optimizer(opt, n // batch)
    state = training.create_train_state(module, jax.random.key(0), (28, 28, 1), tx)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    # Same parameters: bfloat16 logits follow the float32 model's within bfloat16 rounding.
    xf = x[:64].astype(jnp.float32) / 255.0
    (lb, pb), (lf, _) = module.apply({"params": state.params}, xf), ref.apply({"params": state.params}, xf)
    assert lb.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in pb.values())
    np.testing.assert_allclose(np.asarray(lb), np.asarray(lf), atol=0.05 * float(jnp.abs(lf).max()) + 1e-3)
    assert not np.array_equal(np.asarray(lb), np.asarray(lf))  # the compute really is bfloat16
    attack = PGDConfig(0.1, 0.03, 2, True)
    runs = {}
    for name, mod in (("bfloat16", module), ("float32", ref)):
        epoch = training.make_train_epoch(mod, tx, num_examples=n, batch_size=batch, attack=attack, loop="scan",
                                          show_progress=False)
        st, losses, accs = training.stack([state]), [], []
        for e in range(18):
            st, m = epoch(st, x, y, _key(e))
            losses.append(training.epoch_means(m)[0]["loss"])
            accs.append(training.epoch_means(m)[0]["accuracy"])
        evaluate = make_evaluator(mod, PGDConfig(0.1, 0.03, 3, False), batch_size=64)
        runs[name] = st, np.array(losses), np.array(accs), _unstacked(evaluate(st.params, st.batch_stats, x, y))
    (st, lb, ab, out), (_, lf, af, out_f) = runs["bfloat16"], runs["float32"]
    assert lb[0] > 2.0 and lf[0] > 2.0  # chance level at first
    np.testing.assert_allclose(lb[:8], lf[:8], atol=3e-3, rtol=0)
    assert not np.array_equal(lb, lf)
    assert max(lb[-2:]) < 0.05 and max(lf[-2:]) < 0.05, (lb, lf)
    assert abs(ab[-1] - af[-1]) <= 1 / n
    floats = [p for p in jax.tree.leaves((st.params, st.opt_state)) if jnp.issubdtype(p.dtype, jnp.floating)]
    assert floats and all(p.dtype == jnp.float32 for p in floats)
    assert out["clean_loss"].dtype == jnp.float32 and out["adv_loss"].dtype == jnp.float32
    for k in ("clean_correct", "adv_correct"):
        assert abs(float(out[k].mean()) - float(out_f[k].mean())) <= 1 / n
    assert float(out["clean_correct"].mean()) > 0.9
    assert float(out["adv_loss"].mean()) > float(out["clean_loss"].mean())  # the attack works in bfloat16


def test_unknown_precision_is_rejected():
    with pytest.raises(ValueError, match="precision"):
        models.create_model("lenet", precision="float16")


@pytest.mark.parametrize("show", [True, False])
def test_progress_callbacks_per_epoch_are_bounded(monkeypatch, show):
    """At most progress.MAX_TICKS host callbacks per epoch (here 250 steps), none without progress."""
    from jaxmi import progress

    calls = []
    monkeypatch.setattr(progress, "tick_host", lambda step, every: calls.append(int(every)))
    rng = np.random.default_rng(0)
    n, batch = 1000, 4
    x = jnp.asarray(rng.integers(0, 256, (n, 28, 28, 1)).astype(np.uint8))
    y = jnp.asarray(rng.integers(0, 10, n).astype(np.int32))
    module = models.create_model("mlp")
    tx = training.make_optimizer(OptimConfig(learning_rate=0.01, batch_size=batch), n // batch)
    state = training.stack([training.create_train_state(module, jax.random.key(0), (28, 28, 1), tx)])
    for loop in ("scan", "unrolled"):
        epoch = training.make_train_epoch(module, tx, num_examples=n, batch_size=batch, loop=loop, chunk=10,
                                          show_progress=show)
        calls.clear()
        state, m = epoch(state, x, y, _key(0))
        jax.block_until_ready(m)
        jax.effects_barrier()
        if show:
            assert 0 < len(calls) <= progress.MAX_TICKS and sum(calls) == 249, (loop, len(calls), sum(calls))
        else:
            assert calls == []
