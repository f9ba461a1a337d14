"""The generic NumPyro path at the published sinusoid recipes: does it change the numbers?

The built-in sinusoid model (closed-form densities) and the same model handed over as a plain
NumPyro function (``NumPyroModel(hm.model)``, densities read from a NumPyro trace) are trained
by the same method, at the sinusoid model file's own recipe (its full step count, seed 0, the
same initial θ) and scored on the same held-out test tasks in this process. Only methods whose
sinusoid recipe the generic path can serve are run: the recipes of ABML and PLATIPUS integrate
the last layer out exactly (``head="collapsed"``), which needs the built-in model's structure,
and the neural process's conjugate encoder does too.

    python benchmarks/generic_path.py [--methods maml meta-sgd] [--samples 1000]
    python benchmarks/generic_path.py --speed [--speed-methods maml abml amortized]

Writes ``generic_path.json`` and ``generic_path.md`` under ``--out`` (default
benchmarks/results); the markdown prints the NLL difference (generic − built-in) per K.

``--speed`` measures the time per meta-step instead, in this one process: each method at the
sinusoid recipe's settings (its meta-batch and inner steps; ABML's mean-field head, which
both paths serve) on the built-in model and on the same model as a NumPyro function, 50 steps
in one jitted ``lax.scan`` per call, the two paths' calls interleaved and the best of
``--repeats`` kept for each (the least disturbed by other work on the machine). The ratio
generic / built-in is the result; it replaces the file's ``speed`` part and keeps its NLL rows
(each part names its own commit and command).
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


SPEED_METHODS = ("maml", "abml", "amortized")
SPEED_STEPS = 50


def per_step_seconds(spec, method: str, repeats: int, seed: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds per meta-step of ``method`` on the built-in model and on the
    same model as a NumPyro function, calls interleaved."""
    import jax

    from bayesmeta.inference.registry import METHODS
    from bayesmeta.tasks import sample_batch

    recipe = dict(spec.recipe(method))
    if method == "abml":
        recipe["head"] = "adapted"  # the collapsed head needs the built-in model's structure
    settings = {k: v for k, v in recipe.items() if k in METHODS[method].config.field_names()}
    num_query = int(recipe.get("num_query", 10))
    meta_batch = int(recipe.get("meta_batch", 10))
    key = jax.random.PRNGKey(seed + 1)
    batch = sample_batch(spec.family, key, meta_batch, spec.k_range, num_query)[0]
    wrapped = NumPyroModel(spec.model.model, dx=1, init=spec.model.init_theta)
    runs = {}
    for label, model in (("builtin", spec.model), ("generic", wrapped)):
        m = METHODS[method].factory(model, **settings)

        def steps(state, key, m=m):
            def body(s, k):
                s, info = m.meta_step(k, s, batch)
                return s, info.loss

            return jax.lax.scan(body, state, jax.random.split(key, SPEED_STEPS))

        f = jax.jit(steps)
        state = m.init(jax.random.PRNGKey(seed))
        jax.block_until_ready(f(state, jax.random.PRNGKey(seed)))  # compile
        runs[label] = (f, state)
    best = {label: float("inf") for label in runs}
    for r in range(repeats):
        for label, (f, state) in runs.items():
            t = time.perf_counter()
            jax.block_until_ready(f(state, jax.random.PRNGKey(seed + 10 + r)))
            best[label] = min(best[label], (time.perf_counter() - t) / SPEED_STEPS)
    return {"builtin_s": best["builtin"], "generic_s": best["generic"],
            "ratio": best["generic"] / best["builtin"], "settings": settings}  # fmt: skip


def speed_markdown(speed: dict) -> list[str]:
    prov = speed["provenance"]
    lines = [
        "",
        f"## Time per meta-step ({prov['commit']})",
        "",
        f"`{prov['command']}`; {prov['machine']}; {SPEED_STEPS} steps per jitted call, best of "
        f"{prov['repeats']} interleaved calls per path.",
        "",
        "| method | built-in ms/step | generic ms/step | generic / built-in |",
        "|---|---:|---:|---:|",
    ]
    for r in speed["rows"]:
        lines.append(f"| {r['method']} | {1e3 * r['builtin_s']:.2f} | {1e3 * r['generic_s']:.2f} "
                     f"| {r['ratio']:.2f} |")  # fmt: skip
    return lines


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["maml", "meta-sgd"], choices=SERVED)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=None, help="default: each method's recipe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=20_261_204)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--speed", action="store_true", help="time per meta-step (see the docstring)")
    p.add_argument("--speed-methods", nargs="+", default=list(SPEED_METHODS))
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    base = load_model_spec(str(MODELS_DIR / "sinusoid.py"))
    if args.speed:
        return run_speed(base, args, argv, t_start)
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
    previous = _read(args.out)
    if "speed" in previous:
        out["speed"] = previous["speed"]
    return _write(args.out, out)


def run_speed(base, args, argv, t_start) -> dict:
    rows = []
    for method in args.speed_methods:
        r = per_step_seconds(base, method, args.repeats, args.seed)
        rows.append({"method": method, **r})
        ms = {k: 1e3 * r[f"{k}_s"] for k in ("builtin", "generic")}
        print(f"{method}: built-in {ms['builtin']:.2f} ms/step, generic {ms['generic']:.2f} "
              f"ms/step, ratio {r['ratio']:.2f}", flush=True)  # fmt: skip
    prov = provenance(script_command(__file__, argv), seed=args.seed, repeats=args.repeats,
                      steps_per_call=SPEED_STEPS,
                      seconds=round(time.perf_counter() - t_start, 1))  # fmt: skip
    out = _read(args.out)
    out["speed"] = {"provenance": prov, "rows": rows}
    return _write(args.out, out)


def _read(folder: Path) -> dict:
    path = folder / "generic_path.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _write(folder: Path, out: dict) -> dict:
    from bayesmeta.atomic import write_text

    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(out["rows"], out["provenance"]) if out.get("rows") else ""
    if "speed" in out:
        text += "\n".join(speed_markdown(out["speed"])) + "\n"
    write_text(folder / "generic_path.json", json.dumps(out, indent=1) + "\n")
    write_text(folder / "generic_path.md", text)
    print(text)
    return out


if __name__ == "__main__":
    run()
