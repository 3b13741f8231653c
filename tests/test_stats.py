"""Ranks and correlations against SciPy; mean ± sd against NumPy."""

import numpy as np
import pytest
from scipy import stats as sps

from jaxmi.stats import mean_sd, numbers_mean_sd, pearson, rank, spearman


def test_spearman_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=30), rng.normal(size=30)
    b[:5] = b[5]
    assert spearman(a, b) == pytest.approx(sps.spearmanr(a, b)[0], abs=1e-12)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2], [2, 1], min_points=3) is None and spearman([1, 2], [2, 1]) == pytest.approx(-1.0)
    a[3] = np.nan  # pairs with a non-finite side are left out
    keep = np.isfinite(a)
    assert spearman(a, b) == pytest.approx(sps.spearmanr(a[keep], b[keep])[0], abs=1e-12)


def test_rank_and_pearson_match_scipy():
    x = np.array([3.0, 1.0, 2.0, 2.0, 5.0, 1.0])
    np.testing.assert_allclose(rank(x), sps.rankdata(x) - 1)
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=20), rng.normal(size=20)
    assert pearson(a, b) == pytest.approx(sps.pearsonr(a, b)[0], abs=1e-12)
    assert pearson([1.0, 1.0], [1.0, 2.0]) is None


def test_mean_sd_and_nested_numbers():
    vals = [[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]]
    m, sd = mean_sd(vals)
    np.testing.assert_allclose(m, np.mean(vals, 0))
    np.testing.assert_allclose(sd, np.std(vals, 0, ddof=1))
    assert mean_sd([[1.0, 2.0]])[1] == [0.0, 0.0]
    out = numbers_mean_sd([{"a": 1.0, "b": "x", "c": {"d": 2}}, {"a": 3.0, "b": "y", "c": {"d": 4}}])
    assert out == {"a": {"mean": 2.0, "sd": pytest.approx(np.sqrt(2)), "values": [1.0, 3.0]},
                   "c": {"d": {"mean": 3.0, "sd": pytest.approx(np.sqrt(2)), "values": [2.0, 4.0]}}}
    assert numbers_mean_sd([True, False]) is None
