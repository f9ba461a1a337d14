"""TaskPosterior: weighted samples of task parameters and the predictive they imply.

Every method returns, for T new tasks, S (weighted) samples φ_s of the task parameters and a
function ``apply(φ, x)`` giving the likelihood's location (regression) or logits
(classification). The posterior predictive is the mixture

    p(y* | x*, D_tr) ≈ Σ_s w_s p(y* | f_φs(x*)),        Σ_s w_s = 1,

where w_s = 1/S for sampling methods and quadrature weights for grid references. Every
evaluator works from this mixture — never from a Gaussian fitted to the samples. The one
exception is a posterior that *is* Gaussian and knows it (``gaussian=(μ, Σ)``, the linear and
mixed-model references): its predictive is then the exact Gaussian, of which the samples are
draws.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp, ndtr

from bayesmeta.batching import map_batches
from bayesmeta.likelihoods import LIKELIHOODS as _LIKELIHOOD_OBJECTS
from bayesmeta.likelihoods import _as_value, _over_samples, _per_point, as_likelihood

Array = jax.Array
LIKELIHOODS = tuple(_LIKELIHOOD_OBJECTS)
#: How many floats of activations one batch of the predictive maps may hold (1 GiB in float32;
#: see ``TaskPosterior._batch_size``).
_ACTIVATIONS_PER_BATCH = 2**28


def tasks_per_batch(num_tasks: int, num_samples: int, task_shape, max_floats: int) -> int:
    """How many tasks a batch may hold so that S samples' activations over one task's inputs
    (``task_shape``: points × input size, about 64 floats per input value in a network's first
    layers) stay under ``max_floats``; at least 1, at most ``num_tasks``."""
    per_task = num_samples * math.prod(task_shape) * 64
    return max(1, min(num_tasks, max_floats // max(1, per_task)))


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
    apply : (φ (P,), x (N, Dx)) -> (N, Dy) or (N, C); or (params, φ, x) -> Distribution
        Likelihood location (Gaussian) or logits (categorical); with ``params`` it is called
        ``apply(params, φ, x)``. For ``"generic"`` the model's observation distribution of one
        task's points, batch shape ``(1, N)`` (:meth:`bayesmeta.model.NumPyroModel.observe`).
    likelihood : {"gaussian", "categorical", "generic"}
    method : str
        Name of the method that produced it.
    params : pytree, optional
        The θ passed to ``apply``, shared by every task and sample (e.g. a meta-learned
        embedding network, kept once instead of copied into every φ), or for ``"generic"``
        with ``params_per_sample`` each sample's own (leaves ``(T, S, ...)``, an ensemble).
    params_per_sample : bool
        ``"generic"`` only.
    gaussian : (mean (T, P), cov (T, P, P)), optional
        The exact Gaussian posterior N(μ_t, Σ_t) of φ that the samples were drawn from, where
        ``apply`` is linear in φ and the likelihood Gaussian with one noise scale per task (the
        linear and mixed-model references). The predictive is then exact,
        ``N(f_μ(x), σ² + J Σ Jᵀ)`` with ``J = ∂f/∂φ``: :meth:`log_predictive`, :meth:`mean`,
        :meth:`variance`, :meth:`cdf` and :meth:`pit` use it, free of the Monte Carlo error a
        finite mixture has in its tails; the samples serve everything else (draws, plots,
        acquisition, ArviZ).
    """

    phi: Array
    log_weights: Array
    noise_std: Array
    apply: Callable = field(compare=False)
    likelihood: str = "gaussian"
    method: str = ""
    params: Any = None
    params_per_sample: bool = False
    gaussian: tuple[Array, Array] | None = None

    def __post_init__(self):
        # a name becomes its Likelihood object (a str subclass: it still reads as the name)
        object.__setattr__(self, "likelihood", as_likelihood(self.likelihood))
        _validate(self)

    def bound_apply(self) -> Callable[[Array, Array], Array]:
        """``(φ (P,), x (N, Dx)) -> outputs`` of one sample: ``apply`` with the shared
        ``params`` bound where the posterior has them (not for ``"generic"``)."""
        if self.params is None or self.likelihood.generic:
            return self.apply
        return partial(self.apply, self.params)

    @property
    def num_tasks(self) -> int:
        return self.phi.shape[0]

    @property
    def num_samples(self) -> int:
        return self.phi.shape[1]

    def select(self, idx) -> TaskPosterior:
        """The posterior of tasks ``idx`` (indices or a slice), in that order: per-task
        leaves are indexed, a shared ``params`` is kept."""
        if not isinstance(idx, slice):
            idx = jnp.asarray(np.asarray(idx, dtype=np.int32))
        params = self.params
        if self.params_per_sample:
            params = jax.tree_util.tree_map(lambda a: a[idx], params)
        gaussian = None if self.gaussian is None else tuple(a[idx] for a in self.gaussian)
        return dataclasses.replace(
            self,
            phi=self.phi[idx],
            log_weights=self.log_weights[idx],
            noise_std=self.noise_std[idx],
            params=params,
            gaussian=gaussian,
        )

    @classmethod
    def from_samples(
        cls,
        phi: Array,
        noise_std: Array | float,
        apply: Callable[[Array, Array], Array],
        likelihood: str = "gaussian",
        method: str = "",
        gaussian: tuple[Array, Array] | None = None,
    ) -> TaskPosterior:
        """Equally weighted samples ``phi (T, S, P)`` (of the exact ``gaussian`` posterior,
        where given: see the class)."""
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
        return cls(phi, lw, noise, apply, likelihood, method, gaussian=gaussian)

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
        if self.likelihood.classifier:
            ok, want = y.ndim == 2 and y.shape == x.shape[:2], f"(T, N)={tuple(x.shape[:2])}"
        else:
            ok = y.ndim == 3 and y.shape[:2] == x.shape[:2]
            want = f"(T, N, Dy) with (T, N)={tuple(x.shape[:2])}"
        if not ok:
            raise ValueError(f"y: expected shape {want}, got {tuple(y.shape)}")

    def _batch_size(self, x: Array | None = None) -> int:
        """Tasks per batch of the predictive maps, so that they fit in memory: bounded by the
        number of samples (grid posteriors hold 1e4–1e5) and, given the query inputs
        ``x (T, N, ...)``, by S · N · (the size of one input): an image network's first
        layers hold tens of activations per pixel for every sample and query point."""
        n = 2_000_000 // max(1, self.num_samples * 64)
        if x is not None:
            n = min(n, tasks_per_batch(n, self.num_samples, np.shape(x)[1:],
                                       _ACTIVATIONS_PER_BATCH))  # fmt: skip
        return max(1, min(self.num_tasks, n))

    # -- regression -----------------------------------------------------------------------------
    def log_predictive(self, x: Array, y: Array) -> Array:
        """Log posterior predictive density of each point, ``(T, N)``.

        ``log p(y | x, D) = logsumexp_s [log w_s + log p(y | f_φs(x), σ_s)]``.
        For a categorical likelihood ``y`` is ``(T, N)`` integer labels.
        """
        self._check_xy(x, y)
        if self.gaussian is not None:
            return _exact_log_predictive(self, jnp.asarray(x), jnp.asarray(y))
        return _log_predictive(self, x, y, self._batch_size(x))

    def mean(self, x: Array) -> Array:
        """Predictive mean ``(T, N, Dy)`` (regression) or probabilities ``(T, N, C)``."""
        self._check_x(x)
        if self.likelihood.classifier:
            return self.probs(x)
        if self.gaussian is not None:
            return _exact_moments(self, jnp.asarray(x))[0]
        return _moments(self, x, self._batch_size(x))[0]

    def variance(self, x: Array) -> Array:
        """Predictive variance ``(T, N, Dy)``: E[σ²] + Var[f] under the mixture."""
        self._check_x(x)
        if self.gaussian is not None:
            return _exact_moments(self, jnp.asarray(x))[1]
        return _moments(self, x, self._batch_size(x))[1]

    def cdf(self, x: Array, y: Array) -> Array:
        """Predictive CDF at ``y``, ``(T, N, Dy)``: Σ_s w_s Φ((y − f_s)/σ_s) (Gaussian), or
        Σ_s w_s F_s(y) of the model's own likelihood (from draws where it has no ``cdf``)."""
        self._check_xy(x, y)
        if self.likelihood.generic:
            exact = _generic_info(self, jnp.asarray(x))[1]
            key = jax.random.PRNGKey(0)
            f = _pit_generic(self, key, x, y, self._batch_size(x), False, exact, 256)
        elif self.gaussian is not None:
            f = _exact_cdf(self, jnp.asarray(x), jnp.asarray(y))
        else:
            f = _cdf(self, x, y, self._batch_size(x))
        # a weighted sum of many CDFs in float32 can round past 1 (or below 0)
        return jnp.clip(f, 0.0, 1.0)

    def pit(self, x: Array, y: Array, key: Array | None = None, num_draws: int = 256) -> Array:
        """Probability integral transform of ``y``, ``(T, N, Dy)``: uniform on [0, 1] when y
        is drawn from the predictive.

        The predictive CDF for a continuous likelihood; for a discrete one the randomised PIT
        F(y⁻) + U·(F(y) − F(y⁻)), U ~ U(0, 1) (Czado, Gneiting & Held 2009). Where the
        observation distribution has no ``cdf``, F is estimated from ``num_draws`` draws per
        posterior sample. ``key`` seeds U and the draws (default ``PRNGKey(0)``).
        """
        self._check_xy(x, y)
        if not self.likelihood.generic:
            return self.cdf(x, y)
        key = jax.random.PRNGKey(0) if key is None else key
        discrete, exact = _generic_info(self, jnp.asarray(x))
        u = _pit_generic(self, key, x, y, self._batch_size(x), discrete, exact, int(num_draws))
        return jnp.clip(u, 0.0, 1.0)

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
        return _probs(self, x, self._batch_size(x))

    # -- export ---------------------------------------------------------------------------------
    def posterior_samples(
        self, theta: dict | None = None, key: Array | None = None, num_samples: int | None = None
    ) -> dict[str, Array]:
        """The task posterior as NumPyro ``posterior_samples``, for
        ``numpyro.infer.Predictive(model.model, posterior_samples=...)``.

        ``{"phi": (S, T, 1, P)}`` (the model's per-task site, tasks on dim −2) plus the θ sites
        of ``theta`` (e.g. a fitted state's ``{"mu", "log_sigma"}``) repeated over the S draws;
        for a Gaussian likelihood ``log_noise (S,)`` comes from each draw's own noise scale.
        Weighted posteriors are resampled to ``num_samples`` equally weighted draws first.
        The built-in model's noise is one site for all tasks, so a posterior whose noise differs
        between tasks for the same draw (BMAML's particles) is refused with a clear error.
        """
        post = self
        weighted = not bool(jnp.allclose(self.log_weights, self.log_weights[:, :1]))
        if weighted or num_samples is not None:
            k = key if key is not None else jax.random.PRNGKey(0)
            post = self.resample(k, num_samples or self.num_samples)
        out: dict[str, Array] = {"phi": jnp.swapaxes(post.phi, 0, 1)[:, :, None, :]}
        s = post.num_samples
        for name, value in (theta or {}).items():
            if name == "log_noise":
                continue
            value = jnp.asarray(value)
            out[name] = jnp.broadcast_to(value, (s, *value.shape))
        if self.likelihood.has_noise:
            noise = post.noise_std  # (T, S)
            if not bool(jnp.allclose(noise, noise[:1])):
                raise ValueError(
                    "posterior_samples: this posterior's noise scale differs between tasks for "
                    "the same draw, and the model's log_noise is one site for every task; use "
                    "sample_predictive for its predictive draws"
                )
            out["log_noise"] = jnp.log(noise[0])
        return out

    def log_likelihood_samples(self, x: Array, y: Array) -> Array:
        """Pointwise log-likelihood of every sample, ``(T, S, N)``: log p(y_n | x_n, φ_s)."""
        self._check_xy(x, y)
        return _pointwise(self, jnp.asarray(x), jnp.asarray(y))

    def to_inference_data(
        self,
        x: Array | None = None,
        key: Array | None = None,
        num_samples: int | None = None,
        y: Array | None = None,
        chains: int = 1,
        sites=None,
        theta: dict | None = None,
    ):
        """Convert to ``arviz.InferenceData``.

        ``sites`` (a function of the draws ``phi (S, T, P)`` returning named arrays
        ``(S, T, ...)``; :meth:`Fitted.inference_data <bayesmeta.fitted.Fitted.inference_data>`
        passes the model's own) replaces the flat ``phi`` by the model's named per-task sites,
        and ``theta`` (named arrays) adds the meta-parameters, the same in every draw.

        ``chains`` splits the S draws into that many chains of S / chains draws (S must divide),
        so that ``az.rhat`` and ``az.ess`` compare groups of draws: for independent draws (the
        exact or encoder posteriors) R-hat near 1 is what they should show.

        The posterior group holds ``phi`` with dims ``(chain, draw, task, param)``, the draw
        dimension indexing the S samples (ArviZ's functions need ``chain``/``draw``); with
        ``x (T, N, Dx)`` the ``posterior_predictive`` group holds draws of ``y`` with dims
        ``(chain, draw, task, point, dy)`` and ``constant_data`` holds ``x``; with ``y`` too
        (the query targets), ``observed_data`` holds ``y`` and ``log_likelihood`` the pointwise
        log p(y | x, φ_s) with dims ``(chain, draw, task, point)``, so that ``az.loo``,
        ``az.waic``, ``az.compare`` and ``az.plot_ppc`` work. Weighted posteriors are
        resampled first.
        """
        import arviz as az

        post = self
        if not bool(jnp.allclose(self.log_weights, self.log_weights[:, :1])):
            post = self.resample(
                key if key is not None else jax.random.PRNGKey(0),
                num_samples or min(self.num_samples, 1000),
            )
        if not (isinstance(chains, int) and chains >= 1 and post.num_samples % chains == 0):
            raise ValueError(
                f"chains: expected a positive divisor of the {post.num_samples} draws, got "
                f"{chains!r}"
            )

        def chained(a):
            """``(S, ...)`` draws as ``(chains, S / chains, ...)``."""
            return np.asarray(a).reshape(chains, -1, *np.shape(a)[1:])

        if post.num_samples == 1:
            warnings.warn(
                f"to_inference_data: the {self.method!r} posterior is one draw (a point "
                "estimate); ArviZ's loo, waic, rhat and ess need several draws and fail on it",
                UserWarning,
                stacklevel=2,
            )
        coords = {"task": np.arange(post.num_tasks)}
        draws = np.asarray(post.phi).transpose(1, 0, 2)  # (S, T, P)
        if sites is None:
            posterior = {"phi": chained(draws)}  # (C, S / C, T, P)
            dims = {"phi": ["task", "param"]}
        else:
            posterior, dims = {}, {}
            for name, value in sites(draws).items():
                value = np.asarray(value)
                posterior[name] = chained(value)
                dims[name] = ["task", *(f"{name}_dim_{i}" for i in range(value.ndim - 2))]
        for name, value in (theta or {}).items():
            value = np.asarray(value)
            posterior[name] = chained(np.broadcast_to(value, (post.num_samples, *value.shape)))
        if self.likelihood.has_noise:  # a noise scale only where the likelihood has one
            posterior["noise_std"] = chained(np.asarray(post.noise_std).T)
            dims["noise_std"] = ["task"]
        kwargs = {}
        if x is not None:
            k = key if key is not None else jax.random.PRNGKey(1)
            draws = _sample_predictive(post, k, jnp.asarray(x))  # (T, S, N, Dy), draw d from φ_d
            if draws.ndim == 3:
                draws = draws[..., None]
            kwargs["posterior_predictive"] = {"y": chained(np.asarray(draws).transpose(1, 0, 2, 3))}
            dims["y"] = ["task", "point", "dy"]
            kwargs["constant_data"] = {"x": np.asarray(x)}
            dims["x"] = ["task", "point", "dx"]
            if y is not None:
                yy = jnp.asarray(y)
                ll = post.log_likelihood_samples(x, yy)  # (T, S, N)
                # float64: ArviZ's PSIS (az.loo) takes logs of sums of exp(log-likelihoods),
                # which underflow in float32 for counts far in a tail
                ll64 = np.asarray(ll, np.float64).transpose(1, 0, 2)
                kwargs["log_likelihood"] = {"y": chained(ll64)}
                obs = np.asarray(yy)
                kwargs["observed_data"] = {"y": obs[..., None] if obs.ndim == 2 else obs}
        elif y is not None:
            raise ValueError("y: the observed targets need their inputs x (T, N, Dx) too")
        if "log_likelihood" in kwargs:
            # the log-likelihood's dims differ from y's (no dy): give it its own dims entry
            kwargs["dims"] = dims
            idata = az.from_dict(
                posterior=posterior,
                coords=coords,
                attrs={"method": self.method},
                **{k: v for k, v in kwargs.items() if k != "log_likelihood"},
            )
            ll = az.from_dict(
                log_likelihood=kwargs["log_likelihood"],
                coords=coords,
                dims={"y": ["task", "point"]},
            )
            idata.extend(ll)
            return idata
        return az.from_dict(
            posterior=posterior, coords=coords, dims=dims, attrs={"method": self.method}, **kwargs
        )


