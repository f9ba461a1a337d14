"""Meta-steps per second of EMAML and BMAML (second- and first-order, chaser and predictive
losses) against MAML, on the sinusoid model (MLP 1-40-40-1, 10 tasks, K ≤ 10, 10 query points,
M = 10 particles, 5 inner steps), measured in one process through the training loop's jitted
chunk runner. Writes ``benchmarks/results/ensembles_speed.json``.

    python benchmarks/ensembles_speed.py [--steps 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

from bayesmeta.bench import provenance, script_command, time_chunks
from bayesmeta.inference import bmaml, emaml, maml
from bayesmeta.inference.train import make_chunk_runner
from bayesmeta.modelfiles import load_model_spec

RESULTS = Path(__file__).parent / "results"


def variants(model):
    yield "maml", maml(model)
    yield "emaml", emaml(model)
    for loss in ("predictive", "chaser"):
        for fo in (False, True):
            name = f"bmaml/{loss}/{'first' if fo else 'second'}-order"
            yield name, bmaml(model, outer=loss, first_order=fo, meta_sgd=True, inner_lr=0.1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=100, help="meta-steps per timed chunk")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    spec = load_model_spec("sinusoid")
    rows = []
    for name, method in variants(spec.model):
        state = method.init(jax.random.PRNGKey(0))
        run = make_chunk_runner(method, spec.sampler(10, 10), args.steps)
        first, best = time_chunks(run, (state, jax.random.PRNGKey(1)), args.repeats)
        rows.append(
            {
                "method": name,
                "steps_per_s": args.steps / best,
                "compile_s": max(first - best, 0.0),
            }
        )
        print(f"{name:32s} {rows[-1]['steps_per_s']:8.1f} steps/s", flush=True)
    base = rows[0]["steps_per_s"]
    for r in rows:
        r["ratio_vs_maml"] = r["steps_per_s"] / base
    by = {r["method"]: r for r in rows}
    for loss in ("predictive", "chaser"):
        so = by[f"bmaml/{loss}/second-order"]["steps_per_s"]
        by[f"bmaml/{loss}/first-order"]["speedup_vs_second_order"] = (
            by[f"bmaml/{loss}/first-order"]["steps_per_s"] / so
        )
    print("\nratios vs MAML (same process):")
    for r in rows:
        print(f"  {r['method']:32s} {r['ratio_vs_maml']:.3f}")
    out = RESULTS / "ensembles_speed.json"
    out.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()} {jax.devices()[0].device_kind}",
                "cpu_count": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d"),
                "setting": "sinusoid MLP 1-40-40-1, 10 tasks, K<=10, Q=10, M=10, 5 inner steps",
                "provenance": provenance(script_command(__file__)),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
