"""Optional packages in tests: the module, or a skip where it is missing or fails to import."""

import importlib

import pytest


def optional(name):
    """The module ``name``, or a skip where it is missing or fails to import (e.g. torchattacks
    beside a torchvision that does not import)."""
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"{name} is not available: {e!r}")
