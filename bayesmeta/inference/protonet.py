"""Prototypical networks, plain and Bayesian: few-shot classifiers in an embedding space.

A meta-learned embedding h = g_θ(x) ∈ R^d (the model's network without its last layer) maps
each support image to a point; class c of a task has a prototype μ_c in that space.

**ProtoNet** (Snell et al. 2017; ``protonet``): μ_c is the mean of the class's support
embeddings and p(y = c | x) ∝ exp(−‖h(x) − μ_c‖²). Its task posterior is a point mass.

**Bayesian ProtoNet** (``bayesian-protonet``): a conjugate generative model per class,

    μ_c ~ N(m₀, diag τ²),    h_j | y_j = c ~ N(μ_c, diag σ²),

with m₀, τ² and σ² meta-learned with the embedding. Given the n_c support embeddings of
class c (sum s_c), the class posterior is exact and per dimension

    v_c = (1/τ² + n_c/σ²)⁻¹,    m_c = v_c (m₀/τ² + s_c/σ²),

and the predictive over labels is closed form:

    p(y = c | x, D) ∝ N(h(x); m_c, diag(σ² + v_c))

(``predictive="exact"``, a single φ per task, since the predictive is exact), or the
Monte Carlo mixture (1/S) Σ_s softmax_c log N(h(x); μ_c^s, diag σ²) over draws
μ_c^s ~ N(m_c, diag v_c) (``predictive="sampled"``: S samples, so that BALD and other
disagreement measures see the posterior's spread). A class with fewer shots has a wider
posterior and a flatter likelihood; with a flat prior (1/τ² → 0), the posterior variance
set to zero and σ² = ½, the exact predictive is the plain ProtoNet's.

Both are meta-trained on the query sets' negative log predictive (the episodic
cross-entropy). Each sample φ is ``[μ (C·d), log s² (C·d)]`` (prototypes and the predictive's
per-class variances); the posterior keeps the embedding network once in its ``params``, so
every evaluator, plot and the active-learning loop consume it like any other method's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

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
from bayesmeta.model import HierarchicalModel
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support, TaskBatch

Array = jax.Array

__all__ = [
    "BayesianProtoNetConfig",
    "ClassPosterior",
    "ProtoNetConfig",
    "class_posterior",
    "protonet",
    "prototype_logits",
]

PREDICTIVES = ("exact", "sampled")


class ClassPosterior(NamedTuple):
    """Per-class posterior over the prototypes of one task.

    Attributes
    ----------
    mean : (C, d) posterior means m_c (the class means for the plain ProtoNet).
    var : (C, d) posterior variances v_c (zero for the plain ProtoNet).
    count : (C,) support points per class n_c (masked points excluded).
    """

    mean: Array
    var: Array
    count: Array


def class_posterior(
    h: Array,
    labels: Array,
    mask: Array,
    num_classes: int,
    prior_mean: Array,
    prior_var: Array | None,
    noise_var: Array,
) -> ClassPosterior:
    """The conjugate posterior of every class's prototype from one task's support embeddings.

    Parameters
    ----------
    h : (K, d) support embeddings; labels : (K,) int; mask : (K,) 0/1.
    prior_mean, prior_var : (d,)
        m₀ and τ²; ``prior_var=None`` is the flat prior (1/τ² = 0, the plain class mean,
        and a class without support points keeps m₀ with zero variance).
    noise_var : (d,) σ².
    """
    onehot = jax.nn.one_hot(labels, num_classes, dtype=h.dtype) * mask[:, None].astype(h.dtype)
    count = jnp.sum(onehot, 0)  # (C,)
    total = onehot.T @ h  # (C, d)
    if prior_var is None:
        n = jnp.maximum(count, 1.0)[:, None]
        mean = jnp.where(count[:, None] > 0, total / n, prior_mean)
        var = jnp.where(count[:, None] > 0, noise_var / n, 0.0)
        return ClassPosterior(mean, var, count)
    precision = 1.0 / prior_var + count[:, None] / noise_var
    var = 1.0 / precision
    mean = var * (prior_mean / prior_var + total / noise_var)
    return ClassPosterior(mean, var, count)


def prototype_logits(h: Array, means: Array, log_var: Array) -> Array:
    """log N(h; μ_c, diag s_c²) for every point and class (up to a constant shared by the
    classes), ``h (N, d)``, ``means (C, d)``, ``log_var (C, d)`` -> ``(N, C)``."""
    inv = jnp.exp(-log_var)
    # ‖h − μ‖²_{S⁻¹} expanded, so the (N, C, d) difference tensor is never formed
    quad = (h**2) @ inv.T - 2.0 * h @ (means * inv).T + jnp.sum(means**2 * inv, -1)
    return -0.5 * (quad + jnp.sum(log_var, -1))


@dataclasses.dataclass(frozen=True)
class ProtoNetConfig(MethodConfig):
    """Options of :func:`protonet` (Adam's are :class:`MethodConfig`'s).

    Attributes
    ----------
    bayesian : bool
        The conjugate class posterior with meta-learned m₀, τ² and σ² (False: the plain
        ProtoNet, squared Euclidean distance to the class mean).
    predictive : {"exact", "sampled"}
        The closed-form predictive (one φ per task) or the Monte Carlo mixture over
        prototype draws (``num_samples`` φ per task); Bayesian only.
    train_samples : int
        Prototype draws per task in meta-training with ``predictive="sampled"``.
    init_prior_scale, init_noise_scale : float
        Initial τ and σ (per embedding dimension).
    """

    METHOD: ClassVar[str] = "protonet"

    bayesian: bool = False
    predictive: str = "exact"
    train_samples: int = 8
    init_prior_scale: float = 1.0
    init_noise_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "predictive", PREDICTIVES)
        check_positive(self, "init_prior_scale", "init_noise_scale")
        check_positive_int(self, "train_samples")
        if not isinstance(self.bayesian, bool):
            raise ConfigError(
                f"{self.METHOD}: bayesian: expected True or False, got {self.bayesian!r}"
            )
        if self.predictive == "sampled" and not self.bayesian:
            raise ConfigError(
                f"{self.METHOD}: predictive: 'sampled' draws prototypes from the Bayesian "
                "class posterior; set bayesian=True"
            )


@dataclasses.dataclass(frozen=True)
class BayesianProtoNetConfig(ProtoNetConfig):
    """:class:`ProtoNetConfig` with the conjugate class posterior."""

    METHOD: ClassVar[str] = "bayesian-protonet"

    bayesian: bool = True


@method_builder(ProtoNetConfig)
def protonet(
    model: HierarchicalModel, cfg: ProtoNetConfig, optimizer: optax.GradientTransformation
) -> Method:
    """Build a prototypical network (``bayesian=False``) or its Bayesian variant. The model
    has a categorical likelihood and a network that is a list of layers ending in a linear
    layer ``{"w": (d, C), "b": (C,)}`` (e.g. :func:`bayesmeta.nn.conv4`): the layers before
    it are the embedding g_θ, initialised at the model's prior mean."""
    name = "bayesian-protonet" if cfg.bayesian else "protonet"
    if not model.likelihood.classifier:
        raise ValueError(
            f"model: {name} classifies; it needs a categorical likelihood, got {model.likelihood!r}"
        )
    params0 = model.network.init(jax.random.PRNGKey(0))
    last0 = params0[-1] if isinstance(params0, list | tuple) and len(params0) >= 2 else None
    if not (isinstance(last0, dict) and set(last0) == {"w", "b"} and jnp.ndim(last0["w"]) == 2):
        raise ValueError(
            f"model: {name} embeds with every layer but a linear last one "
            "{'w': (d, C), 'b': (C,)}; the network has no such last layer"
        )
    dim, num_classes = (int(v) for v in last0["w"].shape)
    num_body = model.num_params - int(ravel_pytree(last0)[0].shape[0])
    _, unravel_body = ravel_pytree(list(params0[:-1]))
    identity_head = {"w": jnp.eye(dim), "b": jnp.zeros(dim)}
    half = num_classes * dim  # φ = [μ (C·d), log s² (C·d)]

    def init(key):
        theta = {"body": model.init_theta(key)["mu"][:num_body]}
        if cfg.bayesian:
            dtype = theta["body"].dtype  # not weakly typed, so a step never retraces
            theta["prior_mean"] = jnp.zeros(dim, dtype)
            theta["log_prior_var"] = jnp.full(dim, 2 * math.log(cfg.init_prior_scale), dtype)
            theta["log_noise_var"] = jnp.full(dim, 2 * math.log(cfg.init_noise_scale), dtype)
        return MetaState(theta, optimizer.init(theta), jnp.zeros((), jnp.int32))

    def embed(body, x):
        """h = g_θ(x), ``(N, d)``."""
        return model.network.apply([*unravel_body(body), identity_head], x)

    def posterior_of(theta, x, y, mask) -> ClassPosterior:
        h = embed(theta["body"], x)
        if not cfg.bayesian:
            half_var = jnp.full(dim, 0.5, h.dtype)
            post = class_posterior(h, y, mask, num_classes, jnp.zeros(dim), None, half_var)
            return post._replace(var=jnp.zeros_like(post.var))
        return class_posterior(h, y, mask, num_classes, theta["prior_mean"],
                               jnp.exp(theta["log_prior_var"]),
                               jnp.exp(theta["log_noise_var"]))  # fmt: skip

    def predictive_var(theta, post: ClassPosterior) -> Array:
        """The exact predictive's per-class variances σ² + v_c ``(C, d)`` (½ for the plain)."""
        if not cfg.bayesian:
            return jnp.full(post.mean.shape, 0.5, post.mean.dtype)
        return jnp.exp(theta["log_noise_var"]) + post.var

    def draws(key, theta, post: ClassPosterior, num: int) -> Array:
        """``num`` prototype sets ``(num, C, d)`` from the class posterior."""
        eps = jax.random.normal(key, (num, *post.mean.shape), post.mean.dtype)
        return post.mean + jnp.sqrt(post.var) * eps

    def task_loss(theta, key, x_s, y_s, m_s, x_q, y_q):
        post = posterior_of(theta, x_s, y_s, m_s)
        h_q = embed(theta["body"], x_q)
        y_q = y_q.astype(jnp.int32)
        if cfg.predictive == "exact":
            log_var = jnp.log(predictive_var(theta, post))
            logp = jax.nn.log_softmax(prototype_logits(h_q, post.mean, log_var))
            return -jnp.mean(jnp.take_along_axis(logp, y_q[:, None], -1))
        log_noise = jnp.broadcast_to(theta["log_noise_var"], post.mean.shape)

        def one(mu):
            logp = jax.nn.log_softmax(prototype_logits(h_q, mu, log_noise))
            return jnp.take_along_axis(logp, y_q[:, None], -1)[:, 0]

        ll = jax.vmap(one)(draws(key, theta, post, cfg.train_samples))  # (S, Q)
        return -jnp.mean(log_mean_exp(ll))

    def loss_fn(theta, key, batch: TaskBatch):
        return task_mean(task_loss, theta, batch, key)

    def apply(body, phi, x):
        """Logits ``(N, C)`` of one sample φ = [μ, log s²] with the embedding's ``body``."""
        return prototype_logits(embed(body, x), phi[:half].reshape(num_classes, dim),
                                phi[half:].reshape(num_classes, dim))  # fmt: skip

    def adapt_one(key, theta, x, y, mask, num_samples):
        post = posterior_of(theta, x, y, mask)
        if cfg.predictive == "exact":
            log_var = jnp.log(predictive_var(theta, post))
            return jnp.concatenate([post.mean.reshape(-1), log_var.reshape(-1)])[None]
        mus = draws(key, theta, post, num_samples).reshape(num_samples, half)
        log_noise = jnp.broadcast_to(theta["log_noise_var"], (num_samples, num_classes, dim))
        return jnp.concatenate([mus, log_noise.reshape(num_samples, half)], -1)

    def adapt(key, state: MetaState, support: Support, num_samples: int = 1):
        theta = state.theta
        keys = jax.random.split(key, support.x.shape[0])
        phi = jax.vmap(adapt_one, in_axes=(0, None, 0, 0, 0, None))(
            keys, theta, support.x, support.y, support.mask, num_samples
        )
        t, s = phi.shape[:2]
        return TaskPosterior(phi, jnp.full((t, s), -math.log(s), phi.dtype),
                             jnp.ones((t, s), phi.dtype), apply, "categorical", name,
                             params=theta["body"])  # fmt: skip

    def class_posteriors(state: MetaState, support: Support) -> ClassPosterior:
        """Every task's class posterior, leaves ``(T, C, ...)``."""
        return jax.vmap(posterior_of, in_axes=(None, 0, 0, 0))(
            state.theta, support.x, support.y, support.mask
        )

    extras = {
        "class_posterior": class_posteriors,
        "embed": lambda state, x: embed(state.theta["body"], x),
    }
    return Method(name, init, gradient_step(loss_fn, optimizer),
                  checked_adapt(adapt, **model_dims(model)), cfg, extras=extras)  # fmt: skip
