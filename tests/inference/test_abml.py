import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_heads import _closed_form  # the same directory: Bayesian linear regression on features

from bayesmeta.inference import abml, linear_gaussian_posterior
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import linear, mlp
from bayesmeta.tasks import Support, linear_gaussian, sample_batch, sinusoid

PRIOR_MEAN = np.array([0.5, -1.0])  # (w, c)
PRIOR_STD = np.array([1.0, 2.0])
NOISE = 0.5


def _linear_setup(key, k=5):
    fam = linear_gaussian(tuple(PRIOR_MEAN), tuple(PRIOR_STD), NOISE)
    batch, _ = sample_batch(fam, key, 3, (k, k), 1)
    model = HierarchicalModel(linear(), prior_scale=1.0, noise_init=NOISE)
    # the flat φ of `linear()` is (b, w): ravel_pytree sorts the layer's keys
    theta = {
        "mu": jnp.array([PRIOR_MEAN[1], PRIOR_MEAN[0]]),
        "log_sigma": jnp.log(jnp.array([PRIOR_STD[1], PRIOR_STD[0]])),
        "log_noise": jnp.log(jnp.asarray(NOISE)),
    }
    return fam, batch, model, theta


@pytest.mark.parametrize(
    "jit, inner_update, inner_lr, steps",
    [
        (False, "natural", 0.5, 200),
        (True, "natural", 0.5, 200),
        pytest.param(True, "gradient", 0.02, 3000, marks=pytest.mark.slow),
    ],
)
def test_inner_loop_converges_to_optimal_mean_field_gaussian(
    key, jit, inner_update, inner_lr, steps
):
    """With the true prior as θ, ABML's q → the optimal mean-field Gaussian of the exact
    posterior N(m_N, S_N): mean m_N, variances 1 / diag(S_N⁻¹)."""
    _, batch, model, theta = _linear_setup(key)
    method = abml(
        model,
        inner_steps=steps,
        inner_lr=inner_lr,
        inner_update=inner_update,
        inner_samples=100_000,
        max_inner_update=None,
        learn_inner_lr=False,
    )
    state = method.init(key)
    state = state._replace(theta={**state.theta, **theta})
    sup = Support(batch.x_support, batch.y_support, batch.mask_support)
    vp = method.extras["variational_params"]
    m, log_s = (jax.jit(vp) if jit else vp)(jax.random.PRNGKey(3), state, sup)
    for i in range(3):
        mean, cov = linear_gaussian_posterior(
            batch.x_support[i],
            batch.y_support[i],
            batch.mask_support[i],
            jnp.asarray(PRIOR_MEAN),
            jnp.asarray(PRIOR_STD),
            NOISE,
        )
        mf_var = 1.0 / np.diag(np.linalg.inv(np.asarray(cov, np.float64)))
        got_mean = np.array([m[i, 1], m[i, 0]])  # back to (w, c)
        got_var = np.exp(2 * np.array([log_s[i, 1], log_s[i, 0]]))
        np.testing.assert_allclose(got_mean, mean, atol=1e-2)
        np.testing.assert_allclose(got_var, mf_var, rtol=0.05)
        # and the mean-field variance is strictly smaller than the exact marginal where
        # w and c are correlated: the test can tell the two apart
        assert np.all(mf_var <= np.diag(cov) + 1e-6)


def test_meta_step_improves_loss_and_is_finite(key):
    model = HierarchicalModel(mlp((1, 20, 20, 1)), prior_scale=0.1, noise_init=0.5)
    fam = sinusoid()
    draw = jax.jit(lambda k: sample_batch(fam, k, 8, (1, 10), 10)[0])
    for outer in ("predictive", "elbo"):
        method = abml(model, inner_steps=2, outer=outer, lr=3e-3)
        state = method.init(key)
        step = jax.jit(method.meta_step)
        losses = []
        for i in range(150):
            batch = draw(jax.random.PRNGKey(i))
            state, info = step(jax.random.PRNGKey(1000 + i), state, batch)
            losses.append(float(info.loss))
        assert np.all(np.isfinite(losses))
        assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.1, outer


def test_adapt_jitted_equals_eager_and_has_spread(key):
    model = HierarchicalModel(mlp((1, 16, 1)), prior_scale=0.1, noise_init=0.5)
    method = abml(model, inner_steps=2)
    state = method.init(key)
    batch, _ = sample_batch(sinusoid(), key, 4, (1, 5), 6)
    sup = Support(batch.x_support, batch.y_support, batch.mask_support)
    eager = method.adapt(key, state, sup, 16)
    jitted = jax.jit(method.adapt, static_argnums=3)(key, state, sup, 16)
    np.testing.assert_allclose(eager.phi, jitted.phi, rtol=1e-5, atol=1e-6)
    assert eager.phi.shape == (4, 16, model.num_params)
    assert float(jnp.std(eager.phi, axis=1).mean()) > 1e-3  # a posterior, not a point


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"outer": "mle"}, "outer"),
        ({"inner_samples": 0}, "inner_samples"),
        ({"inner_lr": -1.0}, "inner_lr"),
    ],
)
def test_bad_arguments(kwargs, match):
    model = HierarchicalModel(linear())
    with pytest.raises(ValueError, match=match):
        abml(model, **kwargs)


