"""The one sequence every finding runs, and ``--seeds K`` for the findings that measure one pair.

A finding declares its pieces in a :class:`Finding` (its module's ``FINDING``); :func:`run`
then does, for every finding alike:

1. read the options (:func:`parse_options`), run the finding's early ``check``, prepare the
   run directory (:func:`jaxmi.results.prepare_run_dir`: a different run there is refused);
2. ``measure``: train or load the networks and measure them (a :class:`Measured`);
3. assemble the summary in the one layout (:mod:`jaxmi.findings.summary`), ``decide`` its
   verdicts and evidence, and log the evidence's warning;
4. draw the finding's ``figures`` and ``verdicts.png``;
5. write ``summary.json`` and ``timing.json`` (``runtime_seconds``, and ``run``: the
   training run's own wall-clock record or null), atomically, and log the ``table``.

:func:`run_per_seed` runs a finding once per seed into ``seed<s>/`` and combines the seeds'
verdict records; the command line (:mod:`jaxmi.cli`) uses it for ``--seeds K`` on a finding
without ``seeds_native``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jaxmi.config import Config, normalize_identity
from jaxmi.findings.summary import (SUMMARY_KEYS, config_record, read_summary, record_rows, robust_reports,
                                    seed_table, verdict_lines)
from jaxmi.history import robust_summary
from jaxmi.plots.verdicts import plot_verdicts
from jaxmi.results import as_path, discard_run_dir, prepare_run_dir, write_json
from jaxmi.run import log_line
from jaxmi.verdicts import combine_seeds

__all__ = ["Finding", "Measured", "parse_options", "run", "run_per_seed"]


@dataclasses.dataclass
class Measured:
    """What a finding's ``measure`` returns: the parts of the summary it computed.

    Attributes:
      config: ``summary["config"]`` (:func:`jaxmi.findings.summary.config_record` of the
        configuration the networks were trained with).
      results: ``summary["results"]``, the finding's own measurements.
      source: ``summary["source"]``: ``{"trained": True}``, ``{"from_run": DIR}`` or None.
      run: ``summary["run"]``, the NT-vs-AT run record, or None.
      timing: the training run's wall-clock record (``timing.json``'s ``run``), or None.
      artifacts: what the figures need beyond the summary (arrays, names); not written.
    """

    config: dict[str, Any]
    results: dict[str, Any]
    source: dict[str, Any] | None = None
    run: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None
    artifacts: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _no_figures(summary: Mapping[str, Any], workdir: Path, artifacts: Mapping[str, Any]) -> list[Path]:
    return []


@dataclasses.dataclass(frozen=True)
class Finding:
    """A finding's pieces, which :func:`run` puts together (and what :mod:`jaxmi.cli` needs).

    Attributes:
      name: the output name (``runs/<name>_<dataset>_<model>`` by default).
      title: the claim, as written into ``summary.json``.
      measure: ``measure(config, options, workdir, *, log, show_progress) -> Measured``.
      decide: ``decide(summary, options) -> (verdicts, evidence)``, from the assembled summary.
      table: ``table(summary) -> str``, the plain-text verdict table.
      figures: ``figures(summary, workdir, artifacts) -> [paths]`` (``verdicts.png`` is added).
      presets: per preset name, flat config overrides and option values on top of
        :data:`jaxmi.config.PRESETS`.
      options: the finding's options dataclass (fields made with :func:`jaxmi.config.setting`), or None.
      identity: ``identity(config, options) -> dict``, what makes a run directory this run;
        default: the configuration's identity and every option.
      check: ``check(config, options)``, problems to report before the run directory is touched.
      default_dataset: the dataset when ``--dataset`` is not given.
      seeds_native: ``--seeds K`` trains the K seeds as one stack (findings 1 and 2); otherwise
        the finding runs once per seed (:func:`run_per_seed`).
      from_run_fields: the configuration fields a run with ``--from-run`` still takes from the
        command line (besides the execution section); the command line refuses the others,
        which the loaded run fixes.
    """

    name: str
    title: str
    measure: Callable[..., Measured]
    decide: Callable[[dict[str, Any], Any], tuple[dict[str, Any], dict[str, Any]]]
    table: Callable[[dict[str, Any]], str]
    figures: Callable[[dict[str, Any], Path, Mapping[str, Any]], list[Path]] = _no_figures
    presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    options: type | None = None
    identity: Callable[[Config, Any], dict[str, Any]] | None = None
    check: Callable[[Config, Any], None] | None = None
    default_dataset: str = "mnist"
    seeds_native: bool = False
    from_run_fields: tuple[str, ...] = ()

    def run(self, config: Config, workdir: str | os.PathLike, *, options: Mapping[str, Any] | None = None,
            overwrite: bool = False, show_progress: bool = True, log: Callable[[str], None] = log_line
            ) -> dict[str, Any]:
        """:func:`run` of this finding."""
        return run(self, config, workdir, options=options, overwrite=overwrite, show_progress=show_progress, log=log)


def parse_options(cls: type | None, d: Mapping[str, Any] | None) -> Any:
    """A finding's options dataclass from a dict (unknown keys ignored; lists become tuples);
    None for a finding without options."""
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in (d or {}).items() if k in names})


def _options_record(opts: Any) -> dict[str, Any]:
    return dataclasses.asdict(opts) if opts is not None else {}


def _write(summary: dict[str, Any], workdir, t0: float, timing: dict[str, Any] | None, table: str,
           log: Callable[[str], None]) -> dict[str, Any]:
    """Writes ``summary.json`` and ``timing.json`` (atomically) and logs the verdict table."""
    write_json(workdir / "summary.json", summary)
    write_json(workdir / "timing.json", {"runtime_seconds": time.perf_counter() - t0, "run": timing})
    log(table)
    return summary


def run(finding: Finding, config: Config, workdir: str | os.PathLike, *, options: Mapping[str, Any] | None = None,
        overwrite: bool = False, show_progress: bool = True, log: Callable[[str], None] = log_line) -> dict[str, Any]:
    """Runs ``finding`` end to end into ``workdir`` (see the module docstring) and returns the summary.

    Rerun on the same ``workdir`` with the same configuration and options, a run resumes from
    its checkpoints; ``summary.json`` is then identical to an uninterrupted run's.
    """
    opts = parse_options(finding.options, options)
    t0 = time.perf_counter()
    if finding.check is not None:
        finding.check(config, opts)
    identity = (finding.identity(config, opts) if finding.identity is not None
                else {**config.identity(), **_options_record(opts)})
    created = not as_path(workdir).exists()
    workdir = prepare_run_dir(workdir, identity, overwrite=overwrite, normalize=normalize_identity)
    try:
        m = finding.measure(config, opts, workdir, log=log, show_progress=show_progress)
    except BaseException:  # refused before writing anything (bad data, model, ...): leave no run behind
        discard_run_dir(workdir, created=created)
        raise
    summary: dict[str, Any] = dict(zip(SUMMARY_KEYS, (finding.title, m.config, _options_record(opts), m.source,
                                                      m.run, m.results)))
    summary["verdicts"], summary["evidence"] = finding.decide(summary, opts)
    if summary["evidence"].get("warning"):
        log(f"warning: {summary['evidence']['warning']}")
    figures = finding.figures(summary, workdir, m.artifacts) + plot_verdicts(summary, workdir)
    summary["figures"] = [p.name for p in figures]
    return _write(summary, workdir, t0, m.timing, finding.table(summary), log)


def run_per_seed(finding: Finding, config: Config, workdir: str | os.PathLike, *,
                 options: Mapping[str, Any] | None = None, overwrite: bool = False, show_progress: bool = True,
                 log: Callable[[str], None] = log_line) -> dict[str, Any]:
    """``--seeds K`` for findings that evaluate one trained NT/AT pair (findings 3 and 4).

    Runs the finding once per seed (``seed``, ``seed+1``, …; each trains its own models, or with
    ``--from-run`` loads seed k of a finding-1/2 run trained with ``--seeds`` ≥ K) into
    ``workdir/seed<s>``, then writes ``workdir/summary.json`` in the same layout, whose verdict
    records combine the seeds' effects and bootstrap resamples
    (:func:`jaxmi.verdicts.combine_seeds`), with every seed's own records in
    ``results["seeds"]`` and the seeds' robust evaluations combined in ``run["robust"]``.
    Rerun on the same ``workdir``, seeds whose ``summary.json`` exists are reused, not
    recomputed (an interrupted run continues with the seed it was in; ``overwrite``
    recomputes every seed).
    """
    options = dict(options or {})
    if options.get("from_run") and options.get("from_seed"):
        raise ValueError("--seeds with --from-seed: --seeds K loads seeds 0 … K−1 of the --from-run directory; "
                         "drop --from-seed.")
    t0 = time.perf_counter()
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
            subs.append(read_summary(done.parent, flag="--out seed directory"))
            continue
        subs.append(run(finding, config.replace(seed=seed, seeds=1), workdir / f"seed{seed}", options=opts,
                        overwrite=overwrite, show_progress=show_progress, log=log))
    verdicts = combine_seeds([sm["verdicts"] for sm in subs])
    robust = [robust_reports(sm) for sm in subs]
    summary: dict[str, Any] = dict(zip(SUMMARY_KEYS, (
        finding.title,
        # with --from-run the seeds' configs are the loaded run's (dataset, model, attack)
        ({**subs[0]["config"], "seed": config.seed, "seeds": config.seeds}
         if options.get("from_run") and subs[0].get("config") else config_record(config)),
        _options_record(parse_options(finding.options, options)),
        subs[0]["source"],
        {"robust": {r: robust_summary([rb[r] for rb in robust]) for r in robust[0]}} if all(robust) else None,
        {"seeds": [{"seed": config.seed + k, "dir": f"seed{config.seed + k}",
                    "verdicts": {n: {f: r.get(f) for f in ("holds", "effect", "ci95", "reason")}
                                 for n, r in sm["verdicts"].items()}}
                   for k, sm in enumerate(subs)]})))
    summary["verdicts"] = verdicts
    summary["evidence"] = {"rule": "each verdict's seed effects and bootstrap resamples combined (jaxmi.verdicts)"}
    summary["figures"] = [f"seed{config.seed + k}/{f}" for k, sm in enumerate(subs) for f in sm.get("figures", [])]
    summary["figures"] += [p.name for p in plot_verdicts(summary, workdir)]
    table = verdict_lines(record_rows(verdicts), summary) + "\n" + seed_table(summary)
    return _write(summary, workdir, t0, None, table, log)
