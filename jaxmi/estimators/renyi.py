"""Matrix-based Rényi α-order estimates of I(X;T) and I(T;Y), from normalised Gram matrices.

For samples z_1..z_N with a positive-definite kernel κ, the normalised Gram matrix is
A_ij = κ(z_i, z_j) / (N √(κ(z_i, z_i) κ(z_j, z_j))) (unit trace) and, in bits::

    S_α(A)    = 1/(1 − α) · log₂ Σ_i λ_i(A)^α            (λ_i: eigenvalues of A)
    S_α(A, B) = S_α(A ∘ B / tr(A ∘ B))                    (∘: Hadamard product)
    I_α(A; B) = S_α(A) + S_α(B) − S_α(A, B)

α → 1 gives the von Neumann entropy −Σ λ log₂ λ; α = 2 uses tr(A²) = ‖A‖_F².

References: Giraldo, Rao & Príncipe (2014), "Measures of entropy from data using infinitely
divisible kernels"; Yu et al. (2019) and Wickstrøm et al. (2019) for DNN information planes.
"""

from __future__ import annotations

import numpy as np

from jaxmi.estimators.bootstrap import unit_weights
from jaxmi.estimators.validation import check_alpha, raise_if_nonfinite, validate

__all__ = ["renyi_mi", "renyi_compute"]


def _gaussian_gram(x: np.ndarray, width: float | None, k_neighbors: int) -> np.ndarray:
    """Gaussian Gram matrix exp(−‖x_i − x_j‖² / 2σ²) [N, N] in float64 on the host.

    ``width`` None selects the k-nearest-neighbour rule: σ = mean over samples of the mean
    Euclidean distance to their ``k_neighbors`` nearest other samples. float64 because the
    1/(1 − α) factor of S_α (100 at α = 1.01) magnifies kernel rounding: float32 Gram
    distances carry an error of ~ε₃₂‖x‖².
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    x = x - x.mean(axis=0, keepdims=True)
    sq = np.einsum("nd,nd->n", x, x)
    d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d, 0.0)
    if width is None:
        if k_neighbors > 0:
            # The k + 1 smallest entries of a row (unordered) include the point itself (0).
            nearest = np.partition(d, k_neighbors, axis=1)[:, :k_neighbors + 1]
            width = float(np.mean(np.sum(np.sqrt(nearest), axis=1) / k_neighbors))
        else:
            width = 1.0
    if not width > 0:
        width = 1.0  # all points identical: any width gives K = 1
    return np.exp(-d / (2.0 * width * width))


def _entropy_of_spectrum(lam: np.ndarray, alpha: float) -> float:
    """1/(1−α) log₂ Σ λ^α of positive eigenvalues summing to 1 (α = 1: −Σ λ log₂ λ)."""
    if alpha == 1.0:
        return float(-np.sum(lam * np.log2(lam)))
    return float(np.log2(np.sum(lam ** alpha)) / (1.0 - alpha))


def _matrix_entropy_bits(a: np.ndarray, alpha: float) -> float:
    """S_α(A) for a PSD matrix of unit trace."""
    if alpha == 2.0:  # tr(A²) = ‖A‖_F²: exact without an eigendecomposition
        return float(-np.log2(np.sum(a * a)))
    lam = np.clip(np.linalg.eigvalsh(a), 0.0, None)
    return _entropy_of_spectrum(lam[lam > 0], alpha)


def _weighted_unit_trace(k: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The normalised Gram matrix of a resample with multiplicities w: W^½ K W^½ / tr(W K)."""
    keep = w > 0
    sw = np.sqrt(w[keep])
    a = k[np.ix_(keep, keep)] * sw[:, None] * sw[None, :]
    return a / np.trace(a)


def _normalised_gram(x, width, k_neighbors: int, what: str) -> np.ndarray:
    """K_ij / √(K_ii K_jj) of the Gaussian Gram matrix (= K for a Gaussian kernel)."""
    x = np.asarray(x)
    if not np.all(np.isfinite(x)):
        raise_if_nonfinite(False, what)
    kx = _gaussian_gram(x, width, k_neighbors)
    diag = np.sqrt(np.diag(kx))
    return kx / diag[:, None] / diag[None, :]


