import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.inference import platipus, train
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import linear, mlp
from bayesmeta.tasks import Support, TaskBatch, sample_batch, sine_line


@pytest.fixture
def lin_model():
    return HierarchicalModel(linear(), noise_init=0.5, prior_scale=0.3)


def _batch(key, t=3, k=4, q=5):
    kx, ky, kq, kqy = jax.random.split(key, 4)
    xs = jax.random.uniform(kx, (t, k, 1), minval=-2, maxval=2)
    xq = jax.random.uniform(kq, (t, q, 1), minval=-2, maxval=2)
    ys = 1.5 * xs - 0.3 + 0.1 * jax.random.normal(ky, xs.shape)
    yq = 1.5 * xq - 0.3 + 0.1 * jax.random.normal(kqy, xq.shape)
    mask = jnp.ones((t, k)).at[0, -1].set(0.0)
    return TaskBatch(xs, ys, mask, xq, yq)


def _grad_half_mse(phi, x, y, mask):
    """∇ of ½ mean (y − (w x + b))² for φ = (b, w) by hand (the σ_y²-rescaled MAML loss)."""
    b, w = phi
    x, y, m = np.asarray(x)[:, 0], np.asarray(y)[:, 0], np.asarray(mask)
    r = (y - (w * x + b)) * m
    n = max(m.sum(), 1.0)
    return np.array([-r.sum() / n, -(r * x).sum() / n])


@pytest.mark.parametrize("jit", [False, True])
def test_sampler_is_shift_noise_then_gradient_steps(lin_model, key, jit):
    # θ_s = μ − γ_p ∇L(μ; D_tr) + sqrt(v_q) ε_s, then φ_s = θ_s − α ∇L(θ_s; D_tr): with a
    # negligible v_q every sample equals the hand computation.
    method = platipus(lin_model, inner_steps=1, inner_lr=0.2, shift_lr=0.3, max_inner_update=None)
    st = method.init(key)
    mu = jnp.array([0.2, -0.4])
    st = st._replace(theta={**st.theta, "mu": mu, "log_sigma_q": jnp.full(2, -30.0)})
    batch = _batch(key)
    support = Support(batch.x_support, batch.y_support, batch.mask_support)
    adapt = jax.jit(method.adapt, static_argnums=3) if jit else method.adapt
    post = adapt(key, st, support, 3)
    assert post.phi.shape == (3, 3, 2) and post.method == "platipus"
    for i in range(3):
        x, y, m = batch.x_support[i], batch.y_support[i], batch.mask_support[i]
        th = np.asarray(mu) - 0.3 * _grad_half_mse(mu, x, y, m)
        phi = th - 0.2 * _grad_half_mse(th, x, y, m)
        np.testing.assert_allclose(post.phi[i], np.tile(phi, (3, 1)), rtol=1e-5, atol=1e-6)


def test_samples_spread_with_v_q(lin_model, key):
    method = platipus(lin_model, inner_steps=0)
    st = method.init(key)
    st = st._replace(theta={**st.theta, "log_sigma_q": jnp.log(jnp.array([0.5, 2.0]))})
    batch = _batch(key, t=2)
    post = method.adapt(
        key, st, Support(batch.x_support, batch.y_support, batch.mask_support), 4000
    )
    sd = np.asarray(post.phi).std(1)
    np.testing.assert_allclose(sd, [[0.5, 2.0]] * 2, rtol=0.05)


