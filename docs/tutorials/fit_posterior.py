# %% [markdown]
# # Fit a task posterior in a notebook
#
# Meta-train BMAML on the sinusoid family in one line, adapt it to a few new tasks, score and
# plot the posterior predictive beside the exact reference, hand the samples to ArviZ, and
# save the run.
# (A jupytext notebook: `jupytext --to ipynb fit_posterior.py`; CI executes it with
# `BAYESMETA_TUTORIAL_QUICK=1`, which shortens training.)

# %%
import os

import arviz as az

import bayesmeta as bm

QUICK = os.environ.get("BAYESMETA_TUTORIAL_QUICK") == "1"
OUT = os.environ.get("BAYESMETA_TUTORIAL_OUT", ".")

# %% [markdown]
# One line meta-trains BMAML with the sinusoid model file's recipe (a built-in name, a model
# file's path, a `ModelSpec` or a NumPyro model function all work); `steps` shortens it here.
# A progress bar shows in a notebook and a terminal alike (`progress=False` silences it).

# %%
fitted = bm.fit("sinusoid", "bmaml", steps=100 if QUICK else 3_000, progress=False)
print(fitted)

# %% [markdown]
# Twenty held-out tasks (the test stream: no training step saw them) with K = 2 support
# points. `adapt` builds the masks; the task posterior is M = 10 particles per task.

# %%
tasks = bm.tasks("sinusoid", k=2, num_tasks=20)  # or fitted.held_out(k=2, num_tasks=20)
post = fitted.adapt(tasks["x_support"], tasks["y_support"])
print(post.phi.shape, "(tasks, particles, weights)")

# %% [markdown]
# Score it on the query points, beside the exact posterior (grid quadrature over the task
# family's parameters): NLL, MSE, interval coverage, calibration error.

# %%
report = fitted.evaluate(tasks)
print({k: report[k] for k in ("nll", "nll_se", "mse", "calibration_error")})
reference = bm.fit("sinusoid", "reference").evaluate(tasks)
print("exact posterior's NLL:", round(reference["nll"], 3))

# %%
fig = fitted.plot(tasks, path=os.path.join(OUT, "fit_posterior_bands.png"))
fig  # the bands beside the exact reference (also saved to the path)

# %% [markdown]
# ArviZ: the samples of φ (dims `chain`, `draw`, `task`, `param`), predictive draws of y at the
# query inputs, the observed query targets and their pointwise log-likelihood.

# %%
idata = post.to_inference_data(tasks["x_query"], y=tasks["y_query"])
print(idata)
print(az.summary(idata, var_names=["phi"], coords={"param": [0, 1]}, kind="stats").head())

# %% [markdown]
# Save the run and load it back (a data-only checkpoint and `run.json`; `bayesmeta evaluate`
# reads the same directory).

# %%
run_dir = fitted.save(os.path.join(OUT, "bmaml_run"), overwrite=True)
again = bm.load(run_dir)
print(again.evaluate(tasks)["nll"] == report["nll"])
