"""Task families and episodic batches.

A *task family* is a distribution over regression (or classification) tasks with a known
generative process, so that an exact Bayes reference exists:

    ψ_i ~ p(ψ)              (task parameters, e.g. amplitude and phase)
    x_ij ~ U[x_low, x_high]
    y_ij = f(x_ij; ψ_i) + ε,  ε ~ N(0, noise(ψ_i)²)

Episodes are padded to a fixed support capacity ``k_max`` with a mask, so that batches with
support sizes drawn from ``[k_min, k_max]`` share one shape and compile once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class TaskBatch(NamedTuple):
    """A batch of T episodes.

    Attributes
    ----------
    x_support, y_support : (T, K, Dx), (T, K, Dy)
        Support (training) set, padded to capacity K.
    mask_support : (T, K)
        1.0 where the support point is real, 0.0 where it is padding.
    x_query, y_query : (T, Q, Dx), (T, Q, Dy)
        Query (test) set of each task.
    """

    x_support: Array
    y_support: Array
    mask_support: Array
    x_query: Array
    y_query: Array

    @property
    def num_tasks(self) -> int:
        return self.x_support.shape[0]


class Support(NamedTuple):
    """The support sets a method adapts to: ``x (T,K,Dx)``, ``y (T,K,Dy)``, ``mask (T,K)``."""

    x: Array
    y: Array
    mask: Array


def support_of(batch: TaskBatch) -> Support:
    return Support(batch.x_support, batch.y_support, batch.mask_support)


class TaskSet(dict):
    """A task set (docs/formats.md) that knows which units it is in: ``"fitted"`` (the
    standardised units a data fit works in) or ``"data"`` (the data's own), so that an
    evaluation cannot read one as the other. A plain ``dict`` otherwise."""

    def __init__(self, arrays=(), units: str | None = None):
        super().__init__(arrays)
        self.units = units


@dataclass(frozen=True)
class TaskFamily:
    """A synthetic task family with a known task prior.

    Parameters
    ----------
    name : str
    dx, dy : int
        Input and output dimensions.
    sample_params : (key, n) -> (n, P_task)
        Draws task parameters ψ from the family's prior.
    mean_fn : (ψ (P_task,), x (N, Dx)) -> (N, Dy)
        Noise-free function of a task.
    noise_fn : ψ (P_task,) -> scalar
        Observation noise standard deviation of a task.
    x_range : (low, high)
        Inputs are uniform on this box.
    reference_grid : () -> (grid (G, P_task), log_prior (G,)) or None
        Quadrature grid over ψ with normalised log prior masses; used by the ``reference``
        method for the exact posterior predictive.
    gaussian_prior : (mean (P_task,), std (P_task,), noise) or None
        Set for linear-Gaussian families, whose posterior the ``reference`` method computes
        in closed form (features ``[x, 1]``).
    likelihood : {"gaussian", "categorical"}
        For ``"categorical"``, ``mean_fn`` returns logits ``(N, C)`` and labels are ``(N,)``
        integers drawn from ``softmax(logits)``; ``noise_fn`` is unused.
    num_classes : int, optional
        C (categorical families).
    sample_support_x : (key, ψ, K) -> (K, Dx), optional
        Where a task's support inputs come from when not uniform on ``x_range`` (e.g. inside
        the positive region); query inputs are always uniform.
    support_x_logpdf : (ψ, x (K, Dx)) -> (K,), optional
        log p(x | ψ) of support inputs drawn by ``sample_support_x``: where they lie says
        something about ψ, so the exact (generative) reference multiplies it in.
    noise_x_fn : (ψ (P_task,), x (N, Dx)) -> (N, Dy), optional
        Heteroscedastic families: the noise standard deviation at each input, used instead of
        ``noise_fn`` (which may then be ``None``); the exact reference weighs each point by it
        and returns a predictive whose noise follows x.
    sample_episode : (key, num_tasks, k_range, num_query) -> (TaskBatch, params), optional
        For families drawn from a finite data set (glyphs, grouped real data) rather than a
        generative ψ: draws a whole jittable episodic batch and per-task identifiers
        ``(T, P_task)``. :func:`sample_batch` delegates to it; ``mean_fn`` and ``noise_fn``
        may then be ``None`` and no exact reference exists.
    """

    name: str
    dx: int
    dy: int
    sample_params: Callable[[Array, int], Array]
    mean_fn: Callable[[Array, Array], Array] | None
    noise_fn: Callable[[Array], Array] | None
    x_range: tuple[float, float]
    reference_grid: Callable[[], tuple[Array, Array]] | None = None
    gaussian_prior: tuple[Array, Array, float] | None = None
    likelihood: str = "gaussian"
    num_classes: int | None = None
    sample_support_x: Callable[[Array, Array, int], Array] | None = None
    support_x_logpdf: Callable[[Array, Array], Array] | None = None
    noise_x_fn: Callable[[Array, Array], Array] | None = None
    sample_episode: Callable[[Array, int, tuple[int, int], int], tuple[TaskBatch, Array]] | None = (
        None
    )

    def __post_init__(self):
        from bayesmeta.likelihoods import as_likelihood

        likelihood = as_likelihood(self.likelihood, ("gaussian", "categorical"))
        object.__setattr__(self, "likelihood", likelihood)

    def sample_x(self, key: Array, shape: tuple[int, ...]) -> Array:
        lo, hi = self.x_range
        return jax.random.uniform(key, (*shape, self.dx), minval=lo, maxval=hi)

    def sample_y(self, key: Array, params: Array, x: Array) -> Array:
        """Outputs for one task: ``params (P_task,)``, ``x (N, Dx)`` -> ``(N, Dy)`` (noisy
        regression targets) or ``(N,)`` int32 labels (categorical)."""
        f = self.mean_fn(params, x)
        if self.likelihood.classifier:
            return jax.random.categorical(key, f, axis=-1).astype(jnp.int32)
        noise = self.noise_fn(params) if self.noise_x_fn is None else self.noise_x_fn(params, x)
        return f + noise * jax.random.normal(key, f.shape)


def sample_batch(
    family: TaskFamily,
    key: Array,
    num_tasks: int,
    k_range: tuple[int, int],
    num_query: int,
    k_power: float = 0.0,
) -> tuple[TaskBatch, Array]:
    """Draw an episodic batch; jittable (all sizes static).

    Each task's support size k on ``k_range = (k_min, k_max)`` has p(k) ∝ k^(−k_power)
    (uniform for 0); support sets are padded to ``k_max`` and masked. Returns the batch and
    the task parameters ``(T, P_task)``.
    """
    if family.sample_episode is not None:
        if k_power != 0:
            raise ValueError(
                f"k_power: family {family.name!r} draws its own episodes (sample_episode), "
                f"so only uniform support sizes (k_power=0) are supported, got {k_power}"
            )
        return family.sample_episode(key, num_tasks, k_range, num_query)
    k_min, k_max = k_range
    k_params, k_x, k_y, k_k = jax.random.split(key, 4)
    params = family.sample_params(k_params, num_tasks)
    x = family.sample_x(k_x, (num_tasks, k_max + num_query))
    if family.sample_support_x is not None:
        xs = jax.vmap(family.sample_support_x, in_axes=(0, 0, None))(
            jax.random.split(jax.random.fold_in(k_x, 1), num_tasks), params, k_max
        )
        x = jnp.concatenate([xs, x[:, k_max:]], axis=1)
    y = jax.vmap(family.sample_y)(jax.random.split(k_y, num_tasks), params, x)
    return split_episode(k_k, x, y, k_min, k_max, k_power), params


def split_episode(
    key: Array, x: Array, y: Array, k_min: int, k_max: int, k_power: float = 0.0
) -> TaskBatch:
    """A batch from ``k_max + Q`` points per task: the first ``k_max`` are the support set,
    of which the first k per task are real (``mask_support``), the rest the query set.

    k is uniform on {k_min..k_max} for ``k_power = 0``; otherwise p(k) ∝ k^(−k_power), which
    for ``k_power > 0`` trains more on the small support sets where a posterior is widest.
    """
    if not math.isfinite(k_power):
        raise ValueError(f"k_power: expected a finite number, got {k_power!r}")
    if k_power == 0:
        k = jax.random.randint(key, (x.shape[0],), k_min, k_max + 1)
    else:
        ks = jnp.arange(k_min, k_max + 1)
        logits = -k_power * jnp.log(ks.astype(jnp.float32))
        k = ks[jax.random.categorical(key, logits, shape=(x.shape[0],))]
    mask = (jnp.arange(k_max)[None, :] < k[:, None]).astype(x.dtype)
    return TaskBatch(
        x_support=x[:, :k_max],
        y_support=y[:, :k_max],
        mask_support=mask,
        x_query=x[:, k_max:],
        y_query=y[:, k_max:],
    )


def finite_pool(family: TaskFamily, num_tasks: int, seed: int = 0) -> TaskFamily:
    """``family`` restricted to a fixed pool of ``num_tasks`` tasks (BMAML's setting).

    The pool's parameters ψ_1..ψ_N are drawn once from ``family`` with ``PRNGKey(seed)``;
    the returned family samples uniformly from the pool (inputs and noise stay fresh). Use it
    for meta-training only: held-out tasks come from ``family`` itself.
    """
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks: expected a positive integer, got {num_tasks!r}")
    pool = family.sample_params(jax.random.PRNGKey(seed), num_tasks)

    def sample_params(key, n):
        return pool[jax.random.randint(key, (n,), 0, num_tasks)]

    return replace(family, name=f"{family.name}-pool{num_tasks}", sample_params=sample_params)


def make_task_set(
    family: TaskFamily, key: Array, num_tasks: int, k: int, num_query: int
) -> dict[str, Array]:
    """A held-out task set in the task-file layout of DESIGN.md (support size exactly ``k``)."""
    batch, params = sample_batch(family, key, num_tasks, (k, k), num_query)
    return {
        "x_support": batch.x_support,
        "y_support": batch.y_support,
        "x_query": batch.x_query,
        "y_query": batch.y_query,
        "task_params": params,
    }


def padded_support(tasks: dict, k_max: int):
    """Support sets padded to ``k_max`` with a mask, so that every K shares one compilation."""
    x, y = jnp.asarray(tasks["x_support"]), jnp.asarray(tasks["y_support"])
    t, k = x.shape[:2]
    pad = max(k_max - k, 0)
    mask = jnp.concatenate([jnp.ones((t, k)), jnp.zeros((t, pad))], axis=1)
    x = jnp.concatenate([x, jnp.zeros((t, pad, *x.shape[2:]), x.dtype)], axis=1)
    y = jnp.concatenate([y, jnp.zeros((t, pad, *y.shape[2:]), y.dtype)], axis=1)
    return Support(x, y, mask)
