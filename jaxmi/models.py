"""Flax CNNs of the paper, with named probe points.

Every model maps images ``x`` [B, H, W, C] in [0, 1] to ``(logits, probes)``, where
``probes`` is a dict ``{name: [B, D]}`` of flattened layer outputs in a fixed order
(:attr:`probe_names`). Models are pure: variables (``params`` and, for the WideResNet,
``batch_stats``) go in, outputs come out; :func:`apply_model` wraps ``module.apply`` and
returns the updated batch statistics in training mode.

Initialisation: MLP and LeNet use PyTorch's default initialisation throughout
(:mod:`jaxmi.ops`); the WideResNet uses He-normal (fan-out) convolutions without bias,
BatchNorm scale 1 / bias 0, and a zero linear bias, as in the paper's WideResNet.

Any module with a ``probe_names`` tuple whose ``__call__(x, train=False)`` returns
``(logits, probes)`` works everywhere these models do (the *model protocol*); your own Flax
model joins through :class:`jaxmi.probes.ProbedModel` and, by name, through a factory spec
``"package.module:factory"`` (:func:`create_model`, :mod:`jaxmi.probes`).
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable
from typing import Any

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmi import config as config_lib
from jaxmi import probes as probes_lib
from jaxmi.specs import ModelSpecError, build_model
from jaxmi.ops import conv2d_valid, max_pool_2x2, torch_default_bias_init, torch_default_kernel_init

__all__ = ["MLP", "LeNet", "WideResNet", "Conv", "MODELS", "PRECISIONS", "create_model", "init_variables",
           "apply_model", "probe_widths", "model_label", "ModelSpecError", "build_model", "init_variables_core",
           "apply_model_core", "check_input_shape"]

Array = jax.Array


def _dense(x: Array, features: int, name: str, dtype: Any = jnp.float32) -> Array:
    return nn.Dense(features, kernel_init=torch_default_kernel_init,
                    bias_init=torch_default_bias_init(x.shape[-1]), dtype=dtype, param_dtype=jnp.float32,
                    name=name)(x)


def _outputs(logits: Array, probes: dict[str, Array]):
    """Logits and probes leave every model in float32, whatever the compute dtype."""
    return logits.astype(jnp.float32), {k: v.astype(jnp.float32) for k, v in probes.items()}


class Conv(nn.Module):
    """VALID stride-1 convolution with PyTorch-default init; parameters named like ``nn.Conv``."""

    features: int
    kernel_size: int
    impl: str = "auto"
    dtype: Any = jnp.float32  # compute dtype; parameters stay float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cin = x.shape[-1]
        k = self.kernel_size
        kernel = self.param("kernel", torch_default_kernel_init, (k, k, cin, self.features))
        bias = self.param("bias", torch_default_bias_init(cin * k * k), (self.features,))
        dt = self.dtype
        return conv2d_valid(x.astype(dt), kernel.astype(dt), self.impl) + bias.astype(dt)


def _flat(x: Array) -> Array:
    return x.reshape(x.shape[0], -1)


class MLP(nn.Module):
    """784-784-1024-20-20-20-10 ReLU MLP; probes at every linear output (before ReLU)."""

    widths: tuple[int, ...] = (784, 1024, 20, 20, 20, 10)
    probe_names: tuple[str, ...] = ("fc1", "fc2", "fc3", "fc4", "fc5", "fc6")
    dtype: Any = jnp.float32  # compute dtype (e.g. bfloat16); parameters and outputs float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False):
        del train
        h = _flat(x).astype(self.dtype)
        probes = {}
        for i, (w, name) in enumerate(zip(self.widths, self.probe_names)):
            h = _dense(h, w, name, self.dtype)
            probes[name] = h
            if i < len(self.widths) - 1:
                h = nn.relu(h)
        return _outputs(h, probes)


class LeNet(nn.Module):
    """LeNet-5 of the paper (MNIST 28×28×1 or CIFAR-10 32×32×3 inputs).

    conv 6@5×5 → ReLU → maxpool 2 → conv 16@5×5 → ReLU → maxpool 2 → fc 120 → ReLU → fc 84 →
    ReLU → fc ``num_classes``. Probes: the two conv and three fc outputs before activation
    (widths 3456, 1024, 120, 84, 10 on MNIST; 4704, 1600, 120, 84, 10 on CIFAR-10).
    """

    num_classes: int = 10
    probe_names: tuple[str, ...] = ("conv1", "conv2", "fc1", "fc2", "fc3")
    conv_impl: str = "auto"  # see jaxmi.ops.conv2d_valid; changes speed, not results
    dtype: Any = jnp.float32  # compute dtype (e.g. bfloat16); parameters and outputs float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False):
        del train
        dt = self.dtype
        c1 = Conv(6, 5, self.conv_impl, dt, name="conv1")(x)
        h = max_pool_2x2(nn.relu(c1))
        c2 = Conv(16, 5, self.conv_impl, dt, name="conv2")(h)
        h = _flat(max_pool_2x2(nn.relu(c2)))
        f1 = _dense(h, 120, "fc1", dt)
        f2 = _dense(nn.relu(f1), 84, "fc2", dt)
        logits = _dense(nn.relu(f2), self.num_classes, "fc3", dt)
        probes = dict(zip(self.probe_names, (_flat(c1), _flat(c2), f1, f2, logits)))
        return _outputs(logits, probes)


_he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class _Conv3(nn.Module):
    features: int
    stride: int = 1
    kernel: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        p = (self.kernel - 1) // 2  # PyTorch-style symmetric padding
        return nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                       padding=((p, p), (p, p)), use_bias=False, kernel_init=_he_normal_fan_out,
                       dtype=self.dtype, param_dtype=jnp.float32)(x)


def _bn(train: bool, name: str, dtype: Any = jnp.float32):
    # PyTorch BatchNorm2d: momentum 0.1 (= Flax 0.9), eps 1e-5.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        param_dtype=jnp.float32, name=name)


class _Block(nn.Module):
    """Pre-activation wide basic block: BN → LReLU → conv → BN → LReLU → conv (+ shortcut)."""

    features: int
    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        dt = self.dtype
        act = nn.leaky_relu(_bn(train, "bn1", dt)(x), 0.1)
        h = _Conv3(self.features, self.stride, dtype=dt, name="conv1")(act)
        h = nn.leaky_relu(_bn(train, "bn2", dt)(h), 0.1)
        h = _Conv3(self.features, 1, dtype=dt, name="conv2")(h)
        if x.shape[-1] != self.features or self.stride != 1:
            shortcut = _Conv3(self.features, self.stride, kernel=1, dtype=dt, name="shortcut")(act)
        else:
            shortcut = x
        return shortcut + h, act


class WideResNet(nn.Module):
    """WideResNet-10-1 of the paper (CIFAR-10 at 32 px, STL-10 at 96 px).

    Stem conv 16@3×3, three stages of one pre-activation block (widths 16/32/64, strides
    1/2/2), BN → LeakyReLU(0.1) → 8×8 average pool (stride 8) → fc. Probes: the stem output
    and the first activation of each block, then the logits (CIFAR widths 16384, 16384,
    16384, 8192, 10; STL-10 147456, 147456, 147456, 73728, 10).
    """

    num_classes: int = 10
    widths: tuple[int, int, int] = (16, 32, 64)
    probe_names: tuple[str, ...] = ("conv", "block1", "block2", "block3", "logits")
    dtype: Any = jnp.float32  # compute dtype (e.g. bfloat16); parameters, statistics, outputs float32

    @nn.compact
    def __call__(self, x: Array, train: bool = False):
        dt = self.dtype
        h = _Conv3(16, 1, dtype=dt, name="stem")(x)
        probes = {"conv": _flat(h)}
        for i, (w, s) in enumerate(zip(self.widths, (1, 2, 2))):
            h, act = _Block(w, s, dtype=dt, name=f"block{i + 1}")(h, train)
            probes[f"block{i + 1}"] = _flat(act)
        h = nn.leaky_relu(_bn(train, "bn_final", dt)(h), 0.1)
        if h.shape[1] < 8 or h.shape[2] < 8:
            raise ValueError(f"WideResNet needs inputs of at least 29×29 pixels (its final 8×8 average pool sees "
                             f"{h.shape[1]}×{h.shape[2]} for {x.shape[1]}×{x.shape[2]} inputs); use it on "
                             "CIFAR-10 (32 px) or STL-10 (96 px), and 'lenet' or 'mlp' for MNIST.")
        h = _flat(nn.avg_pool(h, (8, 8), strides=(8, 8)))
        logits = nn.Dense(self.num_classes, kernel_init=torch_default_kernel_init,
                          bias_init=nn.initializers.zeros, dtype=dt, param_dtype=jnp.float32, name="fc")(h)
        probes["logits"] = logits
        return _outputs(logits, {k: probes[k] for k in self.probe_names})


_BUILTIN_MODELS = (MLP, LeNet, WideResNet)


@dataclasses.dataclass(frozen=True)
class _ModelSpec:
    build: Callable[[int, Any], nn.Module]  # (num_classes, dtype) -> module
    datasets: tuple[str, ...]
    description: str


MODELS: dict[str, _ModelSpec] = {
    "mlp": _ModelSpec(lambda c, dt: MLP(widths=(784, 1024, 20, 20, 20, c), dtype=dt), ("mnist", "fashion_mnist"),
                      "784-784-1024-20-20-20-10 ReLU MLP"),
    "lenet": _ModelSpec(lambda c, dt: LeNet(num_classes=c, dtype=dt), ("mnist", "fashion_mnist", "cifar10"),
                        "LeNet-5 (MNIST 28×28×1 or CIFAR-10 32×32×3)"),
    "wrn": _ModelSpec(lambda c, dt: WideResNet(num_classes=c, dtype=dt), ("cifar10", "stl10"),
                      "WideResNet-10-1 (CIFAR-10 32 px or STL-10 96 px)"),
}


PRECISIONS = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# The configuration names the same models and precisions without importing this module.
assert sorted(MODELS) == sorted(config_lib.MODEL_NAMES) and sorted(PRECISIONS) == sorted(config_lib.PRECISIONS)


def create_model(name: str, num_classes: int = 10, *, precision: str = "float32") -> nn.Module:
    """Builds a model by name (``"mlp"``, ``"lenet"``, ``"wrn"``) or from a factory spec.

    The input size is taken from the data at initialisation, so one name serves both
    LeNet-MNIST and LeNet-CIFAR, and WideResNet at 32 px and 96 px.

    ``name`` may also be ``"package.module:factory"``: your own model, ``factory(num_classes)``
    (:func:`build_model`), which returns a model following the protocol, a
    :class:`jaxmi.probes.ProbedModel`, or a pair ``(flax_module, probe_names)``.

    ``precision="bfloat16"`` computes layers in bfloat16 (mixed precision for GPUs/TPUs):
    parameters, BatchNorm statistics, gradients, logits and probe activations stay float32,
    so losses, attacks' input gradients and MI estimates are float32. CPUs have no fast
    bfloat16 path; keep the default there. A factory's model computes in the dtype its
    factory sets, so only ``"float32"`` is accepted with a spec.

    Raises:
      TypeError: ``num_classes`` is not an integer.
      ValueError: an unknown name or precision, ``num_classes`` below 2; :class:`ModelSpecError` for a spec
        that cannot be imported or whose factory returns no model.
    """
    try:
        is_int = not isinstance(num_classes, bool) and operator.index(num_classes) == num_classes
    except TypeError:
        is_int = False
    if not is_int:
        raise TypeError(f"num_classes must be an integer ≥ 2 (the number of classes, e.g. 10); got "
                        f"{num_classes!r} ({type(num_classes).__name__}).")
    if num_classes < 2:
        raise ValueError(f"num_classes must be ≥ 2; got {num_classes}.")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}.")
    if name in MODELS:
        return MODELS[name].build(num_classes, PRECISIONS[precision])
    if not config_lib.is_model_spec(name):
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}, or give your own as "
                         f"{config_lib.SPEC_FORM}.")
    if precision != "float32":
        raise ValueError(f"precision {precision!r} applies to the built-in models {sorted(MODELS)}; the model "
                         f"{name!r} computes in the dtype its factory sets (use precision float32).")
    return build_model(name, num_classes)


def model_label(name: str) -> str:
    """A configured model name as it may appear in a file name (a spec's ``:`` and other
    characters unsafe in paths become ``_``): ``"lenet"``, ``"my_models_small_cnn"``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._") or "model"


