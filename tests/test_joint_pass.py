"""The joint KDE pass (:mod:`jaxmi.estimators.joint_pass`): one distance pass for the estimate,
the σ² sweep and the scale-free sweep equals the separate passes and a float64 reference, and a
swept measurement stores the same numbers either way.

Tolerance (float32 rounding: summation order, block size, kernels as fourth powers): every
value in bits within ``TOL`` · max(1, |reference|), i.e. 1e-5 relative above one bit and
1e-5 bits below."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmi.estimators import estimate, joint_pass, sweep_kde_bounds
from jaxmi.estimators.bootstrap import resample_weights
from jaxmi.estimators.joint_pass import (
    class_blocks,
    joint_estimate,
    joint_kde,
    kernel_links,
)
from jaxmi.estimators.kde import kde_compute, kde_sweep
from jaxmi.estimators.scale_free import RELATIVE_GRID, scale_free_sweep
from jaxmi.estimators.validation import validate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

TOL = 1e-5
GRID = (0.1 * 4.0 ** np.arange(-3, 4)).tolist()  # 7 σ², ratio 4, through 0.1 (the sweep's kind of grid)
KDE = ("kde_upper", "kde_lower")


def _close(a, b, tol=TOL):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    bad = np.abs(a - b) > tol * np.maximum(1.0, np.abs(b))
    assert not bad.any(), f"{int(bad.sum())} values differ, largest by {np.max(np.abs(a - b)):.3g} bits"


def _clusters(n=160, d=8, seed=0, width=0.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n).astype(np.int32)
    return (rng.normal(0, 1, (5, d))[y] + width * rng.normal(0, 1, (n, d))).astype(np.float32), y


def _kde64(t, y, w, scale):
    """Both information terms (bits) of one resample w at exponent scale s, dense float64."""
    t = np.asarray(t, np.float64)
    d = np.sum((t[:, None, :] - t[None, :, :]) ** 2, axis=-1)
    k = np.exp(-d / scale)
    n = w.sum()
    total, same = k @ w, (k * (y[:, None] == y[None, :])) @ w
    counts = np.bincount(y, weights=w)
    h_y = np.sum(np.where(counts > 0, counts / n * np.log(np.maximum(counts, 1)), 0.0))
    on = w > 0
    i_xt = np.log(n) - np.sum(w[on] * np.log(total[on])) / n
    i_ty = np.log(n) - h_y - np.sum(w[on] * (np.log(total[on]) - np.log(same[on]))) / n
    return i_xt / math.log(2), i_ty / math.log(2)


def test_kernel_links_chain_fourth_powers_at_most_two_in_a_row():
    # A grid of ratio 4: kde_sums' chain (an exponential at every third scale from the top).
    assert kernel_links(4.0 ** np.arange(7)) == (-1, 2, 3, -1, 5, 6, -1)
    # Mixed sets: a scale follows 4s where present, never three powers in a row.
    assert kernel_links([1.0, 2.0, 4.0, 8.0, 16.0, 64.0]) == (-1, 3, 4, -1, 5, -1)
    assert kernel_links([1.0, 3.0, 5.0]) == (-1, -1, -1)
    assert kernel_links([1.0, 4.0], stride=1) == (-1, -1)


def test_class_blocks_sort_rows_by_class_and_split_pairs_by_a_shared_class():
    y = np.array([2, 0, 1, 0, 2, 2, 1, 0, 0, 1, 2])
    order, mixed, cross = class_blocks(y, 4, devices=4)  # sorted classes: 0 0 0 0 | 1 1 1 2 | 2 2 2 | pad
    assert order.shape == (12,) and sorted(order[:11].tolist()) == list(range(11))
    ys = y[order[:11]]
    assert np.all(np.diff(ys) >= 0) and order[:11].tolist() == np.argsort(y, kind="stable").tolist()
    blocks = [set(ys[k:k + 4].tolist()) for k in (0, 4, 8)]
    real = [tuple(p[:2]) for p in mixed if p[2]] + [tuple(p[:2]) for p in cross if p[2]]
    assert sorted(real) == [(i, j) for i in range(3) for j in range(i, 3)]  # every pair once
    for p in mixed[mixed[:, 2] == 1]:
        assert blocks[p[0]] & blocks[p[1]]
    for p in cross[cross[:, 2] == 1]:
        assert not blocks[p[0]] & blocks[p[1]]
    assert mixed.tolist() == [[0, 0, 1], [1, 1, 1], [1, 2, 1], [2, 2, 1]]
    assert cross.tolist() == [[0, 1, 1], [0, 2, 1], [0, 0, 0], [0, 0, 0]]  # padded to the 4 devices, not real


def test_joint_kde_equals_the_separate_passes_and_float64_with_bootstrap():
    a, y = _clusters()
    t, yy, c = validate(a, y, None, min_samples=2)
    w = resample_weights(len(y), 4, jax.random.key(3))
    grid = RELATIVE_GRID
    # Blocks of 24 rows: a padded last block, and block pairs with no class in common (no same-class products).
    assert len(class_blocks(y, 24)[2]) > 0
    r = joint_kde(t, yy, c, w, noise_var=0.1, sweep=GRID, scale_free=grid, block_size=24)
    est = kde_compute(t, yy, c, w, noise_var=0.1)
    for m in KDE:
        _close(r["estimate"][m][0], est[m][0])
        _close(r["estimate"][m][1], est[m][1])
        for k, v in est[m][2].items():
            assert r["estimate"][m][2][k] == pytest.approx(v, rel=1e-5)
    sw = kde_sweep(t, yy, c, GRID)
    sf = kde_sweep(t, yy, c, grid, noise_scale="relative", weights=w)
    for k in sw:
        _close(r["sweep"][k], sw[k])
        _close(r["scale_free"][k], sf[k])
    # Against a dense float64 reference: the estimate's resamples, a σ² of the sweep, a v of the scale-free grid.
    for q in range(w.shape[0]):
        ref = _kde64(a, y, w[q], 2 * 0.1)
        _close([r["estimate"]["kde_upper"][0][q], r["estimate"]["kde_upper"][1][q]], ref)
    sp = r["spread"]
    assert sp == pytest.approx(np.mean(np.sum((a - a.mean(0)) ** 2, axis=1)), rel=1e-5)
    _close([r["sweep"]["kde_lower_I_XT"][0], r["sweep"]["kde_lower_I_TY"][0]], _kde64(a, y, w[0], 8 * GRID[0]))
    _close([r["scale_free"]["kde_upper_I_XT"][8, 2], r["scale_free"]["kde_upper_I_TY"][8, 2]],
           _kde64(a, y, w[2], 2 * grid[8] * sp))


def test_joint_estimate_equals_estimate_sweep_and_scale_free_with_knn():
    """The public results: estimate() (with binning and the mixed kNN from their own passes),
    sweep_kde_bounds() and scale_free_sweep(), same resamples, same keys."""
    a, y = _clusters(seed=1)
    key, methods = jax.random.key(5), ("kde_upper", "binning", "kde_lower", "knn")
    opts = {"num_classes": 6, "noise_var": 0.25, "bootstrap": 4, "key": key}
    j = joint_estimate(a, y, methods=methods, sweep=GRID, scale_free=RELATIVE_GRID, **opts)
    ref = estimate(a, y, methods=methods, **opts)
    assert list(j["estimate"]) == list(methods)
    for m in methods:
        assert list(j["estimate"][m]) == list(ref[m])
        for k, v in ref[m].items():
            if isinstance(v, bool) or v is None:
                assert j["estimate"][m][k] == v, (m, k)
            else:
                _close(j["estimate"][m][k], v)
    sw = sweep_kde_bounds(a, y, GRID, num_classes=6)
    assert j["sweep"]["noise_var"] == sw["noise_var"]
    sf = scale_free_sweep(a, y, resample_weights(len(y), 4, key), num_classes=6)
    assert j["scale_free"]["spread"] == pytest.approx(sf["spread"], rel=1e-6)
    for m in KDE:
        for q in ("I_XT", "I_TY"):
            _close(j["sweep"][m][q], sw[m][q])
            _close(j["scale_free"][m][q], sf[m][q])
    with pytest.raises(ValueError, match=r"methods \['binning'\] hold neither 'kde_upper' nor 'kde_lower'"):
        joint_estimate(a, y, methods=("binning",), sweep=GRID)


def test_relative_sweep_and_estimate_read_the_spread_once():
    a, y = _clusters(seed=2)
    j = joint_estimate(a, y, methods=KDE, noise_var=0.05, noise_scale="relative", sweep=GRID, sweep_scale="relative")
    ref = estimate(a, y, methods=KDE, noise_var=0.05, noise_scale="relative")
    sw = sweep_kde_bounds(a, y, GRID, noise_scale="relative")
    for m in KDE:
        _close([j["estimate"][m]["I_XT"], j["estimate"][m]["I_TY"]], [ref[m]["I_XT"], ref[m]["I_TY"]])
        _close(j["sweep"][m]["I_XT"], sw[m]["I_XT"])
    _close(j["sweep"]["noise_var_absolute"], sw["noise_var_absolute"])
    t, yy, c = validate(a, y, None, min_samples=2)
    alone = joint_kde(t, yy, c, resample_weights(len(y), 3, None), sweep=GRID)  # the sweep alone: full sample
    for k, v in kde_sweep(t, yy, c, GRID).items():
        _close(alone["sweep"][k], v)
    with pytest.raises(ValueError, match="no product asked for"):
        joint_kde(t, yy, c, resample_weights(len(y), 0, None))


def test_lenet_probes_joint_equals_separate():
    """Real activations (the bundled MNIST test images through a randomly initialised LeNet):
    conv2's ReLU outputs."""
    from mi_measurement import lenet_probes

    probes, y = lenet_probes(160, 0)
    key = jax.random.key(1)
    w = resample_weights(160, 4, key)
    for p in ("conv2",):
        a = np.asarray(probes[p]).reshape(160, -1)
        j = joint_estimate(a, y, methods=KDE, num_classes=10, bootstrap=4, key=key, sweep=GRID,
                           scale_free=RELATIVE_GRID)
        ref = estimate(a, y, methods=KDE, num_classes=10, bootstrap=4, key=key)
        sw = sweep_kde_bounds(a, y, GRID, num_classes=10)
        sf = scale_free_sweep(a, y, w, num_classes=10)
        for m in KDE:
            for q in ("I_XT", "I_TY", "I_XT_resamples", "I_TY_resamples"):
                _close(j["estimate"][m][q], ref[m][q])
            for q in ("I_XT", "I_TY"):
                _close(j["sweep"][m][q], sw[m][q])
                _close(j["scale_free"][m][q], sf[m][q])


