"""The command line of the finding scripts, in one place.

Every field of :class:`jaxmi.config.Config` is a flag (``--batch-size``, ``--noise-var``, …;
its help text is the field's), and so is every field of a finding's ``Options``. Values
come, in increasing priority, from the preset (``--preset``: the shared
:data:`jaxmi.config.PRESETS` extended by the finding's ``PRESETS``), then from the flags
given. A finding declares itself with a :class:`jaxmi.findings.runner.Finding` (its module's
``FINDING``), which :func:`jaxmi.findings.runner.run` runs; see ``experiments/``.

Errors a user can fix (bad values, missing data, an occupied run directory, a diverged
run) print as ``error: …`` with exit status 2; ``JAXMI_DEBUG=1`` shows the traceback.

``--time-limit MINUTES`` (counted from the start of the process) stops a training run cleanly
at the first epoch boundary where the next epoch would not finish in time
(:mod:`jaxmi.timelimit`): it prints ``stopped after NT epoch k of N; rerun the same command to
continue`` and exits with status 75 (``os.EX_TEMPFAIL``); a finished run exits with 0. So
``until python3 experiments/finding2_information_amount.py … --time-limit 9; do :; done``
completes a run of any length in pieces of about 9 minutes.

``--model package.module:factory`` trains your own model (:mod:`jaxmi.probes`); the module is
imported from the current directory or anywhere on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

from jaxmi import timelimit
from jaxmi.config import PRESETS, flat_fields, make_config
from jaxmi.findings.runner import Finding, parse_options, run_per_seed
from jaxmi.models import model_label
from jaxmi.plan import precheck

__all__ = ["build_parser", "parse", "main"]

_TYPES = {"int": int, "float": float, "str": str}


def _flag_kwargs(f: dataclasses.Field) -> dict[str, Any]:
    """argparse keyword arguments for a dataclass field with :func:`jaxmi.config.setting` metadata."""
    meta = f.metadata
    kw: dict[str, Any] = {"help": meta.get("help"), "default": None}
    if "action" in meta:
        kw.update(action=meta["action"], const=meta.get("const"))
        return kw
    annotation = str(f.type)
    if annotation == "bool":  # --name / --no-name
        kw["action"] = argparse.BooleanOptionalAction
        return kw
    if "nargs" in meta or annotation.startswith("tuple"):
        kw["nargs"] = meta.get("nargs", "+")
    kw["type"] = meta.get("type") or next((t for name, t in _TYPES.items() if name in annotation.split("[")[-1]),
                                          str)
    for key in ("choices", "metavar"):
        if key in meta:
            kw[key] = meta[key]
    return kw


def build_parser(finding: Finding, description: str) -> tuple[argparse.ArgumentParser, list[str], list[str]]:
    """The parser of a finding script, with the names of its configuration and option flags."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    presets = sorted(PRESETS)
    parser.add_argument("--preset", default="paper", help=f"one of {presets} (default: paper)")
    parser.add_argument("--out", default=None,
                        help=f"output directory (default: runs/{finding.name}_<dataset>_<model>, a model spec's "
                             "':' as '_')")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in --out, replacing the run (and checkpoints) there; without it a "
                             "different run is refused and the same run resumes from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                        help="stop at the first epoch boundary where the next epoch would end more than MINUTES "
                             "after the start, with the run saved, and exit with status 75; rerun the same "
                             "command to continue (not part of the run's identity; default: no limit)")
    config_names = []
    group = parser.add_argument_group("configuration (jaxmi.config)")
    for name, (_, f) in flat_fields().items():
        flag = f.metadata.get("flag", name).replace("_", "-")
        group.add_argument(f"--{flag}", dest=name, **_flag_kwargs(f))
        config_names.append(name)
    option_names = []
    if finding.options is not None:
        group = parser.add_argument_group(f"{finding.name} options")
        for f in dataclasses.fields(finding.options):
            flag = f.metadata.get("flag", f.name).replace("_", "-")
            group.add_argument(f"--{flag}", dest=f.name, **_flag_kwargs(f))
            option_names.append(f.name)
    return parser, config_names, option_names


