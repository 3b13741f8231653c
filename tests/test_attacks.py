import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmi import attacks

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
