"""NumPyroModel: any NumPyro model function as a bayesmeta model (docs/models.md)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
import scipy.stats
from jax.scipy.special import gammaln
from jax.scipy.stats import norm
from jax.scipy.stats import t as student_t

from bayesmeta.inference import abml, bmaml, emaml, maml, platipus
from bayesmeta.model import HierarchicalModel, NumPyroModel, linear_last_layer
from bayesmeta.nn import mlp
from bayesmeta.tasks.base import Support, TaskBatch

jax.config.update("jax_enable_x64", False)


def slopes(x, y=None, mask=None):
    t, n, d = x.shape
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0).expand([d + 1]).to_event(1))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0).expand([d + 1]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("tasks", t, dim=-2):
        w = numpyro.sample("w", dist.Normal(mu, tau).to_event(1))
    f = w[..., 0] + jnp.einsum("tnd,tod->tn", x, w[..., 1:])
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Normal(f, sigma), obs=y)


def robust(x, y=None, mask=None):
    """A line per task with a Student-t likelihood and a learned ν."""
    t, n, _ = x.shape
    df = numpyro.sample("df", dist.Gamma(2.0, 0.1))
    scale = numpyro.param("scale", 0.5, constraint=dist.constraints.positive)
    with numpyro.plate("tasks", t, dim=-2):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.StudentT(df, a + b * x[..., 0], scale), obs=y)


def counts(x, y=None, mask=None):
    t, n, _ = x.shape
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    with numpyro.plate("tasks", t, dim=-2):
        log_rate = numpyro.sample("log_rate", dist.Normal(mu, 0.5))
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Poisson(jnp.exp(log_rate + 0.0 * x[..., 0])), obs=y)


@pytest.fixture(scope="module")
def data():
    key = jax.random.PRNGKey(3)
    x = jax.random.normal(key, (6, 2))
    y = jax.random.normal(jax.random.fold_in(key, 1), (6, 1))
    return x, y


def _u_halfnormal(v, scale=1.0):
    """log HalfNormal(v; scale) + log-Jacobian of v = exp(u), at u = log v."""
    return math.log(2.0) + norm.logpdf(v, 0.0, scale) + jnp.log(v)


# -- structure and densities ----------------------------------------------------------------------
def test_sites_are_found_and_flattened():
    m = NumPyroModel(slopes, dx=2)
    assert m.theta_keys == ("mu", "tau", "sigma")
    assert m.phi_sites == {"w": (1, 3)}
    assert m.num_params == 3 and m.dy == 1 and m.likelihood == "generic"
    assert m.gaussian_prior
    r = NumPyroModel(robust, dx=1)
    assert r.theta_keys == ("df", "scale") and r.num_params == 2
    th = r.init_theta(jax.random.PRNGKey(0))
    assert jnp.allclose(th["scale"], math.log(0.5))  # a param is stored unconstrained


def test_slopes_densities_equal_a_hand_computation(data):
    x, y = data
    m = NumPyroModel(slopes, dx=2)
    th = {"mu": jnp.array([0.1, -0.2, 0.3]), "tau": jnp.array([0.1, 0.2, -0.3]), "sigma": -0.5}
    th = jax.tree_util.tree_map(jnp.asarray, th)
    phi = jnp.array([0.5, 1.0, -1.0])

    def hand(th, phi):
        tau, sigma = jnp.exp(th["tau"]), jnp.exp(th["sigma"])
        lp = jnp.sum(norm.logpdf(phi, th["mu"], tau))
        ll = jnp.sum(norm.logpdf(y[:, 0], phi[0] + x @ phi[1:], sigma))
        hyper = jnp.sum(norm.logpdf(th["mu"], 0.0, 10.0))
        hyper += jnp.sum(_u_halfnormal(tau)) + _u_halfnormal(sigma)
        return lp, ll, hyper

    def ours(th, phi):
        return m.log_prior(th, phi), m.log_likelihood(th, phi, x, y), m.log_hyperprior(th)

    for a, b in zip(ours(th, phi), hand(th, phi), strict=True):
        assert jnp.allclose(a, b, rtol=1e-5, atol=1e-5)
    g_ours = jax.jit(jax.grad(lambda th, p: sum(ours(th, p)), argnums=(0, 1)))(th, phi)
    g_hand = jax.jit(jax.grad(lambda th, p: sum(hand(th, p)), argnums=(0, 1)))(th, phi)
    for a, b in zip(
        jax.tree_util.tree_leaves(g_ours), jax.tree_util.tree_leaves(g_hand), strict=True
    ):
        assert jnp.allclose(a, b, rtol=1e-4, atol=1e-5)
    mask = jnp.array([1, 1, 1, 0, 0, 1])
    ll_m = m.log_likelihood(th, phi, x, y, mask)
    pts = m.log_likelihood_points(th, phi, x, y)
    assert jnp.allclose(ll_m, jnp.sum(pts * mask), rtol=1e-6)


def test_student_t_and_poisson_densities(data):
    x, y = data
    r = NumPyroModel(robust, dx=1)
    th = {"df": jnp.asarray(math.log(4.0)), "scale": jnp.asarray(math.log(0.7))}
    phi = jnp.array([0.3, -0.8])  # (a, b)
    want = jnp.sum(student_t.logpdf(y[:, 0], 4.0, 0.3 - 0.8 * x[:, 0], 0.7))
    assert jnp.allclose(r.log_likelihood(th, phi, x[:, :1], y), want, rtol=1e-5)
    assert jnp.allclose(
        r.log_prior(th, phi), norm.logpdf(0.3, 0, 1) + norm.logpdf(-0.8, 0, 2), rtol=1e-6
    )
    c = NumPyroModel(counts, dx=1)
    yc = jnp.array([[0.0], [3.0], [1.0]])
    th = {"mu": jnp.asarray(0.2)}
    lam = math.exp(0.4)
    want = jnp.sum(yc[:, 0] * math.log(lam) - lam - gammaln(yc[:, 0] + 1))
    assert jnp.allclose(c.log_likelihood(th, jnp.array([0.4]), x[:3, :1], yc), want, rtol=1e-5)


@pytest.mark.parametrize("fn, dx", [(slopes, 2), (robust, 1), (counts, 1)])
def test_log_likelihood_of_all_tasks_in_one_trace_equals_each_task_alone(fn, dx):
    """``log_likelihood_tasks`` (one trace with T tasks, as MAML's inner loop calls it) gives
    each task's own log-likelihood and, summed, each task's own gradient in φ_t."""
    m = NumPyroModel(fn, dx=dx)
    key = jax.random.PRNGKey(7)
    t, n = 4, 5
    th = m.init_theta(key)
    phi = 0.5 * jax.random.normal(key, (t, m.num_params))
    x = jax.random.normal(jax.random.fold_in(key, 1), (t, n, dx))
    y = jax.random.poisson(jax.random.fold_in(key, 2), 2.0, (t, n, 1)).astype(jnp.float32)
    mask = jnp.ones((t, n)).at[1, 3:].set(0.0).at[3, 1:].set(0.0)
    one = jax.vmap(lambda p, a, b, c: m.log_likelihood(th, p, a, b, c))
    assert jnp.allclose(
        m.log_likelihood_tasks(th, phi, x, y, mask), one(phi, x, y, mask), rtol=1e-5
    )
    no_mask = jax.vmap(lambda p, a, b: m.log_likelihood(th, p, a, b))(phi, x, y)
    assert jnp.allclose(m.log_likelihood_tasks(th, phi, x, y), no_mask, rtol=1e-5)
    g = jax.grad(lambda p: jnp.sum(m.log_likelihood_tasks(th, p, x, y, mask)))(phi)
    g_one = jax.vmap(jax.grad(lambda p, a, b, c: m.log_likelihood(th, p, a, b, c)))(phi, x, y, mask)
    assert jnp.allclose(g, g_one, rtol=1e-4, atol=1e-5)
    assert not jnp.allclose(g[1], 0.0) and jnp.all(jnp.isfinite(g))


def test_prior_moments_carry_constrained_sites_to_u_space():
    def positive(x, y=None, mask=None):
        t, n, _ = x.shape
        with numpyro.plate("tasks", t, dim=-2):
            s = numpyro.sample("s", dist.LogNormal(0.5, 0.2))
        with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
            numpyro.sample("y", dist.Normal(0.0, s), obs=y)

    m = NumPyroModel(positive, dx=1)
    th = m.init_theta(jax.random.PRNGKey(0))
    loc, log_scale = m.prior_loc(th), m.prior_log_scale(th)
    mean = math.exp(0.5 + 0.02)
    sd = math.sqrt((math.exp(0.04) - 1) * math.exp(1.0 + 0.04))
    assert jnp.allclose(loc, math.log(mean), atol=1e-5)
    assert jnp.allclose(log_scale, math.log(sd / mean), atol=1e-5)  # delta method
    assert not m.gaussian_prior
    # log p(φ | θ) in u-space: the LogNormal in log-space is N(0.5, 0.2²)
    assert jnp.allclose(m.log_prior(th, jnp.array([0.4])), norm.logpdf(0.4, 0.5, 0.2), atol=1e-5)


# -- the default model through the generic path ---------------------------------------------------
def test_hierarchical_model_through_the_generic_path_gives_the_same_meta_gradient():
    jax.config.update("jax_enable_x64", True)
    try:
        hm = HierarchicalModel(mlp((1, 8, 1), activation="tanh"), prior_scale=0.3)
        gm = NumPyroModel(hm.model, dx=1)
        assert gm.theta_keys == ("mu", "log_sigma", "log_noise")
        assert gm.num_params == hm.num_params
        key = jax.random.PRNGKey(0)
        th = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), hm.init_theta(key))
        kx, ky = jax.random.split(key)
        x = jax.random.uniform(kx, (3, 7, 1), jnp.float64, -5, 5)
        y = jnp.sin(x) + 0.1 * jax.random.normal(ky, x.shape, jnp.float64)
        batch = TaskBatch(x[:, :4], y[:, :4], jnp.ones((3, 4)), x[:, 4:], y[:, 4:])
        phi = th["mu"] + 0.1
        for name in ("log_prior",):
            assert jnp.allclose(getattr(gm, name)(th, phi), getattr(hm, name)(th, phi))
        assert jnp.allclose(
            gm.log_likelihood(th, phi, x[0], y[0]), hm.log_likelihood(th, phi, x[0], y[0])
        )
        assert jnp.allclose(gm.log_hyperprior(th), hm.log_hyperprior(th))

        def meta_grad(model):
            # plain SGD with step 1: one meta-step moves θ by exactly −(its meta-gradient)
            method = maml(model, inner_steps=2, inner_lr=0.05, optimizer=optax.sgd(1.0))
            state = method.init(key)
            theta = {**state.theta, **{k: th[k] for k in state.theta if k in th}}
            theta["log_inner_lr"] = theta["log_inner_lr"].astype(jnp.float64)
            return method, theta

        outs = []
        for model in (hm, gm):
            method, theta = meta_grad(model)
            state = method.init(key)._replace(theta=theta)
            new, info = jax.jit(method.meta_step)(key, state, batch)
            grads = jax.tree_util.tree_map(lambda a, b: a - b, theta, new.theta)
            outs.append((info.loss, grads))
        (l_h, g_h), (l_g, g_g) = outs
        # equal up to rounding: the two traces order a few float operations differently
        assert jnp.allclose(l_h, l_g, rtol=1e-6)
        for k in ("mu", "log_noise", "log_inner_lr"):
            assert jnp.allclose(g_h[k], g_g[k], rtol=1e-5, atol=1e-8), k
        assert not jnp.allclose(g_h["mu"], 0.0)
    finally:
        jax.config.update("jax_enable_x64", False)


# -- every method on a NumPyro model: one meta-step (jitted = eager, one trace) and adapt -------
METHODS = {
    "maml": lambda m: maml(m, inner_steps=2),
    "emaml": lambda m: emaml(m, num_particles=2, inner_steps=2),
    "abml": lambda m: abml(m, inner_steps=2, inner_samples=2, outer_samples=4),
    "abml-elbo": lambda m: abml(m, inner_steps=2, outer="elbo", outer_samples=4),
    "bmaml": lambda m: bmaml(m, num_particles=3, inner_steps=2),
    "bmaml-chaser": lambda m: bmaml(m, num_particles=3, inner_steps=2, outer="chaser"),
    "platipus": lambda m: platipus(m, inner_steps=2, train_samples=2),
}


@pytest.fixture(scope="module")
def robust_batch():
    key = jax.random.PRNGKey(7)
    x = jax.random.uniform(key, (4, 8, 1), minval=-2, maxval=2)
    y = 0.5 * x - 0.3 + 0.3 * jax.random.t(jax.random.fold_in(key, 1), 3.0, x.shape)
    return TaskBatch(x[:, :5], y[:, :5], jnp.ones((4, 5)), x[:, 5:], y[:, 5:])


def _jitted_step(method, state, batch):
    key = jax.random.PRNGKey(0)
    traces = []

    def step(k, s, b):
        traces.append(1)
        return method.meta_step(k, s, b)

    jitted = jax.jit(step)
    new, info = jitted(key, state, batch)
    jitted(jax.random.PRNGKey(1), new, batch)
    assert len(traces) == 1  # one compilation for every step
    assert np.isfinite(float(info.loss))
    return new, info


def _eager_equals_jitted(name, batch):
    method = METHODS[name](NumPyroModel(robust, dx=1))
    state = method.init(jax.random.PRNGKey(0))
    new_j, info_j = _jitted_step(method, state, batch)
    with jax.disable_jit():
        new_e, info_e = method.meta_step(jax.random.PRNGKey(0), state, batch)
    assert jnp.allclose(info_j.loss, info_e.loss, rtol=1e-3, atol=1e-4)
    for a, b in zip(
        jax.tree_util.tree_leaves(new_j.theta), jax.tree_util.tree_leaves(new_e.theta), strict=True
    ):
        assert jnp.allclose(a, b, rtol=1e-3, atol=1e-4)


def test_maml_on_a_numpyro_model_jitted_equals_eager(robust_batch):
    _eager_equals_jitted("maml", robust_batch)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in METHODS if n != "maml"])
def test_method_on_a_numpyro_model_jitted_equals_eager(name, robust_batch):
    _eager_equals_jitted(name, robust_batch)


# the outer-objective variants compile a second program each: slow tier
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n in ("abml-elbo", "bmaml-chaser") else n
        for n in METHODS
    ],
)
def test_method_runs_on_a_numpyro_model(name, robust_batch):
    model = NumPyroModel(robust, dx=1)
    method = METHODS[name](model)
    key = jax.random.PRNGKey(0)
    new_j, _ = _jitted_step(method, method.init(key), robust_batch)
    support = Support(robust_batch.x_support, robust_batch.y_support, robust_batch.mask_support)
    post = method.adapt(key, new_j, support, 8)
    assert post.likelihood == "generic"
    lp = post.log_predictive(robust_batch.x_query, robust_batch.y_query)
    assert lp.shape == (4, 3) and bool(jnp.all(jnp.isfinite(lp)))
    pit = post.pit(robust_batch.x_query, robust_batch.y_query)
    assert pit.shape == (4, 3, 1) and bool(jnp.all((pit >= 0) & (pit <= 1)))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"head": "collapsed"}, "linear_last_layer"), ({"outer": "moment"}, "Gaussian likelihood")],
)
def test_methods_that_need_structure_say_so(kwargs, match):
    model = NumPyroModel(robust, dx=1)
    with pytest.raises(ValueError, match=match):
        abml(model, **kwargs)
    with pytest.raises(ValueError, match="variance='fixed'"):
        platipus(model, variance="ggn")


# -- the likelihood-generic predictive ------------------------------------------------------------
def _posterior(model, theta, phi):
    return model.posterior(jnp.asarray(phi, jnp.float32), theta, "test")


def test_poisson_randomised_pit_is_uniform_on_data_drawn_from_it():
    # Two samples of log-rates per task: the predictive is a Poisson mixture. y drawn from
    # it must give uniform randomised PITs: a KS test at the 1% level fails 1 seed in 100,
    # and these seeds are fixed.
    c = NumPyroModel(counts, dx=1)
    t, q = 50, 40
    rates = jax.random.uniform(jax.random.PRNGKey(0), (t, 2, 1), minval=-1.0, maxval=2.0)
    post = _posterior(c, {"mu": jnp.asarray(0.0)}, rates)
    x = jnp.zeros((t, q, 1))
    draws = post.sample_predictive(jax.random.PRNGKey(1), x, 1)[:, 0]  # (T, Q, 1)
    pit = np.sort(np.asarray(post.pit(x, draws.astype(jnp.float32), jax.random.PRNGKey(2))).ravel())
    n = pit.size
    ks = np.max(np.maximum(np.arange(1, n + 1) / n - pit, pit - np.arange(n) / n))
    assert ks < 1.63 / math.sqrt(n)
    # without randomisation the PIT of a count is lumpy: the same test must fail
    cdf = np.sort(np.asarray(post.cdf(x, draws.astype(jnp.float32))).ravel())
    ks_cdf = np.max(np.maximum(np.arange(1, n + 1) / n - cdf, cdf - np.arange(n) / n))
    assert ks_cdf > 1.63 / math.sqrt(n)


def test_pit_from_draws_matches_the_exact_cdf():
    # ZeroInflatedPoisson has no cdf in NumPyro: its PIT comes from draws. With a negligible
    # gate it is Poisson, whose exact cdf is the check.
    def nb(x, y=None, mask=None):
        t, n, _ = x.shape
        with numpyro.plate("tasks", t, dim=-2):
            log_rate = numpyro.sample("log_rate", dist.Normal(0.0, 1.0))
        with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
            rate = jnp.exp(log_rate) * jnp.ones_like(x[..., 0])
            numpyro.sample("y", dist.ZeroInflatedPoisson(1e-6, rate), obs=y)

    m, c = NumPyroModel(nb, dx=1), NumPyroModel(counts, dx=1)
    phi = jnp.array([[[0.5], [1.0]], [[-0.5], [0.2]]])
    x = jnp.zeros((2, 5, 1))
    y = jnp.array([0.0, 1.0, 2.0, 3.0, 6.0])[None, :, None] * jnp.ones((2, 1, 1))
    poisson = _posterior(c, {"mu": jnp.asarray(0.0)}, phi)
    exact, below = poisson.cdf(x, y), poisson.cdf(x, y - 1)
    approx = _posterior(m, {}, phi).cdf(x, y)  # 256 draws per sample
    assert np.allclose(approx, exact, atol=0.08)
    pit = _posterior(m, {}, phi).pit(x, y, num_draws=2000)  # randomised within each atom
    assert np.all((pit >= below - 0.05) & (pit <= exact + 0.05))
    mean = _posterior(m, {}, phi).mean(x)
    assert np.allclose(mean[:, 0, 0], jnp.mean(jnp.exp(phi[..., 0]), -1), rtol=1e-3)


def test_student_t_predictive_mixture_moments_and_logpdf():
    r = NumPyroModel(robust, dx=1)
    th = {"df": jnp.asarray(math.log(5.0)), "scale": jnp.asarray(math.log(0.5))}
    phi = jnp.array([[[0.0, 1.0], [1.0, -1.0]]])  # one task, two samples (a, b)
    post = _posterior(r, th, phi)
    x = jnp.array([[[0.5], [2.0]]])
    y = jnp.array([[[0.2], [1.0]]])
    locs = jnp.array([[0.5, 2.0], [0.5, -1.0]])  # (S, N)
    want = jnp.log(0.5 * jnp.exp(student_t.logpdf(y[0, :, 0], 5.0, locs, 0.5)).sum(0))
    assert jnp.allclose(post.log_predictive(x, y)[0], want, rtol=1e-5)
    assert jnp.allclose(post.mean(x)[0, :, 0], locs.mean(0), rtol=1e-6)
    var = 0.25 * 5.0 / 3.0 + locs.var(0)
    assert jnp.allclose(post.variance(x)[0, :, 0], var, rtol=1e-5)
    cdf = 0.5 * scipy.stats.t.cdf(np.asarray(y[0, :, 0]), 5.0, np.asarray(locs), 0.5).sum(0)
    assert jnp.allclose(post.pit(x, y)[0, :, 0], cdf, rtol=1e-5)


# -- bad input --------------------------------------------------------------------------------
def _no_tasks_plate(x, y=None, mask=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("points", x.shape[1], dim=-1):
        numpyro.sample("y", dist.Normal(w * x[0, :, 0], 1.0), obs=None if y is None else y[0])


def _obs_named_z(x, y=None, mask=None):
    t, n, _ = x.shape
    with numpyro.plate("tasks", t, dim=-2):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("z", dist.Normal(w * x[..., 0], 1.0), obs=y)


def _size_depends_on_n(x, y=None, mask=None):
    t, n, _ = x.shape
    with numpyro.plate("tasks", t, dim=-2):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([n]).to_event(1))
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Normal(w[:, 0] * x[..., 0], 1.0), obs=y)


def _per_point_latent(x, y=None, mask=None):
    t, n, _ = x.shape
    with numpyro.plate("tasks", t, dim=-2):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("points", n, dim=-1):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            numpyro.sample("y", dist.Normal(w * x[..., 0] + z, 1.0), obs=y)


def _broken(x, y=None, mask=None):
    return x @ jnp.ones((3, 3))


@pytest.mark.parametrize(
    "fn, match",
    [
        (_no_tasks_plate, "site 'y' must lie inside plate 'tasks'"),
        (_obs_named_z, "observed site to be named 'y'"),
        (_size_depends_on_n, "depends on the number of points N"),
        (_per_point_latent, "lies inside plate 'points'"),
        (_broken, "failed when traced"),
        ("not a model", "expected a NumPyro model function"),
    ],
)
def test_bad_models_are_named_errors(fn, match):
    with pytest.raises((ValueError, TypeError), match=match):
        NumPyroModel(fn, dx=1)


def test_model_spec_wraps_a_function_and_checks_dx():
    from bayesmeta.tasks import sinusoid
    from bayesmeta.zoo import ModelSpec

    spec = ModelSpec(name="r", family=sinusoid(), model=robust)
    assert isinstance(spec.model, NumPyroModel) and spec.model.dx == 1
    with pytest.raises(ValueError, match="dx=2 does not match"):
        ModelSpec(name="s", family=sinusoid(), model=NumPyroModel(slopes, dx=2))
    with pytest.raises(TypeError, match="NumPyro model function"):
        ModelSpec(name="s", family=sinusoid(), model=3)


# -- NUTS on a NumPyro model against its closed form ---------------------------------------------
@pytest.mark.slow
def test_nuts_on_random_slopes_matches_the_closed_form_posterior():
    # Given θ, the random-slopes posterior of one task is Gaussian:
    # Λ = diag(τ⁻²) + X̃ᵀX̃ / σ²,  m = Λ⁻¹ (diag(τ⁻²) μ + X̃ᵀ y / σ²)  with X̃ = [1, x].
    # NUTS (2 chains × 1000 draws, fixed seed) must agree within 4 Monte Carlo standard errors
    # per coordinate (a failure rate below 1e-4 per coordinate for an exact sampler).
    from bayesmeta.inference.nuts import nuts_task_samples

    m = NumPyroModel(slopes, dx=2)
    th = {
        "mu": jnp.array([0.2, -0.5, 1.0]),
        "tau": jnp.log(jnp.array([1.0, 0.5, 2.0])),
        "sigma": jnp.log(jnp.asarray(0.4)),
    }
    key = jax.random.PRNGKey(11)
    x = jax.random.normal(key, (6, 2))
    y = (0.3 + x @ jnp.array([-0.2, 0.8]) + 0.4 * jax.random.normal(key, (6,)))[:, None]
    xt = np.concatenate([np.ones((6, 1)), np.asarray(x)], 1).astype(np.float64)
    prec0 = np.diag(np.exp(-2 * np.asarray(th["tau"], np.float64)))
    lam = prec0 + xt.T @ xt / 0.16
    cov = np.linalg.inv(lam)
    mean = cov @ (prec0 @ np.asarray(th["mu"], np.float64) + xt.T @ np.asarray(y[:, 0]) / 0.16)
    samples, diag = nuts_task_samples(
        jax.random.PRNGKey(0), m, th, x, y, num_warmup=500, num_samples=1000, num_chains=2
    )
    s = np.asarray(samples, np.float64)
    assert diag["max_r_hat"] < 1.05 and diag["divergences"] == 0
    se = np.sqrt(np.diag(cov) / s.shape[0]) * 2.0  # ×2: autocorrelated draws (ESS ≥ n/4)
    assert np.all(np.abs(s.mean(0) - mean) < 4 * se)
    np.testing.assert_allclose(s.var(0), np.diag(cov), rtol=0.2)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(np.corrcoef(s.T), cov / np.outer(sd, sd), atol=0.12)


# -- a declared exact last layer (linear_last_layer) ---------------------------------------------
def _declared(log_s0: float = math.log(0.3)):
    """The built-in model HierarchicalModel(mlp((1, 8, 1), tanh), prior_scale=0.3) written as a
    NumPyro function whose last layer is declared with linear_last_layer: body = (b₀, w₀),
    head = (w₁, b₁) (the built-in's flat order is b₀, w₀, b₁, w₁)."""

    def model(x, y=None, mask=None):
        t, n, _ = x.shape
        mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 10.0).expand([16]).to_event(1))
        ls_b = numpyro.sample("ls_b", dist.Normal(log_s0, 2.0).expand([16]).to_event(1))
        mu_h = numpyro.sample("mu_h", dist.Normal(0.0, 10.0).expand([9]).to_event(1))
        ls_h = numpyro.sample("ls_h", dist.Normal(log_s0, 2.0).expand([9]).to_event(1))
        log_noise = numpyro.sample("log_noise", dist.Normal(math.log(0.5), 2.0))
        with numpyro.plate("tasks", t, dim=-2):
            body = numpyro.sample("body", dist.Normal(mu_b, jnp.exp(ls_b)).to_event(1))
            z = jnp.tanh(x * body[:, :, 8:] + body[:, :, :8])  # (T, N, 8)
            f = linear_last_layer("head", z, mu_h, jnp.exp(ls_h))
        with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
            numpyro.sample("y", dist.Normal(f, jnp.exp(log_noise)), obs=y)

    return NumPyroModel(model, dx=1, name="declared")


