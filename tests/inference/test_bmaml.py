import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.inference import bmaml, linear_gaussian_posterior, svgd, train
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import linear, mlp
from bayesmeta.tasks import Support, TaskBatch, sample_batch, sinusoid

NOISE = 0.5


def _linear_task(key, k=5):
    kx, kw, ke = jax.random.split(key, 3)
    x = jax.random.uniform(kx, (k, 1), minval=-2, maxval=2)
    w, c = jax.random.normal(kw, (2,))
    y = w * x + c + NOISE * jax.random.normal(ke, x.shape)
    return x, y, jnp.ones(k)


@pytest.mark.parametrize("jit", [False, True])
def test_svgd_adaptation_recovers_the_closed_form_posterior(key, jit):
    # Linear model, prior N(0, I) on φ = (b, w), known noise (shared σ_y = 0.5): 100
    # particles drawn from the prior and 400 SVGD steps must give the exact posterior's mean
    # (to 0.01) and standard deviations (within 10% below, SVGD's known under-dispersion).
    model = HierarchicalModel(linear(), noise_init=NOISE)
    m = 100
    method = bmaml(
        model,
        num_particles=m,
        inner_steps=400,
        inner_lr=1.0,
        init_prior_scale=1.0,
        noise="shared",
    )
    state = method.init(key)
    z0 = jax.random.normal(jax.random.PRNGKey(5), (m, 2))
    theta = {**state.theta, "particles": z0, "mu": jnp.zeros(2)}
    state = state._replace(theta=theta)
    x, y, mask = _linear_task(jax.random.PRNGKey(2))
    support = Support(x[None], y[None], mask[None])
    adapt = jax.jit(method.adapt, static_argnums=3) if jit else method.adapt
    post = adapt(key, state, support, m)
    mean, cov = linear_gaussian_posterior(x, y, mask, jnp.zeros(2), jnp.ones(2), NOISE)
    phi = np.asarray(post.phi[0])[:, ::-1]  # (b, w) -> (w, c)
    np.testing.assert_allclose(phi.mean(0), mean, atol=0.01)
    sd = np.sqrt(np.diag(cov))
    assert np.all(phi.std(0, ddof=1) > 0.9 * sd) and np.all(phi.std(0, ddof=1) < 1.02 * sd)
    np.testing.assert_allclose(post.noise_std, NOISE, rtol=1e-6)


def test_adaptation_is_svgd_on_the_model_target(key):
    # BMAML's inner loop is the shared SVGD kernel on its log target, with step α c, c = σ̄²/N.
    model = HierarchicalModel(mlp((1, 8, 1)), noise_init=0.5)
    method = bmaml(model, num_particles=4, inner_steps=3, inner_lr=0.05, max_inner_update=None)
    state = method.init(key)
    x, y, mask = _linear_task(key, k=6)
    theta = state.theta
    score = jax.grad(method.extras["log_target"])

    @jax.jit
    def by_hand(z):
        for _ in range(3):
            c = jnp.mean(jnp.exp(2 * z[:, -1])) / 6
            s = jax.vmap(score, in_axes=(0, None, None, None, None))(z, theta, x, y, mask)
            z = z + 0.05 * c * svgd.direction(z, s)
        return z

    z = by_hand(theta["particles"])
    got = method.extras["particles"](state, Support(x[None], y[None], mask[None]))[0]
    np.testing.assert_allclose(got, z, rtol=1e-5, atol=1e-6)


def test_log_target_has_the_gamma_precision_prior(key):
    model = HierarchicalModel(linear(), noise_init=0.5)
    method = bmaml(model, num_particles=2, noise_prior=(2.0, 0.5))
    theta = method.init(key).theta
    x, y, mask = _linear_task(key)
    phi = jnp.array([0.1, -0.2])
    ln = jnp.log(0.7)
    z = jnp.concatenate([phi, ln[None]])
    gamma = 0.7**-2
    # Gamma(γ; a=2, b=0.5) density times the Jacobian |dγ/d log σ| = 2γ.
    log_gamma = 2 * math.log(0.5) - math.lgamma(2.0) + math.log(gamma) - 0.5 * gamma
    want = (
        model.log_likelihood({"log_noise": ln}, phi, x, y, mask)
        + model.log_prior(theta, phi)
        + log_gamma
        + math.log(2 * gamma)
    )
    got = method.extras["log_target"](z, theta, x, y, mask)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def _batch(key):
    batch, _ = sample_batch(sinusoid(), key, 3, (2, 5), 6)
    return batch


