"""Your model: the example NumPyro models of ``models/`` fitted by every method that serves
them, scored on held-out tasks under each model's own likelihood.

Models (docs/models.md): ``cigar_slopes`` (random-slopes linear regression, Cigar's test
states), ``epil_poisson`` (Poisson seizure counts, test patients), ``sinusoid_student_t``
(an MLP with a Student-t likelihood, held-out sinusoid tasks). Each method trains for a fixed
number of steps (``--steps``, no wall-clock cap) from ``--seed``; NLL is per query point,
coverage and calibration come from the (randomised, for counts) PIT.

A second table checks that the generic path changes nothing: the built-in sinusoid model and
the same model handed over as a plain NumPyro function (``NumPyroModel(hm.model)``) are
trained by MAML for the same steps and scored on the same tasks.

    python benchmarks/your_model.py [--steps N] [--models ...] [--methods ...]

Writes ``your_model.json`` and ``your_model.md`` under ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from bayesmeta.bench import provenance, script_command
from bayesmeta.evaluate import evaluate
from bayesmeta.model import NumPyroModel
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.tasks.base import padded_support
from bayesmeta.zoo import ModelSpec, held_out_tasks

RESULTS = Path(__file__).parent / "results"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
MODELS = ("cigar_slopes", "epil_poisson", "sinusoid_student_t")
METHODS = ("maml", "emaml", "abml", "bmaml", "platipus")
NUM_TASKS = {"cigar_slopes": 12, "epil_poisson": 9, "sinusoid_student_t": 200, "sinusoid": 200}


def _tasks(spec: ModelSpec, name: str, k: int, seed: int):
    num_query = 2 if name == "epil_poisson" else 10
    return held_out_tasks(spec, k, NUM_TASKS[name], num_query=num_query, seed=seed)


def fit_and_score(spec, name, method, steps, seed, samples, eval_seed) -> list[dict]:
    t0 = time.perf_counter()
    m, res = spec.fit(method, steps=steps, lr_decay_steps=steps, seed=seed, progress=False)
    train_s = time.perf_counter() - t0
    rows = []
    adapt = jax.jit(m.adapt, static_argnums=3)
    for k in spec.eval_k:
        tasks = _tasks(spec, name, k, eval_seed)
        post = adapt(
            jax.random.PRNGKey(seed + k), res.state, padded_support(tasks, spec.k_range[1]), samples
        )
        rep = evaluate(post, tasks["x_query"], tasks["y_query"])
        lp = np.asarray(post.log_predictive(tasks["x_query"], tasks["y_query"])).mean(1)
        rows.append(
            {
                "model": name,
                "method": method,
                "k": k,
                "n_tasks": rep["n_tasks"],
                "n_points": rep["n_points"],
                "nll": rep["nll"],
                "nll_se": float(lp.std(ddof=1) / np.sqrt(lp.size)),
                "mse": rep["mse"],
                "cov90": rep["coverage"]["0.9"],
                "calibration_error": rep["calibration_error"],
                "steps": int(res.state.step),
                "train_s": round(train_s, 1),
                "samples": samples,
                "seed": seed,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def generic_path_check(steps: int, seed: int, samples: int, eval_seed: int) -> list[dict]:
    """MAML on the built-in sinusoid model, and on the same model as a NumPyro function."""
    base = load_model_spec(str(MODELS_DIR / "sinusoid.py"))
    # the same initial θ on both paths: the built-in model's (a network initialisation per key)
    wrapped = NumPyroModel(base.model.model, dx=1, init=base.model.init_theta)
    generic = dataclasses.replace(base, model=wrapped)
    rows = []
    for label, spec in (("HierarchicalModel", base), ("NumPyroModel(hm.model)", generic)):
        for r in fit_and_score(spec, "sinusoid", "maml", steps, seed, samples, eval_seed):
            rows.append({**r, "path": label})
    return rows


def markdown(rows: list[dict], check: list[dict]) -> str:
    lines = [
        "| model | method | K | test tasks | NLL ± se | MSE | cov90 | calib. err. | steps | "
        "train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['k']} | {r['n_tasks']} | "
            f"{r['nll']:.3f} ± {r['nll_se']:.3f} | {r['mse']:.4g} | {r['cov90']:.3f} | "
            f"{r['calibration_error']:.3f} | {r['steps']} | {r['train_s']:.0f} |"
        )
    if check:
        lines += [
            "",
            "The generic path: MAML on the sinusoid, the built-in model against the same model "
            "as a NumPyro function.",
            "",
            "| path | K | NLL | MSE | steps |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in check:
            lines.append(
                f"| {r['path']} | {r['k']} | {r['nll']:.4f} | {r['mse']:.4f} | {r['steps']} |"
            )
    return "\n".join(lines) + "\n"


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--check-steps", type=int, default=2000, help="0 skips the generic-path check")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=20_261_204)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    rows = []
    for name in args.models:
        spec = load_model_spec(str(MODELS_DIR / f"{name}.py"))
        for method in args.methods:
            rows += fit_and_score(
                spec, name, method, args.steps, args.seed, args.samples, args.eval_seed
            )
    check = []
    if args.check_steps:
        check = generic_path_check(args.check_steps, args.seed, args.samples, args.eval_seed)
    out = {
        "provenance": provenance(
            script_command(__file__, argv),
            steps=args.steps,
            check_steps=args.check_steps,
            samples=args.samples,
            seed=args.seed,
            eval_seed=args.eval_seed,
            seconds=round(time.perf_counter() - t_start, 1),
        ),
        "rows": rows,
        "generic_path": check,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "your_model.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.out / "your_model.md").write_text(markdown(rows, check))
    print(markdown(rows, check))
    return out


if __name__ == "__main__":
    run()
