"""Run directories and atomic result files.

Every result file is written to a temporary file in the destination directory and then
renamed over the final name (``os.replace`` is atomic on POSIX and Windows), so a run that
is killed never leaves a half-written ``summary.json`` behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write_text", "write_json", "read_json", "prepare_run_dir", "to_jsonable", "RunDirError"]


class RunDirError(ValueError):
    """The output directory cannot be used as asked."""


def to_jsonable(x: Any, *, keep_nan: bool = False) -> Any:
    """Converts NumPy/JAX scalars and arrays and tuples to plain Python/JSON values.

    NaN and ±inf become ``None`` (valid JSON), unless ``keep_nan``: then they stay floats, for
    an exact round trip through Python's JSON (checkpoint records).
    """
    if isinstance(x, dict):
        return {str(k): to_jsonable(v, keep_nan=keep_nan) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v, keep_nan=keep_nan) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return to_jsonable(x.tolist(), keep_nan=keep_nan)
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return None if not keep_nan and (math.isnan(x) or math.isinf(x)) else x
    return x


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to ``path`` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


RUN_STATE_DIRS = ("checkpoints", "models")  # removed by ``overwrite`` (see jaxmi.checkpoint)


def prepare_run_dir(out: str | os.PathLike, config: dict, *, overwrite: bool = False,
                    marker: str = "config.json", defaults: dict | None = None) -> Path:
    """Creates or checks a run directory.

    A directory that already holds a run (its ``config.json``) is refused unless its
    configuration equals ``config`` (the same run: it is resumed from its checkpoints, or
    re-plotted) or ``overwrite`` is set, which also deletes the old run's checkpoints and
    models (``RUN_STATE_DIRS``) so that it starts over. An unwritable location raises
    :class:`RunDirError`.

    Args:
      defaults: values of configuration keys added after a run was written; a key missing
        from the stored configuration matches when ``config`` holds its default.

    Returns:
      The directory as a :class:`Path`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} exists and is not a directory; choose another path.")
    existing = out / marker
    cfg = to_jsonable(config)
    if existing.exists() and not overwrite:
        try:
            old = read_json(existing)
        except (OSError, json.JSONDecodeError) as e:
            raise RunDirError(f"{existing} is unreadable ({e}); pass --overwrite to replace the run in {out}.") from None
        if isinstance(old, dict):
            old = {**{k: v for k, v in to_jsonable(defaults or {}).items() if k not in old}, **old}
        if not isinstance(old, dict):
            raise RunDirError(f"{existing} does not hold a configuration; pass --overwrite to replace the run "
                              f"in {out}.")
        if old != cfg:
            diff = sorted(k for k in set(old) | set(cfg) if old.get(k) != cfg.get(k))
            raise RunDirError(
                f"--out {out} holds a different run (config differs in {diff}). Choose another --out, "
                "or pass --overwrite to replace it."
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"cannot write to --out {out} ({e.strerror or e}); choose a writable directory.") from None
    if overwrite:
        import shutil
        for name in RUN_STATE_DIRS:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    write_json(existing, cfg)
    return out
