"""The exact (conjugate) last layer of a network with a Gaussian likelihood.

With f_φ(x) = Z·[W; b], Z = (h_body(x), 1), and the model's prior N(μ_w, diag σ_w²) over
the last layer, the last layer can be integrated out exactly for any fixed body:

    log p(D | body) = Σ_d log N(y_d; Z m_d, Z diag(v_d) Zᵀ + σ_y² I),

and drawn exactly from its conditional posterior p(w | body, D) by perturb-and-MAP,

    w = w₀ + S₀Zᵀ A⁻¹ (y + σ_y ξ − Z w₀),   w₀ ~ N(μ_w, S₀),  ξ ~ N(0, I),  A = Z S₀ Zᵀ + σ_y² I,

which has mean μ_w + S₀ZᵀA⁻¹(y − Zμ_w) and covariance S₀ − S₀ZᵀA⁻¹ZS₀. Everything is solved in
data space (a K×K Cholesky per output), so it never inverts S₀ and costs little for few-shot
support sets. Padded points have z = 0 and y = 0 and change nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from bayesmeta.model import HierarchicalModel, LastLayer, NumPyroModel


class LinearGaussian(NamedTuple):
    """The exact posterior of W ``(F, Dy)`` in Y = Z W + E, E ~ N(0, σ² I), whose columns are
    a priori N(M₀_d, S₀) with one ``(F, F)`` prior covariance S₀ (a diagonal one per column is
    a vmap over columns). In covariance form, with B = S₀ Zᵀ and A = Z S₀ Zᵀ + σ² I:

        M = M₀ + B A⁻¹ (Y − Z M₀),   S = S₀ − B A⁻¹ Bᵀ,
        log p(Y) = −½ tr[(Y − Z M₀)ᵀ A⁻¹ (Y − Z M₀)] − (Dy/2) log|A|  (+ the 2π constant).

    It never inverts S₀ (a K×K Cholesky per task), so it stays well conditioned in float32
    however small or large the prior scales are. A padded point has z = 0 and y = 0 and only
    adds σ² to A's diagonal (and the same constant to every log evidence).

    Attributes
    ----------
    mean : (F, Dy) posterior mean M.
    cov : (F, F) posterior covariance S (shared by the columns).
    log_evidence : () log p(Y) without the −(K Dy / 2) log 2π term.
    gain : (F, K) B = S₀ Zᵀ.
    chol : (K, K) lower Cholesky factor of A.
    """

    mean: jax.Array
    cov: jax.Array
    log_evidence: jax.Array
    gain: jax.Array
    chol: jax.Array


def linear_gaussian(z, y, m0, s0, noise_var) -> LinearGaussian:
    """:class:`LinearGaussian` of ``z (K, F)``, ``y (K, Dy)``, prior mean ``m0 (F, Dy)``,
    prior covariance ``s0 (F, F)`` and noise variance σ²."""
    b = s0 @ z.T
    chol = jnp.linalg.cholesky(z @ b + noise_var * jnp.eye(z.shape[0], dtype=z.dtype))
    resid = y - z @ m0
    alpha = jax.scipy.linalg.cho_solve((chol, True), resid)
    cov = s0 - b @ jax.scipy.linalg.cho_solve((chol, True), b.T)
    log_ev = -0.5 * jnp.sum(resid * alpha) - y.shape[-1] * jnp.sum(jnp.log(jnp.diag(chol)))
    return LinearGaussian(m0 + b @ alpha, 0.5 * (cov + cov.T), log_ev, b, chol)


def pathwise_draw(post: LinearGaussian, z, y, w0, eps):
    """An exact draw from :func:`linear_gaussian`'s posterior by pathwise conditioning
    (perturb-and-MAP): W = W₀ + B A⁻¹ (Y − Z W₀ − E) with W₀ ~ N(M₀, S₀) and E ~ N(0, σ² I)
    drawn by the caller (``w0 (F, Dy)``, ``eps (K, Dy)``); no square root of S is needed."""
    return w0 + post.gain @ jax.scipy.linalg.cho_solve((post.chol, True), y - z @ w0 - eps)


class ConjugateHead(NamedTuple):
    """Pure functions over a flat φ = (body, last layer) split at ``num_body``.

    ``log_marginal(theta, body, x, y, mask)`` is log p(D | body) with the last layer integrated
    out under θ's prior; ``sample(theta, body, key, x, y, mask)`` draws the flat last layer
    from p(w | body, D); ``predictive(theta, body, x, y, mask, x_new)`` is the mean and
    variance of f(x_new) under p(w | body, D), each ``(N, Dy)`` (add σ_y² for y);
    ``log_predictive(theta, body, x, y, mask, x_new, y_new)`` is log p(y_new | body, D) per new
    point, ``(N,)``, σ_y² added. ``theta`` holds the model's sites (μ, log σ over all of φ,
    log σ_y). ``gaussian(theta, body, x, y, mask)`` is p(w | body, D) itself, the flat last
    layer's mean ``(P_last,)`` and covariance ``(P_last, P_last)`` (None for a mixture).
    """

    num_body: int
    log_marginal: Callable
    sample: Callable
    predictive: Callable
    log_predictive: Callable
    gaussian: Callable | None = None


def network_last_layer(model: HierarchicalModel, arg: str = "head") -> LastLayer:
    """The :class:`~bayesmeta.model.LastLayer` of a built-in model: its network's last layer
    {w (F, Dy), b (Dy,)} over the features of the layers before it, under θ's μ, σ."""
    if not model.likelihood.gaussian:
        raise ValueError(
            f"{arg}: 'collapsed' needs a Gaussian likelihood, got {model.likelihood!r}"
        )
    params0 = model.network.init(jax.random.PRNGKey(0))
    last0 = params0[-1] if isinstance(params0, list | tuple) and len(params0) > 1 else None
    if not (isinstance(last0, dict) and set(last0) == {"w", "b"} and last0["w"].ndim == 2):
        raise ValueError(
            f"{arg}: 'collapsed' needs a network whose last layer is linear "
            "{'w': (F, Dy), 'b': (Dy,)} after at least one other layer"
        )
    _, unravel_last = ravel_pytree(last0)
    _, unravel_body = ravel_pytree(list(params0[:-1]))
    num_feat = last0["w"].shape[0]
    num_body = model.num_params - last0["w"].size - last0["b"].size
    identity_head = {"w": jnp.eye(num_feat), "b": jnp.zeros(num_feat)}

    def to_matrix(flat):
        """The last layer's flat slice as one ``(F + 1, Dy)`` matrix [W; b]."""
        last = unravel_last(flat)
        return jnp.concatenate([last["w"], last["b"][None]], 0)

    def to_flat(w):
        return ravel_pytree({"w": w[:-1], "b": w[-1]})[0]

    def features(theta, body, x):
        del theta
        return model.network.apply([*unravel_body(body), identity_head], x)

    def prior(theta):
        return theta["mu"][num_body:], theta["log_sigma"][num_body:]

    return LastLayer(num_body, num_feat, features, prior, to_matrix, to_flat)


