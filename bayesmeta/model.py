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

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jax.flatten_util import ravel_pytree
from numpyro import handlers

from bayesmeta.nn import Network

Array = jax.Array
Theta = dict[str, Array]

LIKELIHOODS = ("gaussian", "categorical")


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
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood: expected one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.likelihood == "categorical" and not self.num_classes:
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
        return 1 if self.likelihood == "categorical" else self._output_dim

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
        if self.likelihood == "gaussian":
            theta["log_noise"] = jnp.asarray(math.log(self.noise_init), mu.dtype)
        return theta

    def noise_std(self, theta: Theta) -> Array:
        """σ_y = exp(log σ_y) (ones for a categorical likelihood)."""
        if self.likelihood == "gaussian":
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
        if self.likelihood == "gaussian":
            theta["log_noise"] = numpyro.sample(
                "log_noise", dist.Normal(math.log(self.noise_init), self.hyper_log_noise_scale)
            )
        with numpyro.plate("tasks", t, dim=-2):
            phi = numpyro.sample("phi", self.prior(theta))  # (T, 1, P)
        f = jax.vmap(self.apply)(phi[:, 0], x)  # (T, N, Dout)
        with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
            if self.likelihood == "gaussian":
                obs_dist = dist.Normal(f, self.noise_std(theta)).to_event(1)
            else:
                obs_dist = dist.Categorical(logits=f)
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
        f = self.apply(phi, x)
        if self.likelihood == "gaussian":
            s = self.noise_std(theta)
            z = (y - f) / s
            return jnp.sum(-0.5 * z * z - jnp.log(s) - 0.5 * math.log(2 * math.pi), axis=-1)
        logp = jax.nn.log_softmax(f, axis=-1)
        return jnp.take_along_axis(logp, y.astype(jnp.int32)[:, None], axis=-1)[:, 0]

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

    def _dummy_data(self) -> tuple[Array, Array, Array]:
        # One masked-out point: plates need a positive size, and it adds nothing.
        x = jnp.zeros((1, 1, self.dx))
        if self.likelihood == "categorical":
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
