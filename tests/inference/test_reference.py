import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.inference import linear_gaussian_posterior, reference
from bayesmeta.tasks import (
    Support,
    linear_gaussian,
    sample_batch,
    sine_line,
    sinusoid,
    sinusoid_hetero,
)


def _support(batch):
    return Support(batch.x_support, batch.y_support, batch.mask_support)


def test_linear_gaussian_posterior_matches_joint_gaussian_conditioning(key):
    """Precision form (the code) against the covariance (Kalman) form, in float64, to 1e-6."""
    with jax.enable_x64(True):
        m0, s0, noise = np.array([0.3, -0.5]), np.array([1.2, 0.7]), 0.4
        x = np.linspace(-3, 4, 6)[:, None]
        y = 0.8 * x - 0.2 + noise * np.asarray(jax.random.normal(key, x.shape, jnp.float64))
        mask = np.array([1, 1, 1, 1, 1, 0.0])
        mean, cov = linear_gaussian_posterior(
            jnp.asarray(x),
            jnp.asarray(y),
            jnp.asarray(mask),
            jnp.asarray(m0),
            jnp.asarray(s0),
            noise,
        )
        feats = np.concatenate([x, np.ones_like(x)], -1)[:5]
        s0m = np.diag(s0**2)
        gain = s0m @ feats.T @ np.linalg.inv(feats @ s0m @ feats.T + noise**2 * np.eye(5))
        np.testing.assert_allclose(mean, m0 + gain @ (y[:5, 0] - feats @ m0), atol=1e-6)
        np.testing.assert_allclose(cov, s0m - gain @ feats @ s0m, atol=1e-6)


def test_linear_gaussian_reference_predictive_is_exact(key):
    """The quadrature predictive equals N(y | x̃ᵀm_N, x̃ᵀS_N x̃ + σ²)."""
    with jax.enable_x64(True):
        fam = linear_gaussian((0.3, -0.5), (1.2, 0.7), 0.4)
        batch, _ = sample_batch(fam, key, 5, (1, 6), 7)
        batch = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), batch)
        ref = reference(fam)
        post = ref.adapt(key, ref.init(key), _support(batch))
        got = post.log_predictive(batch.x_query, batch.y_query)
        for i in range(5):
            mean, cov = linear_gaussian_posterior(
                batch.x_support[i],
                batch.y_support[i],
                batch.mask_support[i],
                jnp.array([0.3, -0.5]),
                jnp.array([1.2, 0.7]),
                0.4,
            )
            feats = jnp.concatenate([batch.x_query[i], jnp.ones_like(batch.x_query[i])], -1)
            mu = feats @ mean
            var = jnp.einsum("nd,de,ne->n", feats, cov, feats) + 0.4**2
            exact = -0.5 * (batch.y_query[i, :, 0] - mu) ** 2 / var - 0.5 * jnp.log(
                2 * math.pi * var
            )
            np.testing.assert_allclose(got[i], exact, atol=1e-6)


@pytest.mark.parametrize("family", [sinusoid(), sine_line()], ids=["sinusoid", "sine_line"])
def test_grid_reference_is_converged_in_grid_resolution(family, key):
    """Log predictive on a 160² grid agrees with a 240² grid (K up to 10) to 1e-3 nats."""
    fine_fn = (sinusoid if family.name == "sinusoid" else sine_line)(grid_size=(240, 240))
    fine = dataclasses.replace(family, reference_grid=fine_fn.reference_grid)
    batch, _ = sample_batch(family, key, 16, (1, 10), 20)
    lp = {}
    for name, fam in (("coarse", family), ("fine", fine)):
        ref = reference(fam)
        lp[name] = ref.adapt(key, ref.init(key), _support(batch)).log_predictive(
            batch.x_query, batch.y_query
        )
    np.testing.assert_allclose(lp["coarse"], lp["fine"], atol=1e-3)


