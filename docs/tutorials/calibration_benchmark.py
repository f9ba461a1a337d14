# %% [markdown]
# # Run a calibration benchmark
#
# Several methods on the same held-out tasks, scored against the exact reference posterior:
# NLL, the gap to the oracle, coverage of central intervals and calibration error, with
# calibration curves. (CI runs it with `BAYESMETA_TUTORIAL_QUICK=1`: very short training.)

# %%
import os

import jax

import bayesmeta as bm
from bayesmeta import plots
from bayesmeta.evaluate import format_table
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.runs import evaluate_methods

QUICK = os.environ.get("BAYESMETA_TUTORIAL_QUICK") == "1"
OUT = os.environ.get("BAYESMETA_TUTORIAL_OUT", ".")
# step counts, so the same notebook gives the same numbers on any machine
STEPS = {"maml": 10_000, "abml": 3_000, "bmaml": 2_000}

# %%
spec = load_model_spec("sinusoid")
ref, _ = spec.build("reference")
fitted = {"reference": (ref, ref.init(jax.random.PRNGKey(0)))}
for name in ("maml", "abml", "bmaml"):
    run = bm.fit(spec, name, steps=50 if QUICK else STEPS[name], progress=False)
    fitted[name] = (run.method, run.state)
    print(f"{name}: {run.info['steps']} steps in {run.info['train_seconds']:.0f} s")

# %% [markdown]
# `evaluate_methods` adapts every method to the same held-out tasks at each K and returns
# comparison rows (with `gap` = NLL − oracle NLL) and the posteriors.

# %%
rows, posts, tasks = evaluate_methods(spec, fitted, (1, 5), num_tasks=50, num_samples=100)
print(format_table([{k: v for k, v in r.items() if k not in ("pit", "calibration_curve")}
                    for r in rows]))  # fmt: skip

# %%
curves = {r["method"]: r["calibration_curve"] for r in rows if r["k"] == 1}
fig = plots.calibration_curves(curves, path=os.path.join(OUT, "calibration_k1.png"))
fig

# %%
fig = plots.metric_bars(rows, "gap", path=os.path.join(OUT, "gap_bars.png"))
fig
