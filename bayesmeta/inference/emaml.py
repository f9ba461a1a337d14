"""EMAML: an ensemble of independently meta-trained MAML models (Yoon et al. 2018's baseline).

M copies of MAML (:mod:`bayesmeta.inference.maml`) start from different initialisations and
are meta-trained side by side on the same task batches, each with its own optimiser state and
its own random stream; nothing couples them. For a new task each adapts with its own inner
loop, and the task posterior is the M adapted particles φ_1..φ_M, equally weighted, each with
its own learned noise σ_y,m:

    p(y | x, D_tr) ≈ (1/M) Σ_m N(y | f_φm(x), σ_y,m²).

Particles are vmapped (one compiled step trains all M), never looped over in Python.
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
    method_builder,
    model_dims,
)
from bayesmeta.inference.config import ConfigError, check_positive_int
from bayesmeta.inference.maml import MAMLConfig, maml
from bayesmeta.model import HierarchicalModel
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support, TaskBatch

__all__ = ["EMAMLConfig", "emaml"]

_PER_PARTICLE = MetaState(0, 0, None)


@dataclasses.dataclass(frozen=True)
class EMAMLConfig(MAMLConfig):
    """Options of EMAML: :class:`~bayesmeta.inference.maml.MAMLConfig`'s (every member uses
    the same) and the ensemble's.

    Attributes
    ----------
    num_particles : int
        M, the ensemble size.
    init_spread : float
        For a NumPyro model (whose ``init_theta`` is the same for every key): each member's
        θ starts at it plus N(0, init_spread²) noise in unconstrained space, so that the
        members differ. The built-in model draws a network initialisation per member instead.
    """

    METHOD: ClassVar[str] = "emaml"

    num_particles: int = 10
    init_spread: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self, "num_particles")
        if not (isinstance(self.init_spread, int | float) and self.init_spread >= 0):
            raise ConfigError(f"emaml: init_spread: expected >= 0, got {self.init_spread!r}")


@method_builder(EMAMLConfig)
def emaml(
    model: HierarchicalModel, cfg: EMAMLConfig, optimizer: optax.GradientTransformation
) -> Method:
    """Build EMAML: ``num_particles`` MAML models trained independently.

    Notes
    -----
    The state is one :class:`MetaState` whose ``theta`` and ``opt_state`` leaves carry a
    leading particle axis ``M``; ``step`` is shared.
    """
    member = {k: getattr(cfg, k) for k in MAMLConfig.field_names()}
    base = maml(model, MAMLConfig(**member), optimizer=optimizer)
    m = cfg.num_particles
    init_spread = cfg.init_spread

    def init_one(key):
        state = base.init(key)
        if not model.likelihood.generic or init_spread == 0:
            return state
        leaves, tree = jax.tree_util.tree_flatten({k: state.theta[k] for k in model.point_keys})
        keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
        noisy = [
            a + init_spread * jax.random.normal(k, a.shape, a.dtype)
            for a, k in zip(leaves, keys, strict=True)
        ]
        theta = {**state.theta, **jax.tree_util.tree_unflatten(tree, noisy)}
        return state._replace(theta=theta)

    def init(key):
        states = jax.vmap(init_one)(jax.random.split(key, m))
        return MetaState(states.theta, states.opt_state, jnp.zeros((), jnp.int32))

    def meta_step(key, state: MetaState, batch: TaskBatch):
        keys = jax.random.split(key, m)
        new, info = jax.vmap(
            base.meta_step,
            in_axes=(0, _PER_PARTICLE, None),
            out_axes=(
                _PER_PARTICLE,
                0,
            ),
        )(keys, state, batch)
        return new, Info(jnp.mean(info.loss), jnp.sqrt(jnp.sum(info.grad_norm**2)))

    def adapt(key, state: MetaState, support: Support, num_samples: int = m):
        del num_samples  # the posterior is the M adapted particles
        keys = jax.random.split(key, m)
        posts = jax.vmap(base.adapt, in_axes=(0, _PER_PARTICLE, None))(keys, state, support)
        phi = jnp.swapaxes(posts.phi[:, :, 0], 0, 1)  # (M, T, 1, P) -> (T, M, P)
        noise = jnp.swapaxes(posts.noise_std[:, :, 0], 0, 1)
        lw = jnp.full(noise.shape, -math.log(m), phi.dtype)
        if model.likelihood.generic:  # each particle has its own θ
            t = phi.shape[0]  # θ leaves (M, ...) -> (T, M, ...)
            theta = jax.tree_util.tree_map(
                lambda a: jnp.broadcast_to(a[None], (t, *a.shape)), posts.params
            )
            return model.posterior(phi, theta, "emaml", per_sample=True)
        return TaskPosterior(phi, lw, noise, model.apply, model.likelihood, "emaml")

    return Method("emaml", init, meta_step, checked_adapt(adapt, **model_dims(model)), cfg)
