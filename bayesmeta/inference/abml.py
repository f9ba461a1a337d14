"""ABML: amortized Bayesian meta-learning (Ravi & Beatson 2019).

θ = (μ, σ) is both the prior p(φ | θ) = N(μ, diag σ²) and the initialisation of each task's
variational posterior q(φ_i) = N(m_i, diag s_i²). For a task's support set D_tr the inner loop
takes L steps on the negative ELBO

    ℒ(m, s; D_tr) = −E_q[log p(D_tr | φ)] + KL(q ‖ p(φ | θ)),    (m, s)⁰ = (μ, σ),

with reparameterised samples φ = m + s ε (antithetic pairs, fixed across the steps). The
default steps (``inner_update="gradient"``, the paper's parameterisation) are gradient steps
on (m, ρ = log s),

    m ← m − α_m ⊙ σ² σ_y² ∇_m ℒ,     ρ ← ρ − α_ρ ⊙ σ_y² ∇_ρ ℒ,

preconditioned by the prior's variance (its Fisher metric) and the noise variance held fixed,
so that neither a narrow prior nor a small learned noise makes them explode; α_m, α_ρ are
learned per weight (as in Meta-SGD). ``inner_update="natural"`` takes natural-gradient steps
instead (Khan & Lin 2017): the data part of ∂ℒ/∂ρ equals s² E_q[∂²(−log p)/∂φ²] (Price's
theorem), a diagonal curvature estimate h, and

    λ ← (1 − β_s) λ + β_s (1/σ² + max(h, 0)),  λ = 1/s²,     m ← m − β_m ⊙ ∇_m ℒ / λ,

which on a model linear in φ reaches the mean-field optimum in a few steps (tested). On the
sinusoid it did not beat the gradient steps in our measurements (docs/methods.md).

The meta-loss is, per task, either the query-set ELBO (``outer="elbo"``, the paper's
objective)

    −(1/|D_ts|) (E_q[log p(D_ts | φ)] − β KL(q ‖ p(φ | θ)))

or the query-set log predictive of the S-sample mixture (``outer="predictive"``, the ML-PIP
objective of Gordon et al. 2019, which scores exactly what is evaluated)

    −(1/|D_ts|) Σ_j log (1/S) Σ_s p(y_j | φ_s),   φ_s ~ q,

or the Gaussian log density with the samples' moments (``outer="moment"``),

    −(1/|D_ts|) Σ_j log N(y_j | mean_s f_φs(x_j), var_s f_φs(x_j) + σ_y²).

``head="collapsed"`` keeps q mean-field over the body (every layer but the last) only and
integrates the last layer w out exactly under its prior N(μ_w, diag σ_w²), as a Gaussian
likelihood allows: the inner ELBO becomes the collapsed bound

    ℒ(m, s) = −E_q[log N(y; Z m_w, Z diag(σ_w²) Zᵀ + σ_y² I)] + KL(q ‖ p(body | θ)),

with Z = [h_body(x), 1] the body's features of the support inputs, and each sample of the
task posterior is a body drawn from q and a last layer drawn from its exact conditional
posterior p(w | body, D_tr) (perturb-and-MAP: w = w₀ + S₀Zᵀ A⁻¹ (y + σ_y ξ − Z w₀),
w₀ ~ N(μ_w, S₀), A = Z S₀ Zᵀ + σ_y² I). A mean-field q over every weight cannot tie the
output bias to the last-layer weights, so after one point it can neither pass through it
nor stay wide elsewhere; the exact last layer can.

With few samples S the mixture estimator is biased against function-space spread (a mixture
of S narrow components scores badly between them, so training moves the spread into σ_y);
the moment objective has no such bias. All add a weak hyper-prior −log p(θ) / N_θ. The task
posterior is S samples of q, and it is always evaluated as the mixture.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax

from bayesmeta.inference.base import (
    MetaState,
    Method,
    checked_adapt,
    clip_update,
    gradient_step,
    kl_to_prior,
    method_builder,
    model_dims,
)
from bayesmeta.inference.config import (
    ConfigError,
    MethodConfig,
    _rename,
    check_choice,
    check_positive,
    check_positive_int,
)
from bayesmeta.inference.heads import conjugate_head, resample_heads, with_exact
from bayesmeta.inference.objectives import (
    expected_nll,
    kl_penalised,
    moment_nll,
    predictive_nll,
    task_mean,
)
from bayesmeta.model import HierarchicalModel
from bayesmeta.tasks.base import Support, TaskBatch

OUTERS = ("elbo", "predictive", "moment")
INNER_UPDATES = ("natural", "gradient")
HEADS = ("adapted", "collapsed")


@dataclasses.dataclass(frozen=True)
class ABMLConfig(MethodConfig):
    """Options of :func:`abml` (Adam's are :class:`~bayesmeta.inference.config.MethodConfig`'s).

    Attributes
    ----------
    inner_steps, inner_lr : int, float
        Number of inner ELBO steps and the initial (preconditioned) step size.
    inner_samples : int
        Reparameterised samples of q per inner step (fixed across steps).
    learn_inner_lr : bool
        Meta-learn one step size per weight for m and for log s.
    antithetic : bool
        Use antithetic pairs (ε, −ε) for the inner samples (exact gradients in m for
        models linear in φ).
    outer : {"predictive", "moment", "elbo"}
        Meta-objective on the query set (see the module docstring).
    outer_samples : int
        Samples of q for the meta-objective.
    kl_weight : float
        β, the KL weight of the query ELBO (``outer="elbo"``).
    hyperprior_weight : float
        1 / N_θ, the weight of −log p(θ).
    max_inner_update : float or None
        Element-wise clip of each inner update.
    inner_update : {"gradient", "natural"}
        How the inner loop steps on the ELBO (see the module docstring): plain gradient steps
        on (m, log s) (default), or natural-gradient steps on q's precision and mean.
    precondition : bool
        ``inner_update="gradient"`` only: scale the mean's step by the prior variance σ².
    head : {"adapted", "collapsed"}
        ``"adapted"``: the mean-field q over every weight, last layer included (the paper's;
        called ``"mean-field"`` before config version 2). ``"collapsed"``: q over the body,
        the last layer integrated out exactly (Gaussian likelihood and a linear last layer
        ``{"w", "b"}`` only; see the module docstring).
    """

    METHOD: ClassVar[str] = "abml"
    VERSION: ClassVar[int] = 2
    MIGRATIONS: ClassVar = {1: _rename({}, {"head": {"mean-field": "adapted"}})}

    inner_steps: int = 5
    inner_lr: float = 0.1
    inner_samples: int = 2
    learn_inner_lr: bool = True
    antithetic: bool = True
    outer: str = "predictive"
    outer_samples: int = 8
    kl_weight: float = 1.0
    hyperprior_weight: float = 1e-4
    max_inner_update: float | None = 1.0
    inner_update: str = "gradient"
    precondition: bool = True
    first_order: bool = False
    head: str = "adapted"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "head", HEADS)
        check_choice(self, "inner_update", INNER_UPDATES)
        check_choice(self, "outer", OUTERS)
        check_positive_int(self, "inner_steps", allow_zero=True)
        check_positive_int(self, "inner_samples", "outer_samples")
        check_positive(self, "inner_lr")
        if self.head == "collapsed" and self.outer == "elbo":
            raise ConfigError(
                "abml: outer: 'elbo' is not offered with head='collapsed'; use 'predictive'"
            )


@method_builder(ABMLConfig)
def abml(
    model: HierarchicalModel, cfg: ABMLConfig, optimizer: optax.GradientTransformation
) -> Method:
    """Build ABML: amortized Bayesian meta-learning (Ravi & Beatson 2019), a Gaussian q(φ)
    per task reached by a few gradient steps on the task's ELBO from the meta-learned
    initialisation."""
    if cfg.outer == "moment" and not model.likelihood.gaussian:
        raise ConfigError(
            f"abml: outer: 'moment' needs a Gaussian likelihood, got {model.likelihood!r}"
        )
    collapsed = cfg.head == "collapsed"
    num_body = model.num_params
    if collapsed:
        conj = conjugate_head(model)
        num_body = conj.num_body
        if not model.gaussian_prior:
            raise ConfigError(
                "abml: head: 'collapsed' needs a diagonal Normal prior over the body's weights "
                "(model.gaussian_prior); use head='adapted'"
            )

    def full_samples(mth, bodies, key, x, y, mask):
        """Whole-network samples ``(S, P)`` from body samples ``(S, P_body)``."""
        return resample_heads(conj, mth, bodies, key, x, y, mask) if collapsed else bodies

    def init(key):
        theta = dict(model.init_theta(key))
        dt = model.prior_loc(theta).dtype
        theta["log_lr_m"] = jnp.full((num_body,), math.log(cfg.inner_lr), dt)
        theta["log_lr_rho"] = jnp.full((num_body,), math.log(cfg.inner_lr), dt)
        return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))

    def model_theta(theta):
        return {k: theta[k] for k in model.theta_keys if k in theta}

    def base_noise(key, n):
        p = num_body
        if cfg.antithetic:
            eps = jax.random.normal(key, ((n + 1) // 2, p))
            return jnp.concatenate([eps, -eps])[:n]
        return jax.random.normal(key, (n, p))

    def neg_elbo(q, theta, eps, x, y, mask):
        m, rho = q
        mth = model_theta(theta)
        phis = m + jnp.exp(rho) * eps
        if collapsed:
            ell = jnp.mean(jax.vmap(lambda b: conj.log_marginal(mth, b, x, y, mask))(phis))
        else:
            ell = jnp.mean(jax.vmap(lambda ph: model.log_likelihood(mth, ph, x, y, mask))(phis))
        if collapsed:
            kl = dist.kl_divergence(dist.Normal(m, jnp.exp(rho)).to_event(1), body_prior(mth))
        else:
            kl = kl_to_prior(model, mth, m, rho, eps)
        return -ell + kl

    def body_prior(mth):
        """p(body | θ): a collapsed head's Gaussian prior over the body weights."""
        loc, log_scale = model.prior_loc(mth)[:num_body], model.prior_log_scale(mth)[:num_body]
        return dist.Normal(loc, jnp.exp(log_scale)).to_event(1)

    def adapt_one(theta, key, x, y, mask):
        """q = (m, ρ) for one task after the inner ELBO steps."""
        mth = model_theta(theta)
        lr_m, lr_rho = jnp.exp(theta["log_lr_m"]), jnp.exp(theta["log_lr_rho"])
        if not cfg.learn_inner_lr:
            lr_m, lr_rho = jax.lax.stop_gradient(lr_m), jax.lax.stop_gradient(lr_rho)
        eps = base_noise(key, cfg.inner_samples)
        prior_log_scale = model.prior_log_scale(mth)[:num_body]
        prior_prec = jnp.exp(-2 * prior_log_scale)

        def natural_step(q, _):
            m, rho = q
            g_m, g_rho = jax.grad(neg_elbo)(q, theta, eps, x, y, mask)
            if cfg.first_order:
                g_m, g_rho = jax.lax.stop_gradient((g_m, g_rho))
            s2 = jnp.exp(2 * rho)
            # data part of ∂ℒ/∂ρ is s² E_q[∂²(−log p(D|φ))/∂φ²] (Price/Stein): a diagonal
            # curvature estimate, floored at 0 so that the precision stays above the prior's
            curv = jnp.maximum((g_rho - (s2 * prior_prec - 1.0)) / s2, 0.0)
            prec = (1.0 - lr_rho) / s2 + lr_rho * (prior_prec + curv)
            prec = jnp.maximum(prec, 1e-3 * prior_prec)
            m = m - clip_update(lr_m * g_m / prec, cfg.max_inner_update)
            return (m, -0.5 * jnp.log(prec)), None

        noise_var = jax.lax.stop_gradient(model.noise_std(mth) ** 2)
        prior_var = jax.lax.stop_gradient(jnp.exp(2 * prior_log_scale)) if cfg.precondition else 1.0

        def gradient_step_(q, _):
            g_m, g_rho = jax.grad(neg_elbo)(q, theta, eps, x, y, mask)
            if cfg.first_order:
                g_m, g_rho = jax.lax.stop_gradient((g_m, g_rho))
            m = q[0] - clip_update(lr_m * prior_var * noise_var * g_m, cfg.max_inner_update)
            rho = q[1] - clip_update(lr_rho * noise_var * g_rho, cfg.max_inner_update)
            return (m, rho), None

        step = natural_step if cfg.inner_update == "natural" else gradient_step_
        q0 = (model.prior_loc(mth)[:num_body], prior_log_scale)
        q, _ = jax.lax.scan(step, q0, None, length=cfg.inner_steps)
        return q

    def task_loss(theta, key, x_s, y_s, m_s, x_q, y_q):
        k_in, k_out = jax.random.split(key)
        k_head = jax.random.fold_in(k_out, 1)  # unused by an adapted head
        m, rho = adapt_one(theta, k_in, x_s, y_s, m_s)
        mth = model_theta(theta)
        bodies = m + jnp.exp(rho) * base_noise(k_out, cfg.outer_samples)
        phis = full_samples(mth, bodies, k_head, x_s, y_s, m_s)
        ll = jax.vmap(lambda ph: model.log_likelihood_points(mth, ph, x_q, y_q))(phis)  # (S, Q)
        q_n = x_q.shape[0]
        if cfg.outer == "predictive":
            return predictive_nll(ll)
        if cfg.outer == "moment":
            f = jax.vmap(lambda ph: model.apply(ph, x_q))(phis)  # (S, Q, Dy)
            return moment_nll(f, y_q, model.noise_std(mth) ** 2)
        kl = kl_to_prior(model, mth, m, rho, (bodies - m) * jnp.exp(-rho))
        return kl_penalised(expected_nll(ll), kl, cfg.kl_weight, q_n)

    def loss_fn(theta, key, batch: TaskBatch):
        return task_mean(
            task_loss, theta, batch, key
        ) - cfg.hyperprior_weight * model.log_hyperprior(model_theta(theta))

    def adapt(key, state, support: Support, num_samples: int = 32):
        theta = state.theta
        t = support.x.shape[0]
        k_in, k_out = jax.random.split(key)
        k_head = jax.random.fold_in(k_out, 1)  # unused by an adapted head
        m, rho = jax.vmap(adapt_one, in_axes=(None, 0, 0, 0, 0))(
            theta, jax.random.split(k_in, t), support.x, support.y, support.mask
        )
        eps = jax.random.normal(k_out, (t, num_samples, num_body))
        bodies = m[:, None] + jnp.exp(rho)[:, None] * eps
        phi = jax.vmap(full_samples, in_axes=(None, 0, 0, 0, 0, 0))(
            model_theta(theta), bodies, jax.random.split(k_head, t), *support
        )
        post = model.posterior(phi, model_theta(theta), "abml")
        return with_exact(post, conj if collapsed else None, model_theta(theta), support)

    def variational_params(key, state, support: Support):
        """The per-task q = (m, log s), each ``(T, P)`` (``(T, P_body)`` with a collapsed head)."""
        t = support.x.shape[0]
        return jax.vmap(adapt_one, in_axes=(None, 0, 0, 0, 0))(
            state.theta, jax.random.split(key, t), support.x, support.y, support.mask
        )

    return Method(
        "abml",
        init,
        gradient_step(loss_fn, optimizer),
        checked_adapt(adapt, **model_dims(model)),
        cfg,
        extras={"variational_params": variational_params}
        | ({"log_marginal_head": conj.log_marginal} if collapsed else {}),
    )
