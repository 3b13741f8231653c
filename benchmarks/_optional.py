"""Optional packages of the benchmarks: a benchmark that needs one it cannot import stops with one
line naming the script, the package and its install line, and exit status 2 (as for a bad flag)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

INSTALL = {
    "torch": "pip install torch==2.13.0 (the CPU wheel; any torch works)",
    "torchattacks": "pip install torchattacks --no-deps",
}


def require(name: str, script: str | None = None) -> ModuleType:
    """The module ``name``, or exit 2 after ``error: <script> needs <name>: <install line>``."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 (ImportError, or a dependency that fails while importing)
        script = script or Path(sys.argv[0]).name or "this benchmark"
        print(f"error: {script} needs {name}: {INSTALL.get(name, 'pip install ' + name)}", file=sys.stderr)
        raise SystemExit(2) from None
