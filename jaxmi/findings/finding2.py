"""Finding 2: adversarial training is harder, and AT layers carry less information about X.

Claim (Zhang et al. 2022, arXiv:2207.05756): PGD adversarial training reaches a lower
training accuracy and a higher training loss than normal training, and an AT-CNN's layers
carry less information about the input: I(X;T) is lower than for the NT-CNN.

Verdicts (each stored with the numbers it rests on under ``summary["evidence"]``):

* ``at_harder``: at the last measurement the AT model's training accuracy is lower *and*
  its training loss higher than the NT model's (training metrics of AT are on the PGD
  examples it is trained on, as in the paper).
* ``at_less_information``: over every (estimator, probe) pair, I(X;T) on clean test inputs
  at the last measurement is lower for AT than for NT more often than it is higher (pairs
  within ``tie_bits`` of each other, typically both at the log₂ N ceiling, count as ties),
  and the mean difference NT − AT is positive.

With ``--seeds K`` the verdicts are decided on the seed-mean curves, and
``evidence["across_seeds"]`` says in how many seeds each holds, with every evidence number as
mean ± sd across seeds.

Script: ``experiments/finding2_information_amount.py`` (:func:`jaxmi.cli.main` with this module).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from jaxmi import plots
from jaxmi.config import Config, normalize_identity
from jaxmi.findings.common import Finding, across_seeds, run_summary, verdict_lines
from jaxmi.results import prepare_run_dir, write_json
from jaxmi.run import log_line, train_and_measure

__all__ = ["decide", "run", "verdict_table", "TIE_BITS", "TITLE", "PRESETS", "FINDING"]

TITLE = "2: adversarial training is harder and AT layers carry less information about the input"
PRESETS: dict[str, dict[str, Any]] = {}  # the shared presets of jaxmi.config
TIE_BITS = 0.01  # |NT − AT| below this (bits) is a tie: both estimates sit at the same ceiling


def decide(summary: dict[str, Any], tie_bits: float = TIE_BITS) -> tuple[dict[str, bool], dict[str, Any]]:
    """Finding-2 verdicts and their evidence from a summary (see the module docstring)."""
    nt, at = summary["nt"], summary["at"]
    ev_h = {
        "nt_final_train_acc": nt["train_acc"][-1], "at_final_train_acc": at["train_acc"][-1],
        "nt_final_train_loss": nt["train_loss"][-1], "at_final_train_loss": at["train_loss"][-1],
        "train_acc_gap_nt_minus_at": nt["train_acc"][-1] - at["train_acc"][-1],
        "train_loss_ratio_at_over_nt": at["train_loss"][-1] / max(nt["train_loss"][-1], 1e-12),
        "mean_train_acc_gap_over_epochs": float(np.nanmean(np.subtract(nt["train_acc"][1:] or nt["train_acc"],
                                                                      at["train_acc"][1:] or at["train_acc"]))),
        "nt_final_test_clean_acc": nt["test_clean_acc"][-1], "at_final_test_clean_acc": at["test_clean_acc"][-1],
        "nt_final_test_adv_acc": nt["test_adv_acc"][-1], "at_final_test_adv_acc": at["test_adv_acc"][-1],
    }
    at_harder = bool(ev_h["at_final_train_acc"] < ev_h["nt_final_train_acc"]
                     and ev_h["at_final_train_loss"] > ev_h["nt_final_train_loss"])

    per_pair, diffs, traj_diffs = {}, [], []
    for est, d in nt["mi"].items():
        nt_final = np.asarray(d["clean"]["I_XT"][-1])
        at_final = np.asarray(at["mi"][est]["clean"]["I_XT"][-1])
        nt_traj = np.asarray(d["clean"]["I_XT"]).mean(axis=0)
        at_traj = np.asarray(at["mi"][est]["clean"]["I_XT"]).mean(axis=0)
        per_pair[est] = {}
        for i, layer in enumerate(summary["layers"]):
            diff = float(nt_final[i] - at_final[i])
            per_pair[est][layer] = {"nt": float(nt_final[i]), "at": float(at_final[i]), "nt_minus_at": diff,
                                    "mean_over_epochs_nt_minus_at": float(nt_traj[i] - at_traj[i])}
            diffs.append(diff)
            traj_diffs.append(float(nt_traj[i] - at_traj[i]))
    diffs_a = np.asarray(diffs)
    lower = int(np.sum(diffs_a > tie_bits))
    higher = int(np.sum(diffs_a < -tie_bits))
    ties = int(diffs_a.size - lower - higher)
    ev_i = {
        "quantity": "I(X;T) on clean test inputs at the last measurement, bits",
        "pairs": per_pair,
        "n_at_lower": lower, "n_at_higher": higher, "n_ties": ties, "tie_bits": tie_bits,
        "mean_nt_minus_at_bits": float(diffs_a.mean()),
        "mean_over_epochs_nt_minus_at_bits": float(np.mean(traj_diffs)),
    }
    at_less = bool(lower > higher and ev_i["mean_nt_minus_at_bits"] > 0)
    return ({"at_harder": at_harder, "at_less_information": at_less},
            {"at_harder": ev_h, "at_less_information": ev_i})


def verdict_table(summary: dict[str, Any]) -> str:
    """A short plain-text table of the verdicts and their key numbers."""
    v, e = summary["verdicts"], summary["evidence"]
    h, i = e["at_harder"], e["at_less_information"]
    rows = [
        ("at_harder", v["at_harder"],
         f"train acc NT {h['nt_final_train_acc']:.4f} vs AT {h['at_final_train_acc']:.4f}; "
         f"train loss NT {h['nt_final_train_loss']:.4f} vs AT {h['at_final_train_loss']:.4f}"),
        ("at_less_information", v["at_less_information"],
         f"I(X;T) AT lower in {i['n_at_lower']}, higher in {i['n_at_higher']}, tied in {i['n_ties']} "
         f"(estimator, probe) pairs; mean NT−AT {i['mean_nt_minus_at_bits']:+.3f} bits"),
    ]
    return verdict_lines(rows, summary)


def run(config: Config, workdir: str | Path, *, options: dict[str, Any] | None = None, overwrite: bool = False,
        show_progress: bool = True, log=log_line) -> dict[str, Any]:
    """Runs finding 2 end to end and writes ``summary.json`` and figures into ``workdir``.

    Checkpoints go to ``workdir/checkpoints`` after every epoch and the trained models to
    ``workdir/models`` (:func:`jaxmi.run.load_trained`). Rerunning with the same
    configuration resumes from the last completed epoch; ``summary.json`` is then identical
    to an uninterrupted run's. Wall-clock times go to ``timing.json``, not the summary.

    Returns:
      The summary dict (also written to ``workdir/summary.json``).
    """
    del options  # finding 2 has no options beyond the configuration
    workdir = prepare_run_dir(workdir, config.identity(), overwrite=overwrite, normalize=normalize_identity)
    t0 = time.perf_counter()
    result = train_and_measure(config, log=log, show_progress=show_progress, workdir=workdir)
    summary: dict[str, Any] = {"finding": TITLE, **run_summary(config, result)}
    verdicts, evidence = decide(summary)  # on the seed means when there are several seeds
    summary["verdicts"] = verdicts
    summary["evidence"] = evidence
    if "seeds" in summary:
        evidence["across_seeds"] = across_seeds(summary, decide)
    summary["figures"] = [p.name for p in plots.plot_all(summary, workdir)]
    write_json(workdir / "summary.json", summary)
    write_json(workdir / "timing.json", {**result.timing, "runtime_seconds": time.perf_counter() - t0})
    log(verdict_table(summary))
    return summary


FINDING = Finding(name="finding2", title=TITLE, run=run, presets=PRESETS, seeds_native=True)