def test_a_product_whose_float32_rounding_is_too_coarse_is_redone_exactly_alone(monkeypatch):
    """Large norms with close neighbours: the estimate at σ² = 0.1 fails the rounding bound and
    is redone in float64 (matching the dense reference), while the scale-free sweep, whose
    scales follow the spread, keeps the float32 pass."""
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 300.0, (40, 3))
    a = np.repeat(centres, 2, axis=0) + rng.normal(0, 0.2, (80, 3))
    y = np.repeat(np.arange(40) % 4, 2).astype(np.int32)
    t, yy, c = validate(a.astype(np.float32), y, None, min_samples=2)
    w = resample_weights(80, 0, None)
    redone = []
    exact = joint_pass.kde_pass.kde_sums_float64
    monkeypatch.setattr(joint_pass.kde_pass, "kde_sums_float64", lambda *a: redone.append(list(a[3])) or exact(*a))
    r = joint_kde(t, yy, c, w, noise_var=0.1, scale_free=RELATIVE_GRID[-4:])
    assert redone == [[0.2, 0.8]]  # the estimate's scales alone
    ref = _kde64(np.asarray(t), y, w[0], 0.2)
    _close([r["estimate"]["kde_upper"][0][0], r["estimate"]["kde_upper"][1][0]], ref)
    est = kde_compute(t, yy, c, w, noise_var=0.1)
    _close(r["estimate"]["kde_lower"][1], est["kde_lower"][1])
    sf = kde_sweep(t, yy, c, RELATIVE_GRID[-4:], noise_scale="relative", weights=w)
    _close(r["scale_free"]["kde_upper_I_XT"], sf["kde_upper_I_XT"])


