"""Amortized VI against NUTS at the same θ (issue 43): every method that serves a user
NumPyro model, scored beside the exact task posterior at its own meta-parameters.

For each example model (``sinusoid_student_t``, ``cigar_slopes``, ``epil_poisson``,
``grouped_logistic``) each method (``maml``, ``abml``, ``bmaml``, ``platipus``,
``amortized``) is fitted with ``bayesmeta.fit`` at the model's recipe (its step count unless
``--steps`` or ``--method-steps`` overrides it), adapted to held-out test tasks at one
support size K (5; the largest the model allows where its groups are shorter), and scored
per query point under the model's own likelihood. The same tasks are then adapted by NUTS
over each task's φ at that fit's θ (:meth:`bayesmeta.Fitted.nuts`), so each row carries the
method's NLL, NUTS's NLL at the same θ and the gap between them with a paired standard error
over tasks: the gap measures the method's approximation of p(φ | D, θ), the NLL itself
measures the method (θ included).

``--diagnose MODEL ...`` adds, for ``amortized``, the amortization gap measured at the fitted θ
(the encoder's q refined by L Adam steps on each task's ELBO, L = 0 being the default
adapt), a fit with the predictive outer objective, and a fit with more steps, each scored
on the same tasks.

    python benchmarks/amortized_vs_nuts.py [--models ...] [--methods ...] [--steps N]
        [--method-steps bmaml=2000 ...] [--nuts-tasks 20] [--diagnose MODEL ...]

Writes ``amortized_vs_nuts.json`` and ``amortized_vs_nuts.md`` under ``--out`` (default
benchmarks/results); the markdown is generated from the JSON (``--markdown-only`` rewrites
it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import bayesmeta as bm
from bayesmeta.bench import provenance, script_command
from bayesmeta.evaluate import evaluate
from bayesmeta.modelfiles import load_model_spec

RESULTS = Path(__file__).parent / "results"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
MODELS = ("sinusoid_student_t", "cigar_slopes", "epil_poisson", "grouped_logistic")
METHODS = ("maml", "abml", "bmaml", "platipus", "amortized")
#: Support size per model: K = 5, except epil (four visits per patient: K = 2, 2 queries).
K = {"sinusoid_student_t": 5, "cigar_slopes": 5, "epil_poisson": 2, "grouped_logistic": 5}
NUM_QUERY = {
    "sinusoid_student_t": 10,
    "cigar_slopes": 10,
    "epil_poisson": 2,
    "grouped_logistic": 10,
}
#: Likelihoods whose y is 0/1 (accuracy is reported beside the Brier score).
BINARY = ("grouped_logistic",)
GAP_BAR = 0.15


def _tasks(spec, name: str, num_tasks: int) -> dict[str, np.ndarray]:
    return spec.held_out("test", K[name], num_tasks, NUM_QUERY[name])


def _mask(tasks: dict, which: str) -> np.ndarray:
    return np.asarray(tasks.get(f"mask_{which}", np.ones(tasks[f"x_{which}"].shape[:2])))


def score(post, tasks: dict, binary: bool) -> dict[str, Any]:
    """Metrics of one posterior on the query sets, with the per-task NLL for paired gaps."""
    mq = _mask(tasks, "query")
    rep = evaluate(post, tasks["x_query"], tasks["y_query"], mask_query=mq)
    lp = np.asarray(
        post.log_predictive(jnp.asarray(tasks["x_query"]), jnp.asarray(tasks["y_query"]))
    )
    per_task = -(lp * mq).sum(1) / mq.sum(1)
    out = {
        "nll": float(rep["nll"]),
        "nll_se": float(per_task.std(ddof=1) / np.sqrt(per_task.size)),
        "nll_per_task": per_task.tolist(),
        "mse": float(rep["mse"]),
        "cov90": float(rep["coverage"]["0.9"]),
        "calibration_error": float(rep["calibration_error"]),
    }
    if binary:
        p = np.asarray(post.mean(jnp.asarray(tasks["x_query"])))[..., 0]
        hit = ((p > 0.5) == (tasks["y_query"][..., 0] > 0.5)).astype(np.float64)
        acc = (hit * mq).sum(1) / mq.sum(1)
        out["accuracy"] = float((hit * mq).sum() / mq.sum())
        out["accuracy_se"] = float(acc.std(ddof=1) / np.sqrt(acc.size))
    return out


def _adapt(fitted, tasks: dict, samples: int, seed: int):
    return fitted.adapt(
        tasks["x_support"],
        tasks["y_support"],
        samples,
        mask=_mask(tasks, "support"),
        key=jax.random.PRNGKey(seed),
    )


def _paired(a: list[float], b: list[float]) -> tuple[float, float]:
    d = np.asarray(a) - np.asarray(b)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))


def _fit(spec, method: str, steps: int | None, seed: int, **config):
    extra = {} if steps is None else {"lr_decay_steps": steps}
    t0 = time.perf_counter()
    fitted = bm.fit(spec, method, steps=steps, seed=seed, progress=False, **extra, **config)
    return fitted, time.perf_counter() - t0


def nuts_score(fitted, tasks, args, binary: bool) -> tuple[dict, dict]:
    """NUTS at ``fitted``'s θ on ``tasks``: its metrics and the chains' diagnostics."""
    ref = fitted.nuts(num_warmup=args.nuts_warmup, num_chains=args.nuts_chains)
    t0 = time.perf_counter()
    post = _adapt(ref, tasks, args.nuts_samples, args.eval_seed + 1)
    secs = time.perf_counter() - t0
    diag = ref.method.extras["diagnostics"]
    rhat = [d["max_r_hat"] for d in diag]
    return score(post, tasks, binary), {
        "nuts_seconds": round(secs, 1),
        "nuts_max_r_hat": float(np.nanmax(rhat)) if rhat else float("nan"),
        "nuts_divergences": int(sum(d["divergences"] for d in diag)),
    }


def run_model(name: str, args) -> tuple[list[dict], list[dict]]:
    spec = load_model_spec(str(MODELS_DIR / f"{name}.py"))
    binary = name in BINARY
    tasks = _tasks(spec, name, args.model_nuts_tasks.get(name, args.nuts_tasks))
    rows, diag_rows = [], []
    for method in args.methods:
        steps = args.method_steps.get(method, args.steps)
        try:
            fitted, train_s = _fit(spec, method, steps, args.seed)
        except Exception as err:  # a diverged recipe is a result: keep it and go on
            rows.append({"model": name, "method": method, "k": K[name], "error": repr(err)})
            print(json.dumps(rows[-1]), flush=True)
            if method == "amortized" and name in args.diagnose:
                diag_rows += diagnose_diverged(spec, name, tasks, args, binary)
            continue
        mine = score(_adapt(fitted, tasks, args.samples, args.eval_seed), tasks, binary)
        ref, info = nuts_score(fitted, tasks, args, binary)
        gap, gap_se = _paired(mine["nll_per_task"], ref["nll_per_task"])
        row = {
            "model": name,
            "method": method,
            "k": K[name],
            "n_tasks": len(mine["nll_per_task"]),
            "num_query": NUM_QUERY[name],
            "steps": int(fitted.state.step),
            "best_step": fitted.info.get("best_step"),
            "train_s": round(train_s, 1),
            **mine,
            **{f"nuts_{k}": v for k, v in ref.items()},
            "gap": gap,
            "gap_se": gap_se,
            **info,
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if "per_task" not in k}), flush=True)
        if method == "amortized" and name in args.diagnose:
            diag_rows += diagnose(spec, name, fitted, tasks, ref, args, binary)
    return rows, diag_rows


def diagnose_diverged(spec, name, tasks, args, binary: bool) -> list[dict]:
    """``amortized`` whose recipe diverged: the same fit at a tenth of the learning rate,
    scored beside NUTS at its own θ."""
    lr = spec.recipes.get("amortized", {}).get("lr") or spec.recipes["*"]["lr"]
    try:
        fitted, secs = _fit(spec, "amortized", None, args.seed, lr=lr / 10)
    except Exception as err:
        return [{"model": name, "variant": f"lr={lr / 10:g}", "error": repr(err)}]
    s = score(_adapt(fitted, tasks, args.samples, args.eval_seed), tasks, binary)
    ref, _ = nuts_score(fitted, tasks, args, binary)
    gap, gap_se = _paired(s["nll_per_task"], ref["nll_per_task"])
    row = {"model": name, "variant": f"lr={lr / 10:g}", "same_theta": False,
           "train_s": round(secs, 1), "steps": int(fitted.state.step), **s,
           "nuts_nll": ref["nll"], "gap": gap, "gap_own_se": gap_se,
           "gap_to_default_nuts": float("nan"), "gap_se": float("nan")}  # fmt: skip
    print(json.dumps({k: v for k, v in row.items() if "per_task" not in k}), flush=True)
    return [row]


def diagnose(spec, name, fitted, tasks, ref: dict, args, binary: bool) -> list[dict]:
    """Where ``amortized`` loses to NUTS: refinement at the same θ, the outer objective, and
    training length; each variant's NLL and its paired gap to NUTS at the default fit's θ."""
    from bayesmeta.inference.amortized import amortized

    out = []

    def add(variant: str, post, train_s: float | None, same_theta: bool) -> None:
        s = score(post, tasks, binary)
        gap, gap_se = _paired(s["nll_per_task"], ref["nll_per_task"])
        row = {"model": name, "variant": variant, "same_theta": same_theta, "train_s": train_s,
               **s, "gap_to_default_nuts": gap, "gap_se": gap_se}  # fmt: skip
        out.append(row)
        print(json.dumps({k: v for k, v in row.items() if "per_task" not in k}), flush=True)

    cfg = fitted.method.config
    for steps in args.refine_steps:
        method = amortized(spec.model, dataclasses.replace(cfg, refine_steps=steps))
        post = dataclasses.replace(fitted, method=method).adapt(
            tasks["x_support"], tasks["y_support"], args.samples,
            mask=_mask(tasks, "support"), key=jax.random.PRNGKey(args.eval_seed),
        )  # fmt: skip
        add(f"refine_steps={steps}", post, None, True)
    base_steps = int(fitted.state.step)
    variants = [("outer=predictive", base_steps, {"outer": "predictive"})]
    variants += [(f"steps={m * base_steps}", m * base_steps, {}) for m in args.longer]
    for label, steps, config in variants:
        f2, secs = _fit(spec, "amortized", steps, args.seed, **config)
        post = _adapt(f2, tasks, args.samples, args.eval_seed)
        add(label, post, round(secs, 1), False)
        if args.diagnose_nuts:  # the variant's own θ: its NUTS reference
            r2, _ = nuts_score(f2, tasks, args, binary)
            out[-1]["nuts_nll"] = r2["nll"]
            out[-1]["gap"], out[-1]["gap_own_se"] = _paired(
                out[-1]["nll_per_task"], r2["nll_per_task"]
            )
    return out


def _f(v, fmt=".3f") -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def markdown(result: dict) -> str:
    prov = result["provenance"]
    lines = [
        "# Amortized VI against NUTS at the same θ (issue 43)",
        "",
        f"Commit `{prov['commit']}`, `{prov['command']}`, {prov['machine']}, "
        f"{prov['seconds']:.0f} s in all. NUTS: {prov['nuts_warmup']} warm-up, "
        f"{prov['nuts_chains']} chains, {prov['nuts_samples']} draws per task; methods: "
        f"{prov['samples']} posterior samples. Seed {prov['seed']}, eval seed "
        f"{prov['eval_seed']}.",
        "",
        "NLL is per query point (± se over tasks); *gap* = method NLL − NUTS NLL at the "
        "method's own θ (± paired se); MSE is the Brier score for the 0/1 model.",
        "",
        "| model | method | K | tasks | steps | NLL ± se | NUTS@θ NLL ± se | gap ± se | "
        "MSE | acc. | cov90 | calib. err. | NUTS R̂ max | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['method']} | {r['k']} | – | – | failed: "
                         f"{r['error'][:90]} | | | | | | | | |")  # fmt: skip
            continue
        acc = _f(r.get("accuracy"), ".3f")
        lines.append(
            f"| {r['model']} | {r['method']} | {r['k']} | {r['n_tasks']} | {r['steps']} | "
            f"{r['nll']:.3f} ± {r['nll_se']:.3f} | {r['nuts_nll']:.3f} ± {r['nuts_nll_se']:.3f} "
            f"| {r['gap']:+.3f} ± {r['gap_se']:.3f} | {r['mse']:.4g} | {acc} | "
            f"{r['cov90']:.3f} | {r['calibration_error']:.3f} | {_f(r['nuts_max_r_hat'], '.2f')}"
            f" | {r['train_s']:.0f} |"
        )
    lines += ["", "## The issue's bars", ""]
    lines += [f"- {b}" for b in bars(result["rows"])]
    if result.get("diagnosis"):
        lines += [
            "",
            "## Diagnosis: amortized",
            "",
            "*gap (default θ)* = variant NLL − NUTS NLL at the default fit's θ (± paired se); "
            "*gap (own θ)* where the variant's own NUTS reference ran.",
            "",
            "| model | variant | same θ | NLL ± se | gap (default θ) ± se | gap (own θ) | "
            "cov90 | train s |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in result["diagnosis"]:
            if "error" in r:
                lines.append(f"| {r['model']} | {r['variant']} | – | failed: {r['error'][:90]} "
                             "| | | | |")  # fmt: skip
                continue
            own = _f(r.get("gap"), "+.3f")
            lines.append(
                f"| {r['model']} | {r['variant']} | {'yes' if r['same_theta'] else 'no'} | "
                f"{r['nll']:.3f} ± {r['nll_se']:.3f} | {r['gap_to_default_nuts']:+.3f} ± "
                f"{r['gap_se']:.3f} | {own} | {r['cov90']:.3f} | {_f(r['train_s'], '.0f')} |"
            )
    return "\n".join(lines) + "\n"


def bars(rows: list[dict]) -> list[str]:
    """The "done when" checks, read from the rows: amortized's gap to NUTS at its θ within
    ``GAP_BAR`` nats per point, and BMAML / ABML no worse than MAML (NLL, within 2 se of the
    paired difference counted as no worse)."""
    out = []
    by = {(r["model"], r["method"]): r for r in rows if "error" not in r}
    for r in rows:
        if "error" in r:
            out.append(f"{r['model']}: {r['method']} failed to fit at its recipe: MISSES")
    for model in dict.fromkeys(r["model"] for r in rows):
        a = by.get((model, "amortized"))
        if a is not None:
            ok = a["gap"] <= GAP_BAR
            out.append(
                f"{model}: amortized gap {a['gap']:+.3f} ± {a['gap_se']:.3f} "
                f"{'≤' if ok else '>'} {GAP_BAR}: {'holds' if ok else 'MISSES'}"
            )
        m = by.get((model, "maml"))
        for other in ("bmaml", "abml"):
            o = by.get((model, other))
            if m is None or o is None:
                continue
            d, se = _paired(o["nll_per_task"], m["nll_per_task"])
            verdict = "holds" if d <= 0 else ("within 2 se" if d <= 2 * se else "MISSES")
            out.append(f"{model}: {other} − maml NLL {d:+.3f} ± {se:.3f}: {verdict}")
    return out


def _steps_arg(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        method, _, steps = item.partition("=")
        out[method] = int(steps)
    return out


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--steps", type=int, default=None, help="every method's steps (a smoke run)")
    p.add_argument("--method-steps", nargs="*", default=[], metavar="METHOD=STEPS",
                   help="steps for single methods (a reduced configuration)")  # fmt: skip
    p.add_argument("--model-method-steps", nargs="*", default=[], metavar="MODEL:METHOD=STEPS",
                   help="steps for one method on one model")  # fmt: skip
    p.add_argument("--nuts-tasks", type=int, default=20)
    p.add_argument("--nuts-warmup", type=int, default=500)
    p.add_argument("--nuts-chains", type=int, default=4)
    p.add_argument("--nuts-samples", type=int, default=400)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=20_261_204)
    p.add_argument("--model-nuts-tasks", nargs="*", default=[], metavar="MODEL=TASKS",
                   help="fewer NUTS tasks for one model (a reduced configuration)")  # fmt: skip
    p.add_argument("--diagnose", nargs="*", default=[], choices=list(MODELS), metavar="MODEL",
                   help="the models whose amortized fit is diagnosed")  # fmt: skip
    p.add_argument("--diagnose-nuts", action="store_true")
    p.add_argument("--refine-steps", nargs="*", type=int, default=[0, 20, 100])
    p.add_argument("--longer", nargs="*", type=int, default=[4], help="step multiples")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="amortized_vs_nuts")
    p.add_argument("--markdown-only", action="store_true")
    p.add_argument("--merge", nargs="*", default=[], metavar="NAME",
                   help="join the results of runs written under these names (run in "
                   "parallel, one group of models each) into --name")  # fmt: skip
    args = p.parse_args(argv)
    jpath, mpath = args.out / f"{args.name}.json", args.out / f"{args.name}.md"
    if args.merge:
        parts = [json.loads((args.out / f"{n}.json").read_text()) for n in args.merge]
        prov = {**parts[0]["provenance"], "command": " ; ".join(
            q["provenance"]["command"] for q in parts)}  # fmt: skip
        prov["parts"] = [q["provenance"] for q in parts]
        # each part's own commit: the parts may have run at different commits
        prov["commit"] = " ; ".join(str(q["provenance"]["commit"]) for q in parts)
        prov["seconds"] = max(q["provenance"]["seconds"] for q in parts)
        rows = [r for q in parts for r in q["rows"]]
        diag = [r for q in parts for r in q["diagnosis"]]
        result = {"provenance": prov, "rows": rows, "diagnosis": diag, "bars": bars(rows)}
        jpath.write_text(json.dumps(result, indent=1) + "\n")
        mpath.write_text(markdown(result))
        return result
    if args.markdown_only:
        result = json.loads(jpath.read_text())
        mpath.write_text(markdown(result))
        return result
    args.method_steps = _steps_arg(args.method_steps)
    args.model_nuts_tasks = _steps_arg(args.model_nuts_tasks)
    per_model = {}
    for item in args.model_method_steps:
        model, _, rest = item.partition(":")
        per_model.setdefault(model, {}).update(_steps_arg([rest]))
    t_start = time.perf_counter()
    rows, diag, seconds = [], [], {}
    base_steps = dict(args.method_steps)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        t0 = time.perf_counter()
        args.method_steps = {**base_steps, **per_model.get(name, {})}
        r, d = run_model(name, args)
        rows += r
        diag += d
        seconds[name] = round(time.perf_counter() - t0, 1)
        # written after each model, so that a run stopped late keeps the models it finished
        result = _result(args, argv, base_steps, per_model, rows, diag, seconds, t_start)
        jpath.write_text(json.dumps(result, indent=1) + "\n")
        mpath.write_text(markdown(result))
    print(markdown(result))
    return result


def _result(args, argv, base_steps, per_model, rows, diag, seconds, t_start) -> dict:
    return {
        "provenance": provenance(
            script_command(__file__, argv),
            steps=args.steps,
            method_steps=base_steps,
            model_method_steps=per_model,
            steps_ran={f"{r['model']}:{r['method']}": r.get("steps") for r in rows},
            k=K,
            num_query=NUM_QUERY,
            nuts_tasks=args.nuts_tasks,
            model_nuts_tasks=args.model_nuts_tasks,
            diagnose=args.diagnose,
            refine_steps=args.refine_steps,
            longer=args.longer,
            models_done=list(seconds),
            nuts_warmup=args.nuts_warmup,
            nuts_chains=args.nuts_chains,
            nuts_samples=args.nuts_samples,
            samples=args.samples,
            seed=args.seed,
            eval_seed=args.eval_seed,
            seconds_per_model=seconds,
            seconds=round(time.perf_counter() - t_start, 1),
        ),
        "rows": rows,
        "diagnosis": diag,
        "bars": bars(rows),
    }


if __name__ == "__main__":
    run()
