"""Observation models as objects: what a task posterior's predictive, the evaluators and the
methods need of a likelihood, in one place per likelihood instead of string switches.

A likelihood maps one posterior sample's network outputs (or, for a model of the user's own,
its NumPyro observation distribution) to

- ``task_log_prob``: log p(y_n | x_n, φ_s) of every sample s and point n of one task;
- ``task_moments``: the predictive mixture's mean and variance per point;
- ``task_cdf``: the predictive CDF at y (continuous likelihoods);
- ``outputs`` / ``draw``: per-sample locations (logits) and draws of y over all tasks;

and says what kind it is (``gaussian``; ``has_noise``: a learned σ_y in θ; ``classifier``:
y are class labels and outputs are logits; ``conjugate``: the Gaussian whose linear last
layer the exact heads integrate; ``generic``: the model's own NumPyro distribution).

Each likelihood is a ``str`` subclass whose value is its name (``"gaussian"``,
``"categorical"``, ``"generic"``), so run files, messages and ``likelihood == "gaussian"`` in
users' code read as before, while the library calls its methods. :func:`as_likelihood` turns a
name into the object.

The formulas, per sample s with weight w_s, network output f_s and noise σ_s:

- Gaussian: log N(y; f_s, σ_s²) summed over Dy; mean Σ w_s f_s; variance
  Σ w_s (f_s − m)² + Σ w_s σ_s²; CDF Σ w_s Φ((y − f_s)/σ_s).
- Categorical: log softmax(f_s)[y]; draws from Categorical(logits=f_s).
- Generic: the NumPyro distribution ``apply(params, φ_s, x)``: its ``log_prob``, ``mean`` and
  ``variance`` (variance Σ w_s ((f_s − m)² + v_s)), draws by ``sample``; its PIT is computed by
  :class:`~bayesmeta.posterior.TaskPosterior` (exact where it has a ``cdf``, from draws where
  not, randomised where it is discrete).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

Array = jax.Array


class Likelihood(str):
    """An observation model; its value is its name. Subclasses implement the per-task
    kernels the task posterior maps over tasks."""

    has_noise: ClassVar[bool] = False
    gaussian: ClassVar[bool] = False
    classifier: ClassVar[bool] = False
    conjugate: ClassVar[bool] = False
    generic: ClassVar[bool] = False

    def task_log_prob(self, post, phi: Array, sd: Array, params: Any, xt: Array,
                      yt: Array) -> Array:  # fmt: skip
        """``(S, N)``: log p(y_n | x_n, φ_s) of one task."""
        raise NotImplementedError

    def task_moments(self, post, phi: Array, lw: Array, sd: Array, params: Any,
                     xt: Array) -> tuple[Array, Array]:  # fmt: skip
        """Predictive mean and variance ``(N, Dy)`` of one task."""
        f = _task_outputs(post, phi, xt)
        w = jnp.exp(lw)
        m = jnp.einsum("s,snd->nd", w, f)
        return m, jnp.einsum("s,snd->nd", w, (f - m) ** 2) + jnp.sum(w * sd**2)

    def task_cdf(self, post, phi: Array, lw: Array, sd: Array, xt: Array, yt: Array) -> Array:
        """Predictive CDF ``(N, Dy)`` of one task at ``yt``."""
        raise ValueError(f"cdf: a {self} likelihood has no CDF")

    def outputs(self, post, x: Array) -> Array:
        """Per-sample locations or logits of every task, ``(T, S, N, D)``."""
        return jax.vmap(lambda ph, xt: _task_outputs(post, ph, xt))(post.phi, x)

    def draw(self, post, key: Array, x: Array) -> Array:
        """One draw of y per sample φ_s of every task (draw s from φ_s)."""
        raise NotImplementedError


def _task_outputs(post, phi: Array, xt: Array) -> Array:
    f = post.bound_apply()
    return jax.vmap(lambda p: f(p, xt))(phi)


class Gaussian(Likelihood):
    """``y ~ N(f_φ(x), σ_y²)`` per output, σ_y part of θ (or per sample)."""

    has_noise = True
    gaussian = True
    conjugate = True

    def task_log_prob(self, post, phi, sd, params, xt, yt):
        f = _task_outputs(post, phi, xt)  # (S, N, Dy)
        z = (yt[None] - f) / sd[:, None, None]
        lp = -0.5 * z**2 - jnp.log(sd)[:, None, None] - 0.5 * math.log(2 * math.pi)
        return jnp.sum(lp, -1)

    def task_cdf(self, post, phi, lw, sd, xt, yt):
        f = _task_outputs(post, phi, xt)
        return jnp.einsum("s,snd->nd", jnp.exp(lw), ndtr((yt[None] - f) / sd[:, None, None]))

    def pointwise(self, f: Array, sd: Array, y: Array) -> Array:
        """``(T, S, N)`` from outputs ``f (T, S, N, Dy)``, ``sd (T, S)``, ``y (T, N, Dy)``."""
        sd = sd[:, :, None, None]
        z = (y[:, None] - f) / sd
        return jnp.sum(-0.5 * z**2 - jnp.log(sd) - 0.5 * math.log(2 * math.pi), -1)

    def points(self, f: Array, y: Array, sd: Array) -> Array:
        """``(N,)`` log N(y_n; f_n, σ²) of one task's outputs ``f (N, Dy)``."""
        z = (y - f) / sd
        return jnp.sum(-0.5 * z * z - jnp.log(sd) - 0.5 * math.log(2 * math.pi), axis=-1)

    def draw(self, post, key, x):
        f = self.outputs(post, x)
        return f + post.noise_std[:, :, None, None] * jax.random.normal(key, f.shape, f.dtype)

    def observation(self, f: Array, sd: Array):
        import numpyro.distributions as dist

        return dist.Normal(f, sd).to_event(1)


