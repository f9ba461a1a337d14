"""The interface every inference method shares.

A method is a bundle of pure functions (the blackjax/optax shape):

    init(rng_key) -> MetaState
    meta_step(rng_key, state, batch: TaskBatch) -> (MetaState, Info)
    adapt(rng_key, state, support: Support, num_samples) -> TaskPosterior

The caller jits; :func:`bayesmeta.inference.train.train` runs ``meta_step`` in chunks inside
one ``lax.scan``. Tasks and samples are vmapped inside the methods.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import optax

from bayesmeta.inference.objectives import log_mean_exp  # noqa: F401  (re-exported)
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support, TaskBatch

Array = jax.Array


class MetaState(NamedTuple):
    """Meta-training state: meta-parameters θ (a dict pytree), optimiser state, step count."""

    theta: Any
    opt_state: Any
    step: Array


class Info(NamedTuple):
    """Per-step diagnostics: the meta-loss and the gradient norm."""

    loss: Array
    grad_norm: Array


class Method(NamedTuple):
    """An inference method: ``init``, ``meta_step``, ``adapt``, its configuration, and extras
    (method-specific pure functions, e.g. ABML's ``variational_params``)."""

    name: str
    init: Callable[[Array], MetaState]
    meta_step: Callable[[Array, MetaState, TaskBatch], tuple[MetaState, Info]]
    adapt: Callable[[Array, MetaState, Support, int], TaskPosterior]
    config: dict
    extras: dict | None = None


def checked_adapt(
    adapt: Callable[..., TaskPosterior],
    *,
    dx: int,
    dy: int | None,
    num_classes: int | None,
) -> Callable[..., TaskPosterior]:
    """``adapt`` that first checks its support sets against the model's dimensions.

    Shapes always (also under ``jit``); values (finite inputs, labels in range, a mask in
    [0, 1]) when the arrays are concrete. A bad support raises
    :class:`~bayesmeta.tasks.io.TaskFileError` (a ``ValueError``) naming ``support.x``,
    ``support.y`` or ``support.mask`` instead of a JAX shape error deep inside, or a NaN.
    """
    from bayesmeta.tasks.io import validate_support

    classification = num_classes is not None

    def adapt_checked(key, state, support, *args, **kwargs):
        validate_support(
            support,
            dx=dx,
            dy=None if classification else dy,
            num_classes=num_classes,
            classification=classification,
        )
        return adapt(key, state, support, *args, **kwargs)

    adapt_checked.__doc__ = adapt.__doc__
    return adapt_checked


def model_dims(model) -> dict:
    """``dx``, ``dy`` and ``num_classes`` of a hierarchical model, for :func:`checked_adapt`."""
    cls = model.likelihood.classifier
    return {
        "dx": model.dx,
        "dy": None if cls else model.dy,
        "num_classes": model.num_classes if cls else None,
    }


def kl_to_prior(model, theta, m: jax.Array, log_s: jax.Array, eps: jax.Array) -> jax.Array:
    """KL(q ‖ p(φ | θ)) for a diagonal Gaussian ``q = N(m, diag s²)`` over φ ``(P,)``.

    Closed form where the model's prior is a diagonal Normal (``model.gaussian_prior``);
    otherwise the Monte Carlo estimate mean_r [log q(φ_r) − log p(φ_r | θ)] at
    ``φ_r = m + s ⊙ eps_r`` with the caller's standard-normal ``eps (R, P)``.
    """
    q = dist.Normal(m, jnp.exp(log_s)).to_event(1)
    if model.gaussian_prior:
        prior = dist.Normal(model.prior_loc(theta), jnp.exp(model.prior_log_scale(theta)))
        return dist.kl_divergence(q, prior.to_event(1))
    phis = m + jnp.exp(log_s) * eps
    log_q = jax.vmap(q.log_prob)(phis)
    log_p = jax.vmap(lambda ph: model.log_prior(theta, ph))(phis)
    return jnp.mean(log_q - log_p)


def make_optimizer(
    lr: float = 1e-3, clip: float | None = 10.0, decay_steps: int | None = None
) -> optax.GradientTransformation:
    """Adam with global-norm gradient clipping (the meta-optimiser of every method).

    With ``decay_steps`` the step size follows a cosine decay from ``lr`` to ``lr / 10``
    over that many steps, then stays there.
    """
    if not lr > 0:
        raise ValueError(f"lr: expected > 0, got {lr}")
    schedule = optax.cosine_decay_schedule(lr, int(decay_steps), alpha=0.1) if decay_steps else lr
    chain = [optax.clip_by_global_norm(clip)] if clip else []
    return optax.chain(*chain, optax.adam(schedule))


_BUILDER_PARAMETERS = """Parameters
----------
model : HierarchicalModel or NumPyroModel
    The hierarchical model (docs/models.md); what a method needs of it is said above.
config : {config}, optional
    The options (defaults if None); ``options`` replace single fields of it.
optimizer : optax.GradientTransformation, optional
    The meta-optimiser (any optax transformation); it replaces the default built from the
    config's ``lr``, ``lr_decay_steps`` and ``grad_clip``."""


def method_builder(config_class: type) -> Callable[[Callable[..., Method]], Callable[..., Method]]:
    """Decorator: ``build(model, cfg, optimizer) -> Method`` becomes the public builder

        name(model, config=None, *, optimizer=None, **options) -> Method

    that every method shares: ``cfg = config_class.make(config, **options)`` (typed, checked,
    single fields replaced), ``optimizer`` the config's default unless given. The builder's
    docstring is ``build``'s with the shared Parameters section after its first paragraph,
    and ``builder.config_class`` names the config."""

    def wrap(build: Callable[..., Method]) -> Callable[..., Method]:
        def builder(
            model: Any,
            config: Any = None,
            *,
            optimizer: optax.GradientTransformation | None = None,
            **options: Any,
        ) -> Method:
            cfg = config_class.make(config, **options)
            return build(model, cfg, cfg.default_optimizer() if optimizer is None else optimizer)

        head, _, rest = inspect.cleandoc(build.__doc__ or build.__name__).partition("\n\n")
        params = _BUILDER_PARAMETERS.format(config=config_class.__name__)
        builder.__doc__ = "\n\n".join(part for part in (head, params, rest) if part)
        builder.__name__, builder.__qualname__ = build.__name__, build.__qualname__
        builder.__module__ = build.__module__
        builder.config_class = config_class  # type: ignore[attr-defined]
        return builder

    return wrap


def gradient_step(
    loss_fn: Callable[[Any, Array, TaskBatch], Array],
    optimizer: optax.GradientTransformation,
) -> Callable[[Array, MetaState, TaskBatch], tuple[MetaState, Info]]:
    """``meta_step`` from a meta-loss ``loss_fn(theta, key, batch)``: one optimiser update."""

    def meta_step(key, state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state.theta, key, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.theta)
        theta = optax.apply_updates(state.theta, updates)
        return MetaState(theta, opt_state, state.step + 1), Info(loss, optax.tree.norm(grads))

    return meta_step


def masked_mean_count(mask: Array) -> Array:
    """Number of real points, at least 1 (so that empty masks never divide by zero)."""
    return jnp.maximum(jnp.sum(mask), 1.0)


def clip_update(update: Array, max_abs: float | None) -> Array:
    """Element-wise clip of an inner-loop update (keeps early meta-training stable)."""
    return update if max_abs is None else jnp.clip(update, -max_abs, max_abs)


INNER_RULES = ("gradient", "gauss-newton")


def gauss_newton_update(
    apply: Callable[[Array, Array], Array],
    phi: Array,
    x: Array,
    y: Array,
    mask: Array,
    precond: Array,
    damping: Array,
) -> Array:
    """One damped Gauss-Newton update of a Gaussian-likelihood network, solved in data space.

    With residuals r = f_φ(x) − y of the N real points, their Jacobian J = ∂f_φ(x)/∂φ
    ``(N·Dy, P)``, a diagonal preconditioner P and damping λ:

        Δφ = −P Jᵀ (J P Jᵀ + λ I)⁻¹ r  =  −(Jᵀ J + λ P⁻¹)⁻¹ Jᵀ r,

    the posterior-mean step of the model linearised at φ under the prior N(φ, P) and noise λ
    (a Levenberg–Marquardt step). The solve is (N·Dy)²: cheap for few-shot support sets, and
    exact where gradient steps need many iterations on badly conditioned tasks. Masked points
    get zero rows in J and r, so they add nothing.

    Returns Δφ ``(P,)`` (add it to ``phi``).
    """
    w = mask.astype(phi.dtype)[:, None]
    f, vjp = jax.vjp(lambda p: apply(p, x), phi)  # one forward pass for f and J
    r = ((f - y) * w).reshape(-1)
    rows = jnp.eye(r.shape[0], dtype=f.dtype).reshape(r.shape[0], *f.shape)
    jac = jax.vmap(lambda v: vjp(v)[0])(rows) * jnp.broadcast_to(w, f.shape).reshape(-1, 1)
    jp = jac * precond
    gram = jp @ jac.T + damping * jnp.eye(r.shape[0], dtype=phi.dtype)
    return -(jp.T @ jnp.linalg.solve(gram, r))
