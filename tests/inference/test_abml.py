import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
    [(False, "natural", 0.5, 200), (True, "natural", 0.5, 200), (True, "gradient", 0.02, 3000)],
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
    for outer in ("predictive", "elbo"):
        method = abml(model, inner_steps=2, outer=outer, lr=3e-3)
        state = method.init(key)
        step = jax.jit(method.meta_step)
        losses = []
        for i in range(150):
            batch, _ = sample_batch(fam, jax.random.PRNGKey(i), 8, (1, 10), 10)
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
