import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmi import models

PAPER_WIDTHS = {
    ("lenet", (28, 28, 1)): [3456, 1024, 120, 84, 10],
    ("lenet", (32, 32, 3)): [4704, 1600, 120, 84, 10],
    ("wrn", (32, 32, 3)): [16384, 16384, 16384, 8192, 10],
    ("wrn", (96, 96, 3)): [147456, 147456, 147456, 73728, 10],
    ("mlp", (28, 28, 1)): [784, 1024, 20, 20, 20, 10],
}


@pytest.mark.parametrize("name,shape", list(PAPER_WIDTHS))
def test_probe_widths_match_paper(name, shape):
    m = models.create_model(name)
    widths = models.probe_widths(m, shape)
    assert list(widths.values()) == PAPER_WIDTHS[(name, shape)]
    assert tuple(widths) == m.probe_names


def test_forward_returns_flat_probes_in_order():
    m = models.create_model("lenet")
    v = models.init_variables(m, jax.random.key(0), (28, 28, 1))
    x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
    logits, probes, stats = models.apply_model(m, v["params"], v["batch_stats"], x)
    assert logits.shape == (3, 10)
    assert list(probes) == list(m.probe_names)
    assert [p.shape for p in probes.values()] == [(3, 3456), (3, 1024), (3, 120), (3, 84), (3, 10)]
    np.testing.assert_array_equal(probes["fc3"], logits)
    # conv1 probe is the pre-activation conv output: it has negative entries.
    assert float(probes["conv1"].min()) < 0


def test_lenet_uses_pytorch_default_init():
    m = models.create_model("lenet")
    p = models.init_variables(m, jax.random.key(0), (28, 28, 1))["params"]
    for layer, fan_in in [("conv1", 25), ("conv2", 150), ("fc1", 256), ("fc2", 120), ("fc3", 84)]:
        bound = 1 / math.sqrt(fan_in)
        for leaf in (p[layer]["kernel"], p[layer]["bias"]):
            leaf = np.asarray(leaf)
            assert np.abs(leaf).max() <= bound + 1e-7
        w = np.asarray(p[layer]["kernel"]).ravel()
        if w.size > 500:  # uniform on [−b, b] has std b/√3
            assert abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound
        assert np.abs(np.asarray(p[layer]["bias"])).max() > 0  # biases are not zero-initialised


def test_wrn_batchnorm_train_vs_eval():
    m = models.create_model("wrn")
    v = models.init_variables(m, jax.random.key(0), (32, 32, 3))
    assert "block1" in v["batch_stats"]
    x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))
    lt, _, new_stats = jax.jit(lambda p, s, xx: models.apply_model(m, p, s, xx, train=True))(
        v["params"], v["batch_stats"], x)
    le, _, same = models.apply_model(m, v["params"], v["batch_stats"], x, train=False)
    assert same is v["batch_stats"]
    # running statistics move towards the batch statistics (momentum 0.9, as PyTorch's 0.1)
    old = np.asarray(v["batch_stats"]["bn_final"]["mean"])
    new = np.asarray(new_stats["bn_final"]["mean"])
    assert not np.allclose(old, new)
    # eval mode uses running statistics (mean 0, var 1 at init), so outputs differ from train mode
    assert not np.allclose(np.asarray(lt), np.asarray(le), atol=1e-4)
    # stem conv: He-normal fan-out init, no bias
    k = np.asarray(v["params"]["stem"]["Conv_0"]["kernel"])
    assert "bias" not in v["params"]["stem"]["Conv_0"]
    assert abs(k.std() - math.sqrt(2 / (9 * 16))) < 0.2 * math.sqrt(2 / (9 * 16))
    assert np.all(np.asarray(v["params"]["fc"]["bias"]) == 0)


def test_unknown_model_names_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*lenet"):
        models.create_model("resnet")


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_lenet_conv_impls_give_the_same_model(shape):
    x = jax.random.uniform(jax.random.key(1), (4, *shape))
    y = jnp.arange(4) % 10
    outs = {}
    for impl in ("xla", "im2col", "rows"):
        m = models.LeNet(conv_impl=impl)
        v = models.init_variables(m, jax.random.key(0), shape)

        def loss(p, xx, m=m):
            logits = models.apply_model(m, p, {}, xx)[0]
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1).sum()

        # compiled (op by op, each of the patch products is its own dispatch and compile)
        probes_and_grads = jax.jit(lambda p, xx, m=m, loss=loss: (models.apply_model(m, p, {}, xx)[1],
                                                                  jax.grad(loss, argnums=(0, 1))(p, xx)))
        outs[impl] = probes_and_grads(v["params"], x)
    for impl in ("im2col", "rows"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), outs[impl], outs["xla"])


def test_wrn_on_too_small_images_names_the_fix():
    m = models.create_model("wrn")
    with pytest.raises(ValueError, match="at least 29×29.*'lenet' or 'mlp' for MNIST"):
        models.init_variables(m, jax.random.key(0), (28, 28, 1))
