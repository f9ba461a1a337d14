"""Time to quality: each method's held-out gap to the exact posterior against training seconds.

For each family (sinusoid, sine-or-line) and method, one run of the ``standard`` budget's steps
(``bayesmeta.bench.STANDARD_STEPS``) is scored after every chunk on validation tasks (the
validation stream: no training step or published table uses them) at K = 1 and K = 5 against
the exact reference posterior on the same tasks. Training seconds exclude the scoring. The
result says how far each method still is from its own plateau at the standard budget and how
many seconds it needs to come within 0.5, 0.2 and 0.1 nats of the oracle, so that a user can
pick a method for a budget.

    python benchmarks/time_to_quality.py [--families sinusoid sine_line] [--methods ...]
        [--chunks 20] [--tasks 100] [--out benchmarks/results] [--merge]

Writes ``time_to_quality.json`` (curves and thresholds, with provenance) and
``time_to_quality.png`` (gap against seconds, log scale, a panel per family and K). Each curve
carries the provenance of the run that made it; ``--merge`` keeps the curves of the existing
file that this run does not recompute (so the families can be run in pieces).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from bayesmeta.bench import STANDARD_STEPS, provenance, script_command
from bayesmeta.evaluate import evaluate
from bayesmeta.inference.registry import bench_methods
from bayesmeta.inference.train import train
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.tasks.base import padded_support

RESULTS = Path(__file__).parent / "results"
KS = (1, 5)
THRESHOLDS = (0.5, 0.2, 0.1)


def seconds_to_reach(seconds: list[float], gaps: list[float], level: float) -> float | None:
    """The training seconds at the first validation whose gap is at most ``level`` (None if
    the run never gets there)."""
    for s, g in zip(seconds, gaps, strict=True):
        if g <= level:
            return float(s)
    return None


def curve(family: str, method: str, steps: int, chunks: int, num_tasks: int, samples: int,
          seed: int = 0) -> dict:  # fmt: skip
    """One run of ``method`` on ``family`` for ``steps`` steps, scored after each of
    ``chunks`` chunks: ``{"seconds", "step", "gap_k1", "gap_k5", ...}``."""
    spec = load_model_spec(family)
    size = spec.k_range[1]
    tasks = {k: spec.held_out("validation", k, num_tasks, 50) for k in KS}
    ref, _ = spec.build("reference")
    oracle = {}
    for k, ts in tasks.items():
        post = ref.adapt(jax.random.PRNGKey(0), None, padded_support(ts, size), 1)
        oracle[k] = evaluate(post, ts["x_query"], ts["y_query"])["nll"]
    chunk = max(1, steps // chunks)
    method, cfg = spec.build(method, steps=steps, lr_decay_steps=steps, chunk_size=chunk)
    adapt = jax.jit(method.adapt, static_argnums=3)
    supports = {k: padded_support(ts, size) for k, ts in tasks.items()}
    gaps: dict[int, list[float]] = {k: [] for k in KS}

    def validate(state) -> float:
        for k, ts in tasks.items():
            post = adapt(jax.random.PRNGKey(1), state, supports[k], samples)
            nll = -float(np.mean(np.asarray(post.log_predictive(ts["x_query"], ts["y_query"]))))
            gaps[k].append(nll - oracle[k])
        return gaps[KS[-1]][-1]

    k_init, k_train = jax.random.split(jax.random.PRNGKey(seed))
    sampler = spec.sampler(cfg["meta_batch"], cfg["num_query"], cfg["k_power"])
    res = train(method, method.init(k_init), sampler, k_train, steps, chunk_size=chunk,
                progress=False, validate=validate)  # fmt: skip
    seconds = [float(s) for s in res.history["seconds"]]
    out = {
        "family": family,
        "method": method.name,
        "steps": int(res.state.step),
        "seed": seed,
        "compile_seconds": float(res.compile_seconds),
        "seconds": seconds,
        "step": [int(s) for s in res.history["step"]],
        "oracle_nll": {str(k): float(v) for k, v in oracle.items()},
    }
    for k in KS:
        out[f"gap_k{k}"] = [float(g) for g in gaps[k]]
        out[f"seconds_to_gap_k{k}"] = {
            str(level): seconds_to_reach(seconds, gaps[k], level) for level in THRESHOLDS
        }
    return out


def merge_curves(old: dict | None, curves: list[dict]) -> list[dict]:
    """``curves`` and, from ``old`` (an earlier result), the curves of every (family, method)
    that ``curves`` lacks, each keeping its own provenance (the old file's where the curve has
    none); ordered by family, then method, as first seen."""
    if not old:
        return curves
    fresh = {(c["family"], c["method"]) for c in curves}
    kept = [
        {**c, "provenance": c.get("provenance", old.get("provenance", {}))}
        for c in old["curves"]
        if (c["family"], c["method"]) not in fresh
    ]
    merged = kept + curves
    fams = list(dict.fromkeys(c["family"] for c in old["curves"] + curves))
    methods = list(dict.fromkeys(c["method"] for c in old["curves"] + curves))
    return sorted(merged, key=lambda c: (fams.index(c["family"]), methods.index(c["method"])))


def figure(curves: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayesmeta.plots import method_color

    families = list(dict.fromkeys(c["family"] for c in curves))
    fig, axes = plt.subplots(len(families), len(KS), figsize=(4.2 * len(KS), 3.2 * len(families)),
                             squeeze=False, layout="constrained")  # fmt: skip
    for i, fam in enumerate(families):
        for j, k in enumerate(KS):
            ax = axes[i, j]
            for c in (c for c in curves if c["family"] == fam):
                ax.plot(c["seconds"], np.maximum(c[f"gap_k{k}"], 1e-3), marker=".",
                        color=method_color(c["method"]), label=c["method"])  # fmt: skip
            for level in THRESHOLDS:
                ax.axhline(level, color="0.8", lw=0.8, zorder=0)
            ax.set(xscale="log", yscale="log", title=f"{fam}, K = {k}",
                   xlabel="training seconds", ylabel="validation gap (nats)")  # fmt: skip
    axes[0, -1].legend(fontsize=7, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["sinusoid", "sine_line"])
    p.add_argument("--methods", nargs="+", default=list(bench_methods()))
    p.add_argument("--chunks", type=int, default=20, help="validations per run")
    p.add_argument("--tasks", type=int, default=100, help="validation tasks per K")
    p.add_argument("--samples", type=int, default=100, help="posterior samples per task")
    p.add_argument("--steps-scale", type=float, default=1.0,
                   help="a fraction of the standard steps (a quick check)")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--merge", action="store_true", help="keep the file's curves this run does not recompute"
    )
    args = p.parse_args(argv)
    command = script_command(__file__, argv)
    t0 = time.perf_counter()
    curves = []
    for fam in args.families:
        for m in args.methods:
            steps = max(args.chunks, int(STANDARD_STEPS[fam][m] * args.steps_scale))
            t_run = time.perf_counter()
            c = curve(fam, m, steps, args.chunks, args.tasks, args.samples)
            c["provenance"] = provenance(
                command,
                budget="standard",
                steps_scale=args.steps_scale,
                samples=args.samples,
                validation_tasks=args.tasks,
                seconds=round(time.perf_counter() - t_run, 1),
            )
            curves.append(c)
            reach = {k: c[f"seconds_to_gap_k{k}"] for k in KS}
            print(f"{fam:10s} {m:15s} {c['steps']:7d} steps {c['seconds'][-1]:6.0f} s  final "
                  f"gap K=1 {c['gap_k1'][-1]:.3f} K=5 {c['gap_k5'][-1]:.3f}  seconds to "
                  f"0.5/0.2/0.1: {reach}", flush=True)  # fmt: skip
    path = args.out / "time_to_quality.json"
    if args.merge and path.exists():
        curves = merge_curves(json.loads(path.read_text()), curves)
    out = {
        "provenance": provenance(
            command,
            budget="standard",
            samples=args.samples,
            validation_tasks=args.tasks,
            seconds=round(time.perf_counter() - t0, 1),
        ),  # fmt: skip
        "thresholds": list(THRESHOLDS),
        "curves": curves,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    from bayesmeta.atomic import write_text

    write_text(path, json.dumps(out, indent=1) + "\n")
    figure(curves, args.out / "time_to_quality.png")
    return out


if __name__ == "__main__":
    run()