class Categorical(Likelihood):
    """``y ~ Categorical(softmax(f_φ(x)))``: class labels, outputs are logits."""

    classifier = True

    def task_log_prob(self, post, phi, sd, params, xt, yt):
        lp = jax.nn.log_softmax(_task_outputs(post, phi, xt), -1)  # (S, N, C)
        return jnp.take_along_axis(lp, yt[None, :, None].astype(jnp.int32), -1)[..., 0]

    def pointwise(self, f: Array, sd: Array, y: Array) -> Array:
        lp = jax.nn.log_softmax(f, -1)
        return jnp.take_along_axis(lp, y[:, None, :, None].astype(jnp.int32), -1)[..., 0]

    def points(self, f: Array, y: Array, sd: Array) -> Array:
        logp = jax.nn.log_softmax(f, axis=-1)
        return jnp.take_along_axis(logp, y.astype(jnp.int32)[:, None], axis=-1)[:, 0]

    def draw(self, post, key, x):
        return jax.random.categorical(key, self.outputs(post, x), axis=-1)

    def observation(self, f: Array, sd: Array):
        import numpyro.distributions as dist

        return dist.Categorical(logits=f)


class Generic(Likelihood):
    """The observation distribution of a model of the user's own
    (:class:`~bayesmeta.model.NumPyroModel`): ``apply(params, φ, x)`` returns it."""

    generic = True

    def task_log_prob(self, post, phi, sd, params, xt, yt):
        def lp_one(th, p):
            d = post.apply(th, p, xt)
            return d.log_prob(_as_value(d, yt))[0]

        return _over_samples(post, lp_one, params, phi)

    def task_moments(self, post, phi, lw, sd, params, xt):
        n = xt.shape[0]

        def mv(th, p):
            d = post.apply(th, p, xt)
            return _per_point(d.mean, n), _per_point(d.variance, n)

        f, v = _over_samples(post, mv, params, phi)
        w = jnp.exp(lw)
        m = jnp.einsum("s,snd->nd", w, f)
        return m, jnp.einsum("s,snd->nd", w, (f - m) ** 2 + v)

    def outputs(self, post, x):
        # the observation mean stands for the location
        def task(phi, params, xt):
            n = xt.shape[0]
            mean = lambda th, p: _per_point(post.apply(th, p, xt).mean, n)  # noqa: E731
            return _over_samples(post, mean, params, phi)

        axes = (0, 0 if post.params_per_sample else None, 0)
        return jax.vmap(task, in_axes=axes)(post.phi, post.params, x)

    def draw(self, post, key, x):
        def one_task(phi, params, xt, k):
            n = xt.shape[0]
            one = lambda th, p, kk: _per_point(post.apply(th, p, xt).sample(kk), n)  # noqa: E731
            return _over_samples(post, one, params, phi, jax.random.split(k, phi.shape[0]))

        keys = jax.random.split(key, post.num_tasks)
        axes = (0, 0 if post.params_per_sample else None, 0, 0)
        return jax.vmap(one_task, in_axes=axes)(post.phi, post.params, x, keys)

    def all_log_prob(self, post, x: Array, y: Array) -> Array:
        """``(T, S, N)`` log p(y_n | x_n, φ_s) of every task."""

        def task(phi, params, xt, yt):
            return self.task_log_prob(post, phi, None, params, xt, yt)

        axes = (0, 0 if post.params_per_sample else None, 0, 0)
        return jax.vmap(task, in_axes=axes)(post.phi, post.params, x, y)


def _over_samples(post, f, params, phi: Array, *rest):
    """``f(θ, φ, *rest)`` for each sample of one task (θ per sample or shared)."""
    axes = (0 if post.params_per_sample else None, 0, *(0,) * len(rest))
    return jax.vmap(f, in_axes=axes)(params, phi, *rest)


def _as_value(d, yt: Array) -> Array:
    """``yt (N, Dy)`` as the observed site's value ``(1, N)`` or ``(1, N, Dy)``."""
    return (yt[None, :, 0] if d.event_shape == () else yt[None]).astype(jnp.result_type(yt))


def _per_point(a: Array, n: int) -> Array:
    """``(1, N)`` or ``(1, N, Dy)`` -> ``(N, Dy)``."""
    return jnp.reshape(a, (n, -1))


GAUSSIAN = Gaussian("gaussian")
CATEGORICAL = Categorical("categorical")
GENERIC = Generic("generic")
LIKELIHOODS: dict[str, Likelihood] = {lik: lik for lik in (GAUSSIAN, CATEGORICAL, GENERIC)}


def as_likelihood(value: Any, allowed: tuple[str, ...] | None = None) -> Likelihood:
    """The :class:`Likelihood` named ``value`` (a name or a likelihood), one of ``allowed``
    (default: all)."""
    names = tuple(LIKELIHOODS) if allowed is None else allowed
    if not isinstance(value, str) or str(value) not in names:
        raise ValueError(f"likelihood: expected one of {names}, got {value!r}")
    return LIKELIHOODS[str(value)]


__all__ = [
    "CATEGORICAL",
    "GAUSSIAN",
    "GENERIC",
    "LIKELIHOODS",
    "Categorical",
    "Gaussian",
    "Generic",
    "Likelihood",
    "as_likelihood",
]
