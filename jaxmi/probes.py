"""Probes from any Flax model, and the adapter that puts your own model into the pipeline.

**Capturing.** :func:`capture` runs a Flax module once and returns the output of its layers
as probes, ``{name: [N, D] float32}``, each flattened per sample by :func:`flatten` (the same
``reshape(N, -1)`` and float32 cast as the built-in models' probes). It uses Flax's
``"intermediates"`` collection, which holds two kinds of values, both always collected:

* **captured** (``capture_intermediates=True``): the output of every submodule's
  ``__call__``, named by the submodule's ``/``-joined path (``"Conv_0"``, ``"block1/conv"``).
  This needs nothing of the model: every layer that is a submodule is a probe. The model's
  own output (its logits) is not one; probe its last layer instead.
* **sown** (``self.sow("intermediates", "relu1", h)`` inside the model): values that are no
  submodule's output, e.g. an activation applied inline (``nn.relu``) or a sum of two
  branches; named by the sowing module's path and the sown name (``"relu1"``,
  ``"block1/relu1"``).

A layer whose output is a tuple or dict gets one probe per array in it, with the array's
pytree path appended (``"block1[0]"``, ``"block1[1]"``); a submodule called more than once
(or a name sown more than once) gets one probe per call, numbered ``"#0"``, ``"#1"``, ….
Only floating-point arrays with the batch as their leading axis are probes.
:func:`available` lists every probe name with its per-sample shape, without computing.

**The model protocol.** The training, evaluation, estimators and findings of jaxmi take a
*model*: a Flax module with a ``probe_names`` tuple whose ``__call__(x, train=False)`` returns
``(logits [B, classes], {probe name: [B, ...] array})`` (``train=True``: batch statistics for
BatchNorm; the pipeline calls ``module.init(key, x, train=False)`` and
``module.apply(variables, x, train=..., mutable=["batch_stats"])``). The built-in models
(:mod:`jaxmi.models`) are such modules. :class:`ProbedModel` makes one of any Flax module that
returns logits: ``ProbedModel(module, ("Conv_0", "Dense_0"))``. Its variables are exactly the
wrapped module's (``params`` and, with BatchNorm, ``batch_stats``), so variables trained
through jaxmi work with the module itself and the other way round. :func:`check_model` says
what is wrong with a model that does not follow the protocol (:class:`ModelProtocolError`).

**Factories.** The configuration names a model by a string: a built-in name (``"lenet"``) or
a *spec* ``"package.module:factory"`` (:func:`build_model`), where ``factory(num_classes)``
returns a protocol model, a :class:`ProbedModel`, or a pair ``(module, probe_names)`` of a
plain Flax module and the names of the layers to probe (wrapped in a :class:`ProbedModel`).
``--model package.module:factory`` on the command line of every finding script; the run
directory stores the spec, and :func:`jaxmi.run.load_trained` rebuilds the model from it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp


__all__ = ["capture", "available", "flatten", "ProbedModel", "check_model", "check_outputs", "describe",
           "ModelProtocolError", "PROTOCOL"]

Array = jax.Array

PROTOCOL = ("A jaxmi model is a Flax module with a `probe_names` tuple whose `__call__(x, train=False)` returns "
            "`(logits [B, classes], {probe name: [B, ...] array})`; wrap a Flax module that returns logits with "
            "jaxmi.probes.ProbedModel(module, probe_names) (jaxmi.probes.available(module, None, input_shape) lists "
            "the layers it can probe). See 'Your own model in the pipeline' in docs/library.md")




class ModelProtocolError(TypeError, ValueError):
    """A model does not follow jaxmi's model protocol (:data:`PROTOCOL`)."""


def flatten(a: Array) -> Array:
    """One probe as ``[N, D]`` float32: every sample's values in row-major order.

    Args:
      a: a layer output [N, ...].

    Returns:
      ``a.reshape(N, -1)`` cast to float32, [N, D] with D the product of the other axes.
    """
    return a.reshape(a.shape[0], -1).astype(jnp.float32)


def describe(module: Any) -> str:
    return f"{type(module).__name__} ({type(module).__module__})"


def _protocol_error(module: Any, problem: str) -> ModelProtocolError:
    return ModelProtocolError(f"{describe(module)} does not follow jaxmi's model protocol: {problem}. {PROTOCOL}.")


