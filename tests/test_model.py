import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import linear, mlp


@pytest.fixture
def model():
    return HierarchicalModel(mlp((1, 8, 1)), prior_scale=0.5, noise_init=0.3)


def test_log_likelihood_matches_gaussian_by_hand(model, key):
    theta = model.init_theta(key)
    phi = theta["mu"] + 0.1
    x = jnp.linspace(-2, 2, 6)[:, None]
    y = jnp.sin(x)
    mask = jnp.array([1, 1, 1, 1, 0, 0.0])
    f = np.asarray(model.apply(phi, x))
    expected = np.sum(
        np.asarray(mask)[:, None]
        * (-0.5 * ((np.asarray(y) - f) / 0.3) ** 2 - math.log(0.3) - 0.5 * math.log(2 * math.pi))
    )
    got = model.log_likelihood(theta, phi, x, y, mask)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(
        jax.jit(model.log_likelihood)(theta, phi, x, y, mask), got, rtol=1e-6
    )


def test_log_prior_and_hyperprior_by_hand(model, key):
    theta = model.init_theta(key)
    phi = theta["mu"] + 0.2
    sigma = np.exp(np.asarray(theta["log_sigma"]))
    expected = np.sum(-0.5 * (0.2 / sigma) ** 2 - np.log(sigma) - 0.5 * math.log(2 * math.pi))
    np.testing.assert_allclose(model.log_prior(theta, phi), expected, rtol=1e-5)
    hyper = model.log_hyperprior(theta)
    mu = np.asarray(theta["mu"])
    exp_mu = np.sum(-0.5 * (mu / 10.0) ** 2 - math.log(10.0) - 0.5 * math.log(2 * math.pi))
    exp_ls = model.num_params * (-math.log(2.0) - 0.5 * math.log(2 * math.pi))
    exp_ln = -math.log(2.0) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(hyper, exp_mu + exp_ls + exp_ln, rtol=1e-5)


def test_parts_sum_to_numpyro_joint_density(model, key):
    """log p(θ) + Σ_i [log p(φ_i|θ) + log p(D_i|φ_i)] equals NumPyro's joint log density."""
    theta = model.init_theta(key)
    t, n = 3, 4
    phi = theta["mu"] + 0.05 * jax.random.normal(key, (t, model.num_params))
    x = jax.random.normal(jax.random.PRNGKey(1), (t, n, 1))
    y = jax.random.normal(jax.random.PRNGKey(2), (t, n, 1))
    mask = jnp.ones((t, n)).at[0, 3].set(0.0)
    joint, _ = log_density(model.model, (x, y, mask), {}, {**theta, "phi": phi[:, None]})
    parts = model.log_hyperprior(theta) + sum(
        model.log_prior(theta, phi[i]) + model.log_likelihood(theta, phi[i], x[i], y[i], mask[i])
        for i in range(t)
    )
    np.testing.assert_allclose(joint, parts, rtol=1e-5)


def test_categorical_likelihood(key):
    model = HierarchicalModel(mlp((2, 3)), likelihood="categorical", num_classes=3)
    theta = model.init_theta(key)
    assert "log_noise" not in theta
    x = jax.random.normal(key, (5, 2))
    y = jnp.array([0, 1, 2, 1, 0])
    logits = model.apply(theta["mu"], x)
    expected = jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(5), y])
    np.testing.assert_allclose(model.log_likelihood(theta, theta["mu"], x, y), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"likelihood": "poisson"}, "likelihood"),
        ({"likelihood": "categorical"}, "num_classes"),
        ({"prior_scale": 0.0}, "prior_scale"),
    ],
)
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HierarchicalModel(linear(), **kwargs)


def test_per_layer_prior_scale(key):
    model = HierarchicalModel(mlp((1, 4, 1)), prior_scale=(0.03, 0.3))
    theta = model.init_theta(key)
    scales = model._unravel(jnp.exp(theta["log_sigma"]))
    np.testing.assert_allclose(scales[0]["w"], 0.03, rtol=1e-6)
    np.testing.assert_allclose(scales[1]["w"], 0.3, rtol=1e-6)
    # the hyper-prior is centred on the per-layer initial scales
    shifted = {**theta, "log_sigma": theta["log_sigma"] + 0.1}
    assert float(model.log_hyperprior(theta)) > float(model.log_hyperprior(shifted))
    with pytest.raises(ValueError, match="one value per layer"):
        HierarchicalModel(mlp((1, 4, 1)), prior_scale=(0.1, 0.2, 0.3))


class _Traced(HierarchicalModel):
    """The same model, forced through the NumPyro trace (``model`` overridden)."""

    def model(self, x, y=None, mask=None):
        return super().model(x, y, mask)


@pytest.mark.slow  # eager NumPyro traces of both models (~15-20 s each)
@pytest.mark.parametrize("likelihood", ["gaussian", "categorical"])
def test_direct_log_densities_equal_the_traced_model(likelihood, key):
    kw = dict(likelihood=likelihood, dx=2, num_classes=3 if likelihood == "categorical" else None)
    net = mlp((2, 8, 3 if likelihood == "categorical" else 2), activation="tanh")
    fast, traced = HierarchicalModel(net, **kw), _Traced(net, **kw)
    assert fast._direct and not traced._direct
    k1, k2, k3, k4 = jax.random.split(key, 4)
    theta = fast.init_theta(k1)
    phi = theta["mu"] + 0.3 * jax.random.normal(k2, theta["mu"].shape)
    x = jax.random.normal(k3, (7, 2))
    if likelihood == "categorical":
        y = jax.random.randint(k4, (7,), 0, 3)
    else:
        y = jax.random.normal(k4, (7, 2))
    mask = jnp.array([1, 1, 0, 1, 0, 1, 1], jnp.float32)
    for m in (fast, traced):
        assert m.num_params == fast.num_params
    pairs = [
        (lambda m, th, p: m.log_likelihood(th, p, x, y, mask)),
        (lambda m, th, p: m.log_likelihood(th, p, x, y)),
        (lambda m, th, p: m.log_likelihood_points(th, p, x, y).sum()),
        (lambda m, th, p: m.log_prior(th, p)),
    ]
    for f in pairs:
        np.testing.assert_allclose(f(fast, theta, phi), f(traced, theta, phi), rtol=1e-5)
        g_fast = jax.grad(f, argnums=(1, 2))(fast, theta, phi)
        g_traced = jax.grad(f, argnums=(1, 2))(traced, theta, phi)
        for a, b in zip(*map(jax.tree_util.tree_leaves, (g_fast, g_traced)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