#: θ keys with which :func:`mixture_head` replaces a model's own last-layer prior.
PRIOR_OVERRIDE = ("_head_loc", "_head_log_scale")


def conjugate_head(model, arg: str = "head") -> ConjugateHead:
    """The exact last layer of ``model``: a built-in model's network's linear last layer with a
    Gaussian likelihood, or a NumPyro model's :func:`~bayesmeta.model.linear_last_layer`."""
    if isinstance(model, NumPyroModel):
        layer = model.last_layer(arg)
    else:
        layer = network_last_layer(model, arg)
    num_body = layer.num_body

    def features(theta, body, x):
        """Z = [h_body(x), 1], ``(N, F + 1)``."""
        h = layer.features(theta, body, x)
        return jnp.concatenate([h, jnp.ones((*h.shape[:-1], 1), h.dtype)], -1)

    def system(theta, body, x, mask):
        """Masked features Z, the prior mean and variance of [W; b], σ_y²."""
        z = features(theta, body, x) * mask[:, None]
        if PRIOR_OVERRIDE[0] in theta:
            loc, log_scale = (theta[k] for k in PRIOR_OVERRIDE)
        else:
            loc, log_scale = layer.prior(theta)
        m0 = layer.to_matrix(loc)
        v0 = layer.to_matrix(jnp.exp(2 * log_scale))
        return z, m0, v0, model.noise_std(theta) ** 2

    def column_posterior(z, m, v, yc, nv):
        """:func:`linear_gaussian` of one output column under its diagonal prior."""
        return linear_gaussian(z, yc[:, None], m[:, None], jnp.diag(v), nv)

    def log_marginal(theta, body, x, y, mask):
        z, m0, v0, nv = system(theta, body, x, mask)

        def column(m, v, yc):
            return column_posterior(z, m, v, yc * mask, nv).log_evidence

        ll = jnp.sum(jax.vmap(column, in_axes=(1, 1, 1))(m0, v0, y))
        # a padded point adds only log N(0; 0, σ_y²): remove it, and add 2π for the real ones
        n_real, n_pad = jnp.sum(mask), jnp.sum(1.0 - mask)
        return ll + y.shape[-1] * (0.5 * n_pad * jnp.log(nv) - 0.5 * n_real * math.log(2 * math.pi))

    def sample(theta, body, key, x, y, mask):
        z, m0, v0, nv = system(theta, body, x, mask)
        k0, k1 = jax.random.split(key)
        w0 = m0 + jnp.sqrt(v0) * jax.random.normal(k0, m0.shape, m0.dtype)
        y_pert = (y + jnp.sqrt(nv) * jax.random.normal(k1, y.shape, y.dtype)) * mask[:, None]

        def column(m, w0c, v, yc):
            post = column_posterior(z, m, v, yc, nv)
            return pathwise_draw(post, z, yc[:, None], w0c[:, None], 0.0)[:, 0]

        w = jax.vmap(column, in_axes=(1, 1, 1, 1), out_axes=1)(m0, w0, v0, y_pert)
        return layer.to_flat(w)

    def predictive(theta, body, x, y, mask, x_new):
        z, m0, v0, nv = system(theta, body, x, mask)
        zn = features(theta, body, x_new)

        def column(m, v, yc):
            post = column_posterior(z, m, v, yc * mask, nv)
            # the variance in data space, zₙS₀zₙᵀ − ‖L⁻¹ Z S₀ zₙᵀ‖², never forming S
            w = jax.scipy.linalg.solve_triangular(post.chol, (zn @ post.gain).T, lower=True)
            return zn @ post.mean[:, 0], (zn**2) @ v - jnp.sum(w**2, 0)

        mean, var = jax.vmap(column, in_axes=(1, 1, 1), out_axes=1)(m0, v0, y)
        return mean, jnp.maximum(var, 0.0)

    def log_predictive(theta, body, x, y, mask, x_new, y_new):
        mean, var = predictive(theta, body, x, y, mask, x_new)
        var = var + model.noise_std(theta) ** 2
        return jnp.sum(-0.5 * ((y_new - mean) ** 2 / var + jnp.log(2 * math.pi * var)), -1)

    def gaussian(theta, body, x, y, mask):
        z, m0, v0, nv = system(theta, body, x, mask)

        def column(m, v, yc):
            post = column_posterior(z, m, v, yc * mask, nv)
            return post.mean[:, 0], post.cov

        means, covs = jax.vmap(column, in_axes=(1, 1, 1))(m0, v0, y)  # (Dy, F), (Dy, F, F)
        # the flat layout is linear in W (F, Dy); the columns are independent
        jac = jax.jacfwd(layer.to_flat)(jnp.zeros_like(m0))  # (P_last, F, Dy)
        cov = jnp.einsum("pfd,dfg,qgd->pq", jac, covs, jac)
        return layer.to_flat(means.T), 0.5 * (cov + cov.T)

    return ConjugateHead(num_body, log_marginal, sample, predictive, log_predictive, gaussian)