def _accepts_train(module: nn.Module) -> bool:
    """Whether the module's ``__call__`` takes a ``train`` keyword (or ``**kwargs``)."""
    call = getattr(type(module), "__call__", None)
    if call is None:
        return False
    try:
        params = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return True  # no signature to read: let the call decide
    return any(p.kind is p.VAR_KEYWORD or (p.name == "train" and p.kind is not p.POSITIONAL_ONLY)
               for p in params.values())


def _train_kwargs(module: nn.Module, train: bool) -> dict[str, bool]:
    """``{"train": train}`` for modules that take the flag; nothing for those that do not."""
    return {"train": bool(train)} if _accepts_train(module) else {}


def _check_names(names: Any, owner: Any) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    try:
        names = tuple(names)
    except TypeError:
        raise _protocol_error(owner, f"probe_names must be a tuple of layer names; got {names!r}") from None
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise _protocol_error(owner, f"probe_names must be a non-empty tuple of distinct, non-empty strings; "
                                     f"got {names!r}")
    return names


def _walk(tree: Mapping[str, Any], path: tuple[str, ...], n: int, out: dict[str, Array]) -> None:
    for key, value in tree.items():
        if isinstance(value, Mapping):  # a submodule's collection
            _walk(value, path + (str(key),), n, out)
            continue
        base = path if key == "__call__" else path + (str(key),)
        if not base:  # the model's own output (its logits)
            continue
        calls = value if isinstance(value, tuple) else (value,)  # sow keeps a tuple, one entry per call
        for i, call in enumerate(calls):
            name = "/".join(base) + (f"#{i}" if len(calls) > 1 else "")
            for kp, leaf in jax.tree_util.tree_flatten_with_path(call)[0]:
                shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
                if (shape is None or dtype is None or not len(shape) or shape[0] != n
                        or not jnp.issubdtype(dtype, jnp.floating)):
                    continue
                out[name + jax.tree_util.keystr(kp)] = leaf


def _collect(intermediates: Mapping[str, Any], n: int) -> dict[str, Array]:
    """Every probe in an ``"intermediates"`` collection, by name, in the order the layers finished."""
    out: dict[str, Array] = {}
    _walk(intermediates, (), n, out)
    return out


def _select(found: Mapping[str, Array], names: Sequence[str], module: Any) -> list[Array]:
    missing = [p for p in names if p not in found]
    if missing:
        raise ValueError(f"{describe(module)} has no probe(s) {missing}; available: {list(found)} (submodule "
                         "outputs by '/'-joined path and values sown into 'intermediates', see jaxmi.probes).")
    return [flatten(found[p]) for p in names]


def _variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    """A model's variables without captured intermediates or empty collections."""
    return {k: v for k, v in dict(variables).items()
            if k != "intermediates" and not (isinstance(v, Mapping) and not v)}


def _inner(module: Any) -> nn.Module:
    if isinstance(module, ProbedModel):
        return module.module
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a Flax module (flax.linen.Module) or a jaxmi.probes.ProbedModel; got "
                        f"{describe(module)}.")
    return module


def _run(module: nn.Module, variables: Mapping[str, Any], x: Array, train: bool):
    """``(output, intermediates)`` of one call with every layer captured (batch statistics used,
    not updated, when ``train``)."""
    variables = _variables(variables)
    mutable = ["intermediates"] + (["batch_stats"] if train and "batch_stats" in variables else [])
    out, state = module.apply(variables, x, **_train_kwargs(module, train), capture_intermediates=True,
                              mutable=mutable)
    return out, state.get("intermediates", {})


