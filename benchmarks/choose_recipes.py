"""Choose a model file's recipe settings on its validation tasks only, and record the choice.

For one model (a built-in name or a model file) and one method, every combination of the
given option values is fitted at the model's recipe (the options replaced), each with its own
early stopping on the validation stream (on grouped data: the validation groups); the score
is the fit's best validation NLL per query point. No test task is seen. The lowest score is
the choice; the file records every trial.

    python benchmarks/choose_recipes.py --model models/cigar_slopes.py --method abml \
        --grid inner_lr=0.5,0.1,0.02 [--grid inner_steps=5,10] [--seed 0]
    python benchmarks/choose_recipes.py --model models/sinusoid_student_t.py \
        --method amortized --trial steps=20000,lr_decay_steps=20000 \
        --trial steps=60000,lr_decay_steps=60000 --name steps

``--trial`` gives one combination of options that go together (a step count and its decay
schedule); the trials are every ``--trial`` (or one empty one) times the ``--grid`` product.

Writes ``choose_<model>_<method>[_<name>].json`` and ``.md`` under ``--out`` (default
benchmarks/results). docs/methods.md and the model files cite these files for their choices.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_grid(items: list[str]) -> dict[str, list]:
    grid = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid: expected OPTION=V1,V2,..., got {item!r}")
        grid[name] = [_value(v) for v in values.split(",")]
    return grid


def parse_trial(item: str) -> dict:
    """``"a=1,b=2"`` -> ``{"a": 1, "b": 2}``: one combination of options."""
    trial = {}
    for part in item.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"--trial: expected OPTION=V[,OPTION=V...], got {item!r}")
        trial[name] = _value(value)
    return trial


def markdown(report: dict) -> str:
    names = list(dict.fromkeys(k for t in report["trials"] for k in t["options"]))
    lines = [
        f"# Recipe choice: {report['model']} / {report['method']} on validation tasks",
        "",
        f"Commit `{report['commit']}`; `{report['command']}`; {report['date']}; seed "
        f"{report['seed']}; {report['total_seconds']:.0f} s. Score: the fit's best validation "
        "NLL per query point (early stopping on the same stream); no test task seen.",
        "",
        "| " + " | ".join(names) + " | validation NLL | best step | steps | s |",
        "|" + "---|" * len(names) + "---:|---:|---:|---:|",
    ]
    for t in report["trials"]:
        mark = " **(chosen)**" if t is report["trials"][report["chosen"]] else ""
        lines.append("| " + " | ".join(str(t["options"].get(n, "")) for n in names)
                     + f" | {t['validation_nll']:.4f}{mark} | {t['best_step']} | {t['steps']} "
                     f"| {t['seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run(argv: list[str] | None = None) -> dict:
    import bayesmeta as bm
    from bayesmeta.atomic import write_text
    from bayesmeta.bench import git_commit, machine

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--grid", action="append", default=[], metavar="OPTION=V1,V2,...")
    p.add_argument("--trial", action="append", default=[], metavar="OPTION=V,OPTION=V")
    p.add_argument("--name", default="", help="a suffix of the results files' name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    grid = parse_grid(args.grid)
    fixed = [parse_trial(t) for t in args.trial] or [{}]
    t_start, sha = time.perf_counter(), git_commit()
    trials = []
    for base, values in itertools.product(fixed, itertools.product(*grid.values())):
        options = {**base, **dict(zip(grid, values, strict=True))}
        t0 = time.perf_counter()
        # validation on: a model with a task family scores its validation stream, not only
        # grouped data (bm.fit's default)
        fitted = bm.fit(args.model, args.method, seed=args.seed, progress=False, validate=True,
                        **options)  # fmt: skip
        info = fitted.info
        score = info.get("best_validation_nll")
        if score is None:
            raise SystemExit(f"{args.model}: the fit recorded no validation NLL; this model "
                             "has no validation stream to choose on")  # fmt: skip
        trials.append({"options": options, "validation_nll": float(score),
                       "best_step": info.get("best_step"), "steps": int(info["steps"]),
                       "seconds": time.perf_counter() - t0})  # fmt: skip
        print(f"{options}: validation NLL {score:.4f} (best step {info.get('best_step')})",
              flush=True)  # fmt: skip
    chosen = min(range(len(trials)), key=lambda i: trials[i]["validation_nll"])
    report = {
        "benchmark": "choose_recipes",
        "commit": sha,
        "command": " ".join(
            [
                "python",
                "benchmarks/choose_recipes.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),  # fmt: skip
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "model": args.model,
        "method": args.method,
        "grid": grid,
        "given_trials": fixed,
        "seed": args.seed,
        "trials": trials,
        "chosen": chosen,
        "total_seconds": time.perf_counter() - t_start,
    }
    stem = f"choose_{Path(args.model).stem}_{args.method}" + (f"_{args.name}" if args.name else "")
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / f"{stem}.json", json.dumps(report, indent=1) + "\n")
    write_text(args.out / f"{stem}.md", markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    run()
