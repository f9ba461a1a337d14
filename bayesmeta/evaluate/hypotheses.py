"""Which hypotheses a posterior covers, for ambiguous families (sine-or-line).

A posterior sample's function f on a grid x_1..x_G is assigned to the hypothesis whose
best least-squares fit leaves the smaller residual:

    line:  min_{a,c}   Σ_g (f(x_g) − a x_g − c)²
    sine:  min_{u,v}   Σ_g (f(x_g) − u sin x_g − v cos x_g)²     (A sin(x + b) = u sin x + v cos x)

Both are linear least squares (projections onto two-dimensional function spaces), so
labelling S samples of T tasks is two matrix products. The reference posterior of
sine-or-line carries the hypothesis in its nodes (ψ₀ = 1 for a line), so its mass on each
hypothesis is exact.

Hypothesis coverage (PLATIPUS's ambiguity test): among tasks whose reference posterior gives
each hypothesis at least ``min_mass`` (0.2), the fraction whose samples include both
hypotheses, a hypothesis counting as included when at least ``min_fraction`` of the
(weighted) samples resemble it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.posterior import TaskPosterior

__all__ = [
    "classify_sine_line",
    "hypothesis_coverage",
    "line_fraction",
    "reference_line_mass",
]


def _projector(basis: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(basis)
    return q


def classify_sine_line(f: jax.Array, x: jax.Array) -> jax.Array:
    """1.0 where the function values ``f (..., G)`` on ``x (G,)`` are closer to a line than to
    a unit-frequency sine, else 0.0."""
    x = np.asarray(x, np.float64).reshape(-1)
    if f.shape[-1] != x.shape[0]:
        raise ValueError(f"f: expected last axis of length G={x.shape[0]}, got {tuple(f.shape)}")
    q_line = jnp.asarray(_projector(np.stack([x, np.ones_like(x)], 1)), f.dtype)
    q_sine = jnp.asarray(_projector(np.stack([np.sin(x), np.cos(x)], 1)), f.dtype)

    def resid(q):
        return jnp.sum(f**2, -1) - jnp.sum((f @ q) ** 2, -1)

    return (resid(q_line) < resid(q_sine)).astype(f.dtype)


def _grid(x_range: tuple[float, float], num: int, t: int) -> jax.Array:
    g = jnp.linspace(x_range[0], x_range[1], num)
    return jnp.broadcast_to(g[None, :, None], (t, num, 1))


def line_fraction(
    post: TaskPosterior, x_range: tuple[float, float] = (-5.0, 5.0), num_grid: int = 100
) -> jax.Array:
    """Weighted fraction of each task's samples that resemble a line, ``(T,)``."""
    if not post.likelihood.gaussian:
        raise ValueError(f"post: expected a regression posterior, got {post.likelihood!r}")
    xg = _grid(x_range, num_grid, post.num_tasks).astype(post.phi.dtype)
    f = post.outputs(xg)[..., 0]  # (T, S, G)
    labels = classify_sine_line(f, xg[0, :, 0])
    return jnp.sum(jnp.exp(post.log_weights) * labels, -1)


def reference_line_mass(ref: TaskPosterior) -> jax.Array:
    """The reference posterior's mass on the line hypothesis, ``(T,)`` (nodes: is_line, ·, ·)."""
    if ref.phi.shape[-1] != 3:
        raise ValueError(
            f"ref: expected the sine-or-line reference (nodes of length 3), got {ref.phi.shape}"
        )
    return jnp.sum(jnp.exp(ref.log_weights) * ref.phi[..., 0], -1)


def hypothesis_coverage(
    post: TaskPosterior,
    ref: TaskPosterior,
    *,
    min_mass: float = 0.2,
    min_fraction: float = 0.05,
    x_range: tuple[float, float] = (-5.0, 5.0),
) -> dict:
    """Hypothesis coverage of ``post`` against the sine-or-line reference ``ref`` (same tasks).

    Returns ``coverage`` (NaN when no task is ambiguous), ``n_ambiguous``, and per task
    ``line_fraction`` (the method's) and ``ref_line_mass``.
    """
    if post.num_tasks != ref.num_tasks:
        raise ValueError(
            f"post, ref: expected the same tasks, got {post.num_tasks} and {ref.num_tasks}"
        )
    lf = np.asarray(line_fraction(post, x_range))
    rm = np.asarray(reference_line_mass(ref))
    ambiguous = (rm >= min_mass) & (1.0 - rm >= min_mass)
    both = (lf >= min_fraction) & (1.0 - lf >= min_fraction)
    n = int(ambiguous.sum())
    return {
        "coverage": float(both[ambiguous].mean()) if n else float("nan"),
        "n_ambiguous": n,
        "line_fraction": lf.tolist(),
        "ref_line_mass": rm.tolist(),
    }
