"""The batched evaluation path against direct computations; the confusion matrix against a loop."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmi import models, training
from jaxmi.attacks import PGDConfig, pgd
from jaxmi.evaluation import confusion, make_adversary, make_forward


def test_confusion_against_a_loop_reference():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    probs = rng.dirichlet(np.ones(4), 200)
    c = confusion(y, probs, 4)
    pred = probs.argmax(1)
    for t in range(4):
        for p in range(4):
            m = (y == t) & (pred == p)
            assert c["counts"][t][p] == m.sum()
            if m.any():
                assert c["mean_confidence"][t][p] == pytest.approx(probs[m].max(1).mean())
            else:
                assert math.isnan(c["mean_confidence"][t][p])
    assert c["accuracy"] == pytest.approx(np.mean(pred == y))


@pytest.mark.parametrize("loop", ["scan", "unrolled"])
def test_adversary_and_forward_match_direct_computation(loop):
    x = jax.random.uniform(jax.random.key(0), (37, 28, 28, 1))
    y = jnp.arange(37) % 10
    module = models.create_model("lenet")
    v = models.init_variables(module, jax.random.key(1), (28, 28, 1))
    params = training.stack([v["params"]])
    attack = PGDConfig(0.2, 0.05, 2)
    x_adv = make_adversary(module, attack, batch_size=16, loop=loop)(params, {}, x, y)
    assert x_adv.shape == (1, *x.shape)

    def f(z):
        return models.apply_model(module, v["params"], {}, z)[0]

    ref = pgd(f, x, y, eps=0.2, step_size=0.05, steps=2)
    # Batched and direct gradients differ in float32 rounding; where an input gradient is ~0
    # its sign (hence a PGD step of 0.05) can flip (seen on GPU, never on CPU): allow that for
    # a handful of pixels, exact agreement elsewhere.
    diff = np.abs(np.asarray(x_adv[0]) - np.asarray(ref))
    assert np.mean(diff > 1e-6) < 1e-3 and diff.max() <= 2 * 0.05 + 1e-6, (np.mean(diff > 1e-6), diff.max())
    out = make_forward(module, batch_size=16, loop=loop)(params, {}, x, y)
    logits, probes, _ = models.apply_model(module, v["params"], {}, x)
    np.testing.assert_allclose(out["probs"][0], jax.nn.softmax(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["correct"][0], jnp.argmax(logits, -1) == y)
    np.testing.assert_allclose(out["probes"]["fc1"][0], probes["fc1"], rtol=1e-5, atol=1e-5)
    ref_loss = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]
    np.testing.assert_allclose(out["loss"][0], ref_loss, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="start from the clean image"):
        make_adversary(module, PGDConfig(0.2, 0.05, 2, True), batch_size=16)


@pytest.mark.parametrize("seed_loop,seeds_mesh", [("map", True), ("map", False), ("vmap", True)])
def test_stacked_models_match_each_model_alone(seed_loop, seeds_mesh):
    """K = 3 stacked models (on the one-device ("seeds", "data") mesh a multi-seed run builds,
    or without a mesh), looped over with lax.map or vmapped, give each model's own results, in
    model order."""
    from jaxmi import parallel
    x = jax.random.uniform(jax.random.key(0), (21, 28, 28, 1))
    y = jnp.arange(21) % 10
    module = models.create_model("lenet")
    vs = [models.init_variables(module, jax.random.key(k), (28, 28, 1)) for k in range(3)]
    params = training.stack([v["params"] for v in vs])
    mesh = parallel.make_mesh(1, seeds=1) if seeds_mesh else None
    attack = PGDConfig(0.2, 0.05, 2)
    kw = dict(batch_size=8, loop="unrolled", seed_loop=seed_loop, mesh=mesh)
    x_adv = make_adversary(module, attack, **kw)(params, {}, x, y)
    out = make_forward(module, **kw)(params, {}, x, y)
    assert x_adv.shape == (3, *x.shape) and out["probes"]["conv1"].shape[:2] == (3, 21)
    for k, v in enumerate(vs):
        one = training.stack([v["params"]])
        ref_adv = make_adversary(module, attack, batch_size=8, loop="unrolled")(one, {}, x, y)[0]
        ref = make_forward(module, batch_size=8, loop="unrolled")(one, {}, x, y)
        diff = np.abs(np.asarray(x_adv[k]) - np.asarray(ref_adv))
        assert np.mean(diff > 1e-6) < 1e-3, np.mean(diff > 1e-6)
        np.testing.assert_allclose(out["probs"][k], ref["probs"][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["probes"]["fc1"][k], ref["probes"]["fc1"][0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out["probs"][0], out["probs"][1])  # the models differ: order is checked
