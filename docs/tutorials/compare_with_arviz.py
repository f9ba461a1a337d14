# %% [markdown]
# # Compare methods with ArviZ
#
# Fit two methods on the sinusoid family, adapt both to the same held-out tasks, export each
# task posterior as `arviz.InferenceData`, and let ArviZ do what it does for any Bayesian
# model: summaries and R-hat, posterior and predictive plots, PSIS-LOO, model comparison,
# credible intervals, and a netCDF round trip. (A jupytext notebook; CI executes it with
# `BAYESMETA_TUTORIAL_QUICK=1`, which shortens training.)

# %%
import os

import arviz as az
import matplotlib.pyplot as plt

import bayesmeta as bm

QUICK = os.environ.get("BAYESMETA_TUTORIAL_QUICK") == "1"
OUT = os.environ.get("BAYESMETA_TUTORIAL_OUT", ".")

# %% [markdown]
# Two methods, one notebook line each: the neural process (its exact conjugate encoder over
# the last layer) and PLATIPUS (θ sampled around its learned prior, then gradient steps on the
# support set).

# %%
encoder = bm.fit("sinusoid", "neural-process", steps=2_000 if QUICK else 30_000, progress=False)
sampler = bm.fit("sinusoid", "platipus", steps=300 if QUICK else 10_000, progress=False)

# %% [markdown]
# The same 8 held-out tasks (test stream: no training step saw them), K = 5 support points.
# Each method's task posterior is exported twice with the same draws: on the support points
# it was conditioned on (for PSIS-LOO, which asks how well the posterior predicts each of
# those points when it is left out) and on the query points (for the posterior predictive
# check and the held-out score). Each export holds the posterior over the task weights `phi`,
# predictive draws, the observed targets and the pointwise log-likelihood, with dims
# `(chain, draw, task, point)`; the 200 draws are split into 4 chains of 50.

# %%
tasks = encoder.held_out(k=5, num_tasks=8, num_query=20)
fit_data, held_out, nll = {}, {}, {}
for name, fitted in (("neural-process", encoder), ("platipus", sampler)):
    post = fitted.adapt(tasks["x_support"], tasks["y_support"], num_samples=200)
    fit_data[name] = post.to_inference_data(tasks["x_support"], y=tasks["y_support"], chains=4)
    held_out[name] = post.to_inference_data(tasks["x_query"], y=tasks["y_query"], chains=4)
    nll[name] = float(-post.log_predictive(tasks["x_query"], tasks["y_query"]).mean())
print("held-out NLL per query point:", nll)
held_out["neural-process"]

# %% [markdown]
# Summaries and convergence diagnostics: the draws are split into chains, so R-hat and the
# effective sample size are defined (independent draws give R-hat near 1).

# %%
idata = held_out["neural-process"]
coords = {"task": [0], "param": [0, 1, 2]}
print(az.summary(idata, var_names=["phi"], coords=coords))
print(az.rhat(idata, var_names=["noise_std"]))

# %% [markdown]
# The posterior of a few weights of task 0, and the posterior predictive against the
# observed query targets.

# %%
az.plot_posterior(idata, var_names=["phi"], coords=coords)
plt.savefig(os.path.join(OUT, "arviz_posterior.png"), dpi=80)
az.plot_ppc(idata, data_pairs={"y": "y"}, num_pp_samples=50)
plt.savefig(os.path.join(OUT, "arviz_ppc.png"), dpi=80)

# %% [markdown]
# PSIS-LOO per method on the support points, and their comparison: the higher `elpd_loo`,
# the better the posterior predicts a support point it was not given. (Query points were
# never conditioned on, so their held-out score is the plain log predictive above, not LOO.)
# The 94% HDI of the predictive gives the credible band at each query point.

# %%
for name, data in fit_data.items():
    print(name, az.loo(data))
print(az.compare(fit_data))
print(az.hdi(idata.posterior_predictive, hdi_prob=0.94)["y"].isel(task=0).values[:3])

# %% [markdown]
# Any export is an ordinary ArviZ file: write it as netCDF and read it back.

# %%
path = os.path.join(OUT, "neural_process_posterior.nc")
idata.to_netcdf(path)
again = az.from_netcdf(path)
assert set(again.groups()) == set(idata.groups())
print(again)