def _check_input_shape(module: nn.Module, input_shape: Any) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive integers ((H, W, C) for the built-in convolutional
    models), or a ValueError naming it."""
    try:
        shape = tuple(operator.index(d) for d in input_shape)
        ok = len(shape) > 0 and all(d > 0 and not isinstance(d, bool) for d in input_shape)
    except TypeError:
        ok = False
    conv = type(module).__module__ == "jaxmi.models" and type(module).__name__ in ("LeNet", "WideResNet")
    if not ok or (conv and len(shape) != 3):
        raise ValueError(f"input_shape must be the shape of one input, a tuple of positive integers such as "
                         f"(28, 28, 1) (H, W, C, without the batch axis); got {input_shape!r}.")
    return shape


def available(module: Any, variables: Mapping[str, Any] | None, input_shape: Sequence[int], *,
              train: bool = False) -> dict[str, tuple[int, ...]]:
    """Every probe :func:`capture` can return, with its per-sample shape (traced, not computed).

    Args:
      module: a Flax module (or a :class:`ProbedModel`: its wrapped module's probes).
      variables: the module's variables; ``None``: those of a fresh initialisation.
      input_shape: the shape of one input, e.g. ``(28, 28, 1)``.
      train: list the probes of a call in training mode.

    Returns:
      ``{name: shape of one sample's output}`` in the order the layers finish; the probe's
      width D is the product of the shape.

    Raises:
      ValueError: ``input_shape`` is not a tuple of positive integers ((H, W, C) for the built-in
        LeNet and WideResNet), or the variables do not fit it.
    """
    inner = _inner(module)
    input_shape = _check_input_shape(inner, input_shape)
    try:
        return _probe_shapes(inner, variables, input_shape, train)
    except flax.errors.ScopeParamShapeError as e:
        raise ValueError(f"input_shape {input_shape} does not fit the module's parameters: {_flax_message(e)}. Pass "
                         "the shape of one input the variables were initialised for (e.g. (28, 28, 1) for MNIST), "
                         "or variables=None for a fresh initialisation.") from None


def _probe_shapes(inner: nn.Module, variables: Mapping[str, Any] | None, input_shape: tuple[int, ...],
                  train: bool) -> dict[str, tuple[int, ...]]:
    order: list[str] = []

    def f(x, v):
        if v is None:
            v = inner.init(jax.random.key(0), x, **_train_kwargs(inner, False))
        found = _collect(_run(inner, v, x, train)[1], x.shape[0])
        order[:] = list(found)
        return [found[k] for k in order]

    shapes = jax.eval_shape(f, jax.ShapeDtypeStruct((2, *input_shape), jnp.float32), variables)
    return {name: tuple(int(d) for d in s.shape[1:]) for name, s in zip(order, shapes)}


@functools.lru_cache(maxsize=32)
def _compiled_capture(module: nn.Module, names: tuple[str, ...], train: bool) -> Callable:
    @jax.jit
    def run(variables, x):
        return _select(_collect(_run(module, variables, x, train)[1], x.shape[0]), names, module)

    return run


def capture(module: Any, variables: Mapping[str, Any], x: Array, *, names: str | Sequence[str] | None = None,
            train: bool = False) -> dict[str, Array]:
    """The probes of one call of any Flax module, flattened per sample.

    Args:
      module: a Flax module (plain or following the model protocol), or a :class:`ProbedModel`
        (its wrapped module is run).
      variables: the module's variables (``{"params": ..., "batch_stats": ...}``; empty
        collections are dropped).
      x: inputs [N, ...] (images [N, H, W, C] as the model expects them, e.g. floats in [0, 1]).
      names: the probes to return (a name or a sequence); ``None``: every probe, as listed by
        :func:`available`.
      train: run in training mode (batch statistics for BatchNorm; running statistics are not
        updated). Modules whose ``__call__`` takes no ``train`` are called without it.

    Returns:
      ``{name: [N, D] float32}`` in the order of ``names`` (or the order the layers finish),
      each flattened by :func:`flatten`.

    Raises:
      ValueError: a name is not a probe of the module (the message lists those that are), ``names``
        is empty or not strings, ``x`` has no batch axis (built-in LeNet and WideResNet: not
        [N, H, W, C]) or a shape the variables do not fit (checked on shapes, when traced).
    """
    inner = _inner(module)
    x = _check_x(inner, x)
    try:
        if names is None:
            names = tuple(_probe_shapes(inner, variables, tuple(x.shape[1:]), train))
        else:
            names = _capture_names(names)
        try:
            run = _compiled_capture(inner, names, bool(train))
        except TypeError:  # an unhashable module: run it without jit
            def run(variables, x):
                return _select(_collect(_run(inner, variables, x, train)[1], x.shape[0]), names, inner)
        return dict(zip(names, run(_variables(variables), x)))
    except flax.errors.ScopeParamShapeError as e:
        raise ValueError(f"x of shape {tuple(x.shape)} does not fit the module's parameters: {_flax_message(e)}. "
                         "Pass inputs of the shape the variables were initialised for (e.g. [N, 28, 28, 1] for "
                         "MNIST), or initialise the module for these inputs.") from None


def _flax_message(e: Exception) -> str:
    """A Flax error's first sentence, without its documentation link."""
    return str(e).split(" (https://", 1)[0].strip().rstrip(".")


def _capture_names(names: Any) -> tuple[str, ...]:
    """``names`` of :func:`capture` as a non-empty tuple of distinct strings, or a ValueError naming it."""
    given = names
    try:
        names = (names,) if isinstance(names, str) else tuple(names)
    except TypeError:
        names = ()
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"names must be a probe name or a non-empty sequence of distinct probe names (strings; "
                         f"available() lists them), or None for every probe; got {given!r}.")
    return names


