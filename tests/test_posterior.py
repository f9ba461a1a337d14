"""TaskPosterior: predictive density, CDF, moments, sampling, jit and ArviZ export.

Every expected value is computed independently (NumPy / math), never by the code under test.
"""

from __future__ import annotations

import dataclasses
import math

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.evaluate import nll
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks import Support, make_task_set, sinusoid

NOISE = 0.3


def _const_apply(p, x):
    """Location p[0] at every input: (N, Dx) -> (N, 1)."""
    return jnp.full((x.shape[0], 1), p[0], dtype=x.dtype)


@pytest.fixture(scope="module")
def true_posterior():
    """A posterior whose S samples are all the true task parameters (the exact predictive)."""
    family = sinusoid(noise=NOISE)
    tasks = make_task_set(family, jax.random.PRNGKey(0), num_tasks=6, k=5, num_query=40)
    params = tasks["task_params"]
    phi = jnp.repeat(params[:, None, :], 8, axis=1)
    post = TaskPosterior.from_samples(phi, NOISE, family.mean_fn, method="truth")
    return post, tasks


def _gaussian_logpdf(y, m, s):
    return -0.5 * ((y - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


def test_nll_of_true_function_equals_analytic_gaussian_nll(true_posterior):
    post, tasks = true_posterior
    x = np.asarray(tasks["x_query"], np.float64)
    y = np.asarray(tasks["y_query"], np.float64)
    a = np.asarray(tasks["task_params"], np.float64)
    f = a[:, None, None, 0] * np.sin(x + a[:, None, None, 1])  # (T, Q, 1)
    r = y - f
    expected_points = (0.5 * (r / NOISE) ** 2 + math.log(NOISE) + 0.5 * math.log(2 * math.pi))[
        ..., 0
    ]

    lp = post.log_predictive(tasks["x_query"], tasks["y_query"])
    assert lp.shape == expected_points.shape
    np.testing.assert_allclose(-np.asarray(lp), expected_points, atol=1e-4)
    assert abs(nll(lp) - expected_points.mean()) < 1e-5


def test_nll_changes_when_the_posterior_is_wrong(true_posterior):
    # Guard: the same check with shifted samples must not match (the test above can fail).
    post, tasks = true_posterior
    shifted = TaskPosterior.from_samples(post.phi + jnp.array([0.5, 0.0]), NOISE, post.apply)
    lp_true = nll(post.log_predictive(tasks["x_query"], tasks["y_query"]))
    lp_shift = nll(shifted.log_predictive(tasks["x_query"], tasks["y_query"]))
    assert lp_shift > lp_true + 0.1


def _mixture_posterior():
    # One task, two equally weighted samples: N(-1, 0.5²) and N(1.5, 2²).
    phi = jnp.array([[[-1.0], [1.5]]])
    noise = jnp.array([[0.5, 2.0]])
    return TaskPosterior.from_samples(phi, noise, _const_apply)


Y_POINTS = [-3.0, -1.2, -1.0, 0.0, 0.7, 1.5, 4.0]


def test_cdf_and_pit_stay_in_unit_interval_over_many_samples():
    # 2,000 equally weighted samples at spread locations: in float32 the weighted sum of their
    # CDFs far above every location rounds past 1 unless it is clipped
    s = 2000
    phi = jnp.linspace(-1.0, 1.0, s, dtype=jnp.float32).reshape(1, s, 1)
    post = TaskPosterior.from_samples(phi, jnp.full((1, s), 0.1, jnp.float32), _const_apply)
    x = jnp.zeros((1, 3, 1), jnp.float32)
    y = jnp.array([[[-50.0], [0.0], [50.0]]], jnp.float32)
    for f in (post.cdf(x, y), post.pit(x, y)):
        got = np.asarray(f)[0, :, 0]
        assert got.min() >= 0.0 and got.max() <= 1.0
        np.testing.assert_allclose(got, [0.0, 0.5, 1.0], atol=1e-4)


def test_cdf_of_two_gaussian_mixture_matches_erf():
    post = _mixture_posterior()
    x = jnp.zeros((1, len(Y_POINTS), 1))
    y = jnp.array(Y_POINTS).reshape(1, -1, 1)

    def phi_cdf(v, m, s):
        return 0.5 * (1 + math.erf((v - m) / (s * math.sqrt(2))))

    expected = [0.5 * phi_cdf(v, -1.0, 0.5) + 0.5 * phi_cdf(v, 1.5, 2.0) for v in Y_POINTS]
    got = np.asarray(post.cdf(x, y))[0, :, 0]
    np.testing.assert_allclose(got, expected, atol=1e-6)

    expected_lp = [
        math.log(
            0.5 * math.exp(_gaussian_logpdf(v, -1.0, 0.5))
            + 0.5 * math.exp(_gaussian_logpdf(v, 1.5, 2.0))
        )
        for v in Y_POINTS
    ]
    np.testing.assert_allclose(np.asarray(post.log_predictive(x, y))[0], expected_lp, rtol=1e-5)


def test_mixture_mean_and_variance_include_noise():
    post = _mixture_posterior()
    x = jnp.zeros((1, 3, 1))
    m = 0.5 * (-1.0) + 0.5 * 1.5
    var = 0.5 * (0.5**2 + 2.0**2) + 0.5 * ((-1.0 - m) ** 2 + (1.5 - m) ** 2)
    np.testing.assert_allclose(np.asarray(post.mean(x)), m, atol=1e-6)
    np.testing.assert_allclose(np.asarray(post.variance(x)), var, rtol=1e-6)


def _weighted_posterior():
    # Two tasks, three nodes with non-uniform weights.
    means = [[-2.0, 0.0, 3.0], [1.0, 1.0, -1.0]]
    sds = [[0.4, 1.0, 0.7], [0.5, 2.0, 0.3]]
    weights = [[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]
    post = TaskPosterior(
        phi=jnp.array(means)[..., None],
        log_weights=jnp.log(jnp.array(weights)),
        noise_std=jnp.array(sds),
        apply=_const_apply,
        method="grid",
    )
    return post, means, sds, weights


def test_weighted_log_predictive_matches_hand_logsumexp():
    post, means, sds, weights = _weighted_posterior()
    ys = [[-2.5, 0.1, 2.9, 5.0], [0.0, 1.1, -1.0, -3.0]]
    x = jnp.zeros((2, 4, 1))
    y = jnp.array(ys)[..., None]
    expected = np.empty((2, 4))
    for t in range(2):
        for q, v in enumerate(ys[t]):
            terms = [
                math.log(w) + _gaussian_logpdf(v, m, s)
                for w, m, s in zip(weights[t], means[t], sds[t], strict=True)
            ]
            top = max(terms)
            expected[t, q] = top + math.log(sum(math.exp(a - top) for a in terms))
    np.testing.assert_allclose(np.asarray(post.log_predictive(x, y)), expected, rtol=1e-5)
    # Uniform weights give a different answer: the weights are used.
    uniform = TaskPosterior.from_samples(post.phi, post.noise_std, _const_apply)
    assert not np.allclose(np.asarray(uniform.log_predictive(x, y)), expected, rtol=1e-3)


def test_weighted_sample_predictive_picks_nodes_by_weight():
    # Narrow components far apart: each draw is attributable to one node.
    phi = jnp.array([[[-10.0], [0.0], [10.0]]])
    weights = np.array([0.2, 0.5, 0.3])
    post = TaskPosterior(
        phi, jnp.log(jnp.asarray(weights))[None], jnp.full((1, 3), 0.1), _const_apply
    )
    n = 20_000
    draws = np.asarray(post.sample_predictive(jax.random.PRNGKey(3), jnp.zeros((1, 1, 1)), n))
    assert draws.shape == (1, n, 1, 1)
    node = np.round(draws.ravel() / 10).astype(int) + 1
    freq = np.bincount(node, minlength=3) / n
    # 5 binomial standard errors: false-failure rate < 2e-6 per node.
    tol = 5 * np.sqrt(weights * (1 - weights) / n)
    assert np.all(np.abs(freq - weights) < tol), (freq, weights)
    resid = draws.ravel() - (node - 1) * 10.0
    assert abs(resid.std() - 0.1) < 0.005


def test_jit_log_predictive_equals_eager(true_posterior):
    post, tasks = true_posterior
    x, y = tasks["x_query"], tasks["y_query"]
    eager = np.asarray(post.log_predictive(x, y))
    jitted = np.asarray(jax.jit(post.log_predictive)(x, y))
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    # The posterior is a pytree: it can be a jit argument too.
    as_arg = jax.jit(lambda p, a, b: p.log_predictive(a, b))(post, x, y)
    np.testing.assert_allclose(np.asarray(as_arg), eager, rtol=1e-6, atol=1e-6)


def test_jit_weighted_log_predictive_equals_eager():
    post, *_ = _weighted_posterior()
    x = jnp.zeros((2, 4, 1))
    y = jnp.linspace(-3, 3, 8).reshape(2, 4, 1)
    np.testing.assert_allclose(
        np.asarray(jax.jit(post.log_predictive)(x, y)),
        np.asarray(post.log_predictive(x, y)),
        rtol=1e-6,
    )


def test_categorical_log_predictive_is_log_of_mixture_probs():
    # Logits (S=2, C=3) per task, constant in x: p(y) = Σ_s w_s softmax(logits_s)[y].
    logits = np.array([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]])
    post = TaskPosterior.from_samples(
        jnp.asarray(logits),
        1.0,
        lambda p, x: jnp.broadcast_to(p, (x.shape[0], 3)),
        likelihood="categorical",
    )
    sm = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    probs = sm.mean(1)[0]  # (C,)
    x = jnp.zeros((1, 3, 1))
    y = jnp.array([[0, 1, 2]])
    np.testing.assert_allclose(np.asarray(post.log_predictive(x, y))[0], np.log(probs), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(post.probs(x))[0], np.tile(probs, (3, 1)), rtol=1e-6)


def test_image_sized_inputs_are_scored_in_batches_of_tasks_with_the_same_result():
    # 28 x 28 inputs, 8 samples, 25 query points: every task at once would hold tens of GB of
    # a conv net's activations for 600 tasks, so the predictive maps take a few tasks at a time.
    t, s, n, d = 40, 8, 25, 784
    rng = np.random.default_rng(0)
    x = rng.normal(size=(t, n, d)).astype(np.float32)
    y = rng.integers(0, 3, size=(t, n))
    phi = rng.normal(size=(t, s, 3)).astype(np.float32)
    post = TaskPosterior.from_samples(
        jnp.asarray(phi), 1.0, lambda p, xt: xt[:, :3] * p, likelihood="categorical"
    )
    assert 1 <= post._batch_size(x) < t
    assert post._batch_size() == t  # without the inputs only the sample count bounds it
    logits = x[:, None, :, :3] * phi[:, :, None, :]  # (T, S, N, 3)
    sm = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (sm / sm.sum(-1, keepdims=True)).mean(1)  # (T, N, 3)
    np.testing.assert_allclose(np.asarray(post.probs(x)), probs, rtol=1e-5, atol=1e-6)
    want = np.log(np.take_along_axis(probs, y[..., None], -1)[..., 0])
    np.testing.assert_allclose(np.asarray(post.log_predictive(x, y)), want, rtol=1e-5, atol=1e-5)


def test_to_inference_data_round_trip_and_summary(true_posterior):
    post, tasks = true_posterior
    idata = post.to_inference_data()
    assert idata.posterior["phi"].dims == ("chain", "draw", "task", "param")
    assert "task" in idata.posterior.dims
    # phi (1, S, T, P) is the input (T, S, P) transposed.
    np.testing.assert_array_equal(
        idata.posterior["phi"].values[0].transpose(1, 0, 2), np.asarray(post.phi)
    )
    np.testing.assert_array_equal(
        idata.posterior["noise_std"].values[0].T, np.asarray(post.noise_std)
    )
    summary = az.summary(idata, var_names=["phi"], kind="stats")
    assert len(summary) == post.num_tasks * post.phi.shape[-1]
    # Every sample is the true parameter: the posterior mean is it, the sd is zero.
    np.testing.assert_allclose(
        summary["mean"].to_numpy(), np.asarray(tasks["task_params"]).ravel(), atol=1e-3
    )


def test_to_inference_data_posterior_predictive_has_point_dim(true_posterior):
    post, tasks = true_posterior
    x = tasks["x_query"]
    idata = post.to_inference_data(x=x, key=jax.random.PRNGKey(7))
    y = idata.posterior_predictive["y"]
    assert y.dims == ("chain", "draw", "task", "point", "dy")
    t, s = post.num_tasks, post.num_samples
    assert y.shape == (1, s, t, x.shape[1], 1)
    # Draws are the true function plus N(0, NOISE²) noise.
    f = np.asarray(post.mean(x))  # (T, Q, 1)
    z = (y.values[0].transpose(1, 0, 2, 3) - f[:, None]) / NOISE
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.1  # n = 1920: ~4 standard errors
    np.testing.assert_array_equal(idata.constant_data["x"].values, np.asarray(x))
    az.summary(idata, group="posterior_predictive", kind="stats")


def test_to_inference_data_resamples_weighted_posterior():
    post, means, _, weights = _weighted_posterior()
    idata = post.to_inference_data(key=jax.random.PRNGKey(0), num_samples=4000)
    phi = idata.posterior["phi"].values[0, :, :, 0]  # (S, T)
    assert phi.shape == (4000, 2)
    for t in range(2):
        assert set(np.unique(phi[:, t])) <= set(means[t])
    # Task 0's nodes are distinct: frequencies follow the weights (5 standard errors).
    freq = np.array([np.mean(phi[:, 0] == m) for m in means[0]])
    w = np.asarray(weights[0])
    assert np.all(np.abs(freq - w) < 5 * np.sqrt(w * (1 - w) / 4000))


def test_pointwise_log_likelihood_is_each_samples_density():
    # Two samples with locations 0 and 1 (Gaussian, σ = 0.5): log N(y; loc_s, σ²) by hand,
    # and their log-mean-exp is the log predictive.
    phi = jnp.array([[[0.0], [1.0]]])
    post = TaskPosterior.from_samples(phi, 0.5, _const_apply)
    x, y = jnp.zeros((1, 3, 1)), jnp.array([[[0.2], [0.9], [-1.0]]])
    ll = np.asarray(post.log_likelihood_samples(x, y))
    want = np.array([[_gaussian_logpdf(float(v), m, 0.5) for v in y[0, :, 0]] for m in (0.0, 1.0)])
    np.testing.assert_allclose(ll[0], want, rtol=1e-5)
    lp = np.log(np.exp(want).mean(0))
    np.testing.assert_allclose(np.asarray(post.log_predictive(x, y))[0], lp, rtol=1e-5)


def test_to_inference_data_with_targets_supports_loo_and_compare(true_posterior):
    post, tasks = true_posterior
    x, y = tasks["x_query"], tasks["y_query"]
    idata = post.to_inference_data(x=x, y=y, key=jax.random.PRNGKey(7))
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "task", "point")
    assert idata.log_likelihood["y"].shape == (1, post.num_samples, post.num_tasks, x.shape[1])
    np.testing.assert_array_equal(idata.observed_data["y"].values, np.asarray(y))
    # the true posterior's samples are one point: loo's elpd is the summed exact log density
    one = idata.sel(task=0)
    loo = az.loo(one)
    want = _gaussian_logpdf(np.asarray(y[0, :, 0]), np.asarray(post.mean(x))[0, :, 0], NOISE)
    assert loo.elpd_loo == pytest.approx(want.sum(), rel=1e-4)
    # a worse posterior ranks below in az.compare
    worse = TaskPosterior.from_samples(post.phi, 3 * NOISE, post.apply, method="wide")
    cmp = az.compare({"truth": one, "wide": worse.to_inference_data(x=x, y=y).sel(task=0)})
    assert list(cmp.index) == ["truth", "wide"]
    with pytest.raises(ValueError, match="y: the observed targets need their inputs x"):
        post.to_inference_data(y=y)


@pytest.mark.slow  # compiles an EMAML adapt and 400 Predictive draws
def test_numpyro_predictive_draws_from_a_task_posterior():
    # the NumPyro bridge: Predictive over the model's phi site gives the posterior's predictive
    from numpyro.infer import Predictive

    from bayesmeta.modelfiles import load_model_spec

    spec = load_model_spec("sinusoid")
    method, _ = spec.build("emaml", num_particles=4, inner_steps=1)
    state = method.init(jax.random.PRNGKey(0))
    x = jnp.linspace(-4, 4, 6)[None, :, None].repeat(2, 0)  # (T=2, N=6, 1)
    support = Support(x[:, :3], jnp.sin(x[:, :3]), jnp.ones((2, 3)))
    post = method.adapt(jax.random.PRNGKey(1), state, support)
    theta = {"mu": state.theta["mu"][0], "log_sigma": jnp.zeros_like(state.theta["mu"][0])}
    with pytest.raises(ValueError, match="noise scale differs between tasks"):
        # EMAML's members carry their own noise; fake one that differs per task
        dataclasses.replace(post, noise_std=post.noise_std.at[1].add(0.1)).posterior_samples()
    samples = post.posterior_samples(theta)
    assert samples["phi"].shape == (4, 2, 1, spec.model.num_params)
    draws = Predictive(spec.model.model, posterior_samples=samples)(jax.random.PRNGKey(2), x)["y"]
    assert draws.shape == (4, 2, 6, 1)
    # each Predictive draw is f_φs(x) + σ_s ε: its mean over noise is the sample's output
    f = post.outputs(x)  # (T, S, N, 1)
    many = jax.vmap(lambda k: Predictive(spec.model.model, posterior_samples=samples)(k, x)["y"])(
        jax.random.split(jax.random.PRNGKey(3), 400)
    )
    np.testing.assert_allclose(
        many.mean(0), jnp.swapaxes(f, 0, 1), atol=4 * float(post.noise_std.max()) / 20 + 1e-3
    )


def _two_output_gaussian():
    """Two tasks with φ ~ N(μ_t, Σ_t) over P = 3 weights and a linear map to Dy = 2 outputs,
    f_φ(x) = [φ0 x + φ2, φ1 x + φ2]: the outputs are correlated through φ2."""
    rng = np.random.default_rng(3)
    mean = rng.normal(size=(2, 3))
    a = rng.normal(size=(2, 3, 3))
    cov = a @ np.swapaxes(a, 1, 2) * 0.3 + 0.05 * np.eye(3)

    def apply(p, x):
        return jnp.stack([p[0] * x[:, 0] + p[2], p[1] * x[:, 0] + p[2]], -1)

    phi = jnp.asarray(mean[:, None] + rng.normal(size=(2, 50, 3)) @ np.linalg.cholesky(cov).mT)
    gaussian = (jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32))
    post = TaskPosterior.from_samples(
        phi.astype(jnp.float32), NOISE, apply, method="exact", gaussian=gaussian
    )
    return post, mean, cov


