import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmi import attacks
from jaxmi.attacks import checks

EPS, STEP = 0.1, 0.03


def _linear(w, b):
    return lambda x: x.reshape(x.shape[0], -1) @ w + b


@pytest.fixture
def toy():
    k = jax.random.split(jax.random.key(0), 4)
    w = jax.random.normal(k[0], (12, 3))
    b = jax.random.normal(k[1], (3,)) * 0.1
    x = jax.random.uniform(k[2], (16, 2, 2, 3))
    y = jax.random.randint(k[3], (16,), 0, 3)
    return w, b, x, y


def _ce(logits_fn, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits_fn(x), y)


def test_fgsm_matches_numpy_reference(toy):
    w, b, x, y = toy
    x_adv = attacks.fgsm(_linear(w, b), x, y, eps=EPS)
    # Independent reference: d CE / dx = (softmax(z) − onehot(y)) Wᵀ for a linear model, float64.
    xn = np.asarray(x, np.float64).reshape(16, -1)
    z = xn @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = (p - np.eye(3)[np.asarray(y)]) @ np.asarray(w, np.float64).T
    ref = np.clip(xn + EPS * np.sign(g), 0, 1).reshape(x.shape)
    np.testing.assert_allclose(np.asarray(x_adv), ref, atol=1e-6)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_stays_in_ball_and_box_and_raises_loss(toy, random_start):
    w, b, x, y = toy
    f = _linear(w, b)
    x_adv = attacks.pgd(f, x, y, eps=EPS, step_size=STEP, steps=7, key=jax.random.key(3),
                        random_start=random_start)
    assert float(jnp.max(jnp.abs(x_adv - x))) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float(_ce(f, x_adv, y).mean()) > float(_ce(f, x, y).mean()) + 0.05
    # the loss never falls below the clean loss per example for a linear model's sign ascent from x
    if not random_start:
        assert np.all(np.asarray(_ce(f, x_adv, y)) >= np.asarray(_ce(f, x, y)) - 1e-5)


def test_pgd_zero_steps_and_zero_eps_are_identity(toy):
    w, b, x, y = toy
    f = _linear(w, b)
    np.testing.assert_array_equal(attacks.pgd(f, x, y, eps=EPS, step_size=STEP, steps=0), x)
    np.testing.assert_allclose(attacks.pgd(f, x, y, eps=0.0, step_size=STEP, steps=3), x)


def test_pgd_jits_and_vmaps(toy):
    w, b, x, y = toy
    f = _linear(w, b)
    batched = jax.jit(lambda x, y: attacks.pgd(f, x, y, eps=EPS, step_size=STEP, steps=5))(x, y)
    # per-example attacks (vmapped over singleton batches) equal the batched attack: the loss is a sum
    per_ex = jax.vmap(lambda xi, yi: attacks.pgd(f, xi[None], yi[None], eps=EPS, step_size=STEP, steps=5)[0])(x, y)
    np.testing.assert_allclose(np.asarray(batched), np.asarray(per_ex), atol=1e-6)


def test_pgd_breaks_a_trained_toy_model():
    # Two Gaussian blobs in 16-D, separable with margin ~ 0.2 per coordinate: a logistic
    # regression learns them; an ε = 0.15 L∞ attack crosses the margin.
    k = jax.random.split(jax.random.key(1), 3)
    y = jax.random.randint(k[0], (400,), 0, 2)
    centres = jnp.where(y[:, None] == 1, 0.6, 0.4)
    x = jnp.clip(centres + 0.05 * jax.random.normal(k[1], (400, 16)), 0, 1).reshape(400, 4, 4, 1)
    params = (jnp.zeros((16, 2)), jnp.zeros((2,)))

    def loss(p):
        return _ce(_linear(*p), x, y).mean()

    opt = optax.sgd(1.0)
    st = opt.init(params)
    for _ in range(200):
        g = jax.grad(loss)(params)
        u, st = opt.update(g, st)
        params = optax.apply_updates(params, u)
    f = _linear(*params)
    clean_acc = float((jnp.argmax(f(x), -1) == y).mean())
    x_adv = attacks.pgd(f, x, y, eps=0.15, step_size=0.05, steps=5)
    adv_acc = float((jnp.argmax(f(x_adv), -1) == y).mean())
    assert clean_acc > 0.98
    assert adv_acc < 0.05


