"""Run directories and atomic result files, on local disks and on cloud storage alike.

Paths go through :class:`etils.epath.Path`, so ``--out gs://bucket/run`` writes to Google
Cloud Storage (and any other filesystem epath knows) with the same code as a local folder.
Every result file is written to a temporary file beside its destination and then renamed
over the final name (``os.replace``, atomic on POSIX and Windows; on object stores a copy
then a delete of the temporary), so a run that is killed never leaves a half-written
``summary.json`` behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from etils import epath

__all__ = ["as_path", "is_local", "atomic_write_bytes", "atomic_write_text", "write_json", "read_json",
           "prepare_run_dir", "discard_run_dir", "has_run_state", "to_jsonable", "RunDirError", "RUN_OUTPUTS"]

def as_path(path: str | os.PathLike) -> epath.Path:
    """``path`` as an :class:`etils.epath.Path` (local, ``gs://``, ...)."""
    return epath.Path(path)


def is_local(path: str | os.PathLike) -> bool:
    """Whether ``path`` is on a local filesystem (no ``scheme://`` prefix)."""
    return "://" not in os.fspath(path)


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, object_store: bool | None = None) -> epath.Path:
    """Writes ``data`` to ``path`` via a temporary file beside it and a rename.

    ``object_store``: write the way object stores need (a uniquely named temporary object,
    then :meth:`epath.Path.replace`), which works on every filesystem epath knows; default:
    for paths with a ``scheme://`` prefix, while local paths get ``os.replace`` after an fsync.
    """
    path = as_path(path)
    if object_store or (object_store is None and not is_local(path)):
        return _write_via_rename(path, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=os.fspath(path.parent))
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # the permissions of a plain open(), not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.fspath(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_via_rename(path: epath.Path, data: bytes) -> epath.Path:
    """Object stores: a uniquely named temporary object, then a rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> epath.Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> epath.Path:
    """Writes ``obj`` as indented JSON (:func:`to_jsonable`: NaN and ±inf become ``null``), atomically.

    The one JSON writer of the library, the finding scripts and the benchmarks."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(as_path(path).read_text(encoding="utf-8"))


RUN_STATE_DIRS = ("checkpoints", "models")  # a run's resumable state (see jaxmi.checkpoint)
#: Everything a run writes into its directory besides ``config.json`` (figures are ``*.png``,
#: ``seed<s>/`` the per-seed runs of ``--seeds``): what ``overwrite`` clears.
RUN_OUTPUTS = ("summary.json", "timing.json", "metrics.jsonl", "tensorboard", *RUN_STATE_DIRS)
#: Present while ``overwrite`` clears a run directory; a start that finds it clears again.
CLEARING = ".clearing"


def _clear_outputs(out: epath.Path, marker: str) -> None:
    """Removes a run's outputs from ``out``: first its identity (``marker``), then every output, so
    that an interruption never leaves the files of two configurations side by side."""
    flag = out / CLEARING
    flag.write_text("")
    if (out / marker).exists():
        (out / marker).unlink()
    for p in out.iterdir():
        name = p.name
        run_dir = p.is_dir() and name.startswith("seed") and (p / marker).exists()
        if name in RUN_OUTPUTS or name.endswith(".png") or run_dir:
            p.rmtree() if p.is_dir() else p.unlink()


def has_run_state(out: str | os.PathLike) -> bool:
    """Whether a run directory holds anything a run resumes from or reports (checkpoints, models,
    live metrics, a summary)."""
    out = as_path(out)
    return any((out / name).exists() for name in RUN_OUTPUTS)


def discard_run_dir(out: str | os.PathLike, *, created: bool, marker: str = "config.json") -> None:
    """Undoes :func:`prepare_run_dir` for a run that failed before writing anything: removes its
    ``marker`` (and the directory, if this start ``created`` it and it is now empty), so that a
    corrected command is not refused as a different run. A directory holding run state is kept."""
    out = as_path(out)
    if has_run_state(out):
        return
    if (out / marker).exists():
        (out / marker).unlink()
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def prepare_run_dir(out: str | os.PathLike, identity: dict, *, overwrite: bool = False,
                    marker: str = "config.json", normalize: Callable[[dict], dict] | None = None) -> epath.Path:
    """Creates or checks a run directory.

    A directory that already holds a run (its ``config.json``) is refused unless its identity
    equals ``identity`` (the same run: it is resumed from its checkpoints, or re-plotted) or
    ``overwrite`` is set, which also deletes the old run's checkpoints and models
    (``RUN_STATE_DIRS``) and every other output of it (``RUN_OUTPUTS``, figures, per-seed
    directories), its identity first, so that it starts over and an interrupted ``overwrite``
    never leaves the files of two runs side by side. An unwritable location raises
    :class:`RunDirError`.

    Args:
      identity: what makes the run this run (a plain dict), written to ``config.json``.
      normalize: maps a stored identity and ``identity`` to a comparable form (e.g.
        :func:`jaxmi.config.normalize_identity`: fields added since a run was written take
        their defaults); default: compared as they are.

    Returns:
      The directory as an :class:`etils.epath.Path`.
    """
    out = as_path(out)
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
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot write to --out {out} ({e.strerror or e}); choose a writable directory.") from None
    if overwrite or (out / CLEARING).exists():  # (an earlier overwrite was interrupted while clearing)
        _clear_outputs(out, marker)
    write_json(existing, cfg)
    if (out / CLEARING).exists():
        (out / CLEARING).unlink()
    return out
