"""Random-slopes hierarchical linear regression on Cigar, as a plain NumPyro model.

Tasks: the 46 states of ``Cigar`` (``data="Cigar"``: the same split and standardisation as
``models/cigar.py``). Each state has its own intercept and slopes on
(year, log price, log income, log neighbours' minimum price); they share a Normal population
whose mean and spread are θ, with the observation noise:

    w_i ~ N(μ, diag τ²),   y_ij ~ N(w_i0 + x_ij · w_i,1:, σ²),
    μ ~ N(0, 10²),  τ ~ HalfNormal(1),  σ ~ HalfNormal(1).

The per-state linear model is what the empirical-Bayes baseline fits on this data set
(benchmarks/results/your_data.md); here every method meta-learns the same structure.
"""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bayesmeta.recipes import fixed_step_recipes
from bayesmeta.zoo import ModelSpec


def model(x, y=None, mask=None):
    t, n, d = x.shape
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0).expand([d + 1]).to_event(1))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0).expand([d + 1]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("tasks", t, dim=-2):
        w = numpyro.sample("w", dist.Normal(mu, tau).to_event(1))  # (T, 1, d + 1)
    f = w[..., 0] + jnp.einsum("tnd,tod->tn", x, w[..., 1:])
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Normal(f, sigma), obs=y)


STEPS = 2_000
RECIPES = fixed_step_recipes(STEPS)
for method in ("maml", "meta-sgd", "emaml", "platipus"):
    RECIPES[method]["inner_lr"] = 0.1
# chosen on the validation states by benchmarks/choose_recipes.py (every trial in
# benchmarks/results/choose_cigar_slopes_{abml,bmaml}.json): the regression recipes' inner
# step sizes are sized for the sinusoid's MLP and overshoot this model's few slopes
RECIPES["abml"]["inner_lr"] = 0.2
RECIPES["bmaml"]["inner_lr"] = 0.05

SPEC = ModelSpec(
    name="cigar_slopes",
    data="Cigar",
    model=model,
    recipes=RECIPES,
    budgets={"quick": {"*": {"steps": 250, "lr_decay_steps": 250}}},
    k_range=(1, 10),
    eval_k=(1, 5, 10),
)
