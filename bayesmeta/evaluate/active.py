"""Active learning over any method's task posterior (DESIGN.md §3).

Acquisition functions score a pool of candidate inputs under a
:class:`~bayesmeta.posterior.TaskPosterior` (higher = more informative); the loop reveals the
best pool point's label, writes it into the next free slot of a padded, masked support set
and re-adapts with ``method.adapt`` — never re-meta-training and never recompiling, because
the support set has a fixed capacity from the start.

Every acquisition has the signature ``fn(key, posterior, x_pool) -> scores (T, P)`` and is
pure and jittable. With the predictive mixture ``p(y|x) = Σ_s w_s p(y | f_s(x), σ_s)``:

- ``variance``: total predictive variance ``Σ_d [Σ_s w_s (f_sd − m_d)² + Σ_s w_s σ_s²]``
  (noise included); classification ``Σ_c Σ_s w_s (p_sc − p̄_c)²``.
- ``entropy``: ``H[p(y|x)]``; exact for classification, ``−Σ_c p̄_c log p̄_c``.
- ``bald``: mutual information ``I(y; φ | x) = H[p(y|x)] − Σ_s w_s H[p(y|x, φ_s)]``, with
  ``H[N(f, σ² I_D)] = ½ D log(2πe σ²)``.
- ``random``: uniform scores from the key.

Classification scores are exact; the regression entropy and BALD are Monte Carlo estimates
(:func:`bald`), ``variance`` is exact.

A notebook user drives the loop by hand with :meth:`bayesmeta.fitted.Fitted.active`
(:class:`~bayesmeta.evaluate.loop.ActiveLoop`: ``suggest``, ``tell``, ``scores``, ``plot``),
which is these pieces for one task (docs/active.md, "Driving the loop by hand")::

    adapt = jax.jit(method.adapt, static_argnums=3)
    state = init_active(support, x_pool, capacity=K + 10)
    post = adapt(k1, meta_state, state.support, 100)
    idx = propose(k2, post, x_pool, state, "bald")               # (T, 1) pool indices
    y_new = ask_a_person(x_pool[jnp.arange(T)[:, None], idx])    # (T, 1, Dy)
    state = label(state, x_pool, idx, y_new)
    post = adapt(k3, meta_state, state.support, 100)   # same shapes: no recompilation

:func:`run_active` runs the whole loop, for all tasks at once, inside one jitted
``lax.scan`` over queries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp, xlogy

from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support

Array = jax.Array
Acquisition = Callable[[Array, TaskPosterior, Array], Array]

__all__ = [
    "ACQUISITIONS",
    "ActiveResult",
    "ActiveState",
    "bald",
    "entropy",
    "get_acquisition",
    "init_active",
    "label",
    "learning_curve",
    "paired_difference",
    "propose",
    "random",
    "reveal",
    "run_active",
    "select_top",
    "variance",
]

DEFAULT_NUM_DRAWS = 64
DEFAULT_MAX_COMPONENTS = 1024
# Elements of the largest intermediate array per chunk (tasks or pool points); bounds memory
# for grid posteriors with S ~ 1e4.
_CHUNK_ELEMENTS = 1 << 22


def _is_tracer(*xs: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


def _check_pool(posterior: TaskPosterior, x_pool: Array) -> None:
    shape = tuple(jnp.shape(x_pool))
    if len(shape) != 3 or shape[0] != posterior.num_tasks or shape[1] < 1:
        raise ValueError(
            f"x_pool: expected shape (T, P, Dx) with T={posterior.num_tasks} and P >= 1, "
            f"got {shape}"
        )


def _map_tasks(fn: Callable, posterior: TaskPosterior, args: tuple, per_task: int) -> Array:
    """``fn(phi, lw, sd, *args)`` for each task, in chunks of tasks bounded in memory."""
    t = posterior.num_tasks
    batch = max(1, min(t, _CHUNK_ELEMENTS // max(1, per_task)))
    return jax.lax.map(
        lambda a: fn(*a),
        (posterior.phi, posterior.log_weights, posterior.noise_std, *args),
        batch_size=batch,
    )


def _task_outputs(posterior: TaskPosterior, phi: Array, x: Array) -> Array:
    f = posterior.bound_apply()
    return jax.vmap(lambda p: f(p, x))(phi)  # (S, P, Dout)


def _out_width(posterior: TaskPosterior, x_pool: Array) -> int:
    out = jax.eval_shape(posterior.bound_apply(), posterior.phi[0, 0], x_pool[0])
    return int(out.shape[-1])


# -- acquisitions (jitted kernels: repeated eager calls reuse one compilation) --------------------
@jax.jit
def variance(key: Array, posterior: TaskPosterior, x_pool: Array) -> Array:
    """Total predictive variance of each pool point, ``(T, P)``.

    Regression: ``Σ_d Var[y_d | x] = Σ_d [Σ_s w_s (f_sd(x) − m_d(x))² + Σ_s w_s σ_s²]``, the
    variance of the mixture (observation noise included). Classification: the summed variance
    of the class probabilities over the posterior, ``Σ_c Σ_s w_s (p_sc(x) − p̄_c(x))²``.
    ``key`` is unused (the value is exact).
    """
    del key
    _check_pool(posterior, x_pool)
    if posterior.likelihood.generic:  # the mixture's variance under the model's likelihood
        from bayesmeta.posterior import _moments

        s = posterior.num_samples
        batch = max(1, min(posterior.num_tasks, _CHUNK_ELEMENTS // max(1, s * x_pool.shape[1])))
        return jnp.sum(_moments(posterior, x_pool, batch)[1], -1)
    s, p = posterior.phi.shape[1], x_pool.shape[1]
    width = _out_width(posterior, x_pool)

    def one(phi, lw, sd, x):
        f = _task_outputs(posterior, phi, x)  # (S, P, Dout)
        w = jnp.exp(lw)
        if posterior.likelihood.classifier:
            f = jax.nn.softmax(f, -1)
        m = jnp.einsum("s,spd->pd", w, f)
        spread = jnp.einsum("s,spd->p", w, (f - m) ** 2)
        if posterior.likelihood.classifier:
            return spread
        return spread + width * jnp.sum(w * sd**2)

    return _map_tasks(one, posterior, (x_pool,), s * p * width)


def _systematic(key: Array, log_weights: Array, num: int) -> Array:
    """Systematic resampling: ``num`` component indices with frequencies ≈ ``num · w_s``."""
    cdf = jnp.cumsum(jnp.exp(log_weights))
    u = (jnp.arange(num) + jax.random.uniform(key, ())) / num
    return jnp.clip(jnp.searchsorted(cdf, u * cdf[-1]), 0, log_weights.shape[0] - 1)


@partial(jax.jit, static_argnames=("num_draws", "max_components"))
def _gaussian_information(
    posterior: TaskPosterior,
    key: Array,
    x_pool: Array,
    num_draws: int,
    max_components: int,
) -> tuple[Array, Array]:
    """Monte Carlo mutual information and exact expected conditional entropy, each ``(T, P)``.

    ``I = Σ_s w_s KL(p_s ‖ p) ≈ (1/M) Σ_m [log p_{s_m}(y_m) − log p(y_m)]`` with components
    ``s_m`` by systematic resampling of the weights and ``y_m = f_{s_m}(x) + σ_{s_m} z_m``; the
    same ``(s_m, z_m)`` serve every pool point of a task (common random numbers), so the scores
    are smooth in x. The estimator is exactly 0 for a one-component posterior. Posteriors with
    S > ``max_components`` (quadrature grids) are first reduced to ``max_components`` equally
    weighted components by systematic resampling.
    """
    _check_pool(posterior, x_pool)
    t, s = posterior.phi.shape[:2]
    p = x_pool.shape[1]
    width = _out_width(posterior, x_pool)
    m_draws = int(num_draws)
    if m_draws < 1:
        raise ValueError(f"num_draws: expected a positive integer, got {num_draws!r}")
    if int(max_components) < 1:
        raise ValueError(f"max_components: expected a positive integer, got {max_components!r}")
    s_mix = min(s, int(max_components))
    point_batch = max(1, min(p, _CHUNK_ELEMENTS // max(1, m_draws * s_mix * width)))
    keys = jax.random.split(key, t)
    log2pi = math.log(2 * math.pi)

    def one(phi, lw, sd, x, k):
        k_res, k_comp, k_z = jax.random.split(k, 3)
        cond = 0.5 * width * jnp.sum(jnp.exp(lw) * jnp.log(2 * math.pi * math.e * sd**2))
        if s_mix < s:
            keep = _systematic(k_res, lw, s_mix)
            phi, sd = phi[keep], sd[keep]
            lw = jnp.full((s_mix,), -math.log(s_mix), lw.dtype)
        f = _task_outputs(posterior, phi, x)  # (S, P, D)
        comp = _systematic(k_comp, lw, m_draws)  # (M,)
        z = jax.random.normal(k_z, (m_draws, width), f.dtype)
        sd_m = sd[comp]  # (M,)
        # log p_{s_m}(y_m): independent of x
        log_own = -0.5 * jnp.sum(z**2, -1) - width * (jnp.log(sd_m) + 0.5 * log2pi)  # (M,)
        y = jnp.transpose(f[comp], (1, 0, 2)) + sd_m[None, :, None] * z[None]  # (P, M, D)

        def mix(f_pt, y_pt):  # f_pt (S, D), y_pt (M, D) -> log p(y_m), (M,)
            r = (y_pt[:, None, :] - f_pt[None]) / sd[None, :, None]  # (M, S, D)
            lp = -0.5 * jnp.sum(r**2, -1) - width * (jnp.log(sd) + 0.5 * log2pi)[None]
            return logsumexp(lw[None] + lp, axis=1)

        log_mix = jax.lax.map(
            lambda a: mix(*a), (jnp.transpose(f, (1, 0, 2)), y), batch_size=point_batch
        )  # (P, M)
        info = jnp.mean(log_own[None] - log_mix, axis=1)
        return info, jnp.broadcast_to(cond, info.shape)

    per_task = (s + s_mix) * p * width + point_batch * m_draws * s_mix * width
    return _map_tasks(one, posterior, (x_pool, keys), per_task)


@partial(jax.jit, static_argnames=("num_draws", "max_components"))
def _generic_information(
    posterior: TaskPosterior,
    key: Array,
    x_pool: Array,
    num_draws: int,
    max_components: int,
) -> tuple[Array, Array]:
    """Monte Carlo ``(I, E_s H[p_s])`` under a model's own likelihood, each ``(T, P)``.

    With ``s_m`` drawn by systematic resampling and ``y_m ~ p_{s_m}(y | x)`` (one draw per
    pool point): ``I ≈ (1/M) Σ_m [log p_{s_m}(y_m) − log p(y_m)]`` and
    ``E_s H[p_s] ≈ −(1/M) Σ_m log p_{s_m}(y_m)``, so ``entropy = I + E_s H[p_s]`` is the
    Monte Carlo −E log p(y). Posteriors with S > ``max_components`` are reduced first.
    """
    from bayesmeta.posterior import _map, _obs, _over_samples

    _check_pool(posterior, x_pool)
    if int(num_draws) < 1:
        raise ValueError(f"num_draws: expected a positive integer, got {num_draws!r}")
    post = posterior
    if post.num_samples > int(max_components):
        post = post.resample(jax.random.fold_in(key, 7), int(max_components))
    m = int(num_draws)
    keys = jax.random.split(key, post.num_tasks)

    def one(phi, lw, _, params, x, k):
        k_comp, k_y = jax.random.split(k)
        comp = _systematic(k_comp, lw, m)  # (M,)
        per_sample = post.params_per_sample
        th_m = jax.tree_util.tree_map(lambda a: a[comp], params) if per_sample else params

        def draw(th, ph, kk):  # one y per pool point from component (θ, φ): (1, P[, Dy])
            return _obs(post, th, ph, x).sample(kk)

        axes = (0 if per_sample else None, 0, 0)
        y = jax.vmap(draw, in_axes=axes)(th_m, phi[comp], jax.random.split(k_y, m))

        def logp_all(ym):  # log p_s(y_m) for every s, (S, P)
            def one_s(th, ph):
                d = _obs(post, th, ph, x)
                return d.log_prob(ym)[0]

            return _over_samples(post, one_s, params, phi)

        lp = jax.lax.map(logp_all, y)  # (M, S, P)
        own = jnp.take_along_axis(lp, comp[:, None, None], axis=1)[:, 0]  # (M, P)
        mix = logsumexp(lw[None, :, None] + lp, axis=1)  # (M, P)
        return jnp.mean(own - mix, 0), -jnp.mean(own, 0)

    batch = max(
        1, min(post.num_tasks, _CHUNK_ELEMENTS // max(1, m * post.num_samples * x_pool.shape[1]))
    )
    return _map(post, one, (x_pool, keys), batch)


@jax.jit
def _categorical_information(posterior: TaskPosterior, x_pool: Array) -> tuple[Array, Array]:
    """Exact ``(I, E_s H[p_s])`` for a categorical likelihood, each ``(T, P)``."""
    _check_pool(posterior, x_pool)
    s, p = posterior.phi.shape[1], x_pool.shape[1]
    width = _out_width(posterior, x_pool)

    def one(phi, lw, _, x):
        logp = jax.nn.log_softmax(_task_outputs(posterior, phi, x), -1)  # (S, P, C)
        w = jnp.exp(lw)
        pbar = jnp.einsum("s,spc->pc", w, jnp.exp(logp))
        total = -jnp.sum(xlogy(pbar, pbar), -1)
        cond = -jnp.einsum("s,sp->p", w, jnp.sum(jnp.exp(logp) * logp, -1))
        return jnp.maximum(total - cond, 0.0), cond

    return _map_tasks(one, posterior, (x_pool,), s * p * width)


def entropy(
    key: Array,
    posterior: TaskPosterior,
    x_pool: Array,
    num_draws: int = DEFAULT_NUM_DRAWS,
    max_components: int = DEFAULT_MAX_COMPONENTS,
) -> Array:
    """Entropy of the posterior predictive at each pool point, ``(T, P)``.

    Classification: exact, ``H[p̄] = −Σ_c p̄_c log p̄_c`` with ``p̄ = Σ_s w_s softmax f_s(x)``.
    Regression: the entropy of the S-component Gaussian mixture has no closed form; it is
    ``H[p] = Σ_s w_s ½ D log(2πe σ_s²) + I``, the exact expected conditional entropy plus the
    **Monte Carlo** estimate of the mutual information ``I`` from :func:`bald` (``num_draws``
    draws per task from the mixture, shared by all pool points). Unbiased; exact for S = 1.
    Grid posteriors with S > ``max_components`` enter the Monte Carlo term through
    ``max_components`` systematically resampled components.
    """
    if posterior.likelihood.classifier:
        info, cond = _categorical_information(posterior, x_pool)
    elif posterior.likelihood.generic:
        info, cond = _generic_information(posterior, key, x_pool, num_draws, max_components)
    else:
        info, cond = _gaussian_information(posterior, key, x_pool, num_draws, max_components)
    return info + cond


def bald(
    key: Array,
    posterior: TaskPosterior,
    x_pool: Array,
    num_draws: int = DEFAULT_NUM_DRAWS,
    max_components: int = DEFAULT_MAX_COMPONENTS,
) -> Array:
    """BALD: mutual information between the label and φ at each pool point, ``(T, P)``.

    ``I(y; φ | x) = H[Σ_s w_s p_s(y|x)] − Σ_s w_s H[p_s(y|x)]``, zero for a point mass.
    Classification: exact. Regression (``H[p_s] = ½ D log(2πe σ_s²)``): **Monte Carlo**,
    ``I = Σ_s w_s KL(p_s ‖ p) ≈ (1/M) Σ_m [log p_{s_m}(y_m) − log p(y_m)]`` with M =
    ``num_draws`` draws ``(s_m, y_m)`` from the mixture (components by systematic resampling),
    the same draws (in standardised form) for every pool point of a task. Grid posteriors with
    S > ``max_components`` are reduced to that many systematically resampled components.
    """
    if posterior.likelihood.classifier:
        return _categorical_information(posterior, x_pool)[0]
    if posterior.likelihood.generic:
        return _generic_information(posterior, key, x_pool, num_draws, max_components)[0]
    return _gaussian_information(posterior, key, x_pool, num_draws, max_components)[0]


@jax.jit
def random(key: Array, posterior: TaskPosterior, x_pool: Array) -> Array:
    """Uniform random scores on [0, 1), ``(T, P)``: the passive-learning baseline."""
    _check_pool(posterior, x_pool)
    return jax.random.uniform(key, x_pool.shape[:2], posterior.phi.dtype)


ACQUISITIONS: dict[str, Acquisition] = {
    "variance": variance,
    "entropy": entropy,
    "bald": bald,
    "random": random,
}


def get_acquisition(acquisition: str | Acquisition) -> Acquisition:
    """The acquisition function named ``acquisition`` (or ``acquisition`` itself if callable)."""
    if callable(acquisition):
        return acquisition
    if acquisition not in ACQUISITIONS:
        raise ValueError(
            f"acquisition: expected one of {list(ACQUISITIONS)} or a callable, got {acquisition!r}"
        )
    return ACQUISITIONS[acquisition]


# -- the loop's state -----------------------------------------------------------------------------
class ActiveState(NamedTuple):
    """State of an active-learning run for T tasks.

    Attributes
    ----------
    support : Support
        ``x (T, C, Dx)``, ``y (T, C, Dy)`` or ``(T, C)``, ``mask (T, C)``: the labelled points,
        padded to the capacity C with mask 0.
    pool_available : (T, P) bool
        True where a pool point is still unlabelled (and real).
    num_labels : (T,) int32
        Number of labelled points (the mask's sum).
    """

    support: Support
    pool_available: Array
    num_labels: Array


def init_active(
    support: Support, x_pool: Array, capacity: int | None = None, pool_mask: Array | None = None
) -> ActiveState:
    """Pad ``support`` to ``capacity`` points per task and mark every pool point available.

    Parameters
    ----------
    support : Support
        The initial labelled points ``x (T, K, Dx)``, ``y``, ``mask (T, K)``.
    x_pool : (T, P, Dx)
        Candidate inputs.
    capacity : int, optional
        Support capacity C ≥ K (default K): room for ``C − K`` more labels. Choose
        ``K + num_queries · batch_size``.
    pool_mask : (T, P), optional
        1 for real pool points, 0 for padding (never proposed).
    """
    x, y, mask = (jnp.asarray(a) for a in support)
    if x.ndim != 3 or mask.shape != x.shape[:2] or y.shape[:2] != x.shape[:2]:
        raise ValueError(
            "support: expected x (T, K, Dx), y (T, K, ...) and mask (T, K), got "
            f"{tuple(x.shape)}, {tuple(y.shape)}, {tuple(mask.shape)}"
        )
    t, k = mask.shape
    xp = tuple(jnp.shape(x_pool))
    if len(xp) != 3 or xp[0] != t or xp[2] != x.shape[2]:
        raise ValueError(f"x_pool: expected shape (T, P, Dx)=({t}, P, {x.shape[2]}), got {xp}")
    cap = k if capacity is None else int(capacity)
    if cap < k:
        raise ValueError(f"capacity: expected >= K={k} (the support size), got {capacity}")
    pad = cap - k

    def padded(a):
        return jnp.concatenate([a, jnp.zeros((t, pad, *a.shape[2:]), a.dtype)], axis=1)

    mask = padded(mask)
    if pool_mask is None:
        avail = jnp.ones(xp[:2], bool)
    else:
        avail = jnp.asarray(pool_mask) > 0.5
        if avail.shape != xp[:2]:
            raise ValueError(f"pool_mask: expected shape (T, P)={xp[:2]}, got {tuple(avail.shape)}")
    num = jnp.sum(mask > 0.5, axis=1).astype(jnp.int32)
    return ActiveState(Support(padded(x), padded(y), mask), avail, num)


def select_top(scores: Array, available: Array, batch_size: int = 1) -> Array:
    """Indices ``(T, b)`` of the ``b`` highest-scoring available pool points of each task.

    Unavailable points get −∞ and available ones a finite score (NaN counts as the lowest
    finite value), so an unavailable point is chosen only when fewer than ``b`` are available.
    """
    big = jnp.finfo(scores.dtype).max
    finite = jnp.where(jnp.isnan(scores), -big, jnp.clip(scores, -big, big))
    return jax.lax.top_k(jnp.where(available, finite, -jnp.inf), batch_size)[1]


def propose(
    key: Array,
    posterior: TaskPosterior,
    x_pool: Array,
    state: ActiveState,
    acquisition: str | Acquisition = "bald",
    batch_size: int = 1,
) -> Array:
    """Pool indices ``(T, b)`` to label next: the top ``b = batch_size`` acquisition scores
    among the points not yet labelled."""
    fn = get_acquisition(acquisition)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if not _is_tracer(state.pool_available):
        left = int(jnp.min(jnp.sum(state.pool_available, axis=1)))
        if left < batch_size:
            raise ValueError(
                f"batch_size: expected <= the {left} unlabelled pool points left (fewest over "
                f"tasks), got {batch_size}"
            )
    scores = fn(key, posterior, x_pool)
    if scores.shape != state.pool_available.shape:
        raise ValueError(
            f"acquisition: expected scores of shape (T, P)={state.pool_available.shape}, "
            f"got {scores.shape}"
        )
    return select_top(scores, state.pool_available, int(batch_size))


def reveal(y_pool: Array, indices: Array) -> Array:
    """The pool labels at ``indices (T, b)``: ``(T, b, Dy)`` or ``(T, b)`` (the oracle)."""
    return jax.vmap(lambda yt, it: yt[it])(y_pool, indices)


def label(state: ActiveState, x_pool: Array, indices: Array, y_new: Array) -> ActiveState:
    """Write the labelled pool points into the next free support slots of each task.

    Parameters
    ----------
    state : ActiveState
    x_pool : (T, P, Dx)
    indices : (T, b) int
        Pool indices being labelled (e.g. from :func:`propose`).
    y_new : (T, b, Dy) float or (T, b) int
        Their labels, in the layout of ``state.support.y``.

    Returns
    -------
    ActiveState
        Point j of task t goes to the j-th slot with mask 0; the slot's mask becomes 1 and the
        pool point becomes unavailable. Under ``jit`` points beyond the capacity are dropped;
        called eagerly, a full support set or an already-labelled index raises ``ValueError``.
    """
    sup = state.support
    indices = jnp.asarray(indices)
    t, cap = sup.mask.shape
    if indices.ndim != 2 or indices.shape[0] != t:
        raise ValueError(f"indices: expected shape (T, b) with T={t}, got {indices.shape}")
    b = indices.shape[1]
    y_new = jnp.asarray(y_new)
    if y_new.shape != (t, b, *sup.y.shape[2:]):
        raise ValueError(
            f"y_new: expected shape {(t, b, *sup.y.shape[2:])} (T, b) + the support's label "
            f"shape, got {y_new.shape}"
        )
    if not _is_tracer(state, x_pool, indices):
        free_min = int(jnp.min(jnp.sum(sup.mask < 0.5, axis=1)))
        if free_min < b:
            raise ValueError(
                f"state: the support is full ({free_min} free of capacity {cap} in some task) "
                f"for {b} new labels; start with init_active(..., capacity=K + labels)"
            )
        p = state.pool_available.shape[1]
        if bool(jnp.any((indices < 0) | (indices >= p))):
            lo, hi = int(indices.min()), int(indices.max())
            raise ValueError(f"indices: expected pool indices in [0, {p}), got [{lo}, {hi}]")
        srt = jnp.sort(indices, axis=1)
        if bool(jnp.any(srt[:, 1:] == srt[:, :-1])):
            bad = int(jnp.sum(jnp.any(srt[:, 1:] == srt[:, :-1], axis=1)))
            raise ValueError(f"indices: duplicate pool indices within {bad} task(s)")
        taken = ~jnp.take_along_axis(state.pool_available, indices, axis=1)
        if bool(jnp.any(taken)):
            raise ValueError(
                f"indices: {int(jnp.sum(taken))} point(s) already labelled or not in the pool"
            )
    free = sup.mask < 0.5
    rank = jnp.cumsum(free, axis=1) - 1
    hit = free[:, :, None] & (rank[:, :, None] == jnp.arange(b)[None, None])  # (T, C, b)
    filled = jnp.any(hit, axis=-1)
    src = jnp.argmax(hit, axis=-1)  # (T, C): which new point lands in each slot

    def put(old, new):
        g = jax.vmap(lambda n, s: n[s])(new, src)
        cond = filled.reshape(filled.shape + (1,) * (old.ndim - 2))
        return jnp.where(cond, g.astype(old.dtype), old)

    x_sel = jax.vmap(lambda xt, it: xt[it])(x_pool, indices)
    mask = jnp.where(filled, jnp.ones((), sup.mask.dtype), sup.mask)
    avail = jax.vmap(lambda a, i: a.at[i].set(False))(state.pool_available, indices)
    num = jnp.sum(mask > 0.5, axis=1).astype(jnp.int32)
    return ActiveState(Support(put(sup.x, x_sel), put(sup.y, y_new), mask), avail, num)


# -- the jitted loop ------------------------------------------------------------------------------
class ActiveResult(NamedTuple):
    """Learning curves of :func:`run_active`, per task, at 0, 1, …, Q queries.

    Attributes
    ----------
    n_labels : (Q+1, T) int
        Labelled points per task when each row was measured (K + q·b).
    nll : (Q+1, T)
        Mean negative log predictive density of the evaluation points.
    mse : (Q+1, T) or None
        Mean squared error of the predictive mean (regression).
    accuracy : (Q+1, T) or None
        Accuracy of the predictive's most probable class (classification).
    indices : (Q, T, b) int
        Pool points chosen at each query.
    state : ActiveState
        The final state (all Q·b labels written).
    """

    n_labels: Array
    nll: Array
    mse: Array | None
    accuracy: Array | None
    indices: Array
    state: ActiveState


class _ByIdentity:
    """A hashable handle on a :class:`Method` (its config dict is not hashable) for ``jit``."""

    def __init__(self, method: Any):
        self.method = method

    def __hash__(self) -> int:
        return hash((id(self.method.adapt), self.method.name))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.method.adapt is self.method.adapt


def _task_metrics(post: TaskPosterior, x: Array, y: Array) -> tuple[Array, Array]:
    nll = -jnp.mean(post.log_predictive(x, y), axis=1)
    if post.likelihood.classifier:
        hit = jnp.argmax(post.probs(x), -1) == y
        return nll, jnp.mean(hit.astype(nll.dtype), axis=1)
    return nll, jnp.mean((post.mean(x) - y) ** 2, axis=(1, 2))


@partial(jax.jit, static_argnames=("method", "acquisition", "num_queries", "num_samples", "batch"))
def _loop(
    key, meta_state, state, x_pool, y_pool, x_eval, y_eval, *, method, acquisition, num_queries,
    num_samples, batch,
):  # fmt: skip
    adapt = method.method.adapt
    keys = jax.random.split(key, num_queries + 1)

    def step(st, inp):
        i, k = inp
        k_adapt, k_acq = jax.random.split(k)
        post = adapt(k_adapt, meta_state, st.support, num_samples)
        nll, metric = _task_metrics(post, x_eval, y_eval)

        def query(st):
            idx = propose(k_acq, post, x_pool, st, acquisition, batch)
            return label(st, x_pool, idx, reveal(y_pool, idx)), idx

        def stop(st):
            return st, jnp.full((st.num_labels.shape[0], batch), -1, jnp.int32)

        new, idx = jax.lax.cond(i < num_queries, query, stop, st)
        return new, (st.num_labels, nll, metric, idx.astype(jnp.int32))

    steps = jnp.arange(num_queries + 1)
    final, (n, nll, metric, idx) = jax.lax.scan(step, state, (steps, keys))
    return final, n, nll, metric, idx[:num_queries]


def _check_loop_inputs(support, x_pool, y_pool, x_eval, y_eval, num_queries, batch_size):
    x = jnp.asarray(support.x)
    if x.ndim != 3:
        raise ValueError(f"support.x: expected shape (T, K, Dx), got {x.shape}")
    t, _, dx = x.shape
    y_tail = tuple(jnp.shape(support.y)[2:])
    for name, a, want in (
        ("x_pool", x_pool, (t, None, dx)),
        ("y_pool", y_pool, (t, jnp.shape(x_pool)[1] if jnp.ndim(x_pool) == 3 else None, *y_tail)),
        ("x_eval", x_eval, (t, None, dx)),
        ("y_eval", y_eval, (t, jnp.shape(x_eval)[1] if jnp.ndim(x_eval) == 3 else None, *y_tail)),
    ):
        shape = tuple(jnp.shape(a))
        if len(shape) != len(want) or any(
            w is not None and w != g for w, g in zip(want, shape, strict=False)
        ):
            pretty = tuple("N" if w is None else w for w in want)
            raise ValueError(f"{name}: expected shape {pretty}, got {shape}")
    for name, v in (("num_queries", num_queries), ("batch_size", batch_size)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    p = jnp.shape(x_pool)[1]
    if num_queries * batch_size > p:
        raise ValueError(
            f"num_queries: num_queries * batch_size = {num_queries} * {batch_size} = "
            f"{num_queries * batch_size} labels exceed the pool size P={p}"
        )


def run_active(
    key: Array,
    method: Any,
    meta_state: Any,
    support: Support,
    x_pool: Array,
    y_pool: Array,
    x_eval: Array,
    y_eval: Array,
    acquisition: str | Acquisition,
    num_queries: int,
    num_samples: int = 100,
    batch_size: int = 1,
    timings: dict | None = None,
) -> ActiveResult:
    """Run Q rounds of pool-based active learning for T tasks in one jitted ``lax.scan``.

    At step ``i = 0..Q`` with ``k_adapt, k_acq = split(split(key, Q+1)[i])``: adapt
    ``post = method.adapt(k_adapt, meta_state, support_i, num_samples)``, record the evaluation
    NLL and MSE (or accuracy), then (for i < Q) label the top ``batch_size`` points of
    ``acquisition(k_acq, post, x_pool)`` among the unlabelled ones, taking their labels from
    ``y_pool``. θ is never re-meta-trained; the support set is padded to
    ``K + Q·batch_size`` from the start so the loop compiles once per shape.

    Parameters
    ----------
    key : PRNG key
    method : Method
        Any inference method (``adapt`` is jittable with ``num_samples`` static).
    meta_state : MetaState
        Its meta-trained state.
    support : Support
        Initial support sets ``x (T, K, Dx)``, ``y (T, K, Dy)`` or ``(T, K)``, ``mask (T, K)``.
    x_pool, y_pool : (T, P, Dx), (T, P, Dy) or (T, P)
        Candidates and their (hidden) labels.
    x_eval, y_eval : (T, N, Dx), (T, N, Dy) or (T, N)
        Held-out evaluation points.
    acquisition : str or callable
        A key of :data:`ACQUISITIONS` or ``fn(key, posterior, x_pool) -> (T, P)``. The loop
        is compiled per callable: reuse one object (e.g. one ``partial(bald, num_draws=256)``)
        across calls.
    num_queries : int
        Q ≥ 1 rounds; ``Q · batch_size`` must not exceed P.
    num_samples : int
        Posterior samples per adaptation (ignored by particle and grid methods).
    batch_size : int
        Points labelled per round (top-b).
    timings : dict, optional
        If given, the loop is compiled ahead of time and ``compile_s``, ``run_s`` (the compiled
        loop, to completion) and ``step_s = run_s / (Q + 1)`` (one step: re-adapt, evaluate,
        score the pool, label) are stored in it.

    Returns
    -------
    ActiveResult
    """
    fn = get_acquisition(acquisition)
    _check_loop_inputs(support, x_pool, y_pool, x_eval, y_eval, num_queries, batch_size)
    k = jnp.shape(support.x)[1]
    state = init_active(support, x_pool, capacity=k + num_queries * batch_size)
    y_pool = jnp.asarray(y_pool, state.support.y.dtype)
    args = (
        key,
        meta_state,
        state,
        jnp.asarray(x_pool, state.support.x.dtype),
        y_pool,
        jnp.asarray(x_eval, state.support.x.dtype),
        jnp.asarray(y_eval, state.support.y.dtype),
    )
    static = dict(
        method=_ByIdentity(method),
        acquisition=fn,
        num_queries=int(num_queries),
        num_samples=int(num_samples),
        batch=int(batch_size),
    )
    if timings is None:
        final, n, nll, metric, idx = _loop(*args, **static)
    else:
        t0 = time.perf_counter()
        compiled = _loop.lower(*args, **static).compile()
        t1 = time.perf_counter()
        final, n, nll, metric, idx = jax.block_until_ready(compiled(*args))
        t2 = time.perf_counter()
        timings.update(compile_s=t1 - t0, run_s=t2 - t1, step_s=(t2 - t1) / (num_queries + 1))
    categorical = jnp.ndim(y_eval) == 2
    return ActiveResult(
        n_labels=n,
        nll=nll,
        mse=None if categorical else metric,
        accuracy=metric if categorical else None,
        indices=idx,
        state=final,
    )


# -- summaries ------------------------------------------------------------------------------------
def _json_list(a: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in a.tolist()]


def _mean_se(a: np.ndarray) -> tuple[list[float | None], list[float | None] | None]:
    mean = a.mean(axis=1)
    if a.shape[1] < 2:
        return _json_list(mean), None
    return _json_list(mean), _json_list(a.std(axis=1, ddof=1) / math.sqrt(a.shape[1]))


def learning_curve(result: ActiveResult, acquisition: str = "") -> dict[str, Any]:
    """The ``CURVE.json`` fields of a run: metrics averaged over tasks at each step.

    Returns
    -------
    dict
        ``acquisition``, ``n_tasks``, ``n_queries`` (0..Q), ``n_labels`` (labelled points
        K + q·b; the mean over tasks if support sizes differ), ``nll`` and ``mse`` or
        ``accuracy``, each with ``*_se`` (standard error over tasks, std/√T; omitted for T=1).
        Plain Python lists (non-finite values as ``None``), ready for JSON and
        :func:`bayesmeta.plots.learning_curves`.
    """
    n = np.asarray(result.n_labels)
    n_labels = n[:, 0].tolist() if (n == n[:, :1]).all() else n.mean(axis=1).tolist()
    out: dict[str, Any] = {
        "acquisition": acquisition,
        "n_tasks": int(n.shape[1]),
        "n_queries": list(range(n.shape[0])),
        "n_labels": n_labels,
    }
    for name in ("nll", "mse", "accuracy"):
        arr = getattr(result, name)
        if arr is None:
            continue
        mean, se = _mean_se(np.asarray(arr, np.float64))
        out[name] = mean
        if se is not None:
            out[f"{name}_se"] = se
    return out


def paired_difference(
    result: ActiveResult, baseline: ActiveResult, metric: str = "mse"
) -> tuple[np.ndarray, np.ndarray]:
    """Mean over tasks of ``metric(result) − metric(baseline)`` at each step, and its paired
    standard error ``std_t(diff)/√T``, each ``(Q+1,)``. Both runs must cover the same tasks."""
    a, b = getattr(result, metric), getattr(baseline, metric)
    if a is None or b is None:
        raise ValueError(f"metric: {metric!r} is not recorded by both runs")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"baseline: expected {metric} of shape {a.shape}, got {b.shape}")
    d = a - b
    se = d.std(axis=1, ddof=1) / math.sqrt(d.shape[1]) if d.shape[1] > 1 else np.zeros(len(d))
    return d.mean(axis=1), se