def test_pgd_random_start_needs_key(toy):
    w, b, x, y = toy
    with pytest.raises(ValueError, match="PRNG key"):
        attacks.pgd(_linear(w, b), x, y, eps=EPS, step_size=STEP, steps=1, random_start=True)


@pytest.mark.parametrize("kw,msg", [({"eps": -0.1}, "eps must be ≥ 0"), ({"step_size": 0.0}, "step size must be > 0"),
                                    ({"steps": -1}, "steps must be a non-negative integer")])
def test_bad_attack_parameters(toy, kw, msg):
    w, b, x, y = toy
    args = {"eps": EPS, "step_size": STEP, "steps": 2, **kw}
    with pytest.raises(ValueError, match=msg):
        attacks.pgd(_linear(w, b), x, y, **args)
    with pytest.raises(ValueError, match=msg):
        attacks.PGDConfig(args["eps"], args["step_size"], args["steps"])


# ------------------------------------------------------------ composability, L2, targeted


def test_validation_checks_concrete_values_and_skips_traced_ones(toy):
    w, b, x, y = toy
    f = _linear(w, b)
    # traced eps/step under jit and vmap: no Python comparison on tracers
    run = jax.jit(lambda e, s: attacks.pgd(f, x, y, eps=e, step_size=s, steps=3))
    np.testing.assert_allclose(np.asarray(run(EPS, STEP)),
                               np.asarray(attacks.pgd(f, x, y, eps=EPS, step_size=STEP, steps=3)), atol=1e-6)
    with pytest.raises(ValueError, match="eps must be ≥ 0"):
        attacks.pgd(f, x, y, eps=jnp.float32(-0.1), step_size=STEP, steps=3)  # concrete array: still checked
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        attacks.pgd(f, x, y, eps=EPS, step_size=STEP, steps=2.5)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_vmap_over_eps_equals_one_attack_per_eps(toy, norm):
    w, b, x, y = toy
    f = _linear(w, b)
    eps = jnp.array([0.0, 0.05, 0.1, 0.3])
    curve = jax.jit(jax.vmap(lambda e: attacks.pgd(f, x, y, eps=e, step_size=e / 2 + 1e-3, steps=4, norm=norm)))(eps)
    for i, e in enumerate(np.asarray(eps)):
        one = attacks.pgd(f, x, y, eps=float(e), step_size=float(e) / 2 + 1e-3, steps=4, norm=norm)
        np.testing.assert_allclose(np.asarray(curve[i]), np.asarray(one), atol=1e-6)


def _softmax64(z):
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_one_pgd_step_matches_float64_numpy(toy, norm, targeted):
    w, b, x, y = toy
    t = (np.asarray(y) + 1) % 3
    eps, alpha = 0.5, 0.2
    x_adv = attacks.pgd(_linear(w, b), x, y, eps=eps, step_size=alpha, steps=1, norm=norm,
                        target=jnp.asarray(t) if targeted else None)
    xn = np.asarray(x, np.float64).reshape(16, -1)
    wn = np.asarray(w, np.float64)
    p = _softmax64(xn @ wn + np.asarray(b, np.float64))
    g = (p - np.eye(3)[np.asarray(y)]) @ wn.T          # ∂CE(y)/∂x
    if targeted:
        g = -(p - np.eye(3)[t]) @ wn.T                 # ∂(−CE(t))/∂x
    if norm == "linf":
        ref = np.clip(xn + alpha * np.sign(g), np.maximum(xn - eps, 0), np.minimum(xn + eps, 1))
    else:
        d = alpha * g / np.linalg.norm(g, axis=1, keepdims=True)   # α ≤ ε: inside the ball, only the box clips
        ref = np.clip(xn + d, 0, 1)
    np.testing.assert_allclose(np.asarray(x_adv).reshape(16, -1), ref, atol=2e-6)