@pytest.mark.parametrize(
    "outer", [pytest.param("elbo", marks=pytest.mark.slow), "predictive", "sampler"]
)
def test_kl_term_is_between_inference_and_prior_shifts(lin_model, key, outer):
    # loss(β=1) − loss(β=0) = mean over tasks of KL(q(θ|D_tr ∪ D_ts) ‖ p(θ|D_tr)) / |D_ts|,
    # with q = N(μ − γ_q ∇L(μ; D_tr ∪ D_ts), v_q) and p = N(μ − γ_p ∇L(μ; D_tr), σ²).
    batch = _batch(key)
    losses = {}
    for beta in (0.0, 1.0):
        m = platipus(lin_model, kl_weight=beta, outer=outer, hyperprior_weight=0.0,
                     max_inner_update=None, shift_lr=0.3)  # fmt: skip
        st = m.init(key)
        th = {
            **st.theta,
            "mu": jnp.array([0.2, -0.4]),
            "log_sigma_q": jnp.log(jnp.array([0.2, 0.1])),
        }
        th["log_gamma_q"] = jnp.log(jnp.array([0.5, 0.4]))
        losses[beta] = float(m.meta_step(key, st._replace(theta=th), batch)[1].loss)
    mu = np.array([0.2, -0.4])
    sig, sq = 0.3, np.array([0.2, 0.1])
    kls = []
    for i in range(3):
        xs, ys, ms = batch.x_support[i], batch.y_support[i], batch.mask_support[i]
        xa = np.concatenate([xs, batch.x_query[i]])
        ya = np.concatenate([ys, batch.y_query[i]])
        ma = np.concatenate([ms, np.ones(5)])
        mp = mu - 0.3 * _grad_half_mse(mu, xs, ys, ms)
        mq = mu - np.array([0.5, 0.4]) * _grad_half_mse(mu, xa, ya, ma)
        kl = np.sum(np.log(sig / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sig**2) - 0.5)
        kls.append(kl / 5)
    np.testing.assert_allclose(losses[1.0] - losses[0.0], np.mean(kls), rtol=1e-4)


def test_sampler_outer_scores_the_test_time_predictive(lin_model, key):
    # With β = 0 and a vanishing v_q, the "sampler" objective is the query NLL of the test-time
    # sample φ(μ − γ_p ∇L(μ; D_tr)), exactly what adapt + log_predictive report; "predictive"
    # scores the sample shifted by γ_q on D_tr ∪ D_ts instead, which has seen the query set.
    batch = _batch(key)
    support = Support(batch.x_support, batch.y_support, batch.mask_support)
    got = {}
    for outer in ("sampler", "predictive"):
        m = platipus(lin_model, kl_weight=0.0, outer=outer, hyperprior_weight=0.0,
                     inner_steps=2, train_samples=3)  # fmt: skip
        st = m.init(key)
        th = {**st.theta, "mu": jnp.array([0.2, -0.4]), "log_sigma_q": jnp.full(2, -12.0)}
        th["log_gamma_q"] = jnp.log(jnp.array([0.5, 0.4]))
        st = st._replace(theta=th)
        got[outer] = float(m.meta_step(key, st, batch)[1].loss)
        post = m.adapt(key, st, support, 3)
        want = -float(jnp.mean(post.log_predictive(batch.x_query, batch.y_query)))
    np.testing.assert_allclose(got["sampler"], want, rtol=1e-5)
    assert abs(got["predictive"] - want) > 1e-3


def test_meta_gradient_matches_finite_differences(lin_model, key):
    jax.config.update("jax_enable_x64", True)
    try:
        batch = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), _batch(key))
        method = platipus(lin_model, inner_steps=2, max_inner_update=None, train_samples=3)
        base = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), method.init(key).theta)

        @jax.jit
        def meta_loss(mu):
            st = method.init(key)
            opt = jax.tree_util.tree_map(
                lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, st.opt_state
            )
            return method.meta_step(key, st._replace(theta={**base, "mu": mu}, opt_state=opt),
                                    batch)[1].loss  # fmt: skip

        mu = jnp.array([0.2, -0.4], jnp.float64)
        g = jax.grad(meta_loss)(mu)
        eps = 1e-6
        for i in range(2):
            fd = (meta_loss(mu.at[i].add(eps)) - meta_loss(mu.at[i].add(-eps))) / (2 * eps)
            np.testing.assert_allclose(g[i], fd, rtol=1e-5, atol=1e-8)
    finally:
        jax.config.update("jax_enable_x64", False)