@pytest.mark.parametrize("loss", ["predictive", "chaser"])
def test_meta_gradient_matches_finite_differences(key, loss, monkeypatch):
    # Second-order meta-gradient w.r.t. the initial particles, through 2 SVGD steps and the
    # kernel, against central differences in float64. The median bandwidth and the step's
    # noise rescaling carry no gradient by design, so they are held fixed here (a fixed
    # bandwidth, a shared σ_y) for the differences to see the same map.
    monkeypatch.setattr(svgd, "median_bandwidth", lambda z: jnp.asarray(0.8, z.dtype))
    jax.config.update("jax_enable_x64", True)
    try:
        model = HierarchicalModel(mlp((1, 4, 1)), noise_init=0.5)
        method = bmaml(
            model,
            num_particles=3,
            inner_steps=2,
            leader_steps=2,
            outer=loss,
            inner_lr=0.1,
            max_inner_update=None,
            noise="shared",
        )
        batch = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), _batch(key))
        theta = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), method.init(key).theta)

        @jax.jit
        def meta_loss(z0):
            st = method.init(key)
            th = {**theta, "particles": z0}
            st = st._replace(
                theta=th,
                opt_state=jax.tree_util.tree_map(
                    lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, st.opt_state
                ),
            )
            return method.meta_step(key, st, batch)[1].loss

        z0 = theta["particles"]
        g = jax.grad(meta_loss)(z0)
        reference = meta_loss
        if loss == "chaser":
            # The leader is a constant of the gradient (stop_gradient): differentiate the
            # loss with the leader frozen at its value for z0, rebuilt from the public pieces.
            particles = method.extras["particles"]
            st0 = method.init(key)._replace(theta=theta)
            support = Support(batch.x_support, batch.y_support, batch.mask_support)
            union = Support(
                jnp.concatenate([batch.x_support, batch.x_query], 1),
                jnp.concatenate([batch.y_support, batch.y_query], 1),
                jnp.concatenate([batch.mask_support, jnp.ones(batch.x_query.shape[:2])], 1),
            )
            chaser = particles(st0, support, 2)
            leader = jax.vmap(
                lambda zc, x, y, m: particles(
                    st0._replace(theta={**theta, "particles": zc}),
                    Support(x[None], y[None], m[None]),
                    2,
                )[0]
            )(chaser, *union)

            @jax.jit
            def reference(z0):
                st = st0._replace(theta={**theta, "particles": z0})
                zn = particles(st, support, 2)
                return jnp.mean(jnp.sum((zn - leader) ** 2, (1, 2))) / (3 * z0.shape[1])

            np.testing.assert_allclose(reference(z0), meta_loss(z0), rtol=1e-10)
        rng = np.random.default_rng(0)
        for _ in range(4):
            i, j = rng.integers(z0.shape[0]), rng.integers(z0.shape[1])
            eps = 1e-6
            fd = (reference(z0.at[i, j].add(eps)) - reference(z0.at[i, j].add(-eps))) / (2 * eps)
            np.testing.assert_allclose(g[i, j], fd, rtol=1e-4, atol=1e-9)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_chaser_loss_vanishes_without_leader_steps(key):
    model = HierarchicalModel(mlp((1, 8, 1)), noise_init=0.5)
    method = bmaml(model, num_particles=3, inner_steps=2, leader_steps=0, outer="chaser")
    _, info = jax.jit(method.meta_step)(key, method.init(key), _batch(key))
    assert float(info.loss) == 0.0


