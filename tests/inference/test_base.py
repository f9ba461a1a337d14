"""Shared pieces of the inference methods."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.inference.base import gauss_newton_update, log_mean_exp


@pytest.mark.parametrize("jit", [False, True])
def test_log_mean_exp_is_log_of_the_sample_mean_and_stable(key, jit):
    f = jax.jit(log_mean_exp) if jit else log_mean_exp
    x = jax.random.normal(key, (7, 3, 2))
    np.testing.assert_allclose(f(x), np.log(np.mean(np.exp(x), 0)), rtol=1e-5)
    big = np.array([[-1000.0], [-1001.0]], np.float32)  # exp underflows; the result must not
    np.testing.assert_allclose(f(big), -1000 + np.log((1 + np.exp(-1)) / 2), rtol=1e-6)


def _linear_apply(phi, x):
    """f = b + w·x for φ = (b, w₁, …, w_D)."""
    return phi[0] + x @ phi[1:, None]


@pytest.mark.parametrize("jit", [False, True])
def test_gauss_newton_step_is_the_linear_posterior_mean(key, jit):
    """On a model linear in φ one step from φ₀ lands on the posterior mean under the prior
    N(φ₀, P) and noise λ, written here in precision form (XᵀX/λ + P⁻¹)⁻¹(Xᵀy/λ + P⁻¹φ₀); the
    masked point must not count."""
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (6, 2))
    y = jax.random.normal(ky, (6, 1))
    mask = jnp.array([1, 1, 1, 0, 1, 1.0])
    phi0 = jax.random.normal(kp, (3,))
    prec = jnp.array([0.5, 2.0, 0.1])
    lam = 0.3
    f = jax.jit(gauss_newton_update, static_argnums=0) if jit else gauss_newton_update
    got = phi0 + f(_linear_apply, phi0, x, y, mask, prec, lam)
    keep = np.asarray(mask, bool)
    xd = np.hstack([np.ones((6, 1)), np.asarray(x)])[keep].astype(np.float64)
    yd = np.asarray(y, np.float64)[keep, 0]
    p_inv = np.diag(1 / np.asarray(prec, np.float64))
    want = np.linalg.solve(xd.T @ xd / lam + p_inv, xd.T @ yd / lam + p_inv @ np.asarray(phi0))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_gauss_newton_step_tends_to_the_gradient_step_under_heavy_damping(key):
    """λ ≫ J P Jᵀ: Δφ → −P Jᵀ r / λ, a gradient step of ½Σr² with step size P/λ."""
    x = jax.random.normal(key, (4, 1))
    y = jnp.sin(3 * x)
    mlp_apply = lambda p, x: jnp.tanh(x * p[:3] + p[3:6]) @ p[6:9, None] + p[9]  # noqa: E731
    phi = jax.random.normal(jax.random.PRNGKey(3), (10,))
    mask = jnp.ones(4)
    lam = 1e5
    got = gauss_newton_update(mlp_apply, phi, x, y, mask, 0.2, lam)
    grad = jax.grad(lambda p: 0.5 * jnp.sum((mlp_apply(p, x) - y) ** 2))(phi)
    np.testing.assert_allclose(got, -0.2 * grad / lam, rtol=1e-3, atol=1e-12)


def test_a_method_builder_makes_the_shared_factory():
    import inspect

    import optax

    from bayesmeta.inference.base import method_builder
    from bayesmeta.inference.config import ConfigError
    from bayesmeta.inference.maml import MAMLConfig

    seen = {}

    @method_builder(MAMLConfig)
    def toy(model, cfg, optimizer):
        """Build a toy.

        Notes
        -----
        A note."""
        seen.update(model=model, cfg=cfg, optimizer=optimizer)
        return "method"

    assert toy("m", inner_steps=3) == "method"
    assert seen["cfg"] == MAMLConfig(inner_steps=3) and seen["optimizer"] is not None
    given = optax.sgd(0.1)
    toy("m", {"inner_lr": 0.2}, optimizer=given)
    assert seen["optimizer"] is given and seen["cfg"].inner_lr == 0.2
    with pytest.raises(ConfigError, match="maml"):
        toy("m", no_such_option=1)
    params = list(inspect.signature(toy).parameters)
    assert params == ["model", "config", "optimizer", "options"]
    doc = toy.__doc__
    assert doc.index("Build a toy.") < doc.index("Parameters") < doc.index("Notes")
    assert "config : MAMLConfig, optional" in doc and toy.config_class is MAMLConfig
