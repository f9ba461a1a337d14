"""The sinusoid with noise that grows along x, written as a plain NumPyro model (issue 45).

Tasks: ``sinusoid_hetero`` (MAML's sinusoid, y = A sin(x + b) + σ(x) ε with
log σ(x) = log 0.5 + 0.3 x, the same for every task: 0.11 on the left end, 2.2 on the right).
Model: the MLP 1-40-40-1 (tanh) per task, weights φ_i ~ N(μ, diag σ²), and a Normal likelihood
whose log scale is linear in x with θ's own coefficients,

    y_ij | x_ij, φ_i ~ N(f_φi(x_ij), exp(a₀ + a₁ x_ij)²),   a₀ ~ N(log 0.3, 2²),  a₁ ~ N(0, 1),

so that a method can learn where labels are noisy. The family exists for active learning: an
acquisition that asks for predictive variance alone picks the noisy right end, where a label
says little about the task; BALD asks where the task's own uncertainty is (its exact
posterior is the oracle, ``reference``).
"""

import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bayesmeta.model import NumPyroModel
from bayesmeta.nn import mlp
from bayesmeta.recipes import REGRESSION_RECIPES
from bayesmeta.tasks import sinusoid_hetero
from bayesmeta.zoo import ModelSpec

NET = mlp((1, 40, 40, 1), activation="tanh")
MU0, UNRAVEL = NET.flat(jax.random.PRNGKey(0))
P = MU0.shape[0]


def model(x, y=None, mask=None):
    t, n, _ = x.shape
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0).expand([P]).to_event(1))
    log_sigma = numpyro.sample(
        "log_sigma", dist.Normal(math.log(0.03), 2.0).expand([P]).to_event(1)
    )
    a0 = numpyro.sample("noise_a0", dist.Normal(math.log(0.3), 2.0))
    a1 = numpyro.sample("noise_a1", dist.Normal(0.0, 1.0))
    with numpyro.plate("tasks", t, dim=-2):
        phi = numpyro.sample("phi", dist.Normal(mu, jnp.exp(log_sigma)).to_event(1))
    f = jax.vmap(lambda p, xt: NET.apply(UNRAVEL(p), xt)[:, 0])(phi[:, 0], x)  # (T, N)
    scale = jnp.exp(a0 + a1 * x[..., 0])  # (T, N): the noise follows x
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Normal(f, scale), obs=y)


SPEC = ModelSpec(
    name="sinusoid_hetero",
    family=sinusoid_hetero(),
    # the network's weights start at a network initialisation (one per key, so that ensemble
    # members start apart), not at the hyper-prior's mean 0
    model=NumPyroModel(
        model, dx=1, init=lambda key: {"mu": NET.flat(key)[0]}, name="sinusoid_hetero"
    ),
    recipes=REGRESSION_RECIPES,
    k_range=(1, 10),
)
