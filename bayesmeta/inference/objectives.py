"""Meta-objectives shared by the methods, as pure functions of per-sample log-likelihoods.

Every method scores its task posterior on the query set D_ts = {(x_j, y_j)}, j = 1..Q, from
``ll[s, j] = log p(y_j | x_j, φ_s)`` for S posterior samples φ_s; the functions here are those
scores, written once so that ABML, BMAML, PLATIPUS and the neural process mean the same thing
by the same name (``outer="predictive"``, ``"elbo"``, ``"moment"``, ``"chaser"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def log_mean_exp(log_terms: Array) -> Array:
    """``log (1/S) Σ_s exp(log_terms[s])`` over the leading (sample) axis.

    How an S-sample Monte Carlo mixture scores a point: log p̂ = log (1/S) Σ_s p(y | φ_s). By
    Jensen it is biased low, E log p̂ ≈ log p − Var[p_s] / (2 S p²), more so the wider the
    components are spread, so training on it with few samples shrinks the predictive's spread.
    (Nowozin's 2018 jackknife correction removes most of that bias as an estimate, but as a
    training objective it rewards one sample dominating each point; docs/methods.md.)
    """
    return jax.nn.logsumexp(log_terms, axis=0) - jnp.log(log_terms.shape[0])


def predictive_nll(ll: Array) -> Array:
    """``outer="predictive"`` (ML-PIP): the query set's mean negative log predictive of the
    S-sample mixture, −(1/Q) Σ_j log (1/S) Σ_s p(y_j | φ_s), from ``ll (S, Q)``."""
    return -jnp.mean(log_mean_exp(ll))


def expected_nll(ll: Array) -> Array:
    """The ELBO's data term per query point, −(1/Q) E_q Σ_j log p(y_j | φ), from ``ll (S, Q)``."""
    return -jnp.mean(jnp.sum(ll, axis=1)) / ll.shape[1]


def kl_penalised(data_nll: Array, kl: Array, kl_weight: float, num_points: int) -> Array:
    """A per-point data loss plus β·KL spread over the Q query points: ``data_nll + β KL / Q``.

    With :func:`expected_nll` it is ``outer="elbo"``'s negative ELBO per point; with
    :func:`predictive_nll` it is PLATIPUS's predictive objective with its KL term.
    """
    return data_nll + kl_weight * kl / num_points


def moment_nll(f: Array, y: Array, noise_var: Array) -> Array:
    """``outer="moment"``: the query points' mean Gaussian NLL under the samples' moments,
    y_j ~ N(mean_s f_s(x_j), var_s f_s(x_j) + σ_y²), from outputs ``f (S, Q, Dy)``."""
    var = jnp.var(f, axis=0, ddof=1) + noise_var
    z2 = (y - jnp.mean(f, axis=0)) ** 2 / var
    return jnp.mean(jnp.sum(0.5 * (z2 + jnp.log(2 * math.pi * var)), -1))


def chaser_loss(chaser: Array, leader: Array) -> Array:
    """``outer="chaser"`` (BMAML): the mean squared distance from the chaser particles (n SVGD
    steps on D_tr) to the leader (s more on D_tr ∪ D_ts), no gradient through the leader."""
    return jnp.sum((chaser - jax.lax.stop_gradient(leader)) ** 2) / chaser.size


def task_mean(task_loss: Callable[..., Array], theta, batch, key: Array | None = None) -> Array:
    """The mean of ``task_loss`` over a task batch, vmapped: ``task_loss(theta, *task)``, or
    ``task_loss(theta, key_t, *task)`` with one key per task split from ``key``."""
    if key is None:
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, *[0] * len(batch)))(theta, *batch))
    keys = jax.random.split(key, batch.num_tasks)
    axes = (None, 0, *[0] * len(batch))
    return jnp.mean(jax.vmap(task_loss, in_axes=axes)(theta, keys, *batch))


__all__ = [
    "chaser_loss",
    "expected_nll",
    "kl_penalised",
    "log_mean_exp",
    "moment_nll",
    "predictive_nll",
    "task_mean",
]
