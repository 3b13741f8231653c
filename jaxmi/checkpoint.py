"""Per-epoch checkpoints and the trained models of a run directory (orbax-checkpoint).

Layout inside a run directory::

    checkpoints/<step>/   after every epoch: the stacked train states of the regime being
                          trained (step counter, parameters, batch statistics, optimizer
                          state) and a JSON record (regime, epoch, seed, the run's identity,
                          every metric and MI measurement so far, timings). The two newest
                          are kept.
    models/nt/, models/at/  the final parameters and batch statistics of each model,
    models/models.json      written when that regime's last epoch is done.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
run killed at any point leaves either a whole checkpoint or none. The PRNG state needs no
storing: every key is derived from the seed with ``fold_in(epoch)``.

A corrupt newest checkpoint (files truncated or deleted after it was written) is skipped
with a one-line warning and removed, and the run resumes from the newest intact one; when
none is intact, or a checkpoint was written by a different configuration or format,
:class:`CheckpointError` says so in a few lines. A run is never silently restarted from
scratch. Format 1 checkpoints (runs before train states were always stacked) are read too.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from jaxmi.results import as_path, atomic_write_text, is_local, read_json, to_jsonable

__all__ = ["CheckpointError", "RunCheckpointer", "Restored", "save_model", "load_models", "MODELS_DIR",
           "CHECKPOINT_DIR", "FORMAT", "plain"]

FORMAT = 2  # bump when the checkpoint layout changes
_READABLE = (1, 2)  # 1: "mode" instead of "regime"; a single run's state unstacked
CHECKPOINT_DIR = "checkpoints"
MODELS_DIR = "models"
_MODELS_JSON = "models.json"


class CheckpointError(ValueError):
    """A checkpoint or model directory cannot be used (corrupt, incompatible or missing)."""


def plain(x: Any) -> Any:
    """NumPy/JAX scalars and arrays, tuples → plain Python values; NaN stays NaN (exact round trip)."""
    return to_jsonable(x, keep_nan=True)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
                        tree)


def _orbax_path(path):
    """Orbax wants absolute local paths; remote paths (``gs://``) go as they are."""
    return path.absolute() if is_local(path) else path


def _fix(run_dir) -> str:
    return (f"delete {run_dir / CHECKPOINT_DIR} or rerun with --overwrite to start the run over, "
            "or choose another --out")


# What orbax-checkpoint (0.12) raises for a checkpoint whose files were truncated, deleted or
# overwritten: a bare ``Exception`` wrapping TensorStore's error for an array file cut short or
# missing, ``ValueError`` (TensorStore NOT_FOUND / OUT_OF_RANGE, JSON that does not parse),
# ``KeyError`` (an item directory missing), ``FileNotFoundError``/``OSError``. A bare
# ``Exception`` among them leaves nothing narrower to catch.
_UNREADABLE = (Exception,)


class _Unreadable(Exception):
    """One checkpoint's files cannot be read (the reason in a few words)."""


def _reason(e: BaseException, limit: int = 160) -> str:
    """The innermost cause of an orbax/TensorStore error, on one short line (no spec dumps)."""
    seen = []
    while e is not None and e not in seen:  # down the explicit causes (`raise … from …`)
        seen.append(e)
        e = e.__cause__
    inner = seen[-1]
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    text = re.split(r" \[tensorstore_spec| See full TensorStore details", text)[0]
    text = re.sub(r' in OCDBT database at [^"]*"[^"]*"', "", text)  # the path: named by the caller
    text = f"{type(inner).__name__}: {text}" if text else type(inner).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keeps orbax's own reports of a failed read off the terminal while a checkpoint is tried
    (the failure is reported here in one line): its log records, and the tracebacks of the
    coroutines and TensorStore callbacks a failed restore leaves behind, which Python would
    print through ``sys.unraisablehook`` as "Exception ignored in …" with a spec dump each."""
    loggers = [logging.getLogger(name) for name in ("absl", "orbax", "asyncio")]
    levels = [lg.level for lg in loggers]
    hook = sys.unraisablehook
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        gc.collect()  # the failed read's leftovers are collected (and their reports dropped) now
        sys.unraisablehook = hook
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _orbax_leftover(unraisable: Any) -> bool:
    """A report a failed orbax read leaves behind: a TensorStore read finishing after orbax closed
    its event loop, or a coroutine of orbax's that raised and was never awaited."""
    exc, obj = unraisable.exc_value, unraisable.object
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    return inspect.iscoroutine(obj) and "orbax" in obj.cr_code.co_filename


def _drop_orbax_leftovers() -> None:
    """After a failed read, reads still in flight may report "Event loop is closed" tracebacks at
    any later time; drop those (only those) from then on."""
    previous = sys.unraisablehook
    if getattr(previous, "_jaxmi_orbax_filter", False):
        return

    def hook(unraisable):
        if not _orbax_leftover(unraisable):
            previous(unraisable)

    hook._jaxmi_orbax_filter = True
    sys.unraisablehook = hook


class Restored(NamedTuple):
    regime: str  # the regime of the last completed epoch
    epoch: int  # its epoch (0: the initial measurement)
    state: Any  # that regime's stacked train states after `epoch`
    record: dict[str, Any]  # the JSON record saved with it (history: one entry per seed, timing, ...)


class RunCheckpointer:
    """Saves and restores the per-epoch checkpoints of one NT-vs-AT run.

    Args:
      run_dir: the run directory.
      identity: what makes the run this run (a plain dict); a checkpoint written by another
        is refused.
      regimes: the regimes in the order they are trained.
      epochs: epochs per regime (measurements 0..epochs).
      normalize: maps a stored identity to the current form before the comparison (older
        runs stored fields that have since moved or been added); default: unchanged.
      keep: how many of the newest checkpoints to keep.
      log: where the one-line warning about a skipped corrupt checkpoint goes.
    """

    def __init__(self, run_dir, identity: dict[str, Any], *, regimes: tuple[str, ...], epochs: int,
                 normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None, keep: int = 2,
                 log: Callable[[str], None] = print):
        self.run_dir = as_path(run_dir)
        self.path = self.run_dir / CHECKPOINT_DIR
        self.identity = plain(identity)
        self.normalize = normalize or (lambda d: d)
        self.regimes = tuple(regimes)
        self.epochs = int(epochs)
        self.log = log
        if self.path.exists() and not self.path.is_dir():
            raise CheckpointError(f"{self.path} is not a directory; {_fix(self.run_dir)}.")
        try:
            with _quiet():
                self._manager = ocp.CheckpointManager(
                    _orbax_path(self.path),
                    options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                                         cleanup_tmp_directories=True, create=True))
        except Exception as e:  # noqa: BLE001 - orbax raises many types for unreadable directories
            raise CheckpointError(f"cannot open the checkpoints in {self.path} ({_reason(e)}); "
                                  f"{_fix(self.run_dir)}.") from None

    def step_of(self, regime: str, epoch: int) -> int:
        return self.regimes.index(regime) * (self.epochs + 1) + int(epoch)

    def save(self, regime: str, epoch: int, state: Any, record: dict[str, Any]) -> None:
        """Saves ``state`` after ``epoch`` of ``regime`` with its JSON ``record``; returns when it is on disk."""
        meta = {"format": FORMAT, "regime": regime, "epoch": int(epoch), "config": self.identity, **plain(record)}
        self._manager.save(self.step_of(regime, epoch), force=True,
                           args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   meta=ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()

    def _check_meta(self, meta: Any, where, step: int) -> tuple[str, int]:
        if not isinstance(meta, dict) or meta.get("format") not in _READABLE:
            got = meta.get("format") if isinstance(meta, dict) else None
            raise CheckpointError(f"the checkpoint {where} has format {got}, this code reads formats "
                                  f"{list(_READABLE)}; {_fix(self.run_dir)}.")
        try:
            stored = self.normalize(dict(meta.get("config") or {}))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"the checkpoint {where} was written by a different configuration ({e}); "
                                  f"{_fix(self.run_dir)}.") from None
        if stored != self.identity:
            diff = sorted(k for k in set(stored) | set(self.identity) if stored.get(k) != self.identity.get(k))
            raise CheckpointError(f"the checkpoint {where} was written by a different configuration "
                                  f"(differs in {diff}); {_fix(self.run_dir)}.")
        regime, epoch = meta.get("regime", meta.get("mode")), meta.get("epoch")
        if regime not in self.regimes or not isinstance(epoch, int) or self.step_of(regime, epoch) != step:
            raise CheckpointError(f"the checkpoint {where} is inconsistent (regime {regime!r}, epoch {epoch!r} "
                                  f"at step {step}); {_fix(self.run_dir)}.")
        return regime, epoch

    def restore_latest(self, abstract_state: Any) -> Restored | None:
        """The newest intact checkpoint, or ``None`` when no checkpoint was ever completed.

        A newer checkpoint whose files cannot be read (truncated or deleted after it was
        written) is skipped with a one-line warning to ``log`` and removed, so that the run
        resumes from the newest intact one and writes its next checkpoints in its place.

        Args:
          abstract_state: stacked train states of the right structure, shapes, dtypes and
            shardings (e.g. the initial ones); arrays are restored onto their shardings.

        Raises:
          CheckpointError: no checkpoint is intact, or the newest readable one is from another
            format or configuration (then nothing is removed).
        """
        with _quiet():
            steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            return None
        corrupt: list[tuple[int, str]] = []
        for step in steps:
            try:
                restored = self._restore(step, abstract_state)
            except _Unreadable as e:
                corrupt.append((step, str(e)))
                continue
            for bad, reason in corrupt:
                with _quiet():
                    self._manager.delete(bad)
                self.log(f"warning: skipped and removed the corrupt checkpoint {self.path / str(bad)} ({reason}); "
                         f"resuming from checkpoint {step}, the newest intact one.")
            return restored
        newest, reason = corrupt[0]
        others = [b for b, _ in corrupt[1:]]
        raise CheckpointError(
            f"no checkpoint in {self.path} is intact: the newest, {self.path / str(newest)}, is unreadable "
            f"({reason})" + (f", and so are the older ones ({', '.join(map(str, others))})" if others else "")
            + ".\nThe run cannot resume from them; rerun with --overwrite to start it over, or choose another --out.")

    def _restore(self, step: int, abstract_state: Any) -> Restored:
        """One checkpoint; :class:`_Unreadable` when its files cannot be read."""
        where = self.path / str(step)
        meta = self._read(step, "its record", ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        regime, epoch = self._check_meta(meta, where, step)
        unstacked = meta["format"] == 1 and isinstance(meta.get("history"), dict)  # a format-1 single run
        target = jax.tree.map(lambda a: a[0], abstract_state) if unstacked else abstract_state
        state = self._read(step, "its train state",
                           ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(target)))).state
        if unstacked:
            state = jax.tree.map(lambda a, ref: jax.device_put(a[None], ref.sharding), state, abstract_state)
            meta = {**meta, "history": [meta["history"]]}
        return Restored(regime, epoch, state, meta)

    def _read(self, step: int, what: str, args: Any) -> Any:
        reason = None
        with _quiet():  # the error is handled inside, so that its leftovers are collected quietly
            try:
                return self._manager.restore(step, args=args)
            except _UNREADABLE as e:
                reason = f"{what}: {_reason(e)}"
        _drop_orbax_leftovers()
        raise _Unreadable(reason)

    def close(self) -> None:
        self._manager.close()


