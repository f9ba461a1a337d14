"""The generic NumPyro path at the published sinusoid recipes: does it change the numbers?

The built-in sinusoid model (closed-form densities) and the same model handed over as a plain
NumPyro function (``NumPyroModel(hm.model)``, densities read from a NumPyro trace) are trained
by the same method, at the sinusoid model file's own recipe (its full step count, seed 0, the
same initial θ) and scored on the same held-out test tasks in this process. Only methods whose
sinusoid recipe the generic path can serve are run: the recipes of ABML and PLATIPUS integrate
the last layer out exactly (``head="collapsed"``), which needs the built-in model's structure,
and the neural process's conjugate encoder does too.

    python benchmarks/generic_path.py [--methods maml meta-sgd] [--samples 1000]

Writes ``generic_path.json`` and ``generic_path.md`` under ``--out`` (default
benchmarks/results); the markdown prints the NLL difference (generic − built-in) per K.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from your_model import MODELS_DIR, RESULTS, fit_and_score  # benchmarks/your_model.py

from bayesmeta.bench import provenance, script_command
from bayesmeta.model import NumPyroModel
from bayesmeta.modelfiles import load_model_spec

SERVED = ("maml", "meta-sgd", "emaml", "bmaml")


def markdown(rows: list[dict], provenance: dict) -> str:
    lines = [
        f"# The generic NumPyro path at the sinusoid recipes ({provenance['commit'][:7]})",
        "",
        f"`{provenance['command']}`; {provenance['samples']} posterior samples, seed "
        f"{provenance['seed']}, held-out test tasks; NLL per query point.",
        "",
        "| method | K | steps | NLL built-in | NLL generic | generic − built-in | train s b/g |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    built = {(r["method"], r["k"]): r for r in rows if r["path"] == "HierarchicalModel"}
    for r in rows:
        if r["path"] == "HierarchicalModel":
            continue
        b = built[(r["method"], r["k"])]
        lines.append(
            f"| {r['method']} | {r['k']} | {r['steps']} | {b['nll']:.4f} | {r['nll']:.4f} | "
            f"{r['nll'] - b['nll']:+.4f} | {b['train_s']:.0f} / {r['train_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["maml", "meta-sgd"], choices=SERVED)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=None, help="default: each method's recipe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=20_261_204)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    base = load_model_spec(str(MODELS_DIR / "sinusoid.py"))
    # the same initial θ on both paths: the built-in model's (a network initialisation per key)
    wrapped = NumPyroModel(base.model.model, dx=1, init=base.model.init_theta)
    generic = dataclasses.replace(base, model=wrapped)
    rows = []
    for method in args.methods:
        steps = args.steps or base.recipe(method)["steps"]
        for label, spec in (("HierarchicalModel", base), ("NumPyroModel(hm.model)", generic)):
            for r in fit_and_score(
                spec, "sinusoid", method, steps, args.seed, args.samples, args.eval_seed
            ):
                rows.append({**r, "path": label})
    prov = provenance(
        script_command(__file__, argv),
        samples=args.samples,
        seed=args.seed,
        eval_seed=args.eval_seed,
        seconds=round(time.perf_counter() - t_start, 1),
    )
    out = {"provenance": prov, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generic_path.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.out / "generic_path.md").write_text(markdown(rows, prov))
    print(markdown(rows, prov))
    return out


if __name__ == "__main__":
    run()
