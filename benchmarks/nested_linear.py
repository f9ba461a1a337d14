"""The classical model nested: the ``linear`` data model through every posterior method against
the exact per-group empirical-Bayes linear posterior of the same model (issue 42 item 2).

``linear`` is the per-group Bayesian linear regression whose θ (prior mean, covariance and
noise) starts at the closed-form empirical-Bayes fit of the training groups; every method then
meta-trains from there (early stopping on the validation groups). Its exact posterior at that
EB θ is the ``eb_linear`` baseline every data report carries. This script fits ``linear`` with
each method on each built-in data set, scores a new group's query rows from K support rows
(one task per test group, the tasks of ``benchmarks/real_data.py``), and reports the method's
NLL minus ``eb_linear``'s on the same tasks, with the paired standard error over test groups.

    python benchmarks/nested_linear.py [--data NAME ...] [--methods ...] [--split-seeds 1]
        [--k 1 3 5] [--budget default] [--samples 200] [--seed 0]

Writes ``nested_linear.json`` and ``nested_linear.md`` (generated from the JSON) under
``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from real_data import _standardised, commit, machine  # noqa: E402  (benchmarks/real_data.py)

RESULTS = Path(__file__).parent / "results"
METHODS = ("abml", "bmaml", "platipus", "neural-process")
#: The bar of issue 42: within this many nats per row of the exact EB posterior.
BAR = 0.02


def score(name: str, method: str, split_seed: int, ks, args) -> tuple[list[dict], dict]:
    import bayesmeta as bm
    from bayesmeta.tasks.data import held_out_tasks
    from bayesmeta.tasks.grouped import dataset

    rows = dataset(name)
    splits = rows.split(seed=split_seed)
    t0 = time.perf_counter()
    fitted = bm.fit("linear", method, data=splits, seed=args.seed, budget=args.budget,
                    progress=False)  # fmt: skip
    train_s = time.perf_counter() - t0
    out = []
    for k in ks:
        if int(splits.test.lengths.max()) < k + 1:
            continue
        # the same tasks as real_data.py's (its seed rule), standardised like every run
        raw = held_out_tasks(rows, splits.test.groups, k, seed=args.seed + 1000 * k,
                             min_group_size=k + 1)  # fmt: skip
        rep = fitted.evaluate(_standardised(raw, splits.scaler), num_samples=args.samples,
                              units="fitted", calibration=False)  # fmt: skip
        eb = rep["baselines"]["eb_linear"]
        diff = np.asarray(rep["nll_per_task"]) - np.asarray(eb["nll_per_task"])
        out.append({
            "data": name, "method": method, "split_seed": split_seed, "k": k,
            "n_groups": int(diff.size), "nll": float(rep["nll"]), "eb_nll": float(eb["nll"]),
            "diff": float(rep["nll"] - eb["nll"]),
            "diff_se": float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else None,
            "steps": int(fitted.info["steps"]), "best_step": fitted.info.get("best_step"),
            "train_s": train_s,
        })  # fmt: skip
        print(f"{name:10s} {method:15s} split {split_seed} K={k}: NLL {rep['nll']:.4f}, "
              f"EB {eb['nll']:.4f}, diff {out[-1]['diff']:+.4f}", flush=True)  # fmt: skip
    return out, {"data": name, "method": method, "split_seed": split_seed, "train_s": train_s,
                 "diverged_at": fitted.info.get("diverged_at")}  # fmt: skip


def markdown(report: dict) -> str:
    lines = [
        "# `linear` through every method against its exact empirical-Bayes posterior",
        "",
        f"Commit `{report['commit']}`; `{report['command']}`; {report['date']}; "
        f"{report['total_seconds'] / 60:.0f} min in all. Budget `{report['budget']}`, "
        f"{report['samples']} predictive samples, seed {report['seed']}, split seeds "
        f"{report['split_seeds']}."
        + (
            " **Partial: the run was interrupted; these are the cells it finished.**"
            if report.get("partial")
            else ""
        ),  # fmt: skip
        "",
        f"NLL per query row of the test groups (data units) minus the exact EB linear "
        f"posterior's on the same tasks, ± paired se over groups; **bold** where the "
        f"difference exceeds the bar of {BAR} nats/row.",
        "",
        "| data set | K | " + " | ".join(report["methods"]) + " |",
        "|---|---:|" + "---:|" * len(report["methods"]),
    ]
    cells: dict = {}
    for r in report["rows"]:
        cells.setdefault((r["data"], r["k"]), {}).setdefault(r["method"], []).append(r)
    for (data, k), by in sorted(cells.items()):
        row = []
        for m in report["methods"]:
            rs = by.get(m, [])
            if not rs:
                row.append("")
                continue
            d = float(np.mean([r["diff"] for r in rs]))
            ses = [r["diff_se"] for r in rs if r["diff_se"] is not None]
            se = float(np.sqrt(np.sum(np.square(ses))) / len(ses)) if ses else float("nan")
            text = f"{d:+.3f} ± {se:.3f}"
            row.append(f"**{text}**" if d > BAR else text)
        lines.append(f"| {data} | {k} | " + " | ".join(row) + " |")
    for f in report["fits"]:
        if f.get("error") or f.get("diverged_at"):
            what = f.get("error") or (
                f"diverged near step {f['diverged_at']}; scored at its best validated state"
            )
            lines.append(f"\n{f['data']} / {f['method']} / split {f['split_seed']}: {what}.")
    worst = max((r["diff"] for r in report["rows"]), default=float("nan"))
    within = sum(r["diff"] <= BAR for r in report["rows"])
    lines += ["", f"{within} of {len(report['rows'])} (data set, method, split, K) cells within "
              f"{BAR}; the largest difference {worst:+.3f}.", ""]  # fmt: skip
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> dict:
    from bayesmeta.tasks.grouped import DATASETS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=sorted(DATASETS), choices=sorted(DATASETS))
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--split-seeds", nargs="+", type=int, default=[1])
    p.add_argument("--k", nargs="+", type=int, default=[1, 3, 5])
    p.add_argument("--budget", default="default")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from bayesmeta.inference.train import DivergenceError

    t_start, sha = time.perf_counter(), commit()
    rows, fits = [], []
    for name in args.data:
        for split_seed in args.split_seeds:
            for method in args.methods:
                try:
                    scored, fit = score(name, method, split_seed, args.k, args)
                except DivergenceError as err:  # recorded, not fatal to the other cells
                    scored, fit = [], {"data": name, "method": method,
                                       "split_seed": split_seed, "error": str(err)}  # fmt: skip
                rows.extend(scored)
                fits.append(fit)
                # what is done so far, so that an interrupted run keeps its cells
                _write(args, _report(args, argv, sha, t_start, rows, fits, partial=True))
    report = _report(args, argv, sha, t_start, rows, fits, partial=False)
    _write(args, report)
    print(markdown(report))
    return report


def _report(args, argv, sha, t_start, rows, fits, partial: bool) -> dict:
    return {
        "benchmark": "nested_linear",
        "commit": sha,
        "command": " ".join(
            ["benchmarks/nested_linear.py", *(argv if argv is not None else sys.argv[1:])]
        ),  # fmt: skip
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "methods": args.methods,
        "split_seeds": args.split_seeds,
        "k": args.k,
        "budget": args.budget,
        "samples": args.samples,
        "seed": args.seed,
        "bar": BAR,
        "total_seconds": time.perf_counter() - t_start,
        "fits": fits,
        "rows": rows,
        "partial": partial,
    }


def _write(args, report: dict) -> None:
    from bayesmeta.atomic import write_text

    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "nested_linear.json", json.dumps(report, indent=1) + "\n")
    write_text(args.out / "nested_linear.md", markdown(report))


if __name__ == "__main__":
    run()
