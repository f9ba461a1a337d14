"""PLATIPUS: probabilistic MAML as a hybrid sampler (Finn, Xu & Levine 2018).

Meta-parameters: the prior p(θ) = N(μ_θ, diag σ_θ²) (the model's own prior sites μ, log σ),
the inference variance v_q, the learned step sizes γ_p, γ_q of the prior and inference
shifts, the inner step size α, and the noise σ_y. With the MAML loss
L(θ; D) = −σ_y² log p(D | θ) / |D| (σ_y² held fixed, as in :mod:`bayesmeta.inference.maml`):

    p(θ | D_tr)        = N(μ_θ − γ_p ∇_μ L(μ_θ; D_tr),          σ_θ²)
    q(θ | D_tr, D_ts)  = N(μ_θ − γ_q ∇_μ L(μ_θ; D_tr ∪ D_ts),   v_q)
    φ = θ − α ∇_θ L(θ; D_tr)                 (``inner_steps`` gradient steps)

Meta-training (``outer="elbo"``, the paper's) minimises per task, with S samples θ_s ~ q,

    −(1/|D_ts|) [ (1/S) Σ_s log p(D_ts | φ(θ_s)) − β KL(q(θ | D_tr, D_ts) ‖ p(θ | D_tr)) ];

``outer="predictive"`` replaces the expected log-likelihood by the log predictive of the
S-sample mixture (the ML-PIP objective, as ABML's default), keeping the KL term.
``outer="sampler"`` scores the S-sample mixture drawn as at test time, θ_s ~ N(μ_θ −
γ_p ∇_μ L(μ_θ; D_tr), v_q), which has not seen D_ts: the fit term is then exactly the test-time
predictive, so v_q is not learned from samples that already know the query set (the other two
objectives' θ_s come from q, which has), and the KL term still trains γ_q and v_q. Test time
is "add noise, then run gradient descent" (the paper's Algorithm 2): θ_s ~ N(μ_θ −
γ_p ∇_μ L(μ_θ; D_tr), v_q), φ_s = θ_s after the inner steps, S samples vmapped.

The paper's v_q is one learned variance for every task, so it cannot be wide after one
point and narrow after five. ``variance="ggn"`` makes it data-dependent, as a Laplace
approximation would: v_q(D)⁻¹ = v_q⁻¹ + κ ⊙ Σ_{x∈D} (∂f_μ(x)/∂θ)², the diagonal Gauss-Newton
precision of D's inputs at μ_θ (no gradient through it) with κ learned per weight; p uses
D_tr, q uses D_tr ∪ D_ts. On sine-or-line it changed nothing measurable (docs/methods.md):
there the predictive is wide at K = 5 through σ_y, which covers what the inner steps fail to
fit, not through v_q. With ``head="collapsed"`` it acts on the body's coordinates, the
Jacobian taken with the last layer at its prior mean μ_w; there it is part of the sine-or-line
recipe (two inner steps, ``models/sine_line.py``).

``head="collapsed"`` (Gaussian likelihood, linear last layer; as ABML's and BMAML's) integrates
the last layer w out exactly under the model's prior N(μ_w, σ_w²)
(:mod:`bayesmeta.inference.heads`): θ, the shifts, q, p and the inner steps live on the body
alone, with the collapsed loss L_c(body; D) = −σ_y² log p(D | body) / |D|; each sample's last
layer is then drawn from p(w | body_s, D_tr), and the meta-objective's fit term uses each
sample's exact Gaussian predictive p(y_q | body_s, D_tr) rather than one draw of w.
``head="redraw"`` keeps the full-φ inner steps and only redraws the last layer afterwards from
p(w | body(φ_s), D_tr); on sine-or-line it did not help (the learned noise rose instead;
docs/methods.md).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax

from bayesmeta.batching import map_batches
from bayesmeta.inference.base import (
    INNER_RULES,
    MetaState,
    Method,
    checked_adapt,
    clip_update,
    gauss_newton_update,
    gradient_step,
    masked_mean_count,
    method_builder,
    model_dims,
)
from bayesmeta.inference.config import (
    ConfigError,
    MethodConfig,
    check_choice,
    check_positive,
    check_positive_int,
)
from bayesmeta.inference.heads import (
    MIXTURE_KEYS,
    conjugate_head,
    mixture_head,
    resample_heads,
    with_exact,
)
from bayesmeta.inference.objectives import (
    expected_nll,
    kl_penalised,
    predictive_nll,
    task_mean,
)
from bayesmeta.model import HierarchicalModel
from bayesmeta.tasks.base import Support, TaskBatch

__all__ = ["platipus"]

OUTERS = ("elbo", "predictive", "sampler")
VARIANCES = ("fixed", "ggn")
HEADS = ("adapted", "collapsed", "redraw")
GN_ADAPT_BYTES = 2**30  # memory bound per chunk of tasks (Gauss-Newton or collapsed ``adapt``)


@dataclasses.dataclass(frozen=True)
class PLATIPUSConfig(MethodConfig):
    """Options of :func:`platipus` (Adam's are :class:`~bayesmeta.inference.config.MethodConfig`'s).

    Attributes
    ----------
    inner_steps, inner_lr : int, float
        Gradient steps from each sampled θ and the initial α (learned).
    meta_sgd : bool
        One learned α per weight instead of one scalar.
    inner_rule : {"gradient", "gauss-newton"}
        Each inner step a gradient step φ ← φ − α ∇L, or a damped Gauss-Newton step
        φ ← φ − α Jᵀ(J α Jᵀ + λ I)⁻¹ r on the support residuals (Gaussian likelihood only;
        :func:`~bayesmeta.inference.base.gauss_newton_update`), λ = c·|D_tr| with c learned.
    damping : float
        Initial c; large c makes a Gauss-Newton step the gradient step. Memory: ``adapt``
        holds a ``(|D_tr|·Dy, P)`` Jacobian per sample and task at once, so adapt large
        evaluations in chunks of tasks.
    shift_lr : float
        Initial γ_p and γ_q (learned, one per weight).
    train_samples : int
        S, samples of θ ~ q per task in meta-training.
    outer : {"predictive", "elbo", "sampler"}
        Meta-objective (see the module docstring).
    variance : {"fixed", "ggn"}
        The inference variance: one learned v_q (the paper's), or a data-dependent one,
        v_q(D) = v_q / (1 + κ ⊙ Σ_{x∈D} (∂f_μ(x)/∂θ)²): the diagonal Gauss-Newton precision of
        the points at μ_θ added to v_q⁻¹, with a learned κ per weight (started at the Laplace
        value v_q/σ_y², σ_y = 1 for a categorical likelihood).
    kl_weight : float
        β, the weight of KL(q ‖ p(θ | D_tr)).
    hyperprior_weight : float
        Weight of −log p(θ) under the model's weak hyper-prior.
    max_inner_update : float or None
        Element-wise clip of each inner update.
    first_order : bool
        Stop the gradient through the inner-loop gradients (not through the shifts).
    head : {"adapted", "collapsed", "redraw"}
        ``"adapted"``: the inner steps move all of φ and keep their last layer (the paper's);
        ``"collapsed"``: the last layer is integrated out, everything else acts on the body,
        and each sample's last layer is drawn exactly given its adapted body and D_tr;
        ``"redraw"``: the paper's sampler, then each last layer redrawn exactly (see the
        module docstring). The last two need a Gaussian likelihood and a linear last layer.
    head_components : int
        C > 1 (``head="collapsed"`` only) gives the last layer a learned mixture prior
        Σ_c π_c N(μ_c, diag σ_c²) in place of the model's Gaussian, still integrated out exactly
        (:func:`~bayesmeta.inference.heads.mixture_head`): each sample's body then carries a
        posterior over which component explains D_tr, so one sampler can say "a sine or a line".
    """

    METHOD: ClassVar[str] = "platipus"

    inner_steps: int = 5
    inner_lr: float = 0.01
    meta_sgd: bool = False
    inner_rule: str = "gradient"
    damping: float = 1.0
    shift_lr: float = 0.01
    train_samples: int = 4
    outer: str = "predictive"
    variance: str = "fixed"
    kl_weight: float = 1.0
    hyperprior_weight: float = 1e-4
    max_inner_update: float | None = 1.0
    first_order: bool = False
    head: str = "adapted"
    head_components: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "head", HEADS)
        check_choice(self, "outer", OUTERS)
        check_choice(self, "variance", VARIANCES)
        check_choice(self, "inner_rule", INNER_RULES)
        check_positive_int(self, "head_components", "train_samples")
        check_positive_int(self, "inner_steps", allow_zero=True)
        check_positive(self, "damping", "inner_lr", "shift_lr")
        if self.head_components > 1 and self.head != "collapsed":
            raise ConfigError(
                f"platipus: head_components > 1 needs head='collapsed', got head={self.head!r}"
            )
        if self.head == "collapsed" and self.inner_rule != "gradient":
            raise ConfigError(
                f"platipus: inner_rule: head='collapsed' needs 'gradient', got {self.inner_rule!r}"
            )


@method_builder(PLATIPUSConfig)
def platipus(
    model: HierarchicalModel, cfg: PLATIPUSConfig, optimizer: optax.GradientTransformation
) -> Method:
    """Build PLATIPUS: a Gaussian over the task parameters whose mean is reached by gradient
    steps from a sampled initialisation (Finn, Xu & Levine 2018)."""
    conj = conjugate_head(model) if cfg.head != "adapted" else None
    if cfg.head_components > 1:
        conj = mixture_head(conj)
    collapsed = cfg.head == "collapsed"
    # the coordinates that θ's shifts, q, p and the inner steps act on: the body when collapsed
    nb = conj.num_body if collapsed else model.num_params
    if cfg.variance == "ggn" and model.likelihood.generic:
        raise ConfigError(
            "platipus: variance='ggn' needs the network's Jacobian (a HierarchicalModel); this "
            "model is a general NumPyro model: use variance='fixed'"
        )
    if cfg.inner_rule == "gauss-newton" and not model.likelihood.gaussian:
        raise ConfigError(
            f"platipus: inner_rule='gauss-newton' needs a Gaussian likelihood, got "
            f"{model.likelihood!r}"
        )

    def init(key):
        theta = dict(model.init_theta(key))
        loc = model.prior_loc(theta)
        p, dt = loc.shape, loc.dtype
        theta["log_sigma_q"] = model.prior_log_scale(theta)
        if cfg.variance == "ggn":
            # the Laplace value κ = v_q / σ_y² (a model linear in θ), then learned
            theta["log_kappa"] = 2 * (theta["log_sigma_q"] - theta.get("log_noise", 0.0))
        theta["log_gamma_p"] = jnp.full(p, math.log(cfg.shift_lr), dt)
        theta["log_gamma_q"] = jnp.full(p, math.log(cfg.shift_lr), dt)
        theta["log_inner_lr"] = jnp.full(p if cfg.meta_sgd else (), math.log(cfg.inner_lr), dt)
        if cfg.inner_rule == "gauss-newton":
            theta["log_damping"] = jnp.asarray(math.log(cfg.damping), dt)
        if cfg.head_components > 1:  # distinct component means break the symmetry between them
            mu_w, log_sigma_w = loc[nb:], theta["log_sigma_q"][nb:]
            spread = jax.random.normal(
                jax.random.fold_in(key, 1), (cfg.head_components, *mu_w.shape)
            )
            theta["head_mu"] = mu_w + jnp.exp(log_sigma_w) * spread.astype(dt)
            theta["head_log_sigma"] = jnp.broadcast_to(log_sigma_w, spread.shape)
            theta["head_logits"] = jnp.zeros(cfg.head_components, dt)
        return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))

    def model_theta(theta):
        return {k: theta[k] for k in model.theta_keys if k in theta}

    def head_theta(theta):
        """What the exact head reads: the model's sites, and the mixture prior if any."""
        return {**model_theta(theta), **{k: theta[k] for k in MIXTURE_KEYS if k in theta}}

    def loss_l(phi, theta, x, y, mask):
        mth = model_theta(theta)
        scale = jax.lax.stop_gradient(model.noise_std(mth) ** 2)
        return -scale * model.log_likelihood(mth, phi, x, y, mask) / masked_mean_count(mask)

    def loss_c(body, theta, x, y, mask):
        """L_c(body; D) = −σ_y² log p(D | body) / |D|, the last layer integrated out."""
        hth = head_theta(theta)
        scale = jax.lax.stop_gradient(model.noise_std(hth) ** 2)
        return -scale * conj.log_marginal(hth, body, x, y, mask) / masked_mean_count(mask)

    inner_loss = loss_c if collapsed else loss_l

    def shifted_mean(theta, log_gamma, x, y, mask):
        mu = model.prior_loc(model_theta(theta))[:nb]
        g = jax.grad(inner_loss)(mu, theta, x, y, mask)
        return mu - clip_update(jnp.exp(log_gamma[:nb]) * g, cfg.max_inner_update)

    def ggn_diags(theta, x, masks):
        """Σ_n mask_n (∂f_μ(x_n)/∂θ)² for each mask, from one Jacobian ``(N, Dy, P)`` at μ."""
        mu = theta["mu"]
        if cfg.head_components > 1:  # the last layer at the mixture prior's mean
            pi = jax.nn.softmax(theta["head_logits"])
            mu = mu.at[nb:].set(pi @ theta["head_mu"])
        jac2 = jax.jacrev(model.apply)(jax.lax.stop_gradient(mu), x)[..., :nb] ** 2
        return [jnp.einsum("n,ndp->p", m.astype(jac2.dtype), jac2) for m in masks]

    def inference_std(theta, ggn=None):
        """√v_q(D): the learned v_q, or given D's GGN diagonal its data-dependent shrinkage."""
        s_q = jnp.exp(theta["log_sigma_q"][:nb])
        if ggn is None:
            return s_q
        return s_q * jax.lax.rsqrt(1.0 + jnp.exp(theta["log_kappa"][:nb]) * ggn)

    def inner(theta, phi, x, y, mask):
        alpha = jnp.exp(theta["log_inner_lr"])
        alpha = alpha[:nb] if cfg.meta_sgd else alpha

        def step(ph, _):
            if cfg.inner_rule == "gauss-newton":
                lam = jnp.exp(theta["log_damping"]) * masked_mean_count(mask)
                at = jax.lax.stop_gradient(ph) if cfg.first_order else ph
                upd = -gauss_newton_update(model.apply, at, x, y, mask, alpha, lam)
            else:
                g = jax.grad(inner_loss)(ph, theta, x, y, mask)
                upd = alpha * (jax.lax.stop_gradient(g) if cfg.first_order else g)
            return ph - clip_update(upd, cfg.max_inner_update), None

        phi, _ = jax.lax.scan(step, phi, None, length=cfg.inner_steps)
        return phi

    def task_loss(theta, key, x_s, y_s, m_s, x_q, y_q):
        mth = model_theta(theta)
        m_p = shifted_mean(theta, theta["log_gamma_p"], x_s, y_s, m_s)
        x_all = jnp.concatenate([x_s, x_q], 0)
        y_all = jnp.concatenate([y_s, y_q], 0)
        m_all = jnp.concatenate([m_s, jnp.ones(x_q.shape[0], m_s.dtype)], 0)
        m_q = shifted_mean(theta, theta["log_gamma_q"], x_all, y_all, m_all)
        g_all = g_sup = None
        if cfg.variance == "ggn":  # D_tr ∪ D_ts for q, D_tr alone for the test-time sampler
            m_sup = jnp.concatenate([m_s, jnp.zeros(x_q.shape[0], m_s.dtype)], 0)
            g_all, g_sup = ggn_diags(theta, x_all, (m_all, m_sup))
        s_q = inference_std(theta, g_all)
        eps = jax.random.normal(key, (cfg.train_samples, m_q.shape[0]))
        if cfg.outer == "sampler":
            thetas = m_p + inference_std(theta, g_sup) * eps
        else:
            thetas = m_q + s_q * eps
        phis = jax.vmap(inner, in_axes=(None, 0, None, None, None))(theta, thetas, x_s, y_s, m_s)
        if collapsed:  # each body's exact Gaussian predictive, the last layer integrated out
            hth = head_theta(theta)
            ll = jax.vmap(lambda b: conj.log_predictive(hth, b, x_s, y_s, m_s, x_q, y_q))(phis)
        else:
            if conj is not None:
                phis = resample_heads(conj, mth, phis, jax.random.fold_in(key, 1), x_s, y_s, m_s)
            ll = jax.vmap(lambda ph: model.log_likelihood_points(mth, ph, x_q, y_q))(phis)
        q_dist = dist.Normal(m_q, s_q).to_event(1)  # ll: (S, Q)
        p_dist = dist.Normal(m_p, jnp.exp(model.prior_log_scale(mth)[:nb])).to_event(1)
        kl = dist.kl_divergence(q_dist, p_dist)
        data = predictive_nll(ll) if cfg.outer in ("predictive", "sampler") else expected_nll(ll)
        return kl_penalised(data, kl, cfg.kl_weight, x_q.shape[0])

    def loss_fn(theta, key, batch: TaskBatch):
        return task_mean(
            task_loss, theta, batch, key
        ) - cfg.hyperprior_weight * model.log_hyperprior(model_theta(theta))

    def sample_one(theta, key, x, y, mask, num_samples):
        m_p = shifted_mean(theta, theta["log_gamma_p"], x, y, mask)
        eps = jax.random.normal(key, (num_samples, m_p.shape[0]))
        ggn = ggn_diags(theta, x, (mask,))[0] if cfg.variance == "ggn" else None
        thetas = m_p + inference_std(theta, ggn) * eps
        phis = jax.vmap(inner, in_axes=(None, 0, None, None, None))(theta, thetas, x, y, mask)
        if conj is None:
            return phis
        return resample_heads(conj, head_theta(theta), phis, jax.random.fold_in(key, 1), x, y, mask)

    def adapt(key, state: MetaState, support: Support, num_samples: int = 32):
        theta = state.theta
        t, n = support.x.shape[:2]
        keys = jax.random.split(key, t)

        def one(args):
            return sample_one(theta, *args, num_samples)

        xs = (keys, support.x, support.y, support.mask)
        per_task = None
        if (
            cfg.inner_rule == "gauss-newton"
        ):  # each sample holds an (n·Dy, P) Jacobian: bound memory
            per_task = num_samples * n * support.y.shape[-1] * model.num_params * 4 * 6
        elif collapsed:
            # each sample holds its own Cholesky factors: bound the working set, chunks run
            # one after another (map_batches: concurrent batched Cholesky calls can stall
            # XLA's CPU thread pool)
            per_task = num_samples * (model.num_params + cfg.head_components * n * n) * 4 * 16
        if per_task is not None:
            phi = map_batches(one, xs, int(min(t, max(1, GN_ADAPT_BYTES // per_task))))
        else:
            phi = jax.vmap(one)(xs)
        post = model.posterior(phi, model_theta(theta), "platipus")
        return with_exact(post, conj if collapsed else None, head_theta(theta), support)

    return Method(
        "platipus",
        init,
        gradient_step(loss_fn, optimizer),
        checked_adapt(adapt, **model_dims(model)),
        cfg,
    )
