import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.inference.heads import conjugate_head, mixture_head, resample_heads
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import linear, mlp
from bayesmeta.tasks import sample_batch, sinusoid

N_SAMPLES = 20_000


def _closed_form(model, theta, num_body, x, y, mask):
    """Bayesian linear regression on the body's features: posterior of the flat head
    (b, w₁…w_F), the log evidence of the real points and the masked features, in float64."""
    base = theta["mu"].at[num_body:].set(0.0)
    f = jax.vmap(lambda i: model.apply(base.at[num_body + i].set(1.0), x)[:, 0])(
        jnp.arange(model.num_params - num_body)
    ).T  # (N, F + 1): ∂f/∂head, exact because f is linear in the head
    mask = np.asarray(mask, np.float64)
    f = np.asarray(f, np.float64) * mask[:, None]
    yv = np.asarray(y, np.float64)[:, 0] * mask
    m0 = np.asarray(theta["mu"][num_body:], np.float64)
    v0 = np.exp(2 * np.asarray(theta["log_sigma"][num_body:], np.float64))
    nv = float(np.exp(2 * theta["log_noise"]))
    cov = np.linalg.inv(np.diag(1 / v0) + f.T @ f / nv)
    mean = cov @ (m0 / v0 + f.T @ yv / nv)
    real = mask > 0
    a = (f[real] * v0) @ f[real].T + nv * np.eye(int(real.sum()))
    r = yv[real] - f[real] @ m0
    log_ev = -0.5 * (
        r @ np.linalg.solve(a, r) + np.linalg.slogdet(a)[1] + real.sum() * np.log(2 * np.pi)
    )
    return mean, cov, log_ev, f


@pytest.mark.parametrize("jit", [False, True])
def test_head_draws_and_evidence_are_exact(key, jit):
    """Redrawn heads have the closed-form posterior mean and covariance (tolerance 5 Monte
    Carlo standard errors), the log marginal is the exact log evidence, and a padded point
    changes neither."""
    model = HierarchicalModel(mlp((1, 6, 1), activation="tanh"), prior_scale=0.7, noise_init=0.4)
    head = conjugate_head(model)
    assert head.num_body == model.num_params - 7
    theta = model.init_theta(key)
    theta["log_sigma"] = (
        theta["log_sigma"].at[head.num_body :].set(jnp.log(jnp.linspace(0.5, 1.5, 7)))
    )
    batch, _ = sample_batch(sinusoid(), key, 1, (4, 4), 1)
    x, y = batch.x_support[0], batch.y_support[0]
    phis = jnp.broadcast_to(theta["mu"], (N_SAMPLES, model.num_params))
    redraw = jax.jit(resample_heads, static_argnums=0) if jit else resample_heads
    log_marginal = jax.jit(head.log_marginal) if jit else head.log_marginal
    body = theta["mu"][: head.num_body]
    for mask in (jnp.ones(4), jnp.array([1.0, 1.0, 1.0, 0.0])):
        mean, cov, log_ev, _ = _closed_form(model, theta, head.num_body, x, y, mask)
        out = np.asarray(redraw(head, theta, phis, jax.random.PRNGKey(3), x, y, mask), np.float64)
        np.testing.assert_array_equal(out[:, : head.num_body], np.asarray(phis[:, : head.num_body]))
        sd = np.sqrt(np.diag(cov)).max()
        np.testing.assert_allclose(
            out[:, head.num_body :].mean(0), mean, atol=5 * sd / np.sqrt(N_SAMPLES)
        )
        np.testing.assert_allclose(
            np.cov(out[:, head.num_body :].T), cov, atol=5 * sd**2 * np.sqrt(2 / N_SAMPLES)
        )
        np.testing.assert_allclose(float(log_marginal(theta, body, x, y, mask)), log_ev, rtol=1e-4)
        # the exact predictive of f at new inputs: z* m_N and z* S_N z*ᵀ
        x_new = jnp.linspace(-5.0, 5.0, 7)[:, None]
        z_new = _closed_form(model, theta, head.num_body, x_new, jnp.zeros((7, 1)), jnp.ones(7))[3]
        pred = jax.jit(head.predictive) if jit else head.predictive
        f_mean, f_var = pred(theta, body, x, y, mask, x_new)
        np.testing.assert_allclose(np.asarray(f_mean)[:, 0], z_new @ mean, rtol=1e-3, atol=1e-4)
        expected_var = np.einsum("ni,ij,nj->n", z_new, cov, z_new)
        np.testing.assert_allclose(np.asarray(f_var)[:, 0], expected_var, rtol=1e-3, atol=1e-5)


def test_rejects_models_without_an_exact_head():
    with pytest.raises(ValueError, match="last layer"):
        conjugate_head(HierarchicalModel(linear()))
    with pytest.raises(ValueError, match="Gaussian"):
        conjugate_head(
            HierarchicalModel(mlp((2, 4, 3)), likelihood="categorical", num_classes=3, dx=2)
        )


