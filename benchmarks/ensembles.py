"""The ensembles issue's tables: BMAML vs EMAML vs MAML, and BMAML's own sinusoid setting.

``compare`` (default): EMAML and BMAML are meta-trained with the model file's default recipe
(what ``bayesmeta fit MODEL --method M`` does), adapted to the 200 held-out tasks of the core
table (same seeds, 50 query points, K = 1, 5, 10) and compared with the reference; MAML's and
the reference's rows come from the core table's JSON of the same tasks
(``benchmarks/results/core_<model>_default.json``) when it exists, else MAML is trained here
too. Writes ``benchmarks/results/ensembles_<model>.{json,md,png}`` and keeps each trained model as a
run directory ``runs/<model>/<method>`` (what ``bayesmeta fit`` writes; usable by
``bayesmeta evaluate`` and ``bayesmeta active``).

``setting``: BMAML's sinusoid (``models/sinusoid_bmaml.py``) with pools of 100 and 1000
training tasks, EMAML vs BMAML, MSE on 200 fresh tasks at K = 5 and 10 (as in Yoon et al.
2018, Table 1). Writes ``benchmarks/results/ensembles_bmaml_setting.{json,md}``.

    python benchmarks/ensembles.py compare --model sinusoid [--methods bmaml] [--keep-rows emaml]
    python benchmarks/ensembles.py setting [--seconds 240]
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
import numpy as np

from bayesmeta import plots
from bayesmeta.bench import provenance, script_command
from bayesmeta.evaluate import evaluate, format_table, markdown_table
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.runs import evaluate_methods
from bayesmeta.tasks import finite_pool
from bayesmeta.tasks.base import padded_support
from bayesmeta.zoo import held_out_tasks

RESULTS = Path(__file__).parent / "results"
ORDER = {"reference": 0, "maml": 1, "emaml": 2, "bmaml": 3, "abml": 4, "platipus": 5}


def _meta() -> dict:
    return {
        "machine": f"{platform.machine()} {jax.devices()[0].device_kind}",
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "provenance": provenance(script_command(__file__)),
    }


def compare(args) -> None:
    spec = load_model_spec(args.model)
    core = RESULTS / f"core_{spec.name}_default.json"
    core_rows = []
    methods = list(args.methods)
    core_data = json.loads(core.read_text()) if core.exists() else {}
    if core_data.get("n_tasks") == args.num_tasks and not args.retrain_maml:
        core_rows = [r for r in core_data["rows"] if r["method"] in ("maml", "reference", "abml")]
    elif "maml" not in methods:
        methods.insert(0, "maml")
    ref, _ = spec.build("reference")
    fitted = {"reference": (ref, ref.init(jax.random.PRNGKey(0)))}
    train_s, steps = {}, {}
    for name in methods:
        run_dir = Path(args.runs) / spec.name / name
        if args.reuse and (run_dir / "checkpoint.npz").exists():
            from bayesmeta.runs import load_run

            _, method, state, _ = load_run(str(run_dir))
            fitted[name] = (method, state)
            steps[name] = int(state.step)
            print(f"{name}: loaded {run_dir} ({steps[name]} steps)", flush=True)
            continue
        method, res = spec.fit(
            name,
            args.budget,
            seed=args.seed,
            progress=not args.quiet,
            max_seconds=args.seconds,
            run_dir=run_dir,
            force=True,
        )
        fitted[name] = (method, res.state)
        train_s[name] = round(res.seconds, 1)
        steps[name] = int(res.state.step)
        print(f"{name}: {steps[name]} steps in {res.seconds:.0f}s", flush=True)
    # One K at a time, keeping only the plotted tasks' posteriors: (200, 1000, 1761) samples
    # per method and K do not all fit in memory at once.
    rows, posts, tasks = [], {}, {}
    for k in spec.eval_k:
        r_k, p_k, t_k = evaluate_methods(
            spec, fitted, (k,), args.num_tasks, args.samples, seed=args.seed,
            train_seconds=train_s,
        )  # fmt: skip
        rows += r_k
        tasks.update(t_k)
        if k == spec.eval_k[0]:
            posts = {key: dataclasses.replace(p, phi=p.phi[:4], log_weights=p.log_weights[:4],
                                              noise_std=p.noise_std[:4])
                     for key, p in p_k.items()}  # fmt: skip
        del p_k
    rows = [{k: v for k, v in r.items() if k not in ("pit", "calibration_curve")} for r in rows]
    if core_rows:
        have = {(r["method"], r["k"]) for r in rows}
        rows += [r for r in core_rows if (r["method"], r["k"]) not in have]
    out = Path(args.out) if args.out else RESULTS / f"ensembles_{spec.name}.json"
    kept = []
    if args.keep_rows and out.exists():
        old = json.loads(out.read_text())
        have = {(r["method"], r["k"]) for r in rows}
        kept = sorted(
            {r["method"] for r in old["rows"] if (r["method"], r["k"]) not in have}
            & set(args.keep_rows)
        )
        rows += [r for r in old["rows"] if r["method"] in kept and r["k"] in spec.eval_k]
        steps.update({m: old["steps"][m] for m in kept if m in old.get("steps", {})})
        train_s.update(
            {m: old["train_seconds"][m] for m in kept if m in old.get("train_seconds", {})}
        )
    rows.sort(key=lambda r: (r["k"], ORDER.get(r["method"], 9)))
    print(format_table(rows))
    payload = {
        "model": spec.name,
        "n_tasks": args.num_tasks,
        "steps": steps,
        "train_seconds": train_s,
        "maml_rows_from": core.name if core_rows else None,
        "rows_kept_from_previous_run": kept,
        **_meta(),
        "rows": rows,
    }
    out.write_text(json.dumps(payload, indent=2, default=float))
    out.with_suffix(".md").write_text(
        f"# {spec.name}: BMAML vs EMAML vs MAML, {args.num_tasks} held-out tasks, "
        "50 query points\n\n"
        + markdown_table(rows)
        + f"\n\nTraining steps: {steps}; seconds: {train_s}."
        + (f" MAML, ABML and reference rows from `{core.name}` (same tasks)." if core_rows else "")
        + (
            f" Rows of {', '.join(kept)} kept from the previous run of this table (same tasks and"
            " seeds; their recipe unchanged)."
            if kept
            else ""
        )
        + "\n"
    )
    k = spec.eval_k[0]
    ts = tasks[k]
    shown = {n: posts[(n, k)] for n in fitted}
    true = None
    if "task_params" in ts:
        params = np.asarray(ts["task_params"])

        def true(i, grid):
            return np.asarray(spec.family.mean_fn(params[i], grid[:, None]))[:, 0]

    sup = jax.tree_util.tree_map(lambda a: a[:4], padded_support(ts, k))
    plots.predictive_bands(
        shown,
        sup.x,
        sup.y,
        sup.mask,
        task_indices=(0, 1, 2, 3),
        true_fn=true,
        num_curves=10,
        path=out.with_suffix(".png"),
        x_range=spec.family.x_range,
    )
    print(f"wrote {out}")


def setting(args) -> None:
    base = load_model_spec("sinusoid_bmaml")
    rows = []
    for pool in (100, 1000):
        spec = dataclasses.replace(base, train_family=finite_pool(base.family, pool, seed=0))
        for name in ("emaml", "bmaml"):
            method, res = spec.fit(
                name, seed=args.seed, progress=not args.quiet, max_seconds=args.seconds
            )
            for k in spec.eval_k:
                ts = held_out_tasks(spec, k, args.num_tasks)
                post = method.adapt(
                    jax.random.PRNGKey(args.seed + k), res.state, padded_support(ts, k), 10
                )
                rep = evaluate(post, ts["x_query"], ts["y_query"])
                rows.append(
                    {
                        "method": name,
                        "pool": pool,
                        "k": k,
                        "mse": rep["mse"],
                        "nll": rep["nll"],
                        "coverage_90": rep["coverage"]["0.9"],
                        "steps": int(res.state.step),
                        "train_s": round(res.seconds, 1),
                    }
                )
                print(rows[-1], flush=True)
    out = Path(args.out) if args.out else RESULTS / "ensembles_bmaml_setting.json"
    out.write_text(
        json.dumps(
            {"seconds_per_model": args.seconds, **_meta(), "rows": rows}, indent=2, default=float
        )
    )
    lines = [
        "# BMAML's sinusoid setting: MSE on 200 fresh tasks (50 query points), M = 10",
        "",
        "| pool | K | EMAML MSE | BMAML MSE | EMAML NLL | BMAML NLL |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by = {(r["method"], r["pool"], r["k"]): r for r in rows}
    for pool in (100, 1000):
        for k in base.eval_k:
            e, b = by[("emaml", pool, k)], by[("bmaml", pool, k)]
            lines.append(
                f"| {pool} | {k} | {e['mse']:.4f} | {b['mse']:.4f} | {e['nll']:.3f} | "
                f"{b['nll']:.3f} |"
            )
    lines.append(f"\nEach model trained for at most {args.seconds} s on this machine.")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="suite", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--model", default="sinusoid")
    c.add_argument("--methods", nargs="+", default=["emaml", "bmaml"])
    c.add_argument("--retrain-maml", action="store_true")
    c.add_argument("--budget", default="default")
    c.add_argument("--runs", default="runs", help="where to keep the run directories")
    c.add_argument("--reuse", action="store_true", help="load runs that already exist")
    c.add_argument(
        "--keep-rows",
        nargs="+",
        default=[],
        metavar="METHOD",
        help="keep the existing JSON's rows of these methods (not retrained here; only valid "
        "when their recipe has not changed); the figure shows only the methods evaluated",
    )
    c.add_argument("--seconds", type=float, default=None, help="cap on each model's training")
    s = sub.add_parser("setting")
    s.add_argument("--seconds", type=float, default=240.0)
    for q in (c, s):
        q.add_argument("--num-tasks", type=int, default=200)
        q.add_argument("--samples", type=int, default=1000)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--quiet", action="store_true")
        q.add_argument("--out", default=None)
    args = p.parse_args()
    compare(args) if args.suite == "compare" else setting(args)


if __name__ == "__main__":
    main()