def test_an_exact_gaussian_posterior_gives_the_closed_form_predictive():
    """log N(y | Jμ, σ²I + JΣJᵀ) in float64 NumPy over correlated outputs, its marginal CDF and
    moments; the exact form survives jit, resampling, task selection and concatenation."""
    post, mean, cov = _two_output_gaussian()
    x = np.array([[[0.5], [-2.0], [8.0]], [[1.0], [0.0], [-6.0]]], np.float32)
    y = np.array(np.random.default_rng(4).normal(size=(2, 3, 2)) * 3, np.float32)
    want_lp, want_m, want_v, want_cdf = (np.zeros((2, 3)), np.zeros((2, 3, 2)),
                                         np.zeros((2, 3, 2)), np.zeros((2, 3, 2)))  # fmt: skip
    for t in range(2):
        for n in range(3):
            jac = np.array([[x[t, n, 0], 0, 1], [0, x[t, n, 0], 1]], np.float64)
            m = jac @ mean[t]
            c = jac @ cov[t] @ jac.T + NOISE**2 * np.eye(2)
            r = y[t, n] - m
            want_lp[t, n] = -0.5 * (r @ np.linalg.solve(c, r) + np.log(np.linalg.det(c)))
            want_lp[t, n] -= np.log(2 * np.pi)
            want_m[t, n], want_v[t, n] = m, np.diag(c)
            z = r / np.sqrt(np.diag(c))
            want_cdf[t, n] = [0.5 * math.erfc(-v / math.sqrt(2)) for v in z]
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    np.testing.assert_allclose(post.log_predictive(xj, yj), want_lp, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(post.mean(xj), want_m, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(post.variance(xj), want_v, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(post.cdf(xj, yj), want_cdf, atol=1e-5)
    np.testing.assert_allclose(post.pit(xj, yj), want_cdf, atol=1e-5)
    jitted = jax.jit(lambda p, a, b: p.log_predictive(a, b))(post, xj, yj)
    np.testing.assert_allclose(jitted, want_lp, rtol=1e-4, atol=1e-4)
    again = post.resample(jax.random.PRNGKey(0), 10)
    np.testing.assert_allclose(again.log_predictive(xj, yj), want_lp, rtol=1e-4, atol=1e-4)
    one = post.select([1])
    np.testing.assert_allclose(one.log_predictive(xj[1:], yj[1:]), want_lp[1:], rtol=1e-4)
    assert one.num_tasks == 1 and one.gaussian[1].shape == (1, 3, 3)
    from bayesmeta.posterior import concatenate

    both = concatenate([post.select([1]), post.select(slice(0, 1))])
    np.testing.assert_allclose(both.log_predictive(xj[::-1], yj[::-1]), want_lp[::-1], rtol=1e-4)
    # without its exact form the posterior is its draws' mixture, a different number
    draws = concatenate([dataclasses.replace(post, gaussian=None), post])
    assert draws.gaussian is None


def test_an_exact_gaussian_posterior_is_checked():
    post, mean, cov = _two_output_gaussian()
    with pytest.raises(ValueError, match=r"gaussian: expected \(mean \(T, P\)=\(2, 3\)"):
        dataclasses.replace(post, gaussian=(post.gaussian[0][:1], post.gaussian[1]))
    with pytest.raises(ValueError, match="gaussian: expected"):
        dataclasses.replace(post, gaussian=post.gaussian[0])
    with pytest.raises(ValueError, match="gaussian: an exact Gaussian posterior needs a Gaussian"):
        dataclasses.replace(post, likelihood="categorical")