# eager meta-steps are slow: every head in the slow tier (test_every_method's registry-wide
# jitted-vs-eager check runs there too)
@pytest.mark.parametrize(
    ("head", "components"),
    [
        pytest.param("adapted", 1, marks=pytest.mark.slow),
        pytest.param("collapsed", 1, marks=pytest.mark.slow),
        pytest.param("redraw", 1, marks=pytest.mark.slow),
        pytest.param("collapsed", 2, marks=pytest.mark.slow),
    ],
)
def test_meta_step_jitted_equals_eager_and_traces_once(key, head, components):
    model = HierarchicalModel(mlp((1, 8, 1)), noise_init=0.5, prior_scale=0.1)
    method = platipus(model, inner_steps=2, train_samples=2, head=head, head_components=components)
    fam = sine_line()
    state = method.init(key)
    batch = sample_batch(fam, key, 4, (1, 5), 6)[0]
    s_eager, i_eager = method.meta_step(key, state, batch)
    traces = []

    def counted(k, s, b):
        traces.append(1)
        return method.meta_step(k, s, b)

    step = jax.jit(counted)
    s_jit, i_jit = step(key, state, batch)
    np.testing.assert_allclose(i_eager.loss, i_jit.loss, rtol=1e-4)
    np.testing.assert_allclose(s_eager.theta["mu"], s_jit.theta["mu"], rtol=1e-5, atol=1e-7)
    for i in range(3):
        s_jit, _ = step(key, s_jit, sample_batch(fam, jax.random.PRNGKey(i), 4, (1, 5), 6)[0])
    assert len(traces) == 1
    if components > 1:  # the mixture prior over the last layer is learned
        for k in ("head_mu", "head_log_sigma", "head_logits"):
            assert state.theta[k].shape[0] == components
            assert float(jnp.abs(s_eager.theta[k] - state.theta[k]).max()) > 0
        post = jax.jit(method.adapt, static_argnums=3)(
            key, s_jit, Support(batch.x_support, batch.y_support, batch.mask_support), 5
        )
        assert post.phi.shape == (4, 5, model.num_params)
        assert np.isfinite(np.asarray(post.phi)).all()


@pytest.mark.slow
def test_meta_training_improves_held_out_predictive(key):
    model = HierarchicalModel(mlp((1, 16, 16, 1), activation="tanh"), noise_init=0.5,
                              prior_scale=0.1)  # fmt: skip
    method = platipus(model, inner_steps=2, lr=3e-3, train_samples=2)
    fam = sine_line()
    sampler = lambda k: sample_batch(fam, k, 8, (1, 5), 10)[0]  # noqa: E731
    held = sample_batch(fam, jax.random.PRNGKey(99), 50, (5, 5), 20)[0]
    support = Support(held.x_support, held.y_support, held.mask_support)

    def nll(st):
        post = method.adapt(key, st, support, 16)
        return -float(jnp.mean(post.log_predictive(held.x_query, held.y_query)))

    state = method.init(key)
    before = nll(state)
    res = train(method, state, sampler, jax.random.PRNGKey(1), 600, chunk_size=300,
                progress=False)  # fmt: skip
    assert math.isfinite(res.history["loss"][-1])
    assert nll(res.state) < before - 0.3


def test_bad_arguments_are_named(lin_model):
    for kw, name in [
        ({"outer": "moment"}, "outer"),
        ({"train_samples": 0}, "train_samples"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"shift_lr": 0.0}, "shift_lr"),
        ({"variance": "laplace"}, "variance"),
        ({"inner_rule": "newton"}, "inner_rule"),
        ({"inner_rule": "gauss-newton", "damping": 0.0}, "damping"),
        ({"head_components": 0}, "head_components"),
        ({"head_components": 2}, "head_components"),  # needs head="collapsed"
    ]:
        with pytest.raises(ValueError, match=name):
            platipus(lin_model, **kw)


@pytest.mark.parametrize("jit", [False, True])
def test_ggn_variance_shrinks_with_the_support_inputs(lin_model, key, jit):
    """f = b + w x is linear, so ∂f/∂(b, w) = (1, x) and v_q(D) = v_q / (1 + κ Σ_masked (1, x²))
    exactly; the masked point must not count."""
    method = platipus(lin_model, inner_steps=0, variance="ggn")
    st = method.init(key)
    np.testing.assert_allclose(  # started at the Laplace value v_q / σ_y²
        np.exp(st.theta["log_kappa"]), (0.3 / 0.5) ** 2 * np.ones(2), rtol=1e-5
    )
    kappa = jnp.array([0.7, 2.0])
    th = {**st.theta, "log_sigma_q": jnp.log(jnp.array([0.5, 2.0])), "log_kappa": jnp.log(kappa)}
    st = st._replace(theta=th)
    batch = _batch(key, t=2)
    adapt = jax.jit(method.adapt, static_argnums=3) if jit else method.adapt
    sup = Support(batch.x_support, batch.y_support, batch.mask_support)
    sd = np.asarray(adapt(key, st, sup, 4000).phi).std(1)
    for i in range(2):
        x, m = np.asarray(batch.x_support[i, :, 0]), np.asarray(batch.mask_support[i])
        ggn = np.array([m.sum(), (m * x**2).sum()])
        want = np.array([0.5, 2.0]) / np.sqrt(1 + np.asarray(kappa) * ggn)
        np.testing.assert_allclose(sd[i], want, rtol=0.05)