def _to_declared(th: dict) -> dict:
    """The built-in θ in the declared model's sites (the head reordered to w₁, b₁)."""
    perm = jnp.array([*range(17, 25), 16])
    return {"mu_b": th["mu"][:16], "ls_b": th["log_sigma"][:16], "mu_h": th["mu"][perm],
            "ls_h": th["log_sigma"][perm], "log_noise": th["log_noise"]}  # fmt: skip


def test_declared_last_layer_gives_the_built_in_exact_head():
    from bayesmeta.inference.heads import conjugate_head

    jax.config.update("jax_enable_x64", True)
    try:
        hm = HierarchicalModel(mlp((1, 8, 1), activation="tanh"), prior_scale=0.3)
        gm = _declared()
        key = jax.random.PRNGKey(2)
        th = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), hm.init_theta(key))
        th["mu"] = th["mu"] + 0.2 * jax.random.normal(key, th["mu"].shape, jnp.float64)
        tg = _to_declared(th)
        x = jax.random.uniform(key, (6, 1), jnp.float64, -3, 3)
        y = jnp.sin(x) + 0.1
        mask = jnp.array([1.0, 1, 1, 1, 0, 0], jnp.float64)
        ch, cg = conjugate_head(hm), conjugate_head(gm)
        assert ch.num_body == cg.num_body == 16
        body = th["mu"][:16]
        lm = [c.log_marginal(t, body, x, y, mask) for c, t in ((ch, th), (cg, tg))]
        assert jnp.allclose(lm[0], lm[1], rtol=1e-10)
        x_new = jnp.linspace(-3, 3, 5)[:, None].astype(jnp.float64)
        ph, pg = (
            ch.predictive(th, body, x, y, mask, x_new),
            cg.predictive(tg, body, x, y, mask, x_new),
        )
        assert jnp.allclose(ph[0], pg[0], rtol=1e-9) and jnp.allclose(ph[1], pg[1], rtol=1e-8)
        # an exact draw of the head has the same law: the same key gives the same layer
        wh = ch.sample(th, body, key, x, y, mask)
        wg = cg.sample(tg, body, key, x, y, mask)
        assert jnp.allclose(wh[jnp.array([*range(1, 9), 0])], wg, rtol=1e-8)
    finally:
        jax.config.update("jax_enable_x64", False)


