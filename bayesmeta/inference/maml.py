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

import math

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
    make_optimizer,
    masked_mean_count,
    model_dims,
)
from bayesmeta.model import HierarchicalModel
from bayesmeta.tasks.base import Support, TaskBatch

__all__ = ["Info", "MetaState", "maml"]


def maml(
    model: HierarchicalModel,
    *,
    inner_steps: int = 5,
    inner_lr: float = 0.01,
    meta_sgd: bool = False,
    learn_inner_lr: bool = True,
    first_order: bool = False,
    max_inner_update: float | None = 1.0,
    lr: float = 1e-3,
    lr_decay_steps: int | None = None,
    grad_clip: float | None = 10.0,
    optimizer: optax.GradientTransformation | None = None,
) -> Method:
    """Build MAML (``meta_sgd=False``) or Meta-SGD (``meta_sgd=True``).

    Parameters
    ----------
    model : HierarchicalModel
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
    lr, lr_decay_steps, grad_clip : float, int or None, float
        Adam step size, the length of its cosine decay (to lr/10), and the global-norm clip
        of the meta-gradient.
    optimizer : optax.GradientTransformation, optional
        The meta-optimiser (any optax transformation); it replaces the default built from
        ``lr``, ``lr_decay_steps`` and ``grad_clip``.
    """
    if inner_steps < 0:
        raise ValueError(f"inner_steps: expected >= 0, got {inner_steps}")
    if inner_lr <= 0:
        raise ValueError(f"inner_lr: expected > 0, got {inner_lr}")
    if optimizer is None:  # the default: Adam with clipping and the recipe's schedule
        optimizer = make_optimizer(lr, grad_clip, lr_decay_steps)
    name = "meta-sgd" if meta_sgd else "maml"

    def init(key):
        th = model.init_theta(key)
        theta = {k: th[k] for k in model.point_keys}
        mu = model.prior_loc(theta)
        theta["log_inner_lr"] = jnp.full(mu.shape if meta_sgd else (), math.log(inner_lr), mu.dtype)
        return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))

    def inner_loss(phi, theta, x, y, mask):
        scale = jax.lax.stop_gradient(model.noise_std(theta) ** 2)
        return -scale * model.log_likelihood(theta, phi, x, y, mask) / masked_mean_count(mask)

    def adapt_one(theta, x, y, mask):
        alpha = jnp.exp(theta["log_inner_lr"])
        if not learn_inner_lr:
            alpha = jax.lax.stop_gradient(alpha)

        def step(phi, _):
            g = jax.grad(inner_loss)(phi, theta, x, y, mask)
            if first_order:
                g = jax.lax.stop_gradient(g)
            return phi - clip_update(alpha * g, max_inner_update), None

        phi0 = model.prior_loc(theta)
        phi, _ = jax.lax.scan(step, phi0, None, length=inner_steps, unroll=True)
        return phi

    def task_loss(theta, x_s, y_s, m_s, x_q, y_q):
        phi = adapt_one(theta, x_s, y_s, m_s)
        return -model.log_likelihood(theta, phi, x_q, y_q) / x_q.shape[0]

    def loss_fn(theta, key, batch: TaskBatch):
        del key
        losses = jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0, 0))(theta, *batch)
        return jnp.mean(losses)

    def adapt(key, state, support: Support, num_samples: int = 1):
        del key
        theta = state.theta
        phi = jax.vmap(adapt_one, in_axes=(None, 0, 0, 0))(
            theta, support.x, support.y, support.mask
        )
        del num_samples  # a point mass needs one sample
        phi = phi[:, None]
        return model.posterior(phi, theta, name)

    config = dict(
        inner_steps=inner_steps,
        inner_lr=inner_lr,
        meta_sgd=meta_sgd,
        learn_inner_lr=learn_inner_lr,
        first_order=first_order,
        max_inner_update=max_inner_update,
        lr=lr,
        lr_decay_steps=lr_decay_steps,
        grad_clip=grad_clip,
    )
    return Method(
        name,
        init,
        gradient_step(loss_fn, optimizer),
        checked_adapt(adapt, **model_dims(model)),
        config,
    )
