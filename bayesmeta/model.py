"""The hierarchical model, written once as a NumPyro model.

    μ ~ N(0, s_μ² I),   log σ ~ N(log σ0, s_σ² I),   log σ_y ~ N(log σ_y0, s_y²)   (θ, hyper-prior)
    φ_i | θ ~ N(μ, diag σ²)                                   i = 1..T   (plate "tasks")
    y_ij | x_ij, φ_i ~ N(f_φi(x_ij), σ_y²)  or  Cat(softmax f_φi(x_ij))  (plate "points")

φ is the flat weight vector of a functional network (:mod:`bayesmeta.nn`). Every inference
method obtains log p(D | φ), log p(φ | θ) and log p(θ) from :meth:`HierarchicalModel.model` by
tracing it with substituted values, so a user who changes the network, the prior or the
likelihood gets every method for free. For this class's own model the same densities are
also written in closed form (about 20% of a MAML meta-step saved on the sinusoid) and tested
equal to the traced ones, values and gradients; a subclass that overrides ``model`` is always
traced.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro import handlers

from bayesmeta.likelihoods import GENERIC, as_likelihood
from bayesmeta.nn import Network

Array = jax.Array
Theta = dict[str, Array]

LIKELIHOODS = ("gaussian", "categorical")  # of the built-in model (bayesmeta.likelihoods)


@dataclass(frozen=True)
class HierarchicalModel:
    """A hierarchical model over network weights.

    Parameters
    ----------
    network : Network
        Functional network ``f_φ``; its flat parameter vector is φ.
    likelihood : {"gaussian", "categorical"}
    dx : int
        Input dimension.
    num_classes : int, optional
        Number of classes (categorical likelihood).
    prior_scale : float or tuple of float
        Initial prior standard deviation σ0 of the weights (also the hyper-prior's centre):
        one value for all, or one per layer (per top-level entry of the network's
        parameters), e.g. a wider prior on the output layer, whose weights set the spread of
        the prior predictive.
    noise_init : float
        Initial observation noise σ_y0 (Gaussian likelihood).
    hyper_mu_scale, hyper_log_sigma_scale, hyper_log_noise_scale : float
        Scales of the weak hyper-prior on θ.
    """

    network: Network
    likelihood: str = "gaussian"
    dx: int = 1
    num_classes: int | None = None
    prior_scale: float | tuple[float, ...] = 1.0
    noise_init: float = 0.5
    hyper_mu_scale: float = 10.0
    hyper_log_sigma_scale: float = 2.0
    hyper_log_noise_scale: float = 2.0
    _unravel: Callable = field(init=False, repr=False, compare=False)
    _num_params: int = field(init=False, repr=False, compare=False)
    _log_scale0: Array = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "likelihood", as_likelihood(self.likelihood, LIKELIHOODS))
        if self.likelihood.classifier and not self.num_classes:
            raise ValueError("num_classes: required for a categorical likelihood, got None")
        scales = self.prior_scale if isinstance(self.prior_scale, tuple) else (self.prior_scale,)
        if not all(float(v) > 0 for v in scales) or not self.noise_init > 0:
            raise ValueError(
                f"prior_scale, noise_init: expected > 0, got {self.prior_scale}, {self.noise_init}"
            )
        params = self.network.init(jax.random.PRNGKey(0))
        flat, unravel = ravel_pytree(params)
        if isinstance(self.prior_scale, tuple):
            if not isinstance(params, list | tuple) or len(params) != len(self.prior_scale):
                n = len(params) if isinstance(params, list | tuple) else 1
                raise ValueError(
                    f"prior_scale: expected a float or one value per layer ({n}), "
                    f"got {self.prior_scale}"
                )
            tree = [
                jax.tree_util.tree_map(lambda a, v=v: jnp.full(a.shape, math.log(v)), layer)
                for layer, v in zip(params, self.prior_scale, strict=True)
            ]
            log_scale = ravel_pytree(tree)[0]
        else:
            log_scale = jnp.full(flat.shape, math.log(self.prior_scale))
        object.__setattr__(self, "_unravel", unravel)
        object.__setattr__(self, "_num_params", int(flat.shape[0]))
        object.__setattr__(self, "_log_scale0", log_scale)

    # -- structure --------------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        """P, the length of the flat task parameter vector φ."""
        return self._num_params

    @property
    def dy(self) -> int:
        return 1 if self.likelihood.classifier else self._output_dim

    @property
    def observation(self) -> tuple[Any, str]:
        """``(support, name)`` of the observation distribution (as :class:`NumPyroModel`)."""
        if self.likelihood.classifier:
            return dist.constraints.integer_interval(0, self.num_classes - 1), "Categorical"
        return dist.constraints.real, "Normal"

    @property
    def _output_dim(self) -> int:
        out = jax.eval_shape(
            lambda: self.apply(jnp.zeros(self.num_params), jnp.zeros((1, self.dx)))
        )
        return int(out.shape[-1])

    def apply(self, phi: Array, x: Array) -> Array:
        """Network output ``f_φ(x)`` for flat ``phi (P,)`` and ``x (N, Dx)``."""
        return self.network.apply(self._unravel(phi), x)

    def init_theta(self, key: Array) -> Theta:
        """θ at initialisation: μ = a network initialisation, σ = σ0, σ_y = σ_y0."""
        mu, _ = self.network.flat(key)
        theta = {"mu": mu, "log_sigma": self._log_scale0.astype(mu.dtype)}
        if self.likelihood.has_noise:
            theta["log_noise"] = jnp.asarray(math.log(self.noise_init), mu.dtype)
        return theta

    def noise_std(self, theta: Theta) -> Array:
        """σ_y = exp(log σ_y) (ones for a categorical likelihood)."""
        if self.likelihood.has_noise:
            return jnp.exp(theta["log_noise"])
        return jnp.ones(())

    def prior(self, theta: Theta) -> dist.Distribution:
        """p(φ | θ) = N(μ, diag σ²), event shape (P,)."""
        return dist.Normal(theta["mu"], jnp.exp(theta["log_sigma"])).to_event(1)

    # -- the NumPyro model ------------------------------------------------------------------
    def model(self, x: Array, y: Array | None = None, mask: Array | None = None) -> None:
        """The NumPyro model for T tasks: ``x (T, N, Dx)``, ``y (T, N, Dy)`` or ``(T, N)`` int.

        ``mask (T, N)`` marks real points (padding is masked out of the likelihood).
        """
        p = self.num_params
        t, n = x.shape[0], x.shape[1]
        mu = numpyro.sample("mu", dist.Normal(0.0, self.hyper_mu_scale).expand([p]).to_event(1))
        log_sigma = numpyro.sample(
            "log_sigma",
            dist.Normal(self._log_scale0, self.hyper_log_sigma_scale).to_event(1),
        )
        theta = {"mu": mu, "log_sigma": log_sigma}
        if self.likelihood.has_noise:
            theta["log_noise"] = numpyro.sample(
                "log_noise", dist.Normal(math.log(self.noise_init), self.hyper_log_noise_scale)
            )
        with numpyro.plate("tasks", t, dim=-2):
            phi = numpyro.sample("phi", self.prior(theta))  # (T, 1, P)
        f = jax.vmap(self.apply)(phi[:, 0], x)  # (T, N, Dout)
        with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
            obs_dist = self.likelihood.observation(f, self.noise_std(theta))
            with handlers.mask(mask=True if mask is None else mask.astype(bool)):
                numpyro.sample("y", obs_dist, obs=y)

    # -- log densities traced from the model ------------------------------------------------
    def _trace(self, theta: Theta, phi: Array, x: Array, y: Array, mask: Array | None) -> dict:
        # Sites a method does not carry (e.g. MAML has no σ) are filled with placeholders; they
        # never enter the log density that is read off.
        p = self.num_params
        data = {"mu": jnp.zeros(p), "log_sigma": jnp.zeros(p), "log_noise": jnp.zeros(())}
        data.update(theta)
        data["phi"] = phi
        with handlers.trace() as tr, handlers.substitute(data=data):
            self.model(x, y, mask)
        return tr

    @staticmethod
    def _site_log_prob(site: dict) -> Array:
        lp = site["fn"].log_prob(site["value"])
        if site.get("mask") is not None and site["mask"] is not True:
            lp = jnp.where(site["mask"], lp, 0.0)
        if site.get("scale") is not None:
            lp = site["scale"] * lp
        return jnp.sum(lp)

    @property
    def _direct(self) -> bool:
        # Closed-form log densities (equal to the traced ones; tests/test_model.py checks) are
        # used only while ``model`` is this class's own: a subclass that rewrites the model
        # is always traced.
        return type(self).model is HierarchicalModel.model

    def _log_lik_points_direct(self, theta: Theta, phi: Array, x: Array, y: Array) -> Array:
        return self.likelihood.points(self.apply(phi, x), y, self.noise_std(theta))

    def log_likelihood_points(self, theta: Theta, phi: Array, x: Array, y: Array) -> Array:
        """log p(y_j | x_j, φ, θ) of each point of one task, ``(N,)``."""
        if self._direct:
            return self._log_lik_points_direct(theta, phi, x, y)
        tr = self._trace(theta, phi[None, None], x[None], y[None], None)
        site = tr["y"]
        return site["fn"].log_prob(site["value"])[0]

    def log_likelihood(
        self, theta: Theta, phi: Array, x: Array, y: Array, mask: Array | None = None
    ) -> Array:
        """log p(D | φ, θ) of one task: ``phi (P,)``, ``x (N, Dx)``, ``y (N, Dy)``,
        ``mask (N,)``."""
        if self._direct:
            lp = self._log_lik_points_direct(theta, phi, x, y)
            return jnp.sum(lp if mask is None else jnp.where(mask.astype(bool), lp, 0.0))
        m = None if mask is None else mask[None]
        tr = self._trace(theta, phi[None, None], x[None], y[None], m)
        return self._site_log_prob(tr["y"])

    def log_likelihood_tasks(
        self, theta: Theta, phi: Array, x: Array, y: Array, mask: Array | None = None
    ) -> Array:
        """log p(D_t | φ_t, θ) of every task of a batch, ``(T,)``: ``phi (T, P)``,
        ``x (T, N, Dx)``, ``y (T, N, Dy)``, ``mask (T, N)``."""
        if mask is None:
            return jax.vmap(lambda p, a, b: self.log_likelihood(theta, p, a, b))(phi, x, y)
        return jax.vmap(lambda *a: self.log_likelihood(theta, *a))(phi, x, y, mask)

    def _dummy_data(self) -> tuple[Array, Array, Array]:
        # One masked-out point: plates need a positive size, and it adds nothing.
        x = jnp.zeros((1, 1, self.dx))
        if self.likelihood.classifier:
            y = jnp.zeros((1, 1), jnp.int32)
        else:
            y = jnp.zeros((1, 1, self.dy))
        return x, y, jnp.zeros((1, 1))

    def log_prior(self, theta: Theta, phi: Array) -> Array:
        """log p(φ | θ) of one task's ``phi (P,)``."""
        if self._direct:
            return self.prior(theta).log_prob(phi)
        tr = self._trace(theta, phi[None, None], *self._dummy_data())
        return self._site_log_prob(tr["phi"])

    def log_hyperprior(self, theta: Theta) -> Array:
        """log p(θ) under the weak hyper-prior."""
        tr = self._trace(theta, theta["mu"][None, None], *self._dummy_data())
        return sum(self._site_log_prob(tr[k]) for k in theta)

    def predictive_apply(self) -> Callable[[Array, Array], Array]:
        """The ``apply`` a :class:`~bayesmeta.posterior.TaskPosterior` of this model uses."""
        return self.apply

    # -- the interface every method reads (shared with NumPyroModel) --------------------------
    @property
    def theta_keys(self) -> tuple[str, ...]:
        """Names of the model's own entries of θ (a method adds its own beside them)."""
        return (
            ("mu", "log_sigma", "log_noise") if self.likelihood.has_noise else ("mu", "log_sigma")
        )

    @property
    def point_keys(self) -> tuple[str, ...]:
        """The entries of θ a point estimate (MAML) keeps: the prior's scale is not used."""
        return tuple(k for k in self.theta_keys if k != "log_sigma")

    gaussian_prior = True

    def prior_loc(self, theta: Theta) -> Array:
        """Centre of p(φ | θ) in φ's (unconstrained) coordinates, ``(P,)``: μ."""
        return theta["mu"]

    def prior_log_scale(self, theta: Theta) -> Array:
        """log of p(φ | θ)'s per-coordinate scale, ``(P,)``: log σ."""
        return theta["log_sigma"]

    def posterior(
        self,
        phi: Array,
        theta: Theta,
        method: str,
        noise_std: Array | None = None,
        log_weights: Array | None = None,
    ):
        """The :class:`~bayesmeta.posterior.TaskPosterior` of samples ``phi (T, S, P)``."""
        from bayesmeta.posterior import TaskPosterior

        noise = self.noise_std(theta) if noise_std is None else noise_std
        post = TaskPosterior.from_samples(
            phi, noise, self.predictive_apply(), self.likelihood, method
        )
        if log_weights is None:
            return post
        return TaskPosterior(
            post.phi, log_weights, post.noise_std, post.apply, self.likelihood, method
        )


# -- any NumPyro model ---------------------------------------------------------------------------
#: The deterministic site that :func:`linear_last_layer` records its features in, and the
#: ``infer`` flag that marks its weights' site.
FEATURES_SITE = "bayesmeta_features"
LAST_LAYER_FLAG = "bayesmeta_last_layer"


def linear_last_layer(name: str, features: Array, loc: Any = 0.0, scale: Any = 1.0) -> Array:
    """A per-task linear last layer that bayesmeta can integrate out exactly.

    Call it inside ``numpyro.plate("tasks", T, dim=-2)`` with the features of every task's
    points ``z (T, N, F)``; it samples the site ``name``, each task's weights
    ``w = (w_1..w_F, b) ~ N(loc, diag scale²)`` (``loc``, ``scale``: scalars or ``(F + 1,)``,
    e.g. θ sites), and returns the outputs

        f_tn = Σ_f z_tnf w_tf + b_t     ``(T, N)``.

    With a Normal observation ``y ~ N(f, σ²)`` whose σ depends on θ only, the last layer is
    conjugate: p(D | body) and p(w | body, D) are closed-form (Bayesian linear regression on
    the features), which is what the ``collapsed`` heads of ABML, BMAML and PLATIPUS use
    (:func:`bayesmeta.inference.heads.conjugate_head`). The weights must be the model's last
    per-task site; the features are recorded as the deterministic site ``bayesmeta_features``.
    Everything else stays a plain NumPyro model.
    """
    z = numpyro.deterministic(FEATURES_SITE, features)
    if jnp.ndim(z) != 3:
        raise ValueError(
            f"features: expected (T, N, F) per task and point, got shape {jnp.shape(z)}"
        )
    nf = z.shape[-1]
    prior = dist.Normal(jnp.broadcast_to(loc, (nf + 1,)), jnp.broadcast_to(scale, (nf + 1,)))
    w = numpyro.sample(name, prior.to_event(1), infer={LAST_LAYER_FLAG: True})  # (T, 1, F + 1)
    w = jnp.reshape(w, (z.shape[0], nf + 1))
    return jnp.einsum("tnf,tf->tn", z, w[:, :nf]) + w[:, nf:]


class LastLayer(NamedTuple):
    """A model's conjugate last layer, as :func:`~bayesmeta.inference.heads.conjugate_head`
    reads it: φ = (body, last layer) split at ``num_body``.

    Attributes
    ----------
    num_body : int
    num_feat : int
        F, features per point (the layer has F + 1 rows with the bias).
    features : (theta, body (P_body,), x (N, Dx)) -> (N, F)
    prior : theta -> (loc, log_scale)
        The last layer's diagonal Normal prior, each flat ``(P_last,)``.
    to_matrix : flat (P_last,) -> (F + 1, Dy)
        The flat layer as [W; b].
    to_flat : (F + 1, Dy) -> flat (P_last,)
    """

    num_body: int
    num_feat: int
    features: Callable
    prior: Callable
    to_matrix: Callable
    to_flat: Callable


def _frames(site: dict) -> tuple[str, ...]:
    return tuple(f.name for f in site.get("cond_indep_stack", ()))


def _base_dist(fn):
    """The distribution under Independent / Expanded / Masked wrappers (they broadcast)."""
    while isinstance(fn, dist.Independent | dist.ExpandedDistribution | dist.MaskedDistribution):
        fn = fn.base_dist
    return fn


class _SiteInfo(NamedTuple):
    name: str
    shape: tuple[int, ...]  # one task's value shape (the tasks axis kept at size 1)
    size: int


@dataclass(frozen=True, eq=False)
class NumPyroModel:
    """Any NumPyro hierarchical model, as every method needs it.

    The contract (docs/models.md): ``model(x, y=None, mask=None)`` with ``x (T, N, Dx)``;

    - every per-task latent site lies inside ``numpyro.plate("tasks", T, dim=-2)``: these
      sites, unconstrained and flattened per task, are φ (their order is the trace's);
    - the observed site is named ``"y"`` and lies inside ``"tasks"`` and a nested
      ``numpyro.plate("points", N, dim=-1)``; its value per point is a scalar or a ``(Dy,)``
      vector (bayesmeta always passes ``y (T, N, Dy)`` reshaped to the site's shape);
    - every other sample site and every ``numpyro.param`` is part of θ, held unconstrained.

    Densities are read from one trace with θ and φ substituted:

        log p(φ | θ) = Σ_{φ sites} log p(T(u) | θ) + log |det ∂T(u)/∂u|,
        log p(D | φ, θ) = Σ_j m_j log p(y_j | x_j, φ, θ)           (the mask m is applied here),
        log p(θ) = Σ_{θ sample sites} log p(T(v)) + log |det ∂T(v)/∂v|,

    with ``T`` NumPyro's ``biject_to`` of each site's support. The methods that start from
    or compare with a Gaussian prior read :meth:`prior_loc` and :meth:`prior_log_scale`, the
    moments of p(φ | θ) carried to u-space (exact for Normal priors).

    Parameters
    ----------
    fn : callable
        The NumPyro model function.
    dx : int
        Input dimension.
    init : dict or callable, optional
        Initial θ values (constrained) by site name, or a function ``key -> dict`` (e.g. a
        network initialisation per key, so that ensemble members start apart); other sites
        start at NumPyro's ``init_to_mean`` (sample sites) or their ``numpyro.param`` initial
        value.
    name : str
    """

    fn: Callable
    dx: int = 1
    init: dict | Callable | None = None
    name: str = ""
    likelihood: str = field(default=GENERIC, init=False)
    num_classes: None = field(default=None, init=False)
    _phi: tuple = field(init=False, repr=False)
    _theta: tuple = field(init=False, repr=False)
    _params: tuple = field(init=False, repr=False)
    _y: tuple = field(init=False, repr=False)
    _observation: tuple = field(init=False, repr=False)
    _last: tuple = field(init=False, repr=False)

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"model: expected a NumPyro model function, got {self.fn!r}")
        if not isinstance(self.dx, int) or self.dx < 1:
            raise ValueError(f"dx: expected a positive integer, got {self.dx!r}")
        tr2 = self._raw_trace(2, 3)
        tr5 = self._raw_trace(2, 5)
        label = self.name or getattr(self.fn, "__name__", "model")
        y = tr2.get("y")
        if y is None or y["type"] != "sample":
            sites = [k for k, v in tr2.items() if v["type"] == "sample"]
            raise ValueError(
                f"model {label!r}: expected the observed site to be named 'y' "
                f"(numpyro.sample('y', ..., obs=y)), found sample sites {sites}"
            )
        if _frames(y)[:2] != ("tasks", "points") and set(_frames(y)) != {"tasks", "points"}:
            raise ValueError(
                f"model {label!r}: site 'y' must lie inside plate 'tasks' (dim=-2) and a nested "
                f"plate 'points' (dim=-1); its plates are {list(_frames(y))}"
            )
        ev = tuple(y["fn"].event_shape)
        if tuple(y["value"].shape) != (2, 3, *ev) or len(ev) > 1:
            raise ValueError(
                f"model {label!r}: site 'y' must have batch shape (T, N) and a scalar or (Dy,) "
                f"event; with T=2, N=3 its value has shape {tuple(y['value'].shape)} and event "
                f"shape {ev}"
            )
        phi, theta, params = [], [], []
        for name, site in tr2.items():
            if name == "y" or site["type"] not in ("sample", "param"):
                continue
            if site["type"] == "param":
                params.append(name)
                theta.append(_SiteInfo(name, (), 0))
                continue
            if site.get("is_observed"):
                raise ValueError(
                    f"model {label!r}: only 'y' may be observed, but {name!r} has a value"
                )
            if "tasks" in _frames(site):
                v = jnp.shape(site["value"])
                batch = v[: len(v) - len(site["fn"].event_shape)]
                if len(batch) < 2 or batch[0] != 2:
                    raise ValueError(
                        f"model {label!r}: per-task site {name!r} must have the tasks axis first "
                        f"(plate 'tasks' at dim=-2, batch shape (T, 1) or (T, D)); got value "
                        f"shape {v} with T=2"
                    )
                if "points" in _frames(site):
                    raise ValueError(
                        f"model {label!r}: latent site {name!r} lies inside plate 'points': a "
                        f"per-point latent variable grows with N; only 'y' may be per point"
                    )
                v5 = jnp.shape(tr5[name]["value"])
                if v5 != v:
                    raise ValueError(
                        f"model {label!r}: the size of latent site {name!r} depends on the "
                        f"number of points N (shape {v} with N=3, {v5} with N=5)"
                    )
                shape = (1, *v[1:])
                phi.append(_SiteInfo(name, shape, int(math.prod(shape))))
            else:
                theta.append(_SiteInfo(name, tuple(jnp.shape(site["value"])), 0))
        if not phi:
            raise ValueError(
                f"model {label!r}: found no latent site inside plate 'tasks' (dim=-2); the "
                f"per-task parameters φ must be sampled there"
            )
        flagged = [s.name for s in phi if (tr2[s.name].get("infer") or {}).get(LAST_LAYER_FLAG)]
        object.__setattr__(self, "_last", tuple(flagged))
        object.__setattr__(self, "_phi", tuple(phi))
        object.__setattr__(self, "_theta", tuple(theta))
        object.__setattr__(self, "_params", tuple(params))
        object.__setattr__(self, "_y", (ev, y["value"].dtype))
        object.__setattr__(self, "_observation", (y["fn"].support, _dist_name(y["fn"])))

    @property
    def observation(self) -> tuple[Any, str]:
        """``(support, name)`` of the observation site ``y``'s distribution: what a data set
        must hold for this model (counts for a Poisson site, real values for a Normal one)."""
        return self._observation

    # -- tracing ------------------------------------------------------------------------------
    def _raw_trace(self, t: int, n: int) -> dict:
        label = self.name or getattr(self.fn, "__name__", "model")
        x = jnp.zeros((t, n, self.dx))
        try:
            with handlers.trace() as tr, handlers.seed(rng_seed=0):
                self.fn(x)
        except Exception as err:  # the user's model: name it, not JAX's internals
            raise ValueError(
                f"model {label!r} failed when traced with x of shape (T, N, Dx)=({t}, {n}, "
                f"{self.dx}) and y=None: {type(err).__name__}: {err}"
            ) from None
        return tr

    def _transform(self, site: dict):
        if site["type"] == "param":
            return dist.transforms.biject_to(
                site["kwargs"].get("constraint", dist.constraints.real)
            )
        return dist.transforms.biject_to(site["fn"].support)

    def _substitutions(self, theta: Theta, phi: Array | None) -> Callable:
        # phi (P,): one task, each site at its shape (1, ...); phi (T, P): T tasks at once
        phi_vals = {}
        if phi is not None:
            off = 0
            for s in self._phi:
                shape = s.shape if phi.ndim == 1 else (phi.shape[0], *s.shape[1:])
                phi_vals[s.name] = phi[..., off : off + s.size].reshape(shape)
                off += s.size

        def sub(site):
            name = site["name"]
            if name in phi_vals:
                return self._transform(site)(phi_vals[name])
            if name in theta:
                return self._transform(site)(theta[name])
            return None

        return sub

    def _trace(self, theta: Theta, phi: Array | None, x: Array, y: Array | None) -> dict:
        with (
            handlers.trace() as tr,
            handlers.substitute(substitute_fn=self._substitutions(theta, phi)),
        ):
            self.fn(x, y)
        return tr

    def _obs(self, y: Array) -> Array:
        """``y (N, Dy)`` as the observed site's value ``(1, N)`` or ``(1, N, Dy)``."""
        ev, dtype = self._y
        y = y[..., 0] if ev == () else y
        return y[None].astype(dtype)

    def _dummy(self) -> tuple[Array, Array]:
        ev, dtype = self._y
        return jnp.zeros((1, 1, self.dx)), jnp.zeros((1, 1, *ev), dtype)

    # -- structure ----------------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        return sum(s.size for s in self._phi)

    @property
    def dy(self) -> int:
        ev = self._y[0]
        return 1 if ev == () else int(ev[0])

    @property
    def theta_keys(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._theta)

    @property
    def point_keys(self) -> tuple[str, ...]:
        return self.theta_keys

    @property
    def phi_sites(self) -> dict[str, tuple[int, ...]]:
        """The per-task sites in φ's order, with one task's shape each."""
        return {s.name: s.shape[1:] for s in self._phi}

    @cached_property
    def gaussian_prior(self) -> bool:
        """Whether p(φ | θ) is a diagonal Normal in u-space: :meth:`prior_loc` and
        :meth:`prior_log_scale` are then its exact moments."""
        with jax.ensure_compile_time_eval():  # first read may be inside a jitted method
            return self._gaussian_prior()

    def _gaussian_prior(self) -> bool:
        x, y = self._dummy()
        th = self.init_theta(jax.random.PRNGKey(0))
        traces = [self._trace(th, jnp.full(self.num_params, v), x, y) for v in (0.0, 1.0)]
        for s in self._phi:
            fns = [_base_dist(tr[s.name]["fn"]) for tr in traces]
            if not all(type(f) is dist.Normal for f in fns):
                return False
            if not (
                jnp.allclose(fns[0].loc, fns[1].loc) and jnp.allclose(fns[0].scale, fns[1].scale)
            ):
                return False
        return True

    def init_theta(self, key: Array) -> Theta:
        """θ at initialisation (unconstrained): ``init`` values, else NumPyro's
        ``init_to_mean`` for sample sites and the initial value of each ``numpyro.param``."""
        from numpyro.infer.initialization import init_to_mean, init_to_value

        x, _ = self._dummy()
        values = dict((self.init(key) if callable(self.init) else self.init) or {})

        def strategy(site):
            if site["name"] in values:
                return init_to_value(site, values=values)
            return init_to_mean(site)

        with handlers.trace() as tr, handlers.substitute(substitute_fn=strategy):
            with handlers.seed(rng_seed=key):
                self.fn(x)
        out = {}
        for s in self._theta:
            site = tr[s.name]
            out[s.name] = self._transform(site).inv(site["value"])
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), out)

    def site_values(self, theta: Theta, phi: Array) -> dict[str, Array]:
        """The model's own sites at one φ, constrained, as NumPyro names them: each per-task
        site with one task's shape and each θ site (``numpyro.sample`` outside the plate or
        ``numpyro.param``), for an export like ``arviz.from_numpyro``."""
        x, y = self._dummy()
        tr = self._trace(theta, phi, x, y)
        out = {s.name: tr[s.name]["value"][0] for s in self._phi}
        out.update({s.name: tr[s.name]["value"] for s in self._theta})
        return out

    def noise_std(self, theta: Theta) -> Array:
        """The observation's scale where its distribution has one (Normal, StudentT, Laplace,
        …; its mean over points at x = 0), else 1. The inner loops scale their steps by its
        square, as for the built-in model's σ_y, so a step size does not grow as 1/σ²."""
        d = self.observe(theta, jnp.zeros(self.num_params), jnp.zeros((1, self.dx)))
        scale = getattr(_base_dist(d), "scale", None)
        return jnp.ones(()) if scale is None else jnp.mean(jnp.asarray(scale))

    # -- densities ----------------------------------------------------------------------------
    def _site_sum(self, tr: dict, names) -> Array:
        total = 0.0
        for name in names:
            site = tr[name]
            u = self._transform(site).inv(site["value"])
            lp = jnp.sum(site["fn"].log_prob(site["value"]))
            total = (
                total + lp + jnp.sum(self._transform(site).log_abs_det_jacobian(u, site["value"]))
            )
        return total

    def log_prior(self, theta: Theta, phi: Array) -> Array:
        """log p(φ | θ) in u-space of one task's ``phi (P,)``."""
        tr = self._trace(theta, phi, *self._dummy())
        return self._site_sum(tr, [s.name for s in self._phi])

    def log_hyperprior(self, theta: Theta) -> Array:
        """log p(θ) in u-space over θ's sample sites (``numpyro.param`` sites add nothing)."""
        tr = self._trace(theta, jnp.zeros(self.num_params), *self._dummy())
        names = [s.name for s in self._theta if s.name not in self._params]
        return self._site_sum(tr, names) if names else jnp.zeros(())

    def observe(self, theta: Theta, phi: Array, x: Array) -> dist.Distribution:
        """p(y | x, φ, θ) of one task's points ``x (N, Dx)``: batch shape ``(1, N)``."""
        ev, dtype = self._y
        tr = self._trace(theta, phi, x[None], jnp.zeros((1, x.shape[0], *ev), dtype))
        return tr["y"]["fn"]

    def log_likelihood_points(self, theta: Theta, phi: Array, x: Array, y: Array) -> Array:
        """log p(y_j | x_j, φ, θ) of each point of one task, ``(N,)``."""
        tr = self._trace(theta, phi, x[None], self._obs(y))
        site = tr["y"]
        return site["fn"].log_prob(site["value"])[0]

    def log_likelihood(
        self, theta: Theta, phi: Array, x: Array, y: Array, mask: Array | None = None
    ) -> Array:
        """log p(D | φ, θ) of one task, padding masked out."""
        lp = self.log_likelihood_points(theta, phi, x, y)
        return jnp.sum(lp if mask is None else jnp.where(mask.astype(bool), lp, 0.0))

    def log_likelihood_tasks(
        self, theta: Theta, phi: Array, x: Array, y: Array, mask: Array | None = None
    ) -> Array:
        """log p(D_t | φ_t, θ) of every task of a batch, ``(T,)``, from one trace of the model
        with all T tasks (its own plate over tasks, rather than T traces of one task each):
        ``phi (T, P)``, ``x (T, N, Dx)``, ``y (T, N, Dy)``, ``mask (T, N)``. Tasks are
        independent given θ (the contract), so ∂/∂φ_t of the sum is task t's own gradient."""
        ev, dtype = self._y
        yy = (y[..., 0] if ev == () else y).astype(dtype)
        tr = self._trace(theta, phi, x, yy)
        site = tr["y"]
        lp = site["fn"].log_prob(site["value"])  # (T, N)
        if mask is not None:
            lp = jnp.where(mask.astype(bool), lp, 0.0)
        return jnp.sum(lp, axis=-1)

    # -- a declared conjugate last layer ---------------------------------------------------------
    def last_layer(self, arg: str = "head") -> LastLayer:
        """The :class:`LastLayer` declared with :func:`linear_last_layer`, checked: one such
        site, the last per-task site, a Normal observation whose scale depends on θ only, and
        ``y``'s mean equal to the layer's output. ``arg`` names the option that asked for it
        in the errors."""
        label = self.name or getattr(self.fn, "__name__", "model")
        if len(self._last) != 1:
            raise ValueError(
                f"{arg}: 'collapsed' needs a model whose outputs come from "
                f"bayesmeta.model.linear_last_layer (an exact last layer); model {label!r} "
                f"declares {len(self._last)}"
            )
        name = self._last[0]
        if self._phi[-1].name != name:
            raise ValueError(
                f"{arg}: the last layer {name!r} of model {label!r} must be its last per-task "
                f"site; the per-task sites are {[s.name for s in self._phi]}"
            )
        if self._observation[1] != "Normal":
            raise ValueError(
                f"{arg}: 'collapsed' needs a Normal observation y; model {label!r} has "
                f"{self._observation[1]}"
            )
        size = self._phi[-1].size
        num_body = self.num_params - size
        num_feat = size - 1
        ev, dtype = self._y

        def trace_at(theta, phi, x):
            return self._trace(theta, phi, x[None], jnp.zeros((1, x.shape[0], *ev), dtype))

        def features(theta, body, x):
            phi = jnp.concatenate([body, jnp.zeros(size, body.dtype)])
            return trace_at(theta, phi, x)[FEATURES_SITE]["value"][0]

        def prior(theta):
            loc, log_scale = self._prior_moments(theta)
            return loc[num_body:], log_scale[num_body:]

        def to_matrix(flat):
            return flat.reshape(num_feat + 1, 1)

        def to_flat(w):
            return w.reshape(-1)

        # the declaration is checked once, numerically: y's mean is [z, 1] w at a random φ and
        # x, and y's scale does not move with φ or x
        key = jax.random.PRNGKey(0)
        th = self.init_theta(key)
        x = jax.random.normal(key, (3, self.dx))
        phis = [
            0.3 * jax.random.normal(jax.random.fold_in(key, i), (self.num_params,)) for i in (1, 2)
        ]
        fns = [
            _base_dist(trace_at(th, p, xx)["y"]["fn"]) for p, xx in ((phis[0], x), (phis[1], 2 * x))
        ]
        z = features(th, phis[0][:num_body], x)
        want = jnp.concatenate([z, jnp.ones((z.shape[0], 1), z.dtype)], -1) @ to_matrix(
            phis[0][num_body:]
        )
        if not (
            type(fns[0]) is dist.Normal
            and jnp.allclose(jnp.reshape(fns[0].loc, (-1,)), want[:, 0], rtol=1e-4, atol=1e-5)
            and jnp.allclose(jnp.mean(fns[0].scale), jnp.mean(fns[1].scale))
            and jnp.allclose(jnp.std(jnp.asarray(fns[0].scale)), 0.0)
        ):
            raise ValueError(
                f"{arg}: model {label!r}: 'collapsed' needs y ~ Normal(f, σ) with f the output "
                f"of linear_last_layer and σ depending on θ only"
            )
        return LastLayer(num_body, num_feat, features, prior, to_matrix, to_flat)

    # -- the Gaussian view of the prior ---------------------------------------------------------
    def _prior_moments(self, theta: Theta) -> tuple[Array, Array]:
        # Ancestral: each φ site is substituted by its prior mean, so a site whose prior
        # depends on another φ site sees that site's mean.
        moments = {}
        theta_sub = self._substitutions(theta, None)

        def sub(site):
            name = site["name"]
            if name not in self.phi_sites:
                return theta_sub(site)
            fn, t = site["fn"], self._transform(site)
            mean, std = fn.mean, jnp.sqrt(fn.variance)
            ok = jnp.isfinite(mean) & jnp.isfinite(std)
            value = jnp.where(ok, mean, t(jnp.zeros_like(mean)))
            u, du = jax.jvp(t.inv, (value,), (jnp.ones_like(value),))
            moments[name] = (
                jnp.where(ok, u, 0.0),
                jnp.where(ok, jnp.log(std * jnp.abs(du)), 0.0),
            )
            return value

        with handlers.substitute(substitute_fn=sub):
            self.fn(*self._dummy())
        loc = jnp.concatenate([moments[s.name][0].reshape(-1) for s in self._phi])
        log_scale = jnp.concatenate([moments[s.name][1].reshape(-1) for s in self._phi])
        # strongly typed: a prior of Python floats gives weak types, which would retrace a
        # jitted step once its output (strong) comes back as input
        dt = jnp.result_type(float)
        return jnp.array(loc, dtype=dt), jnp.array(log_scale, dtype=dt)

    def prior_loc(self, theta: Theta) -> Array:
        """E[φ | θ] carried to u-space, ``(P,)`` (where the adaptation of φ starts)."""
        return self._prior_moments(theta)[0]

    def prior_log_scale(self, theta: Theta) -> Array:
        """log sd of p(φ | θ) carried to u-space (delta method), ``(P,)``."""
        return self._prior_moments(theta)[1]

    def posterior(
        self,
        phi: Array,
        theta: Theta,
        method: str,
        noise_std: Array | None = None,
        log_weights: Array | None = None,
        per_sample: bool = False,
    ):
        """The :class:`~bayesmeta.posterior.TaskPosterior` of samples ``phi (T, S, P)``,
        scored under this model's own observation distribution; θ is shared by every sample,
        or with ``per_sample`` has leaves ``(T, S, ...)`` (an ensemble of meta-learners).
        ``noise_std`` is ignored (the likelihood's parameters are in θ and φ)."""
        from bayesmeta.posterior import TaskPosterior

        del noise_std
        t, s = phi.shape[:2]
        lw = jnp.full((t, s), -math.log(s), phi.dtype) if log_weights is None else log_weights
        params = {k: theta[k] for k in self.theta_keys}
        noise = jnp.ones((t, s), phi.dtype)
        return TaskPosterior(phi, lw, noise, self.observe, "generic", method, params, per_sample)


def _dist_name(d: Any) -> str:
    """A distribution's class name, through NumPyro's wrappers (``Independent``, masks,
    ``ExpandedDistribution``): ``"Poisson"``, ``"Normal"``."""
    while hasattr(d, "base_dist"):
        d = d.base_dist
    return type(d).__name__