@pytest.mark.slow  # two compilations of a second-order meta-step per method
@pytest.mark.parametrize(
    "build",
    [
        lambda m: abml(m, head="collapsed", inner_steps=2, inner_samples=2, outer_samples=4),
        lambda m: platipus(m, head="collapsed", head_components=2, inner_steps=2, train_samples=2),
        lambda m: bmaml(m, head="collapsed", noise="shared", num_particles=3, inner_steps=2),
    ],
    ids=["abml", "platipus-mixture", "bmaml"],
)
def test_collapsed_heads_on_a_declared_model_equal_the_built_in(build):
    """One jitted meta-step of a collapsed-head method: the same loss on the built-in model and
    on the NumPyro function that declares its last layer, at the same θ and key."""
    hm = HierarchicalModel(mlp((1, 8, 1), activation="tanh"), prior_scale=0.3)
    gm = _declared()
    key = jax.random.PRNGKey(3)
    x = jax.random.uniform(key, (4, 7, 1), minval=-3, maxval=3)
    y = jnp.sin(x) + 0.1 * jax.random.normal(jax.random.fold_in(key, 1), x.shape)
    batch = TaskBatch(x[:, :4], y[:, :4], jnp.ones((4, 4)), x[:, 4:], y[:, 4:])
    mh, mg = build(hm), build(gm)
    sh = mh.init(key)
    # σ_y = 0.3: both paths scale BMAML's SVGD step by σ_y² (a NumPyro model's observation scale)
    sh = sh._replace(theta={**sh.theta, "log_noise": jnp.asarray(math.log(0.3), jnp.float32)})
    # the method's own θ in the declared order too: over all of φ, or over the last layer
    head, full = jnp.array([*range(1, 9), 0]), jnp.array([*range(16), *range(17, 25), 16])
    extra = {}
    for k, v in sh.theta.items():
        if k not in hm.theta_keys:
            n = jnp.shape(v)[-1] if jnp.ndim(v) else 0
            extra[k] = v[..., head] if n == 9 else v[..., full] if n == 25 else v
    tg = {**_to_declared(sh.theta), **extra}
    sg = mg.init(key)
    sg = sg._replace(theta=tg, opt_state=mg.init(key).opt_state)
    sg = sg._replace(opt_state=jax.tree_util.tree_map(jnp.zeros_like, sg.opt_state))
    loss_h = jax.jit(mh.meta_step)(key, sh, batch)[1].loss
    loss_g = jax.jit(mg.meta_step)(key, sg, batch)[1].loss
    assert bool(jnp.isfinite(loss_h)) and jnp.allclose(loss_h, loss_g, rtol=2e-4, atol=1e-5)
    post = mg.adapt(key, sg, Support(batch.x_support, batch.y_support, batch.mask_support), 8)
    assert bool(jnp.all(jnp.isfinite(post.log_predictive(batch.x_query, batch.y_query))))


