"""The sinusoid with a robust likelihood, written as a plain NumPyro model (docs/models.md).

Tasks: MAML's sinusoid with Gaussian noise 0.3 (``sinusoid``). Model: the same MLP 1-40-40-1
(tanh) per task, weights φ_i ~ N(μ, diag σ²), and a Student-t likelihood whose degrees of
freedom ν and scale s are learned with θ:

    y_ij | x_ij, φ_i ~ StudentT(ν, f_φi(x_ij), s),   ν ~ Gamma(2, 0.1),   log s ~ N(log 0.3, 2²).

The data are Gaussian, so a good meta-learner drives ν up; the file exists to show (and
test) that any likelihood fits through ``bayesmeta fit`` and is scored under its own density.
"""

import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bayesmeta.model import NumPyroModel
from bayesmeta.nn import mlp
from bayesmeta.recipes import REGRESSION_RECIPES
from bayesmeta.tasks import sinusoid
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
    df = numpyro.sample("df", dist.Gamma(2.0, 0.1))
    log_scale = numpyro.sample("log_scale", dist.Normal(math.log(0.3), 2.0))
    with numpyro.plate("tasks", t, dim=-2):
        phi = numpyro.sample("phi", dist.Normal(mu, jnp.exp(log_sigma)).to_event(1))
    f = jax.vmap(lambda p, xt: NET.apply(UNRAVEL(p), xt)[:, 0])(phi[:, 0], x)  # (T, N)
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.StudentT(df, f, jnp.exp(log_scale)), obs=y)


# amortized: the query rows' predictive alone (ml-pip), 16 draws per task, 120k steps, chosen
# on the validation stream by benchmarks/choose_recipes.py (every trial in
# benchmarks/results/choose_sinusoid_student_t_amortized.json, ..._steps.json and
# ..._steps_long.json): on this MLP per task the ELBO's variational EM leaves q at the prior
# (docs/models.md), and ml-pip was still improving at the end of 20k and of 60k steps. The
# recipe is long (about 20 minutes on 2 CPU cores); ``budget="quick"`` is the short one.
RECIPES = {
    **REGRESSION_RECIPES,
    "amortized": {
        **REGRESSION_RECIPES["amortized"],
        "outer": "ml-pip",
        "train_samples": 16,
        "steps": 120_000,
        "lr_decay_steps": 120_000,
    },
}

SPEC = ModelSpec(
    name="sinusoid_student_t",
    family=sinusoid(noise=0.3),
    # the network's weights start at a network initialisation (one per key, so that ensemble
    # members start apart), not at the hyper-prior's mean 0
    model=NumPyroModel(
        model, dx=1, init=lambda key: {"mu": NET.flat(key)[0]}, name="sinusoid_student_t"
    ),
    recipes=RECIPES,
    k_range=(1, 10),
)