def test_l2_projection_properties():
    k = jax.random.split(jax.random.key(7), 3)
    w = jax.random.normal(k[0], (48, 5))
    x = jax.random.uniform(k[1], (32, 4, 4, 3))
    y = jax.random.randint(k[2], (32,), 0, 5)
    f = _linear(w, jnp.zeros(5))
    eps = jnp.array([0.05, 0.5, 2.0])
    x_adv = jax.jit(jax.vmap(lambda e: attacks.pgd(f, x, y, eps=e, step_size=e / 2, steps=6, norm="l2",
                                                   key=jax.random.key(1), random_start=True)))(eps)
    norms = np.linalg.norm(np.asarray(x_adv - x).reshape(3, 32, -1), axis=2)
    assert np.all(norms <= np.asarray(eps)[:, None] * (1 + 1e-5))
    assert norms[-1].max() > 1.0          # a large ball is used, not just its centre
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    # Away from the box, a step longer than ε lands exactly on the sphere, along the gradient.
    xc = jnp.full((4, 4, 4, 3), 0.5)
    yc = jnp.zeros(4, jnp.int32)
    out = attacks.pgd(f, xc, yc, eps=0.1, step_size=1.0, steps=1, norm="l2")
    d = np.asarray(out - xc).reshape(4, -1)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 0.1, rtol=1e-5)
    g = np.asarray(jax.grad(lambda z: _ce(f, z, yc).sum())(xc)).reshape(4, -1)
    np.testing.assert_allclose(d / 0.1, g / np.linalg.norm(g, axis=1, keepdims=True), atol=1e-5)


def _binary_linear(seed, n=64, d=20):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, 2)).astype(np.float32)
    b = rng.normal(size=2).astype(np.float32) * 0.1
    x = rng.uniform(0.3, 0.7, size=(n, 4, 5, 1)).astype(np.float32)   # ≥ 0.3 from the box: ε ≤ 0.3 never clips
    y = np.argmax(x.reshape(n, -1) @ w + b, 1).astype(np.int32)
    return w, b, x, y


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_reaches_the_analytic_worst_case_of_a_linear_model(norm):
    # Binary linear model: the margin m(x) = (w_y − w_o)·x + (b_y − b_o) is smallest over the ε-ball
    # at x − ε·sign(Δw) (L∞: m − ε‖Δw‖₁) or x − ε·Δw/‖Δw‖₂ (L2: m − ε‖Δw‖₂), inside the box here.
    w, b, x, y = _binary_linear(0)
    eps = 0.1 if norm == "linf" else 0.5
    x_adv = attacks.pgd(_linear(jnp.asarray(w), jnp.asarray(b)), jnp.asarray(x), jnp.asarray(y), eps=eps,
                        step_size=eps / 3, steps=5, norm=norm)
    w64, b64 = w.astype(np.float64), b.astype(np.float64)
    dw = (w64[:, y] - w64[:, 1 - y]).T                           # [N, D]
    db = b64[y] - b64[1 - y]

    def margin(xx):
        return np.sum(np.asarray(xx, np.float64).reshape(len(y), -1) * dw, 1) + db

    worst = margin(x) - eps * (np.abs(dw).sum(1) if norm == "linf" else np.linalg.norm(dw, axis=1))
    np.testing.assert_allclose(margin(x_adv), worst, atol=1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_pgd_reaches_the_target(norm):
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(size=(20, 5)).astype(np.float32))
    x = jnp.asarray(rng.uniform(0.3, 0.7, size=(40, 4, 5, 1)).astype(np.float32))
    f = _linear(w, jnp.zeros(5))
    y = jnp.argmax(f(x), -1)
    target = (y + 1 + jnp.arange(40) % 4) % 5                    # every other class, never y
    eps = 0.3 if norm == "linf" else 1.5
    attack = jax.jit(lambda t: attacks.pgd(f, x, y, eps=eps, step_size=eps / 5, steps=10, norm=norm, target=t,
                                           unroll=False))
    x_adv = attack(target)
    assert float(jnp.mean(jnp.argmax(f(x_adv), -1) == target)) == 1.0
    # the untargeted attack on the same inputs lands elsewhere for some examples
    x_u = jax.jit(lambda: attacks.pgd(f, x, y, eps=eps, step_size=eps / 5, steps=10, norm=norm, unroll=False))()
    assert float(jnp.mean(jnp.argmax(f(x_u), -1) == target)) < 1.0


