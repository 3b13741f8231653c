"""Your own models in the pipeline: factory specs ``"package.module:factory"``.

A run's configuration names a model by a built-in name (:data:`jaxmi.models.MODELS`) or by a
spec: ``factory(num_classes)`` in an importable module, returning a jaxmi model (a Flax module
following :data:`jaxmi.probes.PROTOCOL`), a :class:`jaxmi.probes.ProbedModel`, or a pair
``(flax_module, probe_names)``. :func:`build_model` imports the factory, calls it and checks
what it returns; every failure is a :class:`ModelSpecError` saying how to fix it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from jaxmi import probes as probes_lib
from jaxmi.config import SPEC_FORM

__all__ = ["ModelSpecError", "build_model", "load_factory", "as_model"]


class ModelSpecError(ValueError):
    """A model spec ``"package.module:factory"`` cannot be turned into a model."""


def load_factory(spec: str) -> Callable[[int], Any]:
    """The factory a spec ``"package.module:factory"`` names (imported; ``factory`` may be a
    dotted attribute path, e.g. ``"models:Zoo.small"``).

    Raises:
      ModelSpecError: the spec is malformed, the module cannot be imported, the attribute is
        missing or not callable.
    """
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name.strip() or not attr.strip() or ":" in attr:
        raise ModelSpecError(f"model {spec!r} is not a model spec; give your own model as {SPEC_FORM}.")
    try:
        mod = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - ImportError, or whatever the module raises when imported
        raise ModelSpecError(f"model {spec!r}: cannot import module {module_name!r} ({type(e).__name__}: {e}); "
                             "make it importable: install it, run from the directory that holds it, or add that "
                             "directory to PYTHONPATH.") from e
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            where = getattr(mod, "__file__", None) or module_name
            raise ModelSpecError(f"model {spec!r}: module {module_name!r} ({where}) has no attribute {attr!r}; "
                                 f"name a factory defined there, as {SPEC_FORM}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSpecError(f"model {spec!r}: {attr!r} is an object of type {type(obj).__name__}, not a callable "
                             f"factory; give {SPEC_FORM}.")
    return obj


def as_model(obj: Any, *, where: str = "the model") -> Any:
    """A jaxmi model from what a factory returned.

    Args:
      obj: a jaxmi model (a Flax module following the protocol), a :class:`jaxmi.probes.ProbedModel`, or a
        pair ``(flax_module, probe_names)`` (wrapped in a :class:`jaxmi.probes.ProbedModel`).
      where: what produced ``obj``, for error messages.

    Raises:
      ModelSpecError: ``obj`` is none of these (a plain module without probe names, say).
      ModelProtocolError: a protocol module that lacks ``probe_names`` or ``train``.
    """
    if isinstance(obj, probes_lib.ProbedModel):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], nn.Module):
        return probes_lib.ProbedModel(obj[0], obj[1])
    if isinstance(obj, nn.Module):
        if not hasattr(obj, "probe_names"):
            raise ModelSpecError(f"{where} returned a Flax module ({probes_lib.describe(obj)}) without "
                                 "`probe_names`: return (module, probe_names) to probe its layers through "
                                 "jaxmi.probes.ProbedModel (the names come from jaxmi.probes.available(module, None, input_shape)), or a module "
                                 f"that follows the protocol: {probes_lib.PROTOCOL}.")
        probes_lib.check_model(obj)
        return obj
    raise ModelSpecError(f"{where} returned {probes_lib.describe(obj)}; a factory returns a jaxmi model, a "
                         "jaxmi.probes.ProbedModel, or a pair (flax_module, probe_names).")


def build_model(spec: str, num_classes: int) -> Any:
    """The model of a spec ``"package.module:factory"``: ``as_model(factory(num_classes))``.

    Raises:
      ModelSpecError: the spec cannot be imported or its factory does not take ``num_classes``
        or returns no model (the message says which and how to fix it).
    """
    factory = load_factory(spec)
    try:
        inspect.signature(factory).bind(num_classes)
    except TypeError:
        raise ModelSpecError(f"model {spec!r}: the factory must take one argument, num_classes, and return the "
                             f"model; its signature is {inspect.signature(factory)}.") from None
    except ValueError:  # no signature to read (a builtin): call it and see
        pass
    return as_model(factory(num_classes), where=f"the factory of model {spec!r}")
