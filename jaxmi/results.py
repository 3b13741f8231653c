"""Run directories and atomic result files.

Every result file is written to a temporary file in the destination directory and then
renamed over the final name (``os.replace`` is atomic on POSIX and Windows), so a run that
is killed never leaves a half-written ``summary.json`` behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
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


def prepare_run_dir(out: str | os.PathLike, identity: dict, *, overwrite: bool = False,
                    marker: str = "config.json", normalize: Callable[[dict], dict] | None = None) -> Path:
    """Creates or checks a run directory.

    A directory that already holds a run (its ``config.json``) is refused unless its identity
    equals ``identity`` (the same run: it is resumed from its checkpoints, or re-plotted) or
    ``overwrite`` is set, which also deletes the old run's checkpoints and models
    (``RUN_STATE_DIRS``) so that it starts over. An unwritable location raises
    :class:`RunDirError`.

    Args:
      identity: what makes the run this run (a plain dict), written to ``config.json``.
      normalize: maps a stored identity and ``identity`` to a comparable form (e.g.
        :func:`jaxmi.config.normalize_identity`: fields added since a run was written take
        their defaults); default: compared as they are.

    Returns:
      The directory as a :class:`Path`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} exists and is not a directory; choose another path.")
    existing = out / marker
    cfg = to_jsonable(identity)
    if existing.exists() and not overwrite:
        try:
            old = read_json(existing)
        except (OSError, json.JSONDecodeError) as e:
            raise RunDirError(f"{existing} is unreadable ({e}); pass --overwrite to replace the run in {out}.") from None
        if not isinstance(old, dict):
            raise RunDirError(f"{existing} does not hold a configuration; pass --overwrite to replace the run "
                              f"in {out}.")
        norm = normalize or (lambda d: d)
        try:
            old_n, new_n = to_jsonable(norm(old)), to_jsonable(norm(cfg))
        except (TypeError, ValueError) as e:
            raise RunDirError(f"--out {out} holds a run this version cannot read ({e}). Choose another --out, or "
                              "pass --overwrite to replace it.") from None
        if old_n != new_n:
            diff = sorted(k for k in set(old_n) | set(new_n) if old_n.get(k) != new_n.get(k))
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
        for name in RUN_STATE_DIRS:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    write_json(existing, cfg)
    return out