@pytest.mark.parametrize(("jit", "noise"), [(False, 1.0), (True, 1.0), (True, 0.3)])
def test_bmaml_collapsed_on_a_declared_model_moves_the_built_in_particles(jit, noise):
    """BMAML's collapsed head on a NumPyro model that declares its last layer: the SVGD target
    (body prior + exact marginal) and the particles after SVGD equal the built-in model's at
    the same θ; ``adapt`` returns the particles as bodies with exact last layers."""
    hm = HierarchicalModel(mlp((1, 8, 1), activation="tanh"), prior_scale=0.3)
    gm = _declared()
    key = jax.random.PRNGKey(5)
    mh, mg = (bmaml(m, head="collapsed", noise="shared", num_particles=3, inner_steps=3,
                    meta_sgd=True) for m in (hm, gm))  # fmt: skip
    sh = mh.init(key)
    # at σ_y ≠ 1 too: BMAML's SVGD step scales by σ_y² on the generic path as on the built-in
    th = {**sh.theta, "log_noise": jnp.asarray(math.log(noise), jnp.float32)}
    tg = {**_to_declared(th), "particles": th["particles"], "log_inner_lr": th["log_inner_lr"]}
    sg = mg.init(key)._replace(theta=tg)
    assert sg.theta["particles"].shape == (3, 16)
    x = jax.random.uniform(key, (2, 6, 1), minval=-3, maxval=3)
    y = jnp.sin(x) + 0.1
    sup = Support(x, y, jnp.ones((2, 6)).at[1, 4:].set(0.0))
    targets = [m.extras["log_target"](th_["particles"][0], th_, x[1], y[1], sup.mask[1])
               for m, th_ in ((mh, th), (mg, tg))]  # fmt: skip
    np.testing.assert_allclose(targets[0], targets[1], rtol=1e-5)
    parts = [m.extras["particles"] for m in (mh, mg)]
    if jit:
        parts = [jax.jit(f) for f in parts]
    zh = parts[0](sh._replace(theta=th), sup)
    zg = parts[1](sg, sup)
    assert not np.allclose(zg, tg["particles"][None])  # SVGD moved them
    np.testing.assert_allclose(zh, zg, rtol=1e-4, atol=1e-5)
    adapt = jax.jit(mg.adapt, static_argnums=3) if jit else mg.adapt
    post = adapt(key, sg, sup, 6)
    assert post.phi.shape == (2, 6, gm.num_params)
    np.testing.assert_allclose(post.phi[:, ::2, :16], zg, rtol=1e-5, atol=1e-6)
    assert bool(jnp.all(jnp.isfinite(post.log_predictive(x, y))))


