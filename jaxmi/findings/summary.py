"""The one layout of ``summary.json``, its one reader, and the verdict table every finding prints.

Every finding writes the same top-level keys (:func:`jaxmi.findings.runner.run`)::

    {"finding": "2: adversarial training is harder ...",
     "config": {...every field by its flat name..., "attack": {...}},  # the networks' configuration
     "options": {...},          # the finding's options ({} for finding 2)
     "source": {"trained": true} | {"from_run": DIR} | null,  # where the NT/AT networks come from
     "run": {...} | null,       # the NT-vs-AT run, in the layout of jaxmi.history
     "results": {...},          # the finding's own measurements ({} for findings 1 and 2)
     "verdicts": {...}, "evidence": {...}, "figures": [...]}

``run`` is :meth:`jaxmi.result.RunResult.summary_fields` for findings 1 and 2 (``layers``,
``epochs_measured``, ``data``, ``num_classes``, ``nt``/``at`` histories with per-epoch MI,
``seeds``, ``saturation``, ``sweep``, ``robust``). Findings 3 and 4 keep the training record
of the models they measure in the same place: ``nt``/``at`` with ``train_acc`` and
``train_loss`` per epoch (seed k's, copied from the ``--from-run`` directory) and
``robust``. ``source`` is null and ``run`` null or without histories only where there are no
such models (finding 4 ``--no-trained``; the seed combination of findings 3 and 4 keeps the
combined ``robust`` alone).

* :func:`read_summary` — the reader of a ``summary.json`` (``--from-run``, reused seeds);
* :func:`seed_runs`, :func:`seed_record`, :func:`final_train_acc`, :func:`robust_reports`,
  :func:`learn_reason` — what the findings take from a summary's ``run``;
* :func:`verdict_lines`, :func:`record_rows`, :func:`robust_table`, :func:`seed_table` — the
  plain-text verdict table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from jaxmi.config import Config
from jaxmi.history import REGIMES, TRAIN_METRICS
from jaxmi.plan import pgd_config
from jaxmi.results import as_path, read_json
from jaxmi.verdicts import did_not_learn, format_record

__all__ = ["SUMMARY_KEYS", "config_record", "read_summary", "seed_runs", "seed_record", "final_train_acc",
           "robust_reports", "learn_reason", "verdict_lines", "record_rows", "robust_table", "seed_table"]

#: The top-level keys of every finding's ``summary.json``, in order.
SUMMARY_KEYS: tuple[str, ...] = ("finding", "config", "options", "source", "run", "results", "verdicts", "evidence",
                                 "figures")


def config_record(config: Config) -> dict[str, Any]:
    """``summary["config"]``: every field by its flat name, plus the resolved evaluation attack."""
    return {**config.flat(), "attack": vars(pgd_config(config))}


def read_summary(run_dir: str | os.PathLike, *, require_mi: bool = False, flag: str = "--from-run") -> dict[str, Any]:
    """The ``summary.json`` in ``run_dir``, written by any finding.

    Args:
      require_mi: the run must hold NT and AT histories with per-epoch MI (a finding-1/2 run).
      flag: how the error messages name ``run_dir``.

    Raises:
      ValueError: no such directory or file, unreadable JSON, a file without this layout (an
        older version's), or, with ``require_mi``, a run without per-epoch MI.
    """
    path = as_path(run_dir) / "summary.json"
    if not path.is_file():
        raise ValueError(f"{flag} {run_dir}: no summary.json there; give the --out directory of a finished "
                         "finding-2 (or finding-1) run.")
    try:
        summary = read_json(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{flag} {run_dir}: cannot read summary.json ({e}).") from None
    missing = [k for k in SUMMARY_KEYS[:6] if not isinstance(summary, Mapping) or k not in summary]
    if missing:
        raise ValueError(f"{flag} {run_dir}: summary.json lacks {missing}: an older version wrote it; rerun the "
                         "command that wrote it (with --overwrite where it would reuse the old file).")
    run = summary["run"] or {}
    if require_mi and ([k for k in ("layers", "epochs_measured") if k not in run]
                       or not all(isinstance(run.get(r), Mapping) and run[r].get("mi") for r in REGIMES)):
        raise ValueError(f"{flag} {run_dir}: summary.json holds no per-epoch MI of NT and AT; it is not the "
                         "summary of an NT-vs-AT run with MI measurements.")
    return summary


def seed_runs(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every seed's ``{"nt": history, "at": history}`` of a summary's run (the run's own
    ``nt``/``at`` for a single seed; none without histories)."""
    run = summary.get("run") or {}
    if run.get("seeds"):
        return [{r: s[r] for r in REGIMES} for s in run["seeds"]]
    return [{r: run[r] for r in REGIMES}] if all(isinstance(run.get(r), Mapping) for r in REGIMES) else []


def seed_record(summary: Mapping[str, Any], seed_index: int = 0) -> dict[str, Any] | None:
    """Seed ``seed_index``'s training record in a summary: ``{"nt": {train_acc, train_loss},
    "at": ..., "robust": {regime: report}}`` with the parts it has, or None when it has none."""
    out: dict[str, Any] = {}
    runs = seed_runs(summary)
    if seed_index < len(runs) and all(runs[seed_index][r].get("train_acc") for r in REGIMES):
        out = {r: {k: list(runs[seed_index][r][k]) for k in TRAIN_METRICS if k in runs[seed_index][r]}
               for r in REGIMES}
    robust = {}
    for r, rep in robust_reports(summary).items():
        per = rep.get("per_seed")
        robust[r] = per[seed_index] if per and seed_index < len(per) else (rep if seed_index == 0 else None)
    robust = {r: v for r, v in robust.items() if v}
    if robust:
        out["robust"] = robust
    return out or None


def final_train_acc(summary: Mapping[str, Any]) -> dict[str, float] | None:
    """Each regime's final training accuracy in a summary's run (the first seed's), or None."""
    runs = seed_runs(summary)
    if not runs or not all(runs[0][r].get("train_acc") for r in REGIMES):
        return None
    return {r: float(runs[0][r]["train_acc"][-1]) for r in REGIMES}


def robust_reports(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{regime: report}`` of the final robust evaluation in a summary's run; ``{}`` when none."""
    return dict((summary.get("run") or {}).get("robust") or {})


def learn_reason(summary: Mapping[str, Any]) -> str | None:
    """Why a finding-1/2 run is no evidence (a network in some seed ended near chance training
    accuracy, :func:`jaxmi.verdicts.did_not_learn`), or None."""
    run = summary.get("run") or {}
    k = run.get("num_classes") or 10
    for i, h in enumerate(seed_runs(summary)):
        reason = did_not_learn({r: h[r]["train_acc"][-1] for r in REGIMES}, k)
        if reason:
            return (f"seed {i}: " if run.get("seeds") else "") + reason
    return None


def verdict_lines(rows: Sequence[tuple[str, bool | None, str]], summary: Mapping[str, Any] | None = None) -> str:
    """The plain-text verdict table: one ``(name, holds, evidence text)`` row per verdict
    (holds: yes, NO, or n/a for untestable), then the final accuracy table when ``summary``
    has a robust evaluation."""
    w = max(len(r[0]) for r in rows)
    lines = [f"{'verdict':<{w}}  holds  effect [95% interval]", "-" * (w + 70)]
    lines += [f"{name:<{w}}  {('yes' if ok else 'NO ') if ok is not None else 'n/a':<5}  {text}"
              for name, ok, text in rows]
    extra = [t for t in ((robust_table(summary),) if summary is not None else ()) if t]
    return "\n".join(lines + extra)


def record_rows(verdicts: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """``(name, holds, "effect [lo, hi] unit ...")`` rows of verdict records."""
    return [(name, r["holds"], format_record(r)) for name, r in verdicts.items()]


def robust_table(summary: Mapping[str, Any]) -> str:
    """Plain-text lines: the final models' clean, paper-PGD and AutoAttack-style robust accuracy."""
    reports = robust_reports(summary)
    if not reports:
        return ""
    first = next(iter(reports.values()))
    sd = lambda r, k: f" ± {r[k + '_sd']:.4f}" if f"{k}_sd" in r else ""  # noqa: E731
    lines = [f"final accuracy on {first['samples']} test images at eps {first['eps']:.4g}: clean, "
             f"PGD-{first['pgd_paper_steps']} "
             "(the paper's attack), AutoAttack-style ensemble (FGSM, PGD-20, APGD-CE, APGD-T; worst case per image)"]
    for regime, r in reports.items():
        lines.append(f"  {regime.upper()}: {r['clean_acc']:.4f}{sd(r, 'clean_acc')}, "
                     f"{r['pgd_paper_acc']:.4f}{sd(r, 'pgd_paper_acc')}, {r['robust_acc']:.4f}{sd(r, 'robust_acc')}"
                     + ("  [gradient masking suspected: " + ", ".join(f for f, on in r["flags"].items() if on) + "]"
                        if any(r["flags"].values()) else ""))
    return "\n".join(lines)


def seed_table(summary: Mapping[str, Any]) -> str:
    """Plain-text lines: per verdict, its effect in every seed (runs with several seeds)."""
    rows = [(n, r) for n, r in (summary.get("verdicts") or {}).items() if len(r.get("per_seed") or []) > 1]
    if not rows:
        return ""
    lines = ["per seed (effect):"]
    lines += [f"  {n}: " + ", ".join(f"{v:+.4g}" for v in r["per_seed"]) for n, r in rows]
    return "\n".join(lines)
