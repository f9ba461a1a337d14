import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.inference import maml, train
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import linear, mlp
from bayesmeta.tasks import Support, TaskBatch, sample_batch, sinusoid


@pytest.fixture
def lin_model():
    return HierarchicalModel(linear(), noise_init=0.5)


def _batch(key, t=3, k=4, q=5):
    kx, ky, kq, kqy = jax.random.split(key, 4)
    xs = jax.random.uniform(kx, (t, k, 1), minval=-2, maxval=2)
    xq = jax.random.uniform(kq, (t, q, 1), minval=-2, maxval=2)
    ys = 1.5 * xs - 0.3 + 0.1 * jax.random.normal(ky, xs.shape)
    yq = 1.5 * xq - 0.3 + 0.1 * jax.random.normal(kqy, xq.shape)
    mask = jnp.ones((t, k)).at[0, -1].set(0.0)
    return TaskBatch(xs, ys, mask, xq, yq)


def _hand_adapt(mu, alpha, x, y, mask, steps):
    """Gradient descent on ½ mean (y − (w x + b))² for φ = (b, w), written out by hand."""
    b, w = float(mu[0]), float(mu[1])
    x, y, m = np.asarray(x)[:, 0], np.asarray(y)[:, 0], np.asarray(mask)
    n = max(m.sum(), 1.0)
    for _ in range(steps):
        r = (y - (w * x + b)) * m
        gb, gw = -r.sum() / n, -(r * x).sum() / n
        b, w = b - alpha * gb, w - alpha * gw
    return np.array([b, w])


@pytest.mark.parametrize("jit", [False, True])
def test_inner_update_matches_hand_computation(lin_model, key, jit):
    method = maml(lin_model, inner_steps=3, inner_lr=0.1, max_inner_update=None)
    state = method.init(key)
    state = state._replace(theta={**state.theta, "mu": jnp.array([0.2, -0.4])})
    batch = _batch(key)
    adapt = jax.jit(method.adapt, static_argnums=3) if jit else method.adapt
    post = adapt(key, state, Support(batch.x_support, batch.y_support, batch.mask_support), 1)
    for i in range(3):
        expected = _hand_adapt(
            state.theta["mu"], 0.1, batch.x_support[i], batch.y_support[i], batch.mask_support[i], 3
        )
        np.testing.assert_allclose(post.phi[i, 0], expected, rtol=1e-5, atol=1e-6)


def test_meta_gradient_is_second_order_and_matches_finite_differences(lin_model, key):
    """The meta-gradient w.r.t. μ through one inner step equals central differences of the
    meta-loss, and differs from the first-order approximation (so second-order terms count)."""
    jax.config.update("jax_enable_x64", True)
    try:
        batch = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), _batch(key))

        def meta_loss(mu, first_order):
            m = maml(
                lin_model,
                inner_steps=1,
                inner_lr=0.3,
                max_inner_update=None,
                first_order=first_order,
            )
            st = m.init(key)
            theta = {**jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), st.theta), "mu": mu}
            st = st._replace(theta=theta, opt_state=m.init(key).opt_state)
            _, info = m.meta_step(key, st, batch)
            return info.loss

        mu = jnp.array([0.2, -0.4], jnp.float64)
        m2 = maml(lin_model, inner_steps=1, inner_lr=0.3, max_inner_update=None)
        st = m2.init(key)
        theta = {**jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), st.theta), "mu": mu}
        # gradient through the public loss: differentiate meta_step's loss via jax.grad
        g = jax.grad(lambda u: meta_loss(u, False))(mu)
        eps = 1e-6
        fd = np.array(
            [
                (meta_loss(mu.at[i].add(eps), False) - meta_loss(mu.at[i].add(-eps), False))
                / (2 * eps)
                for i in range(2)
            ]
        )
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)
        g1 = jax.grad(lambda u: meta_loss(u, True))(mu)
        assert np.max(np.abs(np.asarray(g1) - np.asarray(g))) > 1e-3
        del theta
    finally:
        jax.config.update("jax_enable_x64", False)


def test_meta_sgd_has_per_weight_step_sizes(lin_model, key):
    st = maml(lin_model, meta_sgd=True).init(key)
    assert st.theta["log_inner_lr"].shape == (lin_model.num_params,)
    assert maml(lin_model).init(key).theta["log_inner_lr"].shape == ()


def test_meta_step_jitted_equals_eager_and_traces_once(key):
    model = HierarchicalModel(mlp((1, 16, 1)), noise_init=0.5)
    method = maml(model, inner_steps=2)
    fam = sinusoid()
    state = method.init(key)
    batch, _ = sample_batch(fam, key, 4, (1, 5), 6)
    s_eager, i_eager = method.meta_step(key, state, batch)
    traces = []

    def counted(k, s, b):
        traces.append(1)
        return method.meta_step(k, s, b)

    step = jax.jit(counted)
    s_jit, i_jit = step(key, state, batch)
    np.testing.assert_allclose(i_eager.loss, i_jit.loss, rtol=1e-5)
    np.testing.assert_allclose(s_eager.theta["mu"], s_jit.theta["mu"], rtol=1e-5, atol=1e-7)
    for i in range(3):
        b, _ = sample_batch(fam, jax.random.PRNGKey(i), 4, (1, 5), 6)
        s_jit, _ = step(key, s_jit, b)
    assert len(traces) == 1


def test_maml_learns_sinusoid_better_than_its_initialisation(key):
    model = HierarchicalModel(mlp((1, 32, 32, 1)), noise_init=0.5)
    method = maml(model, inner_steps=2, inner_lr=0.01, lr=3e-3)
    fam = sinusoid()
    sampler = lambda k: sample_batch(fam, k, 10, (5, 5), 10)[0]
    state = method.init(key)
    res = train(method, state, sampler, jax.random.PRNGKey(1), 600, chunk_size=200, progress=False)
    assert res.history["loss"][-1] < res.history["loss"][0] - 0.3
    assert math.isfinite(res.history["loss"][-1])
