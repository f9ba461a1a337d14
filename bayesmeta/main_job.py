"""``bayesmeta run``: the main job on its embedded default.

Meta-trains MAML, BMAML and the neural process on the sinusoid model (fixed step counts;
``seconds`` adds a wall-clock cap per method), adapts them to held-out tasks at K = 1, 5, 10
beside the exact reference, prints the table (NLL, oracle NLL, gap, MSE, coverage, calibration
error) and writes ``report.json``, ``report.md`` and figures into the output folder.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.atomic import write_text
from bayesmeta.bench import provenance
from bayesmeta.inference.registry import ORACLE
from bayesmeta.runs import evaluate_methods
from bayesmeta.zoo import STREAM_SEEDS

#: The main job's training: step counts (the same numbers on any machine of the platform),
#: each on a full cosine schedule of its own length, sized so that the whole job (compiles,
#: training, 200 tasks at three K beside the exact reference, figures) takes under three
#: minutes on 2 CPU cores. The neural process (its exact conjugate mixture encoder) and BMAML
#: (particles over the body, the last layer integrated out exactly) are the library's best
#: posteriors on this family; MAML is the point-estimate baseline. `bayesmeta fit` is where
#: the recipes run in full.
MAIN_JOB_STEPS = {"maml": 6_000, "bmaml": 750, "neural-process": 15_000}
MAIN_JOB_SAMPLES = 100  # posterior samples per task in the evaluation
EVAL_SEED = STREAM_SEEDS["test"]  # held-out tasks: the test stream, disjoint from training's


def closest_to_oracle(rows: list[dict]) -> dict[int, str]:
    """Per K, the method (not the reference) with the smallest gap to the exact reference."""
    best: dict[int, tuple[float, str]] = {}
    for r in rows:
        if r["method"] == ORACLE or r.get("gap") is None:
            continue
        if r["k"] not in best or r["gap"] < best[r["k"]][0]:
            best[r["k"]] = (r["gap"], r["method"])
    return {k: m for k, (_, m) in sorted(best.items())}


def run_main_job(
    out: str = "bayesmeta-out",
    seconds: float | None = None,
    num_tasks: int = 200,
    seed: int = 0,
    quiet: bool = False,
) -> list[dict]:
    from bayesmeta import plots
    from bayesmeta.evaluate import format_table, markdown_table
    from bayesmeta.modelfiles import load_model_spec

    t_start = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = load_model_spec("sinusoid")
    fitted, train_s = {}, {}
    ref, _ = spec.build(ORACLE)
    fitted[ORACLE] = (ref, ref.init(jax.random.PRNGKey(0)))
    for name, steps in MAIN_JOB_STEPS.items():
        method, res = spec.fit(
            name,
            seed=seed,
            progress=False if quiet else None,
            steps=steps,
            lr_decay_steps=steps,
            max_seconds=seconds,
        )
        fitted[name] = (method, res.state)
        train_s[name] = round(res.seconds, 1)
        if not quiet:
            print(
                f"{name}: {int(res.state.step)} meta-steps in {res.seconds:.1f}s "
                f"(compile {res.compile_seconds:.1f}s)"
            )

    rows, posts, tasks_by_k = evaluate_methods(
        spec, fitted, spec.eval_k, num_tasks, MAIN_JOB_SAMPLES, seed=seed, train_seconds=train_s
    )
    table = format_table(rows)
    best = closest_to_oracle(rows)
    summary = "closest to the exact posterior (lowest gap): " + ", ".join(
        f"K={k}: {m}" for k, m in best.items()
    )
    print(table)
    print(summary)

    fam = spec.family
    for k in (1, 5):
        ts = tasks_by_k[k]
        sub = {name: posts[(name, k)] for name in (ORACLE, *MAIN_JOB_STEPS)}
        params = ts["task_params"]
        plots.predictive_bands(
            sub,
            ts["x_support"],
            ts["y_support"],
            jnp.ones(ts["x_support"].shape[:2]),
            task_indices=(0, 1, 2, 3),
            x_range=fam.x_range,
            true_fn=lambda i, x, p=params: fam.mean_fn(p[i], x[:, None])[:, 0],
            path=out_dir / f"predictive_k{k}.png",
        )
    for k in (1, 5):
        curves = {
            r["method"]: tuple(np.asarray(c) for c in r["calibration_curve"])
            for r in rows
            if r["k"] == k
        }
        plots.calibration_curves(curves, path=out_dir / f"calibration_k{k}.png")
    plots.metric_bars(rows, metric="nll", group="k", path=out_dir / "nll.png")

    clean = [{k: v for k, v in r.items() if k not in ("pit", "calibration_curve")} for r in rows]
    report = {
        "model": spec.name,
        "n_tasks": num_tasks,
        "samples": MAIN_JOB_SAMPLES,
        "steps": MAIN_JOB_STEPS,
        "seed": seed,
        "train_seconds": train_s,
        "total_seconds": time.perf_counter() - t_start,
        "rows": clean,
    }
    report["closest_to_oracle"] = best
    report.update(provenance(" ".join(["bayesmeta", *sys.argv[1:]])))
    write_text(out_dir / "report.json", json.dumps(report, indent=2, default=float))
    write_text(out_dir / "report.md", markdown_table(clean) + "\n" + summary + "\n")
    if not quiet:
        print(
            f"wrote report.json, report.md and figures to {out_dir}/ "
            f"in {report['total_seconds']:.0f}s"
        )
    return clean
