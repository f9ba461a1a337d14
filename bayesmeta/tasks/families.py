"""The synthetic task families of the literature, each with an exact reference.

- :func:`sinusoid`: MAML (Finn et al. 2017): ``y = A sin(x + b)``, A ∈ [0.1, 5], b ∈ [0, π],
  x ∈ [−5, 5], Gaussian noise (default 0.3).
- :func:`sine_line`: PLATIPUS (Finn, Xu & Levine 2018): with probability 1/2 a sinusoid as
  above, otherwise a line ``y = a x + c`` with a, c ∈ [−3, 3]; noise 0.3.
- :func:`linear_gaussian`: ``y = w x + c`` with (w, c) ~ N(m0, diag s0²): the posterior is
  closed form (see :mod:`bayesmeta.inference.reference`).
- :func:`sinusoid_bmaml`: BMAML (Yoon et al. 2018): ``y = A sin(ω x + b)``, A ∈ [0.1, 5],
  ω ∈ [0.5, 2], b ∈ [0, 2π], noise 0.01·A.

Task parameters ψ are stored as one vector per task; for ``sine_line`` it is
``(is_line, p1, p2)``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from bayesmeta.tasks.base import TaskBatch, TaskFamily

Array = jax.Array


def _midpoints(lo: float, hi: float, n: int) -> Array:
    return lo + (jnp.arange(n) + 0.5) * (hi - lo) / n


def _constant_noise(noise: float):
    """A task-independent noise standard deviation, in the dtype of ψ."""
    return lambda psi: jnp.asarray(noise, jnp.result_type(psi))


def _uniform_grid(bounds: list[tuple[float, float]], sizes: list[int]) -> Array:
    axes = [_midpoints(lo, hi, n) for (lo, hi), n in zip(bounds, sizes, strict=True)]
    mesh = jnp.meshgrid(*axes, indexing="ij")
    return jnp.stack([m.reshape(-1) for m in mesh], axis=-1)


def _uniform_box(bounds: list[tuple[float, float]]):
    """``sample(key, n)``: ``n`` points uniform on the box ``bounds`` (one (lo, hi) per
    coordinate), ``(n, len(bounds))``."""
    lo = jnp.array([b[0] for b in bounds])
    hi = jnp.array([b[1] for b in bounds])
    return lambda key, n: jax.random.uniform(key, (n, len(bounds)), minval=lo, maxval=hi)


def _flat_log_prior(grid: Array, log_mass: float = 0.0) -> Array:
    """The log weight of each node of ``grid`` under a prior that spreads ``exp(log_mass)``
    evenly over it."""
    return jnp.full((grid.shape[0],), log_mass - math.log(grid.shape[0]))


def _regression(name: str, sample_params, mean_fn, noise_fn, x_range, **extra) -> TaskFamily:
    """A scalar regression family (``dx = dy = 1``); ``extra`` as :class:`TaskFamily`."""
    return TaskFamily(
        name=name,
        dx=1,
        dy=1,
        sample_params=sample_params,
        mean_fn=mean_fn,
        noise_fn=noise_fn,
        x_range=x_range,
        **extra,
    )


def episode_k_range(k_range, num_query: int, n_way: int) -> tuple[int, int]:
    """``(k_min, k_max)`` of an N-way episode's ``k_range``, checked with ``num_query``: a
    ValueError unless ``1 <= k_min <= k_max`` and ``num_query`` is a positive multiple of
    ``n_way`` (the arguments every ``sample_episode`` of a classification family takes)."""
    k_min, k_max = (int(v) for v in k_range)
    if not 1 <= k_min <= k_max:
        raise ValueError(f"k_range: expected 1 <= k_min <= k_max, got {tuple(k_range)}")
    if num_query < n_way or num_query % n_way:
        raise ValueError(
            f"num_query: expected a positive multiple of n_way = {n_way}, got {num_query}"
        )
    return k_min, k_max


def sinusoid(
    noise: float = 0.3,
    amplitude: tuple[float, float] = (0.1, 5.0),
    phase: tuple[float, float] = (0.0, math.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
    grid_size: tuple[int, int] = (160, 160),
) -> TaskFamily:
    """MAML's sinusoid family with Gaussian label noise; ψ = (A, b)."""

    def mean_fn(psi, x):
        return psi[0] * jnp.sin(x + psi[1])

    def reference_grid():
        grid = _uniform_grid([amplitude, phase], list(grid_size))
        return grid, _flat_log_prior(grid)

    return _regression(
        "sinusoid",
        _uniform_box([amplitude, phase]),
        mean_fn,
        _constant_noise(noise),
        x_range,
        reference_grid=reference_grid,
    )


