"""Finding 2: adversarial training is harder, and AT layers carry less information about X.

Claim (Zhang et al. 2022, arXiv:2207.05756): PGD adversarial training reaches a lower
training accuracy and a higher training loss than normal training, and an AT-CNN's layers
carry less information about the input: I(X;T) is lower than for the NT-CNN.

Verdicts (records of :mod:`jaxmi.verdicts`: effect, 95 % interval over seeds and the paired
bootstrap of the test draw, holds / fails / untestable):

* ``at_harder``: final training accuracy NT − AT (AT's on the PGD examples it trains on, as
  in the paper) above 0. Several seeds: the seed interval; one seed: the normal
  approximation of the binomial error of the two epoch-mean accuracies over the training
  examples. The final training losses are in the evidence.
* ``at_less_information`` (the paper's protocol: one absolute σ²): ΔI = I_NT − I_AT of clean I(X;T) at the last
  measurement, averaged over the *informative* (estimator, probe) pairs — those where
  neither estimate is within 0.01 bits of log₂ N — above 0. NT and AT are measured on the
  same draw and the same bootstrap resamples, so the difference is paired. Untestable when
  every pair is saturated.
* ``at_less_information_matched`` (control): the same ΔI with NT taken at the epoch whose clean
  test accuracy is closest to AT's final one, so that a difference in how well the networks
  fit cannot alone produce ΔI.
* ``at_less_information_scale_free`` (pre-registered primary endpoint of "less information, or
  only smaller activations?"): ΔI with σ² in units of each layer's spread, pooled over both
  KDE bounds × probes × a fixed band of relative σ² (:mod:`jaxmi.findings.finding2_scale`, which
  also gives the shift alignment and the temperature control of the logits in the evidence).
  ``at_less_information`` stays as the paper's protocol (one absolute σ²).

The evidence also has ΔI per pair with its interval (``pairs``, drawn in
``nt_minus_at_pairs.png``) and ΔI over the σ² / bin-size sweep at the last measurement
(``across_sweep``, over the pairs saturated in no seed at that grid value, with the seed
interval: the sweep has no bootstrap resamples): where ΔI
changes sign along the sweep, it reports the kernel scale relative to the activations, not
information. With the ``knn`` estimator in the run (I(T;Y) only, so not in ΔI), the evidence
also has its clean I(T;Y) NT − AT per probe and averaged over probes (``knn_I_TY``).

Script: ``experiments/finding2_information_amount.py`` (:func:`jaxmi.cli.main` with this module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxmi import plots
from jaxmi.config import Config
from jaxmi.estimators import SATURATION_GAP_BITS
from jaxmi.findings.common import measured_run
from jaxmi.findings.finding2_scale import decide_scale_free, scale_free_lines, shift_alignment, temperature_evidence
from jaxmi.findings.runner import Finding
from jaxmi.findings.summary import learn_reason, record_rows, seed_runs, verdict_lines
from jaxmi.plots.finding2_scale import plot_shift_alignment
from jaxmi.run import log_line
from jaxmi.verdicts import interval, record, untestable

__all__ = ["decide", "run", "verdict_table", "TITLE", "PRESETS", "FINDING"]

TITLE = "2: adversarial training is harder and AT layers carry less information about the input"
PRESETS: dict[str, dict[str, Any]] = {}  # the shared presets of jaxmi.config


def _pooled(nt: dict[str, Any], at: dict[str, Any], e_nt: int, e_at: int, ceiling: float, layers: list[str]
            ) -> tuple[list[dict[str, Any]], tuple[float, list[float] | None] | None]:
    """ΔI = I_NT(e_nt) − I_AT(e_at) of clean I(X;T) per informative pair, and pooled over them
    (with the pooled value on every shared bootstrap resample)."""
    pairs, deltas, boots = [], [], []
    for est in nt["mi"]:
        v_nt = np.asarray(nt["mi"][est]["clean"]["I_XT"][e_nt], np.float64)
        if np.isnan(v_nt).all():  # no I(X;T) from this estimator (knn)
            continue
        v_at = np.asarray(at["mi"][est]["clean"]["I_XT"][e_at], np.float64)
        b_nt = ((nt.get("mi_boot") or {}).get(est) or {}).get("clean")
        b_at = ((at.get("mi_boot") or {}).get(est) or {}).get("clean")
        for j, layer in enumerate(layers):
            saturated = bool(ceiling - v_nt[j] < SATURATION_GAP_BITS or ceiling - v_at[j] < SATURATION_GAP_BITS)
            d = float(v_nt[j] - v_at[j])
            b = None
            if b_nt is not None and b_at is not None:
                b = (np.asarray(b_nt["I_XT"][e_nt][j], np.float64) - np.asarray(b_at["I_XT"][e_at][j], np.float64))
            pairs.append({"estimator": est, "probe": layer, "nt": float(v_nt[j]), "at": float(v_at[j]),
                          "nt_minus_at": d, "saturated": saturated, "_boot": b})
            if not saturated:
                deltas.append(d)
                boots.append(b)
    if not deltas:
        return pairs, None
    boot = None if any(b is None for b in boots) else np.mean(np.asarray(boots), axis=0).tolist()
    return pairs, (float(np.mean(deltas)), boot)


def _sweep_delta(summary: dict[str, Any]) -> dict[str, Any] | None:
    """ΔI of clean I(X;T) NT − AT at every grid value of the last swept measurement, pooled
    over the (estimator, probe) pairs saturated in no seed at that value, with the seed
    interval (:func:`jaxmi.verdicts.interval`; none with one seed: the sweep has no resamples)."""
    run = summary["run"]
    sweep = run.get("sweep")
    if not sweep:
        return None
    ceiling = (run.get("saturation") or {}).get("I_XT_ceiling", np.inf)
    seeds = seed_runs(summary)
    per_seed_sweeps = [(h["nt"].get("sweep"), h["at"].get("sweep")) for h in seeds]
    if not all(a and b for a, b in per_seed_sweeps):  # older summaries: only the seed-mean sweep
        per_seed_sweeps = [(sweep["nt"], sweep["at"])]
    out = {}
    for est in sweep["estimators"]:
        try:
            nt = np.stack([np.asarray(a["clean"][est]["I_XT"][-1], np.float64) for a, _ in per_seed_sweeps])
            at = np.stack([np.asarray(b["clean"][est]["I_XT"][-1], np.float64) for _, b in per_seed_sweeps])
        except (KeyError, IndexError):
            continue  # [K, P, S] each
        ok = ((ceiling - nt >= SATURATION_GAP_BITS) & (ceiling - at >= SATURATION_GAP_BITS)).all(axis=0)  # [P, S]
        mean, ci = [], []
        for j in range(ok.shape[1]):
            if not ok[:, j].any():
                mean.append(None)
                ci.append(None)
                continue
            effect, interval_j = interval((nt[:, ok[:, j], j] - at[:, ok[:, j], j]).mean(axis=1))
            mean.append(effect)
            ci.append(interval_j)
        out[est] = {"grid": sweep["bin_size" if est == "binning" else "noise_var"], "nt_minus_at_bits": mean,
                    "ci95": ci, "seeds": len(per_seed_sweeps), "informative_pairs": ok.sum(axis=0).tolist()}
    return out


def _knn_information(seeds: list[dict[str, Any]], layers: list[str], reason: str | None) -> dict[str, Any] | None:
    """Evidence beside the verdicts: the kNN estimate of clean I(T;Y) (``knn``, the only
    estimator here that does not depend on a kernel width or bin size), NT − AT at the last
    measurement per probe and averaged over probes, with the seed / paired-bootstrap interval.
    None when the run did not use ``knn``."""
    if not seeds or "knn" not in (seeds[0]["nt"].get("mi") or {}):
        return None
    rule = "clean I(T;Y) NT − AT of the kNN estimator at the last measurement (evidence, not a verdict)"
    diffs, boots = [], []  # [K, P], [K, P, R] or None
    for h in seeds:
        v = [np.asarray(h[r]["mi"]["knn"]["clean"]["I_TY"][-1], np.float64) for r in ("nt", "at")]
        diffs.append(v[0] - v[1])
        b = [((h[r].get("mi_boot") or {}).get("knn") or {}).get("clean") for r in ("nt", "at")]
        boots.append(None if None in b else np.asarray(b[0]["I_TY"][-1], np.float64)
                     - np.asarray(b[1]["I_TY"][-1], np.float64))
    have_boot = all(b is not None for b in boots)
    rows = []
    for j, layer in enumerate(layers):
        row = {"probe": layer,
               "nt": float(np.mean([h["nt"]["mi"]["knn"]["clean"]["I_TY"][-1][j] for h in seeds])),
               "at": float(np.mean([h["at"]["mi"]["knn"]["clean"]["I_TY"][-1][j] for h in seeds]))}
        if not reason:
            row["record"] = record([float(d[j]) for d in diffs], [b[j].tolist() for b in boots] if have_boot else None,
                                   unit="bits", rule=rule)
            row["record"].pop("resamples", None)
        rows.append(row)
    out: dict[str, Any] = {"quantity": "kNN I(T;Y) on clean test inputs at the last measurement, bits",
                           "probes": rows}
    if not reason:
        out["mean_over_probes"] = record([float(np.mean(d)) for d in diffs],
                                         [b.mean(axis=0).tolist() for b in boots] if have_boot else None,
                                         unit="bits", rule=rule + ", mean over probes")
        out["mean_over_probes"].pop("resamples", None)
    return out


def decide(summary: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Finding-2 verdict records and their evidence from a summary's ``run`` (see the module docstring)."""
    run = summary["run"]
    layers = run["layers"]
    seeds = seed_runs(summary)
    k = len(seeds)
    ceiling = (run.get("saturation") or {}).get("I_XT_ceiling", np.inf)
    reason = learn_reason(summary)
    n_train = (run.get("data") or {}).get("train_examples")
    verdicts: dict[str, dict[str, Any]] = {}
    evidence: dict[str, Any] = {}

    # at_harder
    rule_h = ("final training accuracy NT − AT (AT on its PGD training examples) above 0; one seed: binomial "
              "normal approximation over the training examples")
    acc = [(h["nt"]["train_acc"][-1], h["at"]["train_acc"][-1]) for h in seeds]
    evidence["at_harder"] = {
        "nt_final_train_acc": [a for a, _ in acc], "at_final_train_acc": [b for _, b in acc],
        "nt_final_train_loss": [h["nt"]["train_loss"][-1] for h in seeds],
        "at_final_train_loss": [h["at"]["train_loss"][-1] for h in seeds],
        "nt_final_test_clean_acc": [h["nt"]["test_clean_acc"][-1] for h in seeds],
        "at_final_test_clean_acc": [h["at"]["test_clean_acc"][-1] for h in seeds],
        "nt_final_test_adv_acc": [h["nt"]["test_adv_acc"][-1] for h in seeds],
        "at_final_test_adv_acc": [h["at"]["test_adv_acc"][-1] for h in seeds]}
    if reason:
        verdicts["at_harder"] = untestable(reason, unit="accuracy", rule=rule_h, seeds=k)
    else:
        ci = None
        if k == 1 and n_train:
            (pn, pa), = acc
            half = 1.96 * float(np.sqrt(pn * (1 - pn) / n_train + pa * (1 - pa) / n_train))
            ci = (pn - pa - half, pn - pa + half)
        verdicts["at_harder"] = record([a - b for a, b in acc], None, unit="accuracy", rule=rule_h, ci95=ci)

    # at_less_information and its matched-accuracy control
    rule_i = ("mean over informative (estimator, probe) pairs (neither within "
              f"{SATURATION_GAP_BITS} bits of log2 N) of clean I(X;T) NT − AT at the last measurement; holds when "
              "its 95% interval lies above 0")
    rule_m = ("as at_less_information, with NT at the epoch whose clean test accuracy is closest to AT's final one "
              "(a control for how well the networks fit)")
    per_seed = {"at_less_information": [], "at_less_information_matched": []}
    pair_rows: dict[tuple[str, str], list] = {}
    matched_epochs = []
    for h in seeds:
        pairs, pooled = _pooled(h["nt"], h["at"], -1, -1, ceiling, layers)
        for p in pairs:
            pair_rows.setdefault((p["estimator"], p["probe"]), []).append(p)
        per_seed["at_less_information"].append(pooled)
        target = h["at"]["test_clean_acc"][-1]
        e_star = int(np.argmin([abs(a - target) for a in h["nt"]["test_clean_acc"]]))
        matched_epochs.append(run["epochs_measured"][e_star])
        per_seed["at_less_information_matched"].append(_pooled(h["nt"], h["at"], e_star, -1, ceiling, layers)[1])
    for name, rule in (("at_less_information", rule_i), ("at_less_information_matched", rule_m)):
        got = per_seed[name]
        if reason or any(g is None for g in got):
            verdicts[name] = untestable(reason or "every (estimator, probe) pair is saturated at log2 N in some seed: "
                                        "the estimates report the activation scale (see the sweep)",
                                        unit="bits", rule=rule, seeds=k)
        else:
            verdicts[name] = record([g[0] for g in got], [g[1] for g in got] if all(g[1] for g in got) else None,
                                    unit="bits", rule=rule)
    pairs_ev = []
    for (est, probe), rows in pair_rows.items():
        row = {"estimator": est, "probe": probe, "nt": float(np.mean([r["nt"] for r in rows])),
               "at": float(np.mean([r["at"] for r in rows])), "saturated": any(r["saturated"] for r in rows)}
        if not row["saturated"] and not reason:
            boots = [r["_boot"] for r in rows]
            row["record"] = record([r["nt_minus_at"] for r in rows],
                                   None if any(b is None for b in boots) else [b.tolist() for b in boots],
                                   unit="bits", rule="clean I(X;T) NT − AT of this pair")
            row["record"].pop("resamples", None)
        pairs_ev.append(row)
    evidence["at_less_information"] = {
        "quantity": "I(X;T) on clean test inputs at the last measurement, bits", "pairs": pairs_ev,
        "informative_pairs": sum(not p["saturated"] for p in pairs_ev), "pairs_total": len(pairs_ev),
        "across_sweep": _sweep_delta(summary)}
    evidence["at_less_information"]["knn_I_TY"] = _knn_information(seeds, layers, reason)
    evidence["at_less_information_matched"] = {"nt_epochs": matched_epochs}
    verdicts["at_less_information_scale_free"], ev = decide_scale_free(seeds, ceiling, reason)
    ev["shift_alignment"] = shift_alignment(seeds, layers, ceiling)
    ev["logit_temperature"] = temperature_evidence(seeds)
    evidence["at_less_information_scale_free"] = ev
    if reason:
        evidence["warning"] = reason
    return verdicts, evidence