@pytest.mark.parametrize(
    ("outer", "head"), [("predictive", "adapted"), ("sampler", "adapted"), ("sampler", "collapsed")]
)
def test_ggn_meta_step_is_finite_and_learns_kappa(key, outer, head):
    """κ learns; with the collapsed head only the body's κ (the coordinates θ's noise acts on)
    gets a gradient."""
    model = HierarchicalModel(mlp((1, 8, 1)), noise_init=0.5, prior_scale=0.1)
    method = platipus(model, inner_steps=1, train_samples=4, outer=outer, variance="ggn", head=head)
    state = method.init(key)
    batch = sample_batch(sine_line(), key, 4, (1, 5), 6)[0]
    new, info = jax.jit(method.meta_step)(key, state, batch)
    assert np.isfinite(float(info.loss))
    moved = np.abs(np.asarray(new.theta["log_kappa"] - state.theta["log_kappa"])) > 0
    nb = model.num_params - 9 if head == "collapsed" else model.num_params  # last layer: 8 + 1
    assert moved[:nb].any() and not moved[nb:].any()


@pytest.mark.parametrize("jit", [False, True])
def test_gauss_newton_sampler_is_noise_then_the_linear_posterior_mean(lin_model, key, jit):
    """On the linear model one Gauss-Newton step from each θ_s gives the posterior mean under
    N(θ_s, α) with noise λ = c·|D_tr|: the support-fitted line, whatever the noise drew."""
    method = platipus(
        lin_model, inner_steps=1, inner_lr=0.5, inner_rule="gauss-newton", damping=0.01,
        max_inner_update=None,
    )  # fmt: skip
    st = method.init(key)
    np.testing.assert_allclose(np.exp(st.theta["log_damping"]), 0.01, rtol=1e-5)
    batch = _batch(key, t=2)
    adapt = jax.jit(method.adapt, static_argnums=3) if jit else method.adapt
    sup = Support(batch.x_support, batch.y_support, batch.mask_support)
    theta_post = method.adapt(key, st._replace(theta={**st.theta, "log_inner_lr": -30.0}), sup, 5)
    post = adapt(key, st, sup, 5)
    for i in range(2):
        keep = np.asarray(batch.mask_support[i], bool)
        xd = np.hstack([np.ones((keep.sum(), 1)), np.asarray(batch.x_support[i])[keep]])
        yd = np.asarray(batch.y_support[i])[keep, 0]
        lam = 0.01 * keep.sum()
        # the same key draws the same θ_s; α → 0 leaves each where the noise put it
        for th, got in zip(np.asarray(theta_post.phi[i]), np.asarray(post.phi[i]), strict=True):
            want = np.linalg.solve(xd.T @ xd / lam + np.eye(2) / 0.5, xd.T @ yd / lam + th / 0.5)
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
        assert np.asarray(theta_post.phi[i]).std(0).min() > 0.1  # the noise did spread θ_s