def test_first_order_drops_the_svgd_jacobians(key):
    model = HierarchicalModel(mlp((1, 8, 1)), noise_init=0.5)
    batch = _batch(key)
    grads = {}
    for fo in (False, True):
        method = bmaml(model, num_particles=3, inner_steps=2, first_order=fo)
        st = method.init(key)
        new, _ = jax.jit(method.meta_step)(key, st, batch)
        grads[fo] = new.theta["particles"] - st.theta["particles"]
        if fo:
            # No gradient reaches the prior through stopped SVGD directions.
            np.testing.assert_array_equal(new.theta["mu"], st.theta["mu"])
    assert float(jnp.max(jnp.abs(grads[True] - grads[False]))) > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"outer": "chaser"}, marks=pytest.mark.slow),
        pytest.param({"outer": "predictive", "head": "collapsed"}, marks=pytest.mark.slow),
    ],
)
def test_meta_step_jitted_equals_eager_and_traces_once(key, kwargs):
    model = HierarchicalModel(mlp((1, 8, 1)), noise_init=0.5)
    method = bmaml(model, num_particles=3, inner_steps=2, **kwargs)
    state = method.init(key)
    batch = _batch(key)
    s_eager, i_eager = method.meta_step(key, state, batch)
    traces = []

    def counted(k, s, b):
        traces.append(1)
        return method.meta_step(k, s, b)

    step = jax.jit(counted)
    s_jit, i_jit = step(key, state, batch)
    np.testing.assert_allclose(i_eager.loss, i_jit.loss, rtol=1e-4)
    np.testing.assert_allclose(
        s_eager.theta["particles"], s_jit.theta["particles"], rtol=1e-5, atol=1e-7
    )
    for i in range(3):
        s_jit, _ = step(key, s_jit, _batch(jax.random.PRNGKey(i)))
    assert len(traces) == 1


@pytest.mark.parametrize("loss", ["predictive", pytest.param("chaser", marks=pytest.mark.slow)])
def test_meta_training_improves_held_out_predictive(key, loss):
    model = HierarchicalModel(
        mlp((1, 16, 16, 1), activation="tanh"), noise_init=0.5, prior_scale=0.1
    )
    method = bmaml(model, num_particles=4, inner_steps=2, lr=3e-3, outer=loss)
    fam = sinusoid()
    sampler = lambda k: sample_batch(fam, k, 8, (5, 5), 10)[0]  # noqa: E731
    state = method.init(key)
    held: TaskBatch = sample_batch(fam, jax.random.PRNGKey(99), 50, (5, 5), 20)[0]
    support = Support(held.x_support, held.y_support, held.mask_support)

    def nll(st):
        post = method.adapt(key, st, support, 4)
        return -float(jnp.mean(post.log_predictive(held.x_query, held.y_query)))

    before = nll(state)
    res = train(method, state, sampler, jax.random.PRNGKey(1), 400, chunk_size=200, progress=False)
    assert math.isfinite(res.history["loss"][-1])
    assert nll(res.state) < before - 0.2


def test_bad_arguments_are_named(key):
    model = HierarchicalModel(linear())
    for kw, name in [
        ({"outer": "elbo"}, "outer"),
        ({"num_particles": 0}, "num_particles"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"noise_prior": (0.0, 1.0)}, "noise_prior"),
    ]:
        with pytest.raises(ValueError, match=name):
            bmaml(model, **kw)


@pytest.mark.parametrize("jit", [False, True])
def test_collapsed_head_particles_are_bodies_and_samples_draw_exact_heads(key, jit):
    """With ``head="collapsed"`` the particles hold the body and σ_y only; ``adapt`` returns
    M·r equally weighted samples whose bodies repeat the particles (the last layers' exact
    draws are tested in tests/inference/test_heads.py)."""
    model = HierarchicalModel(mlp((1, 8, 1), activation="tanh"), noise_init=0.3)
    method = bmaml(model, num_particles=3, inner_steps=2, head="collapsed")
    state = method.init(key)
    nb = model.num_params - 9
    assert state.theta["particles"].shape == (3, nb + 1)
    batch = _batch(key)
    sup = Support(batch.x_support, batch.y_support, batch.mask_support)
    adapt = jax.jit(method.adapt, static_argnums=3) if jit else method.adapt
    post = adapt(key, state, sup, 12)
    assert post.phi.shape == (sup.x.shape[0], 12, model.num_params)
    z = method.extras["particles"](state, sup)
    np.testing.assert_allclose(post.phi[:, ::4, :nb], z[..., :nb], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(np.asarray(post.log_weights)), 1 / 12, rtol=1e-5)
