"""The core issue's table: MAML, Meta-SGD, ABML and the reference on held-out tasks.

Each method is meta-trained with its model file's default recipe (what
``bayesmeta fit MODEL --method M`` does), then adapted to 200 held-out tasks (50 query
points each, a key stream never used in training) at K = 1, 5, 10. Writes
``benchmarks/results/core_<model>.json`` and ``.md``.

    python benchmarks/core_table.py [--model sinusoid] [--methods maml meta-sgd abml]
                                    [--budget default] [--num-tasks 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax

from bayesmeta.bench import provenance, script_command
from bayesmeta.evaluate import format_table, markdown_table
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.runs import evaluate_methods

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="sinusoid")
    p.add_argument("--methods", nargs="+", default=["maml", "meta-sgd", "abml"])
    p.add_argument("--budget", default="default")
    p.add_argument("--num-tasks", type=int, default=200)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    spec = load_model_spec(args.model)
    ref, _ = spec.build("reference")
    fitted = {"reference": (ref, ref.init(jax.random.PRNGKey(0)))}
    train_s, steps = {}, {}
    for name in args.methods:
        method, res = spec.fit(name, args.budget, seed=args.seed)
        fitted[name] = (method, res.state)
        train_s[name] = round(res.seconds, 1)
        steps[name] = int(res.state.step)
        print(f"{name}: {steps[name]} steps in {res.seconds:.0f}s", flush=True)
    rows, _, _ = evaluate_methods(
        spec,
        fitted,
        spec.eval_k,
        args.num_tasks,
        args.samples,
        seed=args.seed,
        train_seconds=train_s,
    )
    rows = [{k: v for k, v in r.items() if k not in ("pit", "calibration_curve")} for r in rows]
    print(format_table(rows))
    out = Path(args.out) if args.out else RESULTS / f"core_{spec.name}_{args.budget}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": spec.name,
        "budget": args.budget,
        "n_tasks": args.num_tasks,
        "samples": args.samples,
        "steps": steps,
        "train_seconds": train_s,
        "machine": f"{platform.machine()} {jax.devices()[0].device_kind}",
        "cpu_count": __import__("os").cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "provenance": provenance(
            script_command(__file__),
            steps=steps,
            samples=args.samples,
            seed=args.seed,
        ),
    }
    out.write_text(json.dumps({**meta, "rows": rows}, indent=2, default=float))
    out.with_suffix(".md").write_text(
        f"# {spec.name}, budget {args.budget}: {args.num_tasks} held-out tasks, 50 query points\n\n"
        + markdown_table(rows)
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
