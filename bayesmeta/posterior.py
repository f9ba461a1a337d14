"""TaskPosterior: weighted samples of task parameters and the predictive they imply.

Every method returns, for T new tasks, S (weighted) samples φ_s of the task parameters and a
function ``apply(φ, x)`` giving the likelihood's location (regression) or logits
(classification). The posterior predictive is the mixture

    p(y* | x*, D_tr) ≈ Σ_s w_s p(y* | f_φs(x*)),        Σ_s w_s = 1,

where w_s = 1/S for sampling methods and quadrature weights for grid references. Every
evaluator works from this mixture — never from a Gaussian fitted to the samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp, ndtr

Array = jax.Array


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["phi", "log_weights", "noise_std"],
    meta_fields=["apply", "likelihood", "method"],
)
@dataclass(frozen=True)
class TaskPosterior:
    """Posterior over task parameters for T tasks.

    Attributes
    ----------
    phi : (T, S, P)
        Samples (or quadrature nodes) of the task parameters.
    log_weights : (T, S)
        Normalised log weights, ``logsumexp(log_weights, -1) == 0``.
    noise_std : (T, S)
        Observation noise standard deviation of each sample (regression; ones otherwise).
    apply : (φ (P,), x (N, Dx)) -> (N, Dy) or (N, C)
        Likelihood location (Gaussian) or logits (categorical).
    likelihood : {"gaussian", "categorical"}
    method : str
        Name of the method that produced it.
    """

    phi: Array
    log_weights: Array
    noise_std: Array
    apply: Callable[[Array, Array], Array] = field(compare=False)
    likelihood: str = "gaussian"
    method: str = ""

    @property
    def num_tasks(self) -> int:
        return self.phi.shape[0]

    @property
    def num_samples(self) -> int:
        return self.phi.shape[1]

    @classmethod
    def from_samples(
        cls,
        phi: Array,
        noise_std: Array | float,
        apply: Callable[[Array, Array], Array],
        likelihood: str = "gaussian",
        method: str = "",
    ) -> TaskPosterior:
        """Equally weighted samples ``phi (T, S, P)``."""
        t, s = phi.shape[:2]
        lw = jnp.full((t, s), -math.log(s), phi.dtype)
        noise = jnp.broadcast_to(jnp.asarray(noise_std, phi.dtype), (t, s))
        return cls(phi, lw, noise, apply, likelihood, method)

    # -- per-sample outputs -------------------------------------------------------------------
    def outputs(self, x: Array) -> Array:
        """Per-sample likelihood locations or logits, ``x (T, N, Dx)`` -> ``(T, S, N, Dy)``."""
        return jax.vmap(lambda ph, xt: jax.vmap(lambda p: self.apply(p, xt))(ph))(self.phi, x)

    def _map_tasks(self, fn: Callable, *args: Array, batch_size: int | None = None) -> Array:
        # Tasks one batch at a time, so that grid posteriors (S ~ 1e4–1e5) fit in memory.
        if batch_size is None:
            batch_size = max(1, min(self.num_tasks, 2_000_000 // max(1, self.num_samples * 64)))
        return jax.lax.map(
            lambda a: fn(*a), (self.phi, self.log_weights, self.noise_std, *args),
            batch_size=batch_size,
        )

    # -- regression -----------------------------------------------------------------------------
    def log_predictive(self, x: Array, y: Array) -> Array:
        """Log posterior predictive density of each point, ``(T, N)``.

        ``log p(y | x, D) = logsumexp_s [log w_s + Σ_d log p(y_d | f_φs(x), σ_s)]``.
        For a categorical likelihood ``y`` is ``(T, N)`` integer labels.
        """
        if self.likelihood == "categorical":
            def one(phi, lw, _, xt, yt):
                logits = jax.vmap(lambda p: self.apply(p, xt))(phi)  # (S, N, C)
                lp = jax.nn.log_softmax(logits, -1)
                lp = jnp.take_along_axis(lp, yt[None, :, None].astype(jnp.int32), -1)[..., 0]
                return logsumexp(lw[:, None] + lp, axis=0)
        else:
            def one(phi, lw, sd, xt, yt):
                f = jax.vmap(lambda p: self.apply(p, xt))(phi)  # (S, N, Dy)
                z = (yt[None] - f) / sd[:, None, None]
                lp = jnp.sum(-0.5 * z**2 - jnp.log(sd)[:, None, None] - 0.5 * math.log(2 * math.pi), -1)
                return logsumexp(lw[:, None] + lp, axis=0)

        return self._map_tasks(one, x, y)

    def mean(self, x: Array) -> Array:
        """Predictive mean ``(T, N, Dy)`` (regression) or probabilities ``(T, N, C)``."""
        if self.likelihood == "categorical":
            return self.probs(x)

        def one(phi, lw, _, xt):
            f = jax.vmap(lambda p: self.apply(p, xt))(phi)
            return jnp.einsum("s,snd->nd", jnp.exp(lw), f)

        return self._map_tasks(one, x)

    def variance(self, x: Array) -> Array:
        """Predictive variance ``(T, N, Dy)``: E[σ²] + Var[f] under the mixture."""

        def one(phi, lw, sd, xt):
            f = jax.vmap(lambda p: self.apply(p, xt))(phi)
            w = jnp.exp(lw)
            m = jnp.einsum("s,snd->nd", w, f)
            return jnp.einsum("s,snd->nd", w, (f - m) ** 2) + jnp.sum(w * sd**2)

        return self._map_tasks(one, x)

    def cdf(self, x: Array, y: Array) -> Array:
        """Predictive CDF at ``y`` (the PIT values), ``(T, N, Dy)``: Σ_s w_s Φ((y − f_s)/σ_s)."""

        def one(phi, lw, sd, xt, yt):
            f = jax.vmap(lambda p: self.apply(p, xt))(phi)
            return jnp.einsum("s,snd->nd", jnp.exp(lw), ndtr((yt[None] - f) / sd[:, None, None]))

        return self._map_tasks(one, x, y)

    def sample_predictive(self, key: Array, x: Array, num_samples: int) -> Array:
        """Draws of y (noise included), ``(T, num_samples, N, Dy)``; samples φ by weight."""
        t = self.num_tasks
        k_idx, k_eps = jax.random.split(key)
        idx = jax.vmap(lambda k, lw: jax.random.categorical(k, lw, shape=(num_samples,)))(
            jax.random.split(k_idx, t), self.log_weights
        )
        phi = jnp.take_along_axis(self.phi, idx[..., None], axis=1)
        sd = jnp.take_along_axis(self.noise_std, idx, axis=1)
        f = jax.vmap(lambda ph, xt: jax.vmap(lambda p: self.apply(p, xt))(ph))(phi, x)
        if self.likelihood == "categorical":
            return jax.random.categorical(k_eps, f, axis=-1)
        return f + sd[:, :, None, None] * jax.random.normal(k_eps, f.shape, f.dtype)

    def resample(self, key: Array, num_samples: int) -> TaskPosterior:
        """Equally weighted posterior of ``num_samples`` draws (multinomial resampling)."""
        idx = jax.vmap(lambda k, lw: jax.random.categorical(k, lw, shape=(num_samples,)))(
            jax.random.split(key, self.num_tasks), self.log_weights
        )
        phi = jnp.take_along_axis(self.phi, idx[..., None], axis=1)
        sd = jnp.take_along_axis(self.noise_std, idx, axis=1)
        return TaskPosterior.from_samples(phi, sd, self.apply, self.likelihood, self.method)

    # -- classification -------------------------------------------------------------------------
    def probs(self, x: Array) -> Array:
        """Predictive class probabilities ``(T, N, C)``: Σ_s w_s softmax(f_φs(x))."""

        def one(phi, lw, _, xt):
            logits = jax.vmap(lambda p: self.apply(p, xt))(phi)
            return jnp.einsum("s,snc->nc", jnp.exp(lw), jax.nn.softmax(logits, -1))

        return self._map_tasks(one, x)

    # -- export ---------------------------------------------------------------------------------
    def to_inference_data(
        self, x: Array | None = None, key: Array | None = None, num_samples: int | None = None
    ):
        """Convert to ``arviz.InferenceData``.

        The posterior group holds ``phi`` with dims ``(chain, draw, task, param)``, the draw
        dimension indexing the S samples (ArviZ's functions need ``chain``/``draw``); with
        ``x (T, N, Dx)`` the ``posterior_predictive`` group holds draws of ``y`` with dims
        ``(chain, draw, task, point, dy)``. Weighted posteriors are resampled first.
        """
        import arviz as az

        post = self
        if not bool(jnp.allclose(self.log_weights, self.log_weights[:, :1])):
            post = self.resample(
                key if key is not None else jax.random.PRNGKey(0),
                num_samples or min(self.num_samples, 1000),
            )
        phi = np.asarray(post.phi).transpose(1, 0, 2)[None]  # (1, S, T, P)
        coords = {"task": np.arange(post.num_tasks)}
        posterior = {"phi": phi, "noise_std": np.asarray(post.noise_std).T[None]}
        dims = {"phi": ["task", "param"], "noise_std": ["task"]}
        kwargs = {}
        if x is not None:
            k = key if key is not None else jax.random.PRNGKey(1)
            draws = post.sample_predictive(k, x, post.num_samples)  # (T, S, N, Dy)
            if draws.ndim == 3:
                draws = draws[..., None]
            kwargs["posterior_predictive"] = {"y": np.asarray(draws).transpose(1, 0, 2, 3)[None]}
            dims["y"] = ["task", "point", "dy"]
            kwargs["constant_data"] = {"x": np.asarray(x)}
            dims["x"] = ["task", "point", "dx"]
        return az.from_dict(
            posterior=posterior, coords=coords, dims=dims, attrs={"method": self.method}, **kwargs
        )