def with_exact(post, head: ConjugateHead | None, theta, support):
    """``post`` (a :class:`~bayesmeta.posterior.TaskPosterior` of T tasks) carrying its exact
    Gaussian ``(mean (T, P), cov (T, P, P))`` where the head is all of φ (no body: a linear
    model) and a single Gaussian (not a mixture): its predictive is then the closed form, not
    a Monte Carlo mixture of its draws. Otherwise ``post`` unchanged. ``theta`` is what the
    head reads (the model's sites and the noise the samples share)."""
    if head is None or head.num_body != 0 or head.gaussian is None:
        return post
    if post.likelihood.generic or not post.likelihood.gaussian:
        return post
    body = jnp.zeros((0,), post.phi.dtype)
    mean, cov = jax.vmap(lambda x, y, m: head.gaussian(theta, body, x, y, m))(
        support.x, support.y, support.mask
    )
    return dataclasses.replace(post, gaussian=(mean.astype(post.phi.dtype),
                                               cov.astype(post.phi.dtype)))  # fmt: skip


def resample_heads(
    head: ConjugateHead, theta, phis: jax.Array, key: jax.Array, x, y, mask
) -> jax.Array:
    """``(S, P)`` samples whose last layers are redrawn from p(w | body_s, D) (the bodies of
    ``phis``, ``(S, P)`` or ``(S, P_body)``, are kept)."""
    bodies = phis[:, : head.num_body]
    keys = jax.random.split(key, phis.shape[0])
    heads = jax.vmap(lambda b, k: head.sample(theta, b, k, x, y, mask))(bodies, keys)
    return jnp.concatenate([bodies, heads], -1)


