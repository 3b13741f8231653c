"""A straightforward NumPy baseline of the three MI estimators, for benchmarking only.

Written the way the paper's published code computes them (Saxe et al.'s ``kde.py`` and
``simplebinmi.py``, which Zhang et al. 2022 build on): float32 activations, the full N × N
squared-distance matrix from ``x² + x²ᵀ − 2xxᵀ`` computed afresh by every entropy call (so
once per bound for the whole layer and once per bound for every class), ``logsumexp`` over
rows, and binning through ``np.unique(..., axis=0)`` for the layer and again for every
class. No blocking, no sharing between bounds, no reuse between classes.

All results are in bits, in the same layout as :func:`jaxmi.estimators.estimate` on a mapping of probes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.special import logsumexp

METHODS = ("kde_upper", "kde_lower", "binning")
NATS2BITS = 1.0 / np.log(2.0)


def get_dists(x):
    """Full matrix of squared pairwise distances, x² + x²ᵀ − 2xxᵀ (as in kde.py)."""
    x2 = np.expand_dims(np.sum(np.square(x), axis=1), 1)
    return x2 + x2.T - 2 * x.dot(x.T)


def entropy_estimator_kl(x, var):
    """Kolchinsky & Tracey pairwise-KL upper bound on the entropy of the mixture, in nats."""
    n, dims = float(x.shape[0]), float(x.shape[1])
    dists = get_dists(x)
    dists2 = dists / (2 * var)
    normconst = (dims / 2.0) * np.log(2 * np.pi * var)
    lprobs = logsumexp(-dists2, axis=1) - np.log(n) - normconst
    return dims / 2 + (-np.mean(lprobs))


def entropy_estimator_bd(x, var):
    """Bhattacharyya lower bound: the KL bound at 4σ² (exponent D / 8σ²), corrected."""
    dims = float(x.shape[1])
    return entropy_estimator_kl(x, 4 * var) + np.log(0.25) * dims / 2


def kde_condentropy(x, var):
    """H(T | X) of the Gaussian noise, in nats."""
    dims = x.shape[1]
    return (dims / 2.0) * (np.log(2 * np.pi * var) + 1)


def _label_index(labels):
    labels = np.asarray(labels)
    classes = np.unique(labels)
    labelixs = {c: labels == c for c in classes}
    labelprobs = {c: float(np.mean(ix)) for c, ix in labelixs.items()}
    return labelixs, labelprobs


def kde_mi_layer(activity, labels, noise_variance=0.1):
    """{"kde_upper": (I_XT, I_TY), "kde_lower": (I_XT, I_TY)} in bits for one layer."""
    activity = np.asarray(activity, np.float32)
    labelixs, labelprobs = _label_index(labels)
    h_given_x = kde_condentropy(activity, noise_variance)
    out = {}
    for name, entropy_func in (("kde_upper", entropy_estimator_kl), ("kde_lower", entropy_estimator_bd)):
        h_given_y = 0.0
        for c, ixs in labelixs.items():
            h_given_y += labelprobs[c] * entropy_func(activity[ixs, :], noise_variance)
        h = entropy_func(activity, noise_variance)
        out[name] = (NATS2BITS * (h - h_given_x), NATS2BITS * (h - h_given_y))
    return out


def get_unique_probs(x):
    _, counts = np.unique(x, axis=0, return_counts=True)
    return counts / float(np.sum(counts))


def bin_calc_information(activity, labels, binsize=0.5):
    """(I_XT, I_TY) in bits by binning every coordinate with width ``binsize``."""
    activity = np.asarray(activity, np.float32)
    labelixs, labelprobs = _label_index(labels)

    def get_h(d):
        digitized = np.floor(d / binsize).astype(np.int64)
        p_ts = get_unique_probs(digitized)
        return -np.sum(p_ts * np.log(p_ts))

    h_layer = get_h(activity)
    h_layer_given_y = 0.0
    for c, ixs in labelixs.items():
        h_layer_given_y += labelprobs[c] * get_h(activity[ixs, :])
    return NATS2BITS * h_layer, NATS2BITS * (h_layer - h_layer_given_y)


def baseline_measure(probes: Mapping[str, np.ndarray], labels, *, methods: Sequence[str] = METHODS,
                     noise_var: float = 0.1, bin_size: float = 0.5) -> dict[str, dict[str, dict[str, float]]]:
    """All requested estimators on every probe: ``{probe: {method: {"I_XT": float, "I_TY": float}}}``.

    Probes in the order of ``probes``, methods in the order of ``methods``, as
    :func:`jaxmi.estimators.estimate` returns them for a mapping.
    """
    methods = tuple(methods)
    out = {}
    for name, act in probes.items():
        act = np.asarray(act, np.float32).reshape(len(act), -1)
        res = {}
        if "kde_upper" in methods or "kde_lower" in methods:
            kde = kde_mi_layer(act, labels, noise_var)
            res.update({m: {"I_XT": float(v[0]), "I_TY": float(v[1])} for m, v in kde.items()})
        if "binning" in methods:
            i_xt, i_ty = bin_calc_information(act, labels, bin_size)
            res["binning"] = {"I_XT": float(i_xt), "I_TY": float(i_ty)}
        out[name] = {m: res[m] for m in methods}
    return out