def _check_x(module: nn.Module, x: Any) -> Array:
    """``x`` of :func:`capture` as an array with a batch axis (images [N, H, W, C] for the
    built-in convolutional models), or a ValueError naming it."""
    try:
        x = jnp.asarray(x)
    except TypeError as e:
        raise TypeError(f"x must be an array of inputs [N, ...]; got {type(x).__name__} ({e}).") from None
    conv = type(module).__module__ == "jaxmi.models" and type(module).__name__ in ("LeNet", "WideResNet")
    if x.ndim < 2 or (conv and x.ndim != 4):
        want = "images [N, H, W, C]" if conv else "inputs [N, ...] with a batch axis"
        raise ValueError(f"x must be a batch of {want} for {describe(module)}; got shape {tuple(x.shape)}. Add the "
                         "batch axis for one input (x[None]) or the channel axis of grayscale images (x[..., None]).")
    return x


def _mutable_with_intermediates(mutable: Any) -> Any:
    if mutable is True:
        return True
    if mutable is False or mutable is None:
        return ["intermediates"]
    if isinstance(mutable, str):
        return [mutable, "intermediates"]
    return [*mutable, "intermediates"]


def _logits(out: Any, module: nn.Module) -> Array:
    if not (hasattr(out, "shape") and hasattr(out, "dtype") and len(out.shape) == 2
            and jnp.issubdtype(out.dtype, jnp.floating)):
        got = (f"an array of shape {tuple(out.shape)} and dtype {out.dtype}" if hasattr(out, "shape")
               else f"a {type(out).__name__}")
        raise ModelProtocolError(f"ProbedModel wraps a module that must return logits [B, classes]; "
                                 f"{describe(module)} returned {got}. Return the logits (and nothing else) from "
                                 "its __call__; sow other values into 'intermediates' to probe them.")
    return out.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class ProbedModel:
    """Any Flax module that returns logits, as a jaxmi model with the named probes.

    ``ProbedModel(module, probe_names)`` has the two methods the pipeline calls on a model,
    with the signatures of a Flax module's: ``init(key, x, train=False)`` returns the wrapped
    module's variables (exactly ``module.init``'s: ``params`` and, with BatchNorm,
    ``batch_stats``); ``apply(variables, x, train=False, mutable=False)`` runs it with every
    layer captured and returns ``(logits, {name: [B, D] float32})`` (and the updated
    collections when ``mutable`` names some, as Flax's ``apply`` does). Probes are
    selected by :func:`capture`'s names (:func:`available` lists them).

    The module's ``__call__`` gets ``train`` when it takes that keyword (BatchNorm: batch
    statistics when True), and is called without it otherwise. Models that need PRNG
    streams when training (Dropout) are not supported by jaxmi's training loop.

    Attributes:
      module: the Flax module; its ``__call__(x[, train])`` returns logits [B, classes].
      probe_names: the probes, in the order runs report them.
    """

    module: nn.Module
    probe_names: tuple[str, ...]

    def __post_init__(self):
        if not isinstance(self.module, nn.Module):
            raise ModelProtocolError(f"ProbedModel wraps a Flax module (flax.linen.Module); got "
                                     f"{describe(self.module)}.")
        object.__setattr__(self, "probe_names", _check_names(self.probe_names, self.module))

    def init(self, rngs: Any, x: Array, train: bool = False, **kwargs: Any) -> dict[str, Any]:
        """The wrapped module's variables for inputs like ``x`` [B, ...]; checks that it returns
        logits and has every probe (a ValueError lists the available ones)."""
        out, variables = self.module.init_with_output(rngs, x, **_train_kwargs(self.module, train),
                                                      capture_intermediates=True, mutable=True, **kwargs)
        variables = dict(variables)
        _logits(out, self.module)
        _select(_collect(variables.pop("intermediates", {}), x.shape[0]), self.probe_names, self.module)
        return variables

    def apply(self, variables: Mapping[str, Any], x: Array, train: bool = False, *, mutable: Any = False,
              **kwargs: Any):
        """``(logits [B, C] float32, {probe: [B, D] float32})``, and the updated collections
        ``mutable`` names (as in Flax) when it is not False."""
        out, state = self.module.apply(_variables(variables), x, **_train_kwargs(self.module, train),
                                       capture_intermediates=True, mutable=_mutable_with_intermediates(mutable),
                                       **kwargs)
        state = dict(state)
        found = _collect(state.pop("intermediates", {}), x.shape[0])
        result = (_logits(out, self.module), dict(zip(self.probe_names, _select(found, self.probe_names,
                                                                                  self.module))))
        return (result, state) if mutable else result


