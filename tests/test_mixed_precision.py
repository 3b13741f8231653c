"""Mixed precision (``precision="bfloat16"``): what a measurement hands the MI estimators is float32.

Training in bfloat16 against float32 from the same weights: tests/test_training.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmi import estimators, models, training
from jaxmi.evaluation import make_forward


def test_a_bfloat16_models_probes_reach_the_estimators_as_float32():
    """The pass a run's measurement takes (make_forward with probes) on a bfloat16 model."""
    module = models.create_model("mlp", precision="bfloat16")
    params = training.stack([models.init_variables(module, jax.random.key(0), (28, 28, 1))["params"]])
    x = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1))
    y = jnp.arange(16) % 10
    layers = tuple(models.probe_widths(module, (28, 28, 1)))
    out = make_forward(module, with_probes=layers, batch_size=8)(params, {}, x, y)
    assert set(out["probes"]) == set(layers) and len(layers) == 6
    for name, a in out["probes"].items():
        assert a.dtype == jnp.float32, (name, a.dtype)
        assert np.asarray(a).size and np.all(np.isfinite(np.asarray(a)))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_narrow_float_activations_are_estimated_in_float32(dtype):
    """The same values given in bfloat16 (a mixed-precision layer) or as float32 give the same
    estimates, bit for bit: the estimators compute in float32 whatever the layer's dtype."""
    y = np.arange(96) % 4
    x = (jax.random.normal(jax.random.key(0), (96, 3)) * 0.4 + jnp.asarray(y)[:, None] * 0.3).astype(dtype)
    methods = ("kde_upper", "kde_lower", "binning", "renyi")
    narrow = estimators.estimate(x, y, methods=methods)
    wide = estimators.estimate(x.astype(jnp.float32), y, methods=methods)
    for m in methods:
        assert 0.5 < wide[m]["I_XT"] < np.log2(96) - 0.5, (m, wide[m])  # neither trivial nor saturated
        assert (narrow[m]["I_XT"], narrow[m]["I_TY"]) == (wide[m]["I_XT"], wide[m]["I_TY"]), m
