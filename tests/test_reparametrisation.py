"""Reparametrisation invariance: an endpoint of finding 2 is admissible only if it does not move
when a network is rescaled without changing its function.

LeNet has ReLU and max-pool and no BatchNorm, so multiplying one layer's weights and bias by
c > 0 and the next layer's weights by 1/c leaves the function unchanged (ReLU and max-pool
commute with positive scaling) and multiplies that layer's probe (its pre-activation output)
by c. The scale-free estimates (σ² in units of the layer's spread) must not move; the
absolute-σ² estimate of the rescaled probe does.
"""

import jax
import numpy as np
import pytest

from jaxmi import data, models
from jaxmi.estimators import estimate
from jaxmi.estimators.bootstrap import resample_weights
from jaxmi.estimators.scale_free import BAND, RELATIVE_GRID, scale_free_sweep

N = 160
KDE = ("kde_upper", "kde_lower")


@pytest.fixture(scope="module")
def lenet():
    module = models.create_model("lenet", 10)
    ds = data.load_dataset("mnist", "test", max_examples=N)
    x = ds.images.astype(np.float32) / 255.0
    variables = models.init_variables(module, jax.random.key(0), x.shape[1:])
    return module, variables["params"], x, np.asarray(ds.labels, np.int32)


def _rescaled(params, layer: str, nxt: str, c: float):
    p = jax.tree.map(lambda a: a, params)  # a copy of the tree
    p[layer] = {"kernel": params[layer]["kernel"] * c, "bias": params[layer]["bias"] * c}
    p[nxt] = {**params[nxt], "kernel": params[nxt]["kernel"] / c}
    return p


def _forward(module, params, x):
    logits, probes, _ = models.apply_model(module, params, {}, x)
    return np.asarray(logits), {k: np.asarray(v) for k, v in probes.items()}


@pytest.mark.parametrize("layer,nxt", [("conv1", "conv2"), ("fc1", "fc2")])
@pytest.mark.parametrize("c", [0.1, 10.0])
def test_rescaling_a_layer_moves_only_the_absolute_estimate(lenet, layer, nxt, c):
    module, params, x, y = lenet
    logits, probes = _forward(module, params, x)
    logits_c, probes_c = _forward(module, _rescaled(params, layer, nxt, c), x)
    np.testing.assert_allclose(logits_c, logits, rtol=1e-5, atol=1e-5)  # the same function
    np.testing.assert_allclose(probes_c[layer], c * probes[layer], rtol=1e-5, atol=1e-6)
    w = resample_weights(N, 3, jax.random.key(1))
    band = [RELATIVE_GRID.index(v) for v in BAND]
    for name in probes:  # every probe's scale-free estimates, over the whole band and every resample
        a, b = (scale_free_sweep(p[name], y, w, num_classes=10) for p in (probes, probes_c))
        for m in KDE:
            assert np.max(np.abs(a[m]["I_XT"][band] - b[m]["I_XT"][band])) < 1e-3, (name, m)
            assert np.max(np.abs(a[m]["I_TY"][band] - b[m]["I_TY"][band])) < 1e-3, (name, m)
        rel = [estimate(p[name], y, methods=KDE, noise_var=2 ** -6, noise_scale="relative") for p in (probes, probes_c)]
        for m in KDE:
            assert abs(rel[0][m]["I_XT"] - rel[1][m]["I_XT"]) < 1e-3, (name, m)
    # the absolute σ² (fixed, here where the original probe's estimate is mid-range) moves by more than a bit
    s = float(np.mean(np.sum((probes[layer] - probes[layer].mean(0)) ** 2, axis=1)))
    sigma2 = 2 ** -2 * s
    before = estimate(probes[layer], y, methods=KDE, noise_var=sigma2)
    after = estimate(probes_c[layer], y, methods=KDE, noise_var=sigma2)
    for m in KDE:
        assert 1.0 < before[m]["I_XT"] < np.log2(N) - 1.0  # informative at this σ², so it can move either way
        assert abs(after[m]["I_XT"] - before[m]["I_XT"]) > 1.0, m
