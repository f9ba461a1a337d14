"""Encoder-amortized variational inference for any hierarchical model.

A permutation-invariant set encoder (DeepSets; Zaheer et al. 2017) reads a task's support set
D = {(x_j, y_j)}, j = 1..N, with mask m_j, and gives the variational posterior of the task's
per-task latent variables φ — every per-task site of the model, flattened, in the model's
unconstrained space (the φ of :class:`~bayesmeta.model.NumPyroModel` and of
:class:`~bayesmeta.model.HierarchicalModel`):

    h_j = g_ψ([x_j, y_j]),   r = Σ_j m_j h_j / max(Σ_j m_j, 1),   n = Σ_j m_j,
    (Δm, Δρ, V̂) = d_ψ([r, log(1 + n)]),
    q_ψ(φ | D) = N(m, diag(s²) + V Vᵀ),
    m = μ_θ + Δm,   s = σ_θ ⊙ exp(Δρ),   V = diag(σ_θ) V̂   (V: P × rank),

with (μ_θ, σ_θ) the prior's Gaussian view (``model.prior_loc`` / ``prior_log_scale``), so that
an encoder whose output is zero gives q = the prior, and an empty support set gives one fixed
q. ``covariance="mean-field"`` drops V. y enters one-hot for a categorical likelihood.

θ (the model's meta-parameters) is a point estimate learned jointly with the encoder ψ. Per
task the meta-objective is the support set's ELBO, with S reparameterised draws φ_s ~ q:

    ELBO(D) = (1/S) Σ_s [log p(D | φ_s, θ) + log p(φ_s | θ)] + H[q],

the Gaussian entropy H[q] in closed form and both densities read from the model (any
likelihood, padding masked out). Loss per task (``outer="elbo"``, the default):
−ELBO(D_tr) / N; with ``outer="predictive"`` the query rows' log predictive under the same
draws is added (the ML-PIP score of Gordon et al. 2019),

    −[ELBO(D_tr) + Σ_j log (1/S) Σ_s p(y_j | x_j, φ_s, θ)] / (N + Q),

and all add the weak hyper-prior −w log p(θ). With ``outer="ml-pip"`` the loss is the query
rows' log predictive alone (ML-PIP, Gordon et al. 2019, as the neural process trains),

    −(1/Q) Σ_j log (1/S) Σ_s p(y_j | x_j, φ_s, θ),   φ_s ~ q_ψ(φ | D_tr),

and its gradient reaches θ's prior through q (μ_θ, σ_θ are q's base) as well as the
likelihood's own θ: q is trained for the predictive of unseen rows, and θ is no longer an
empirical-Bayes estimate. It serves where variational EM stalls: on a network per task with
many weights (an MLP), the support ELBO is best met early by q at the prior and a wider noise,
and neither moves again (docs/models.md). Under the ELBO objectives the meta-gradient in θ
is taken with q held fixed (the offsets μ_θ, σ_θ above carry no gradient), as in variational
EM: θ moves by ∂/∂θ [log p(D | φ_s, θ) + log p(φ_s | θ)] and the encoder follows; the
stationary points are those of the ELBO, since the head's bias can move q's mean and scale
freely. The support ELBO
alone makes q the amortized approximation of p(φ | D, θ) and θ the (variational)
empirical-Bayes estimate; the query term trains q for what is evaluated, the predictive of
unseen points.

``refine_steps = L > 0`` (semi-amortized VI; Kim et al. 2018) starts each task's q at the
encoder's output at adapt time and takes L Adam steps on its own −ELBO(D_tr) (fresh draws each
step), closing part of the amortization gap task by task; training is unchanged. The task
posterior is S draws of q.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax

from bayesmeta.inference.base import (
    MetaState,
    Method,
    checked_adapt,
    gradient_step,
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
from bayesmeta.inference.objectives import log_mean_exp, task_mean
from bayesmeta.nn import mlp
from bayesmeta.tasks.base import Support, TaskBatch

Array = jax.Array

__all__ = ["AmortizedConfig", "GaussianQ", "amortized"]

OUTERS = ("elbo", "predictive", "ml-pip")
COVARIANCES = ("low-rank", "mean-field")


class GaussianQ(NamedTuple):
    """One task's q(φ | D) = N(loc, diag(exp(2 log_scale)) + factor factorᵀ).

    Attributes
    ----------
    loc : (P,) mean in the model's unconstrained φ space.
    log_scale : (P,) log of the diagonal part's standard deviation.
    factor : (P, rank) low-rank factor V (rank 0 for ``covariance="mean-field"``).
    """

    loc: Array
    log_scale: Array
    factor: Array

    def covariance(self) -> Array:
        """The full covariance ``(..., P, P)``."""
        diag = jnp.exp(2 * self.log_scale)
        low = jnp.einsum("...pr,...qr->...pq", self.factor, self.factor)
        return low + diag[..., None] * jnp.eye(diag.shape[-1], dtype=diag.dtype)


@dataclasses.dataclass(frozen=True)
class AmortizedConfig(MethodConfig):
    """Options of :func:`amortized` (Adam's are
    :class:`~bayesmeta.inference.config.MethodConfig`'s).

    Attributes
    ----------
    encoder_sizes : sequence of int
        Widths of the per-row network g_ψ on ``[x, y]`` (ReLU; its output is ReLU'd and
        mean-pooled over the real rows).
    decoder_sizes : sequence of int
        Hidden widths of the network d_ψ from the pooled ``[r, log(1 + n)]`` to q's
        parameters (ReLU; may be empty).
    covariance : {"low-rank", "mean-field"}
        q's covariance: diagonal plus rank ``rank`` (default), or diagonal.
    rank : int
        Rank of the low-rank part (``covariance="low-rank"``).
    train_samples : int
        S, reparameterised draws of q per task and meta-step.
    outer : {"elbo", "predictive", "ml-pip"}
        ``"elbo"`` (default): the support set's ELBO; ``"predictive"``: the support ELBO plus
        the query rows' log predictive of the S-draw mixture; ``"ml-pip"``: that log
        predictive alone, θ's prior learning as q's base (module docstring).
    hyperprior_weight : float
        w, the weight of −log p(θ) in the meta-loss (0 for none).
    refine_steps : int
        L, Adam steps on each task's ELBO from the encoder's q at adapt time (0: none).
    refine_lr : float
        Their step size.
    refine_samples : int
        Draws of q per refinement step.
    init_factor_scale : float
        Initial size of V relative to the prior's scale (a non-zero V breaks the symmetry of
        V = 0, where the ELBO's expected gradient in V vanishes).
    """

    METHOD: ClassVar[str] = "amortized"
    VERSION: ClassVar[int] = 1

    encoder_sizes: tuple[int, ...] = (128, 128)
    decoder_sizes: tuple[int, ...] = (128,)
    covariance: str = "low-rank"
    rank: int = 4
    train_samples: int = 8
    outer: str = "elbo"
    hyperprior_weight: float = 1e-4
    refine_steps: int = 0
    refine_lr: float = 1e-2
    refine_samples: int = 4
    init_factor_scale: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "encoder_sizes", tuple(self.encoder_sizes))
        object.__setattr__(self, "decoder_sizes", tuple(self.decoder_sizes))
        check_choice(self, "outer", OUTERS)
        check_choice(self, "covariance", COVARIANCES)
        check_positive_int(self, "rank", "train_samples", "refine_samples")
        check_positive_int(self, "refine_steps", allow_zero=True)
        check_positive(self, "refine_lr", "init_factor_scale")
        if not self.encoder_sizes:
            raise ConfigError("amortized: encoder_sizes: expected at least one width, got ()")
        for name in ("encoder_sizes", "decoder_sizes"):
            sizes = getattr(self, name)
            if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
                raise ConfigError(
                    f"amortized: {name}: expected positive integers, got {list(sizes)}"
                )
        if isinstance(self.hyperprior_weight, bool) or not self.hyperprior_weight >= 0:
            raise ConfigError(
                f"amortized: hyperprior_weight: expected >= 0, got {self.hyperprior_weight!r}"
            )


@method_builder(AmortizedConfig)
def amortized(model: Any, cfg: AmortizedConfig, optimizer: optax.GradientTransformation) -> Method:
    """Build the encoder-amortized variational method for any model of the contract
    (docs/models.md): q covers all of its per-task sites.

    Returns
    -------
    Method
        With ``extras``: ``variational_params(key, state, support) -> GaussianQ`` (leaves
        ``(T, ...)``, after any refinement), ``elbo(theta, q, key, x, y, mask, num_samples)``
        (one task's Monte Carlo ELBO), ``encode(theta, x, y, mask) -> GaussianQ`` (one task,
        no refinement) and ``refine(theta, q, key, x, y, mask) -> GaussianQ``.
    """
    dims = model_dims(model)
    num_classes = dims["num_classes"]
    p = int(model.num_params)
    rank = cfg.rank if cfg.covariance == "low-rank" else 0
    din = model.dx + (num_classes if num_classes is not None else model.dy)
    row_net = mlp((din, *cfg.encoder_sizes), activation="relu")
    width = cfg.encoder_sizes[-1]
    dec_net = mlp((width + 1, *cfg.decoder_sizes), activation="relu") if cfg.decoder_sizes else None
    dec_width = cfg.decoder_sizes[-1] if cfg.decoder_sizes else width + 1
    num_out = p * (2 + rank)
    # a discrete observation (Poisson, negative binomial counts) is not standardised
    support = getattr(model, "observation", (None, ""))[0]
    counts = num_classes is None and bool(getattr(support, "is_discrete", False))

    def model_theta(theta: dict) -> dict:
        return {k: theta[k] for k in model.theta_keys}

    def init(key: Array) -> MetaState:
        k_model, k_row, k_dec, k_head, k_factor = jax.random.split(key, 5)
        theta = dict(model.init_theta(k_model))
        dt = jnp.result_type(float)
        theta["encoder"] = row_net.init(k_row)
        if dec_net is not None:
            theta["decoder"] = dec_net.init(k_dec)
        # a small head: q starts near the prior's Gaussian view, V near init_factor_scale · σ_θ
        w = jax.random.normal(k_head, (dec_width, num_out), dt) * (0.01 / math.sqrt(dec_width))
        b_factor = cfg.init_factor_scale / math.sqrt(max(rank, 1))
        b = jnp.concatenate(
            [jnp.zeros(2 * p, dt), b_factor * jax.random.normal(k_factor, (p * rank,), dt)]
        )
        theta["head"] = {"w": w, "b": b}
        return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))

    def prior_moments(mth: dict) -> tuple[Array, Array]:
        return model.prior_loc(mth), model.prior_log_scale(mth)

    def encode(theta: dict, x: Array, y: Array, mask: Array, prior=None) -> GaussianQ:
        """q(φ | D) of one task: ``x (N, Dx)``, ``y (N, Dy)`` or ``(N,)`` labels, ``mask (N,)``."""
        loc0, log_scale0 = prior_moments(model_theta(theta)) if prior is None else prior
        # q's offset from the prior carries no gradient into θ under the ELBO objectives: θ
        # learns from the ELBO's own ∂/∂θ (log p(D | φ, θ) + log p(φ | θ) at fixed draws), not
        # by moving q with it; under "ml-pip" θ's prior is q's base and learns through q
        if cfg.outer != "ml-pip":
            loc0, log_scale0 = jax.lax.stop_gradient((loc0, log_scale0))
        n = x.shape[0]
        if num_classes is not None:
            yin = jax.nn.one_hot(y.reshape(n), num_classes, dtype=x.dtype)
        else:
            yin = y.reshape(n, -1).astype(x.dtype)
            if counts:  # counts in their own units span orders of magnitude: a signed log
                yin = jnp.sign(yin) * jnp.log1p(jnp.abs(yin))
        h = jax.nn.relu(row_net.apply(theta["encoder"], jnp.concatenate([x, yin], -1)))
        m = mask.astype(h.dtype)
        count = jnp.sum(m)
        r = jnp.sum(h * m[:, None], 0) / jnp.maximum(count, 1.0)
        z = jnp.concatenate([r, jnp.log1p(count)[None]])
        if dec_net is not None:
            z = jax.nn.relu(dec_net.apply(theta["decoder"], z))
        out = z @ theta["head"]["w"] + theta["head"]["b"]
        scale0 = jnp.exp(log_scale0)
        return GaussianQ(
            loc0 + out[:p],
            log_scale0 + out[p : 2 * p],
            scale0[:, None] * out[2 * p :].reshape(p, rank),
        )

    def q_dist(q: GaussianQ) -> dist.Distribution:
        if rank == 0:
            return dist.Normal(q.loc, jnp.exp(q.log_scale)).to_event(1)
        return dist.LowRankMultivariateNormal(q.loc, q.factor, jnp.exp(2 * q.log_scale))

    def elbo_draws(
        mth: dict, q: GaussianQ, key: Array, x: Array, y: Array, mask: Array, num: int
    ) -> tuple[Array, Array]:
        """The Monte Carlo ELBO of one task and its ``num`` draws φ_s ``(num, P)``."""
        qd = q_dist(q)
        phis = qd.rsample(key, (num,))

        def log_joint(phi):
            return model.log_likelihood(mth, phi, x, y, mask) + model.log_prior(mth, phi)

        return jnp.mean(jax.vmap(log_joint)(phis)) + qd.entropy(), phis

    def elbo(theta, q: GaussianQ, key, x, y, mask, num_samples: int = 64) -> Array:
        """ELBO(D) = E_q[log p(D | φ, θ) + log p(φ | θ)] + H[q] of one task (S draws)."""
        return elbo_draws(model_theta(theta), q, key, x, y, mask, num_samples)[0]

    def refine(theta, q: GaussianQ, key, x, y, mask) -> GaussianQ:
        """``refine_steps`` Adam steps on −ELBO(D) from ``q`` (one task)."""
        if cfg.refine_steps == 0:
            return q
        mth = model_theta(theta)
        opt = optax.adam(cfg.refine_lr)

        def neg_elbo(qq, k):
            return -elbo_draws(mth, qq, k, x, y, mask, cfg.refine_samples)[0]

        def step(carry, k):
            qq, opt_state = carry
            g = jax.grad(neg_elbo)(qq, k)
            upd, opt_state = opt.update(g, opt_state, qq)
            return (optax.apply_updates(qq, upd), opt_state), None

        keys = jax.random.split(key, cfg.refine_steps)
        (q, _), _ = jax.lax.scan(step, (q, opt.init(q)), keys)
        return q

    def task_loss(theta, key, x_s, y_s, m_s, x_q, y_q, prior):
        mth = model_theta(theta)
        q = encode(theta, x_s, y_s, m_s, prior)
        value, phis = elbo_draws(mth, q, key, x_s, y_s, m_s, cfg.train_samples)
        if cfg.outer == "elbo":
            return -value / x_s.shape[0]
        ll = jax.vmap(lambda ph: model.log_likelihood_points(mth, ph, x_q, y_q))(phis)  # (S, Q)
        if cfg.outer == "ml-pip":
            return -jnp.mean(log_mean_exp(ll))
        return -(value + jnp.sum(log_mean_exp(ll))) / (x_s.shape[0] + x_q.shape[0])

    def loss_fn(theta, key, batch: TaskBatch) -> Array:
        mth = model_theta(theta)
        prior = prior_moments(mth)
        loss = task_mean(lambda th, k, *task: task_loss(th, k, *task, prior), theta, batch, key)
        if cfg.hyperprior_weight:
            loss = loss - cfg.hyperprior_weight * model.log_hyperprior(mth)
        return loss

    def variational_params(key: Array, state: MetaState, support: Support) -> GaussianQ:
        """Each task's q (leaves ``(T, ...)``): the encoder's, refined if ``refine_steps``."""
        theta = state.theta
        prior = prior_moments(model_theta(theta))
        keys = jax.random.split(key, support.x.shape[0])

        def one(k, x, y, mask):
            return refine(theta, encode(theta, x, y, mask, prior), k, x, y, mask)

        return jax.vmap(one)(keys, support.x, support.y, support.mask)

    def adapt(key: Array, state: MetaState, support: Support, num_samples: int = 32):
        k_q, k_draw = jax.random.split(key)
        qs = variational_params(k_q, state, support)
        keys = jax.random.split(k_draw, support.x.shape[0])
        phi = jax.vmap(lambda q, k: q_dist(q).sample(k, (num_samples,)))(qs, keys)  # (T, S, P)
        return model.posterior(phi, model_theta(state.theta), "amortized")

    return Method(
        "amortized",
        init,
        gradient_step(loss_fn, optimizer),
        checked_adapt(adapt, **dims),
        cfg,
        extras={
            "variational_params": variational_params,
            "elbo": elbo,
            "encode": encode,
            "refine": refine,
        },
    )
