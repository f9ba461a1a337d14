"""The exact reference posterior of a synthetic task family ("the oracle").

For families with a quadrature grid over the task parameters ψ (sinusoid, sine-or-line) the
posterior is the normalised product of the prior mass and the support likelihood at each
node,

    w_g ∝ p(ψ_g) Π_j N(y_j | f(x_j; ψ_g), σ(ψ_g)²),

and the predictive is the weighted mixture over the nodes (for a heteroscedastic family σ is
σ(ψ_g, x_j), and the predictive's noise follows x). For linear-Gaussian families
(features x̃ = [x, 1], prior N(m0, S0), noise σ) the posterior is closed form,

    S_N = (S0⁻¹ + X̃ᵀX̃ / σ²)⁻¹,    m_N = S_N (S0⁻¹ m0 + X̃ᵀ y / σ²),

and is represented by a tensor Gauss–Hermite rule in the posterior's whitened coordinates,
so that the predictive mixture is exact to quadrature precision.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.batching import map_batches
from bayesmeta.inference.base import Info, MetaState, Method, checked_adapt
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support, TaskFamily

Array = jax.Array


def linear_gaussian_posterior(
    x: Array, y: Array, mask: Array, prior_mean: Array, prior_std: Array, noise: float
) -> tuple[Array, Array]:
    """Closed-form posterior ``(m_N (2,), S_N (2, 2))`` of ψ = (w, c) for one task."""
    feats = jnp.concatenate([x, jnp.ones_like(x[:, :1])], axis=-1) * mask[:, None]
    prec0 = jnp.diag(1.0 / prior_std**2)
    prec = prec0 + feats.T @ feats / noise**2
    cov = jnp.linalg.inv(prec)
    mean = cov @ (prec0 @ prior_mean + feats.T @ (y[:, 0] * mask) / noise**2)
    return mean, cov


def _hermite_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    return nodes, weights / math.sqrt(2 * math.pi)


def _init(key) -> MetaState:
    """An exact posterior has no θ to meta-train: an empty state."""
    del key
    return MetaState({}, (), jnp.zeros((), jnp.int32))


def _meta_step(key, state, batch):
    del key, batch
    zero = jnp.zeros(())
    return MetaState(state.theta, state.opt_state, state.step + 1), Info(zero, zero)


def _hetero_observation(family: TaskFamily):
    """``apply(params, ψ, x)`` of a heteroscedastic family: N(f(x; ψ), σ(ψ, x)²) over one
    task's points, batch shape ``(1, N)`` (the generic likelihood's convention)."""
    import numpyro.distributions as dist

    def apply(params, psi, x):
        del params
        loc, scale = family.mean_fn(psi, x), family.noise_x_fn(psi, x)
        return dist.Normal(loc[:, 0][None], scale[:, 0][None])

    return apply


def reference(family: TaskFamily, *, quadrature_points: int = 64) -> Method:
    """The ``reference`` method for ``family``: exact posterior, nothing to meta-train."""
    if family.reference_grid is None and family.gaussian_prior is None:
        raise ValueError(
            f"family: {family.name!r} has neither a reference grid nor a Gaussian prior; "
            "no exact reference is available"
        )

    def adapt_grid(support: Support) -> TaskPosterior:
        grid, log_prior = family.reference_grid()
        hetero = family.noise_x_fn is not None
        noise = jnp.ones(grid.shape[:1]) if hetero else jax.vmap(family.noise_fn)(grid)  # (G,)

        def one(x, y, mask):
            f = jax.vmap(lambda g: family.mean_fn(g, x))(grid)  # (G, K, Dy) or logits (G, K, C)
            if family.likelihood.classifier:
                logp = jax.nn.log_softmax(f, -1)
                ll = jnp.take_along_axis(
                    logp, jnp.broadcast_to(y[None, :, None], f.shape[:2] + (1,)), -1
                )
            else:  # each point's noise: per node, or per node and input (heteroscedastic)
                sd = (
                    jax.vmap(lambda g: family.noise_x_fn(g, x))(grid)  # (G, K, Dy)
                    if hetero
                    else noise[:, None, None]
                )
                z = (y[None] - f) / sd
                ll = -0.5 * z**2 - jnp.log(sd) - 0.5 * math.log(2 * math.pi)
            lw = log_prior + jnp.sum(jnp.sum(ll, -1) * mask[None], -1)
            if family.support_x_logpdf is not None:
                lx = jax.vmap(lambda g: family.support_x_logpdf(g, x))(grid)  # (G, K)
                lw = lw + jnp.sum(lx * mask[None], -1)
            return lw - jax.scipy.special.logsumexp(lw)

        lw = map_batches(lambda a: one(*a), (support.x, support.y, support.mask), 8)
        t = support.x.shape[0]
        phi = jnp.broadcast_to(grid, (t, *grid.shape))
        if hetero:  # the observation's scale depends on x: a distribution per node
            return TaskPosterior(
                phi, lw, jnp.ones(lw.shape), _hetero_observation(family), "generic", "reference"
            )
        return TaskPosterior(
            phi,
            lw,
            jnp.broadcast_to(noise, lw.shape),
            family.mean_fn,
            family.likelihood,
            "reference",
        )

    def adapt_gaussian(support: Support) -> TaskPosterior:
        m0, s0, noise = family.gaussian_prior
        mean, cov = jax.vmap(lambda x, y, m: linear_gaussian_posterior(x, y, m, m0, s0, noise))(
            support.x, support.y, support.mask
        )
        nodes, weights = _hermite_rule(quadrature_points)
        z = np.stack(np.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2)
        w = np.outer(weights, weights).reshape(-1)
        chol = jnp.linalg.cholesky(cov)  # (T, 2, 2)
        phi = mean[:, None, :] + jnp.einsum("tij,gj->tgi", chol, jnp.asarray(z, mean.dtype))
        lw = jnp.broadcast_to(jnp.log(jnp.asarray(w, mean.dtype)), phi.shape[:2])
        return TaskPosterior(
            phi,
            lw,
            jnp.full(lw.shape, noise, mean.dtype),
            family.mean_fn,
            family.likelihood,
            "reference",
        )

    def adapt(key, state, support: Support, num_samples: int | None = None) -> TaskPosterior:
        """Exact posterior; ``num_samples`` is ignored (the posterior is a weighted grid)."""
        del key, state, num_samples
        if family.gaussian_prior is not None:
            return adapt_gaussian(support)
        return adapt_grid(support)

    return Method(
        "reference",
        _init,
        _meta_step,
        checked_adapt(
            adapt,
            dx=family.dx,
            dy=None if family.likelihood.classifier else family.dy,
            num_classes=family.num_classes if family.likelihood.classifier else None,
        ),
        {"family": family.name},
        extras={"linear_gaussian_posterior": linear_gaussian_posterior},
    )


def _design(x: Array) -> Array:
    return jnp.concatenate([x, jnp.ones_like(x[..., :1])], axis=-1)


def linear_reference(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, num_samples: int = 1000
) -> Method:
    """The ``reference`` of a per-group linear model on grouped data: the exact posterior of
    the hierarchical Bayesian linear regression whose prior is fitted to the training groups.

    Each group has ``w ~ N(m, S)`` over ``[x, 1]`` and ``y = [x, 1] w + ε``, ``ε ~ N(0, σ²)``;
    ``(m, S, σ²)`` maximise the training rows' marginal likelihood (empirical Bayes, EM in
    float64, :func:`bayesmeta.evaluate.baselines.fit_linear_baselines`). A support set gives

        Σ_n = (S⁻¹ + ΦᵀΦ / σ²)⁻¹,    μ_n = Σ_n (S⁻¹ m + Φᵀ y / σ²),

    and the predictive ``N(φ*ᵀ μ_n, σ² + φ*ᵀ Σ_n φ*)``. The posterior is represented by
    ``num_samples`` draws ``μ_n + L z`` (``z`` centred and whitened) for plots, acquisition and
    ArviZ, and carries ``(μ_n, Σ_n)`` itself, so that the predictive density, moments, CDF and
    intervals are the exact Gaussian's, free of the Monte Carlo error a finite mixture of draws
    has in its tails (the extrapolating groups of real data).

    Parameters
    ----------
    x, y, groups : arrays
        Training rows ``x (N, Dx)``, ``y (N,)`` or ``(N, 1)`` and a group id per row, in the
        units that support sets will come in (a run's standardised units).
    """
    from bayesmeta.evaluate.baselines import fit_linear_baselines

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if y.ndim == 2 and y.shape[1] != 1:
        raise ValueError(f"y: the linear reference is for one target, got shape {y.shape}")
    fit = fit_linear_baselines(x, y, np.asarray(groups))
    dx, d = x.shape[1], x.shape[1] + 1
    if num_samples < d + 1:
        raise ValueError(f"num_samples: expected at least {d + 1} (Dx + 2), got {num_samples}")
    m = jnp.asarray(fit.m, jnp.float32)
    s_inv = jnp.asarray(np.linalg.inv(fit.S), jnp.float32)
    noise_var = float(fit.eb_noise_var)

    def posterior(xs, ys, mask):
        phi = _design(xs) * mask[:, None]
        prec = s_inv + phi.T @ phi / noise_var
        cov = jnp.linalg.inv(prec)
        cov = 0.5 * (cov + cov.T)
        mean = cov @ (s_inv @ m + phi.T @ (ys[:, 0] * mask) / noise_var)
        return mean, cov

    adapt = _gaussian_draws(posterior, jnp.linalg.cholesky, d, noise_var, num_samples)

    return Method(
        "reference",
        _init,
        _meta_step,
        checked_adapt(adapt, dx=dx, dy=1, num_classes=None),
        {"kind": "empirical-Bayes linear", "num_samples": num_samples},
        extras={"prior": fit, "posterior": posterior},
    )


def _gaussian_draws(posterior, root, d: int, noise_var: float, num_samples: int):
    """The ``adapt`` of a per-group linear model with a Gaussian posterior: ``posterior(x, y,
    mask) -> (μ_n, Σ_n)`` per task and ``root(Σ_n (T, d, d)) -> L`` with ``L Lᵀ = Σ_n``; the
    draws are ``μ_n + L z`` with ``z`` centred and whitened, so that even the draws' predictive
    mean and variance are exact; the posterior also carries ``(μ_n, Σ_n)`` itself, so that its
    predictive density, moments and CDF are the exact Gaussian's
    (:class:`~bayesmeta.posterior.TaskPosterior`'s ``gaussian``)."""

    def apply(w, xq):
        return (_design(xq) @ w)[:, None]

    def adapt(key, state, support: Support, num_samples_: int | None = None) -> TaskPosterior:
        """Exact posterior draws (``num_samples`` of them, default the factory's)."""
        del state
        n = int(num_samples_ or num_samples)
        if n < d + 1:
            raise ValueError(f"num_samples: expected at least {d + 1} (Dx + 2), got {n}")
        mean, cov = jax.vmap(posterior)(support.x, support.y, support.mask)
        z = jax.random.normal(key, (n, d))
        z = z - z.mean(0)
        # whiten: the draws' (biased) sample covariance is the identity
        z = z @ jnp.linalg.inv(jnp.linalg.cholesky(z.T @ z / n)).T
        w = mean[:, None, :] + jnp.einsum("tij,sj->tsi", root(cov), z)
        t = support.x.shape[0]
        return TaskPosterior.from_samples(
            w,
            jnp.full((t, n), jnp.sqrt(noise_var), w.dtype),
            apply,
            "gaussian",
            "reference",
            gaussian=(mean, cov),
        )

    return adapt


def mixed_reference(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    num_samples: int = 1000,
    structures: tuple[str, ...] | None = None,
) -> Method:
    """The ``reference`` of the linear mixed model a statistician would fit: random intercept
    and slopes ``y = [x, 1] β + [x, 1] b_g + ε``, ``b_g ~ N(0, G)``, fitted to the training
    rows by statsmodels' ``MixedLM`` (REML, :func:`bayesmeta.evaluate.baselines.
    fit_mixed_model`), and a new group's conditional (BLUP) posterior given its support set.

    It is :func:`linear_reference`'s model with ``(m, S, σ²) = (β, G, σ²)`` estimated by REML
    instead of maximum likelihood, so that ``auto`` can start from exactly the classical
    model. ``G`` may be singular (a random effect estimated at zero variance, or a structure
    without one), so the posterior is computed in the covariance form that needs no ``S⁻¹``:

        μ_n = m + SΦᵀ(ΦSΦᵀ + σ²I)⁻¹(y − Φm),    Σ_n = S − SΦᵀ(ΦSΦᵀ + σ²I)⁻¹ΦS,

    with masked support rows given a zero design row (their gain is then zero). The draws are
    ``μ_n + V Λ^{1/2} z`` (``Σ_n = V Λ Vᵀ``) with ``z`` centred and whitened as in
    :func:`linear_reference`, so the predictive mean and variance are exact.

    ``structures`` are the random-effects structures to try in order (default
    :data:`bayesmeta.evaluate.baselines.STRUCTURES`); the fitted one is in ``config``.
    """
    from bayesmeta.evaluate.baselines import STRUCTURES, fit_mixed_model

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if y.ndim == 2 and y.shape[1] != 1:
        raise ValueError(f"y: the mixed-model reference is for one target, got shape {y.shape}")
    mixed = fit_mixed_model(x, y.reshape(-1), np.asarray(groups),
                            structures=structures or STRUCTURES)  # fmt: skip
    dx, d = x.shape[1], x.shape[1] + 1
    if num_samples < d + 1:
        raise ValueError(f"num_samples: expected at least {d + 1} (Dx + 2), got {num_samples}")
    m = jnp.asarray(mixed.beta, jnp.float32)
    S = jnp.asarray(mixed.G, jnp.float32)
    noise_var = float(mixed.noise_var)

    def posterior(xs, ys, mask):
        phi = _design(xs) * mask[:, None]
        sp = S @ phi.T  # (d, K)
        inner = phi @ sp + noise_var * jnp.eye(phi.shape[0], dtype=sp.dtype)
        gain = jnp.linalg.solve(inner, sp.T).T  # (d, K)
        mean = m + gain @ ((ys[:, 0] - phi @ m) * mask)
        cov = S - gain @ sp.T
        return mean, 0.5 * (cov + cov.T)

    def root(cov):  # a square root that allows a singular Σ_n
        lam, vec = jnp.linalg.eigh(cov)
        return vec * jnp.sqrt(jnp.maximum(lam, 0.0))[:, None, :]

    adapt = _gaussian_draws(posterior, root, d, noise_var, num_samples)

    return Method(
        "reference",
        _init,
        _meta_step,
        checked_adapt(adapt, dx=dx, dy=1, num_classes=None),
        {
            "kind": "linear mixed model (REML)",
            "structure": mixed.structure,
            "num_samples": num_samples,
        },  # fmt: skip
        extras={"prior": mixed, "posterior": posterior},
    )
