"""Finding 4: the KDE and binning estimators trace the geometry of a layer's output.

Claim (Zhang et al. 2022, arXiv:2207.05756): the values of the KDE and binning estimators are
determined by the geometry of the layer's output: how far the points spread relative to the
noise (σ²) or bin scale, how compact each class is and how far apart the classes are.

Two sources of layers T (N points, labels Y), measured with the statistics of
:mod:`jaxmi.geometry`:

* **Controlled cases**: K Gaussian class clusters (centres N(0, s_b² I_D), points around
  them N(0, s_w² I_D)), varied one factor at a time — ``scale`` (T ↦ c·T), ``separation``
  (s_b × f: classes moved apart), ``compactness`` (s_w × f: classes shrunk or spread),
  ``width`` (D, per-coordinate spreads fixed). One key, so only the varied factor changes.
* **Trained probes**: every probe of the trained NT and AT models on clean and adversarial
  test inputs (trained here, or loaded with ``--from-run``).

For each layer it records the estimates (KDE upper and lower bound, binning; I(X;T), I(T;Y),
bits) and geometry statistics, with s the kernel scale (2σ² upper, 8σ² lower bound):

* ``spread`` = median pairwise squared distance / s (all pairs, or a seeded sample of ``pairs``);
* ``separation`` = mean between-class squared distance / (mean within-class squared distance + s)
  (exact, from class sums): ≫ 1 when classes are far apart relative to their own size and to
  the kernel;
* ``occupied_bins``: the number of distinct bin vectors floor(t / bin_size).

Verdicts (records of :mod:`jaxmi.verdicts`; MI rounded to 1e-3 bits so that values pinned at
a ceiling tie; intervals from a bootstrap over the layers or sweep points, and seeds).

The finding's verdicts are decided on the **trained** probes only (the layers the paper's
claim is about; synthetic layers designed to vary one factor at a time inflate a pooled ρ):

* ``geometry_explains_trained`` (primary): how much more of the KDE I(X;T) variance (R²,
  averaged over the bounds) log spread and log(1 + separation) explain beyond the NT/AT and
  clean/adversarial indicators; interval above 0.
* ``kde_ixt_tracks_spread_trained``, ``kde_ity_tracks_separation_trained``,
  ``binning_tracks_spread_trained``: Spearman ρ over the trained layers alone, interval above
  0.5 (statistics as in the checks below).
* ``estimators_trace_geometry``: the four trained-layer verdicts hold.

Untestable: fewer than 8 trained layers (``--no-trained``) or models that did not learn.

Checks (records marked ``"role": "check"``, shown after the verdicts and labelled as checks;
near true by construction, because KDE I(X;T) is a monotone function of the pairwise distances
over the kernel width, so they can show an implementation error but are no evidence for the
claim; they are not parts of ``estimators_trace_geometry``):

* ``scale_identity`` (of the implementation): the KDE of c·T at σ²c² equals the KDE of T at σ²
  (c = 0.1, 10); holds when the largest difference is below 1e-3 bits.
* ``sweeps_monotone``: within each controlled sweep, Kendall's τ between the varied factor and
  the estimate has the predicted sign — I(X;T) rises with ``scale``, ``compactness`` (s_w)
  and ``width`` for all three estimators, the KDE I(T;Y) rises with ``separation`` — with
  its interval above 0 (and a one-sided permutation p-value in the evidence); untestable
  when a sweep's estimates are all tied (saturated).
* ``kde_ixt_tracks_spread``: Spearman ρ(KDE I(X;T), spread) over all layers, controlled and
  trained pooled, averaged over the two bounds, with its interval above 0.5;
* ``kde_ity_tracks_separation``: the same for KDE I(T;Y) and separation;
* ``binning_tracks_spread``: ρ(binning I(X;T), median squared distance / bin_size²) above 0.5.
  (The former comparison with log₂ of the occupied bins was a tautology: the binning
  entropy is bounded by it and equals it for uniform occupancy.)

The evidence also has the correlation within each controlled sweep. One limit shows there:
when the points spread far beyond the kernel scale, every point is its own kernel "cluster"
and the KDE I(T;Y) approaches H(Y) = ln N − Σ p_c ln N_c whatever the class structure (the
same holds for binning once every point has its own bin), so spreading the classes out
(the ``compactness`` sweep towards large s_w) *raises* I(T;Y) although the classes overlap.

Script: ``experiments/finding4_estimator_geometry.py`` (:func:`jaxmi.cli.main` with this module).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import estimators, plots, progress
from jaxmi.config import Config, check_minimums, setting
from jaxmi import verdicts as verdict_lib
from jaxmi.findings.common import ModelOptions, measurement_draw, model_passes, trained_models
from jaxmi.findings.runner import Finding, Measured
from jaxmi.findings.summary import config_record, final_train_acc, record_rows, verdict_lines
from jaxmi.geometry import controlled_cases, geometry
from jaxmi.history import INPUTS, REGIMES
from jaxmi.run import log_line
from jaxmi.stats import spearman
from jaxmi.verdicts import kendall_rows, kendall_tau, permutation_p, spearman_boot

__all__ = ["Options", "PRESETS", "decide", "verdict_table", "run", "measure_layer", "scale_identity", "PREDICTIONS",
           "TITLE", "FINDING"]

TITLE = "4: the KDE and binning estimators trace the geometry of a layer's output"
KDE = ("kde_upper", "kde_lower")


@dataclasses.dataclass(frozen=True)
class Options(ModelOptions):
    """Finding-4 settings beyond the shared configuration (after ``from_run`` and ``from_seed``)."""

    trained: bool = setting(True, "controlled cases only (no trained models)", flag="no-trained",
                            action="store_const", const=False)
    points: int = setting(2000, "N of every controlled case", minimum=2)
    classes: int = setting(10, "K of the controlled cases", minimum=2)
    width: int = setting(32, "D of the controlled cases (except the width sweep)", minimum=2)
    within_std: float = setting(0.056, "s_w: within-class distances ≈ 2 s_w² D ≈ 2σ² at D = 32")
    between_std: float = setting(0.17, "s_b: class centres ≈ 3 s_w apart per coordinate")
    steps: int = setting(9, "values per controlled sweep", minimum=2)
    pairs: int = setting(200_000, "sampled pairs for the median distance", minimum=2)

    def __post_init__(self):
        check_minimums(self)
        if not (self.within_std > 0 and self.between_std > 0):
            raise ValueError("within_std and between_std must be > 0.")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"epochs": 5, "samples": 2000},  # LeNet/MNIST, 5 epochs at lr 0.025, 2,000-image probes
    "smoke": {"points": 200, "steps": 4, "pairs": 5000, "samples": 96},
}


def measure_layer(t, labels, num_classes, noise_var, bin_size, key, pairs) -> dict[str, Any]:
    """The three estimates (KDE upper, KDE lower, binning; bits) and the geometry of one layer."""
    mi = estimators.estimate(t, labels, methods=("kde_upper", "kde_lower", "binning"), num_classes=num_classes,
                             noise_var=noise_var, bin_size=bin_size)
    mi = {m: {"I_XT": float(mi[m]["I_XT"]), "I_TY": float(mi[m]["I_TY"])} for m in mi}
    return {"mi": mi, "geometry": geometry(t, labels, noise_var=noise_var, bin_size=bin_size, key=key, pairs=pairs,
                                           num_classes=num_classes)}


SCALE_TOLERANCE = 1e-3  # bits: the KDE scale identity must hold to this
RHO_NULL = 0.5  # a statistic "tracks" an estimate when Spearman's ρ is above this
RESAMPLES = 1000
MIN_TRAINED = 8  # trained layers needed for the trained-only verdicts
# (sweep, estimator, quantity, predicted sign of Kendall's τ between the factor and the estimate)
PREDICTIONS = tuple([(sw, est, "I_XT", 1) for sw in ("scale", "compactness", "width")
                     for est in ("kde_upper", "kde_lower", "binning")]
                    + [("separation", est, "I_TY", 1) for est in KDE])


def scale_identity(t, labels, num_classes: int, noise_var: float, factors=(0.1, 10.0)) -> dict[str, Any]:
    """KDE of c·T at σ²c² against the KDE of T at σ² (both bounds, both quantities)."""
    base = estimators.estimate(t, labels, methods=KDE, num_classes=num_classes, noise_var=noise_var)
    diffs = []
    for c in factors:
        got = estimators.estimate(np.asarray(t) * c, labels, methods=KDE, num_classes=num_classes,
                                  noise_var=noise_var * c * c)
        diffs += [abs(float(got[m][q]) - float(base[m][q])) for m in KDE for q in ("I_XT", "I_TY")]
    return {"factors": list(factors), "max_abs_diff_bits": float(max(diffs))}


def _tau_record(x, y, sign, rule, idx):
    tau = kendall_tau(x, y)
    if tau is None:
        return verdict_lib.untestable("the estimates are all tied along the sweep (saturated)", unit="Kendall tau",
                                      rule=rule, seeds=1)
    boots = kendall_rows(np.asarray(x, np.float64)[idx], np.asarray(y, np.float64)[idx])
    boots = boots[np.isfinite(boots)].tolist()  # resamples that drew one value only are dropped
    p = permutation_p(x, y, direction="greater" if sign > 0 else "less", permutations=2000)
    return verdict_lib.record([sign * tau], [[sign * b for b in boots]], unit="Kendall tau (predicted sign)",
                              rule=rule, bounds=(-1.0, 1.0), permutation_p=p, points=len(x))


def _rho_record(pairs, idx, rule):
    """Mean Spearman ρ over (x, y) pairs of equal length, with the mean on every resample."""
    rhos, boots = [], []
    for x, y in pairs:
        rho, b = spearman_boot(x, y, idx)
        if rho is None or len(b) < 2:
            return verdict_lib.untestable("a constant series (every estimate tied at a ceiling) or too few layers",
                                          unit="Spearman rho", rule=rule, seeds=1, null_value=RHO_NULL)
        rhos.append(rho)
        boots.append(b)
    n = min(len(b) for b in boots)  # resamples where ρ was undefined are dropped
    return verdict_lib.record([float(np.mean(rhos))], [np.mean([b[:n] for b in boots], axis=0).tolist()],
                              unit="Spearman rho", rule=rule, null_value=RHO_NULL, bounds=(-1.0, 1.0),
                              per_statistic=rhos)


def _r2(y, x):
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    res = y - x @ beta
    tot = ((y - y.mean()) ** 2).sum()
    return 1.0 - (res ** 2).sum() / tot if tot > 0 else np.nan


def _delta_r2(layers, idx_fn):
    trained = [lay for lay in layers if lay["source"] == "trained"]
    if len(trained) < MIN_TRAINED:
        return None
    effects, boots = [], []
    for est in KDE:
        y = np.array([lay["mi"][est]["I_XT"] for lay in trained])
        base = np.column_stack([np.ones(len(trained)), [lay["mode"] == "at" for lay in trained],
                                [lay["inputs"] == "adv" for lay in trained]]).astype(float)
        geo = np.array([[np.log(max(lay["geometry"][f"spread_{est}"], 1e-12)),
                         np.log1p(max(lay["geometry"][f"separation_{est}"], 0.0))] for lay in trained])
        full = np.column_stack([base, geo])
        effects.append(_r2(y, full) - _r2(y, base))
        boots.append([_r2(y[ii], full[ii]) - _r2(y[ii], base[ii]) for ii in idx_fn(len(trained))])
    if not np.all(np.isfinite(effects)):
        return None
    boots = np.asarray(boots)
    ok = np.all(np.isfinite(boots), axis=0)
    return float(np.mean(effects)), np.mean(boots[:, ok], axis=0).tolist(), len(trained)


def decide(layers: list[dict[str, Any]], *, scale_check: dict[str, Any] | None = None, seed: int = 0,
           trained_reason: str | None = None) -> tuple[dict[str, dict], dict[str, Any]]:
    """Finding-4 verdict records from measured layers (each with ``mi``, ``geometry``,
    ``source``) and the scale check of :func:`scale_identity`; ``trained_reason`` says why the
    trained probes were left out (models that did not learn)."""

    def r3(v):
        return round(float(v), 3)

    verdicts: dict[str, dict[str, Any]] = {}
    evidence: dict[str, Any] = {}
    if scale_check is not None:
        x = scale_check["max_abs_diff_bits"]
        verdicts["scale_identity"] = verdict_lib.record(
            [x], None, ci95=(x, x), unit="bits", null_value=SCALE_TOLERANCE, direction="less",
            rule=f"check of the implementation: largest |KDE(c·T, σ²c²) − KDE(T, σ²)| over c ∈ "
                 f"{scale_check['factors']}, both bounds and quantities, below {SCALE_TOLERANCE} bits (exact, no "
                 "sampling error)", role="check")
    sweep_recs = {}
    for sw, est, q, sign in PREDICTIONS:
        items = sorted([lay for lay in layers if lay.get("sweep") == sw], key=lambda lay: lay["value"])
        if len(items) < 3:
            continue
        xs = [lay["value"] for lay in items]
        ys = [r3(lay["mi"][est][q]) for lay in items]
        idx = verdict_lib.point_bootstrap(len(items), RESAMPLES, seed)
        sweep_recs[f"{sw}:{est}:{q}"] = _tau_record(xs, ys, sign, f"{q} of {est} rises with {sw}", idx)
    if sweep_recs:
        verdicts["sweeps_monotone"] = {**verdict_lib.all_of(
            sweep_recs, rule="check (synthetic layers, near true by construction): in every controlled sweep "
                             "Kendall's τ between the factor and the estimate has the predicted sign with its 95% "
                             "interval beyond 0 (I(X;T) rises with scale, compactness and width; KDE I(T;Y) with "
                             "separation)", keep_parts=True), "role": "check"}
        evidence["sweeps"] = {k: {f: r.get(f) for f in ("holds", "effect", "ci95", "permutation_p", "reason")}
                              for k, r in sweep_recs.items()}
    idx_all = verdict_lib.point_bootstrap(len(layers), RESAMPLES, seed)
    trained = [lay for lay in layers if lay["source"] == "trained"]
    idx_trained = verdict_lib.point_bootstrap(len(trained), RESAMPLES, seed) if trained else None
    checks = {
        "kde_ixt_tracks_spread": [(est, "I_XT", f"spread_{est}") for est in KDE],
        "kde_ity_tracks_separation": [(est, "I_TY", f"separation_{est}") for est in KDE],
        "binning_tracks_spread": [("binning", "I_XT", "spread_binning")],
    }
    primary: dict[str, dict[str, Any]] = {}
    for name, items in checks.items():
        what = ", ".join(f"{q} of {est} vs {stat}" for est, q, stat in items)
        rule = (f"check (controlled and trained layers pooled, near true by construction): Spearman ρ over all "
                f"{len(layers)} layers of {what} (mean over them) with its 95% interval above {RHO_NULL}")
        pairs = [([r3(lay["mi"][est][q]) for lay in layers], [lay["geometry"][stat] for lay in layers])
                 for est, q, stat in items]
        verdicts[name] = {**_rho_record(pairs, idx_all, rule), "role": "check"}
        evidence[name] = {"subsets": {
            sub: {f"{est}_{q}_vs_{stat}": spearman([r3(lay["mi"][est][q]) for lay in layers if f(lay)],
                                                   [lay["geometry"][stat] for lay in layers if f(lay)], min_points=3)
                  for est, q, stat in items}
            for sub, f in (("controlled", lambda lay: lay["source"] == "controlled"),
                           ("trained", lambda lay: lay["source"] == "trained"))}}
        rule_t = (f"Spearman ρ over the {len(trained)} trained layers (every probe of NT and AT on clean and "
                  f"adversarial inputs) of {what} (mean over them) with its 95% interval above {RHO_NULL}")
        if len(trained) < MIN_TRAINED:
            primary[f"{name}_trained"] = verdict_lib.untestable(
                trained_reason or f"fewer than {MIN_TRAINED} trained layers (run with trained models)",
                unit="Spearman rho", rule=rule_t, seeds=1, null_value=RHO_NULL)
        else:
            primary[f"{name}_trained"] = _rho_record(
                [([r3(lay["mi"][est][q]) for lay in trained], [lay["geometry"][stat] for lay in trained])
                 for est, q, stat in items], idx_trained, rule_t)
    rule_r2 = ("on the trained probes, R² of KDE I(X;T) on [NT/AT, clean/adversarial, log spread, log(1 + "
               "separation)] minus R² on the indicators alone (mean over the bounds); holds when its 95% interval "
               "lies above 0")
    got = _delta_r2(layers, lambda n: verdict_lib.point_bootstrap(n, RESAMPLES, seed))
    primary = {"geometry_explains_trained": (
        verdict_lib.untestable(trained_reason or f"fewer than {MIN_TRAINED} trained layers (run with trained models)",
                               unit="R²", rule=rule_r2, seeds=1) if got is None else
        verdict_lib.record([got[0]], [got[1]], unit="R²", rule=rule_r2, bounds=(-1.0, 1.0), layers=got[2])),
        **primary}
    primary["estimators_trace_geometry"] = verdict_lib.all_of(
        primary, rule="on the trained layers only: geometry_explains_trained and the three trained-only ρ's hold "
                      "(the pooled and controlled-sweep verdicts are checks, not parts)")
    verdicts = {**primary, **verdicts}  # the finding's verdicts first, then the checks
    gaps = [lay["geometry"]["log2_occupied_bins"] - lay["mi"]["binning"]["I_XT"] for lay in layers]
    evidence["binning_bound"] = {"max_bits_above_log2_bins": float(-min(gaps)) if gaps else None,
                                 "note": "binning I(X;T) ≤ log2(occupied bins) always; a check, not a finding"}
    evidence["layers"] = len(layers)
    if trained_reason:
        evidence["warning"] = "trained probes left out: " + trained_reason
    return verdicts, evidence


def verdict_table(summary: dict[str, Any]) -> str:
    """The plain-text verdict table; checks are marked as such."""
    rows = [(name + (" (check)" if summary["verdicts"][name].get("role") == "check" else ""), ok, text)
            for name, ok, text in record_rows(summary["verdicts"])]
    return verdict_lines(rows, summary)


def _measure(config: Config, opts: Options, workdir, *, log=log_line, show_progress: bool = True) -> Measured:
    """The controlled layers, then every probe of NT and AT (trained here or loaded) on clean and
    adversarial inputs, each with its estimates and geometry; and the scale check."""
    key = jax.random.fold_in(jax.random.key(config.seed), 5)
    mi_cfg = config.mi
    layers: list[dict[str, Any]] = []
    cases = controlled_cases(key, points=opts.points, classes=opts.classes, width=opts.width,
                             within_std=opts.within_std, between_std=opts.between_std, steps=opts.steps)
    progress.enabled(show_progress)
    with progress.bar(len(cases), "controlled cases") as bar:
        for i, c in enumerate(cases):
            res = measure_layer(c["t"], c["labels"], opts.classes, mi_cfg.noise_var, mi_cfg.bin_size,
                                jax.random.fold_in(key, 100 + i), opts.pairs)
            layers.append({"source": "controlled", "sweep": c["sweep"], "value": c["value"], **res})
            bar.update(1)
    log(f"measured {len(cases)} controlled layers")

    models, draw_acc, num_classes = None, {}, opts.classes
    if opts.trained:
        models = trained_models(config, opts.from_run, log=log, show_progress=show_progress, workdir=workdir,
                                from_seed=opts.from_seed)
        config, module, trained = models.config, models.module, models.trained
        x_host, y, num_classes, _ = measurement_draw(config)
        passes = model_passes(module, config, len(y), x_host.shape[1:])
        x, y_dev = jnp.asarray(x_host), jnp.asarray(y)
        names = list(module.probe_names)
        for regime in REGIMES:
            params, stats = trained[regime]
            draw_acc[regime] = float(np.mean(np.asarray(passes.forward(params, stats, x, y_dev)["correct"])))
            sources = {"clean": x, "adv": passes.adversary(params, stats, x, y_dev)}
            for inputs in INPUTS:
                measured = {}
                for fn in passes.probes.values():  # one probe group's activations at a time
                    for name, a in fn(params, stats, sources[inputs], y_dev)["probes"].items():
                        j = names.index(name)
                        measured[name] = measure_layer(np.asarray(a), y, num_classes, mi_cfg.noise_var,
                                                       mi_cfg.bin_size, jax.random.fold_in(key, 1000 + j), opts.pairs)
                for name in names:
                    layers.append({"source": "trained", "mode": regime, "inputs": inputs, "probe": name,
                                   **measured[name]})
                log(f"[{regime.upper()}] measured the {inputs} probes")

    base = next(c for c in cases if c["sweep"] == "scale")
    results = {"draw_accuracy": draw_acc if opts.trained else None, "num_classes": num_classes,
               "noise_var": mi_cfg.noise_var,
               "bin_size": mi_cfg.bin_size, "layers_measured": layers,
               "scale_identity": scale_identity(base["t"], base["labels"], opts.classes, mi_cfg.noise_var)}
    return Measured(config_record(config), results, source=models and models.source, run=models and models.run)


def _decide(summary: dict[str, Any], opts: Options) -> tuple[dict[str, dict], dict[str, Any]]:
    """:func:`decide` on a summary: the trained probes of networks that did not learn are no evidence."""
    res = summary["results"]
    learn = None if not opts.trained else verdict_lib.did_not_learn(
        final_train_acc(summary) or res["draw_accuracy"], res["num_classes"])
    return decide([lay for lay in res["layers_measured"] if not (learn and lay["source"] == "trained")],
                  scale_check=res["scale_identity"], seed=summary["config"]["seed"], trained_reason=learn)


FINDING = Finding(name="finding4", title=TITLE, measure=_measure, decide=_decide, table=verdict_table,
                  figures=lambda summary, workdir, artifacts: plots.plot_estimator_geometry(summary, workdir),
                  presets=PRESETS, options=Options,
                  from_run_fields=("samples", "estimators", "data_dir"))


def run(config: Config, workdir: str | Path, *, options: dict[str, Any] | None = None, overwrite: bool = False,
        show_progress: bool = True, log=log_line) -> dict[str, Any]:
    """Runs finding 4 and writes ``summary.json`` and figures into ``workdir``
    (:func:`jaxmi.findings.runner.run`)."""
    return FINDING.run(config, workdir, options=options, overwrite=overwrite, show_progress=show_progress, log=log)
