"""A user's model against the exact Bayes predictive (issue 43's Student-t bar).

``models/sinusoid_student_t.py`` is an MLP per task with a Student-t likelihood, written as a
plain NumPyro function; its tasks are MAML's sinusoid with Gaussian noise, whose exact
posterior predictive (a quadrature grid over amplitude and phase, :func:`bayesmeta.inference.
reference`) is the best any method can do. Each method is fitted with ``bayesmeta.fit`` at its
recipe for this model (``--steps`` overrides the step count), adapted to held-out test tasks,
and scored per query point; *gap* is its NLL minus the exact predictive's on the same tasks,
with a standard error paired over tasks.

    python benchmarks/student_t_gap.py [--methods amortized ...] [--k 1 5 10] [--steps N]

Writes ``student_t_gap.json`` and ``student_t_gap.md`` under ``--out`` (default
benchmarks/results), after each method, so that a run stopped late keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import bayesmeta as bm
from bayesmeta.atomic import write_text
from bayesmeta.bench import provenance, script_command
from bayesmeta.evaluate import evaluate
from bayesmeta.inference import reference
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.tasks.base import padded_support

RESULTS = Path(__file__).parent / "results"
MODEL = Path(__file__).resolve().parent.parent / "models" / "sinusoid_student_t.py"
METHODS = ("amortized", "maml", "abml", "bmaml", "platipus")
GAP_BAR = 0.2  # the bar at K = 5, for amortized


def per_task_nll(post, tasks: dict) -> np.ndarray:
    lp = post.log_predictive(jnp.asarray(tasks["x_query"]), jnp.asarray(tasks["y_query"]))
    return -np.asarray(lp).mean(1)


def score(post, tasks: dict, exact: np.ndarray) -> dict:
    """The method's metrics on ``tasks`` and its gap to the exact predictive's per-task NLL."""
    nll = per_task_nll(post, tasks)
    rep = evaluate(post, tasks["x_query"], tasks["y_query"])
    d = nll - exact
    return {
        "nll": float(nll.mean()),
        "nll_se": float(nll.std(ddof=1) / np.sqrt(nll.size)),
        "exact_nll": float(exact.mean()),
        "gap": float(d.mean()),
        "gap_se": float(d.std(ddof=1) / np.sqrt(d.size)),
        "mse": float(rep["mse"]),
        "cov90": float(rep["coverage"]["0.9"]),
        "calibration_error": float(rep["calibration_error"]),
    }


def markdown(result: dict) -> str:
    p = result["provenance"]
    lines = [
        "# A user's model against the exact Bayes predictive (issue 43)",
        "",
        f"Commit `{p['commit']}`, `{p['command']}`, {p['machine']}, {p['seconds']:.0f} s in "
        f"all. Model `models/sinusoid_student_t.py` (an MLP per task, Student-t likelihood) on "
        f"held-out sinusoid tasks of the `{p['test_stream']}` stream ({p['num_tasks']} per K, "
        f"{p['num_query']} query points each); {p['samples']} posterior samples; seed "
        f"{p['seed']}.",
        "",
        "*gap* = method NLL − the exact predictive's NLL on the same tasks (± se paired over "
        "tasks); NLL per query point.",
        "",
        "| method | K | steps | NLL ± se | exact NLL | gap ± se | MSE | cov90 | calib. err. "
        "| train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['k']} | {r['steps']} | {r['nll']:.3f} ± {r['nll_se']:.3f} | "
            f"{r['exact_nll']:.3f} | {r['gap']:+.3f} ± {r['gap_se']:.3f} | {r['mse']:.4g} | "
            f"{r['cov90']:.3f} | {r['calibration_error']:.3f} | {r['train_seconds']:.0f} |"
        )
    bar = [r for r in result["rows"] if r["method"] == "amortized" and r["k"] == 5]
    if bar:
        r = bar[0]
        verdict = "holds" if r["gap"] <= GAP_BAR else "MISSES"
        lines += ["", f"The bar: amortized's K = 5 gap {r['gap']:+.3f} ± {r['gap_se']:.3f} "
                  f"≤ {GAP_BAR}: {verdict}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["amortized"], choices=list(METHODS))
    p.add_argument("--k", nargs="+", type=int, default=[1, 5, 10])
    p.add_argument("--steps", type=int, default=None, help="default: each method's recipe")
    p.add_argument("--num-tasks", type=int, default=200)
    p.add_argument("--num-query", type=int, default=10)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="student_t_gap")
    p.add_argument("--stream", default="test", choices=["test", "fresh"],
                   help="the held-out tasks' stream (bayesmeta.zoo.STREAM_SEEDS)")  # fmt: skip
    args = p.parse_args(argv)
    spec = load_model_spec(str(MODEL))
    exact_method = reference(spec.family)
    tasks = {k: spec.held_out(args.stream, k, args.num_tasks, args.num_query) for k in args.k}
    exact = {}
    for k, t in tasks.items():
        support = padded_support(t, k)  # every support row real: a mask of ones
        key = jax.random.PRNGKey(0)
        post = exact_method.adapt(key, exact_method.init(key), support)
        exact[k] = per_task_nll(post, t)
    rows, t_start = [], time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    for method in args.methods:
        t0 = time.perf_counter()
        extra = {} if args.steps is None else {"lr_decay_steps": args.steps}
        fitted = bm.fit(spec, method, steps=args.steps, seed=args.seed, progress=False, **extra)
        train_s = time.perf_counter() - t0
        for k, t in tasks.items():
            post = fitted.adapt(t["x_support"], t["y_support"], args.samples,
                                key=jax.random.PRNGKey(args.seed + k))  # fmt: skip
            row = {"method": method, "k": k, "steps": int(fitted.info["steps"])}
            rows.append({**row, "train_seconds": round(train_s, 1), **score(post, t, exact[k])})
            print(f"{method} K={k}: nll {rows[-1]['nll']:.3f} gap {rows[-1]['gap']:+.3f} "
                  f"± {rows[-1]['gap_se']:.3f}", flush=True)  # fmt: skip
        result = {
            "provenance": provenance(
                script_command(__file__, argv),
                steps=args.steps,
                steps_ran={r["method"]: r["steps"] for r in rows},
                num_tasks=args.num_tasks,
                num_query=args.num_query,
                samples=args.samples,
                seed=args.seed,
                test_stream=args.stream,
                seconds=round(time.perf_counter() - t_start, 1),
            ),
            "rows": rows,
        }
        write_text(args.out / f"{args.name}.json", json.dumps(result, indent=1) + "\n")
        write_text(args.out / f"{args.name}.md", markdown(result))
    return result


if __name__ == "__main__":
    run()
