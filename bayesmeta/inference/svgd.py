"""Stein variational gradient descent (Liu & Wang 2016) as a small reusable kernel.

M particles x_1..x_M of a target density p move along the kernelised Stein direction

    φ*(x_i) = 1/M Σ_j [ k(x_j, x_i) ∇ log p(x_j) + ∇_{x_j} k(x_j, x_i) ],
    x_i ← x_i + ε φ*(x_i),

with the RBF kernel k(x, x') = exp(−‖x − x'‖² / h). The bandwidth follows the median
heuristic h = med{‖x_i − x_j‖² : i < j} / log M (BMAML, Yoon et al. 2018), computed without a
gradient through it. The first term drives particles towards high density; the second
repels them from each other, so that for M → ∞ they approximate p rather than collapse to its
mode. With M = 1 the repulsion vanishes and SVGD is gradient ascent on log p.

Functions are pure and shape-polymorphic in the particle dimension D; everything is
vectorised over particles (the M × M kernel is one matrix product), so a step costs M score
evaluations plus O(M² D).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["SVGDState", "direction", "init", "median_bandwidth", "rbf_kernel", "run", "step"]


class SVGDState(NamedTuple):
    """Particles ``(M, D)`` and the number of steps taken."""

    particles: Array
    step: Array


def _check_particles(particles: Array) -> None:
    if particles.ndim != 2:
        raise ValueError(f"particles: expected shape (M, D), got {tuple(particles.shape)}")


def median_bandwidth(particles: Array) -> Array:
    """h = median of the squared pairwise distances (i < j) / log M, gradient stopped.

    For M = 1 (no pairs) h = 1; the kernel is then the constant 1 and repulsion vanishes.
    """
    _check_particles(particles)
    m = particles.shape[0]
    if m < 2:
        return jnp.ones((), particles.dtype)
    sq = _sq_dists(particles)
    i, j = jnp.triu_indices(m, k=1)
    med = jnp.median(sq[i, j])
    h = med / math.log(m)
    # Coincident particles give h = 0; any positive h is then equivalent (all distances are 0).
    return jax.lax.stop_gradient(jnp.where(h > 0, h, 1.0))


def _sq_dists(x: Array) -> Array:
    sq = jnp.sum(x**2, -1)
    return jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)


def rbf_kernel(particles: Array, bandwidth: Array | float | None = None) -> tuple[Array, Array]:
    """RBF kernel matrix ``K (M, M)`` and the repulsive term ``Σ_j ∇_{x_j} k(x_j, x_i)`` (M, D).

    ∇_{x_j} k(x_j, x_i) = (2/h) (x_i − x_j) k(x_j, x_i), so the repulsion on particle i is
    (2/h) (x_i Σ_j K_ij − Σ_j K_ij x_j).
    """
    _check_particles(particles)
    h = median_bandwidth(particles) if bandwidth is None else jnp.asarray(bandwidth)
    k = jnp.exp(-_sq_dists(particles) / h)
    repulsion = (2.0 / h) * (particles * jnp.sum(k, 1, keepdims=True) - k @ particles)
    return k, repulsion


def direction(particles: Array, scores: Array, bandwidth: Array | float | None = None) -> Array:
    """The SVGD direction φ*(x_i) ``(M, D)`` from particles and their scores ∇ log p(x_i)."""
    _check_particles(particles)
    if scores.shape != particles.shape:
        raise ValueError(
            f"scores: expected the particles' shape {tuple(particles.shape)}, "
            f"got {tuple(scores.shape)}"
        )
    k, repulsion = rbf_kernel(particles, bandwidth)
    return (k @ scores + repulsion) / particles.shape[0]


def init(particles: Array) -> SVGDState:
    """Start SVGD from ``particles (M, D)``."""
    _check_particles(particles)
    return SVGDState(jnp.asarray(particles), jnp.zeros((), jnp.int32))


StepSize = Array | float | Callable[[Array], Array]


def step(
    state: SVGDState,
    score_fn: Callable[[Array], Array],
    step_size: StepSize,
    bandwidth: Array | float | None = None,
    *,
    first_order: bool = False,
    transform: Callable[[Array], Array] | None = None,
) -> SVGDState:
    """One SVGD step, ``x ← x + transform(ε · φ*(x))``. ``score_fn(x (D,)) -> ∇ log p(x) (D,)``
    is vmapped over particles.

    ``step_size`` ε is a scalar, one value per coordinate ``(D,)`` (a diagonal
    preconditioner, e.g. a meta-learned one), or a function of the particles ``(M, D)``
    returning either (a step scaled by the current state, e.g. by a noise variance).
    ``first_order`` stops gradients through the direction φ* (a meta-learner's first-order
    approximation: ε and x keep theirs); ``transform`` post-processes the update (e.g. clips
    it element-wise).
    """
    x = state.particles
    d = direction(x, jax.vmap(score_fn)(x), bandwidth)
    if first_order:
        d = jax.lax.stop_gradient(d)
    update = (step_size(x) if callable(step_size) else step_size) * d
    if transform is not None:
        update = transform(update)
    return SVGDState(x + update, state.step + 1)


def run(
    particles: Array,
    score_fn: Callable[[Array], Array],
    step_size: StepSize,
    num_steps: int,
    bandwidth: Array | float | None = None,
    *,
    first_order: bool = False,
    transform: Callable[[Array], Array] | None = None,
) -> Array:
    """``num_steps`` SVGD steps (:func:`step`, with its options) from ``particles`` inside one
    ``lax.scan``; the final particles."""
    if num_steps < 0:
        raise ValueError(f"num_steps: expected >= 0, got {num_steps}")

    def body(state, _):
        new = step(state, score_fn, step_size, bandwidth, first_order=first_order,
                   transform=transform)  # fmt: skip
        return new, None

    state, _ = jax.lax.scan(body, init(particles), None, length=num_steps)
    return state.particles