def save_model(run_dir, name: str, params: Any, batch_stats: Any, info: dict[str, Any]):
    """Saves one trained model's parameters and batch statistics to ``run_dir/models/<name>``.

    ``name`` is the regime (``"nt"``, ``"at"``), with ``_seed<k>`` for further seeds. ``info``
    (JSON) is merged into ``models/models.json``, whose ``"models"`` lists the models saved;
    it is rewritten atomically after the arrays are on disk.
    """
    models = as_path(run_dir) / MODELS_DIR
    models.mkdir(parents=True, exist_ok=True)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(_orbax_path(models / name), {"params": params, "batch_stats": batch_stats}, force=True)
    ckptr.wait_until_finished()
    ckptr.close()
    index = models / _MODELS_JSON
    meta = read_json(index) if index.exists() else {"format": FORMAT}
    meta.update(plain(info))
    meta["models"] = sorted(set(_saved(meta)) | {name})
    meta.pop("modes", None)
    atomic_write_text(index, json.dumps(meta, indent=2) + "\n")
    return models / name


def _saved(meta: dict[str, Any]) -> list[str]:
    return list(meta.get("models", meta.get("modes", [])))  # "modes": format 1


def load_models(run_dir, names: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """Reads ``models/models.json`` and the ``(params, batch_stats)`` of each of ``names``.

    Raises:
      CheckpointError: a model is missing or unreadable.
    """
    run_dir = as_path(run_dir)
    index = run_dir / MODELS_DIR / _MODELS_JSON
    if not index.exists():
        raise CheckpointError(f"{run_dir} holds no trained models ({index} is missing): the run has not "
                              "finished. Rerun the experiment's command with this --out to finish it.")
    try:
        meta = read_json(index)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{index} is unreadable ({e}); rerun the experiment with --overwrite.") from None
    missing = [m for m in names if m not in _saved(meta)]
    if missing:
        raise CheckpointError(f"{run_dir} holds no trained {'/'.join(m.upper() for m in missing)} model: the run "
                              "has not finished. Rerun the experiment's command with this --out to finish it.")
    out = {}
    ckptr = ocp.StandardCheckpointer()
    for m in names:
        reason = None
        with _quiet():  # the error is handled inside, so that its leftovers are collected quietly
            try:
                tree = ckptr.restore(_orbax_path(run_dir / MODELS_DIR / m))
            except _UNREADABLE as e:
                reason = _reason(e)
        if reason is not None:
            ckptr.close()
            _drop_orbax_leftovers()
            raise CheckpointError(f"the {m.upper()} model in {run_dir / MODELS_DIR / m} is unreadable ({reason}); "
                                  "rerun the experiment with --overwrite.")
        out[m] = (tree["params"], tree.get("batch_stats", {}))
    ckptr.close()
    return meta, out
