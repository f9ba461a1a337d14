# %% [markdown]
# # Drive an active-learning loop by hand
#
# First the way a person labels points of their own data: fit once on grouped rows, then for a
# new group ask which candidate to measure next, measure it, tell the answer, see the
# posterior move. Then the loop's parts on a sinusoid task, and the whole loop compiled for
# many tasks and two acquisitions, with learning curves.

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np

import bayesmeta as bm
from bayesmeta import plots
from bayesmeta.evaluate.active import init_active, label, learning_curve, propose, run_active
from bayesmeta.tasks import Support

QUICK = os.environ.get("BAYESMETA_TUTORIAL_QUICK") == "1"
OUT = os.environ.get("BAYESMETA_TUTORIAL_OUT", ".")

# %% [markdown]
# ## Ask and tell on your own grouped data
#
# Dose-response rows of 40 past subjects: each subject's response is linear in the dose, with
# its own slope and intercept. The classical model of such data is fitted in a second
# (`linear` / `reference`: the per-group Bayesian linear regression with its prior fitted to
# the groups). A new subject has been measured at one dose; eight doses can be tried next, and
# high doses cost more (a longer washout, say).

# %%
rng = np.random.default_rng(0)
groups = np.repeat(np.arange(40), 8)
dose = rng.uniform(0.0, 10.0, groups.size)
slope, base = rng.normal(1.5, 0.4, 40), rng.normal(20.0, 3.0, 40)
response = base[groups] + slope[groups] * dose + rng.normal(0.0, 1.0, groups.size)
rows = bm.tasks.from_groups(dose, response, groups, features=["dose"], target="response")
dose_response = bm.fit("linear", "reference", data=rows)


def measure(d):  # the experiment: here a hidden subject, in practice the lab
    return 24.0 + 0.8 * np.asarray(d) + rng.normal(0.0, 1.0, np.shape(d))


candidates = np.linspace(0.5, 10.0, 8)
loop = dose_response.active([1.0], measure([1.0]), candidates, "bald")
for _ in range(3):
    best = int(loop.suggest(1)[0])
    print(f"measure dose {candidates[best]:.2f} (BALD {loop.scores[best]:.3f})")
    loop.tell(best, float(measure(candidates[best])))
loop

# %% [markdown]
# `loop.plot()` shows the predictive bands in the data's own units, the measured points and
# the candidates' scores. With two measurements to come at once, a fantasised batch spreads
# them, and a cost per candidate ranks by information per unit cost.

# %%
ax = loop.plot()
ax.figure.savefig(os.path.join(OUT, "ask_tell.png"))
print("next two, by information per unit cost:",
      candidates[loop.suggest(2, fantasize=True, cost=1.0 + candidates / 5.0)])  # fmt: skip
ax.figure

# %% [markdown]
# ## The loop's parts, on a meta-learned sinusoid posterior

# %%
fitted = bm.fit("sinusoid", "abml", steps=100 if QUICK else 6_000, progress=False)
method, state_meta = fitted.method, fitted.state
tasks = bm.tasks(fitted, k=1, num_tasks=20, num_query=150)
x_pool, y_pool = tasks["x_query"][:, :100], tasks["y_query"][:, :100]
x_eval, y_eval = tasks["x_query"][:, 100:], tasks["y_query"][:, 100:]

# %% [markdown]
# One task, step by step: `propose` scores the pool, `label` writes the answer into the next
# free (masked) support slot, so `adapt` is compiled once for every round.

# %%
one = Support(tasks["x_support"][:1], tasks["y_support"][:1], jnp.ones((1, 1)))
state = init_active(one, x_pool[:1], capacity=1 + 5)
adapt = jax.jit(method.adapt, static_argnums=3)
key = jax.random.PRNGKey(0)
for step in range(5):
    key, k_adapt, k_acq = jax.random.split(key, 3)
    post = adapt(k_adapt, state_meta, state.support, 100)
    idx = propose(k_acq, post, x_pool[:1], state, "bald")
    y_new = y_pool[:1][jnp.arange(1)[:, None], idx]  # the oracle's answer
    print(f"round {step}: label x = {float(x_pool[0, idx[0, 0], 0]):+.2f}")
    state = label(state, x_pool[:1], idx, y_new)

# %% [markdown]
# The same loop, compiled (`lax.scan`) for 20 tasks, BALD against random.

# %%
support = Support(tasks["x_support"], tasks["y_support"], jnp.ones((20, 1)))
curves = {}
for acq in ("bald", "random"):
    res = run_active(jax.random.PRNGKey(1), method, state_meta, support, x_pool, y_pool,
                     x_eval, y_eval, acq, num_queries=5, num_samples=50)  # fmt: skip
    curves[acq] = learning_curve(res, acq)
    print(acq, [round(v, 3) for v in curves[acq]["mse"]])
fig = plots.learning_curves(curves, "mse", path=os.path.join(OUT, "active_curves.png"), logy=True)
fig  # a notebook shows the figure (plots return matplotlib Figures, saved to `path` too)
