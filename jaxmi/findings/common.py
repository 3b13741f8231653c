"""What the findings share: run summaries, trained models, verdict tables, seeds.

* :func:`run_summary` — the part of ``summary.json`` a finding-1/2 run writes from a
  :class:`~jaxmi.history.RunResult`; :func:`load_run_summary` reads one back (``--from-run``).
* :func:`trained_models` — NT and AT models for findings 3 and 4: loaded from a run directory,
  or trained by :func:`jaxmi.run.train_pair`.
* :func:`verdict_lines`, :func:`record_rows` — the plain-text verdict table every finding prints.
* :func:`seed_histories`, :func:`learn_reason` — every seed's histories of a run, and whether
  it is evidence at all.
* :func:`run_per_seed`, :func:`seed_table` — verdicts over K seeds.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxmi.config import Config, normalize_identity
from jaxmi.data import load_dataset, to_float
from jaxmi.estimators import estimate
from jaxmi.evaluation import make_adversary, make_forward
from jaxmi.history import REGIMES, RunResult, robust_summary
from jaxmi.plots.verdicts import plot_verdicts
from jaxmi.models import probe_widths
from jaxmi.results import as_path, prepare_run_dir, read_json, write_json
from jaxmi.plan import execution, mi_indices, pgd_config, probe_groups
from jaxmi.run import Trained, load_trained, log_line, train_pair
from jaxmi.verdicts import combine_seeds, did_not_learn, format_record

__all__ = ["Finding", "parse_options", "run_summary", "load_run_summary", "trained_models", "verdict_lines",
           "record_rows", "seed_histories", "learn_reason", "seed_table", "run_per_seed", "config_record", "Draw", "measurement_draw", "Passes", "model_passes"]


@dataclasses.dataclass(frozen=True)
class Finding:
    """What the command line (:mod:`jaxmi.cli`) needs of a finding module (its ``FINDING``).

    Attributes:
      name: the output name (``runs/<name>_<dataset>_<model>`` by default).
      title: the claim, as written into ``summary.json``.
      run: ``run(config, workdir, *, options, overwrite, show_progress, log) -> summary``.
      presets: per preset name, flat config overrides and option values on top of
        :data:`jaxmi.config.PRESETS`.
      options: the finding's options dataclass (fields made with :func:`jaxmi.config.setting`), or None.
      default_dataset: the dataset when ``--dataset`` is not given.
      seeds_native: ``--seeds K`` trains the K seeds as one stack (findings 1 and 2); otherwise
        the finding runs once per seed (:func:`run_per_seed`).
    """

    name: str
    title: str
    run: Callable[..., dict[str, Any]]
    presets: Mapping[str, Mapping[str, Any]]
    options: type | None = None
    default_dataset: str = "mnist"
    seeds_native: bool = False


def parse_options(cls: type, d: Mapping[str, Any] | None) -> Any:
    """A finding's options dataclass from a dict (unknown keys ignored; lists become tuples)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in (d or {}).items() if k in names})


def config_record(config: Config) -> dict[str, Any]:
    """``summary["config"]``: every field by its flat name, plus the resolved evaluation attack."""
    return {**config.flat(), "attack": vars(pgd_config(config))}


def run_summary(config: Config, result: RunResult) -> dict[str, Any]:
    """``config``, ``layers``, ``epochs_measured``, ``data``, ``nt``, ``at`` (and ``seeds``) of a run."""
    return {"config": config_record(config), **result.summary_fields()}


