"""MAML and Meta-SGD: the point-estimate baselines.

Inner loop (Finn et al. 2017; Meta-SGD: Li et al. 2017), for a task's support set D_tr:

    φ⁰ = μ,    φᵏ⁺¹ = φᵏ − α ⊙ ∇_φ ℓ(φᵏ; D_tr),    ℓ(φ; D) = −σ_y² log p(D | φ) / |D|

ℓ is the model's log-likelihood rescaled by σ_y² (held fixed), so the step size does not grow
as 1/σ_y² when the learned noise shrinks. α is a learned scalar (MAML) or a learned vector
with one step size per weight (Meta-SGD). The meta-loss is the query-set negative
log-likelihood −log p(D_ts | φᴷ) / |D_ts| under the learned Gaussian noise σ_y, differentiated
through the inner loop (second order unless ``first_order``). Read as a hierarchical model
(Grant et al. 2018), φᴷ is a MAP estimate under an implicit Gaussian prior centred at μ; its
task posterior is a point mass and its predictive is N(f_φᴷ(x), σ_y²).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from bayesmeta.inference.base import (
    Info,
    MetaState,
    Method,
    checked_adapt,
    clip_update,
    gradient_step,
    masked_mean_count,
    method_builder,
    model_dims,
)
from bayesmeta.inference.config import MethodConfig, check_positive, check_positive_int
from bayesmeta.model import HierarchicalModel
from bayesmeta.tasks.base import Support, TaskBatch

__all__ = ["Info", "MAMLConfig", "MetaSGDConfig", "MetaState", "maml"]


@dataclasses.dataclass(frozen=True)
class MAMLConfig(MethodConfig):
    """Options of MAML and Meta-SGD (see :func:`maml`; Adam's in :class:`MethodConfig`).

    Attributes
    ----------
    inner_steps, inner_lr : int, float
        Number of inner gradient steps and the initial inner step size α.
    meta_sgd : bool
        Learn one inner step size per weight (Meta-SGD) instead of one scalar.
    learn_inner_lr : bool
        Meta-learn α (log-parameterised); if False it stays at ``inner_lr``.
    first_order : bool
        Drop second-order terms (stop the gradient through the inner gradients).
    max_inner_update : float or None
        Element-wise clip of each inner update.
    """

    METHOD: ClassVar[str] = "maml"

    inner_steps: int = 5
    inner_lr: float = 0.01
    meta_sgd: bool = False
    learn_inner_lr: bool = True
    first_order: bool = False
    max_inner_update: float | None = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self, "inner_steps", allow_zero=True)
        check_positive(self, "inner_lr")


@dataclasses.dataclass(frozen=True)
class MetaSGDConfig(MAMLConfig):
    """:class:`MAMLConfig` with one learned inner step size per weight."""

    METHOD: ClassVar[str] = "meta-sgd"

    meta_sgd: bool = True


@method_builder(MAMLConfig)
def maml(
    model: HierarchicalModel, cfg: MAMLConfig, optimizer: optax.GradientTransformation
) -> Method:
    """Build MAML (``meta_sgd=False``) or Meta-SGD (``meta_sgd=True``)."""
    name = "meta-sgd" if cfg.meta_sgd else "maml"

    def init(key):
        th = model.init_theta(key)
        theta = {k: th[k] for k in model.point_keys}
        mu = model.prior_loc(theta)
        theta["log_inner_lr"] = jnp.full(
            mu.shape if cfg.meta_sgd else (), math.log(cfg.inner_lr), mu.dtype
        )
        return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))

    def adapt_tasks(theta, x, y, mask):
        """φᴷ of every task of a batch ``(T, P)``: the inner loop on the sum of the tasks'
        losses, whose gradient in φ_t is task t's own (tasks are independent given θ), so
        that a model is called once per step for all tasks rather than once per task."""
        alpha = jnp.exp(theta["log_inner_lr"])
        if not cfg.learn_inner_lr:
            alpha = jax.lax.stop_gradient(alpha)
        scale = jax.lax.stop_gradient(model.noise_std(theta) ** 2)
        counts = jax.vmap(masked_mean_count)(mask)

        def inner_loss(phi):
            ll = model.log_likelihood_tasks(theta, phi, x, y, mask)
            return -scale * jnp.sum(ll / counts)

        def step(phi, _):
            g = jax.grad(inner_loss)(phi)
            if cfg.first_order:
                g = jax.lax.stop_gradient(g)
            return phi - clip_update(alpha * g, cfg.max_inner_update), None

        mu = model.prior_loc(theta)
        phi0 = jnp.broadcast_to(mu, (x.shape[0], *mu.shape))
        phi, _ = jax.lax.scan(step, phi0, None, length=cfg.inner_steps, unroll=True)
        return phi

    def loss_fn(theta, key, batch: TaskBatch):
        del key
        phi = adapt_tasks(theta, batch.x_support, batch.y_support, batch.mask_support)
        ll = model.log_likelihood_tasks(theta, phi, batch.x_query, batch.y_query)
        return -jnp.mean(ll) / batch.x_query.shape[1]

    def adapt(key, state, support: Support, num_samples: int = 1):
        del key
        theta = state.theta
        phi = adapt_tasks(theta, support.x, support.y, support.mask)
        del num_samples  # a point mass needs one sample
        phi = phi[:, None]
        return model.posterior(phi, theta, name)

    return Method(
        name,
        init,
        gradient_step(loss_fn, optimizer),
        checked_adapt(adapt, **model_dims(model)),
        cfg,
    )