# -- validation -----------------------------------------------------------------------------------
def _concrete(a) -> bool:
    return isinstance(a, np.ndarray | jax.Array) and not isinstance(a, jax.core.Tracer)


def concatenate(posteriors: Sequence[TaskPosterior]) -> TaskPosterior:
    """One posterior over the tasks of several, in order (e.g. the batches of tasks a method
    was adapted to one at a time). They must come from one method: same likelihood, ``apply``
    and, unless ``params_per_sample``, the same shared ``params`` (the first one's is kept)."""
    posteriors = list(posteriors)
    if not posteriors:
        raise ValueError("posteriors: expected at least one TaskPosterior, got none")
    first = posteriors[0]
    for i, p in enumerate(posteriors[1:], 1):
        if (p.likelihood, p.method, p.params_per_sample, p.num_samples) != (
            first.likelihood, first.method, first.params_per_sample, first.num_samples
        ):  # fmt: skip
            raise ValueError(
                f"posteriors[{i}]: expected likelihood {first.likelihood!r}, method "
                f"{first.method!r} and {first.num_samples} samples like posteriors[0], got "
                f"{p.likelihood!r}, {p.method!r} and {p.num_samples}"
            )

    def cat(*leaves):
        return jnp.concatenate(leaves, axis=0)

    params = first.params
    if first.params_per_sample:
        params = jax.tree_util.tree_map(cat, *(p.params for p in posteriors))
    gaussian = None  # exact only where every part is
    if all(p.gaussian is not None for p in posteriors):
        parts = zip(*(p.gaussian for p in posteriors), strict=True)
        gaussian = tuple(cat(*part) for part in parts)
    return dataclasses.replace(
        first,
        phi=cat(*(p.phi for p in posteriors)),
        log_weights=cat(*(p.log_weights for p in posteriors)),
        noise_std=cat(*(p.noise_std for p in posteriors)),
        params=params,
        gaussian=gaussian,
    )