def test_pgd_restarts_pick_the_first_success_else_the_highest_loss(toy):
    w, b, x, y = toy
    f = _linear(w, b)
    key = jax.random.key(0)
    kw = dict(eps=0.05, step_size=0.02, steps=3, random_start=True)
    many = np.asarray(attacks.pgd(f, x, y, key=key, restarts=4, **kw))
    # reference: the four runs one by one (restart r starts from fold_in(key, r)) and the rule in NumPy
    runs = [np.asarray(attacks.pgd(f, x, y, key=jax.random.fold_in(key, r), **kw)) for r in range(4)]
    loss = np.stack([np.asarray(_ce(f, jnp.asarray(r), y)) for r in runs])          # [R, B]
    fooled = np.stack([np.asarray(jnp.argmax(f(jnp.asarray(r)), -1) != y) for r in runs])
    for i in range(16):
        pick = int(np.argmax(fooled[:, i])) if fooled[:, i].any() else int(np.argmax(loss[:, i]))
        np.testing.assert_array_equal(many[i], runs[pick][i])
    assert np.abs(many - np.asarray(x)).max() <= 0.05 + 1e-6
    with pytest.raises(ValueError, match="random_start=True"):
        attacks.pgd(f, x, y, eps=0.05, step_size=0.02, steps=3, restarts=2)


@pytest.mark.parametrize("kw,msg", [({"norm": "l1"}, "unknown attack norm"), ({"restarts": 0}, "restarts"),
                                    ({"target": jnp.zeros(3, jnp.int32)}, "target must hold one")])
def test_bad_pgd_options(toy, kw, msg):
    w, b, x, y = toy
    with pytest.raises(ValueError, match=msg):
        attacks.pgd(_linear(w, b), x, y, eps=EPS, step_size=STEP, steps=2, **kw)


def test_arguments_are_checked_once_at_the_public_entry_point(toy, monkeypatch):
    # The cores check nothing: a concrete eps or step size is looked at once per public call,
    # also where robust_accuracy and robustness_curve run PGD, FGSM and APGD inside.
    w, b, x, y = toy
    f = _linear(w, b)
    seen = []
    concrete = checks.concrete
    monkeypatch.setattr(checks, "concrete", lambda v: seen.append(v) or concrete(v))
    # The images and labels cost one reduction and one host read per call (one stats vector).
    attacks.pgd(f, x, y, eps=EPS, step_size=STEP, steps=2)
    assert len(seen) == 3                                        # eps, step size, the data's stats
    seen.clear()
    attacks.robust_accuracy(f, x, y, eps=EPS, key=jax.random.key(0), steps=2, pgd_steps=1, n_targets=0)
    assert len(seen) == 2                                        # eps, the data's stats
    seen.clear()
    attacks.robustness_curve(f, x, y, [0.05, 0.1], attack="pgd", steps=2)
    assert len(seen) == 2                                        # the eps vector, the data's stats