def verdict_table(summary: dict[str, Any]) -> str:
    """A short plain-text table of the verdicts and their key numbers."""
    v, e = summary["verdicts"], summary["evidence"]
    rows = record_rows(v)
    i = e["at_less_information"]
    rows[1] = (rows[1][0], rows[1][1], rows[1][2] + f"; {i['informative_pairs']}/{i['pairs_total']} pairs informative")
    rows[2] = (rows[2][0], rows[2][1], rows[2][2] + f"; NT at epoch {e['at_less_information_matched']['nt_epochs']}")
    lines = [verdict_lines(rows, summary)]
    lines += scale_free_lines(e.get("at_less_information_scale_free") or {})
    sweep = i.get("across_sweep") or {}
    if sweep:
        lines.append("clean I(X;T) NT − AT across the sweep (bits, pairs saturated in no seed) at "
                     "σ² (KDE) / bin width (binning):")
    for est, d in sweep.items():
        cells = []
        for g, m, ci, n in zip(d["grid"], d["nt_minus_at_bits"], d.get("ci95") or [None] * len(d["grid"]),
                               d["informative_pairs"]):
            if m is not None:
                cells.append(f"{g:g}: {m:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "") + f" ({n})")
        lines.append(f"  {est}: " + ("; ".join(cells) if cells else "every pair saturated at every value"))
    return "\n".join(lines)


def _figures(summary: dict[str, Any], workdir: Path, artifacts) -> list[Path]:
    return plots.plot_all(summary, workdir) + plot_shift_alignment(summary, workdir)


FINDING = Finding(name="finding2", title=TITLE, measure=measured_run, decide=lambda summary, opts: decide(summary),
                  table=verdict_table, figures=_figures, presets=PRESETS, seeds_native=True)


def run(config: Config, workdir: str | Path, *, options: dict[str, Any] | None = None, overwrite: bool = False,
        show_progress: bool = True, log=log_line) -> dict[str, Any]:
    """Runs finding 2 end to end and writes ``summary.json`` and figures into ``workdir``
    (:func:`jaxmi.findings.runner.run`; finding 2 has no options).

    Checkpoints go to ``workdir/checkpoints`` after every epoch and the trained models to
    ``workdir/models`` (:func:`jaxmi.run.load_trained`). Rerunning with the same
    configuration resumes from the last completed epoch; ``summary.json`` is then identical
    to an uninterrupted run's. Wall-clock times go to ``timing.json``, not the summary.

    Returns:
      The summary dict (also written to ``workdir/summary.json``).
    """
    return FINDING.run(config, workdir, options=options, overwrite=overwrite, show_progress=show_progress, log=log)