MIXTURE_KEYS = ("head_mu", "head_log_sigma", "head_logits")


def mixture_head(head: ConjugateHead) -> ConjugateHead:
    """``head`` under a mixture prior over the flat last layer, Σ_c π_c N(μ_c, diag σ_c²).

    Each component is the conjugate head with θ's last-layer prior replaced, so everything
    stays exact: with ℓ_c = log π_c + log p(D | body, c),

        log p(D | body) = logsumexp_c ℓ_c,     p(c | body, D) = softmax_c ℓ_c,
        p(y* | body, D) = Σ_c p(c | body, D) p(y* | body, D, c),

    and a draw picks c ~ p(c | body, D), then w ~ p(w | body, D, c). ``theta`` holds the
    model's sites plus ``head_mu`` and ``head_log_sigma`` ``(C, P_last)`` and ``head_logits``
    ``(C,)`` (log π up to a constant); the model's own last-layer sites are not read.
    ``predictive`` returns the mixture's mean and variance of f.
    """
    nb = head.num_body

    def component(theta, mu_c, log_sigma_c):
        """θ with its last-layer prior replaced by one component's."""
        th = {k: v for k, v in theta.items() if k not in MIXTURE_KEYS}
        th[PRIOR_OVERRIDE[0]], th[PRIOR_OVERRIDE[1]] = mu_c, log_sigma_c
        return th

    def each(theta, fn):
        """``fn(θ_c)`` for every component, stacked on a leading axis."""
        one = lambda m, s: fn(component(theta, m, s))  # noqa: E731
        return jax.vmap(one)(theta["head_mu"], theta["head_log_sigma"])

    def joint(theta, body, x, y, mask):
        """ℓ_c = log π_c + log p(D | body, c), ``(C,)``."""
        lm = each(theta, lambda t: head.log_marginal(t, body, x, y, mask))
        return jax.nn.log_softmax(theta["head_logits"]) + lm

    def log_marginal(theta, body, x, y, mask):
        return jax.nn.logsumexp(joint(theta, body, x, y, mask))

    def sample(theta, body, key, x, y, mask):
        k_c, k_w = jax.random.split(key)
        c = jax.random.categorical(k_c, joint(theta, body, x, y, mask))
        th = component(theta, theta["head_mu"][c], theta["head_log_sigma"][c])
        return head.sample(th, body, k_w, x, y, mask)

    def predictive(theta, body, x, y, mask, x_new):
        w = jax.nn.softmax(joint(theta, body, x, y, mask))[:, None, None]
        means, variances = each(theta, lambda t: head.predictive(t, body, x, y, mask, x_new))
        mean = jnp.sum(w * means, 0)
        return mean, jnp.maximum(jnp.sum(w * (variances + means**2), 0) - mean**2, 0.0)

    def log_predictive(theta, body, x, y, mask, x_new, y_new):
        log_w = jax.nn.log_softmax(joint(theta, body, x, y, mask))
        lp = each(theta, lambda t: head.log_predictive(t, body, x, y, mask, x_new, y_new))
        return jax.nn.logsumexp(log_w[:, None] + lp, 0)

    return ConjugateHead(nb, log_marginal, sample, predictive, log_predictive)
