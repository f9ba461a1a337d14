"""The SVGD kernel on its own: known targets, jitted and not, and NumPyro's SteinVI."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import multivariate_normal as mvn

from bayesmeta.inference import svgd

MEAN = jnp.array([1.0, -2.0])
COV = jnp.array([[1.0, 0.6], [0.6, 2.0]])


def gaussian_score(x):
    return jax.grad(lambda z: mvn.logpdf(z, MEAN, COV))(x)


MODES = jnp.array([[-3.0, 0.0], [3.0, 0.0]])


def mixture_score(x):
    def lp(z):
        return logsumexp(jnp.stack([mvn.logpdf(z, mu, jnp.eye(2)) for mu in MODES])) - jnp.log(2)

    return jax.grad(lp)(x)


def test_direction_matches_the_definition():
    # φ*(x_i) = 1/M Σ_j [k(x_j, x_i) s_j + ∇_{x_j} k(x_j, x_i)], written as a double loop.
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 3))
    s = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    h = 0.7
    want = np.zeros((6, 3))
    for i in range(6):
        for j in range(6):
            k = lambda xj, i=i: jnp.exp(-jnp.sum((xj - x[i]) ** 2) / h)  # noqa: E731
            want[i] += k(x[j]) * s[j] + jax.grad(k)(x[j])
    want /= 6
    np.testing.assert_allclose(svgd.direction(x, s, h), want, rtol=1e-5, atol=1e-6)


def test_median_bandwidth():
    x = jnp.array([[0.0], [1.0], [3.0]])  # squared distances 1, 9, 4 -> median 4
    np.testing.assert_allclose(svgd.median_bandwidth(x), 4.0 / np.log(3), rtol=1e-6)
    assert float(svgd.median_bandwidth(x[:1])) == 1.0  # one particle: no pairs
    assert float(svgd.median_bandwidth(jnp.zeros((4, 2)))) == 1.0  # coincident particles
    g = jax.grad(lambda z: svgd.median_bandwidth(z))(x)
    assert np.all(np.asarray(g) == 0.0)  # no gradient through the bandwidth


def test_one_particle_is_gradient_ascent():
    x0 = jnp.array([[0.5, 0.5]])
    st = svgd.step(svgd.init(x0), gaussian_score, 0.1)
    np.testing.assert_allclose(st.particles, x0 + 0.1 * gaussian_score(x0[0]), rtol=1e-6)
    assert int(st.step) == 1


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("m", [50, 100])
def test_gaussian_mean_and_covariance(jit, m):
    # Tolerances: mean within 0.05 per coordinate; covariance entries within 15% of the
    # target's scale (SVGD with the median bandwidth under-disperses by ~5-10% at this M).
    x0 = jax.random.normal(jax.random.PRNGKey(0), (m, 2))
    run = lambda x: svgd.run(x, gaussian_score, 0.1, 2000)  # noqa: E731
    x = (jax.jit(run) if jit else run)(x0)
    np.testing.assert_allclose(x.mean(0), MEAN, atol=0.05)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), COV, atol=0.15 * 2.0)
    assert np.all(np.linalg.eigvalsh(np.cov(np.asarray(x).T)) > 0.8 * np.linalg.eigvalsh(COV))


@pytest.mark.parametrize("m", [50, 100])
def test_two_mode_mixture_keeps_both_modes(m):
    # Started from one wide blob, the particles split between the modes (each holds 30-70% of
    # them), each group sits on its mode (mean within 0.15) with roughly unit variance.
    x0 = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (m, 2))
    x = np.asarray(jax.jit(lambda x: svgd.run(x, mixture_score, 0.1, 3000))(x0))
    left = x[:, 0] < 0
    assert 0.3 <= left.mean() <= 0.7
    for grp, mode in ((x[left], MODES[0]), (x[~left], MODES[1])):
        np.testing.assert_allclose(grp.mean(0), mode, atol=0.15)
        np.testing.assert_allclose(np.var(grp, 0, ddof=1), [1.0, 1.0], atol=0.3)


def test_without_repulsion_particles_collapse():
    # The repulsive term is what keeps the spread: plain gradient ascent (each particle its
    # own SVGD with M = 1) sends every particle to the mode.
    x0 = jax.random.normal(jax.random.PRNGKey(0), (50, 2))
    alone = jax.vmap(lambda p: svgd.run(p[None], gaussian_score, 0.1, 2000)[0])(x0)
    assert np.all(np.std(np.asarray(alone), 0) < 1e-3)


def _regression():
    x = jnp.linspace(-2, 2, 10)
    y = 0.7 * x - 0.3 + 0.5 * jax.random.normal(jax.random.PRNGKey(3), (10,))
    design = jnp.stack([x, jnp.ones_like(x)], 1)
    prec = jnp.eye(2) + design.T @ design / 0.25
    cov = jnp.linalg.inv(prec)
    return x, y, design, cov @ design.T @ y / 0.25, cov


@pytest.mark.slow
def test_bayesian_regression_agrees_with_numpyro_steinvi_and_closed_form():
    # One Bayesian linear regression: w ~ N(0, I), y ~ N(w0 x + w1, 0.5²), 10 points.
    # Our SVGD and numpyro.contrib.einstein.SVGD (Adagrad, RBF kernel), 50 particles each:
    # means agree with each other and with the exact posterior to 0.01; standard deviations
    # agree with each other to 5% and sit within 15% (below) of the exact ones.
    from numpyro.contrib.einstein import SVGD, RBFKernel
    from numpyro.optim import Adagrad

    x, y, design, mean, cov = _regression()

    def model(x, y):
        w = numpyro.sample("w", dist.Normal(0, 1).expand([2]).to_event(1))
        numpyro.sample("y", dist.Normal(w[0] * x + w[1], 0.5), obs=y)

    stein = SVGD(model, Adagrad(0.5), RBFKernel(), num_stein_particles=50)
    res = stein.run(jax.random.PRNGKey(0), 1500, x, y, progress_bar=False)
    theirs = np.asarray(res.params["w_auto_loc"])

    def log_post(w):
        return dist.Normal(0, 1).log_prob(w).sum() + dist.Normal(design @ w, 0.5).log_prob(y).sum()

    x0 = jax.random.normal(jax.random.PRNGKey(1), (50, 2))
    ours = np.asarray(jax.jit(lambda z: svgd.run(z, jax.grad(log_post), 0.02, 3000))(x0))
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(ours.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(theirs.mean(0), mean, atol=0.01)
    np.testing.assert_allclose(ours.std(0, ddof=1), theirs.std(0, ddof=1), rtol=0.05)
    assert np.all(ours.std(0, ddof=1) > 0.85 * sd) and np.all(ours.std(0, ddof=1) < 1.02 * sd)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="particles: expected shape"):
        svgd.init(jnp.zeros(3))
    with pytest.raises(ValueError, match="scores: expected"):
        svgd.direction(jnp.zeros((3, 2)), jnp.zeros((3, 1)))
    with pytest.raises(ValueError, match="num_steps"):
        svgd.run(jnp.zeros((3, 2)), gaussian_score, 0.1, -1)


def test_step_options_a_state_dependent_step_a_transform_and_first_order():
    x = jnp.array([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    score = lambda p: -p  # noqa: E731  (standard normal)
    plain = svgd.step(svgd.init(x), score, 0.1)
    # a step size that is a function of the particles equals the same value given directly
    by_fn = svgd.step(svgd.init(x), score, lambda p: 0.1 + 0.0 * p.sum())
    np.testing.assert_allclose(by_fn.particles, plain.particles, rtol=1e-6)
    # the transform sees the update ε φ* and what it returns is added
    clipped = svgd.step(svgd.init(x), score, 0.1, transform=lambda u: jnp.clip(u, -0.01, 0.01))
    np.testing.assert_allclose(clipped.particles, x + jnp.clip(plain.particles - x, -0.01, 0.01),
                               rtol=1e-6)  # fmt: skip

    # first order: the same particles, but no gradient through φ* (ε and x keep theirs)
    def moved(x0, eps, first_order):
        return svgd.step(svgd.init(x0), score, eps, first_order=first_order).particles.sum()

    full = jax.grad(moved, argnums=(0, 1))(x, 0.1, False)
    first = jax.grad(moved, argnums=(0, 1))(x, 0.1, True)
    np.testing.assert_allclose(first[0], jnp.ones_like(x))  # d(x + ε sg(φ*))/dx = 1
    d = svgd.direction(x, -x)
    np.testing.assert_allclose(first[1], d.sum(), rtol=1e-6)
    assert not np.allclose(full[0], first[0])
    assert float(moved(x, 0.1, True)) == pytest.approx(float(moved(x, 0.1, False)))
