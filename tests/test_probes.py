"""jaxmi.probes: capturing probes from any Flax model (against float64 NumPy references), the
ProbedModel adapter, the model-protocol check, factory specs, and the documented quick start."""

import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import own_model_fixture as fx
from jaxmi import PGDConfig, make_config, models, plan, probes
from jaxmi.config import Config
from jaxmi.evaluation import make_evaluator, make_forward
from jaxmi.training import create_train_states, make_optimizer, make_train_epoch

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (28, 28, 1)


@pytest.fixture(autouse=True)
def _fixture_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def _x(n=6, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, *SHAPE))


def _conv_valid_f64(x, kernel, bias=None):
    """VALID stride-1 NHWC convolution in float64 NumPy (cross-correlation, as Flax's)."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    kh, kw, _, cout = kernel.shape
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], h, w, cout))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,co->nhwo", x[:, i:i + h, j:j + w, :], kernel[i, j])
    return out if bias is None else out + np.asarray(bias, np.float64)


def _pool2(a):
    n, h, w, c = a.shape
    a = a[:, :h // 2 * 2, :w // 2 * 2]
    return a.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


# ---- capture and available


def test_capture_matches_float64_references_layer_by_layer():
    m = fx.SmallCNN()
    x = _x()
    v = m.init(jax.random.key(0), x[:1])
    got = probes.capture(m, v, x)
    assert list(got) == list(fx.SMALL_PROBES)  # every submodule and the sown value, in call order
    p = v["params"]
    conv0 = _conv_valid_f64(x, p["Conv_0"]["kernel"], p["Conv_0"]["bias"])
    np.testing.assert_allclose(got["Conv_0"], conv0.reshape(6, -1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["relu1"], np.maximum(conv0, 0).reshape(6, -1), rtol=1e-5, atol=1e-5)  # sown
    conv1 = _conv_valid_f64(_pool2(np.maximum(conv0, 0)), p["Conv_1"]["kernel"], p["Conv_1"]["bias"])
    np.testing.assert_allclose(got["Conv_1"], conv1.reshape(6, -1), rtol=1e-4, atol=1e-5)
    dense0 = _pool2(np.maximum(conv1, 0)).reshape(6, -1) @ np.asarray(p["Dense_0"]["kernel"], np.float64)
    dense0 += np.asarray(p["Dense_0"]["bias"])
    np.testing.assert_allclose(got["Dense_0"], dense0, rtol=1e-4, atol=1e-5)
    logits = m.apply(v, x)
    np.testing.assert_array_equal(got["Dense_1"], logits)  # the last layer's output is the model's output
    assert all(a.dtype == jnp.float32 and a.ndim == 2 and a.shape[0] == 6 for a in got.values())


def test_available_lists_names_and_shapes_without_computing():
    m = fx.SmallCNN()
    shapes = probes.available(m, None, SHAPE)
    assert shapes == {"Conv_0": (26, 26, 4), "relu1": (26, 26, 4), "Conv_1": (11, 11, 8), "Dense_0": (16,),
                      "Dense_1": (10,)}
    v = m.init(jax.random.key(0), _x(1))
    got = probes.capture(m, v, _x(3))
    assert {k: a.shape[1] for k, a in got.items()} == {k: int(np.prod(s)) for k, s in shapes.items()}
    assert probes.available(probes.ProbedModel(m, ("Conv_0",)), v, SHAPE) == shapes  # the wrapped module's


def test_selected_names_come_back_in_the_order_asked_and_unknown_names_list_the_available():
    m = fx.SmallCNN()
    v = m.init(jax.random.key(0), _x(1))
    x = _x(4)
    every = probes.capture(m, v, x)
    two = probes.capture(m, v, x, names=("Dense_0", "Conv_0"))
    assert list(two) == ["Dense_0", "Conv_0"]
    np.testing.assert_array_equal(two["Conv_0"], every["Conv_0"])
    assert list(probes.capture(m, v, x, names="relu1")) == ["relu1"]
    with pytest.raises(ValueError, match=r"no probe\(s\) \['conv9'\]; available: \['Conv_0', 'relu1', 'Conv_1'"):
        probes.capture(m, v, x, names=("Conv_0", "conv9"))


def test_flatten_is_row_major_per_sample_in_float32():
    a = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    f = probes.flatten(jnp.asarray(a, jnp.bfloat16))
    assert f.dtype == jnp.float32 and f.shape == (2, 60)
    np.testing.assert_array_equal(np.asarray(probes.flatten(jnp.asarray(a))), a.reshape(2, 60))


class _Pair(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x * 2.0, jnp.argmax(x, -1)  # the integer output is no probe


class _Naming(nn.Module):
    @nn.compact
    def __call__(self, x):
        shared = nn.Dense(3, name="shared")
        a = shared(x)
        b = shared(a)
        doubled, _ = _Pair(name="pair")(b)
        self.sow("intermediates", "sum", a + b)
        return nn.Dense(2)(doubled)


def test_names_of_repeated_calls_tuple_outputs_and_sown_values():
    m = _Naming()
    x = jax.random.normal(jax.random.key(2), (5, 3))
    v = m.init(jax.random.key(0), x)
    got = probes.capture(m, v, x)
    assert list(got) == ["shared#0", "shared#1", "pair[0]", "sum", "Dense_0"]
    w, b = (np.asarray(v["params"]["shared"][k], np.float64) for k in ("kernel", "bias"))
    a = np.asarray(x, np.float64) @ w + b
    a2 = a @ w + b
    np.testing.assert_allclose(got["shared#0"], a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["shared#1"], a2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["pair[0]"], 2 * a2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["sum"], a + a2, rtol=1e-5, atol=1e-6)


def test_batchnorm_probes_use_running_statistics_in_evaluation_and_batch_statistics_in_training():
    m = fx.BNCNN()
    x = _x(8)
    v = m.init(jax.random.key(0), x[:1])
    names = ("block1/conv", "block1/bn")
    ev = probes.capture(m, v, x, names=names)
    conv = _conv_valid_f64(np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0))), v["params"]["block1"]["conv"]["kernel"])
    np.testing.assert_allclose(ev["block1/conv"], conv.reshape(8, -1), rtol=1e-5, atol=1e-5)
    # fresh running statistics (mean 0, var 1), scale 1, bias 0
    np.testing.assert_allclose(ev["block1/bn"], (conv / np.sqrt(1 + 1e-5)).reshape(8, -1), rtol=1e-5, atol=1e-5)
    tr = probes.capture(m, v, x, names=names, train=True)
    mean, var = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
    np.testing.assert_allclose(tr["block1/bn"], ((conv - mean) / np.sqrt(var + 1e-5)).reshape(8, -1),
                               rtol=1e-4, atol=1e-4)


def test_capture_of_a_builtin_model_layer_equals_its_own_probe():
    lenet = models.create_model("lenet")
    v = models.init_variables(lenet, jax.random.key(0), SHAPE)
    x = _x(4)
    _, own, _ = models.apply_model(lenet, v["params"], v["batch_stats"], x)
    got = probes.capture(lenet, v, x, names=("conv1", "fc1"))
    np.testing.assert_array_equal(got["conv1"], own["conv1"])
    np.testing.assert_array_equal(got["fc1"], own["fc1"])


# ---- the adapter


def test_probed_model_has_the_modules_variables_logits_and_captured_probes():
    m, names = fx.small_cnn(10)
    pm = probes.ProbedModel(m, list(names))
    assert pm.probe_names == names
    x = _x(5)
    v = pm.init(jax.random.key(3), x)
    ref = m.init(jax.random.key(3), x)
    assert jax.tree.structure(v) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(a, b)
    logits, got = pm.apply(v, x)
    np.testing.assert_array_equal(logits, m.apply(v, x))
    want = probes.capture(m, v, x, names=names)
    assert list(got) == list(names)
    for k in names:
        np.testing.assert_array_equal(got[k], want[k])
    w = models.probe_widths(pm, SHAPE)
    assert w == {"Conv_0": 2704, "relu1": 2704, "Conv_1": 968, "Dense_0": 16, "Dense_1": 10}


def test_probed_batchnorm_model_trains_its_running_statistics_like_the_module():
    m, names = fx.bn_cnn(10)
    pm = probes.ProbedModel(m, names)
    v = models.init_variables(pm, jax.random.key(0), SHAPE)
    assert set(v["batch_stats"]) == {"block1", "block2"}
    x = _x(8)
    (logits, got), state = pm.apply(v, x, train=True, mutable=["batch_stats"])
    assert set(state) == {"batch_stats"}  # the captured intermediates are not returned
    ref_logits, ref_state = m.apply(v, x, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(logits, ref_logits)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state)):
        np.testing.assert_array_equal(a, b)
    logits2, probes2, stats = models.apply_model(pm, v["params"], v["batch_stats"], x, train=True)
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(ref_state["batch_stats"])):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(stats["block1"]["bn"]["mean"], 0)
    # evaluation mode uses the running statistics: differs from training mode
    ev_logits, _, same = models.apply_model(pm, v["params"], v["batch_stats"], x, train=False)
    assert same is v["batch_stats"] and not np.allclose(ev_logits, logits2)


def test_probed_model_refuses_bad_names_and_modules():
    m = fx.SmallCNN()
    with pytest.raises(ValueError, match=r"no probe\(s\) \['conv9'\]; available: \['Conv_0'"):
        probes.ProbedModel(m, ("Conv_0", "conv9")).init(jax.random.key(0), _x(1))
    with pytest.raises(probes.ModelProtocolError, match="distinct"):
        probes.ProbedModel(m, ("Conv_0", "Conv_0"))
    with pytest.raises(probes.ModelProtocolError, match="wraps a Flax module"):
        probes.ProbedModel(lambda x: x, ("a",))
    with pytest.raises(probes.ModelProtocolError, match=r"must return logits \[B, classes\].*returned a tuple"):
        probes.ProbedModel(fx.ProtocolCNN(), ("Conv_0",)).init(jax.random.key(0), _x(1))


# ---- the protocol check


class _NoTrain(nn.Module):
    probe_names: tuple = ("Dense_0",)

    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class _BareLogits(nn.Module):
    probe_names: tuple = ("Dense_0",)

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class _MissingProbe(nn.Module):
    probe_names: tuple = ("a", "b")

    @nn.compact
    def __call__(self, x, train=False):
        h = nn.Dense(10)(x.reshape(x.shape[0], -1))
        return h, {"a": h}


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_builtin_models_follow_the_protocol(name):
    probes.check_model(models.create_model(name), SHAPE)
    probes.check_model(models.create_model("own_model_fixture:protocol_cnn"), SHAPE)
    probes.check_model(models.create_model("own_model_fixture:bn_cnn"), SHAPE)


def test_models_off_the_protocol_get_an_error_naming_it_and_the_adapter():
    with pytest.raises(probes.ModelProtocolError, match=r"SmallCNN .* no `probe_names`.*ProbedModel\(module, probe_names\)"):
        probes.check_model(fx.SmallCNN())
    with pytest.raises(probes.ModelProtocolError, match="takes no `train` keyword"):
        probes.check_model(_NoTrain())
    with pytest.raises(probes.ModelProtocolError, match=r"returned an array of shape \(2, 10\), not a pair"):
        probes.check_model(_BareLogits(), SHAPE)
    with pytest.raises(probes.ModelProtocolError, match=r"lack \['b'\]"):
        probes.check_model(_MissingProbe(), SHAPE)
    with pytest.raises(probes.ModelProtocolError, match="not a Flax module"):
        probes.check_model(object())
    assert issubclass(probes.ModelProtocolError, TypeError) and issubclass(probes.ModelProtocolError, ValueError)


def test_pipeline_entry_points_refuse_a_plain_module_with_the_protocol_error():
    plain = fx.SmallCNN()
    attack = PGDConfig(eps=0.1, step_size=0.05, steps=1)
    tx = make_optimizer(make_config("smoke").optim, 4)
    calls = [lambda: models.init_variables(plain, jax.random.key(0), SHAPE),
             lambda: make_evaluator(plain, attack, batch_size=8),
             lambda: make_forward(plain, batch_size=8),
             lambda: make_train_epoch(plain, tx, num_examples=64, batch_size=16, show_progress=False),
             lambda: create_train_states(plain, jax.random.split(jax.random.key(0), 1), SHAPE, tx),
             lambda: models.probe_widths(plain, SHAPE)]
    for call in calls:  # before: TypeError "__call__() got an unexpected keyword argument 'train'"
        with pytest.raises(probes.ModelProtocolError, match="jaxmi's model protocol.*ProbedModel"):
            call()
    bare = _BareLogits()
    v = models.init_variables(bare, jax.random.key(0), SHAPE)
    with pytest.raises(probes.ModelProtocolError, match="not a pair"):
        models.apply_model(bare, v["params"], v["batch_stats"], _x(2))


# ---- factory specs


def test_specs_build_the_factorys_model():
    pm = models.create_model("own_model_fixture:small_cnn", 7)
    assert isinstance(pm, probes.ProbedModel) and pm.module.num_classes == 7 and pm.probe_names == fx.SMALL_PROBES
    own = models.create_model("own_model_fixture:protocol_cnn", 3)
    assert isinstance(own, fx.ProtocolCNN) and own.num_classes == 3
    c = make_config("smoke", model="own_model_fixture:bn_cnn")
    assert c.model.model == "own_model_fixture:bn_cnn"
    assert Config.from_dict(c.flat()) == c and Config.from_dict(c.to_dict()) == c
    assert models.model_label(c.model.model) == "own_model_fixture_bn_cnn" and models.model_label("lenet") == "lenet"


@pytest.mark.parametrize("spec, pattern", [
    ("resnet", r"unknown model 'resnet'; choose one of \['lenet', 'mlp', 'wrn'\], or give your own as "
               r"'package.module:factory'"),
    ("no_such_module_xyz:f", r"cannot import module 'no_such_module_xyz' \(ModuleNotFoundError.*PYTHONPATH"),
    ("own_model_fixture:missing", r"module 'own_model_fixture' \(.*own_model_fixture.py\) has no attribute 'missing'"),
    ("own_model_fixture:NOT_CALLABLE", "not a callable factory"),
    ("own_model_fixture:no_arguments", r"must take one argument, num_classes.*signature is \(\)"),
    ("own_model_fixture:plain_module", r"returned a Flax module \(SmallCNN.*without `probe_names`: return "
                                       r"\(module, probe_names\)"),
    ("own_model_fixture:not_a_model", r"returned str \(builtins\); a factory returns"),
    ("own_model_fixture:", "not a model spec"),
])
def test_bad_specs_are_refused_before_any_work_with_the_fix(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        plan.precheck(make_config("smoke", model=spec))  # what the command line runs before writing anything
    with pytest.raises(ValueError, match=pattern):
        models.create_model(spec)


def test_precision_is_for_builtin_models():
    with pytest.raises(ValueError, match="computes in the dtype its factory sets"):
        make_config("smoke", model="own_model_fixture:small_cnn", precision="bfloat16")
    assert make_config("smoke", model="lenet", precision="bfloat16").model.precision == "bfloat16"


# ---- the documented quick start, run as written


def _doc_block(heading: str) -> str:
    text = (ROOT / "docs" / "library.md").read_text()
    start = text.index(f"\n## {heading}\n")
    m = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert m is not None, f"no python block under {heading!r}"
    return m.group(1)


def test_quick_start_in_the_docs_runs_as_written(capsys):
    code = _doc_block("Measure MI of my own model's layers")
    namespace: dict = {}
    exec(compile(code, "docs/library.md", "exec"), namespace)  # noqa: S102 - our own documentation
    t, y, mi = namespace["t"], namespace["y"], namespace["mi"]
    # the shapes the block's comment shows
    assert probes.available(namespace["model"], namespace["variables"], SHAPE) == {
        "Conv_0": (28, 28, 8), "Dense_0": (64,), "Dense_1": (10,)}
    assert len(y) == 500 and set(mi) == set(t)
    for name, a in t.items():
        assert a.shape[0] == 500 and a.dtype == jnp.float32
        for est in mi[name].values():
            assert np.isfinite(est["I_XT"]) and 0 <= est["I_XT"] <= np.log2(500) + 1e-6
            assert np.isfinite(est["I_TY"]) and -1e-5 <= est["I_TY"] <= np.log2(10) + 1e-5
    assert "Conv_0" in capsys.readouterr().out
