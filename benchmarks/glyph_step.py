"""Where a glyph meta-step's time goes: episode sampling against the method's own step.

For each method (its glyph recipe: meta-batch, query size, samples or particles) this times,
in one process and on the same inputs:

- ``sample``: drawing a meta-batch of 5-way episodes (character choice, glyph lookup,
  random shifts) — ``chunk`` batches in one jitted ``lax.scan``;
- ``step``: the method's meta-step on one fixed batch, ``chunk`` times in one scan (no
  sampling: the conv4 forward and backward passes, the inner loop, the optimiser);
- ``chunk``: what training runs, both together (:func:`make_chunk_runner`).

and prints milliseconds per meta-step, steps per second and the sampler's share of a chunk.
Writes ``benchmarks/results/glyph_step.json`` with provenance.

    python benchmarks/glyph_step.py [--methods maml protonet ...] [--chunk 25] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax

from bayesmeta.atomic import write_text
from bayesmeta.bench import provenance, script_command
from bayesmeta.inference.train import make_chunk_runner
from bayesmeta.modelfiles import load_model_spec

RESULTS = Path(__file__).parent / "results"


def best_of(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls (after one call that compiles)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(spec, name: str, chunk: int, repeats: int) -> dict:
    method, cfg = spec.build(name)
    sampler = spec.sampler(cfg["meta_batch"], cfg["num_query"], cfg["k_power"])
    key = jax.random.PRNGKey(0)
    state = method.init(key)

    @jax.jit
    def sample_only(key):
        def body(k, _):
            k, sub = jax.random.split(k)
            return k, jax.tree_util.tree_map(lambda a: a.sum(), sampler(sub))

        return jax.lax.scan(body, key, None, length=chunk)[1]

    batch = jax.jit(sampler)(key)

    @jax.jit
    def step_only(state, key):
        def body(carry, _):
            st, k = carry
            k, sub = jax.random.split(k)
            st, info = method.meta_step(sub, st, batch)
            return (st, k), info.loss

        return jax.lax.scan(body, (state, key), None, length=chunk)

    run = make_chunk_runner(method, sampler, chunk)
    t_sample = best_of(lambda: sample_only(key), repeats) / chunk
    t_step = best_of(lambda: step_only(state, key), repeats) / chunk
    t_chunk = best_of(lambda: run(state, key), repeats) / chunk
    return {
        "method": name,
        "meta_batch": cfg["meta_batch"],
        "num_query": cfg["num_query"],
        "sample_ms": 1e3 * t_sample,
        "step_ms": 1e3 * t_step,
        "chunk_ms": 1e3 * t_chunk,
        "steps_per_s": 1.0 / t_chunk,
        "sampler_share": t_sample / t_chunk,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+",
                   default=["maml", "protonet", "bayesian-protonet", "neural-process"])  # fmt: skip
    p.add_argument("--chunk", type=int, default=25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "glyph_step.json")
    args = p.parse_args(argv)
    spec = load_model_spec("glyphs")
    rows = []
    for name in args.methods:
        r = measure(spec, name, args.chunk, args.repeats)
        rows.append(r)
        print(
            f"{name:>18s}: {r['chunk_ms']:6.1f} ms/step ({r['steps_per_s']:5.1f} steps/s); "
            f"sampling {r['sample_ms']:5.1f} ms ({100 * r['sampler_share']:.0f} %), "
            f"the step alone {r['step_ms']:6.1f} ms; meta-batch {r['meta_batch']}",
            flush=True,
        )
    out = {
        **provenance(
            script_command(__file__),
            chunk=args.chunk,
            repeats=args.repeats,
            # other jobs on the machine slow every row alike; the shares stay
            load_average=os.getloadavg(),
        ),
        "rows": rows,
    }
    write_text(args.out, json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