def test_a_collapsed_head_needs_a_declared_conjugate_layer():
    for build in (abml, bmaml, platipus):
        with pytest.raises(ValueError, match="linear_last_layer"):
            build(NumPyroModel(slopes, dx=2), head="collapsed")

    def robust_head(x, y=None, mask=None):
        t, n, _ = x.shape
        with numpyro.plate("tasks", t, dim=-2):
            f = linear_last_layer("w", x, 0.0, 1.0)
        with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
            numpyro.sample("y", dist.StudentT(4.0, f, 0.3), obs=y)

    with pytest.raises(ValueError, match="Normal observation"):
        abml(NumPyroModel(robust_head, dx=1), head="collapsed")

    def warped(x, y=None, mask=None):
        t, n, _ = x.shape
        with numpyro.plate("tasks", t, dim=-2):
            f = linear_last_layer("w", x, 0.0, 1.0)
        with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
            numpyro.sample("y", dist.Normal(jnp.tanh(f), 0.3), obs=y)

    with pytest.raises(ValueError, match="output of linear_last_layer"):
        abml(NumPyroModel(warped, dx=1), head="collapsed")
    with pytest.raises(ValueError, match="features: expected \\(T, N, F\\)"):
        NumPyroModel(lambda x, y=None, mask=None: linear_last_layer("w", x[0], 0.0, 1.0), dx=1)
