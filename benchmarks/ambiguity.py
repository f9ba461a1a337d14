"""Ambiguous tasks: PLATIPUS, neural-process, ABML and MAML on sine-or-line (or circles).

Each method is meta-trained with the model file's default recipe (or loaded from
``runs/<model>/<method>`` when that run directory exists), adapted to 200 held-out tasks
(the core table's seeds, 50 query points) at K = 1, 2, 5, and scored against the exact
reference: NLL, oracle gap, MSE, coverage, calibration error, and hypothesis coverage (among
tasks where the reference gives both sine and line at least 20% mass, the fraction whose
samples include both, each with at least 5% of the samples). Writes
``benchmarks/results/ambiguity_<model>.{json,md}`` and the figures
``ambiguity_<model>_hypotheses.png`` (samples coloured by hypothesis, K = 1) and
``ambiguity_<model>_bands.png``.

    python benchmarks/ambiguity.py [--methods platipus neural-process abml maml]
    python benchmarks/ambiguity.py --model circles --ks 1 5 --seconds 180   # + boundaries PNG
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta import plots
from bayesmeta.bench import provenance, script_command
from bayesmeta.evaluate import compare, evaluate, format_table, markdown_table
from bayesmeta.evaluate.hypotheses import hypothesis_coverage
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.tasks.base import padded_support
from bayesmeta.zoo import held_out_tasks

RESULTS = Path(__file__).parent / "results"
ORDER = {"reference": 0, "maml": 1, "abml": 2, "platipus": 3, "neural-process": 4}


def _fit_or_load(spec, name, args):
    from bayesmeta.runs import load_run

    run_dir = Path(args.runs) / spec.name / name
    if (run_dir / "checkpoint.npz").exists() and not args.retrain:
        _, method, state, payload = load_run(str(run_dir))
        print(f"{name}: loaded {run_dir} (step {int(state.step)})", flush=True)
        return method, state, payload.get("train_seconds")
    method, res = spec.fit(
        name,
        seed=args.seed,
        progress=not args.quiet,
        max_seconds=args.seconds,
        run_dir=run_dir,
        force=True,
    )
    print(f"{name}: {int(res.state.step)} steps in {res.seconds:.0f}s", flush=True)
    return method, res.state, round(res.seconds, 1)


def _first(post, n):
    return dataclasses.replace(
        post, phi=post.phi[:n], log_weights=post.log_weights[:n], noise_std=post.noise_std[:n]
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="sine_line")
    p.add_argument("--methods", nargs="+", default=["platipus", "neural-process", "abml", "maml"])
    p.add_argument("--ks", nargs="+", type=int, default=[1, 2, 5])
    p.add_argument("--num-tasks", type=int, default=200)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--runs", default="runs")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="folder for JSON, MD and PNG")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the existing JSON's rows of methods not evaluated in this run; figures "
        "are named after the methods evaluated",
    )
    args = p.parse_args()
    results = args.out_dir
    results.mkdir(parents=True, exist_ok=True)

    spec = load_model_spec(args.model)
    ref, _ = spec.build("reference")
    fitted = {"reference": (ref, ref.init(jax.random.PRNGKey(0)), None)}
    for name in args.methods:
        fitted[name] = _fit_or_load(spec, name, args)
    sine_line = spec.family.name == "sine_line"
    classify = spec.family.likelihood == "categorical"
    rows, shown = [], {}
    # every K's support is padded to the same size: one compiled adapt per method
    adapt = {name: jax.jit(m.adapt, static_argnums=3) for name, (m, _, _) in fitted.items()}
    for k in args.ks:
        ts = held_out_tasks(spec, k, args.num_tasks)
        sup = padded_support(ts, max(spec.k_range[1], k))
        reports, posts = {}, {}
        for name, (_, state, _) in fitted.items():
            post = adapt[name](jax.random.PRNGKey(args.seed + k), state, sup, args.samples)
            reports[name] = evaluate(post, ts["x_query"], ts["y_query"])
            posts[name] = post
        for row in compare(reports):
            row["k"] = k
            row["train_s"] = fitted[row["method"]][2]
            if sine_line:
                hc = hypothesis_coverage(posts[row["method"]], posts["reference"])
                row["hyp_cov"] = hc["coverage"]
                row["n_ambiguous"] = hc["n_ambiguous"]
            rows.append(row)
        if k == args.ks[0]:
            shown = {n: _first(p_, 4) for n, p_ in posts.items()}
            shown_sup = jax.tree_util.tree_map(lambda a: a[:4], padded_support(ts, k))
            params = np.asarray(ts["task_params"])[:4]
        del posts
    rows = [{k: v for k, v in r.items() if k not in ("pit", "calibration_curve")} for r in rows]
    out = results / f"ambiguity_{spec.name}.json"
    if args.merge and out.exists():
        done = {(r["method"], r["k"]) for r in rows}
        old = json.loads(out.read_text())["rows"]
        rows += [r for r in old if (r["method"], r["k"]) not in done and r["k"] in args.ks]
    rows.sort(key=lambda r: (r["k"], ORDER.get(r["method"], 9)))
    print(format_table(rows))
    meta = {
        "model": spec.name,
        "n_tasks": args.num_tasks,
        "samples": args.samples,
        "machine": f"{platform.machine()} {jax.devices()[0].device_kind}",
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "provenance": provenance(script_command(__file__), samples=args.samples),
    }
    out.write_text(json.dumps({**meta, "rows": rows}, indent=2, default=float))
    # a merged run draws only the methods it evaluated: its figures get their own names
    tag = "_" + "_".join(args.methods) if args.merge else ""
    if not sine_line:
        out.with_suffix(".md").write_text(
            f"# {spec.name}: {args.num_tasks} held-out tasks\n\n" + markdown_table(rows) + "\n"
        )
        if classify:
            plots.decision_boundaries(
                shown,
                shown_sup.x,
                shown_sup.y,
                shown_sup.mask,
                true_circles=params,
                path=results / f"ambiguity_{spec.name}_boundaries{tag}.png",
            )
        print(f"wrote {out}")
        return
    out.with_suffix(".md").write_text(
        f"# {spec.name}: {args.num_tasks} held-out tasks, 50 query points; `hyp_cov` = "
        "hypothesis coverage over `n_ambiguous` tasks\n\n"
        + markdown_table(rows)
        + "\n\n## Hypothesis coverage\n\n| method | K | hyp_cov | n_ambiguous |\n"
        + "| --- | ---: | ---: | ---: |\n"
        + "".join(
            f"| {r['method']} | {r['k']} | {r['hyp_cov']:.3f} | {r['n_ambiguous']} |\n"
            for r in rows
        )
    )
    for r in rows:
        print(f"{r['method']:15s} K={r['k']}  hyp_cov={r['hyp_cov']:.3f}  (n={r['n_ambiguous']})")
    plots.hypothesis_samples(
        shown,
        shown["reference"],
        shown_sup.x,
        shown_sup.y,
        shown_sup.mask,
        num_curves=40,
        path=results / f"ambiguity_{spec.name}_hypotheses{tag}.png",
    )

    def true(i, grid):
        return np.asarray(spec.family.mean_fn(jnp.asarray(params[i]), jnp.asarray(grid)[:, None]))[
            :, 0
        ]

    plots.predictive_bands(
        shown,
        shown_sup.x,
        shown_sup.y,
        shown_sup.mask,
        true_fn=true,
        num_curves=10,
        path=results / f"ambiguity_{spec.name}_bands{tag}.png",
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
