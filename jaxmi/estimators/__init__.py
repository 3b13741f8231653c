"""Mutual-information estimators for deterministic networks, in bits.

Estimators from the information-plane literature, for a deterministic layer T = f(X)
and class labels Y. The first three are the ones Zhang et al. (2022), arXiv:2207.05756, use
(:data:`METHODS`):

* ``"kde_upper"``: Kolchinsky & Tracey's pairwise-KL upper bound on the entropy of a
  Gaussian mixture with one component N(t_i, σ²I) per sample (Kolchinsky, Tracey & Wolpert
  2017; Saxe et al. 2018).
* ``"kde_lower"``: the Bhattacharyya lower bound: the same expression with 8σ² in place of
  2σ² in the exponent.
* ``"binning"``: every coordinate discretised as ``floor(t / bin_size)``; a sample's whole
  integer vector is one symbol; entropies from symbol frequencies.
* ``"renyi"``: the matrix-based Rényi α-entropy functional (Giraldo, Rao & Príncipe 2014),
  as used for DNN information planes by Yu et al. (2019) and Wickstrøm et al. (2019); see
  :func:`renyi_mi`. Not in :data:`METHODS`: ask for it by name.
* ``"knn"``: Ross's (2014) mixed continuous–discrete k-nearest-neighbour estimator of I(T;Y)
  (:mod:`~jaxmi.estimators.knn_mixed`, :func:`mixed_knn_mi`). It gives I(T;Y) only: I(X;T) is
  not defined for it, and every public result holds ``None`` there. Not in :data:`METHODS`.

KDE, with D_ij = ‖t_i − t_j‖² and s the exponent scale (2σ² for the upper, 8σ² for the
lower bound)::

    I(X;T) = ln N − (1/N) Σ_i ln Σ_j exp(−D_ij / s)
    I(T;Y) = Ĥ(T) − Σ_c p_c Ĥ(T | Y=c)
           = ln N − Σ_c p_c ln N_c − (1/N) Σ_i [ln Σ_j exp(−D_ij/s) − ln Σ_{j: y_j = y_i} exp(−D_ij/s)]

(the second line follows because p_c / N_c = 1/N; the Gaussian normalising constants and
H(T|X) cancel). Binning, with n_g samples per symbol g and n_cg per (class, symbol)::

    I(X;T) = H(T) = ln N − (1/N) Σ_g n_g ln n_g
    I(T;Y) = H(T) − H(T|Y),   H(T|Y) = (1/N) [Σ_c N_c ln N_c − Σ_(c,g) n_cg ln n_cg]

Results are converted from nats to bits.

Implementation (one module per concern):

* :mod:`~jaxmi.estimators.kde`: one Gram pass per layer serves both KDE bounds and every
  class term. The N × N matrix is never held: rows are processed in blocks of B
  (:func:`choose_block_size`, from the free memory), only blocks on and above the diagonal
  are computed, and each block adds to the row sums of its row block and, transposed, of its
  column block; memory O(N·B + B²). Every row sum contains its own diagonal term exp(0) = 1,
  so sums lie in [1, N] and need no log-sum-exp shift. Class sums come from one product of
  the kernel block with the one-hot labels. With several local devices the block pairs are
  split across a ``"data"`` mesh (:func:`jax.shard_map`, ``psum``). float32, with a rounding
  bound that sends a layer to an exact float64 host pass when needed.
* :mod:`~jaxmi.estimators.binning`: rows hashed to 64-bit fingerprints, sorted and grouped
  in a compiled program; equal fingerprints are compared element by element, so a collision
  is detected (exact ``np.unique`` fallback) rather than merging two symbols.
* :mod:`~jaxmi.estimators.renyi`: float64 Gram matrices and eigendecompositions on the host.
* :mod:`~jaxmi.estimators.bootstrap`: a resample is a vector of multiplicities w, so a KDE
  row sum on it is Σ_j w_j K_ij and binning uses weighted counts: all R resamples come from
  the same single pass as the point estimate.
* :mod:`~jaxmi.estimators.registry`: :func:`register_estimator` adds an estimator usable
  wherever a method name is accepted.
* :mod:`~jaxmi.estimators.validation`: input and parameter checks, once per call.

Entry points: :func:`estimate` (any methods, one layer or a mapping of probes),
:func:`estimate_mi` (one method, one layer), and the per-estimator :func:`kde_mi`,
:func:`binning_mi`, :func:`renyi_mi`. Every estimate comes with diagnostics (its distance
to the log₂ N and Ĥ(Y) ceilings, a ``saturated`` flag: :mod:`~jaxmi.estimators.diagnostics`);
:func:`sweep_noise` / :func:`sweep_kde_bounds` give the KDE bounds over a σ² grid from one
distance pass and :func:`sweep_bins` binning over bin sizes (:mod:`~jaxmi.estimators.sweep`);
:func:`spread` is the unit of ``noise_scale="relative"`` and
:mod:`~jaxmi.estimators.scale_free` sweeps both bounds over σ² in that unit, with bootstrap resamples.
"""

from jaxmi.estimators.api import estimate, estimate_mi
from jaxmi.estimators.diagnostics import SATURATION_GAP_BITS
from jaxmi.estimators.binning import binning_mi
from jaxmi.estimators.bootstrap import bootstrap_weights
from jaxmi.estimators.kde import choose_block_size, kde_mi, spread
from jaxmi.estimators.knn import ksg_mi
from jaxmi.estimators.knn_mixed import mixed_knn_mi
from jaxmi.estimators.registry import METHODS, available_methods, register_estimator, unregister_estimator
from jaxmi.estimators.renyi import renyi_mi
from jaxmi.estimators.sweep import DEFAULT_BIN_SIZES, DEFAULT_NOISE_VARS, sweep_bins, sweep_kde_bounds, sweep_noise

__all__ = [
    "METHODS",
    "available_methods",
    "register_estimator",
    "unregister_estimator",
    "estimate",
    "estimate_mi",
    "bootstrap_weights",
    "kde_mi",
    "binning_mi",
    "renyi_mi",
    "ksg_mi",
    "mixed_knn_mi",
    "choose_block_size",
    "spread",
    "sweep_noise",
    "sweep_kde_bounds",
    "sweep_bins",
    "DEFAULT_NOISE_VARS",
    "DEFAULT_BIN_SIZES",
    "SATURATION_GAP_BITS",
]
