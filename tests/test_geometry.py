"""Geometry statistics of a layer against brute-force references; the controlled sweeps."""

import jax
import numpy as np
import pytest

from jaxmi.findings import finding4
from jaxmi.geometry import SWEEPS, controlled_cases, geometry


def test_geometry_against_brute_force():
    rng = np.random.default_rng(2)
    y = np.arange(60) % 3
    t = rng.normal(size=(60, 5)) + 2.0 * y[:, None]
    g = geometry(t, y, noise_var=0.1, bin_size=0.5, pairs=200_000)
    d = ((t[:, None] - t[None]) ** 2).sum(-1)
    off = ~np.eye(60, dtype=bool)
    same = (y[:, None] == y[None]) & off
    diff = y[:, None] != y[None]
    assert g["mean_within_sq_dist"] == pytest.approx(d[same].mean())
    assert g["mean_between_sq_dist"] == pytest.approx(d[diff].mean())
    assert g["mean_sq_dist"] == pytest.approx(d[off].mean())
    assert g["median_sq_dist"] == pytest.approx(np.median(d[off]))  # all 1770 pairs ≤ `pairs`: exact
    sampled = geometry(t, y, pairs=1000)  # a seeded sample: reproducible, close to the exact median
    assert sampled["median_sq_dist"] == geometry(t, y, pairs=1000)["median_sq_dist"]
    assert sampled["median_sq_dist"] == pytest.approx(np.median(d[off]), rel=0.1)
    assert g["occupied_bins"] == len({tuple(r) for r in np.floor(t / 0.5)})
    assert g["separation_kde_upper"] == pytest.approx(d[diff].mean() / (d[same].mean() + 0.2))
    assert g["spread_kde_lower"] == pytest.approx(g["median_sq_dist"] / 0.8)


def test_controlled_scale_sweep_is_monotone():
    cases = controlled_cases(jax.random.key(0), points=120, steps=4)
    assert [c["sweep"] for c in cases] == [s for s in SWEEPS for _ in range(4)]
    scale = [c for c in cases if c["sweep"] == "scale"]
    np.testing.assert_allclose(scale[1]["t"] / scale[0]["t"], scale[1]["value"] / scale[0]["value"], rtol=1e-4)
    res = [finding4.measure_layer(c["t"], c["labels"], 10, 0.1, 0.5, jax.random.key(1), 2000) for c in scale]
    ixt = [r["mi"]["kde_upper"]["I_XT"] for r in res]
    assert all(x2 >= x1 - 1e-4 for x1, x2 in zip(ixt, ixt[1:])) and ixt[-1] > ixt[0] + 1
