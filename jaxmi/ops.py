"""Convolution and pooling primitives, and PyTorch's default initialisers.

The paper's models are PyTorch models; two of their details matter for reproducing them:
PyTorch's default initialisation (weights and biases uniform in ±1/√fan_in: with Flax's
LeCun-normal weights and zero biases PGD adversarial training of LeNet at ε = 45/255 stays
at chance) and cross-correlation "convolutions". The primitives here compute the same values
in several ways; which one runs is a platform choice (:mod:`jaxmi.backend`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmi import backend

__all__ = ["torch_default_kernel_init", "torch_default_bias_init", "conv2d_valid", "max_pool_2x2"]

Array = jax.Array


def torch_default_kernel_init(key, shape, dtype=jnp.float32):
    """PyTorch's default Linear/Conv weight init: U(−1/√fan_in, 1/√fan_in).

    (``kaiming_uniform_(a=√5)``; fan_in = product of all but the last kernel dimension.)
    """
    fan_in = math.prod(shape[:-1])
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_default_bias_init(fan_in: int) -> Callable:
    """PyTorch's default bias init for a layer with ``fan_in`` inputs: U(±1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv2d_valid(x: Array, kernel: Array, impl: str = "auto") -> Array:
    """Stride-1 VALID 2-D convolution (cross-correlation) of NHWC ``x`` with HWIO ``kernel``.

    ``impl`` picks how it is computed; all give the same values up to float32 rounding:

    * ``"xla"``: :func:`jax.lax.conv_general_dilated`.
    * ``"im2col"``: the kh·kw shifted views concatenated into a [B·Ho·Wo, kh·kw·C] patch
      matrix, then one matrix product.
    * ``"rows"``: the kw horizontal shifts concatenated ([B, H, Wo, kw·C]), then kh matrix
      products on vertically shifted views, summed.
    * ``"auto"``: chosen by :func:`jaxmi.backend.conv_impl` (XLA's convolution on GPU/TPU,
      patch-matrix products on CPU).
    """
    kh, kw, cin, f = kernel.shape
    if x.shape[-1] != cin:
        raise ValueError(f"conv input has {x.shape[-1]} channels but the kernel expects {cin}.")
    impl = backend.conv_impl(impl, kh, kw, cin)
    b, h, w, _ = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    if impl == "xla":
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if impl == "im2col":
        patches = jnp.concatenate([x[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)], axis=-1)
        return jnp.dot(patches.reshape(-1, kh * kw * cin), kernel.reshape(kh * kw * cin, f)).reshape(b, ho, wo, f)
    if impl == "rows":
        strips = jnp.concatenate([x[:, :, j:j + wo, :] for j in range(kw)], axis=-1)  # [B, H, Wo, kw·C]
        k_rows = kernel.reshape(kh, kw * cin, f)
        out = jnp.dot(strips[:, 0:ho].reshape(-1, kw * cin), k_rows[0])
        for i in range(1, kh):
            out = out + jnp.dot(strips[:, i:i + ho].reshape(-1, kw * cin), k_rows[i])
    strips = jnp.concatenate([x[:, :, j:j + wo, :] for j in range(kw)], axis=-1)  # "rows": [B, H, Wo, kw·C]
    k_rows = kernel.reshape(kh, kw * cin, f)
    out = jnp.dot(strips[:, 0:ho].reshape(-1, kw * cin), k_rows[0])
    for i in range(1, kh):
        out = out + jnp.dot(strips[:, i:i + ho].reshape(-1, kw * cin), k_rows[i])
    return out.reshape(b, ho, wo, f)


def max_pool_2x2(x: Array) -> Array:
    """2×2 max pooling with stride 2 (NHWC), as a reshape and a max.

    Same values as ``nn.max_pool(x, (2, 2), strides=(2, 2))``; its gradient is an
    elementwise mask instead of XLA's ``select_and_scatter``, which is slow on CPU. (At exact
    ties inside a window the gradient is shared between the tied entries rather than sent to
    the first; after a ReLU the only common ties are zeros, whose ReLU gradient is 0 anyway.)
    Odd sizes fall back to ``nn.max_pool``, which drops the last row/column the same way.
    """
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        return nn.max_pool(x, (2, 2), strides=(2, 2))
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
