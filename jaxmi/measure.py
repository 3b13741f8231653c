"""One measurement of a run: test metrics and MI of every seed's model, from a plan.

A :class:`Measurer` is built once per run from its :class:`~jaxmi.plan.RunPlan` (the compiled
passes, the test draw on the device, the estimator options) and called after every epoch
(and at epoch 0). Memory stays bounded by one probe layer: the metrics and the PGD examples
of the MI draw come from one batched pass, then the probes are computed a group at a time
(:attr:`jaxmi.plan.MIPlan.groups`), for one model and one kind of inputs at a time,
estimated and released. :func:`robust_evaluation` is a run's final evaluation of each model
under the AutoAttack-style ensemble.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import estimators, parallel
from jaxmi import data as data_lib
from jaxmi.data import to_float
from jaxmi.estimators.bootstrap import resample_weights
from jaxmi.estimators.joint_pass import joint_estimate
from jaxmi.estimators.scale_free import RELATIVE_GRID, scale_free_sweep, temperature_curve
from jaxmi.evaluation import evaluator_core, forward_core, robust_report_core
from jaxmi.history import INPUTS
from jaxmi.plan import RunPlan

__all__ = ["Measurer", "robust_evaluation"]


def _mi_lists(per_probe: dict[str, dict[str, dict[str, float]]], methods) -> dict[str, dict[str, list[float]]]:
    """``{probe: {method: {key: v}}}`` → ``{method: {key: [v per probe]}}``."""
    first = next(iter(per_probe.values()))
    return {m: {k: [per_probe[p][m][k] for p in per_probe] for k in first[m]} for m in methods}


class Measurer:
    """``measurer(regime, states, train_means, epoch) -> [(metrics, mi, sweep)]`` per seed.

    At a swept measurement the KDE bounds of a probe's estimate, σ² sweep and scale-free sweep
    come from one distance pass (:func:`jaxmi.estimators.joint_pass.joint_estimate`; ``joint =
    False``: a pass each, the same values up to float32 rounding)."""

    joint: bool = True

    def __init__(self, plan: RunPlan, x_train: jax.Array, y_train: jax.Array):
        self.plan = plan
        exe, mi = plan.execution, plan.mi
        x_test, y_test = data_lib.as_device_arrays(plan.test, parallel.replicated(exe.mesh))
        self.x_mi, self.y_mi = x_test[plan.draws.mi], y_test[plan.draws.mi]
        self.y_mi_host = np.asarray(self.y_mi)
        self.rest = (x_test[plan.draws.rest], y_test[plan.draws.rest]) if len(plan.draws.rest) else None
        samples = plan.config.mi.samples
        self.train0 = (x_train[:samples], y_train[:samples])
        self.n_eval = len(plan.draws.mi) + len(plan.draws.rest)
        # the plan checked the model and the attack and decided the loops: the unchecked builders
        batching, one = exe.batching(), exe.batching(stacked=False)
        self.evaluate_mi = evaluator_core(plan.module, plan.attack_eval, with_probes=False, with_adversarial=True,
                                          unroll=exe.attack_unroll, batching=batching)
        self.evaluate = evaluator_core(plan.module, plan.attack_eval, with_probes=False, with_adversarial=False,
                                       unroll=exe.attack_unroll, batching=batching)
        self.forward = {g: forward_core(plan.module, with_probes=g, with_probs=False, batching=one)
                        for g in mi.groups}

    def _sweep(self, probe: str, a, kde: dict | None = None) -> dict[str, dict[str, list]]:
        """``{estimator: {quantity: [value]}}`` of one probe over the σ² and bin-size grids
        (``kde``: the KDE bounds' sweep, already computed)."""
        mi, grid, c = self.plan.mi, self.plan.mi.sweep_grid, self.plan.num_classes
        out: dict[str, dict[str, list]] = {}
        if any(m != "binning" for m in grid["estimators"]):
            res = kde or estimators.sweep_kde_bounds(a, self.y_mi_host, grid["noise_var"], num_classes=c,
                                                     noise_scale=grid["noise_scale"],
                                                     precision=self.plan.execution.kde_precision,
                                                     block_size=mi.sweep_blocks[probe])
            out.update({m: res[m] for m in grid["estimators"] if m != "binning"})
        if "binning" in grid["estimators"]:
            res = estimators.sweep_bins(a, self.y_mi_host, grid["bin_size"], num_classes=c)
            out["binning"] = {q: res[q] for q in ("I_XT", "I_TY")}
        return out

    def _scale_free(self, a, r: dict | None = None) -> dict[str, Any]:
        """One probe's scale-free sweep (:mod:`jaxmi.estimators.scale_free`) on the clean inputs, with
        the run's bootstrap resamples (the same as the main estimates', so NT − AT is paired);
        ``r``: the sweep, already computed."""
        opts = self.plan.mi.options
        if r is None:
            w = resample_weights(len(self.y_mi_host), opts.get("bootstrap", 0), opts.get("key"))
            r = scale_free_sweep(a, self.y_mi_host, w, num_classes=self.plan.num_classes,
                                 precision=self.plan.execution.kde_precision)
        out: dict[str, Any] = {"spread": r["spread"], "noise_var": r["noise_var"].tolist()}
        for m in ("kde_upper", "kde_lower"):
            out[m] = {q: r[m][q][:, 0].tolist() for q in ("I_XT", "I_TY")}
            out[m]["I_XT_resamples"] = np.round(r[m]["I_XT"][:, 1:], 5).tolist()
        return out

    def _information(self, params, batch_stats, x_adv, swept: bool):
        """One model's estimates (and sweeps) on clean and adversarial inputs, a probe group at a time;
        a swept measurement adds the scale-free sweep of every probe (at the first measurement too,
        so that its programs are compiled once, before the epochs, like the σ² sweep's; the
        history keeps the last one)."""
        mi = self.plan.mi
        res: dict[str, dict[str, Any]] = {i: {} for i in mi.inputs}
        sweeps: dict[str, dict[str, Any]] = {i: {} for i in INPUTS}
        scale_free: dict[str, Any] = {}
        sources = {"clean": self.x_mi_float, "adv": x_adv, "noise": self.x_mi_noise,
                   "unrelated": self.x_mi_unrelated}
        for group, forward in self.forward.items():
            for inputs in mi.inputs:
                probes = forward(params, batch_stats, sources[inputs], self.y_mi)["probes"]
                for p in group:
                    a = probes[p].reshape(probes[p].shape[0], -1)
                    joint = self._joint(p, a, inputs) if swept and inputs in INPUTS and self._joint_on else None
                    res[inputs][p] = joint["estimate"] if joint else estimators.estimate(
                        a, self.y_mi_host, block_size=mi.blocks[p], **mi.options)
                    if swept and inputs in INPUTS:
                        sweeps[inputs][p] = self._sweep(p, a, joint and joint["sweep"])
                    if swept and inputs == "clean" and self._scale_free_on:
                        scale_free[p] = self._scale_free(a, joint and joint["scale_free"])
                        if p == self.plan.layers[-1] and a.shape[1] == self.plan.num_classes:  # the logits
                            scale_free["temperature"] = temperature_curve(
                                a, self.y_mi_host, mi.options["noise_var"], num_classes=self.plan.num_classes,
                                precision=self.plan.execution.kde_precision)
                del probes
        layers = self.plan.layers
        out = {i: _mi_lists({p: res[i][p] for p in layers}, mi.estimators) for i in mi.inputs}
        if not swept:
            return out, None
        sweep = {i: {m: {q: [sweeps[i][p][m][q] for p in layers] for q in ("I_XT", "I_TY")}
                     for m in mi.sweep_grid["estimators"]} for i in INPUTS}
        if scale_free:
            sweep["scale_free"] = {"noise_var": scale_free[layers[0]]["noise_var"],
                                   "spread": [scale_free[p]["spread"] for p in layers],
                                   **{m: {k: [scale_free[p][m][k] for p in layers] for k in scale_free[layers[0]][m]}
                                      for m in ("kde_upper", "kde_lower")}}
            if "temperature" in scale_free:
                sweep["scale_free"]["temperature"] = scale_free["temperature"]
        return out, sweep

    def _joint(self, probe: str, a, inputs: str) -> dict[str, Any]:
        """The estimate, σ² sweep and (clean inputs) scale-free sweep of one probe from one KDE
        distance pass, with the plan's block size for it."""
        mi = self.plan.mi
        sf = RELATIVE_GRID if inputs == "clean" else None
        return joint_estimate(a, self.y_mi_host, block_size=mi.blocks[probe], sweep=mi.sweep_grid["noise_var"],
                              sweep_scale=mi.sweep_grid["noise_scale"], scale_free=sf,
                              joint_block_size=mi.joint_blocks[(probe, sf is not None)], **mi.options)

    @property
    def _joint_on(self) -> bool:
        """The joint pass serves swept measurements when a KDE bound is measured (``joint``)."""
        return self.joint and self._scale_free_on

    @property
    def _scale_free_on(self) -> bool:
        """The scale-free sweep runs with the σ² sweep when a KDE bound is measured."""
        return any(m in ("kde_upper", "kde_lower") for m in self.plan.mi.estimators)

    @functools.cached_property
    def x_mi_float(self):
        return to_float(self.x_mi)

    @functools.cached_property
    def x_mi_noise(self):
        """The control inputs: the MI draw plus random-sign noise of the attack's ε (an L∞
        perturbation as large as the adversarial one, in no particular direction), clipped to
        [0, 1]; one fixed draw of signs for the whole run."""
        x = self.x_mi_float
        signs = jax.random.rademacher(jax.random.fold_in(self.plan.draw_key, 3), x.shape, dtype=x.dtype)
        return jnp.clip(x + self.plan.attack_eval.eps * signs, 0.0, 1.0)

    @functools.cached_property
    def x_mi_unrelated(self):
        """The unrelated-input control: uniform-noise images U[0, 1] of the MI draw's shape,
        unrelated to the data and the labels; one fixed draw for the whole run (finding 1
        compares how the clean curves move with how these move)."""
        x = self.x_mi_float
        return jax.random.uniform(jax.random.fold_in(self.plan.draw_key, 4), x.shape, dtype=x.dtype)

    def __call__(self, regime: str, states, train_means: list[dict[str, float]] | None, epoch: int
                 ) -> list[tuple[dict, dict, dict | None]]:
        """``[(metrics, mi, sweep)]`` per seed, ready for :meth:`jaxmi.history.History.record`."""
        r = self.evaluate_mi(states.params, states.batch_stats, self.x_mi, self.y_mi)
        x_adv = r.pop("adv_inputs")
        parts = [r] + ([self.evaluate(states.params, states.batch_stats, *self.rest)] if self.rest else [])
        host = [jax.device_get(p) for p in parts]
        cat = {k: np.concatenate([p[k] for p in host], axis=1) for k in host[0]}  # [K, N]
        if train_means is None:  # epoch 0: evaluate the initial weights on training images
            t = jax.device_get(self.evaluate(states.params, states.batch_stats, *self.train0))
            key = "clean" if regime == "nt" else "adv"
            train_means = [{"accuracy": float(c.mean()), "loss": float(loss.mean())}
                           for c, loss in zip(t[f"{key}_correct"], t[f"{key}_loss"])]
        out = []
        for k, tm in enumerate(train_means):
            metrics = {"train_acc": tm["accuracy"], "train_loss": tm["loss"]}
            for inputs in INPUTS:
                metrics[f"test_{inputs}_acc"] = float(cat[f"{inputs}_correct"][k].mean())
                metrics[f"test_{inputs}_loss"] = float(cat[f"{inputs}_loss"][k].mean())
            params, batch_stats = jax.tree.map(lambda a, k=k: a[k], (states.params, states.batch_stats))
            mi, sweep = self._information(params, batch_stats, x_adv[k], epoch in self.plan.mi.sweep_epochs)
            out.append((metrics, mi, sweep))
        return out


def robust_evaluation(plan: RunPlan, regime: str, states, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every seed's final model under the AutoAttack-style ensemble (:func:`jaxmi.evaluation.robust_report`),
    on the first ``robust_samples`` images of the evaluation draw (the same images for every seed)."""
    t0 = time.perf_counter()
    idx = plan.draws.robust
    x, y = to_float(jnp.asarray(plan.test.images[idx])), jnp.asarray(plan.test.labels[idx], jnp.int32)
    config = plan.config
    reports = []
    host = jax.device_get(states)
    for k in range(config.seeds):
        st = jax.tree.map(lambda a: a[k], host)
        r = robust_report_core(plan.module, st.params, st.batch_stats, x, y, attack=plan.attack_eval,
                               key=jax.random.fold_in(jax.random.fold_in(plan.draw_key, 2), k),
                               steps=config.attack.apgd_steps, n_targets=None, unroll=plan.execution.attack_unroll)
        reports.append(r)
        who = f"[{regime.upper()}]" + ("" if config.seeds == 1 else f" seed {config.seed + k}")
        log(f"{who} robust accuracy on {r['samples']} test images at eps {r['eps']:.4g}: clean {r['clean_acc']:.4f}, "
            f"PGD-{r['pgd_paper_steps']} {r['pgd_paper_acc']:.4f}, AutoAttack-style ensemble {r['robust_acc']:.4f} "
            f"(APGD-CE alone {r['attack_acc']['apgd-ce']:.4f}; {time.perf_counter() - t0:.1f} s)")
        for m in r["messages"]:
            log(f"warning: {m}")
    return reports