def load_run_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``summary.json`` of a finding-1/2 run (NT and AT histories with per-epoch MI).

    Raises:
      ValueError: no such directory or file, unreadable JSON, or a summary without the
        per-epoch MI of both regimes.
    """
    path = as_path(run_dir) / "summary.json"
    if not path.is_file():
        raise ValueError(f"--from-run {run_dir}: no summary.json there; give the --out directory of a finished "
                         "finding-2 (or finding-1) run.")
    try:
        summary = read_json(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"--from-run {run_dir}: cannot read summary.json ({e}).") from None
    missing = [k for k in ("layers", "epochs_measured", "nt", "at", "config") if k not in summary]
    if missing or not all(isinstance(summary.get(m), dict) and summary[m].get("mi") for m in ("nt", "at")):
        raise ValueError(f"--from-run {run_dir}: summary.json lacks {missing or 'per-epoch MI'}; it is not the "
                         "summary of an NT-vs-AT run with MI measurements.")
    return summary


def trained_models(config: Config, from_run: str | None, *, log: Callable[[str], None] = log_line,
                   show_progress: bool = True, workdir: str | os.PathLike | None = None, from_seed: int = 0
                   ) -> tuple[Config, Any, Trained, dict[str, Any]]:
    """Trained NT and AT models: loaded from ``from_run`` when given, else trained here.

    Returns:
      ``(config, module, {"nt": (params, batch_stats), "at": ...}, info)``. Models trained here
      are saved into ``workdir`` when given (:func:`jaxmi.run.train_pair`). With ``from_run``
      the returned config is the loaded run's (its dataset, model, attack and seed; seed index
      ``from_seed`` of a run with several seeds), with this
      run's ``samples``, ``estimators`` and ``data_dir``; ``info`` says where the models came from.
    """
    if from_run is None:
        module, trained, history = train_pair(config, log=log, show_progress=show_progress, workdir=workdir)
        return config, module, trained, {"source": "trained", "history": history,
                                         "final_train_acc": {r: history[r]["train_acc"][-1] for r in REGIMES}}
    run_config, module, trained = load_trained(from_run, seed_index=from_seed)
    final, robust = _source_records(from_run, from_seed)
    run_config = Config.from_dict({**run_config.flat(), "samples": config.mi.samples, "eval_samples": None,
                                   "estimators": config.mi.estimators,
                                   "data_dir": config.data.data_dir or run_config.data.data_dir})
    log(f"loaded trained NT and AT {run_config.model.model} ({run_config.data.dataset}, {run_config.optim.epochs} "
        f"epochs) from {from_run}")
    return run_config, module, trained, {"source": str(from_run), **({"final_train_acc": final} if final else {}),
                                         **({"robust": robust} if robust else {})}


def _source_records(run_dir, seed_index: int = 0) -> tuple[dict[str, float] | None, dict[str, Any] | None]:
    """From a run directory's summary.json: each regime's final training accuracy (a
    finding-1/2 run's histories, seed ``seed_index``'s with several seeds, or the training
    record of findings 3 and 4) and the final robust evaluation of that seed's models; None
    where absent."""
    try:
        summary = read_json(as_path(run_dir) / "summary.json")
    except (OSError, ValueError):
        return None, None
    robust = {}
    for r, rep in robust_reports(summary).items():
        per = rep.get("per_seed")
        robust[r] = per[seed_index] if per and seed_index < len(per) else (rep if seed_index == 0 else None)
    robust = {r: v for r, v in robust.items() if v} or None
    if summary.get("seeds") and isinstance(summary["seeds"][0], Mapping) and "nt" in summary["seeds"][0]:
        if seed_index >= len(summary["seeds"]):
            return None, robust
        summary = summary["seeds"][seed_index]
    out = {}
    for r in REGIMES:
        h = summary.get(r) if isinstance(summary.get(r), Mapping) else (summary.get("training") or {}).get(r)
        if isinstance(h, Mapping) and h.get("train_acc"):
            out[r] = float(h["train_acc"][-1])
    return (out if len(out) == len(REGIMES) else None), robust


class Draw(NamedTuple):
    """The test images a finding measures trained models on (the run's MI draw)."""

    x: np.ndarray  # float32 [N, H, W, C] in [0, 1]
    y: np.ndarray  # int32 [N]
    num_classes: int
    source: str


def measurement_draw(config: Config) -> Draw:
    """The ``samples`` test images of :func:`jaxmi.plan.mi_indices`, as floats."""
    test = load_dataset(config.data.dataset, "test", data_dir=config.data.data_dir)
    idx = mi_indices(config, len(test))
    x = np.asarray(to_float(jnp.asarray(test.images[idx])))
    return Draw(x, test.labels[idx].astype(np.int32), test.num_classes, test.source)


class Passes(NamedTuple):
    """The batched passes findings 3 and 4 run on one trained model (unstacked variables)."""

    adversary: Callable  # (params, batch_stats, x, y) -> PGD examples [N, H, W, C]
    forward: Callable  # (params, batch_stats, x, y) -> {"loss", "correct", "probs"} [N, ...]
    probes: dict[tuple[str, ...], Callable]  # per probe group: (...) -> {"probes": {name: [N, D]}}
    kde_precision: str = "highest"  # the KDE estimators' matrix-product precision (resolved)

    def information(self, params, batch_stats, x, y, y_host, **estimate_options) -> dict[str, Any]:
        """``{probe: {method: {...}}}`` of :func:`jaxmi.estimators.estimate` (KDE at the run's
        precision), holding one probe group's activations at a time."""
        if any(m.startswith("kde") for m in estimate_options.get("methods", ("kde_upper",))):
            estimate_options = {"precision": self.kde_precision, **estimate_options}
        out: dict[str, Any] = {}
        for fn in self.probes.values():
            probes = fn(params, batch_stats, x, y)["probes"]
            out.update(estimate(probes, y_host, **estimate_options))
            del probes
        return out


def model_passes(module: Any, config: Config, n: int, input_shape: tuple[int, ...]) -> Passes:
    """The :class:`Passes` of ``module`` for ``n`` images under ``config``'s evaluation attack,
    batch and loop; probes come a group at a time (:func:`jaxmi.evaluation.probe_groups`)."""
    exe = execution(config)
    batching = dict(batch_size=min(exe.eval_batch_size, n), loop=exe.loop, stacked=False)
    groups = probe_groups(probe_widths(module, input_shape))
    return Passes(make_adversary(module, pgd_config(config), attack_unroll=exe.attack_unroll, **batching),
                  make_forward(module, with_probes=False, **batching),
                  {g: make_forward(module, with_probes=g, with_probs=False, **batching) for g in groups},
                  exe.kde_precision)


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


def seed_histories(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every seed's ``{"nt": history, "at": history}`` of a finding-1/2 summary (the summary's
    own ``nt``/``at`` for a single seed)."""
    if summary.get("seeds"):
        return [{r: s[r] for r in REGIMES} for s in summary["seeds"]]
    return [{r: summary[r] for r in REGIMES}]


def learn_reason(summary: Mapping[str, Any]) -> str | None:
    """Why a finding-1/2 run is no evidence (a network in some seed ended near chance training
    accuracy, :func:`jaxmi.verdicts.did_not_learn`), or None."""
    k = summary.get("num_classes") or 10
    for i, h in enumerate(seed_histories(summary)):
        reason = did_not_learn({r: h[r]["train_acc"][-1] for r in REGIMES}, k)
        if reason:
            return (f"seed {i}: " if summary.get("seeds") else "") + reason
    return None


def robust_reports(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{regime: report}`` of the final robust evaluation in a summary (a run's ``robust``, or
    the ``training`` record of findings 3 and 4); ``{}`` when there is none."""
    if summary.get("robust"):
        return dict(summary["robust"])
    training = summary.get("training") or {}
    return {r: training[r]["robust"] for r in REGIMES if isinstance(training.get(r), Mapping)
            and training[r].get("robust")}


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


def run_per_seed(run: Callable[..., dict[str, Any]], config: Config, workdir: str | os.PathLike, *,
                 options: Mapping[str, Any] | None = None, overwrite: bool = False, show_progress: bool = True,
                 log: Callable[[str], None] = log_line) -> dict[str, Any]:
    """``--seeds K`` for findings that evaluate one trained NT/AT pair (findings 3 and 4).

    Runs the finding once per seed (``seed``, ``seed+1``, …; each trains its own models, or with
    ``--from-run`` loads seed k of a finding-1/2 run trained with ``--seeds`` ≥ K) into
    ``workdir/seed<s>``, then writes ``workdir/summary.json`` whose verdict records combine the
    seeds' effects and bootstrap resamples (:func:`jaxmi.verdicts.combine_seeds`), with every
    seed's own records under ``seeds``. Rerun on the same ``workdir``, seeds whose
    ``summary.json`` exists are reused, not recomputed (an interrupted run continues with the
    seed it was in; ``overwrite`` recomputes every seed).
    """
    options = dict(options or {})
    if options.get("from_run") and options.get("from_seed"):
        raise ValueError("--seeds with --from-seed: --seeds K loads seeds 0 … K−1 of the --from-run directory; "
                         "drop --from-seed.")
    workdir = prepare_run_dir(workdir, {**config.identity(), **options}, overwrite=overwrite,
                              normalize=normalize_identity)
    subs = []
    for k in range(config.seeds):
        seed = config.seed + k
        log(f"=== seed {seed} ({k + 1} of {config.seeds}) ===")
        opts = {**options, "from_seed": k} if options.get("from_run") else options
        done = workdir / f"seed{seed}" / "summary.json"
        if done.exists() and not overwrite:  # written last (temporary file, then rename): the seed finished
            log(f"seed {seed} finished in an earlier run: reusing {done} (--overwrite recomputes it)")
            subs.append(read_json(done))
            continue
        subs.append(run(config.replace(seed=seed, seeds=1), workdir / f"seed{seed}", options=opts,
                        overwrite=overwrite, show_progress=show_progress, log=log))
    verdicts = combine_seeds([sm["verdicts"] for sm in subs])
    summary = {
        "finding": subs[0].get("finding"),
        # with --from-run the seeds' configs are the loaded run's (dataset, model, attack)
        "config": ({**subs[0]["config"], "seed": config.seed, "seeds": config.seeds}
                   if options.get("from_run") and subs[0].get("config") else config_record(config)),
        "options": dict(options),
        "seeds": [{"seed": config.seed + k, "dir": f"seed{config.seed + k}",
                   "verdicts": {n: {f: r.get(f) for f in ("holds", "effect", "ci95", "reason")}
                                for n, r in sm["verdicts"].items()}}
                  for k, sm in enumerate(subs)],
        "verdicts": verdicts,
        "evidence": {"rule": "each verdict's seed effects and bootstrap resamples combined (jaxmi.verdicts)"},
        "figures": [f"seed{config.seed + k}/{f}" for k, sm in enumerate(subs) for f in sm.get("figures", [])],
    }
    robust = [robust_reports(sm) for sm in subs]
    if all(robust):
        summary["robust"] = {r: robust_summary([rb[r] for rb in robust]) for r in robust[0]}
    summary["figures"] += [p.name for p in plot_verdicts(summary, workdir)]
    write_json(workdir / "summary.json", summary)
    log(verdict_lines(record_rows(verdicts), summary))
    log(seed_table(summary))
    return summary