def _flax_message(e: Exception) -> str:
    """A Flax error's first sentence, without its documentation link."""
    return str(e).split(" (https://", 1)[0].strip().rstrip(".")


def check_input_shape(module: nn.Module, input_shape) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints, (H, W, C) for the convolutional models; a
    ``ValueError`` naming the value and the fix otherwise."""
    try:
        shape = tuple(operator.index(d) for d in input_shape)
        ok = len(shape) > 0 and all(d > 0 and not isinstance(d, bool) for d in input_shape)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"input_shape must be the shape of one input, a tuple of positive integers such as "
                         f"(28, 28, 1) (H, W, C, without the batch axis); got {input_shape!r}.")
    if isinstance(module, (LeNet, WideResNet)) and len(shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C) for {type(module).__name__}, one image without the batch "
                         f"axis; got {shape}. Pass e.g. (28, 28, 1) for MNIST or (32, 32, 3) for CIFAR-10.")
    return shape


def init_variables(module: nn.Module, key: Array, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Initialises a model's variables for inputs of shape ``(H, W, C)``.

    ``input_shape`` is checked: positive integers, and (H, W, C) for the convolutional models;
    an image too small for the model's layers is refused with a ``ValueError`` naming it.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` is an empty dict for models
      without BatchNorm).

    Raises:
      jaxmi.probes.ModelProtocolError: ``module`` is not a jaxmi model (it has no
        ``probe_names`` or its ``__call__`` takes no ``train``); the message says how to wrap it.
      ValueError: a bad ``input_shape``.
    """
    probes_lib.check_model(module)
    input_shape = check_input_shape(module, input_shape)
    try:
        return init_variables_core(module, key, input_shape)
    except TypeError as e:  # the models' own ValueErrors (the WideResNet's minimum size) already name the fix
        if not isinstance(module, _BUILTIN_MODELS):
            raise
        raise ValueError(f"input_shape {input_shape} does not fit {type(module).__name__}: its layers fail on it "
                         f"({_flax_message(e)}). The images are probably too small; pass the shape of your "
                         "dataset's images, e.g. (28, 28, 1) or (32, 32, 3).") from None