_DATA_FIELDS = ("phi", "log_weights", "noise_std", "params", "gaussian")
_META_FIELDS = ("apply", "likelihood", "method", "params_per_sample")


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
    if post.params_per_sample and not post.likelihood.generic:
        raise ValueError(
            f"params_per_sample: only a 'generic' likelihood has per-sample params, got "
            f"likelihood {post.likelihood!r}"
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
    if post.gaussian is not None:
        if not post.likelihood.gaussian:
            raise ValueError(
                f"gaussian: an exact Gaussian posterior needs a Gaussian likelihood, got "
                f"{post.likelihood!r}"
            )
        p = phi.shape[2]
        try:
            mean, cov = post.gaussian
            shapes = (tuple(np.shape(mean)), tuple(np.shape(cov)))
        except (TypeError, ValueError):
            shapes = None
        if shapes != ((t, p), (t, p, p)):
            raise ValueError(
                f"gaussian: expected (mean (T, P)=({t}, {p}), cov (T, P, P)=({t}, {p}, {p})), "
                f"got {shapes if shapes is not None else type(post.gaussian).__name__}"
            )


# -- a model's own observation distribution ("generic") -----------------------------------------
def _base_dist(fn):
    from bayesmeta.model import _base_dist as base

    return base(fn)


def _obs(post: TaskPosterior, params, phi: Array, xt: Array):
    """The observation distribution of one sample (θ, φ) on one task's ``xt (N, Dx)``."""
    return post.apply(params, phi, xt)


def has_cdf(fn) -> bool:
    """Whether the (unwrapped) distribution implements ``cdf``."""
    import numpyro.distributions as dist

    return type(_base_dist(fn)).cdf is not dist.Distribution.cdf


def _generic_info(post: TaskPosterior, x: Array) -> tuple[bool, bool]:
    """``(discrete, has_cdf)`` of the posterior's observation distribution (traced once)."""
    holder = {}

    def probe(params, phi, xt):
        d = _obs(post, params, phi, xt)
        holder["info"] = (bool(d.support.is_discrete), has_cdf(d))
        return jnp.zeros(())

    first = post.params
    if post.params_per_sample:
        first = jax.tree_util.tree_map(lambda a: a[0, 0], post.params)
    jax.eval_shape(probe, first, post.phi[0, 0], x[0])
    return holder["info"]


# -- kernels: module-level and jitted, so repeated calls reuse one compilation -----------------
# Each maps one of the likelihood's per-task kernels (bayesmeta.likelihoods) over the tasks.
def _task_outputs(post: TaskPosterior, phi: Array, xt: Array) -> Array:
    f = post.bound_apply()
    return jax.vmap(lambda p: f(p, xt))(phi)


@jax.jit
def _outputs(post: TaskPosterior, x: Array) -> Array:
    return post.likelihood.outputs(post, x)


def _map(post: TaskPosterior, fn, args, batch_size: int):
    """``fn(phi (S, P), log_w (S,), noise (S,), params, *args)`` over tasks, in batches;
    ``params`` is the task's per-sample θ ``(S, ...)`` or the shared θ."""
    if post.params_per_sample:
        xs = (post.phi, post.log_weights, post.noise_std, post.params, *args)
        return map_batches(lambda a: fn(*a), xs, batch_size)
    xs = (post.phi, post.log_weights, post.noise_std, *args)
    return map_batches(lambda a: fn(a[0], a[1], a[2], post.params, *a[3:]), xs, batch_size)


@partial(jax.jit, static_argnums=3)
def _log_predictive(post: TaskPosterior, x: Array, y: Array, batch_size: int) -> Array:
    lik = post.likelihood

    def one(phi, lw, sd, params, xt, yt):
        return logsumexp(lw[:, None] + lik.task_log_prob(post, phi, sd, params, xt, yt), axis=0)

    return _map(post, one, (x, y), batch_size)


@partial(jax.jit, static_argnums=2)
def _moments(post: TaskPosterior, x: Array, batch_size: int) -> tuple[Array, Array]:
    lik = post.likelihood

    def one(phi, lw, sd, params, xt):
        return lik.task_moments(post, phi, lw, sd, params, xt)

    return _map(post, one, (x,), batch_size)


def _exact_task(post: TaskPosterior, mean: Array, cov: Array, xt: Array) -> tuple[Array, Array]:
    """Location ``f_μ(x) (N, Dy)`` and covariance ``J Σ Jᵀ (N, Dy, Dy)`` of one task whose
    ``apply`` is linear in φ, so that f_φ(x_n) ~ N(f_μ(x_n), J_n Σ J_nᵀ) exactly under
    φ ~ N(μ, Σ)."""
    f = post.bound_apply()
    loc = f(mean, xt)
    jac = jax.jacfwd(lambda w: f(w, xt))(mean)  # (N, Dy, P)
    return loc, jnp.einsum("ndp,pq,neq->nde", jac, cov, jac)


def _exact_cov(post: TaskPosterior, x: Array) -> tuple[Array, Array]:
    """Exact predictive location ``(T, N, Dy)`` and covariance ``(T, N, Dy, Dy)``."""
    mean, cov = post.gaussian
    loc, c = jax.vmap(lambda m, s, xt: _exact_task(post, m, s, xt))(mean, cov, x)
    eye = jnp.eye(loc.shape[-1], dtype=loc.dtype)
    return loc, c + (post.noise_std[:, 0] ** 2)[:, None, None, None] * eye


@jax.jit
def _exact_moments(post: TaskPosterior, x: Array) -> tuple[Array, Array]:
    """Exact predictive mean and variance ``(T, N, Dy)`` of a Gaussian posterior."""
    loc, c = _exact_cov(post, x)
    return loc, jnp.diagonal(c, axis1=-2, axis2=-1)


@jax.jit
def _exact_log_predictive(post: TaskPosterior, x: Array, y: Array) -> Array:
    """``(T, N)``: log N(y_n | f_μ(x_n), σ² I + J_n Σ J_nᵀ), the exact predictive."""
    loc, c = _exact_cov(post, x)
    chol = jnp.linalg.cholesky(c)
    z = jax.scipy.linalg.solve_triangular(chol, (y - loc)[..., None], lower=True)[..., 0]
    logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
    return -0.5 * jnp.sum(z**2, -1) - logdet - 0.5 * loc.shape[-1] * math.log(2 * math.pi)


@jax.jit
def _exact_cdf(post: TaskPosterior, x: Array, y: Array) -> Array:
    """Exact predictive CDF per output, ``(T, N, Dy)``."""
    loc, var = _exact_moments(post, x)
    return ndtr((y - loc) / jnp.sqrt(var))


@partial(jax.jit, static_argnums=3)
def _cdf(post: TaskPosterior, x: Array, y: Array, batch_size: int) -> Array:
    lik = post.likelihood

    def one(phi, lw, sd, params, xt, yt):
        return lik.task_cdf(post, phi, lw, sd, xt, yt)

    return _map(post, one, (x, y), batch_size)


@partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _pit_generic(
    post: TaskPosterior,
    key: Array,
    x: Array,
    y: Array,
    batch_size: int,
    randomise: bool,
    exact: bool,
    num_draws: int,
) -> Array:
    """Σ_s w_s F_s(y) of a model's own likelihood, ``(T, N, Dy)``; with ``randomise`` the
    randomised PIT F(y⁻) + U·P(y) of a discrete y; from ``num_draws`` draws per sample where
    there is no cdf (``exact=False``)."""
    keys = jax.random.split(key, post.num_tasks)

    def one(phi, lw, _, params, xt, yt, k):
        w = jnp.exp(lw)
        n = xt.shape[0]

        def below(th, p, kk):  # (P(Y < y), P(Y <= y)) per point under sample p
            d = _obs(post, th, p, xt)
            v = _as_value(d, yt)
            if exact:
                base = _base_dist(d)
                hi = _per_point(jnp.broadcast_to(base.cdf(v), v.shape), n)
                lo = _per_point(jnp.broadcast_to(base.cdf(v - 1), v.shape), n) if randomise else hi
                return lo, hi
            draws = d.sample(kk, (num_draws,))  # (R, 1, N[, Dy])
            lo = _per_point(jnp.mean(draws < v, axis=0), n)
            hi = _per_point(jnp.mean(draws <= v, axis=0), n)
            return lo, hi

        k_draw, k_u = jax.random.split(k)
        lo, hi = _over_samples(post, below, params, phi, jax.random.split(k_draw, phi.shape[0]))
        lo, hi = jnp.einsum("s,snd->nd", w, lo), jnp.einsum("s,snd->nd", w, hi)
        if not randomise:
            return hi
        return lo + jax.random.uniform(k_u, hi.shape, hi.dtype) * (hi - lo)

    return _map(post, one, (x, y, keys), batch_size)


@jax.jit
def _pointwise(post: TaskPosterior, x: Array, y: Array) -> Array:
    """log p(y_n | x_n, φ_s) of every task, sample and point, ``(T, S, N)``."""
    lik = post.likelihood
    if lik.generic:
        return lik.all_log_prob(post, x, y)
    return lik.pointwise(_outputs(post, x), post.noise_std, y)


@partial(jax.jit, static_argnums=2)
def _probs(post: TaskPosterior, x: Array, batch_size: int) -> Array:
    def one(phi, lw, _, __, xt):
        logp = jax.nn.log_softmax(_task_outputs(post, phi, xt), -1)
        lp = logsumexp(lw[:, None, None] + logp, axis=0)
        # Renormalise: the weights sum to 1 only up to rounding (a 10⁵-node grid in float32).
        return jnp.exp(lp - logsumexp(lp, axis=-1, keepdims=True))

    return _map(post, one, (x,), batch_size)


@partial(jax.jit, static_argnums=2)
def _resample(post: TaskPosterior, key: Array, num_samples: int) -> TaskPosterior:
    idx = jax.vmap(lambda k, lw: jax.random.categorical(k, lw, shape=(num_samples,)))(
        jax.random.split(key, post.num_tasks), post.log_weights
    )
    phi = jnp.take_along_axis(post.phi, idx[..., None], axis=1)
    sd = jnp.take_along_axis(post.noise_std, idx, axis=1)
    lw = jnp.full(idx.shape, -math.log(num_samples), phi.dtype)
    params = post.params
    if post.params_per_sample:
        params = jax.tree_util.tree_map(lambda a: jax.vmap(lambda ai, ii: ai[ii])(a, idx), params)
    meta = (post.apply, post.likelihood, post.method, post.params_per_sample)
    # resampled draws still stand for the same posterior: its exact form is kept
    return _unflatten(meta, (phi, lw, sd, params, post.gaussian))


@jax.jit
def _sample_predictive(post: TaskPosterior, key: Array, x: Array) -> Array:
    """One draw of y per sample φ_s (draw s comes from φ_s)."""
    return post.likelihood.draw(post, key, x)
