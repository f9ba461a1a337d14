"""Active learning on the sinusoid: the lectures' experiment (issue #5).

Each method is meta-trained with its model file's recipe (what ``bayesmeta fit`` does; a
``--seconds`` cap overrides ``max_seconds``) or loaded from a run directory, then — without
any further meta-training — adapted to 100 held-out sinusoid tasks that start from one
labelled point. Each task has a pool of 100 unlabelled inputs and 50 evaluation points; for
10 rounds the acquisition picks one pool point, its label is revealed and the posterior is
re-adapted (one jitted ``lax.scan`` per method and acquisition). Acquisitions: predictive
variance, BALD, predictive entropy and random; every acquisition of a method uses the same
keys, so differences against random are paired over tasks.

Reports the evaluation-set MSE and NLL after 5 and 10 queries with the paired standard error
of the difference to random, and the time of one step of the compiled loop (re-adapt,
evaluate, score the pool, label). Writes ``benchmarks/results/active.json``, ``active.md`` and
``active_<method>.png`` (MSE learning curves, ±1 s.e. over tasks).

    python benchmarks/active.py [--methods abml bmaml maml reference] [--run-dir DIR ...]
        [--seconds S] [--budget default] [--num-tasks 100] [--pool 100] [--num-eval 50]
        [--queries 10] [--acquisitions variance bald entropy random] [--samples 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from bayesmeta import plots
from bayesmeta.atomic import write_text
from bayesmeta.bench import provenance, script_command
from bayesmeta.evaluate.active import (
    ACQUISITIONS,
    learning_curve,
    paired_difference,
    run_active,
)
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.runs import load_run
from bayesmeta.tasks.base import Support
from bayesmeta.zoo import held_out_tasks

RESULTS = Path(__file__).parent / "results"
REPORT_AT = (5, 10)


def fitted_methods(spec, names, run_dirs, budget, seconds, seed):
    """``{name: (method, state, info)}``: run directories first, then training."""
    fitted = {}
    for run_dir in run_dirs:
        r_spec, method, state, payload = load_run(run_dir)
        if r_spec.name != spec.name:
            sys.exit(f"--run-dir: {run_dir!r} is a {r_spec.name!r} run, expected {spec.name!r}")
        fitted[payload["method"]] = (method, state, {"source": str(run_dir)})
    for name in names:
        if name in fitted:
            continue
        if name == "reference":
            method, _ = spec.build("reference")
            fitted[name] = (method, method.init(jax.random.PRNGKey(0)), {"source": "exact"})
            continue
        method, res = spec.fit(name, budget, seed, max_seconds=seconds)
        info = {"source": "trained", "steps": int(res.state.step), "train_s": round(res.seconds, 1)}
        print(f"{name}: {info['steps']} meta-steps in {res.seconds:.0f}s", flush=True)
        fitted[name] = (method, res.state, info)
    return fitted


METRIC = "mse"


def main_metric(curves) -> str:
    """``"accuracy"`` for classification curves, else ``"mse"`` (also sets :data:`METRIC`)."""
    global METRIC
    first = next(iter(next(iter(curves.values())).values()))
    METRIC = "accuracy" if first.get("accuracy") is not None else "mse"
    return METRIC


def summary_rows(results, curves, timings, queries):
    rows = []
    for name, by_acq in results.items():
        base = by_acq.get("random")
        for acq, res in by_acq.items():
            row = {
                "method": name,
                "acquisition": acq,
                "step_ms": 1e3 * timings[name][acq]["step_s"],
                "compile_s": timings[name][acq]["compile_s"],
            }
            for q in (q for q in REPORT_AT if q <= queries):
                for metric in (main_metric(curves), "nll"):
                    row[f"{metric}@{q}"] = curves[name][acq][metric][q]
                    if base is not None and acq != "random":
                        d, se = paired_difference(res, base, metric)
                        row[f"d_{metric}@{q}"] = float(d[q])
                        row[f"se_{metric}@{q}"] = float(se[q])
            rows.append(row)
    return rows


def markdown(rows, meta, queries) -> str:
    qs = [q for q in REPORT_AT if q <= queries]
    head = ["method", "acquisition"]
    for q in qs:
        name = "MSE" if METRIC == "mse" else "accuracy"
        head += [f"{name}@{q}", f"Δ {name}@{q} vs random", f"NLL@{q}", f"Δ NLL@{q} vs random"]
    head += ["step (ms)", "compile (s)"]
    lines = [
        f"# Active learning on {meta['model']}: {meta['n_tasks']} held-out tasks, K={meta['k']}, "
        f"pool {meta['pool']}, {meta['n_eval']} evaluation points, {queries} queries",
        "",
        "Δ = mean over tasks of (acquisition − random) ± its paired standard error; negative "
        "is better (for accuracy, positive). Step = one step of the compiled loop (re-adapt, "
        f"evaluate, score the pool, label) on {meta['machine']} ({meta['cpu_count']} CPUs).",
        "",
        "| " + " | ".join(head) + " |",
        "| --- | --- | " + " | ".join(["---:"] * (len(head) - 2)) + " |",
    ]
    for r in rows:
        cells = [r["method"], r["acquisition"]]
        for q in qs:
            for metric in (METRIC, "nll"):
                cells.append(f"{r[f'{metric}@{q}']:.4f}")
                if f"d_{metric}@{q}" in r:
                    cells.append(f"{r[f'd_{metric}@{q}']:+.4f} ± {r[f'se_{metric}@{q}']:.4f}")
                else:
                    cells.append("-")
        cells += [f"{r['step_ms']:.1f}", f"{r['compile_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sinusoid")
    p.add_argument("--methods", nargs="+", default=["abml", "bmaml", "maml", "reference"])
    p.add_argument("--run-dir", action="append", default=[], metavar="DIR")
    p.add_argument("--budget", default="default")
    p.add_argument("--seconds", type=float, default=None, help="max_seconds of each training")
    p.add_argument("--num-tasks", type=int, default=100)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--pool", type=int, default=100)
    p.add_argument("--num-eval", type=int, default=50)
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--acquisitions", nargs="+", default=["variance", "bald", "entropy", "random"])
    p.add_argument("--samples", type=int, default=100, help="posterior samples (ABML)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "active"), help="output prefix")
    args = p.parse_args(argv)
    bad = [a for a in args.acquisitions if a not in ACQUISITIONS]
    if bad:
        p.error(f"--acquisitions: expected names from {list(ACQUISITIONS)}, got {bad}")

    spec = load_model_spec(args.model)
    fitted = fitted_methods(spec, args.methods, args.run_dir, args.budget, args.seconds, args.seed)
    tasks = held_out_tasks(spec, args.k, args.num_tasks, num_query=args.pool + args.num_eval)
    x_s = jnp.asarray(tasks["x_support"])
    support = Support(x_s, jnp.asarray(tasks["y_support"]), jnp.ones(x_s.shape[:2]))
    xq, yq = jnp.asarray(tasks["x_query"]), jnp.asarray(tasks["y_query"])
    pool = (xq[:, : args.pool], yq[:, : args.pool])
    ev = (xq[:, args.pool :], yq[:, args.pool :])

    results, curves, timings = {}, {}, {}
    key = jax.random.PRNGKey(args.seed)
    for name, (method, state, _) in fitted.items():
        results[name], curves[name], timings[name] = {}, {}, {}
        for acq in args.acquisitions:
            t = {}
            res = run_active(
                key, method, state, support, *pool, *ev, acq, args.queries, args.samples,
                timings=t,
            )  # fmt: skip
            results[name][acq], timings[name][acq] = res, t
            curves[name][acq] = {**learning_curve(res, acq), **t}
            c = curves[name][acq]
            m = main_metric({name: {acq: c}})
            print(
                f"{name:>10s} {acq:>8s}: {m} {c[m][0]:.3f} -> {c[m][-1]:.3f}, "
                f"nll {c['nll'][0]:.3f} -> {c['nll'][-1]:.3f}; step {1e3 * t['step_s']:.1f} ms, "
                f"compile {t['compile_s']:.1f}s",
                flush=True,
            )

    rows = summary_rows(results, curves, timings, args.queries)
    meta = {
        **provenance(script_command(__file__)),
        "model": spec.name,
        "n_tasks": args.num_tasks,
        "k": args.k,
        "pool": args.pool,
        "n_eval": args.num_eval,
        "queries": args.queries,
        "samples": args.samples,
        "seed": args.seed,
        "budget": args.budget,
        "seconds": args.seconds,
        "methods": {n: info for n, (_, _, info) in fitted.items()},
        "machine": f"{platform.machine()} {jax.devices()[0].device_kind}",
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(
        out.with_suffix(".json"),
        json.dumps({**meta, "rows": rows, "curves": curves}, indent=2, default=float),
    )
    write_text(out.with_suffix(".md"), markdown(rows, meta, args.queries))
    for name, by_acq in curves.items():
        plots.learning_curves(
            by_acq,
            METRIC,
            path=f"{out}_{name}.png",
            title=f"{name}: evaluation {METRIC} vs labelled points (±1 s.e.)",
            logy=METRIC == "mse",
        )
    print(markdown(rows, meta, args.queries))
    print(f"wrote {out}.json, {out}.md and {out}_<method>.png")


if __name__ == "__main__":
    main()