def init_variables_core(module: nn.Module, key: Array, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """:func:`init_variables` without its checks, for code that checked the module and the shape
    once (a run's plan, :func:`jaxmi.training.create_train_states`): the same variables."""
    variables = dict(module.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False))
    variables.setdefault("batch_stats", {})
    return {"params": variables["params"], "batch_stats": variables["batch_stats"]}


def apply_model(module: nn.Module, params, batch_stats, x: Array, *, train: bool = False):
    """Runs a model.

    Args:
      module: a model from :func:`create_model`.
      params: parameters.
      batch_stats: BatchNorm running statistics (``{}`` for models without BatchNorm).
      x: images [B, H, W, C] in [0, 1].
      train: use batch statistics (and return updated running statistics) if True, the
        running statistics if False.

    Returns:
      ``(logits, probes, new_batch_stats)``; ``new_batch_stats`` equals ``batch_stats`` in
      evaluation mode.

    Raises:
      jaxmi.probes.ModelProtocolError: ``module`` does not follow the model protocol (checked
        in Python when the call is traced; nothing is added to the compiled computation).
      ValueError: ``x`` has a shape the parameters do not fit (checked on shapes only, also
        under ``jax.jit``; nothing is added to the compiled computation).
    """
    probes_lib.check_model(module)
    if isinstance(module, (LeNet, WideResNet)) and getattr(x, "ndim", None) != 4:
        raise ValueError(f"x must be a batch of images [B, H, W, C] for {type(module).__name__}; got shape "
                         f"{getattr(x, 'shape', type(x).__name__)}. Add the batch axis for one image (x[None]) or the "
                         "channel axis of grayscale images (x[..., None]).")
    try:
        return apply_model_core(module, params, batch_stats, x, train=train)
    except flax.errors.ScopeParamShapeError as e:
        raise ValueError(f"x of shape {tuple(x.shape)} does not fit the model's parameters: {_flax_message(e)}. The "
                         "parameters were initialised for inputs of another shape; pass images of the input_shape "
                         "given to init_variables (e.g. [B, 28, 28, 1] for MNIST), or initialise the model for "
                         "these images.") from None


def apply_model_core(module: nn.Module, params, batch_stats, x: Array, *, train: bool = False):
    """:func:`apply_model` without its checks of the module and of ``x``, for code that checked
    them once (a run's plan, the public factories of :mod:`jaxmi.training` and
    :mod:`jaxmi.evaluation`): the same ``(logits, probes, new_batch_stats)``. The output's
    structure is still checked as it is traced (:func:`jaxmi.probes.check_outputs`; no compute)."""
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    if train and batch_stats:
        out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
        new_stats = updates["batch_stats"]
    else:
        out, new_stats = module.apply(variables, x, train=train), batch_stats
    probes_lib.check_outputs(module, out)
    logits, probes = out
    return logits, probes, new_stats


def probe_widths(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """The flattened width of every probe for inputs of shape ``(H, W, C)`` (no compute), the
    model checked as :func:`jaxmi.probes.check_model` does."""
    return probes_lib.check_model(module, check_input_shape(module, input_shape))