@pytest.mark.parametrize(
    "kw",
    [{"inner_rule": "gauss-newton"}, pytest.param({"head": "collapsed"}, marks=pytest.mark.slow)],
)
def test_adapt_in_task_chunks_equals_one_chunk(key, monkeypatch, kw):
    """For the two rules that map over chunks of tasks (Gauss-Newton, the collapsed head), a
    memory bound that forces one task per chunk (and a remainder) changes no sample."""
    mod = sys.modules["bayesmeta.inference.platipus"]  # the package re-exports the function

    model = HierarchicalModel(mlp((1, 8, 1)), noise_init=0.5, prior_scale=0.1)
    method = platipus(model, inner_steps=2, **kw)
    st = method.init(key)
    b = sample_batch(sine_line(), key, 5, (1, 5), 6)[0]
    sup = Support(b.x_support, b.y_support, b.mask_support)
    whole = method.adapt(key, st, sup, 7).phi
    monkeypatch.setattr(mod, "GN_ADAPT_BYTES", 1)
    for adapt in (method.adapt, jax.jit(method.adapt, static_argnums=3)):
        np.testing.assert_allclose(adapt(key, st, sup, 7).phi, whole, rtol=1e-5, atol=1e-6)
    assert whole.shape == (5, 7, st.theta["mu"].size)


def test_gauss_newton_meta_step_is_finite_and_learns_damping(key):
    model = HierarchicalModel(mlp((1, 8, 1)), noise_init=0.5, prior_scale=0.1)
    method = platipus(model, inner_steps=2, train_samples=2, inner_rule="gauss-newton")
    state = method.init(key)
    batch = sample_batch(sine_line(), key, 4, (1, 5), 6)[0]
    new, info = jax.jit(method.meta_step)(key, state, batch)
    eager, _ = method.meta_step(key, state, batch)
    assert np.isfinite(float(info.loss))
    assert float(jnp.abs(new.theta["log_damping"] - state.theta["log_damping"])) > 0
    np.testing.assert_allclose(new.theta["mu"], eager.theta["mu"], rtol=1e-4, atol=1e-6)


def test_gauss_newton_needs_a_gaussian_likelihood():
    model = HierarchicalModel(mlp((2, 8, 2)), likelihood="categorical", num_classes=2)
    with pytest.raises(ValueError, match="gauss-newton.*Gaussian"):
        platipus(model, inner_rule="gauss-newton")


@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True])
def test_collapsed_head_without_noise_or_steps_is_bayesian_linear_regression(key, jit):
    """With v_q → 0, no prior shift and no inner steps every sample's body is μ_body, and
    ``head="collapsed"`` draws the last layer from the closed-form Bayesian linear regression
    posterior on μ_body's features (mean within 5 Monte Carlo standard errors)."""
    model = HierarchicalModel(mlp((1, 6, 1), activation="tanh"), noise_init=0.4, prior_scale=0.7)
    method = platipus(model, inner_steps=0, head="collapsed")
    state = method.init(key)
    theta = dict(state.theta)
    theta["log_sigma_q"] = jnp.full_like(theta["log_sigma_q"], -30.0)
    theta["log_gamma_p"] = jnp.full_like(theta["log_gamma_p"], -30.0)
    state = state._replace(theta=theta)
    batch = sample_batch(sine_line(), key, 2, (4, 4), 1)[0]
    sup = Support(batch.x_support, batch.y_support, batch.mask_support.at[1, -1].set(0.0))
    adapt = jax.jit(method.adapt, static_argnums=3) if jit else method.adapt
    n = 4000
    post = adapt(jax.random.PRNGKey(5), state, sup, n)
    nb = model.num_params - 7
    np.testing.assert_allclose(
        post.phi[..., :nb], jnp.broadcast_to(theta["mu"][:nb], (2, n, nb)), atol=1e-6
    )
    mth = {k: theta[k] for k in ("mu", "log_sigma", "log_noise")}
    base = theta["mu"].at[nb:].set(0.0)

    def features(x):  # ∂f/∂head at μ_body, exact because f is linear in the head
        return jax.vmap(lambda i: model.apply(base.at[nb + i].set(1.0), x)[:, 0])(jnp.arange(7)).T

    for t in range(2):
        z = features(sup.x[t]) * sup.mask[t][:, None]
        z, yv = np.asarray(z, np.float64), np.asarray(sup.y[t, :, 0] * sup.mask[t], np.float64)
        v0 = np.exp(2 * np.asarray(mth["log_sigma"][nb:], np.float64))
        nv = float(np.exp(2 * mth["log_noise"]))
        cov = np.linalg.inv(np.diag(1 / v0) + z.T @ z / nv)
        mean = cov @ (np.asarray(mth["mu"][nb:], np.float64) / v0 + z.T @ yv / nv)
        se = np.sqrt(np.diag(cov) / n)
        np.testing.assert_allclose(np.asarray(post.phi[t, :, nb:]).mean(0), mean, atol=5 * se.max())


