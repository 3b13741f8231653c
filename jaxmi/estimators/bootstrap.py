"""Bootstrap resamples as point multiplicities, and the error-bar summary.

A bootstrap resample draws N of the N points with replacement. It is represented by its
multiplicity vector w ∈ ℕᴺ (how often each point was drawn; Σ_i w_i = N), so every
estimator sees the full sample plus R resamples as one weight matrix [1 + R, N] and can
serve them all from one pass over the data: a KDE row sum on a resample is Σ_j w_j K_ij and
the mean over rows is weighted by w_i; binning uses weighted symbol counts.

Reference: Efron & Tibshirani (1993), *An Introduction to the Bootstrap*, ch. 6 and 13
(standard error and percentile interval).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["bootstrap_weights", "unit_weights", "resample_weights", "summarize"]


def bootstrap_weights(key, n: int, resamples: int) -> np.ndarray:
    """Multiplicities of ``resamples`` bootstrap resamples of n points.

    Row r is how often each point is drawn when n points are drawn uniformly with
    replacement, a multinomial(n; 1/n, …, 1/n) vector.

    Args:
      key: a typed or raw JAX PRNG key.
      n: number of points N.
      resamples: number of resamples R.

    Returns:
      [R, N] float32 array of whole numbers; every row sums to N.
    """
    idx = jax.random.randint(key, (int(resamples), int(n)), 0, int(n))
    return np.asarray(jax.vmap(lambda i: jnp.bincount(i, length=int(n)))(idx), np.float32)


def unit_weights(n: int) -> np.ndarray:
    """The full sample as a single "resample": [1, N] float32 ones."""
    return np.ones((1, n), np.float32)


def resample_weights(n: int, bootstrap: int, key) -> np.ndarray:
    """The point multiplicities of one estimation call.

    Args:
      n: number of points N.
      bootstrap: number of resamples R (0: none; checked by
        :func:`jaxmi.estimators.validation.check_bootstrap`).
      key: JAX key of the resampling (None: ``jax.random.key(0)``).

    Returns:
      [1 + R, N] float32: row 0 the full sample (ones), then R bootstrap resamples.
    """
    weights = unit_weights(n)
    if bootstrap:
        key = jax.random.key(0) if key is None else key
        weights = np.concatenate([weights, bootstrap_weights(key, n, int(bootstrap))])
    return weights


def summarize(i_xt: np.ndarray, i_ty: np.ndarray, resamples: int, confidence: float) -> dict[str, float]:
    """The point estimate and, with resamples, its standard error and percentile interval.

    For the resample values v_1..v_R of a quantity q ∈ {I_XT, I_TY}: ``q_se`` is their
    standard deviation (ddof 1) and [``q_lo``, ``q_hi``] the central ``confidence``
    percentile interval, [100·(1 − c)/2, 100·(1 + c)/2].

    Args:
      i_xt, i_ty: [1 + R] values in bits: the full sample, then the resamples.
      resamples: R (0: point estimate only).
      confidence: coverage c of the percentile interval.

    Returns:
      ``{"I_XT": float, "I_TY": float}`` plus, with R > 0, ``"I_XT_se"``, ``"I_XT_lo"``,
      ``"I_XT_hi"``, ``"I_XT_resamples"`` (the R resample values, so that differences and
      correlations of estimates that share the resamples get their own intervals) and the
      same for ``"I_TY"``.
    """
    out = {"I_XT": float(i_xt[0]), "I_TY": float(i_ty[0])}
    if resamples:
        q = (100.0 * (1.0 - confidence) / 2.0, 100.0 * (1.0 + confidence) / 2.0)
        for k, v in (("I_XT", np.asarray(i_xt[1:], np.float64)), ("I_TY", np.asarray(i_ty[1:], np.float64))):
            lo, hi = np.percentile(v, q)
            out[f"{k}_se"] = float(np.std(v, ddof=1))
            out[f"{k}_lo"] = float(lo)
            out[f"{k}_hi"] = float(hi)
            out[f"{k}_resamples"] = [float(x) for x in v]
    return out