def test_grid_reference_concentrates_on_the_true_task(key):
    fam = sinusoid()
    batch, params = sample_batch(fam, key, 8, (10, 10), 5)
    ref = reference(fam)
    post = ref.adapt(key, ref.init(key), _support(batch))
    mean_amp = jnp.sum(jnp.exp(post.log_weights) * post.phi[..., 0], axis=1)
    np.testing.assert_allclose(mean_amp, params[:, 0], atol=0.35)
    # with no support points the posterior is the prior: mean amplitude 2.55
    empty = Support(batch.x_support, batch.y_support, jnp.zeros_like(batch.mask_support))
    prior = ref.adapt(key, ref.init(key), empty)
    np.testing.assert_allclose(
        jnp.sum(jnp.exp(prior.log_weights) * prior.phi[..., 0], 1), 2.55, atol=1e-4
    )


def test_sine_line_reference_knows_the_hypotheses(key):
    fam = sine_line()
    batch, params = sample_batch(fam, key, 32, (10, 10), 5)
    ref = reference(fam)
    post = ref.adapt(key, ref.init(key), _support(batch))
    p_line = jnp.sum(jnp.exp(post.log_weights) * post.phi[..., 0], axis=1)
    # ten points at noise 0.3 identify the hypothesis for nearly every task
    assert float(jnp.mean((p_line > 0.5) == (params[:, 0] > 0.5))) > 0.9


@pytest.mark.parametrize("jit", [False, True])
def test_hetero_reference_weighs_each_point_by_its_own_noise(key, jit):
    """On sinusoid_hetero the grid posterior is prior × Π_j N(y_j; f_g(x_j), σ(x_j)²), computed
    here by brute force, and the predictive is the mixture with the noise of the new x."""
    fam = sinusoid_hetero(grid_size=(30, 30))
    batch, _ = sample_batch(fam, key, 3, (1, 6), 7)
    ref = reference(fam)
    adapt = jax.jit(ref.adapt) if jit else ref.adapt
    post = adapt(key, ref.init(key), _support(batch))
    assert post.likelihood == "generic"
    grid, log_prior = fam.reference_grid()
    for t in range(3):
        x, y, m = batch.x_support[t], batch.y_support[t, :, 0], batch.mask_support[t]
        sd = np.exp(math.log(0.5) + 0.3 * np.asarray(x[:, 0]))
        f = np.asarray(grid[:, :1]) * np.sin(np.asarray(x[:, 0])[None] + np.asarray(grid[:, 1:]))
        ll = -0.5 * ((np.asarray(y)[None] - f) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)
        lw = np.asarray(log_prior) + (ll * np.asarray(m)[None]).sum(1)
        lw = lw - np.logaddexp.reduce(lw)
        np.testing.assert_allclose(post.log_weights[t], lw, rtol=1e-5, atol=2e-4)
        xq, yq = batch.x_query[t, :, 0], batch.y_query[t, :, 0]
        sdq = np.exp(math.log(0.5) + 0.3 * np.asarray(xq))
        fq = np.asarray(grid[:, :1]) * np.sin(np.asarray(xq)[None] + np.asarray(grid[:, 1:]))
        lq = (
            -0.5 * ((np.asarray(yq)[None] - fq) / sdq) ** 2
            - np.log(sdq)
            - 0.5 * math.log(2 * math.pi)
        )
        exact = np.logaddexp.reduce(lw[:, None] + lq, axis=0)
        got = post.log_predictive(batch.x_query, batch.y_query)[t]
        np.testing.assert_allclose(got, exact, rtol=1e-5, atol=2e-4)
    # the predictive variance carries σ(x)²: far larger on the noisy right end
    v = post.variance(jnp.broadcast_to(jnp.array([[-4.5], [4.5]]), (3, 2, 1)))
    assert bool(jnp.all(v[:, 1] > v[:, 0] + 0.8 * math.exp(2 * (math.log(0.5) + 0.3 * 4.5))))


def test_reference_rejects_families_without_an_exact_posterior():
    from bayesmeta.tasks import sinusoid_bmaml

    with pytest.raises(ValueError, match="family"):
        reference(sinusoid_bmaml())