# ------------------------------------------------- the public attacks run a compiled core


def _tanh_model():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(48, 10)).astype(np.float32))
    x = jnp.asarray(rng.uniform(0, 1, size=(32, 4, 4, 3)).astype(np.float32))
    return (lambda z: jnp.tanh(z.reshape(z.shape[0], -1) @ w)), x, jnp.arange(32, dtype=jnp.int32) % 10


def test_compiled_attacks_equal_the_eager_cores():
    # The public attacks check eagerly, then call their core under jax.jit; the cores run op
    # by op here. Where XLA fuses nothing that rounds differently the results are bit-identical
    # (FGSM, PGD L∞ and L2 from the clean image, targeted PGD, APGD-CE L∞, APGD-T L∞).
    # Measured on a 2-core x86_64 CPU, JAX 0.10.2, where they differ: PGD L2 with a random
    # start up to 1.1e-6 (the start's norm, fused), APGD-DLR L∞ 6e-8; APGD L2 and APGD-T L2 5e-3
    # and 5e-5 (a last-bit difference in a loss comparison flips one step-size halving).
    from jaxmi.attacks.apgd import apgd_targeted_core, apgd_core
    from jaxmi.attacks.pgd import fgsm_core, pgd_core

    f, x, y = _tanh_model()
    key = jax.random.key(1)
    np.testing.assert_array_equal(attacks.fgsm(f, x, y, eps=0.03), fgsm_core(f, x, y, 0.03))
    base = dict(key=key, unroll=True, restarts=1)
    for norm, eps, step in (("linf", 0.03, 0.01), ("l2", 0.5, 0.1)):
        kw = dict(eps=eps, step_size=step, steps=3, norm=norm)
        np.testing.assert_array_equal(attacks.pgd(f, x, y, **kw),
                                      pgd_core(f, x, y, random_start=False, target=None, **base, **kw))
        t = (y + 1) % 10
        np.testing.assert_array_equal(attacks.pgd(f, x, y, target=t, **kw),
                                      pgd_core(f, x, y, random_start=False, target=t, **base, **kw))
        np.testing.assert_allclose(attacks.pgd(f, x, y, random_start=True, key=key, **kw),
                                   pgd_core(f, x, y, random_start=True, target=None, **base, **kw), rtol=0, atol=5e-6,
                                   err_msg=norm)
    apgd_kw = dict(eps=0.03, key=key, steps=5, norm="linf")
    core_kw = dict(target=None, restarts=1, rho=0.75, momentum=0.75, unroll=False)
    np.testing.assert_array_equal(attacks.apgd(f, x, y, loss="ce", **apgd_kw),
                                  apgd_core(f, x, y, loss="ce", **apgd_kw, **core_kw)[0])
    np.testing.assert_allclose(attacks.apgd(f, x, y, loss="dlr", **apgd_kw),
                               apgd_core(f, x, y, loss="dlr", **apgd_kw, **core_kw)[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(
        attacks.apgd_targeted(f, x, y, n_targets=2, batch_size=8, **apgd_kw),
        apgd_targeted_core(f, x, y, n_targets=2, batch_size=8, restarts=1, rho=0.75, clip=(0.0, 1.0), **apgd_kw))


def test_the_logits_function_object_is_the_compile_cache_key(toy):
    from jaxmi.attacks.pgd import pgd_compiled

    w, b, x, y = toy
    f = _linear(w, b)
    attacks.pgd(f, x, y, eps=EPS, step_size=STEP, steps=2)
    n = pgd_compiled._cache_size()
    attacks.pgd(f, x, y, eps=2 * EPS, step_size=STEP / 2, steps=2)   # new ε and α: traced, no new program
    assert pgd_compiled._cache_size() == n
    attacks.pgd(lambda z: f(z), x, y, eps=EPS, step_size=STEP, steps=2)   # a new lambda: compiled again
    assert pgd_compiled._cache_size() == n + 1
