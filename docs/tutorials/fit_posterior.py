# %% [markdown]
# # Fit a task posterior in a notebook
#
# Meta-train BMAML on the sinusoid family, adapt it to a few new tasks, look at the posterior
# predictive beside the exact reference, and hand the samples to ArviZ.
# (A jupytext notebook: `jupytext --to ipynb fit_posterior.py`; CI executes it with
# `BAYESMETA_TUTORIAL_QUICK=1`, which shortens training.)

# %%
import os

import arviz as az
import jax

from bayesmeta import plots
from bayesmeta.evaluate import compare, evaluate, format_table
from bayesmeta.tasks.base import padded_support
from bayesmeta.zoo import held_out_tasks, load_model_spec

QUICK = os.environ.get("BAYESMETA_TUTORIAL_QUICK") == "1"
OUT = os.environ.get("BAYESMETA_TUTORIAL_OUT", ".")

# %% [markdown]
# A model file bundles a task family, a hierarchical model and training recipes.

# %%
spec = load_model_spec("sinusoid")
print(spec.family.name, "tasks;", spec.model.num_params, "weights per task")

# %% [markdown]
# `fit` meta-trains with the recipe (here capped in time); it returns the method (pure
# functions) and the training result, whose `state` holds θ.

# %%
bmaml, result = spec.fit("bmaml", max_seconds=5 if QUICK else 300, progress=False)
print(f"{int(result.state.step)} meta-steps in {result.seconds:.0f} s")

# %% [markdown]
# Adapt to 20 held-out tasks with K = 2 support points: the task posterior is M = 10 particles.

# %%
tasks = held_out_tasks(spec, k=2, num_tasks=20)
support = padded_support(tasks, 2)
post = bmaml.adapt(jax.random.PRNGKey(0), result.state, support, 10)
ref, _ = spec.build("reference")
exact = ref.adapt(None, ref.init(None), support, 1)
reports = {
    "reference": evaluate(exact, tasks["x_query"], tasks["y_query"]),
    "bmaml": evaluate(post, tasks["x_query"], tasks["y_query"]),
}
print(format_table(compare(reports)))

# %%
fig = plots.predictive_bands(
    {"reference": exact, "bmaml": post},
    support.x,
    support.y,
    support.mask,
    task_indices=(0, 1, 2),
    num_curves=10,
    path=os.path.join(OUT, "fit_posterior_bands.png"),
)

# %% [markdown]
# ArviZ: the samples of φ (dims `task`, `param`) and predictive draws of y at the query inputs.

# %%
idata = post.to_inference_data(tasks["x_query"])
print(idata)
print(az.summary(idata, var_names=["phi"], coords={"param": [0, 1]}, kind="stats").head())