def test_reference_adapt_jitted_equals_eager(key):
    fam = sinusoid(grid_size=(40, 40))
    batch, _ = sample_batch(fam, key, 3, (1, 4), 5)
    ref = reference(fam)
    sup = _support(batch)
    eager = ref.adapt(key, ref.init(key), sup)
    jitted = jax.jit(ref.adapt)(key, ref.init(key), sup)
    np.testing.assert_allclose(eager.log_weights, jitted.log_weights, rtol=1e-5, atol=1e-5)


def _grouped_rows(seed=0, groups=25, dx=2):
    """Rows of a random-slopes linear model, ragged groups."""
    rng = np.random.default_rng(seed)
    xs, ys, gs = [], [], []
    for g in range(groups):
        w = np.array([1.0, -0.5, 0.3][: dx + 1]) + rng.normal(0, 0.6, dx + 1)
        n = int(rng.integers(3, 12))
        x = rng.normal(size=(n, dx))
        xs.append(x)
        ys.append(x @ w[:dx] + w[dx] + rng.normal(0, 0.3, n))
        gs.append(np.full(n, g))
    return np.concatenate(xs), np.concatenate(ys)[:, None], np.concatenate(gs)


def _jitted_equals_eager_with_one_trace(method, key, support, post):
    traces = []

    def adapt(k, s, sup):
        traces.append(1)
        return method.adapt(k, s, sup, 2000).phi

    jitted = jax.jit(adapt)
    np.testing.assert_allclose(jitted(key, method.init(key), support), post.phi, atol=1e-4)
    jitted(jax.random.PRNGKey(9), method.init(key), support)
    assert len(traces) == 1


