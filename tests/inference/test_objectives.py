"""The shared meta-objectives against NumPy/SciPy hand computations, jitted and not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bayesmeta.inference.objectives import (
    chaser_loss,
    expected_nll,
    kl_penalised,
    moment_nll,
    predictive_nll,
    task_mean,
)
from bayesmeta.tasks.base import TaskBatch

RNG = np.random.default_rng(0)
LL = RNG.normal(-1.0, 0.7, size=(6, 4)).astype(np.float32)  # (S, Q)


def _maybe_jit(fn, jit):
    return jax.jit(fn) if jit else fn


@pytest.mark.parametrize("jit", [False, True])
def test_predictive_and_expected_nll_match_hand_computations(jit):
    mixture = np.log(np.mean(np.exp(LL.astype(np.float64)), axis=0))  # per point
    np.testing.assert_allclose(_maybe_jit(predictive_nll, jit)(LL), -mixture.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        _maybe_jit(expected_nll, jit)(LL), -LL.sum(1).mean() / LL.shape[1], rtol=1e-5
    )
    # the mixture's predictive is never worse than the expected log-likelihood (Jensen)
    assert predictive_nll(LL) <= expected_nll(LL)
    np.testing.assert_allclose(kl_penalised(jnp.float32(1.5), 2.0, 0.5, 4), 1.5 + 0.5 * 2.0 / 4)


@pytest.mark.parametrize("jit", [False, True])
def test_moment_nll_is_the_gaussian_of_the_samples_moments(jit):
    f = RNG.normal(size=(8, 5, 1)).astype(np.float32)
    y = RNG.normal(size=(5, 1)).astype(np.float32)
    noise_var = 0.3
    mean, var = f.mean(0), f.var(0, ddof=1) + noise_var
    want = -stats.norm.logpdf(y, mean, np.sqrt(var)).sum(-1).mean()
    np.testing.assert_allclose(_maybe_jit(moment_nll, jit)(f, y, noise_var), want, rtol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_chaser_loss_is_a_mean_square_with_no_gradient_through_the_leader(jit):
    z = jnp.asarray(RNG.normal(size=(3, 4)), jnp.float32)
    leader = z + 0.5
    np.testing.assert_allclose(_maybe_jit(chaser_loss, jit)(z, leader), 0.25, rtol=1e-6)
    # d/d(leader) is zero: the leader is a target, not a parameter
    g_leader = jax.grad(lambda lead: chaser_loss(z, lead))(leader)
    np.testing.assert_array_equal(g_leader, 0.0)
    g_z = jax.grad(lambda zz: chaser_loss(zz, leader))(z)
    np.testing.assert_allclose(g_z, 2 * (z - leader) / z.size, rtol=1e-6)


@pytest.mark.parametrize("keyed", [False, True])
def test_task_mean_equals_a_loop_over_tasks(keyed):
    t = 3
    batch = TaskBatch(*(jnp.asarray(RNG.normal(size=(t, 2, 1)), jnp.float32) for _ in range(5)))

    def loss(theta, *args):
        task = args[1:] if keyed else args
        extra = jax.random.normal(args[0]) if keyed else 0.0
        return theta * jnp.sum(task[0]) + jnp.sum(task[4]) + extra

    key = jax.random.PRNGKey(3) if keyed else None
    got = task_mean(loss, 2.0, batch, key)
    keys = jax.random.split(key, t) if keyed else None
    per = [loss(2.0, *((keys[i],) if keyed else ()), *(a[i] for a in batch)) for i in range(t)]
    np.testing.assert_allclose(got, np.mean(per), rtol=1e-6)