def _flat(x, path=""):
    """Every number of a nested result as {path: value}."""
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in _flat(val, f"{path}/{key}").items()}
    if isinstance(x, (list, tuple)):
        return {k: v for i, val in enumerate(x) for k, v in _flat(val, f"{path}/{i}").items()}
    return {path: x}


def test_a_swept_measurement_stores_the_same_numbers_with_the_joint_pass():
    """A finding-2-style measurement (both KDE bounds with bootstrap; σ² and scale-free sweeps;
    binning's routing beside the joint pass is tested above) of one LeNet on the same states, once
    with the joint pass and once with a pass per product: the same keys and layout, the same
    numbers up to float32 rounding."""
    from jaxmi import data as data_lib
    from jaxmi import parallel
    from jaxmi.config import make_config
    from jaxmi.measure import Measurer
    from jaxmi.plan import resolve
    from jaxmi.training import create_train_states, make_optimizer

    config = make_config("smoke", samples=64, eval_samples=64, bootstrap=3, noise_control=False,
                         estimators=KDE, sweep_noise_vars=(0.025, 0.1, 0.4))
    plan = resolve(config, log=lambda _: None)
    x_train, y_train = data_lib.as_device_arrays(plan.train, parallel.replicated(plan.execution.mesh))
    measurer = Measurer(plan, x_train, y_train)
    states = create_train_states(plan.module, plan.init_keys, plan.input_shape,
                                 make_optimizer(config.optim, plan.steps_per_epoch))
    params, batch_stats = jax.tree.map(lambda v: v[0], (states.params, states.batch_stats))
    x_adv = jnp.clip(measurer.x_mi_float + 0.05, 0.0, 1.0)
    assert 0 in plan.mi.sweep_epochs
    joint = measurer._information(params, batch_stats, x_adv, True)
    measurer.joint = False
    separate = measurer._information(params, batch_stats, x_adv, True)
    fj, fs = _flat(joint), _flat(separate)
    assert list(fj) == list(fs)
    assert any("/scale_free/kde_upper/I_XT_resamples/" in k for k in fj) and any("/sweep" not in k for k in fj)
    for k, v in fs.items():
        if isinstance(v, (bool, str)) or v is None:
            assert fj[k] == v, k
        else:
            assert abs(fj[k] - v) <= TOL * max(1.0, abs(v)), (k, fj[k], v)