def test_linear_reference_is_the_empirical_bayes_posterior(key):
    """Posterior moments against float64 NumPy; the sample mixture's predictive mean and
    variance are exact, and its log density matches the closed-form Gaussian predictive."""
    from bayesmeta.evaluate.baselines import baseline_log_predictive, fit_linear_baselines
    from bayesmeta.inference import linear_reference

    x, y, g = _grouped_rows()
    method = linear_reference(x, y, g, num_samples=2000)
    fit = fit_linear_baselines(x, y, g)
    xt, yt, gt = _grouped_rows(seed=1, groups=4)
    sup = [np.flatnonzero(gt == i)[:3] for i in range(4)]
    qry = [np.flatnonzero(gt == i)[3:6] for i in range(4)]
    xs, ys = np.stack([xt[i] for i in sup]), np.stack([yt[i] for i in sup])
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32)
    xq, yq = np.stack([xt[i] for i in qry]), np.stack([yt[i] for i in qry])
    support = Support(jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32), jnp.asarray(mask))
    post = method.adapt(key, method.init(key), support, 2000)
    mean, cov = jax.vmap(method.extras["posterior"])(support.x, support.y, support.mask)
    s_inv = np.linalg.inv(fit.S)
    for t in range(4):
        phi = np.concatenate([xs[t], np.ones((3, 1))], -1) * mask[t][:, None]
        c = np.linalg.inv(s_inv + phi.T @ phi / fit.eb_noise_var)
        mu = c @ (s_inv @ fit.m + phi.T @ (ys[t, :, 0] * mask[t]) / fit.eb_noise_var)
        np.testing.assert_allclose(mean[t], mu, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(cov[t], c, rtol=1e-3, atol=1e-5)
        w = np.asarray(post.phi[t], np.float64)
        np.testing.assert_allclose(w.mean(0), mu, atol=1e-4)
        np.testing.assert_allclose(np.cov(w.T, bias=True), c, rtol=1e-3, atol=1e-5)
    exact = baseline_log_predictive(fit, xs, ys, mask, xq, yq)["eb_linear"]
    xq32, yq32 = jnp.asarray(xq, jnp.float32), jnp.asarray(yq, jnp.float32)
    # the posterior carries its exact Gaussian: the predictive density is the closed form's
    np.testing.assert_allclose(post.log_predictive(xq32, yq32), exact, atol=2e-3)
    # the draws alone are a Monte Carlo stand-in: close where the support pins the task
    # down, looser in the tails of the empty support's wide prior predictive
    draws = dataclasses.replace(post, gaussian=None)
    got = np.asarray(draws.log_predictive(xq32, yq32))
    np.testing.assert_allclose(got[:3], exact[:3], atol=0.02)
    np.testing.assert_allclose(got[3], exact[3], atol=0.15)
    assert np.abs(got - exact).mean() < 0.03
    # jitted equals eager, with one trace for two calls
    _jitted_equals_eager_with_one_trace(method, key, support, post)
    with pytest.raises(ValueError, match="num_samples: expected at least 4"):
        method.adapt(key, method.init(key), support, 3)
    with pytest.raises(ValueError, match="y: the linear reference is for one target"):
        linear_reference(x, np.concatenate([y, y], 1), g)


@pytest.mark.parametrize("structure", ["full", "intercept"])
def test_mixed_reference_is_the_mixed_models_conditional_posterior(key, structure):
    """The REML mixed model's new-group posterior against statsmodels' fit in float64 NumPy,
    with a singular G (a random intercept only) as well as a full one; masked support rows
    count for nothing; jitted equals eager with one trace."""
    pytest.importorskip("statsmodels")
    from bayesmeta.evaluate.baselines import (
        baseline_predictive,
        fit_linear_baselines,
        fit_mixed_model,
    )
    from bayesmeta.inference import mixed_reference

    x, y, g = _grouped_rows()
    method = mixed_reference(x, y, g, num_samples=2000, structures=(structure,))
    mm = fit_mixed_model(x, y, g, structures=(structure,))
    assert method.config["structure"] == structure
    if structure == "intercept":
        assert np.linalg.matrix_rank(mm.G) == 1  # the slopes have no random effect
    xt, yt, gt = _grouped_rows(seed=1, groups=4)
    sup = [np.flatnonzero(gt == i)[:3] for i in range(4)]
    qry = [np.flatnonzero(gt == i)[3:6] for i in range(4)]
    xs, ys = np.stack([xt[i] for i in sup]), np.stack([yt[i] for i in sup])
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32)
    xq = np.stack([xt[i] for i in qry])
    support = Support(jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32), jnp.asarray(mask))
    post = method.adapt(key, method.init(key), support, 2000)
    assert np.all(np.isfinite(np.asarray(post.phi)))
    fit = fit_linear_baselines(x, y, g)
    want_mean, want_var = baseline_predictive(fit, xs, ys, mask, xq, mixed=mm)["mixed_model"]
    xq32 = jnp.asarray(xq, jnp.float32)
    np.testing.assert_allclose(post.mean(xq32)[..., 0], want_mean, rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(post.variance(xq32)[..., 0], want_var, rtol=2e-3, atol=2e-3)
    # far outside the training inputs (an extrapolating group) the density, CDF and PIT are
    # still the exact Gaussian's, where a mixture of draws has tails too thin
    far = xq * 30.0
    mean_far, var_far = baseline_predictive(fit, xs, ys, mask, far, mixed=mm)["mixed_model"]
    y_far = mean_far + 4.0 * np.sqrt(var_far)  # four predictive sds out
    far32, yf32 = jnp.asarray(far, jnp.float32), jnp.asarray(y_far[..., None], jnp.float32)
    want_lp = -0.5 * (16.0 + np.log(2 * np.pi * var_far))
    np.testing.assert_allclose(post.log_predictive(far32, yf32), want_lp, rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(post.cdf(far32, yf32)[..., 0], 0.999968, atol=1e-5)
    np.testing.assert_allclose(post.pit(far32, yf32), post.cdf(far32, yf32))
    # a masked row is no row: group 1's posterior is that of its first two rows alone
    two = Support(support.x[1:2, :2], support.y[1:2, :2], jnp.ones((1, 2)))
    np.testing.assert_allclose(
        method.extras["posterior"](two.x[0], two.y[0], two.mask[0])[0],
        method.extras["posterior"](support.x[1], support.y[1], support.mask[1])[0],
        atol=1e-5,
    )
    _jitted_equals_eager_with_one_trace(method, key, support, post)
    with pytest.raises(ValueError, match="y: the mixed-model reference is for one target"):
        mixed_reference(x, np.concatenate([y, y], 1), g)