def sinusoid_hetero(
    log_noise: tuple[float, float] = (math.log(0.5), 0.3),
    amplitude: tuple[float, float] = (0.1, 5.0),
    phase: tuple[float, float] = (0.0, math.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
    grid_size: tuple[int, int] = (160, 160),
) -> TaskFamily:
    """MAML's sinusoid with noise that grows along x, the same for every task; ψ = (A, b),

        y = A sin(x + b) + σ(x) ε,   log σ(x) = a₀ + a₁ x,   (a₀, a₁) = ``log_noise``,

    so that the defaults put σ at 0.11 on the left end and 2.2 on the right: where a label
    is noisy, it says little about ψ (an acquisition that asks for predictive variance alone
    picks exactly those points)."""
    a0, a1 = (float(v) for v in log_noise)

    def noise_x_fn(psi, x):
        del psi
        return jnp.exp(a0 + a1 * x)

    # the sinusoid's prior, mean and grid; only the noise differs
    base = sinusoid(amplitude=amplitude, phase=phase, x_range=x_range, grid_size=grid_size)
    return dataclasses.replace(base, name="sinusoid_hetero", noise_fn=None, noise_x_fn=noise_x_fn)


def sine_line(
    noise: float = 0.3,
    amplitude: tuple[float, float] = (0.1, 5.0),
    phase: tuple[float, float] = (0.0, math.pi),
    slope: tuple[float, float] = (-3.0, 3.0),
    intercept: tuple[float, float] = (-3.0, 3.0),
    x_range: tuple[float, float] = (-5.0, 5.0),
    grid_size: tuple[int, int] = (160, 160),
) -> TaskFamily:
    """PLATIPUS's ambiguous family: sine or line with equal probability; ψ = (is_line, p1, p2)."""

    sample_sin = _uniform_box([amplitude, phase])
    sample_line = _uniform_box([slope, intercept])

    def sample_params(key, n):
        k_kind, k_sin, k_line = jax.random.split(key, 3)
        is_line = jax.random.bernoulli(k_kind, 0.5, (n,)).astype(jnp.float32)
        s = sample_sin(k_sin, n)
        ln = sample_line(k_line, n)
        p = jnp.where(is_line[:, None] > 0.5, ln, s)
        return jnp.concatenate([is_line[:, None], p], axis=-1)

    def mean_fn(psi, x):
        return jnp.where(psi[0] > 0.5, psi[1] * x + psi[2], psi[1] * jnp.sin(x + psi[2]))

    def reference_grid():
        g_sin = _uniform_grid([amplitude, phase], list(grid_size))
        g_line = _uniform_grid([slope, intercept], list(grid_size))
        grid = jnp.concatenate(
            [
                jnp.concatenate([jnp.zeros((g_sin.shape[0], 1)), g_sin], axis=-1),
                jnp.concatenate([jnp.ones((g_line.shape[0], 1)), g_line], axis=-1),
            ]
        )
        log_prior = jnp.concatenate(
            [_flat_log_prior(g_sin, math.log(0.5)), _flat_log_prior(g_line, math.log(0.5))]
        )
        return grid, log_prior

    return _regression(
        "sine_line",
        sample_params,
        mean_fn,
        _constant_noise(noise),
        x_range,
        reference_grid=reference_grid,
    )


def linear_gaussian(
    prior_mean: tuple[float, float] = (0.0, 0.0),
    prior_std: tuple[float, float] = (1.0, 1.0),
    noise: float = 0.5,
    x_range: tuple[float, float] = (-5.0, 5.0),
) -> TaskFamily:
    """Linear tasks ``y = w x + c`` with (w, c) ~ N(prior_mean, diag prior_std²); ψ = (w, c).

    The posterior over ψ is Gaussian in closed form; ``reference_grid`` is ``None`` because the
    ``reference`` method uses the closed form for this family.
    """
    m0 = jnp.asarray(prior_mean)
    s0 = jnp.asarray(prior_std)

    def sample_params(key, n):
        return m0 + s0 * jax.random.normal(key, (n, 2))

    def mean_fn(psi, x):
        return psi[0] * x + psi[1]

    return _regression(
        "linear_gaussian",
        sample_params,
        mean_fn,
        _constant_noise(noise),
        x_range,
        reference_grid=None,
        gaussian_prior=(m0, s0, noise),
    )


def sinusoid_bmaml(
    amplitude: tuple[float, float] = (0.1, 5.0),
    frequency: tuple[float, float] = (0.5, 2.0),
    phase: tuple[float, float] = (0.0, 2 * math.pi),
    noise_ratio: float = 0.01,
    x_range: tuple[float, float] = (-5.0, 5.0),
) -> TaskFamily:
    """BMAML's sinusoid ``y = A sin(ω x + b)`` with noise ``0.01·A``; ψ = (A, ω, b).

    Its noise is too small for a quadrature grid to resolve the posterior, so it has no
    ``reference_grid``.
    """

    def mean_fn(psi, x):
        return psi[0] * jnp.sin(psi[1] * x + psi[2])

    return _regression(
        "sinusoid_bmaml",
        _uniform_box([amplitude, frequency, phase]),
        mean_fn,
        lambda psi: noise_ratio * psi[0],
        x_range,
    )


def circles(
    center: tuple[float, float] = (-3.0, 3.0),
    radius: tuple[float, float] = (1.0, 3.0),
    sharpness: float = 0.1,
    x_range: tuple[float, float] = (-5.0, 5.0),
    grid_size: tuple[int, int] = (60, 24),
    support: str = "inside",
) -> TaskFamily:
    """PLATIPUS's ambiguous 2-D classification: the positive class is a disc; ψ = (c₁, c₂, r).

    Centre uniform on ``center``², radius uniform on ``radius``; inputs uniform on
    ``x_range``². Labels: p(y = 1 | x, ψ) = sigmoid((r − ‖x − c‖) / τ), τ = ``sharpness`` (a
    slightly soft boundary, so that the likelihood never takes log 0). Support points are drawn
    uniformly inside 0.8 r of the centre, so they are (almost always) positives: one positive
    point says little about where the circle is, hence the ambiguity. The reference grid is
    ``grid_size[0]``² centres × ``grid_size[1]`` radii; its posterior uses the labels and also
    where the support inputs lie (``support_x_logpdf``), which a meta-learner can learn too.

    ``support="first-inside"`` (the family ``circles-active``) draws only the first support
    point inside the disc and the others uniformly on ``x_range``, labelled like any point: the
    supports an active learner builds from one positive and points picked from a uniform pool.
    Its ``support_x_logpdf`` weighs the first point's location only (the others' density is
    the same under every ψ).
    """
    if support not in ("inside", "first-inside"):
        raise ValueError(f"support: expected 'inside' or 'first-inside', got {support!r}")
    sample_params = _uniform_box([center, center, radius])

    def mean_fn(psi, x):
        d = jnp.sqrt(jnp.sum((x - psi[:2]) ** 2, -1) + 1e-12)
        z = (psi[2] - d) / sharpness
        return jnp.stack([jnp.zeros_like(z), z], -1)

    def inside_x(key, psi, k):
        k_r, k_a = jax.random.split(key)
        rr = 0.8 * psi[2] * jnp.sqrt(jax.random.uniform(k_r, (k,)))
        a = jax.random.uniform(k_a, (k,), maxval=2 * math.pi)
        return psi[:2] + rr[:, None] * jnp.stack([jnp.cos(a), jnp.sin(a)], -1)

    def inside_logpdf(psi, x):
        # Uniform on the disc of radius 0.8 r, its edge softened like the labels' (so that a
        # grid node just missing a support point keeps a finite weight).
        d = jnp.sqrt(jnp.sum((x - psi[:2]) ** 2, -1) + 1e-12)
        rr = 0.8 * psi[2]
        return jax.nn.log_sigmoid((rr - d) / sharpness) - jnp.log(math.pi * rr**2)

    if support == "inside":
        sample_support_x, support_x_logpdf = inside_x, inside_logpdf
    else:
        area = (x_range[1] - x_range[0]) ** 2

        def sample_support_x(key, psi, k):
            k_in, k_u = jax.random.split(key)
            rest = jax.random.uniform(k_u, (k - 1, 2), minval=x_range[0], maxval=x_range[1])
            return jnp.concatenate([inside_x(k_in, psi, 1), rest], 0)

        def support_x_logpdf(psi, x):
            first = jnp.arange(x.shape[0]) == 0
            return jnp.where(first, inside_logpdf(psi, x), -math.log(area))

    def reference_grid():
        nc, nr = grid_size
        grid = _uniform_grid([center, center, radius], [nc, nc, nr])
        return grid, _flat_log_prior(grid)

    return TaskFamily(
        name="circles" if support == "inside" else "circles-active",
        dx=2,
        dy=1,
        sample_params=sample_params,
        mean_fn=mean_fn,
        noise_fn=lambda psi: jnp.ones(()),
        x_range=x_range,
        reference_grid=reference_grid,
        likelihood="categorical",
        num_classes=2,
        sample_support_x=sample_support_x,
        support_x_logpdf=support_x_logpdf,
    )


def blobs(n_way: int = 3, dx: int = 4, spread: float = 3.0) -> TaskFamily:
    """N-way classification of Gaussian blobs: the few-shot classifier's conjugate test bed.

    Each task draws class centres μ_c ~ N(0, spread² I) in R^dx and points x ~ N(μ_c, I);
    support sets are shot-major (shot s of label c is point s·N + c), ``k`` shots per class
    uniform on ``k_range`` and padded to ``k_max`` with masks, query sets balanced
    (``num_query`` a multiple of N). Its Bayes-optimal classifier is the Bayesian ProtoNet
    with the identity embedding, m₀ = 0, τ² = spread² and σ² = 1, in closed form. Task
    parameters are the centres, flattened ``(N·dx,)``.
    """
    for name, v in (("n_way", n_way), ("dx", dx)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "n_way" else 1):
            raise ValueError(
                f"{name}: expected an integer >= {2 if name == 'n_way' else 1}, got {v!r}"
            )
    if not spread > 0:
        raise ValueError(f"spread: expected > 0, got {spread!r}")

    def sample_params(key, n):
        return spread * jax.random.normal(key, (n, n_way * dx))

    def sample_episode(key, num_tasks, k_range, num_query):
        k_min, k_max = episode_k_range(k_range, num_query, n_way)
        k_c, k_s, k_q, k_k = jax.random.split(key, 4)
        params = sample_params(k_c, num_tasks)
        centres = params.reshape(num_tasks, n_way, dx)
        y_s = jnp.tile(jnp.arange(n_way, dtype=jnp.int32), k_max)
        y_q = jnp.tile(jnp.arange(n_way, dtype=jnp.int32), num_query // n_way)
        x_s = centres[:, y_s] + jax.random.normal(k_s, (num_tasks, y_s.size, dx))
        x_q = centres[:, y_q] + jax.random.normal(k_q, (num_tasks, y_q.size, dx))
        k = jax.random.randint(k_k, (num_tasks,), k_min, k_max + 1)
        mask = (jnp.arange(y_s.size)[None, :] < n_way * k[:, None]).astype(x_s.dtype)
        batch = TaskBatch(x_s, jnp.broadcast_to(y_s, (num_tasks, y_s.size)), mask, x_q,
                          jnp.broadcast_to(y_q, (num_tasks, y_q.size)))  # fmt: skip
        return batch, params

    return TaskFamily(
        name=f"blobs{n_way}",
        dx=dx,
        dy=1,
        sample_params=sample_params,
        mean_fn=None,
        noise_fn=None,
        x_range=(-spread, spread),
        likelihood="categorical",
        num_classes=n_way,
        sample_episode=sample_episode,
    )


FAMILIES = {
    "sinusoid": sinusoid,
    "sinusoid_hetero": sinusoid_hetero,
    "sine_line": sine_line,
    "linear_gaussian": linear_gaussian,
    "sinusoid_bmaml": sinusoid_bmaml,
    "circles": circles,
    "blobs": blobs,
}