def _import_from_cwd() -> None:
    """Makes modules in the current directory importable, as ``python -m`` would, so that
    ``--model my_models:factory`` finds ``./my_models.py`` when a script in another directory runs."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.append(cwd)


def _refuse_ignored_flags(finding: Finding, given: Sequence[str]) -> None:
    """With ``--from-run`` the loaded run fixes the configuration; a flag it would ignore is refused."""
    fields = flat_fields()
    taken = finding.from_run_fields + (() if finding.seeds_native else ("seeds",))  # seeds k of the loaded run
    ignored = [k for k in given if fields[k][0] != "exec" and k not in taken]
    if ignored:
        flags = ", ".join("--" + fields[k][1].metadata.get("flag", k).replace("_", "-") for k in ignored)
        kept = ", ".join("--" + k.replace("_", "-") for k in taken)
        raise ValueError(f"{flags} would be ignored with --from-run: the loaded run fixes its configuration "
                         f"(dataset, model, training, attack). Drop {flags}" + (f"; with --from-run, {finding.name} "
                         f"takes {kept} and the execution flags." if kept else
                         f"; with --from-run, {finding.name} takes only the execution flags."))


def parse(finding: Finding, argv: Sequence[str] | None, description: str = ""):
    """``(config, options, args)`` from the command line (exits with status 2 on bad values)."""
    parser, config_names, option_names = build_parser(finding, description)
    args = parser.parse_args(argv)
    _import_from_cwd()
    try:
        if args.time_limit is not None and not 0 < args.time_limit < float("inf"):
            raise ValueError(f"--time-limit must be a number of minutes > 0; got {args.time_limit}. Give e.g. "
                             "--time-limit 9, or leave it out for no limit.")
        if args.time_limit is not None and args.overwrite:
            raise ValueError("--overwrite with --time-limit would start the run over at every rerun of the same "
                             "command; delete the --out directory (or choose another --out) instead of --overwrite.")
        if args.preset not in PRESETS:
            raise ValueError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}.")
        preset = {**PRESETS[args.preset], **finding.presets.get(args.preset, {})}
        fields = {"dataset": finding.default_dataset, **{k: v for k, v in preset.items() if k in config_names}}
        fields.update({k: getattr(args, k) for k in config_names if getattr(args, k) is not None})
        config = make_config("paper", **fields)
        precheck(config)  # the model factory, before anything is written
        options = {k: v for k, v in preset.items() if k not in config_names}
        options.update({k: getattr(args, k) for k in option_names if getattr(args, k) is not None})
        if finding.options is not None:
            parse_options(finding.options, options)  # validates the options before anything runs
        if options.get("from_run"):
            _refuse_ignored_flags(finding, [k for k in config_names if getattr(args, k) is not None])
    except ValueError as e:
        parser.error(str(e))
    return config, options, args


def main(finding: Finding, argv: Sequence[str] | None = None, *, description: str = "") -> int:
    """Runs a finding from the command line; returns the exit status (0 finished, 75 stopped by
    ``--time-limit``, 2 a user error)."""
    config, options, args = parse(finding, argv, description)
    out = args.out or f"runs/{finding.name}_{config.data.dataset}_{model_label(config.model.model)}"
    show = not args.no_progress
    try:
        with timelimit.time_limit(args.time_limit, t0=timelimit.process_start()):
            if config.seeds > 1 and not finding.seeds_native:
                summary = run_per_seed(finding, config, out, options=options, overwrite=args.overwrite,
                                       show_progress=show)
            else:
                summary = finding.run(config, out, options=options, overwrite=args.overwrite, show_progress=show)
    except timelimit.TimeLimitReached as e:  # the run is saved: the same command continues it
        print(str(e), flush=True)
        return timelimit.EXIT_STATUS
    except (ValueError, OSError, FloatingPointError) as e:  # user-facing problems: no traceback
        if os.environ.get("JAXMI_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nwrote {out}/summary.json and {len(summary.get('figures', []))} figures")
    return 0
