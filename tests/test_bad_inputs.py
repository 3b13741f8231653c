"""One contract for bad input at the public entry points of the attacks, the robust evaluation,
the estimators and sweeps, model creation and application, probes and data loading: each bad
input below is refused with a ValueError or TypeError whose message names the argument (and
the fix), or it is handled and the result is checked against a reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmi import attacks, data, estimators, evaluation, models, probes
from jaxmi.attacks.pgd import ce_loss, pgd_core

K = 10  # classes of the toy model
_rng = np.random.default_rng(0)
W = jnp.asarray(_rng.normal(size=(16, K)).astype(np.float32))
B = jnp.asarray((_rng.normal(size=K) * 0.1).astype(np.float32))
X = jnp.asarray(_rng.uniform(0.05, 0.95, size=(8, 4, 4, 1)).astype(np.float32))
Y = jnp.asarray(np.arange(8, dtype=np.int32) % K)
KEY = jax.random.key(0)


def f(z):
    return z.reshape(z.shape[0], -1) @ W + B


def _nan(x):
    return x.at[0, 0, 0, 0].set(jnp.nan)


def _inf(x):
    return x.at[1, 2, 0, 0].set(jnp.inf)


PGD = dict(eps=0.1, step_size=0.03, steps=2)
APGD = dict(eps=0.1, key=KEY, steps=2)
ROBUST = dict(eps=0.1, key=KEY, steps=2, pgd_steps=1, n_targets=1)

# Activations of a layer for the estimators: 40 samples, 6 features, 4 classes.
T = _rng.normal(size=(40, 6)).astype(np.float32)
TY = (np.arange(40) % 4).astype(np.int32)


def _with(a, idx, value):
    a = a.copy()
    a[idx] = value
    return a


def _registered(t):
    """A registered estimator that would return a number from any input."""
    estimators.register_estimator("bad_inputs_constant", lambda a, y, *, num_classes: {"I_XT": 1.0, "I_TY": 0.5},
                                  overwrite=True)
    try:
        return estimators.estimate(t, TY, methods=("bad_inputs_constant",))
    finally:
        estimators.unregister_estimator("bad_inputs_constant")


_lenet = models.create_model("lenet")
_v = models.init_variables(_lenet, jax.random.key(0), (28, 28, 1))
_MNIST = jnp.asarray(_rng.uniform(0, 1, size=(4, 28, 28, 1)).astype(np.float32))
_MY = jnp.arange(4, dtype=jnp.int32)
_PAPER = attacks.PGDConfig(eps=0.1, step_size=0.03, steps=2)


def _report(x=_MNIST, y=_MY, attack=_PAPER):
    return evaluation.robust_report(_lenet, _v["params"], _v["batch_stats"], x, y, attack=attack, key=KEY, steps=2,
                                    n_targets=1)


def _apply(x, module=_lenet, v=_v):
    return models.apply_model(module, v["params"], v["batch_stats"], x)


_mlp = models.create_model("mlp")
_mlp_v = models.init_variables(_mlp, jax.random.key(0), (28, 28, 1))

BOX = r"x holds values in .* outside the attack's clip box \(0\.0, 1\.0\)"
NONFINITE = "x holds NaN or inf pixels"
Y50 = r"y holds labels from \d+ to 50, outside \[0, 10\)"

# (id, call, exception, match): every case must be refused with this error and message.
REFUSED = [
    # --- pgd
    ("pgd-x255", lambda: attacks.pgd(f, X * 255, Y, **PGD), ValueError, BOX),
    ("pgd-x-in-minus1-1", lambda: attacks.pgd(f, X * 2 - 1, Y, **PGD), ValueError, BOX),
    ("pgd-eps5", lambda: attacks.pgd(f, X, Y, eps=5, step_size=0.03, steps=2), ValueError,
     r"eps=5 is larger than the width 1 of the clip box"),
    ("pgd-eps-inf", lambda: attacks.pgd(f, X, Y, eps=float("inf"), step_size=0.03, steps=2), ValueError,
     "eps=inf is larger than the width"),
    ("pgd-eps-nan", lambda: attacks.pgd(f, X, Y, eps=float("nan"), step_size=0.03, steps=2), ValueError,
     "eps must be ≥ 0"),
    ("pgd-l2-eps-beyond-diameter", lambda: attacks.pgd(f, X, Y, eps=4.5, step_size=0.5, steps=2, norm="l2"),
     ValueError, r"eps=4\.5 is larger than the diameter 4 of the clip box"),
    ("pgd-nan-pixel", lambda: attacks.pgd(f, _nan(X), Y, **PGD), ValueError, NONFINITE),
    ("pgd-inf-pixel", lambda: attacks.pgd(f, _inf(X), Y, **PGD), ValueError, NONFINITE),
    ("pgd-labels-50", lambda: attacks.pgd(f, X, Y.at[3].set(50), **PGD), ValueError, Y50),
    ("pgd-negative-label", lambda: attacks.pgd(f, X, Y.at[0].set(-1), **PGD), ValueError,
     r"y holds labels from -1 to \d+, outside \[0, 10\)"),
    ("pgd-target-50", lambda: attacks.pgd(f, X, Y, target=jnp.full(8, 50, jnp.int32), **PGD), ValueError,
     r"target holds labels from 50 to 50, outside \[0, 10\)"),
    ("pgd-uint8-images", lambda: attacks.pgd(f, (X * 255).astype(jnp.uint8), Y, **PGD), TypeError,
     "x must be float images inside the clip box.*to_float"),
    ("pgd-float-labels", lambda: attacks.pgd(f, X, Y.astype(jnp.float32), **PGD), ValueError,
     "y must be integer class labels"),
    ("pgd-list-labels", lambda: attacks.pgd(f, X, list(range(8)), **PGD), TypeError,
     r"y must be an array of integer class labels"),
    ("pgd-label-count", lambda: attacks.pgd(f, X, Y[:5], **PGD), ValueError, r"y must hold one integer label"),
    ("pgd-empty-batch", lambda: attacks.pgd(f, X[:0], Y[:0], **PGD), ValueError, "x must be a non-empty batch"),
    ("pgd-clip-reversed", lambda: attacks.pgd(f, X, Y, clip=(1.0, 0.0), **PGD), ValueError,
     r"clip must be a pair \(low, high\)"),
    ("pgd-clip-not-a-pair", lambda: attacks.pgd(f, X, Y, clip=1.0, **PGD), ValueError, r"clip must be a pair"),
    ("pgd-x-outside-given-clip", lambda: attacks.pgd(f, X * 4 - 2, Y, clip=(-1.0, 1.0), **PGD), ValueError,
     r"outside the attack's clip box \(-1\.0, 1\.0\)"),
    ("pgd-x-shape-not-for-logits_fn", lambda: attacks.pgd(f, jnp.full((8, 5, 5, 1), 0.5), Y, **PGD), ValueError,
     r"logits_fn fails on x of shape \(8, 5, 5, 1\): dot_general"),
    ("pgd-logits_fn-returns-a-tuple", lambda: attacks.pgd(lambda z: (f(z), {}), X, Y, **PGD), ValueError,
     r"logits_fn must map a batch x of shape \(8, 4, 4, 1\) to logits \[B, K\]"),
    ("pgd-cifar-images-on-mnist-lenet", lambda: attacks.pgd(lambda z: _apply(z)[0], jnp.full((2, 32, 32, 3), 0.5),
                                                            _MY[:2], **PGD), ValueError,
     r"x of shape \(2, 32, 32, 3\) does not fit the model's parameters"),
    # --- fgsm
    ("fgsm-x255", lambda: attacks.fgsm(f, X * 255, Y, eps=0.1), ValueError, BOX),
    ("fgsm-eps5", lambda: attacks.fgsm(f, X, Y, eps=5), ValueError, "eps=5 is larger than the width"),
    ("fgsm-nan-pixel", lambda: attacks.fgsm(f, _nan(X), Y, eps=0.1), ValueError, NONFINITE),
    ("fgsm-labels-50", lambda: attacks.fgsm(f, X, Y.at[3].set(50), eps=0.1), ValueError, Y50),
    ("fgsm-negative-eps", lambda: attacks.fgsm(f, X, Y, eps=-0.1), ValueError, "eps must be ≥ 0"),
    # --- apgd, apgd_targeted
    ("apgd-x255", lambda: attacks.apgd(f, X * 255, Y, **APGD), ValueError, BOX),
    ("apgd-eps5", lambda: attacks.apgd(f, X, Y, eps=5, key=KEY, steps=2), ValueError, "eps=5 is larger"),
    ("apgd-nan-pixel", lambda: attacks.apgd(f, _nan(X), Y, **APGD), ValueError, NONFINITE),
    ("apgd-labels-50", lambda: attacks.apgd(f, X, Y.at[3].set(50), **APGD), ValueError, Y50),
    ("apgd-dlr-labels-50", lambda: attacks.apgd(f, X, Y.at[3].set(50), loss="dlr", **APGD), ValueError, Y50),
    ("apgd-target-50", lambda: attacks.apgd(f, X, Y, target=jnp.full(8, 50, jnp.int32), **APGD), ValueError,
     "target holds labels from 50"),
    ("apgd-t-labels-50", lambda: attacks.apgd_targeted(f, X, Y.at[3].set(50), **APGD), ValueError, Y50),
    ("apgd-t-x-in-minus1-1", lambda: attacks.apgd_targeted(f, X * 2 - 1, Y, **APGD), ValueError, BOX),
    ("apgd-t-eps5", lambda: attacks.apgd_targeted(f, X, Y, eps=5, key=KEY, steps=2), ValueError, "eps=5 is larger"),
    # --- robust_accuracy, robustness_curve
    ("robust-labels-50", lambda: attacks.robust_accuracy(f, X, jnp.full(8, 50, jnp.int32), **ROBUST), ValueError,
     r"y holds labels from 50 to 50, outside \[0, 10\)"),
    ("robust-x255", lambda: attacks.robust_accuracy(f, X * 255, Y, **ROBUST), ValueError, BOX),
    ("robust-eps5", lambda: attacks.robust_accuracy(f, X, Y, eps=5, key=KEY, steps=2), ValueError,
     "eps=5 is larger"),
    ("robust-nan-pixel", lambda: attacks.robust_accuracy(f, _nan(X), Y, **ROBUST), ValueError, NONFINITE),
    ("curve-eps5", lambda: attacks.robustness_curve(f, X, Y, [0.1, 5.0], attack="pgd", steps=2), ValueError,
     "eps_values=5 is larger than the width"),
    ("curve-labels-50", lambda: attacks.robustness_curve(f, X, Y.at[3].set(50), [0.1], attack="fgsm"), ValueError,
     Y50),
    ("curve-x255", lambda: attacks.robustness_curve(f, X * 255, Y, [0.1], attack="fgsm"), ValueError, BOX),
    ("curve-robust-nan", lambda: attacks.robustness_curve(f, _nan(X), Y, [0.1], attack="robust", key=KEY, steps=2),
     ValueError, NONFINITE),
    # --- robust_report (a model's robust evaluation)
    ("report-x255", lambda: _report(x=_MNIST * 255), ValueError, BOX),
    ("report-labels-50", lambda: _report(y=_MY.at[0].set(50)), ValueError, r"y holds labels from \d+ to 50"),
    ("report-eps5", lambda: _report(attack=attacks.PGDConfig(eps=5.0, step_size=0.5, steps=2)), ValueError,
     "eps=5 is larger"),
    ("report-nan-pixel", lambda: _report(x=_nan(_MNIST)), ValueError, NONFINITE),
    ("report-wrong-image-shape", lambda: _report(x=jnp.zeros((4, 32, 32, 3))), ValueError,
     r"x of shape \(4, 32, 32, 3\) does not fit the model's parameters"),
    ("report-typed-key", lambda: evaluation.robust_report(_lenet, _v["params"], _v["batch_stats"], _MNIST, _MY,
                                                          attack=_PAPER, key=jax.random.PRNGKey(0), steps=2),
     ValueError, "robust_report takes a typed PRNG key"),
    # --- estimators
    ("estimate-knn-k-above-every-class", lambda: estimators.estimate(T, TY, methods=("knn",), knn_k=10), ValueError,
     r"knn_k=10: no class has k \+ 1 = 11 points \(largest class: 10\)"),
    ("estimate-one-sample", lambda: estimators.estimate(T[:1], TY[:1]), ValueError,
     r"activations holds 1 sample .* at least 2 samples"),
    ("estimate_mi-one-sample", lambda: estimators.estimate_mi(T[:1], TY[:1], method="binning"), ValueError,
     "at least 2 samples"),
    ("estimate-probes-one-sample", lambda: estimators.estimate({"fc": T[:1]}, TY[:1]), ValueError,
     "^probe 'fc': activations holds 1 sample"),
    ("estimate-noise-var-inf", lambda: estimators.estimate(T, TY, noise_var=float("inf")), ValueError,
     "noise_var must be > 0 and finite .* got inf"),
    ("estimate-noise-var-nan", lambda: estimators.estimate(T, TY, noise_var=float("nan")), ValueError,
     "noise_var must be > 0 and finite .* got nan"),
    ("estimate-noise-var-zero", lambda: estimators.estimate_mi(T, TY, method="kde_upper", noise_var=0.0),
     ValueError, "noise_var must be > 0"),
    ("estimate-noise-var-negative", lambda: estimators.estimate(T, TY, noise_var=-1.0), ValueError,
     "noise_var must be > 0"),
    ("estimate-noise-var-string", lambda: estimators.estimate(T, TY, noise_var="0.1x"), ValueError,
     "noise_var must be > 0 and finite"),
    ("estimate-bin-size-inf", lambda: estimators.estimate_mi(T, TY, method="binning", bin_size=float("inf")),
     ValueError, "bin_size must be > 0 and finite .* got inf"),
    ("estimate-labels-vs-num-classes", lambda: estimators.estimate(T, TY, num_classes=3), ValueError,
     "labels must be < num_classes=3; found 3"),
    ("estimate-num-classes-zero", lambda: estimators.estimate(T, TY, num_classes=0), ValueError,
     "num_classes must be a positive integer"),
    ("estimate-negative-label", lambda: estimators.estimate(T, _with(TY, 0, -2)), ValueError,
     "labels must be non-negative class indices; found -2"),
    ("estimate-float-labels", lambda: estimators.estimate(T, TY.astype(np.float32)), ValueError,
     "labels must be integers"),
    ("estimate-kde-nan-activations", lambda: estimators.estimate(_with(T, (3, 2), np.nan), TY,
                                                                 methods=("kde_upper",)), ValueError,
     "activations contain NaN or Inf"),
    ("estimate-binning-inf-activations", lambda: estimators.estimate_mi(_with(T, (0, 0), np.inf), TY,
                                                                        method="binning"), ValueError,
     "activations contain NaN or Inf"),
    ("estimate-renyi-nan-activations", lambda: estimators.estimate_mi(_with(T, (5, 1), np.nan), TY,
                                                                      method="renyi"), ValueError,
     "activations contain NaN or Inf"),
    ("estimate-registered-estimator-nan-activations", lambda: _registered(_with(T, (2, 2), np.nan)), ValueError,
     "activations contain NaN or Inf"),
    ("estimate-bootstrap-inf", lambda: estimators.estimate(T, TY, bootstrap=float("inf")), ValueError,
     "bootstrap must be 0"),
    ("estimate-alpha-inf", lambda: estimators.estimate_mi(T, TY, method="renyi", alpha=float("inf")), ValueError,
     "alpha must be > 0 and finite"),
    # --- sweeps
    ("sweep_noise-one-sample", lambda: estimators.sweep_noise(T[:1], TY[:1]), ValueError, "at least 2 samples"),
    ("sweep_noise-inf-in-grid", lambda: estimators.sweep_noise(T, TY, [0.1, float("inf")]), ValueError,
     r"noise_vars\[1\]: noise_var must be > 0 and finite"),
    ("sweep_kde_bounds-nan-activations", lambda: estimators.sweep_kde_bounds(_with(T, (0, 0), np.nan), TY, [0.1]),
     ValueError, "activations contain NaN or Inf"),
    ("sweep_bins-nan-in-grid", lambda: estimators.sweep_bins(T, TY, [0.5, float("nan")]), ValueError,
     r"bin_sizes\[1\]: bin_size must be > 0 and finite"),
    ("sweep_bins-labels-vs-num-classes", lambda: estimators.sweep_bins(T, TY, [0.5], num_classes=2), ValueError,
     "labels must be < num_classes=2"),
    ("sweep_bins-not-numbers", lambda: estimators.sweep_bins(T, TY, ["a"]), ValueError,
     "bin_sizes must be a sequence of numbers"),
    # --- model application
    ("apply-cifar-images-on-mnist-params", lambda: _apply(jnp.zeros((2, 32, 32, 3))), ValueError,
     r"x of shape \(2, 32, 32, 3\) does not fit the model's parameters: .*conv1"),
    ("apply-no-batch-axis", lambda: _apply(jnp.zeros((28, 28, 1))), ValueError,
     r"x must be a batch of images \[B, H, W, C\] for LeNet; got shape \(28, 28, 1\)"),
    ("apply-mlp-wrong-shape", lambda: _apply(jnp.zeros((2, 32, 32, 3)), _mlp, _mlp_v), ValueError,
     r"x of shape \(2, 32, 32, 3\) does not fit the model's parameters: .*fc1"),
    ("init-no-channel-axis", lambda: models.init_variables(_lenet, KEY, (28, 28)), ValueError,
     r"input_shape must be \(H, W, C\) for LeNet"),
    ("init-with-batch-axis", lambda: models.init_variables(_lenet, KEY, (1, 28, 28, 1)), ValueError,
     r"input_shape must be \(H, W, C\) for LeNet"),
    ("init-zero-size", lambda: models.init_variables(_lenet, KEY, (0, 28, 1)), ValueError,
     "input_shape must be the shape of one input, a tuple of positive integers"),
    ("init-too-small-for-lenet", lambda: models.init_variables(_lenet, KEY, (4, 4, 1)), ValueError,
     r"input_shape \(4, 4, 1\) does not fit LeNet"),
    # --- model creation
    ("create-unknown-name", lambda: models.create_model("resnet50"), ValueError,
     r"unknown model 'resnet50'; choose one of \['lenet', 'mlp', 'wrn'\]"),
    ("create-one-class", lambda: models.create_model("lenet", 1), ValueError, "num_classes must be ≥ 2; got 1"),
    ("create-classes-not-an-integer", lambda: models.create_model("lenet", 2.5), TypeError,
     r"num_classes must be an integer ≥ 2 .*got 2\.5 \(float\)"),
    ("create-classes-a-string", lambda: models.create_model("lenet", "10"), TypeError,
     r"num_classes must be an integer ≥ 2 .*got '10' \(str\)"),
    ("create-bad-precision", lambda: models.create_model("lenet", precision="float8"), ValueError,
     r"unknown precision 'float8'; choose one of \['bfloat16', 'float32'\]"),
    # --- probes
    ("capture-unknown-name", lambda: probes.capture(_lenet, _v, _MNIST, names=["nope"]), ValueError,
     r"has no probe\(s\) \['nope'\]; available: \['conv1'"),
    ("capture-names-not-strings", lambda: probes.capture(_lenet, _v, _MNIST, names=3), ValueError,
     "names must be a probe name or a non-empty sequence .* got 3"),
    ("capture-names-empty", lambda: probes.capture(_lenet, _v, _MNIST, names=[]), ValueError,
     r"names must be a probe name or a non-empty sequence .* got \[\]"),
    ("capture-names-repeated", lambda: probes.capture(_lenet, _v, _MNIST, names=["fc1", "fc1"]), ValueError,
     r"distinct probe names .* got \['fc1', 'fc1'\]"),
    ("capture-cifar-images-on-mnist-params", lambda: probes.capture(_lenet, _v, jnp.zeros((2, 32, 32, 3))),
     ValueError, r"x of shape \(2, 32, 32, 3\) does not fit the module's parameters: .*conv1"),
    ("capture-no-batch-axis", lambda: probes.capture(_lenet, _v, jnp.zeros((28, 28, 1)), names="fc1"), ValueError,
     r"x must be a batch of images \[N, H, W, C\] for LeNet .*got shape \(28, 28, 1\)"),
    ("available-shape-of-other-params", lambda: probes.available(_lenet, _v, (32, 32, 3)), ValueError,
     r"input_shape \(32, 32, 3\) does not fit the module's parameters"),
    ("available-negative-size", lambda: probes.available(_lenet, None, (-1, 28, 1)), ValueError,
     r"input_shape must be the shape of one input, a tuple of positive integers .*got \(-1, 28, 1\)"),
    ("available-not-a-shape", lambda: probes.available(_lenet, None, 28), ValueError,
     "input_shape must be the shape of one input, a tuple of positive integers .*got 28"),
    ("available-with-batch-axis", lambda: probes.available(_lenet, None, (1, 28, 28, 1)), ValueError,
     r"input_shape must be .* \(H, W, C, without the batch axis\); got \(1, 28, 28, 1\)"),
    # --- data loading
    ("load-unknown-dataset", lambda: data.load_dataset("imagenet9"), data.DataError,
     r"unknown dataset 'imagenet9'; known datasets are \['cifar10'"),
    ("load-bad-split", lambda: data.load_dataset("mnist", "validation"), data.DataError,
     r"unknown split 'validation' .*use 'train' or 'test'"),
    ("load-split-not-a-string", lambda: data.load_dataset("mnist", 0), data.DataError,
     "split must be a string, 'train' or 'test'; got 0"),
    ("load-missing-data-dir", lambda: data.load_dataset("mnist", data_dir="/nonexistent/jaxmi-data"), data.DataError,
     r"--data-dir does not exist \(data_dir='/nonexistent/jaxmi-data'\)"),
    ("load-max-examples-0", lambda: data.load_dataset("mnist", max_examples=0), data.DataError,
     "max_examples must be a positive integer or None .*got 0"),
    ("load-max-examples-fraction", lambda: data.load_dataset("mnist", max_examples=2.5), data.DataError,
     r"max_examples must be a positive integer or None .*got 2\.5"),
    ("load-max-examples-bool", lambda: data.load_dataset("mnist", max_examples=True), data.DataError,
     "max_examples must be a positive integer or None .*got True"),
    ("load-name-not-a-string", lambda: data.load_dataset(3), data.DataError,
     "name must be a dataset name, a string such as 'mnist'"),
    ("load-unknown-source", lambda: data.load_dataset("mnist", source="web"), data.DataError,
     r"unknown source 'web'; choose one of \['auto'"),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_bad_input_is_refused_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------- handled, checked against a reference


def _g(u):
    """The toy model on images in [-1, 1]: f of the same image in [0, 1]."""
    return f((u + 1) / 2)


def test_images_in_another_box_are_attacked_in_that_box():
    # An image in [-1, 1] is 2u − 1 of one in [0, 1]; the attack in the box (−1, 1) with ε, α
    # doubled is the attack in [0, 1] mapped the same way (the sign steps and clips commute
    # with the affine map, up to float rounding).
    u = X
    for norm, kw in (("linf", PGD), ("l2", dict(eps=0.5, step_size=0.2, steps=3))):
        a01 = attacks.pgd(_g, u * 2 - 1, Y, norm=norm, clip=(-1.0, 1.0),
                          **{**kw, "eps": 2 * kw["eps"], "step_size": 2 * kw["step_size"]})
        ref = attacks.pgd(f, u, Y, norm=norm, **kw) * 2 - 1
        np.testing.assert_allclose(np.asarray(a01), np.asarray(ref), atol=2e-6)
        assert float(a01.min()) >= -1.0 and float(a01.max()) <= 1.0
    a = attacks.fgsm(_g, u * 2 - 1, Y, eps=0.2, clip=(-1.0, 1.0))
    np.testing.assert_allclose(np.asarray(a), np.asarray(attacks.fgsm(f, u, Y, eps=0.1) * 2 - 1), atol=2e-6)


def test_eps_equal_to_the_box_width_is_accepted():
    # The rule is ε ≤ hi − lo (L∞): the whole box, the largest ball that still means something.
    out = attacks.fgsm(f, X, Y, eps=1.0)
    grad = np.asarray(jax.grad(lambda z: ce_loss(f(z), Y).sum())(X))
    ref = np.clip(np.asarray(X) + np.sign(grad), 0, 1)
    np.testing.assert_array_equal(np.asarray(out), ref.astype(np.float32))


def test_value_checks_are_skipped_under_an_outer_jit_as_documented():
    # Traced images cannot be looked at without a host read: the attack runs unchecked, as the
    # docstrings say, and returns what the core returns for the same inputs.
    run = jax.jit(lambda x: attacks.pgd(f, x, Y, **PGD))
    got = run(X * 255)
    ref = pgd_core(f, X * 255, Y, key=None, random_start=False, unroll=True, norm="linf", target=None, restarts=1,
                   **PGD)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5)
    assert float(got.max()) <= 1.0   # clipped into the default box: the silent result the eager check refuses


def test_two_samples_are_enough_and_give_the_reference_value():
    # Two distinct points with two labels: one bit of I(X;T) and of I(T;Y) under binning.
    t = np.array([[0.0, 0.0], [3.0, 3.0]], np.float32)
    r = estimators.estimate_mi(t, np.array([0, 1]), method="binning")
    assert r["I_XT"] == pytest.approx(1.0, abs=1e-6) and r["I_TY"] == pytest.approx(1.0, abs=1e-6)


def test_a_registered_estimator_gets_finite_activations():
    try:
        estimators.register_estimator("bad_inputs_constant", lambda a, y, *, num_classes: {"I_XT": 1.0, "I_TY": 0.5})
        r = estimators.estimate(T, TY, methods=("bad_inputs_constant",))["bad_inputs_constant"]
    finally:
        estimators.unregister_estimator("bad_inputs_constant")
    assert (r["I_XT"], r["I_TY"]) == (1.0, 0.5)


def test_a_single_estimator_keeps_its_one_sample_value():
    # The lower-level estimators keep the plug-in value of one sample (0 bits); only the entry
    # points, whose result is read as a measurement, refuse it.
    r = estimators.binning_mi(np.array([[0.3, -0.7]], np.float32), np.array([0]))
    assert r["I_XT"] == 0.0 and r["I_TY"] == 0.0


def test_a_probe_named_by_a_string_is_the_models_own_probe():
    got = probes.capture(_lenet, _v, _MNIST, names="fc2")
    _, ref, _ = _apply(_MNIST)
    assert list(got) == ["fc2"]
    np.testing.assert_allclose(np.asarray(got["fc2"]), np.asarray(probes.flatten(ref["fc2"])), rtol=1e-6, atol=1e-6)
    assert probes.available(_lenet, _v, (28, 28, 1))["fc2"] == tuple(ref["fc2"].shape[1:])


def test_max_examples_keeps_the_first_examples_of_the_split():
    few = data.load_dataset("mnist", "test", max_examples=3)
    full = data.load_dataset("mnist", "test")
    assert len(few) == 3
    np.testing.assert_array_equal(few.images, full.images[:3])
    np.testing.assert_array_equal(few.labels, full.labels[:3])
