# %% [markdown]
# # Drive an active-learning loop by hand
#
# Start a sinusoid task from one labelled point, let BALD pick which pool input to label,
# reveal the label (here from the task's pool; in a notebook a person can answer), re-adapt
# the posterior — no re-meta-training — and repeat. Then run the whole loop compiled, for
# many tasks and two acquisitions, and draw the learning curves.

# %%
import os

import jax
import jax.numpy as jnp

import bayesmeta as bm
from bayesmeta import plots
from bayesmeta.evaluate.active import init_active, label, learning_curve, propose, run_active
from bayesmeta.tasks import Support

QUICK = os.environ.get("BAYESMETA_TUTORIAL_QUICK") == "1"
OUT = os.environ.get("BAYESMETA_TUTORIAL_OUT", ".")

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
