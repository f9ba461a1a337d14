"""BMAML: Bayesian MAML with Stein variational gradient descent (Yoon et al. 2018).

Each task's posterior is M particles z_m = (φ_m, log σ_y,m): network weights and their own
observation noise (or, with ``noise="shared"``, φ_m alone and one meta-learned σ_y). θ holds
the M initial particles Z⁰ (and the prior p(φ | θ) = N(μ, diag σ²) that the particles' target
includes). For a data set D the particles move by SVGD
(:mod:`bayesmeta.inference.svgd`) on

    log p(z | D, θ) = log p(D | φ, σ_y) + log p(φ | θ) + log Gamma(γ; a, b) + log 2γ,
    γ = σ_y⁻²  (a Gamma prior on the precision, as in BMAML; log 2γ is the Jacobian of log σ_y),

with steps z ← z + α ⊙ c φ*(z), where α is the meta-learned step size (a scalar, or one per
coordinate with ``meta_sgd``: a constant matrix-valued kernel, still an SVGD) and
c = σ̄_y² / |D| a fixed rescaling (gradient stopped; σ̄_y² is the particles' mean noise
variance) so the step does not grow with the data size or shrink with the noise.

Meta-training (``outer="chaser"``, the paper's): n SVGD steps on D_tr give the chaser Z_n; s
further steps on D_tr ∪ D_ts from Z_n give the leader Z_{n+s}; the loss is

    ‖Z_n − stop_gradient(Z_{n+s})‖² / (M D),

pulling the few-shot posterior towards the posterior that has seen more data. The variant
``outer="predictive"`` instead minimises the query-set negative log predictive of the particle
mixture, −(1/|D_ts|) Σ_j log (1/M) Σ_m N(y_j | f_φm(x_j), σ_y,m²), which scores exactly what
is evaluated (see docs/methods.md for which is the default and why). ``first_order`` stops the
gradient through the SVGD directions (no Jacobians of the scores or the kernel), which makes a
meta-step several times cheaper.

The task posterior of a new task is the M particles after n SVGD steps on its support set.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax

from bayesmeta.inference import svgd
from bayesmeta.inference.base import (
    MetaState,
    Method,
    checked_adapt,
    gradient_step,
    masked_mean_count,
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
from bayesmeta.inference.heads import conjugate_head, with_exact
from bayesmeta.inference.objectives import chaser_loss, predictive_nll, task_mean
from bayesmeta.model import HierarchicalModel
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support, TaskBatch

__all__ = ["bmaml"]

OUTERS = ("chaser", "predictive")
HEADS = ("adapted", "collapsed")
NOISES = ("particle", "shared")


@dataclasses.dataclass(frozen=True)
class BMAMLConfig(MethodConfig):
    """Options of :func:`bmaml` (Adam's are :class:`~bayesmeta.inference.config.MethodConfig`'s).

    Attributes
    ----------
    num_particles : int
        M, particles per task.
    inner_steps, leader_steps : int
        n SVGD steps on D_tr (the chaser, and adaptation at test time) and s further steps on
        D_tr ∪ D_ts (the leader; ``outer="chaser"`` only).
    inner_lr : float
        Initial SVGD step size α (meta-learned, log-parameterised, unless
        ``learn_inner_lr=False``).
    meta_sgd : bool
        One step size per coordinate instead of one scalar.
    outer : {"predictive", "chaser"}
        Meta-objective (``loss`` before config version 2): the query-set log predictive of
        the particle mixture, or the chaser loss.
    first_order : bool
        No gradient through the SVGD directions.
    init_prior_scale : float or None
        Initial σ of BMAML's weight prior N(μ, σ²) (μ starts at the particles' mean); both
        are meta-learned with second-order meta-gradients. It replaces the model's own
        ``prior_scale`` (called ``prior_scale`` before config version 2); ``None`` keeps the
        model's own initial σ per weight (a data model's, which starts at the training
        groups' empirical-Bayes fit).
    noise : {"particle", "shared"}
        Each particle carries its own log σ_y, moved by SVGD under the Gamma prior (BMAML), or
        one σ_y is a meta-parameter shared by all particles and tasks (as in MAML; it is
        learned by the predictive loss only, the chaser loss leaves it at its initial value).
    noise_prior : (a, b)
        Gamma(a, b) prior (shape, rate) on each particle's noise precision σ_y⁻².
    max_inner_update : float or None
        Element-wise clip of each SVGD update.
    head : {"adapted", "collapsed"}
        ``"adapted"``: particles over every weight (the paper's). ``"collapsed"``: particles over
        the body (and σ_y), the last layer integrated out exactly under the prior N(μ_w, σ_w²)
        (:mod:`bayesmeta.inference.heads`): SVGD targets log p(body) + log p(D | body, σ_y),
        the predictive loss uses each particle's exact Gaussian predictive, and ``adapt``
        draws ``num_samples // M`` last layers per particle from p(w | body, D). Gaussian
        likelihood and a linear last layer only: the built-in network's, or a NumPyro model's
        :func:`~bayesmeta.model.linear_last_layer` (with a diagonal Normal prior over the
        body; σ_y and the priors are then the model's own θ, whatever ``noise`` says).
    """

    METHOD: ClassVar[str] = "bmaml"
    VERSION: ClassVar[int] = 2
    MIGRATIONS: ClassVar = {1: _rename({"loss": "outer", "prior_scale": "init_prior_scale"})}

    num_particles: int = 10
    inner_steps: int = 5
    leader_steps: int = 5
    inner_lr: float = 0.01
    meta_sgd: bool = False
    learn_inner_lr: bool = True
    outer: str = "predictive"
    first_order: bool = False
    init_prior_scale: float | None = 1.0
    noise: str = "particle"
    noise_prior: tuple[float, float] = (1.0, 0.1)
    max_inner_update: float | None = 1.0
    head: str = "adapted"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "head", HEADS)
        check_choice(self, "noise", NOISES)
        check_choice(self, "outer", OUTERS)
        check_positive_int(self, "num_particles")
        check_positive_int(self, "inner_steps", "leader_steps", allow_zero=True)
        check_positive(self, "inner_lr")
        if self.init_prior_scale is not None:
            check_positive(self, "init_prior_scale")
        a0, b0 = self.noise_prior
        if not (a0 > 0 and b0 > 0):
            raise ConfigError(
                f"bmaml: noise_prior: expected (shape, rate) > 0, got {self.noise_prior!r}"
            )


@method_builder(BMAMLConfig)
def bmaml(
    model: HierarchicalModel, cfg: BMAMLConfig, optimizer: optax.GradientTransformation
) -> Method:
    """Build BMAML: Stein variational gradient descent over M particles per task, trained
    with the chaser loss (Yoon et al. 2018). The model's likelihood is Gaussian (the
    particles carry their own noise) or categorical."""
    a0, b0 = (float(v) for v in cfg.noise_prior)
    gaussian = model.likelihood.gaussian
    generic = model.likelihood.generic
    in_particle = gaussian and cfg.noise == "particle"
    conj = conjugate_head(model) if cfg.head == "collapsed" else None
    if conj is not None and generic and not model.gaussian_prior:
        raise ConfigError(
            "bmaml: head: 'collapsed' needs a diagonal Normal prior over the body's weights "
            "(model.gaussian_prior); use head='adapted'"
        )
    p = model.num_params if conj is None else conj.num_body
    dim = p + 1 if in_particle else p
    m = cfg.num_particles

    def split(z, theta):
        """(φ, log σ_y) of particles ``z (..., D)``."""
        if in_particle:
            return z[..., :p], z[..., p]
        if gaussian:
            return z, jnp.broadcast_to(theta["log_noise"], z.shape[:-1])
        return z, jnp.zeros(z.shape[:-1], z.dtype)

    def init_generic(key):
        # particles from the Gaussian view of p(φ | θ) at θ's initial value; θ is the model's
        # (a collapsed head's particles are the body: the per-task sites before the last layer)
        k_theta, k_particles = jax.random.split(key)
        theta = dict(model.init_theta(k_theta))
        loc, log_scale = model.prior_loc(theta)[:p], model.prior_log_scale(theta)[:p]
        eps = jax.random.normal(k_particles, (m, *loc.shape), loc.dtype)
        theta["particles"] = loc + jnp.exp(log_scale) * eps
        theta["log_inner_lr"] = jnp.full(
            (dim,) if cfg.meta_sgd else (), math.log(cfg.inner_lr), loc.dtype
        )
        return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))

    def model_theta(theta):
        return {k: theta[k] for k in model.theta_keys}

    def init(key):
        if generic:
            return init_generic(key)
        keys = jax.random.split(key, m)
        phi0 = jax.vmap(lambda k: model.init_theta(k)["mu"])(keys)
        if cfg.init_prior_scale is None:
            log_sigma = model.init_theta(keys[0])["log_sigma"].astype(phi0.dtype)
        else:
            log_sigma = jnp.full(phi0.shape[1:], math.log(cfg.init_prior_scale), phi0.dtype)
        z0 = phi0[:, :p]
        if in_particle:
            log_noise = jnp.full((m, 1), math.log(model.noise_init), phi0.dtype)
            z0 = jnp.concatenate([z0, log_noise], 1)
        theta = {
            "particles": z0,
            "mu": jnp.mean(phi0, 0),
            "log_sigma": log_sigma,
            "log_inner_lr": jnp.full(
                (dim,) if cfg.meta_sgd else (), math.log(cfg.inner_lr), phi0.dtype
            ),
        }
        if gaussian and not in_particle:
            theta["log_noise"] = jnp.asarray(math.log(model.noise_init), phi0.dtype)
        return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))

    def body_prior(theta):
        """p(body | θ) of a collapsed head: the prior's diagonal Normal over the body."""
        if generic:
            mth = model_theta(theta)
            loc, log_scale = model.prior_loc(mth)[:p], model.prior_log_scale(mth)[:p]
        else:
            loc, log_scale = theta["mu"][:p], theta["log_sigma"][:p]
        return dist.Normal(loc, jnp.exp(log_scale))

    def log_target(z, theta, x, y, mask):
        if generic:
            mth = model_theta(theta)
            if conj is not None:  # z is the body; the declared last layer integrated out
                lp = jnp.sum(body_prior(theta).log_prob(z))
                return lp + conj.log_marginal(mth, z, x, y, mask)
            return model.log_prior(mth, z) + model.log_likelihood(mth, z, x, y, mask)
        phi, log_noise = split(z, theta)
        prior_theta = {"mu": theta["mu"], "log_sigma": theta["log_sigma"]}
        if conj is not None:  # phi is the body: its prior, and the last layer integrated out
            lp = jnp.sum(body_prior(theta).log_prob(phi))
            lp = lp + conj.log_marginal({**prior_theta, "log_noise": log_noise}, phi, x, y, mask)
        else:
            lik_theta = {"log_noise": log_noise} if gaussian else {}
            lp = model.log_prior(prior_theta, phi)
            lp = lp + model.log_likelihood(lik_theta, phi, x, y, mask)
        if in_particle:
            gamma = jnp.exp(-2.0 * log_noise)
            lp = lp + a0 * jnp.log(b0) - math.lgamma(a0) + (a0 - 1) * jnp.log(gamma) - b0 * gamma
            lp = lp + jnp.log(2.0 * gamma)
        return lp

    clip = cfg.max_inner_update
    transform = None if clip is None else (lambda u: jnp.clip(u, -clip, clip))

    def run_svgd(theta, z, x, y, mask, num_steps):
        """``num_steps`` steps of :func:`svgd.step` on the task's posterior from particles z,
        the step α σ²/n (the learned step, scaled by the particles' mean noise variance, or a
        NumPyro model's observation scale squared, over the number of support points, so that
        it does not grow as 1/σ²)."""
        alpha = jnp.exp(theta["log_inner_lr"])
        if not cfg.learn_inner_lr:
            alpha = jax.lax.stop_gradient(alpha)
        score = jax.grad(log_target)
        # a NumPyro model's observation scale depends on θ alone: traced once, not per step
        generic_var = model.noise_std(model_theta(theta)) ** 2 if generic else None

        def step_size(z):
            if generic:  # the observation's scale, as ABML's inner steps
                noise_var = generic_var
            elif gaussian:
                noise_var = jnp.mean(jnp.exp(2.0 * split(z, theta)[1]))
            else:
                noise_var = 1.0
            return alpha * jax.lax.stop_gradient(noise_var / masked_mean_count(mask))

        return svgd.run(z, lambda zi: score(zi, theta, x, y, mask), step_size, num_steps,
                        first_order=cfg.first_order, transform=transform)  # fmt: skip

    def particle_log_lik_points(z, theta, x, y):
        if generic:
            return model.log_likelihood_points(model_theta(theta), z, x, y)
        phi, log_noise = split(z, theta)
        theta = {"log_noise": log_noise} if gaussian else {}
        return model.log_likelihood_points(theta, phi, x, y)

    def head_theta(theta, log_noise):
        """The θ a collapsed head reads: the model's own sites for a NumPyro model, else the
        prior (μ, log σ) with the particle's or the shared log σ_y."""
        if generic:
            return model_theta(theta)
        return {"mu": theta["mu"], "log_sigma": theta["log_sigma"], "log_noise": log_noise}

    def exact_log_lik_points(z, theta, x_s, y_s, m_s, x_q, y_q):
        """log N(y_q; the particle's exact predictive) with the last layer integrated out."""
        body, log_noise = split(z, theta)
        return conj.log_predictive(head_theta(theta, log_noise), body, x_s, y_s, m_s, x_q, y_q)

    def task_loss(theta, x_s, y_s, m_s, x_q, y_q):
        z = run_svgd(theta, theta["particles"], x_s, y_s, m_s, cfg.inner_steps)
        if cfg.outer == "predictive":
            if conj is not None:
                ll = jax.vmap(
                    exact_log_lik_points, in_axes=(0, None, None, None, None, None, None)
                )(z, theta, x_s, y_s, m_s, x_q, y_q)
            else:
                ll = jax.vmap(particle_log_lik_points, in_axes=(0, None, None, None))(
                    z, theta, x_q, y_q
                )
            return predictive_nll(ll)
        x_all = jnp.concatenate([x_s, x_q], 0)
        y_all = jnp.concatenate([y_s, y_q], 0)
        m_all = jnp.concatenate([m_s, jnp.ones(x_q.shape[0], m_s.dtype)], 0)
        return chaser_loss(z, run_svgd(theta, z, x_all, y_all, m_all, cfg.leader_steps))

    def loss_fn(theta, key, batch: TaskBatch):
        del key
        return task_mean(task_loss, theta, batch)

    def adapt(key, state: MetaState, support: Support, num_samples: int = m):
        theta = state.theta
        z = jax.vmap(run_svgd, in_axes=(None, None, 0, 0, 0, None))(
            theta, theta["particles"], support.x, support.y, support.mask, cfg.inner_steps
        )
        phi, log_noise = split(z, theta)
        if conj is not None:  # r exact last layers per particle: M·r equally weighted samples
            r = max(1, num_samples // m)
            t = phi.shape[0]
            phi = jnp.repeat(phi, r, axis=1)
            log_noise = jnp.repeat(log_noise, r, axis=1)

            def task_heads(bodies, noises, k, x, y, mask):
                keys = jax.random.split(k, bodies.shape[0])
                one = lambda b, s, kk: conj.sample(head_theta(theta, s), b, kk, x, y, mask)  # noqa: E731
                return jax.vmap(one)(bodies, noises, keys)

            heads = jax.vmap(task_heads)(
                phi, log_noise, jax.random.split(key, t), support.x, support.y, support.mask
            )
            phi = jnp.concatenate([phi, heads], -1)
        else:
            del key, num_samples  # the posterior is the M particles
        if generic:
            return model.posterior(phi, model_theta(theta), "bmaml")
        noise = jnp.exp(log_noise) if gaussian else jnp.ones(phi.shape[:2], phi.dtype)
        lw = jnp.full(phi.shape[:2], -math.log(phi.shape[1]), phi.dtype)
        post = TaskPosterior(phi, lw, noise, model.apply, model.likelihood, "bmaml")
        if conj is None or in_particle or not gaussian:  # own noises: not one Gaussian
            return post
        return with_exact(post, conj, head_theta(theta, theta["log_noise"]), support)

    def particles(state: MetaState, support: Support, num_steps: int = cfg.inner_steps):
        """The particles z (T, M, D) after ``num_steps`` SVGD steps on each support set."""
        theta = state.theta
        return jax.vmap(run_svgd, in_axes=(None, None, 0, 0, 0, None))(
            theta, theta["particles"], support.x, support.y, support.mask, num_steps
        )

    meta_step = gradient_step(loss_fn, optimizer)
    return Method(
        "bmaml",
        init,
        meta_step,
        checked_adapt(adapt, **model_dims(model)),
        cfg,
        extras={"particles": particles, "log_target": log_target},
    )