def _collapsed_setup(key, k=4):
    """A 1-6-1 network whose body is pinned (q and prior scales e⁻²⁰), so that the head's
    conditional posterior is Bayesian linear regression on the body's features."""
    model = HierarchicalModel(mlp((1, 6, 1), activation="tanh"), prior_scale=0.7, noise_init=0.4)
    method = abml(model, head="collapsed", inner_steps=2)
    state = method.init(key)
    num_body = state.theta["log_lr_m"].shape[0]
    assert num_body == model.num_params - 7
    log_sigma = state.theta["log_sigma"].at[:num_body].set(-20.0)
    log_sigma = log_sigma.at[num_body:].set(jnp.log(jnp.linspace(0.5, 1.5, 7)))
    state = state._replace(theta={**state.theta, "log_sigma": log_sigma})
    batch, _ = sample_batch(sinusoid(), key, 2, (k, k), 1)
    mask = batch.mask_support.at[1, k - 1].set(0.0)  # task 1 has one padded point
    return model, method, state, Support(batch.x_support, batch.y_support, mask), num_body


@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True])
def test_collapsed_head_samples_the_exact_conditional_posterior(key, jit):
    """With the body pinned, head samples have the closed-form Bayesian linear regression
    mean and covariance (20k samples: tolerances ≈ 5 Monte Carlo standard errors), padded
    points change nothing, and the collapsed log likelihood is the exact log evidence."""
    model, method, state, sup, num_body = _collapsed_setup(key)
    adapt = jax.jit(method.adapt, static_argnums=3) if jit else method.adapt
    post = adapt(jax.random.PRNGKey(5), state, sup, 20_000)
    lml = method.extras["log_marginal_head"]
    for i in range(2):
        mean, cov, log_ml, _ = _closed_form(
            model, state.theta, num_body, sup.x[i], sup.y[i], sup.mask[i]
        )
        heads = np.asarray(post.phi[i, :, num_body:], np.float64)
        body = np.broadcast_to(state.theta["mu"][:num_body], (20_000, num_body))
        np.testing.assert_allclose(post.phi[i, :, :num_body], body, atol=1e-6)
        sd = np.sqrt(np.diag(cov))
        np.testing.assert_allclose(heads.mean(0), mean, atol=float(5 * sd.max() / np.sqrt(20_000)))
        np.testing.assert_allclose(
            np.cov(heads.T), cov, atol=float(5 * sd.max() ** 2 * np.sqrt(2 / 20_000))
        )
        got = (jax.jit(lml) if jit else lml)(
            state.theta, state.theta["mu"][:num_body], sup.x[i], sup.y[i], sup.mask[i]
        )
        np.testing.assert_allclose(float(got), log_ml, rtol=1e-4)
    # the padded point of task 1 is ignored: the same as the task cut to its real points
    cut = Support(sup.x[1:, :-1], sup.y[1:, :-1], sup.mask[1:, :-1])
    short = method.adapt(jax.random.PRNGKey(5), state, cut, 20_000)
    np.testing.assert_allclose(
        np.asarray(short.phi[0, :, num_body:]).mean(0),
        np.asarray(post.phi[1, :, num_body:]).mean(0),
        atol=0.05,
    )


@pytest.mark.slow  # an eager meta-step per head
@pytest.mark.parametrize("head", ["adapted", "collapsed"])
def test_meta_step_jitted_equals_eager_and_traces_once(key, head):
    model = HierarchicalModel(mlp((1, 8, 1), activation="tanh"), prior_scale=0.1)
    method = abml(model, head=head, inner_steps=1, inner_samples=2, outer_samples=2)
    state = method.init(key)
    batch, _ = sample_batch(sinusoid(), key, 2, (1, 3), 3)
    eager, info_e = method.meta_step(key, state, batch)
    traces = []

    def counted(k, s, b):
        traces.append(1)
        return method.meta_step(k, s, b)

    step = jax.jit(counted)
    jitted, info_j = step(key, state, batch)
    np.testing.assert_allclose(info_e.loss, info_j.loss, rtol=1e-5)
    np.testing.assert_allclose(eager.theta["mu"], jitted.theta["mu"], rtol=1e-4, atol=1e-6)
    for i in range(3):
        jitted, _ = step(
            key, jitted, sample_batch(sinusoid(), jax.random.PRNGKey(i), 2, (1, 3), 3)[0]
        )
    assert len(traces) == 1


@pytest.mark.slow
def test_collapsed_meta_training_learns(key):
    model = HierarchicalModel(mlp((1, 20, 20, 1), activation="tanh"), prior_scale=0.1)
    method = abml(model, head="collapsed", inner_steps=2, outer_samples=8, lr=3e-3)
    state = method.init(key)
    step = jax.jit(method.meta_step)
    draw = jax.jit(lambda k: sample_batch(sinusoid(), k, 8, (1, 10), 10)[0])
    losses = []
    for i in range(150):
        batch = draw(jax.random.PRNGKey(i))
        state, info = step(jax.random.PRNGKey(1000 + i), state, batch)
        losses.append(float(info.loss))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.1


@pytest.mark.parametrize(
    "model, kwargs, match",
    [
        (HierarchicalModel(mlp((1, 8, 1))), {"head": "full"}, "head"),
        (HierarchicalModel(mlp((1, 8, 1))), {"head": "collapsed", "outer": "elbo"}, "outer"),
        (HierarchicalModel(linear()), {"head": "collapsed"}, "last layer"),
        (
            HierarchicalModel(mlp((2, 8, 3)), likelihood="categorical", num_classes=3, dx=2),
            {"head": "collapsed"},
            "Gaussian",
        ),
    ],
)
def test_collapsed_bad_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        abml(model, **kwargs)
