"""Convolution and pooling primitives against float64 and Flax references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmi import ops


def _np_conv_valid(x, k):
    """float64 direct cross-correlation, NHWC × HWIO, stride 1, VALID."""
    x, k = np.asarray(x, np.float64), np.asarray(k, np.float64)
    kh, kw = k.shape[:2]
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], ho, wo, k.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("bhwc,cf->bhwf", x[:, i:i + ho, j:j + wo, :], k[i, j])
    return out


@pytest.mark.parametrize("impl", ["xla", "im2col", "rows", "auto"])
@pytest.mark.parametrize("shape", [(3, 28, 28, 1), (2, 14, 14, 6), (2, 9, 7, 3)])
def test_conv_impls_match_float64_reference(impl, shape):
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, shape)
    k = jax.random.normal(kk, (5, 5, shape[-1], 4))
    out = ops.conv2d_valid(x, k, impl)
    ref = _np_conv_valid(x, k)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    # Gradients (input and kernel) against the float64 adjoint: ⟨g, conv(x, k)⟩ is linear in
    # each, so d/dx and d/dk are correlations of g that the reference computes directly.
    g = jax.random.normal(kg, out.shape)
    dx, dk = jax.grad(lambda a, b: jnp.vdot(g, ops.conv2d_valid(a, b, impl)), argnums=(0, 1))(x, k)
    g64, x64, k64 = (np.asarray(a, np.float64) for a in (g, x, k))
    ref_dk = np.stack([np.stack([np.einsum("bhwc,bhwf->cf", x64[:, i:i + out.shape[1], j:j + out.shape[2]], g64)
                                 for j in range(5)]) for i in range(5)])
    ref_dx = np.zeros_like(x64)
    for i in range(5):
        for j in range(5):
            ref_dx[:, i:i + out.shape[1], j:j + out.shape[2]] += np.einsum("bhwf,cf->bhwc", g64, k64[i, j])
    np.testing.assert_allclose(dk, ref_dk, rtol=1e-4, atol=1e-5 * np.abs(ref_dk).max())
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-5 * np.abs(ref_dx).max())


def test_conv_impl_errors():
    x = jnp.zeros((1, 8, 8, 3))
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d_valid(x, jnp.zeros((3, 3, 2, 4)))
    with pytest.raises(ValueError, match="unknown conv implementation"):
        ops.conv2d_valid(x, jnp.zeros((3, 3, 3, 4)), "fft")


def test_max_pool_2x2_matches_flax_values_and_gradient():
    x = jax.random.normal(jax.random.key(3), (2, 8, 6, 3))  # continuous: no ties
    ref_fn = lambda a: nn.max_pool(a, (2, 2), strides=(2, 2))  # noqa: E731
    np.testing.assert_array_equal(ops.max_pool_2x2(x), ref_fn(x))
    g = jax.random.normal(jax.random.key(4), (2, 4, 3, 3))
    d = jax.grad(lambda a: jnp.vdot(g, ops.max_pool_2x2(a)))(x)
    d_ref = jax.grad(lambda a: jnp.vdot(g, ref_fn(a)))(x)
    np.testing.assert_array_equal(d, d_ref)
    odd = jax.random.normal(jax.random.key(5), (1, 7, 5, 2))  # falls back, drops the last row/col
    np.testing.assert_array_equal(ops.max_pool_2x2(odd), ref_fn(odd))
