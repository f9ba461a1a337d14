"""A batch of labels at once: does a fantasised batch beat the top scores taken together?

Issue 45 item 3. For each family with an exact posterior (the ``reference`` method, so that
what is measured is the batch rule, not a learned posterior), each held-out task starts from
K support points and a pool of candidates; one batch of B labels is chosen by

- ``top``: the B highest acquisition scores on the current posterior (which can crowd one
  region: near-duplicates carry the same information),
- ``fantasised``: one point at a time, each chosen point labelled with its predictive mean,
  the posterior re-adapted and the pool rescored (the "kriging believer",
  :meth:`bayesmeta.evaluate.loop.ActiveLoop.suggest` with ``fantasize=True``),
- ``random``: B pool points at random,

the B labels are revealed, the posterior re-adapted, and the NLL and MSE on held-out
evaluation points of the task are recorded. Differences are paired over tasks.

    python benchmarks/batch_active.py [--families sine_line sinusoid] [--batch 5]
        [--num-tasks 60] [--k 1] [--pool 100] [--num-eval 50] [--acquisition bald]

Writes ``batch_active.json`` and ``batch_active.md`` under ``--out`` (default
benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np

import bayesmeta as bm
from bayesmeta.atomic import write_text
from bayesmeta.bench import provenance, script_command

RESULTS = Path(__file__).parent / "results"
RULES = ("random", "top", "fantasised")


def one_task(fitted, task: dict, args, key) -> dict[str, tuple[float, float]]:
    """``rule -> (NLL, MSE)`` on the task's evaluation points after one batch by each rule."""
    xs, ys = task["x_support"], task["y_support"]
    xp, yp = task["x_pool"], task["y_pool"]
    xe, ye = task["x_eval"][None], task["y_eval"][None]
    out = {}
    for rule in RULES:
        with warnings.catch_warnings():  # the grid's nodes are not the samples asked for
            warnings.simplefilter("ignore", UserWarning)
            acq = "random" if rule == "random" else args.acquisition
            loop = fitted.active(xs, ys, xp, acq, key=key, num_samples=args.samples)
            idx = loop.suggest(args.batch, fantasize=rule == "fantasised")
            loop.tell(idx, yp[idx])
        post = loop.posterior
        nll = -float(np.mean(np.asarray(post.log_predictive(xe, ye))))
        mse = float(np.mean((np.asarray(post.mean(xe)) - ye) ** 2))
        out[rule] = (nll, mse)
    return out


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))


def markdown(result: dict) -> str:
    p = result["provenance"]
    lines = [
        "# A batch of labels at once: fantasised against the top scores (issue 45)",
        "",
        f"Commit `{p['commit']}`, `{p['command']}`, {p['machine']}, {p['seconds']:.0f} s. The "
        f"exact posterior of each family; {p['num_tasks']} held-out test tasks per family, K = "
        f"{p['k']} support points, a pool of {p['pool']}, one batch of B = {p['batch']} labels "
        f"by {p['acquisition']}, then NLL and MSE on {p['num_eval']} evaluation points per task.",
        "",
        "| family | rule | NLL ± se | MSE ± se | NLL − top ± se | MSE − top ± se |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        dn = "–" if r["rule"] == "top" else f"{r['nll_vs_top']:+.3f} ± {r['nll_vs_top_se']:.3f}"
        dm = "–" if r["rule"] == "top" else f"{r['mse_vs_top']:+.3f} ± {r['mse_vs_top_se']:.3f}"
        lines.append(
            f"| {r['family']} | {r['rule']} | {r['nll']:.3f} ± {r['nll_se']:.3f} | "
            f"{r['mse']:.3f} ± {r['mse_se']:.3f} | {dn} | {dm} |"
        )
    lines += ["", "Negative differences: the rule beats the top-B scores on the same tasks."]
    return "\n".join(lines) + "\n"


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["sine_line", "sinusoid"])
    p.add_argument("--acquisition", default="bald")
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--num-tasks", type=int, default=60)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--pool", type=int, default=100)
    p.add_argument("--num-eval", type=int, default=50)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    for family in args.families:
        fitted = bm.fit(family, "reference")
        tasks = fitted.spec.held_out("test", args.k, args.num_tasks, args.pool + args.num_eval)
        xq, yq = np.asarray(tasks["x_query"]), np.asarray(tasks["y_query"])
        per_rule = {r: [] for r in RULES}
        for t in range(args.num_tasks):  # one loop per task: the batch rules are sequential
            task = {
                "x_support": np.asarray(tasks["x_support"][t]),
                "y_support": np.asarray(tasks["y_support"][t]),
                "x_pool": xq[t, : args.pool],
                "y_pool": yq[t, : args.pool],
                "x_eval": xq[t, args.pool :],
                "y_eval": yq[t, args.pool :],
            }
            key = jax.random.fold_in(jax.random.PRNGKey(args.seed), t)
            for rule, v in one_task(fitted, task, args, key).items():
                per_rule[rule].append(v)
        arr = {r: np.asarray(v) for r, v in per_rule.items()}  # (T, 2): NLL, MSE
        for rule in RULES:
            a = arr[rule]
            row = {
                "family": family,
                "rule": rule,
                "nll": float(a[:, 0].mean()),
                "nll_se": float(a[:, 0].std(ddof=1) / np.sqrt(len(a))),
                "mse": float(a[:, 1].mean()),
                "mse_se": float(a[:, 1].std(ddof=1) / np.sqrt(len(a))),
                "nll_per_task": a[:, 0].tolist(),
            }
            if rule != "top":
                row["nll_vs_top"], row["nll_vs_top_se"] = paired(a[:, 0], arr["top"][:, 0])
                row["mse_vs_top"], row["mse_vs_top_se"] = paired(a[:, 1], arr["top"][:, 1])
            rows.append(row)
        print(f"{family}: " + ", ".join(f"{r['rule']} nll {r['nll']:.3f}" for r in rows[-3:]),
              flush=True)  # fmt: skip
    result = {
        "provenance": provenance(
            script_command(__file__, argv),
            families=args.families,
            acquisition=args.acquisition,
            batch=args.batch,
            num_tasks=args.num_tasks,
            k=args.k,
            pool=args.pool,
            num_eval=args.num_eval,
            samples=args.samples,
            seed=args.seed,
            test_stream="test",
            seconds=round(time.perf_counter() - t0, 1),
        ),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "batch_active.json", json.dumps(result, indent=1) + "\n")
    write_text(args.out / "batch_active.md", markdown(result))
    return result


if __name__ == "__main__":
    run()