@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True])
def test_mixture_head_is_the_exact_mixture_of_conjugate_heads(key, jit):
    """Under a two-component prior the log evidence is logsumexp_c(log π_c + closed-form
    evidence_c), the log predictive is the posterior-weighted mixture of the components'
    predictives, and draws come from each component as often as its posterior weight says
    (5 binomial standard errors)."""
    model = HierarchicalModel(mlp((1, 6, 1), activation="tanh"), prior_scale=0.7, noise_init=0.4)
    base = conjugate_head(model)
    head = mixture_head(base)
    nb = base.num_body
    theta = model.init_theta(key)
    mus = jnp.stack([jnp.full(7, 1.5), jnp.full(7, -1.0)])
    log_sigmas = jnp.log(jnp.stack([jnp.full(7, 0.3), jnp.linspace(0.5, 1.5, 7)]))
    logits = jnp.array([-1.6, 1.6])  # about even posterior weights on this support
    mix = {**theta, "head_mu": mus, "head_log_sigma": log_sigmas, "head_logits": logits}
    batch, _ = sample_batch(sinusoid(), key, 1, (3, 3), 5)
    x, y, mask = batch.x_support[0], batch.y_support[0], jnp.array([1.0, 1.0, 0.0])
    body = theta["mu"][:nb]
    comps = [
        {**theta, "mu": theta["mu"].at[nb:].set(m), "log_sigma": theta["log_sigma"].at[nb:].set(s)}
        for m, s in zip(mus, log_sigmas, strict=True)
    ]
    log_pi = np.asarray(jax.nn.log_softmax(logits), np.float64)
    ell = log_pi + np.array([_closed_form(model, c, nb, x, y, mask)[2] for c in comps])
    post_w = np.exp(ell - np.logaddexp.reduce(ell))
    f = (lambda fn: jax.jit(fn)) if jit else (lambda fn: fn)
    np.testing.assert_allclose(
        float(f(head.log_marginal)(mix, body, x, y, mask)), np.logaddexp.reduce(ell), rtol=1e-4
    )
    x_new, y_new = batch.x_query[0], batch.y_query[0]
    lp = np.stack(
        [np.asarray(base.log_predictive(c, body, x, y, mask, x_new, y_new)) for c in comps]
    )
    want = np.logaddexp.reduce(np.log(post_w)[:, None] + lp, axis=0)
    got = f(head.log_predictive)(mix, body, x, y, mask, x_new, y_new)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    # draws: under component 0 the head sits near 1.5 (σ 0.3), under component 1 near −1
    n = 4000
    keys = jax.random.split(jax.random.PRNGKey(5), n)
    draws = jax.vmap(lambda k: f(head.sample)(mix, body, k, x, y, mask))(keys)
    from_first = np.mean(
        np.abs(np.asarray(draws) - 1.5).mean(1) < np.abs(np.asarray(draws) + 1.0).mean(1)
    )
    assert abs(from_first - post_w[0]) < 5 * np.sqrt(post_w[0] * post_w[1] / n)
    # one component with identical parameters twice is that component
    same = {
        **mix,
        "head_mu": jnp.stack([mus[1]] * 2),
        "head_log_sigma": jnp.stack([log_sigmas[1]] * 2),
    }
    np.testing.assert_allclose(
        float(head.log_marginal(same, body, x, y, mask)),
        float(base.log_marginal(comps[1], body, x, y, mask)),
        rtol=1e-5,
    )


@pytest.mark.parametrize("jit", [False, True])
def test_linear_gaussian_is_the_exact_posterior_with_a_full_prior_covariance(key, jit):
    # the covariance form shared by the collapsed heads and the neural process's encoder,
    # against the precision form in float64: Λ = S₀⁻¹ + ZᵀZ/σ², M = Λ⁻¹(S₀⁻¹M₀ + ZᵀY/σ²)
    from scipy import stats

    from bayesmeta.inference.heads import linear_gaussian, pathwise_draw

    rng = np.random.default_rng(1)
    k, f, dy, nv = 4, 3, 2, 0.3
    z, y = rng.normal(size=(k, f)), rng.normal(size=(k, dy))
    m0 = rng.normal(size=(f, dy))
    l0 = np.tril(rng.normal(size=(f, f))) + 2 * np.eye(f)
    s0 = l0 @ l0.T
    fn = jax.jit(linear_gaussian) if jit else linear_gaussian
    post = fn(*(jnp.asarray(a, jnp.float32) for a in (z, y, m0, s0)), nv)
    prec = np.linalg.inv(s0) + z.T @ z / nv
    cov = np.linalg.inv(prec)
    mean = cov @ (np.linalg.solve(s0, m0) + z.T @ y / nv)
    np.testing.assert_allclose(post.mean, mean, atol=2e-4)
    np.testing.assert_allclose(post.cov, cov, atol=2e-4)
    marginal = stats.multivariate_normal(np.zeros(k), z @ s0 @ z.T + nv * np.eye(k))
    want = sum(marginal.logpdf(y[:, d] - z @ m0[:, d]) for d in range(dy))
    np.testing.assert_allclose(post.log_evidence - dy * k / 2 * np.log(2 * np.pi), want, rtol=1e-4)
    # pathwise draws have the posterior's moments
    n = N_SAMPLES
    k0, k1 = jax.random.split(key)
    w0 = jnp.asarray(m0) + jnp.einsum("fg,ngd->nfd", l0, jax.random.normal(k0, (n, f, dy)))
    eps = np.sqrt(nv) * jax.random.normal(k1, (n, k, dy))
    zj, yj = jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32)
    draws = jax.vmap(lambda a, e: pathwise_draw(post, zj, yj, a, e))(w0, eps)
    np.testing.assert_allclose(draws.mean(0), mean, atol=4 * np.sqrt(np.diag(cov).max() / n) + 1e-3)
    np.testing.assert_allclose(np.cov(np.asarray(draws[:, :, 0]).T), cov, atol=0.02)