def check_outputs(module: Any, out: Any) -> None:
    """Raises :class:`ModelProtocolError` unless ``out`` (what ``module.apply`` returned, possibly
    traced) is ``(logits [B, C], {probe: [B, ...]})`` with every name in ``module.probe_names``."""
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
        got = (f"a tuple of {len(out)}" if isinstance(out, tuple) else
               f"an array of shape {tuple(out.shape)}" if hasattr(out, "shape") else f"a {type(out).__name__}")
        raise _protocol_error(module, f"its __call__ returned {got}, not a pair (logits, probes)")
    logits, probes = out
    if not (hasattr(logits, "shape") and len(logits.shape) == 2):
        raise _protocol_error(module, f"its logits have shape {getattr(logits, 'shape', None)}, not [B, classes]")
    missing = [p for p in module.probe_names if p not in probes]
    if missing:
        raise _protocol_error(module, f"its probes lack {missing} of its probe_names (it returned {list(probes)})")
    bad = {p: tuple(probes[p].shape) for p in module.probe_names
           if not hasattr(probes[p], "shape") or not len(probes[p].shape) or probes[p].shape[0] != logits.shape[0]}
    if bad:
        raise _protocol_error(module, f"probes {bad} do not have the batch ({logits.shape[0]}) as leading axis")


def check_model(module: Any, input_shape: Sequence[int] | None = None) -> dict[str, int] | None:
    """Checks that ``module`` is a jaxmi model; raises :class:`ModelProtocolError` saying what is
    missing and how to fix it (:data:`PROTOCOL`).

    ``input_shape`` (of one input, e.g. ``(28, 28, 1)``) given, the model is also initialised and
    called abstractly (:func:`jax.eval_shape`, no compute), its outputs are checked
    (:func:`check_outputs`) and the flattened width of every probe is returned, ``{probe: D}``
    in model order; ``None``: only what needs no input is checked (a ``probe_names`` tuple, a
    ``train`` keyword) and ``None`` is returned. A :class:`ProbedModel` was validated when built.
    """
    if not isinstance(module, ProbedModel):
        if not isinstance(module, nn.Module):
            raise _protocol_error(module, "it is not a Flax module (flax.linen.Module) or a jaxmi.probes.ProbedModel")
        if not hasattr(module, "probe_names"):
            raise _protocol_error(module, "it has no `probe_names` attribute")
        _check_names(module.probe_names, module)
        if not _accepts_train(module):
            raise _protocol_error(module, "its __call__ takes no `train` keyword argument")
    if input_shape is not None:
        def f(x):
            v = module.init(jax.random.key(0), x, train=False)
            return module.apply(v, x, train=False)

        out = jax.eval_shape(f, jax.ShapeDtypeStruct((2, *input_shape), jnp.float32))
        check_outputs(module, out)
        return {k: int(out[1][k].shape[-1]) for k in module.probe_names}
    return None
