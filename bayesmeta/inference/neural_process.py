"""Encoder-based amortized VI over the last layer (neural process / ML-PIP / VERSA).

The model's network f_φ is split into a body (every layer but the last, meta-learned and
shared by all tasks) and its last layer w, the low-dimensional task variable. A
permutation-invariant encoder reads a data set D = {(x_j, y_j)} and gives a Gaussian over w:

    r = (1/|D|) Σ_j g_ψ([x_j, y_j]),     q_ψ(w | D) = N(m_ψ(r), diag s_ψ(r)²)

(Garnelo et al. 2018; Gordon et al. 2019), with y one-hot for classification. The task
posterior for a support set is q_ψ(w | D_tr); each sample is a complete flat φ = (body, w_s),
so the shared model, TaskPosterior and every evaluator work unchanged. Meta-objectives per
task, with S samples w_s:

- ``outer="predictive"`` (default; ML-PIP, Gordon et al. 2019):
  −(1/|D_ts|) Σ_j log (1/S) Σ_s p(y_j | x_j, w_s),  w_s ~ q(w | D_tr);
- ``outer="elbo"`` (the neural process's conditional ELBO, Garnelo et al. 2018):
  −(1/|D_ts|) [E_{q(w | D_tr ∪ D_ts)} log p(D_ts | w) − KL(q(w | D_tr ∪ D_ts) ‖ q(w | D_tr))].

The likelihood (and its learned noise) is the shared model's ``log_likelihood_points``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from jax.scipy.special import logsumexp

from bayesmeta.inference.base import (
    MetaState,
    Method,
    checked_adapt,
    gradient_step,
    make_optimizer,
    model_dims,
)
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support, TaskBatch

__all__ = ["neural_process"]

OUTERS = ("predictive", "elbo")


def neural_process(
    model: HierarchicalModel,
    *,
    encoder_sizes: Sequence[int] = (128, 128),
    train_samples: int = 16,
    outer: str = "predictive",
    min_scale: float = 1e-3,
    lr: float = 1e-3,
    lr_decay_steps: int | None = None,
    grad_clip: float | None = 10.0,
) -> Method:
    """Build the encoder-based amortized VI method.

    Parameters
    ----------
    model : HierarchicalModel
        Its network must be a list of layers (e.g. :func:`bayesmeta.nn.mlp`); the last one
        becomes the task variable w.
    encoder_sizes : sequence of int
        Hidden widths of the per-point encoder g_ψ (ReLU); the pooled representation feeds
        linear heads for m and log s.
    train_samples : int
        S, samples of w per task in meta-training.
    outer : {"predictive", "elbo"}
    min_scale : float
        Floor added to s so that q never collapses to a point.
    lr, lr_decay_steps, grad_clip
        Adam settings of the meta-optimiser.
    """
    if outer not in OUTERS:
        raise ValueError(f"outer: expected one of {OUTERS}, got {outer!r}")
    if not isinstance(train_samples, int) or train_samples < 1:
        raise ValueError(f"train_samples: expected a positive integer, got {train_samples!r}")
    params0 = model.network.init(jax.random.PRNGKey(0))
    if not isinstance(params0, list | tuple) or len(params0) < 2:
        raise ValueError("model: the neural process needs a network with at least two layers")
    num_last = int(ravel_pytree(params0[-1])[0].shape[0])
    num_body = model.num_params - num_last
    classify = model.likelihood == "categorical"
    din = model.dx + (model.num_classes if classify else model.dy)
    enc = mlp((din, *encoder_sizes), activation="relu")
    optimizer = make_optimizer(lr, grad_clip, lr_decay_steps)

    def init(key):
        k_net, k_enc, k_head = jax.random.split(key, 3)
        th = model.init_theta(k_net)
        width = encoder_sizes[-1]
        w_head = jax.random.normal(k_head, (width, 2 * num_last)) * (0.1 / math.sqrt(width))
        # Start q at the network initialisation's last layer with a moderate spread.
        b_head = jnp.concatenate([th["mu"][num_body:], jnp.full((num_last,), math.log(0.3))])
        theta = {
            "body": th["mu"][:num_body],
            "encoder": enc.init(k_enc),
            "head": {"w": w_head, "b": b_head},
        }
        if "log_noise" in th:
            theta["log_noise"] = th["log_noise"]
        return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))

    def encode(theta, x, y, mask):
        """q(w | D) = N(m, s²) of one data set ``x (N, Dx)``, ``y``, ``mask (N,)``."""
        yin = jax.nn.one_hot(y, model.num_classes) if classify else y
        h = jax.nn.relu(enc.apply(theta["encoder"], jnp.concatenate([x, yin], -1)))
        r = jnp.sum(h * mask[:, None], 0) / jnp.maximum(jnp.sum(mask), 1.0)
        out = r @ theta["head"]["w"] + theta["head"]["b"]
        return out[:num_last], jax.nn.softplus(out[num_last:]) + min_scale

    def full_phi(theta, w):
        return jnp.concatenate([jnp.broadcast_to(theta["body"], (*w.shape[:-1], num_body)), w], -1)

    def model_theta(theta):
        return {"log_noise": theta["log_noise"]} if "log_noise" in theta else {}

    def log_lik_points(theta, w, x, y):
        return model.log_likelihood_points(model_theta(theta), full_phi(theta, w), x, y)

    def task_loss(theta, key, x_s, y_s, m_s, x_q, y_q):
        n_q = x_q.shape[0]
        m_c, s_c = encode(theta, x_s, y_s, m_s)
        eps = jax.random.normal(key, (train_samples, num_last))
        if outer == "predictive":
            ws = m_c + s_c * eps
            ll = jax.vmap(log_lik_points, in_axes=(None, 0, None, None))(theta, ws, x_q, y_q)
            return -jnp.mean(logsumexp(ll, 0) - math.log(train_samples))
        x_a = jnp.concatenate([x_s, x_q], 0)
        y_a = jnp.concatenate([y_s, y_q], 0)
        m_a = jnp.concatenate([m_s, jnp.ones(n_q, m_s.dtype)], 0)
        m_t, s_t = encode(theta, x_a, y_a, m_a)
        ws = m_t + s_t * eps
        ll = jax.vmap(log_lik_points, in_axes=(None, 0, None, None))(theta, ws, x_q, y_q)
        kl = dist.kl_divergence(
            dist.Normal(m_t, s_t).to_event(1), dist.Normal(m_c, s_c).to_event(1)
        )
        return -(jnp.mean(jnp.sum(ll, 1)) - kl) / n_q

    def loss_fn(theta, key, batch: TaskBatch):
        keys = jax.random.split(key, batch.num_tasks)
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0, 0, 0))(theta, keys, *batch))

    def adapt(key, state: MetaState, support: Support, num_samples: int = 32):
        theta = state.theta
        m, s = jax.vmap(encode, in_axes=(None, 0, 0, 0))(theta, support.x, support.y, support.mask)
        eps = jax.random.normal(key, (m.shape[0], num_samples, num_last), m.dtype)
        phi = full_phi(theta, m[:, None] + s[:, None] * eps)
        noise = model.noise_std(model_theta(theta))
        return TaskPosterior.from_samples(
            phi, noise, model.apply, model.likelihood, "neural-process"
        )

    def variational_params(state: MetaState, support: Support):
        """q(w | D_tr) per task: ``(m, s)``, each ``(T, L)``."""
        return jax.vmap(encode, in_axes=(None, 0, 0, 0))(
            state.theta, support.x, support.y, support.mask
        )

    config = dict(
        encoder_sizes=tuple(encoder_sizes),
        train_samples=train_samples,
        outer=outer,
        min_scale=min_scale,
        lr=lr,
        lr_decay_steps=lr_decay_steps,
        grad_clip=grad_clip,
    )
    return Method(
        "neural-process",
        init,
        gradient_step(loss_fn, optimizer),
        checked_adapt(adapt, **model_dims(model)),
        config,
        extras={"variational_params": variational_params},
    )