_DEVICES_SCRIPT = r'''
import jax, numpy as np
from jaxmi.estimators.bootstrap import resample_weights
from jaxmi.estimators.joint_pass import joint_kde
from jaxmi.estimators.kde import kde_compute
from jaxmi.estimators.validation import validate
assert len(jax.devices()) == 2
rng = np.random.default_rng(0)
y = rng.integers(0, 4, 90).astype(np.int32)
a = (rng.normal(0, 1, (4, 5))[y] + 0.5 * rng.normal(0, 1, (90, 5))).astype(np.float32)
t, yy, c = validate(a, y, None, min_samples=2)
w = resample_weights(90, 3, jax.random.key(2))
kw = {"noise_var": 0.1, "sweep": [0.025, 0.1, 0.4], "scale_free": [0.25, 0.5, 1.0], "block_size": 16}
one = joint_kde(t, yy, c, w, devices=jax.devices()[:1], **kw)
for rows in ("replicated", "sharded"):  # block pairs split over the devices; rows sharded: a pass per product
    two = joint_kde(t, yy, c, w, rows=rows, **kw)
    worst = max(float(np.max(np.abs(np.asarray(two[p][m][q]) - np.asarray(one[p][m][q]))))
                for p in ("estimate",) for m in one[p] for q in (0, 1))
    worst = max([worst] + [float(np.max(np.abs(np.asarray(two[p][k]) - np.asarray(one[p][k]))))
                           for p in ("sweep", "scale_free") for k in one[p]])
    assert worst < 1e-5, (rows, worst)
# The registry's pass (rows in class order, same-class products skipped): pairs split, rows sharded.
ref = kde_compute(t, yy, c, w, noise_var=0.1, devices=jax.devices()[:1], block_size=16)
for rows in ("replicated", "sharded"):
    got = kde_compute(t, yy, c, w, noise_var=0.1, rows=rows, block_size=16)
    worst = max(float(np.max(np.abs(np.asarray(got[m][q]) - np.asarray(ref[m][q])))) for m in ref for q in (0, 1))
    assert worst < 1e-5, ("kde_compute", rows, worst)
print("OK")
'''


def test_two_devices_give_the_one_device_results():
    """With two forced CPU devices: the block pairs split over them, and the sharded-rows layout
    (which computes each product by its own pass), equal one device, for the joint pass and for
    the registry's (:func:`jaxmi.estimators.kde.kde_compute`) (a subprocess: XLA_FLAGS
    must be set before JAX starts)."""
    import os
    import subprocess

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _DEVICES_SCRIPT], capture_output=True, text=True, timeout=600, check=False,
                          cwd=Path(__file__).resolve().parents[1], env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-2000:] + proc.stderr[-4000:]