@pytest.mark.parametrize("head", ["redraw", "collapsed"])
@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True])
def test_exact_heads_fit_the_support_better_than_the_papers_sampler(key, jit, head):
    """From the same θ both exact heads' samples fit 8 support points better than the paper's
    sampler. ``"redraw"`` is that sampler (same bodies for the same key) with each last layer
    redrawn from its exact conditional (tests/inference/test_heads.py); ``"collapsed"`` moves
    only the body, under the marginal likelihood, then draws an exact last layer."""
    model = HierarchicalModel(mlp((1, 8, 1), activation="tanh"), noise_init=0.3, prior_scale=1.0)
    plain = platipus(model, inner_steps=2)
    exact = platipus(model, inner_steps=2, head=head)
    state = plain.init(key)
    batch = sample_batch(sine_line(), key, 3, (8, 8), 1)[0]
    sup = Support(batch.x_support, batch.y_support, batch.mask_support)
    adapt = jax.jit(exact.adapt, static_argnums=3) if jit else exact.adapt
    a, b = plain.adapt(key, state, sup, 64), adapt(key, state, sup, 64)
    assert b.phi.shape == a.phi.shape and bool(jnp.all(jnp.isfinite(b.phi)))
    nb = model.num_params - 9
    if head == "redraw":
        np.testing.assert_allclose(a.phi[..., :nb], b.phi[..., :nb], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a.phi[..., nb:], b.phi[..., nb:])

    def support_mse(post):
        f = jax.vmap(jax.vmap(model.apply, in_axes=(0, None)))(post.phi, sup.x)[..., 0]
        return float(jnp.mean((f - sup.y[:, None, :, 0]) ** 2))

    assert support_mse(b) < 0.5 * support_mse(a)


# its pieces are tested eager and jitted in tests/inference/test_heads.py
@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_mixture_of_identical_components_is_the_gaussian_head(key, jit):
    """With every component equal to the model's last-layer prior (any weights π), the
    ``head_components=2`` mixture is that prior: the meta-objective equals the one-Gaussian
    collapsed head's, and ``adapt`` moves the bodies identically (same key)."""
    model = HierarchicalModel(mlp((1, 4, 1), activation="tanh"), noise_init=0.3, prior_scale=0.5)
    kw = dict(inner_steps=1, train_samples=2, head="collapsed", variance="ggn")
    one, mix = platipus(model, **kw), platipus(model, head_components=2, **kw)
    s1, s2 = one.init(key), mix.init(key)
    nb = model.num_params - 5
    theta = {**s2.theta, **s1.theta}
    theta["head_mu"] = jnp.stack([s1.theta["mu"][nb:]] * 2)
    theta["head_log_sigma"] = jnp.stack([s1.theta["log_sigma"][nb:]] * 2)
    theta["head_logits"] = jnp.array([0.7, -0.4])
    s2 = s2._replace(theta=theta)
    batch = sample_batch(sine_line(), key, 3, (1, 5), 6)[0]
    # the meta-step itself is tested jitted = eager above
    _, i1 = jax.jit(one.meta_step)(key, s1, batch)
    _, i2 = jax.jit(mix.meta_step)(key, s2, batch)
    np.testing.assert_allclose(i1.loss, i2.loss, rtol=1e-5)
    sup = Support(batch.x_support, batch.y_support, batch.mask_support)
    a1, a2 = (jax.jit(m.adapt, static_argnums=3) if jit else m.adapt for m in (one, mix))
    p1, p2 = a1(key, s1, sup, 8), a2(key, s2, sup, 8)
    np.testing.assert_allclose(p1.phi[..., :nb], p2.phi[..., :nb], rtol=1e-5, atol=1e-6)
    assert bool(jnp.all(jnp.isfinite(p2.phi)))


def test_collapsed_head_needs_gradient_inner_steps():
    model = HierarchicalModel(mlp((1, 8, 1)), noise_init=0.3)
    with pytest.raises(ValueError, match="inner_rule"):
        platipus(model, head="collapsed", inner_rule="gauss-newton")
    with pytest.raises(ValueError, match="head"):
        platipus(model, head="exact")
