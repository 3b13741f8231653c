"""APGD, APGD-T, robust_accuracy and robustness curves against independent references: the
paper's formulas, float64 NumPy, analytic worst cases of linear models, the reference
implementation (torchattacks, when installed) step for step, and the docs' quick start as written."""

import re
from fractions import Fraction
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optional_packages import optional

from jaxmi import attacks

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiled: list[str] = []


def _on_event(name, *_args, fun_name="", **_kw):
    if name == COMPILE_EVENT:
        _compiled.append(str(fun_name))


jax.monitoring.register_event_duration_secs_listener(_on_event)


def _linear(w, b):
    return lambda x: x.reshape(x.shape[0], -1) @ w + b


def _linear_problem(seed, n=96, k=4, d=12, lo=0.35, hi=0.65):
    """A K-class linear model and inputs far from the [0, 1] box (ε ≤ lo never reaches it),
    labelled with the model's own prediction (all clean-correct)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, k)).astype(np.float32)
    b = (rng.normal(size=k) * 0.1).astype(np.float32)
    x = rng.uniform(lo, hi, size=(n, 3, 4, 1)).astype(np.float32)
    y = np.argmax(x.reshape(n, -1) @ w + b, 1).astype(np.int32)
    return w, b, x, y


def _analytic_margin(w, b, x, y, eps):
    """min_j min_{‖δ‖∞ ≤ ε} (z_y − z_j)(x + δ) = min_j (z_y − z_j)(x) − ε‖w_y − w_j‖₁, float64."""
    w64, b64 = w.astype(np.float64), b.astype(np.float64)
    n = len(y)
    z = x.reshape(n, -1).astype(np.float64) @ w64 + b64
    m = np.full(n, np.inf)
    for j in range(w.shape[1]):
        mj = z[np.arange(n), y] - z[:, j] - eps * np.abs(w64[:, y] - w64[:, [j]]).sum(0)
        m = np.where(y == j, m, np.minimum(m, mj))
    return m


# ------------------------------------------------------------------------------ the losses


def test_dlr_losses_match_numpy_formulas():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 10)) * 3
    y = rng.integers(0, 10, 50)
    y[:20] = z[:20].argmax(1)                    # both cases: label on top and not
    t = (y + 1 + rng.integers(0, 9, 50)) % 10
    zs = np.sort(z, 1)
    other = np.array([np.max(np.delete(z[i], y[i])) for i in range(50)])
    ref = -(z[np.arange(50), y] - other) / (zs[:, -1] - zs[:, -3] + 1e-12)
    ref_t = -(z[np.arange(50), y] - z[np.arange(50), t]) / (zs[:, -1] - 0.5 * (zs[:, -3] + zs[:, -4]) + 1e-12)
    got = attacks.dlr_loss(jnp.asarray(z, jnp.float32), jnp.asarray(y))
    got_t = attacks.targeted_dlr_loss(jnp.asarray(z, jnp.float32), jnp.asarray(y), jnp.asarray(t))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got_t), ref_t, rtol=1e-5, atol=1e-6)
    assert np.all((np.asarray(got) > 0) == (z.argmax(1) != y))          # positive iff misclassified
    # invariant to shifting and positive rescaling of the logits
    np.testing.assert_allclose(np.asarray(attacks.dlr_loss(jnp.asarray(3 * z + 7, jnp.float32), jnp.asarray(y))),
                               ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="at least 3 classes"):
        attacks.dlr_loss(jnp.zeros((2, 2)), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="at least 4 classes"):
        attacks.targeted_dlr_loss(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), jnp.ones(2, jnp.int32))


def _paper_checkpoints(n):
    """Croce & Hein 2020, §3.2, exactly: p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06),
    w_j = ⌈p_j N⌉ for p_j ≤ 1."""
    p = [Fraction(0), Fraction(22, 100)]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100))
        if nxt > 1:
            break
        p.append(nxt)
    w = [-(-(pj * n).numerator // (pj * n).denominator) for pj in p[1:]]
    return tuple(x for x in w if x <= n)


@pytest.mark.parametrize("n", [100, 200, 500, 1000])
def test_apgd_checkpoints_follow_the_paper(n):
    assert attacks.apgd_checkpoints(n) == _paper_checkpoints(n)


def test_apgd_checkpoints_for_other_step_counts():
    assert attacks.apgd_checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)
    # not a multiple of 100: the reference's integer intervals (⌊0.22N⌋, shorter by ⌊0.03N⌋, ≥ ⌊0.06N⌋, ≥ 1)
    assert attacks.apgd_checkpoints(10) == (2, 3, 4, 5, 6, 7, 8, 9, 10)
    assert attacks.apgd_checkpoints(50) == (11, 21, 30, 38, 45)    # the paper's ⌈p_j·50⌉: 11, 21, 29, 35, 40, …
    assert attacks.apgd_checkpoints(1) == (1,)


# -------------------------------------------------------------------------------------- APGD


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_stays_in_ball_and_box(norm):
    k = jax.random.split(jax.random.key(2), 3)
    w = jax.random.normal(k[0], (48, 10))
    x = jax.random.uniform(k[1], (24, 4, 4, 3))
    y = jax.random.randint(k[2], (24,), 0, 10)
    f = _linear(w, jnp.zeros(10))
    eps = 0.05 if norm == "linf" else 0.4
    run = jax.jit(lambda e, key: attacks.apgd(f, x, y, eps=e, key=key, steps=12, norm=norm, loss="dlr"))
    x_adv = run(eps, jax.random.key(0))
    d = np.asarray(x_adv - x).reshape(24, -1)
    size = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
    assert size.max() <= eps * (1 + 1e-5)
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    # eps traced: vmap over ε gives the same as one call per ε, for both ε. Not bit for bit:
    # batching reorders the float sums, and once the iterates have converged the loss moves by
    # rounding alone, so APGD's "did the loss rise" counts (which halve the step) can flip; the
    # iterates then differ by about the last step size (≤ 3e-4 here), far below the ε → 2ε
    # difference (checked below), so 1e-3 still tells a wrong ε apart.
    for loss in ("ce", "dlr"):
        one = jax.jit(lambda e, loss=loss: attacks.apgd(f, x, y, eps=e, key=jax.random.key(0), steps=12,
                                                        norm=norm, loss=loss))
        many = np.asarray(jax.jit(jax.vmap(lambda e, loss=loss: attacks.apgd(
            f, x, y, eps=e, key=jax.random.key(0), steps=12, norm=norm, loss=loss)))(jnp.array([eps, 2 * eps])))
        apart = np.abs(many[1] - many[0]).reshape(24, -1).max(1)
        assert np.median(apart) > 0.02, apart
        for i, e in enumerate((eps, 2 * eps)):
            single = np.asarray(one(e))
            keep = np.ones(24, bool)
            if loss == "dlr":
                # DLR is exactly 1 wherever the label ranks third ((z_π1 − z_y)/(z_π1 − z_π3)), so
                # its gradient there is rounding noise and the normalised L2 step follows that
                # noise: the batched and the single call may walk apart. Those examples are
                # misclassified in both; all others must agree.
                keep = np.abs(np.asarray(attacks.dlr_loss(f(single), y)) - 1.0) > 1e-6
                assert keep.sum() >= 20, keep.sum()
                for z in (single, many[i]):
                    assert (np.asarray(jnp.argmax(f(z[~keep]), -1)) != np.asarray(y)[~keep]).all()
            np.testing.assert_allclose(many[i][keep], single[keep], atol=1e-3)


def test_apgd_finds_the_analytic_worst_case_of_a_linear_model():
    w, b, x, y = _linear_problem(1)
    eps = 0.15
    m = _analytic_margin(w, b, x, y, eps)
    clear = np.abs(m) > 1e-3
    f = _linear(jnp.asarray(w), jnp.asarray(b))
    x_t = attacks.apgd_targeted(f, jnp.asarray(x), jnp.asarray(y), eps=eps, key=jax.random.key(0), steps=30,
                                batch_size=32)
    fooled = np.asarray(jnp.argmax(f(x_t), -1) != y)
    assert 0.2 < np.mean(m < 0) < 0.8                   # both kinds present
    np.testing.assert_array_equal(fooled[clear], (m < 0)[clear])


def test_apgd_is_at_least_as_strong_as_pgd_on_a_trained_model():
    # A small ReLU network trained on 5-class Gaussian blobs, PGD from the clean image with every
    # fixed step ε/t of the paper's comparison (t = 1 … 100, 20 iterations) against APGD at the
    # same 20 iterations per run. APGD-T (targeted DLR, the ensemble's second attack) and APGD-CE
    # with 3 restarts fool at least as many examples as the best of these PGDs, and a single
    # APGD-CE run at least as many as PGD with a too small step (it needs no step size). On such
    # a nearly linear model one APGD-CE run from a random start is not always better than the
    # best-tuned PGD from the clean image (measured: within 2 points either way; torchattacks'
    # APGD behaves the same), so that is not asserted.
    rng = np.random.default_rng(0)
    n, d, k = 300, 16, 5
    y = rng.integers(0, k, n)
    centres = rng.uniform(0.3, 0.7, size=(k, d))
    x = np.clip(centres[y] + 0.06 * rng.normal(size=(n, d)), 0, 1).astype(np.float32).reshape(n, 4, 4, 1)
    keys = jax.random.split(jax.random.key(0), 2)
    params = {"w1": jax.random.normal(keys[0], (d, 32)) * 0.3, "b1": jnp.zeros(32),
              "w2": jax.random.normal(keys[1], (32, k)) * 0.3, "b2": jnp.zeros(k)}

    def net(p, z):
        h = jax.nn.relu(z.reshape(z.shape[0], -1) @ p["w1"] + p["b1"])
        return h @ p["w2"] + p["b2"]

    xj, yj = jnp.asarray(x), jnp.asarray(y)
    opt = optax.adam(0.03)

    @jax.jit
    def train(p):
        def step(carry, _):
            p, s = carry
            g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(net(p, xj), yj).mean())(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(step, (p, opt.init(p)), None, length=150)[0][0]

    params = train(params)
    f = lambda z: net(params, z)  # noqa: E731
    acc = lambda xa: float(jnp.mean(jnp.argmax(f(xa), -1) == yj))  # noqa: E731
    assert acc(xj) > 0.98
    divisors = jnp.array([1.0, 2.0, 4.0, 10.0, 25.0, 100.0])
    for eps in (0.1,):
        pgds = jax.jit(jax.vmap(lambda t: attacks.pgd(f, xj, yj, eps=eps, step_size=eps / t, steps=20,
                                                      unroll=False)))(divisors)
        pgd_acc = [acc(p) for p in pgds]
        assert pgd_acc[0] < acc(xj) - 0.2                 # the radius matters for this model
        apgd_t = acc(attacks.apgd_targeted(f, xj, yj, eps=eps, key=jax.random.key(1), steps=20))
        ce3 = acc(attacks.apgd(f, xj, yj, eps=eps, key=jax.random.key(1), steps=20, restarts=3))
        ce = acc(attacks.apgd(f, xj, yj, eps=eps, key=jax.random.key(1), steps=20))
        assert apgd_t <= min(pgd_acc) - 0.02, (eps, apgd_t, pgd_acc)
        assert ce3 <= min(pgd_acc), (eps, ce3, pgd_acc)
        assert ce <= pgd_acc[4] - 0.1, (eps, ce, pgd_acc)          # PGD with α = ε/25: too small a step


def _torch_model(w, b):
    torch = optional("torch")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(w.shape[0], w.shape[1])).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(w.T))
        model[1].bias.copy_(torch.from_numpy(b))
    return model


@pytest.mark.parametrize("norm,loss,targeted", [("linf", "ce", False), ("linf", "dlr", False),
                                                ("l2", "ce", False), ("linf", "dlr", True)])
def test_apgd_equals_the_reference_implementation_step_for_step(norm, loss, targeted, monkeypatch):
    """torchattacks 3.5.1's APGD/APGDT (the reference code of fra31/auto-attack) in float64, given
    the same random start: 50 iterations (checkpoints after 11, 21, 30, 38, 45) agree to
    rounding, so the schedule, momentum, projections, restarts from the best point, DLR losses and
    the per-example bookkeeping are the same."""
    torch = optional("torch")
    torchattacks = optional("torchattacks")
    rng = np.random.default_rng(4)
    n, k, d = 48, 10, 20
    w = rng.normal(size=(d, k))
    b = rng.normal(size=k) * 0.1
    x = rng.uniform(0.2, 0.8, size=(n, 1, 4, 5))
    y = np.argmax(x.reshape(n, -1) @ w + b, 1)
    eps, steps = (0.08 if norm == "linf" else 0.2), 50
    key = jax.random.key(5)
    with jax.enable_x64(True):
        f = _linear(jnp.asarray(w), jnp.asarray(b))
        start_key = jax.random.fold_in(key, 0)                # restart 0's key (documented)
        if norm == "linf":
            u = np.asarray(jax.random.uniform(start_key, x.shape, jnp.float64))   # torch: t = 2·rand − 1
        else:
            u = np.asarray(jax.random.normal(start_key, x.shape, jnp.float64))
        target = None
        if targeted:
            target = jnp.asarray(np.argsort(x.reshape(n, -1) @ w + b, 1)[:, -2])  # APGDT's target_class = 2
        ours = np.asarray(attacks.apgd(f, jnp.asarray(x), jnp.asarray(y), eps=eps, key=key, steps=steps, norm=norm,
                                       loss=loss, target=target))
    monkeypatch.setattr(torch, "rand", lambda *a, **kw: torch.from_numpy(u.copy()))
    monkeypatch.setattr(torch, "randn", lambda *a, **kw: torch.from_numpy(u.copy()))
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)      # the reference makes its step sizes and loss history in it
    try:
        model = _torch_model(w, b)
        tn = {"linf": "Linf", "l2": "L2"}[norm]
        if targeted:
            ref = torchattacks.APGDT(model, norm=tn, eps=eps, steps=steps, n_classes=k)
            ref.target_class = 2
        else:
            ref = torchattacks.APGD(model, norm=tn, eps=eps, steps=steps, loss=loss)
        x_best, robust, _, x_best_adv = ref.attack_single_run(torch.from_numpy(x), torch.from_numpy(y))
    finally:
        torch.set_default_dtype(default_dtype)
    robust = robust.numpy().astype(bool)
    expected = np.where(robust[:, None, None, None], x_best.detach().numpy(), x_best_adv.detach().numpy())
    assert 0 < robust.sum() < n
    np.testing.assert_allclose(ours, expected, atol=1e-9)


def test_apgd_rejects_bad_input():
    f = _linear(jnp.ones((4, 5)), jnp.zeros(5))
    x, y = jnp.full((3, 2, 2, 1), 0.5), jnp.zeros(3, jnp.int32)
    with pytest.raises(ValueError, match="PRNG key"):
        attacks.apgd(f, x, y, eps=0.1, key=None)
    with pytest.raises(ValueError, match="typed PRNG key"):
        attacks.apgd(f, x, y, eps=0.1, key=jax.random.PRNGKey(0))
    for kw, msg in [({"loss": "hinge"}, "unknown APGD loss"), ({"norm": "l1"}, "unknown attack norm"),
                    ({"steps": 0}, "steps must be ≥ 1"), ({"eps": -1.0}, "eps must be ≥ 0"),
                    ({"rho": 0.0}, "rho"), ({"restarts": 0}, "restarts")]:
        with pytest.raises(ValueError, match=msg):
            attacks.apgd(f, x, y, **{"eps": 0.1, "key": jax.random.key(0), **kw})
    with pytest.raises(ValueError, match="one integer label per example"):
        attacks.apgd(f, x, jnp.zeros(4, jnp.int32), eps=0.1, key=jax.random.key(0))
    # the DLR losses' class counts, checked once at the entry point
    with pytest.raises(ValueError, match="the DLR loss needs at least 3 classes"):
        attacks.apgd(_linear(jnp.ones((4, 2)), jnp.zeros(2)), x, y, eps=0.1, key=jax.random.key(0), loss="dlr")
    with pytest.raises(ValueError, match="the targeted DLR loss needs at least 4 classes"):
        attacks.apgd(_linear(jnp.ones((4, 3)), jnp.zeros(3)), x, y, eps=0.1, key=jax.random.key(0), loss="dlr",
                     target=jnp.ones(3, jnp.int32))


# --------------------------------------------------------------------- robust accuracy, flags


def test_robust_accuracy_is_the_analytic_robust_share_of_a_linear_model():
    w, b, x, y = _linear_problem(3, n=64)
    eps = 0.15
    m = _analytic_margin(w, b, x, y, eps)
    f = _linear(jnp.asarray(w), jnp.asarray(b))
    r = attacks.robust_accuracy(f, jnp.asarray(x), jnp.asarray(y), eps=eps, key=jax.random.key(0), steps=20,
                                pgd_steps=5, batch_size=16)
    clear = np.abs(m) > 1e-3
    np.testing.assert_array_equal(np.asarray(r.robust)[clear], (m > 0)[clear])
    assert float(r.clean_accuracy) == 1.0
    # worst case per example: robust only when every attack failed; the sequence only lowers it
    cum = [float(r.cumulative_accuracy[a]) for a in ("fgsm", "pgd", "apgd-ce", "apgd-t")]
    assert cum == sorted(cum, reverse=True)
    assert float(r.robust_accuracy) == pytest.approx(cum[-1])
    assert float(r.robust_accuracy) <= min(float(v) for v in r.attack_accuracy.values())
    assert float(r.robust_accuracy) == pytest.approx(np.mean(np.asarray(r.robust)))
    # a linear model has honest gradients: no flag
    assert not bool(r.zero_gradients) and not bool(r.weaker_beats_stronger) and r.messages() == []


def test_apgd_t_only_removes_robust_examples():
    # APGD-T runs on the survivors of the other attacks: with it the robust set can only shrink.
    w, b, x, y = _linear_problem(5, n=48)
    f = _linear(jnp.asarray(w), jnp.asarray(b))
    r = attacks.robust_accuracy(f, jnp.asarray(x), jnp.asarray(y), eps=0.15, key=jax.random.key(1), steps=10,
                                pgd_steps=3, n_targets=3, batch_size=8)
    r0 = attacks.robust_accuracy(f, jnp.asarray(x), jnp.asarray(y), eps=0.15, key=jax.random.key(1), steps=10,
                                 pgd_steps=3, n_targets=0)
    assert "apgd-t" not in r0.cumulative_accuracy
    assert float(r0.robust_accuracy) <= min(float(v) for v in r0.attack_accuracy.values())
    assert np.all(np.asarray(r.robust) <= np.asarray(r0.robust))


def test_masking_flags_fire_on_a_model_without_gradients():
    # logits through jnp.round: the input gradient is exactly zero, every gradient attack is blind
    w = jnp.asarray(np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32))

    def rounded(x):
        return jnp.round(_linear(w, jnp.zeros(4))(x) * 4) / 4

    x = jnp.asarray(np.random.default_rng(1).uniform(0.3, 0.7, size=(40, 3, 4, 1)).astype(np.float32))
    y = jnp.argmax(rounded(x), -1)
    r = attacks.robust_accuracy(rounded, x, y, eps=0.3, key=jax.random.key(0), steps=5, pgd_steps=2, n_targets=2)
    assert float(r.zero_grad_share) == 1.0
    assert bool(r.zero_gradients)
    msgs = r.messages()
    assert len(msgs) == 1 and "exactly zero input gradient" in msgs[0] and "100.0%" in msgs[0]
    # the same weights without rounding: the attacks work and no flag is raised
    honest = attacks.robust_accuracy(_linear(w, jnp.zeros(4)), x, y, eps=0.3, key=jax.random.key(0), steps=5,
                                     pgd_steps=2, n_targets=2)
    assert float(honest.robust_accuracy) < float(r.robust_accuracy)
    assert not bool(honest.zero_gradients)


def test_masking_flag_rules():
    zero, inv = attacks.masking_flags({"fgsm": 0.5, "pgd": 0.4, "apgd-ce": 0.38}, 0.0)
    assert not bool(zero) and not bool(inv)
    _, inv = attacks.masking_flags({"fgsm": 0.5, "pgd": 0.4, "apgd-ce": 0.45}, 0.0)      # APGD worse than PGD
    assert bool(inv)
    _, inv = attacks.masking_flags({"fgsm": 0.3, "pgd": 0.4}, 0.0)                       # PGD worse than FGSM
    assert bool(inv)
    _, inv = attacks.masking_flags({"fgsm": 0.3, "pgd": 0.305}, 0.0, tol=0.01)           # within tolerance
    assert not bool(inv)
    zero, _ = attacks.masking_flags({"pgd": 0.3}, 0.02, tol=0.01)
    assert bool(zero)
    r = attacks.RobustResult(jnp.float32(0.1), jnp.float32(0.9), jnp.float32(0.3),
                             {"fgsm": jnp.float32(0.3), "pgd": jnp.float32(0.4), "apgd-ce": jnp.float32(0.3)},
                             {}, jnp.zeros(4, bool), jnp.float32(0.0), jnp.bool_(False), jnp.bool_(True))
    (msg,) = r.messages()
    assert "stronger attack did worse than a weaker" in msg and "pgd 40.00%" in msg


def test_robust_accuracy_rejects_bad_options():
    f = _linear(jnp.ones((4, 3)), jnp.zeros(3))
    x, y = jnp.full((3, 2, 2, 1), 0.5), jnp.zeros(3, jnp.int32)
    with pytest.raises(ValueError, match="at least 4 classes"):
        attacks.robust_accuracy(f, x, y, eps=0.1, key=jax.random.key(0), n_targets=2)
    with pytest.raises(ValueError, match="n_targets must be an integer in"):
        attacks.robust_accuracy(f, x, y, eps=0.1, key=jax.random.key(0), n_targets=5)
    with pytest.raises(ValueError, match="typed PRNG key"):
        attacks.robust_accuracy(f, x, y, eps=0.1, key=jax.random.PRNGKey(0), n_targets=0)


# -------------------------------------------------------------------------- robustness curves


def test_robustness_curve_of_8_eps_compiles_once_and_equals_single_attacks():
    w, b, x, y = _linear_problem(7, n=32)
    f = _linear(jnp.asarray(w), jnp.asarray(b))
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    eps = jnp.linspace(0.0, 0.14, 8)
    before = len(_compiled)
    curve = attacks.robustness_curve(f, xj, yj, eps, attack="pgd", steps=4)
    jax.block_until_ready(curve)
    mine = [n for n in _compiled[before:] if "_curve_jit" in n]
    assert len(mine) == 1, _compiled[before:]
    # another vector of 8 radii: the compiled program is reused
    before = len(_compiled)
    again = attacks.robustness_curve(f, xj, yj, eps + 0.01, attack="pgd", steps=4)
    jax.block_until_ready(again)
    assert [n for n in _compiled[before:] if "_curve_jit" in n] == []
    for i, e in enumerate(np.asarray(eps)):
        x_adv = attacks.pgd(f, xj, yj, eps=float(e), step_size=max(2.5 * float(e) / 4, 1e-3), steps=4)
        assert float(curve.accuracy[i]) == pytest.approx(float(jnp.mean(jnp.argmax(f(x_adv), -1) == yj)))
    acc = np.asarray(curve.accuracy)
    assert acc[0] == 1.0 and acc[-1] < 0.5 and np.all(np.diff(acc) <= 0)
    assert not bool(curve.non_monotone) and curve.messages() == []
    # the analytic robust share bounds every attack's accuracy from below
    for i, e in enumerate(np.asarray(eps)):
        assert acc[i] >= np.mean(_analytic_margin(w, b, x, y, float(e)) > 1e-4) - 1e-6


def test_robustness_curve_flags_accuracy_rising_with_eps():
    # A model whose correct region is a band in the mean pixel value u: FGSM moves u by −ε and, at a
    # large ε, jumps over the wrong band back into a correct one — accuracy rises with ε.
    def banded(x):
        u = jnp.mean(x.reshape(x.shape[0], -1), axis=1)
        s = jnp.cos(2 * jnp.pi * (u - 0.5) / 0.4)
        return jnp.stack([s, -s], axis=1)

    x = jnp.full((6, 2, 2, 1), 0.49)
    y = jnp.zeros(6, jnp.int32)
    curve = attacks.robustness_curve(banded, x, y, jnp.array([0.0, 0.05, 0.15, 0.35]), attack="fgsm")
    np.testing.assert_allclose(np.asarray(curve.accuracy), [1.0, 1.0, 0.0, 1.0])
    assert bool(curve.non_monotone)
    (msg,) = curve.messages()
    assert "accuracy rises with eps" in msg


def test_robustness_curve_of_robust_accuracy_matches_single_calls():
    w, b, x, y = _linear_problem(8, n=24)
    f = _linear(jnp.asarray(w), jnp.asarray(b))
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    eps = jnp.array([0.1, 0.2])
    curve = attacks.robustness_curve(f, xj, yj, eps, attack="robust", key=jax.random.key(0), steps=8,
                                     n_targets=3, pgd_steps=3, batch_size=8)
    assert curve.detail.robust.shape == (2, 24)
    for i, e in enumerate(np.asarray(eps)):
        m = _analytic_margin(w, b, x, y, float(e))
        clear = np.abs(m) > 1e-3
        np.testing.assert_array_equal(np.asarray(curve.detail.robust[i])[clear], (m > 0)[clear])
    np.testing.assert_allclose(np.asarray(curve.accuracy), np.asarray(curve.detail.robust_accuracy))


def test_robustness_curve_rejects_bad_input():
    f = _linear(jnp.ones((4, 5)), jnp.zeros(5))
    x, y = jnp.full((3, 2, 2, 1), 0.5), jnp.zeros(3, jnp.int32)
    with pytest.raises(ValueError, match="ascending"):
        attacks.robustness_curve(f, x, y, [0.1, 0.05])
    with pytest.raises(ValueError, match="unknown curve attack"):
        attacks.robustness_curve(f, x, y, [0.1], attack="cw")
    with pytest.raises(ValueError, match="options of attack='robust' only"):
        attacks.robustness_curve(f, x, y, [0.1], n_targets=3)
    with pytest.raises(ValueError, match="PRNG key"):
        attacks.robustness_curve(f, x, y, [0.1], attack="apgd")
    with pytest.raises(ValueError, match="pgd restarts must be a positive integer"):
        attacks.robustness_curve(f, x, y, [0.1], attack="pgd", restarts=0)


# ------------------------------------------------------------------ the docs' quick start


def test_quick_start_in_the_docs_runs_as_written(capsys):
    text = (Path(__file__).resolve().parents[1] / "docs" / "library.md").read_text()
    section = text.split("## Evaluate my model's robustness", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/library.md: Evaluate my model's robustness", "exec"), namespace)
    r, curve = namespace["r"], namespace["curve"]
    assert isinstance(r, attacks.RobustResult) and isinstance(curve, attacks.RobustnessCurve)
    assert 0.0 <= float(r.robust_accuracy) <= float(r.clean_accuracy) <= 1.0
    assert curve.accuracy.shape == (8,)
    assert capsys.readouterr().out.strip()