def renyi_compute(t, y, c, weights, *, alpha: float = 1.01, kernel_width: float | None = None,
                  k_neighbors: int = 10, inputs=None, input_kernel_width: float | None = None,
                  **_) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Matrix-based Rényi I(X;T), I(T;Y) for the full sample and every resample.

    A resample with multiplicities w uses the normalised matrix W^½ K W^½ / tr(W K), whose
    spectrum is that of the materialised resample's Gram matrix (kernel widths stay those
    of the full sample).

    Args:
      t: [N, D] checked activations (:func:`jaxmi.estimators.validation.validate`).
      y: [N] int32 labels.
      c: number of classes C.
      weights: [R, N] point multiplicities (row 0: the full sample).
      alpha, kernel_width, k_neighbors, inputs, input_kernel_width: as in :func:`renyi_mi`.

    Returns:
      ``{"renyi": (I_XT [R], I_TY [R])}`` in bits.
    """
    n = t.shape[0]
    k = min(int(k_neighbors), n - 1)
    k_t = _normalised_gram(t, kernel_width, k, "activations")
    k_x = None
    if inputs is not None:
        x = np.asarray(inputs)
        x = x.reshape(x.shape[0], -1) if x.ndim else x
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"inputs must hold one sample per activation row ([N, ...] with N = {n}); "
                             f"got shape {np.shape(inputs)}.")
        k_x = _normalised_gram(x, input_kernel_width, k, "inputs")
    y_np = np.asarray(y)
    i_xt, i_ty = [], []
    for w in np.asarray(weights, np.float64):
        keep = w > 0
        a_t = _weighted_unit_trace(k_t, w)
        s_t = _matrix_entropy_bits(a_t, alpha)
        # Label kernel: δ(y_i, y_j). A_Y has eigenvalues p_c, so S_α(A_Y) is the Rényi entropy
        # of the class frequencies; A_T ∘ A_Y is block-diagonal by class, so its spectrum is the
        # union of the class blocks' spectra (exact; one small eigendecomposition per class).
        counts = np.bincount(y_np, weights=w, minlength=c)
        s_y = _entropy_of_spectrum(counts[counts > 0] / counts.sum(), alpha)
        y_keep = y_np[keep]
        if alpha == 2.0:
            m = np.where(y_keep[:, None] == y_keep[None, :], a_t, 0.0)
            joint = float(-np.log2(np.sum(m * m) / np.trace(m) ** 2))
        else:
            lam = np.concatenate([np.linalg.eigvalsh(a_t[np.ix_(y_keep == cl, y_keep == cl)])
                                  for cl in np.unique(y_keep)])
            lam = np.clip(lam, 0.0, None)
            joint = _entropy_of_spectrum(lam[lam > 0] / lam.sum(), alpha)
        i_ty.append(s_t + s_y - joint)
        if k_x is None:
            i_xt.append(s_t)  # deterministic layer: I(X;T) = H(T), as for binning
        else:
            a_x = _weighted_unit_trace(k_x, w)
            a_xt = a_x * a_t
            i_xt.append(_matrix_entropy_bits(a_x, alpha) + s_t
                        - _matrix_entropy_bits(a_xt / np.trace(a_xt), alpha))
    return {"renyi": (np.asarray(i_xt), np.asarray(i_ty))}


def renyi_mi(activations, labels, *, num_classes: int | None = None, inputs=None, alpha: float = 1.01,
             kernel_width: float | None = None, input_kernel_width: float | None = None,
             k_neighbors: int = 10) -> dict[str, float]:
    """Matrix-based Rényi α-order estimates of I(X;T) and I(T;Y), in bits.

    With the normalised Gram matrices A_T (activations), A_Y (labels) and A_X (inputs)::

        I(T;Y) = S_α(A_T) + S_α(A_Y) − S_α(A_T, A_Y)
        I(X;T) = S_α(A_X) + S_α(A_T) − S_α(A_X, A_T)     (with ``inputs``)
        I(X;T) = S_α(A_T)                                 (without: H(T|X) = 0)

    Kernels: Gaussian exp(−‖a − b‖² / 2σ²) on activations and inputs; the delta kernel
    δ(y_i, y_j) on labels, so S_α(A_Y) is exactly the Rényi entropy of the class
    frequencies. Kernel-width rule: σ = mean over samples of the mean Euclidean distance to
    their ``k_neighbors`` nearest other samples, per layer (a k-nearest-neighbour rule of the
    kind Wickstrøm et al. use, which makes the estimates invariant to rescaling the layer);
    ``kernel_width`` / ``input_kernel_width`` fix σ instead. The N × N Gram matrices are
    built and eigendecomposed in float64 on the host, O(N²·D + N³): meant for N up to a few
    thousand, as in the literature (mini-batches of ~100).

    Args:
      activations: [N, D] float array.
      labels: [N] integer class labels.
      num_classes: number of classes (default: max(labels) + 1).
      inputs: optional [N, ...] network inputs X for the full I(X;T).
      alpha: the order α > 0 (default 1.01, as in Yu et al. and Wickstrøm et al.).
      kernel_width: fixed σ for the activations (default: the k-NN rule).
      input_kernel_width: fixed σ for the inputs (default: the k-NN rule).
      k_neighbors: k of the width rule.

    Returns:
      ``{"I_XT": float, "I_TY": float}`` in bits.

    References:
      Giraldo, Rao & Príncipe (2014); Yu et al. (2019); Wickstrøm et al. (2019).
    """
    check_alpha(alpha)
    t, y, c = validate(activations, labels, num_classes)
    i_xt, i_ty = renyi_compute(t, y, c, unit_weights(t.shape[0]), alpha=alpha, kernel_width=kernel_width,
                               k_neighbors=k_neighbors, inputs=inputs,
                               input_kernel_width=input_kernel_width)["renyi"]
    return {"I_XT": float(i_xt[0]), "I_TY": float(i_ty[0])}
