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

    def __post_init__(self):
        _validate(self)

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
        if not hasattr(phi, "ndim"):
            phi = jnp.asarray(phi)
        if phi.ndim != 3:
            raise ValueError(f"phi: expected shape (T, S, P), got {tuple(phi.shape)}")
        if not jnp.issubdtype(phi.dtype, jnp.floating):
            raise TypeError(f"phi: expected a floating-point array, got dtype {phi.dtype}")
        t, s = phi.shape[:2]
        if t < 1 or s < 1:
            raise ValueError(f"phi: expected T >= 1 tasks and S >= 1 samples, got {phi.shape}")
        lw = jnp.full((t, s), -math.log(s), phi.dtype)
        noise = jnp.asarray(noise_std, phi.dtype)
        if noise.ndim == 1:  # one noise level per task
            if noise.shape[0] != t:
                raise ValueError(
                    f"noise_std: expected a scalar, (T,)=({t},) or (T, S)=({t}, {s}), "
                    f"got {tuple(noise.shape)}"
                )
            noise = noise[:, None]
        if noise.ndim > 2 or any(
            n not in (1, m) for n, m in zip(noise.shape[::-1], (s, t), strict=False)
        ):
            raise ValueError(
                f"noise_std: expected a scalar, (T,)=({t},) or (T, S)=({t}, {s}), "
                f"got {tuple(noise.shape)}"
            )
        noise = jnp.broadcast_to(noise, (t, s))
        return cls(phi, lw, noise, apply, likelihood, method)

    # -- per-sample outputs -------------------------------------------------------------------
    def outputs(self, x: Array) -> Array:
        """Per-sample likelihood locations or logits, ``x (T, N, Dx)`` -> ``(T, S, N, Dy)``."""
        self._check_x(x)
        return _outputs(self, x)

    def _check_x(self, x: Array) -> None:
        x = jnp.asarray(x)
        if x.ndim != 3 or x.shape[0] != self.num_tasks:
            raise ValueError(
                f"x: expected shape (T, N, Dx) with T={self.num_tasks}, got {tuple(x.shape)}"
            )

    def _check_xy(self, x: Array, y: Array) -> None:
        self._check_x(x)
        y = jnp.asarray(y)
        if self.likelihood == "categorical":
            ok, want = y.ndim == 2 and y.shape == x.shape[:2], f"(T, N)={tuple(x.shape[:2])}"
        else:
            ok = y.ndim == 3 and y.shape[:2] == x.shape[:2]
            want = f"(T, N, Dy) with (T, N)={tuple(x.shape[:2])}"
        if not ok:
            raise ValueError(f"y: expected shape {want}, got {tuple(y.shape)}")

    def _batch_size(self) -> int:
        # Tasks one batch at a time, so that grid posteriors (S ~ 1e4–1e5) fit in memory.
        return max(1, min(self.num_tasks, 2_000_000 // max(1, self.num_samples * 64)))

    # -- regression -----------------------------------------------------------------------------
    def log_predictive(self, x: Array, y: Array) -> Array:
        """Log posterior predictive density of each point, ``(T, N)``.

        ``log p(y | x, D) = logsumexp_s [log w_s + log p(y | f_φs(x), σ_s)]``.
        For a categorical likelihood ``y`` is ``(T, N)`` integer labels.
        """
        self._check_xy(x, y)
        return _log_predictive(self, x, y, self._batch_size())

    def mean(self, x: Array) -> Array:
        """Predictive mean ``(T, N, Dy)`` (regression) or probabilities ``(T, N, C)``."""
        self._check_x(x)
        if self.likelihood == "categorical":
            return self.probs(x)
        return _moments(self, x, self._batch_size())[0]

    def variance(self, x: Array) -> Array:
        """Predictive variance ``(T, N, Dy)``: E[σ²] + Var[f] under the mixture."""
        self._check_x(x)
        return _moments(self, x, self._batch_size())[1]

    def cdf(self, x: Array, y: Array) -> Array:
        """Predictive CDF at ``y`` (the PIT values), ``(T, N, Dy)``: Σ_s w_s Φ((y − f_s)/σ_s)."""
        self._check_xy(x, y)
        return _cdf(self, x, y, self._batch_size())

    def sample_predictive(self, key: Array, x: Array, num_samples: int) -> Array:
        """Draws of y (noise included), ``(T, num_samples, N, Dy)``; samples φ by weight."""
        self._check_x(x)
        return _sample_predictive(self.resample(key, num_samples), jax.random.fold_in(key, 1), x)

    def resample(self, key: Array, num_samples: int) -> TaskPosterior:
        """Equally weighted posterior of ``num_samples`` draws (multinomial resampling)."""
        if int(num_samples) < 1:
            raise ValueError(f"num_samples: expected a positive integer, got {num_samples}")
        return _resample(self, key, int(num_samples))

    # -- classification -------------------------------------------------------------------------
    def probs(self, x: Array) -> Array:
        """Predictive class probabilities ``(T, N, C)``: Σ_s w_s softmax(f_φs(x))."""
        self._check_x(x)
        return _probs(self, x, self._batch_size())

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
            draws = _sample_predictive(post, k, jnp.asarray(x))  # (T, S, N, Dy), draw d from φ_d
            if draws.ndim == 3:
                draws = draws[..., None]
            kwargs["posterior_predictive"] = {"y": np.asarray(draws).transpose(1, 0, 2, 3)[None]}
            dims["y"] = ["task", "point", "dy"]
            kwargs["constant_data"] = {"x": np.asarray(x)}
            dims["x"] = ["task", "point", "dx"]
        return az.from_dict(
            posterior=posterior, coords=coords, dims=dims, attrs={"method": self.method}, **kwargs
        )


# -- validation -----------------------------------------------------------------------------------
def _concrete(a) -> bool:
    return isinstance(a, np.ndarray | jax.Array) and not isinstance(a, jax.core.Tracer)


_DATA_FIELDS = ("phi", "log_weights", "noise_std")
_META_FIELDS = ("apply", "likelihood", "method")


def _flatten(post: TaskPosterior):
    return tuple(getattr(post, f) for f in _DATA_FIELDS), tuple(
        getattr(post, f) for f in _META_FIELDS
    )


def _unflatten(meta, data) -> TaskPosterior:
    # JAX rebuilds posteriors with batched or placeholder leaves (vmap, scan, tree_map):
    # construct without __post_init__, whose checks are for posteriors users build.
    obj = object.__new__(TaskPosterior)
    for name, value in zip((*_DATA_FIELDS, *_META_FIELDS), (*data, *meta), strict=True):
        object.__setattr__(obj, name, value)
    return obj


jax.tree_util.register_pytree_node(TaskPosterior, _flatten, _unflatten)


def _validate(post: TaskPosterior) -> None:
    """Shape and type checks of a constructed posterior (no device sync: values are not read).

    Skipped when the data fields are not concrete arrays (tracers inside ``jit``/``vmap``, or
    placeholders while JAX rebuilds the pytree), where shapes may legitimately differ.
    """
    if post.likelihood not in ("gaussian", "categorical"):
        raise ValueError(
            f"likelihood: expected 'gaussian' or 'categorical', got {post.likelihood!r}"
        )
    if not callable(post.apply):
        raise TypeError(f"apply: expected a callable (phi, x) -> outputs, got {post.apply!r}")
    phi, lw, sd = post.phi, post.log_weights, post.noise_std
    if not all(_concrete(a) for a in (phi, lw, sd)):
        return
    if phi.ndim != 3:
        raise ValueError(f"phi: expected shape (T, S, P), got {tuple(phi.shape)}")
    t, s = phi.shape[:2]
    if t < 1 or s < 1:
        raise ValueError(f"phi: expected T >= 1 tasks and S >= 1 samples, got {phi.shape}")
    for name, a in (("phi", phi), ("log_weights", lw), ("noise_std", sd)):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"{name}: expected a floating-point array, got dtype {a.dtype}")
    for name, a in (("log_weights", lw), ("noise_std", sd)):
        if tuple(a.shape) != (t, s):
            raise ValueError(
                f"{name}: expected shape (T, S)=({t}, {s}) matching phi {tuple(phi.shape)}, "
                f"got {tuple(a.shape)}"
            )


# -- kernels: module-level and jitted, so repeated calls reuse one compilation -----------------
def _task_outputs(post: TaskPosterior, phi: Array, xt: Array) -> Array:
    return jax.vmap(lambda p: post.apply(p, xt))(phi)


@jax.jit
def _outputs(post: TaskPosterior, x: Array) -> Array:
    return jax.vmap(lambda ph, xt: _task_outputs(post, ph, xt))(post.phi, x)


def _map_tasks(post: TaskPosterior, fn, args, batch_size: int):
    return jax.lax.map(
        lambda a: fn(*a), (post.phi, post.log_weights, post.noise_std, *args), batch_size=batch_size
    )


@partial(jax.jit, static_argnums=3)
def _log_predictive(post: TaskPosterior, x: Array, y: Array, batch_size: int) -> Array:
    if post.likelihood == "categorical":

        def one(phi, lw, _, xt, yt):
            lp = jax.nn.log_softmax(_task_outputs(post, phi, xt), -1)  # (S, N, C)
            lp = jnp.take_along_axis(lp, yt[None, :, None].astype(jnp.int32), -1)[..., 0]
            return logsumexp(lw[:, None] + lp, axis=0)
    else:

        def one(phi, lw, sd, xt, yt):
            f = _task_outputs(post, phi, xt)  # (S, N, Dy)
            z = (yt[None] - f) / sd[:, None, None]
            lp = -0.5 * z**2 - jnp.log(sd)[:, None, None] - 0.5 * math.log(2 * math.pi)
            return logsumexp(lw[:, None] + jnp.sum(lp, -1), axis=0)

    return _map_tasks(post, one, (x, y), batch_size)


@partial(jax.jit, static_argnums=2)
def _moments(post: TaskPosterior, x: Array, batch_size: int) -> tuple[Array, Array]:
    def one(phi, lw, sd, xt):
        f = _task_outputs(post, phi, xt)
        w = jnp.exp(lw)
        m = jnp.einsum("s,snd->nd", w, f)
        return m, jnp.einsum("s,snd->nd", w, (f - m) ** 2) + jnp.sum(w * sd**2)

    return _map_tasks(post, one, (x,), batch_size)


@partial(jax.jit, static_argnums=3)
def _cdf(post: TaskPosterior, x: Array, y: Array, batch_size: int) -> Array:
    def one(phi, lw, sd, xt, yt):
        f = _task_outputs(post, phi, xt)
        return jnp.einsum("s,snd->nd", jnp.exp(lw), ndtr((yt[None] - f) / sd[:, None, None]))

    return _map_tasks(post, one, (x, y), batch_size)


@partial(jax.jit, static_argnums=2)
def _probs(post: TaskPosterior, x: Array, batch_size: int) -> Array:
    def one(phi, lw, _, xt):
        logp = jax.nn.log_softmax(_task_outputs(post, phi, xt), -1)
        lp = logsumexp(lw[:, None, None] + logp, axis=0)
        # Renormalise: the weights sum to 1 only up to rounding (a 10⁵-node grid in float32).
        return jnp.exp(lp - logsumexp(lp, axis=-1, keepdims=True))

    return _map_tasks(post, one, (x,), batch_size)


@partial(jax.jit, static_argnums=2)
def _resample(post: TaskPosterior, key: Array, num_samples: int) -> TaskPosterior:
    idx = jax.vmap(lambda k, lw: jax.random.categorical(k, lw, shape=(num_samples,)))(
        jax.random.split(key, post.num_tasks), post.log_weights
    )
    phi = jnp.take_along_axis(post.phi, idx[..., None], axis=1)
    sd = jnp.take_along_axis(post.noise_std, idx, axis=1)
    return TaskPosterior.from_samples(phi, sd, post.apply, post.likelihood, post.method)


@jax.jit
def _sample_predictive(post: TaskPosterior, key: Array, x: Array) -> Array:
    """One draw of y per sample φ_s (draw s comes from φ_s)."""
    f = _outputs(post, x)
    if post.likelihood == "categorical":
        return jax.random.categorical(key, f, axis=-1)
    return f + post.noise_std[:, :, None, None] * jax.random.normal(key, f.shape, f.dtype)
