"""Active learning where the choice matters: families, full curves and captured fractions
(issue 45, item 1).

For each family the exact posterior (``reference``) is the oracle, and each trained method is
run through the same jitted loop (:func:`bayesmeta.evaluate.active.run_active`) on the same
held-out tasks with the same keys: one support point, a pool of candidates, evaluation points
over the family's whole input range, Q rounds of one label each. Families:

- ``sinusoid``: MAML's sinusoid, read over its first labels;
- ``sine_line``: sine or line (which hypothesis?);
- ``skewed``: sinusoid tasks whose pool is crowded in one region (a fraction ``--crowd`` of
  the candidates in the leftmost fifth of the range), evaluated over the whole range;
- ``hetero``: sinusoid tasks whose noise grows along x (``models/sinusoid_hetero.py``, a
  NumPyro model that learns the noise's slope): predictive variance alone asks for the noisy
  end, where a label says little; the neural process, which needs the built-in model, is
  skipped there and the results file says so;
- ``circles``: 2-D classification, a disc's boundary learned from the labels; the model
  ``circles_active``, whose supports are one point inside the disc and the rest anywhere (as
  an active learner's are), so that its exact reference weighs only the first point's
  location, not the acquired ones' (``models/circles_active.py``).

Per method and acquisition: the learning curve (NLL and MSE, or accuracy) at 0..Q labels; its
mean over labels 2-6 (the curve after the 2nd to 6th acquired label, where a posterior is
still wide) and the paired difference to random there (± se over tasks); the method's
*captured fraction* = its advantage over random divided by the oracle's for the same
acquisition (reported where the oracle's advantage is at least two standard errors).

The tasks come from a stream no recipe or result has used (``--task-seed``), recorded in the
results file.

    python benchmarks/active_families.py [--families sinusoid sine_line skewed hetero circles]
        [--methods reference abml maml bmaml neural-process] [--budget default] [--num-tasks 100]
        [--name active_families]

Writes ``NAME.json``, ``.md`` and ``NAME.png`` under ``--out`` (default benchmarks/results),
after each family. A family's tasks come from its own key (its place in ``FAMILIES``), so a
run of some families draws the same tasks as a run of all.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.bench import provenance, script_command, write_report
from bayesmeta.evaluate.active import learning_curve, run_active
from bayesmeta.inference.registry import check_serves
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.tasks.base import Support, make_task_set
from bayesmeta.zoo import STREAM_SEEDS

sys.path.insert(0, str(Path(__file__).parent))
import tables  # noqa: E402  (benchmarks/tables.py: the generated table, rendered once)

RESULTS = Path(__file__).parent / "results"
FAMILIES = {"sinusoid": "sinusoid", "sine_line": "sine_line", "skewed": "sinusoid",
            "circles": "circles_active", "hetero": "sinusoid_hetero"}  # fmt: skip
WINDOW = (2, 6)  # labels over which the curves are averaged
#: The fresh stream (bayesmeta.zoo.STREAM_SEEDS): no recipe, choice or earlier result used it.
TASK_SEED = STREAM_SEEDS["fresh"]


def skewed_pool(family, tasks: dict, key, pool: int, crowd: float) -> dict:
    """``tasks`` with the first ``pool`` query points redrawn: a fraction ``crowd`` uniformly
    in the leftmost fifth of the family's range, the rest over the whole range; labels from
    the family's own mean and noise at each task's parameters."""
    lo, hi = family.x_range
    t = tasks["x_query"].shape[0]
    k_side, k_all, k_pick, k_noise = jax.random.split(key, 4)
    side = jax.random.uniform(k_side, (t, pool, 1), minval=lo, maxval=lo + (hi - lo) / 5)
    spread = jax.random.uniform(k_all, (t, pool, 1), minval=lo, maxval=hi)
    crowded = jax.random.uniform(k_pick, (t, pool, 1)) < crowd
    x = jnp.where(crowded, side, spread)
    psi = jnp.asarray(tasks["task_params"])
    mean = jax.vmap(family.mean_fn)(psi, x)
    noise = jax.vmap(family.noise_fn)(psi)[:, None, None]
    y = mean + noise * jax.random.normal(k_noise, mean.shape)
    out = dict(tasks)
    out["x_query"] = jnp.concatenate([x, jnp.asarray(tasks["x_query"])[:, pool:]], 1)
    out["y_query"] = jnp.concatenate([y, jnp.asarray(tasks["y_query"])[:, pool:]], 1)
    return out


def fitted(spec, names: list[str], budget: str, seed: int, steps: int | None = None) -> dict:
    """``{name: (method, state, info)}``: the exact reference, or trained at ``budget``
    (``steps`` overrides its step counts); a method the model cannot serve is left out and
    ``info`` of the others is unchanged (``skipped(spec, names)`` says why)."""
    out = {}
    for name in names:
        if skipped(spec, [name]):
            continue
        if name == "reference":
            method, _ = spec.build("reference")
            out[name] = (method, method.init(jax.random.PRNGKey(0)), {"source": "exact"})
            continue
        t0 = time.perf_counter()
        extra = {} if steps is None else {"steps": steps, "lr_decay_steps": steps}
        method, res = spec.fit(name, budget, seed, progress=False, **extra)
        info = {"source": "trained", "steps": int(res.state.step),
                "train_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
        print(f"  {name}: {info['steps']} meta-steps in {info['train_s']:.0f} s", flush=True)
        out[name] = (method, res.state, info)
    return out


def skipped(spec, names: list[str]) -> dict[str, str]:
    """``{method: reason}`` for the methods of ``names`` that cannot serve ``spec``'s model
    (the neural process on a NumPyro model)."""
    out = {}
    for name in names:
        if name == "reference":
            continue
        try:
            check_serves(name, spec.model)
        except ValueError as err:
            out[name] = str(err)
    return out


def looped(
    key, method, state, support, pool, ev, acq: str, queries: int, samples: int, chunk: int | None
):
    """:func:`run_active` over the tasks, ``chunk`` tasks at a time (None: all at once), the
    curves joined along the task axis. A grid reference with a generic likelihood (the
    heteroscedastic family) holds every node's predictive at once: chunks bound the memory."""
    t = support.x.shape[0]
    step = t if chunk is None else chunk
    parts = []
    for lo in range(0, t, step):
        sl = slice(lo, lo + step)
        sup = Support(support.x[sl], support.y[sl], support.mask[sl])
        parts.append(run_active(key, method, state, sup, pool[0][sl], pool[1][sl], ev[0][sl],
                                ev[1][sl], acq, queries, samples))  # fmt: skip
    if len(parts) == 1:
        return parts[0]

    def cat(name):
        vals = [getattr(r, name) for r in parts]
        return None if vals[0] is None else jnp.concatenate(vals, axis=1)

    return parts[0]._replace(
        n_labels=cat("n_labels"),
        nll=cat("nll"),
        mse=cat("mse"),
        accuracy=cat("accuracy"),
        indices=cat("indices"),
        state=None,
    )


def window_mean(values: np.ndarray) -> np.ndarray:
    """Per task, the mean of a ``(Q+1, T)`` curve over labels 2..6 (as far as Q reaches)."""
    lo, hi = WINDOW
    return np.asarray(values, np.float64)[lo : hi + 1].mean(0)


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def family_rows(name: str, results: dict, metric: str) -> list[dict]:
    """Rows per method and acquisition: window means, differences to random, captured
    fraction of the oracle's advantage."""
    rows, oracle = [], results.get("reference", {})
    for method, by_acq in results.items():
        base = by_acq.get("random")
        for acq, res in by_acq.items():
            row = {"family": name, "method": method, "acquisition": acq}
            for m in ("nll", metric):
                per_task = window_mean(getattr(res, m))
                row[f"{m}_window"] = float(per_task.mean())
                row[f"{m}_window_se"] = float(per_task.std(ddof=1) / math.sqrt(per_task.size))
                if base is None or acq == "random":
                    continue
                d, se = paired(per_task, window_mean(getattr(base, m)))
                row[f"{m}_vs_random"], row[f"{m}_vs_random_se"] = d, se
                ref = oracle.get(acq)
                if ref is None or "random" not in oracle:
                    continue
                d_ref, se_ref = paired(window_mean(getattr(ref, m)),
                                       window_mean(getattr(oracle["random"], m)))  # fmt: skip
                # "better" is lower NLL/MSE, higher accuracy: the oracle must gain by 2 se
                gain = -d_ref if m != "accuracy" else d_ref
                row[f"{m}_oracle_gain"] = gain
                if gain > 2 * se_ref:
                    own = -d if m != "accuracy" else d
                    row[f"{m}_captured"] = own / gain
            rows.append(row)
    return rows


def markdown(result: dict) -> str:
    p = result["provenance"]
    lines = [
        "# Active learning where the choice matters (issue 45)",
        "",
        f"Commit `{p['commit']}`, `{p['command']}`, {p['machine']}, {p['seconds']:.0f} s in "
        f"all. {p['num_tasks']} held-out tasks per family from a fresh stream (seed "
        f"{p['task_seed']}), K = {p['k']} support point, pool {p['pool']}, {p['num_eval']} "
        f"evaluation points over the whole range, {p['queries']} labels one at a time; "
        f"methods trained at budget `{p['budget']}`, seed {p['seed']}; {p['samples']} posterior "
        "samples.",
        "",
        f"*{WINDOW[0]}–{WINDOW[1]}*: the curve's mean over labels {WINDOW[0]}–{WINDOW[1]}; "
        "*vs random*: paired "
        "difference over tasks (± se), negative is better for NLL and MSE, positive for "
        "accuracy; *captured*: the method's advantage over random divided by the exact "
        "posterior's with the same acquisition (– where the oracle's advantage is under two "
        "standard errors).",
        "",
    ]
    for fam, why in p.get("skipped", {}).items():
        lines += [f"Not run on {fam}: " + "; ".join(f"{m} ({r})" for m, r in why.items()), ""]
    return "\n".join(lines) + "\n" + tables.active_families(result)


def plot(result: dict, target) -> None:
    """Evaluation NLL against labels per family (BALD and random), as PNG to ``target`` (a
    path or a binary file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(result["curves"])
    fig, axes = plt.subplots(1, len(fams), figsize=(3.6 * len(fams), 3.2), squeeze=False)
    for ax, fam in zip(axes[0], fams, strict=True):
        for method, by_acq in result["curves"][fam].items():
            for acq, c in by_acq.items():
                if acq not in ("bald", "random"):
                    continue
                style = "-" if acq == "bald" else ":"
                ax.plot(c["n_queries"], c["nll"], style, label=f"{method} {acq}")
        ax.axvspan(*WINDOW, color="0.9", zorder=0)
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel("labels acquired")
        ax.set_ylabel("evaluation NLL")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(target, dpi=100, format="png")
    plt.close(fig)


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--methods", nargs="+",
                   default=["reference", "abml", "maml", "bmaml", "neural-process"])  # fmt: skip
    p.add_argument("--budget", default="default")
    p.add_argument("--steps", type=int, default=None, help="default: the budget's recipes")
    p.add_argument("--num-tasks", type=int, default=100)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--pool", type=int, default=100)
    p.add_argument("--num-eval", type=int, default=50)
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--crowd", type=float, default=0.9)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task-seed", type=int, default=TASK_SEED)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="active_families", help="the results files' name")
    p.add_argument("--task-chunk", type=int, default=None,
                   help="run the loops on this many tasks at a time (default: all)")  # fmt: skip
    args = p.parse_args(argv)
    if "reference" not in args.methods:
        p.error("--methods: the exact posterior 'reference' is the oracle; include it")
    t_start = time.perf_counter()
    rows, curves, trained, result, skips = [], {}, {}, {}, {}
    args.out.mkdir(parents=True, exist_ok=True)
    for fam_name in args.families:
        fi = list(FAMILIES).index(fam_name)
        spec = load_model_spec(FAMILIES[fam_name])
        if why := skipped(spec, args.methods):
            skips[fam_name] = why
        classification = spec.family.likelihood == "categorical"
        metric = "accuracy" if classification else "mse"
        acqs = ["bald", "entropy", "random"] if classification else ["variance", "bald", "random"]
        print(f"{fam_name}:", flush=True)
        key = jax.random.PRNGKey(args.task_seed + fi)
        tasks = make_task_set(spec.family, key, args.num_tasks, args.k,
                              args.pool + args.num_eval)  # fmt: skip
        if fam_name == "skewed":
            tasks = skewed_pool(spec.family, tasks, jax.random.fold_in(key, 1), args.pool,
                                args.crowd)  # fmt: skip
        x_s = jnp.asarray(tasks["x_support"])
        support = Support(x_s, jnp.asarray(tasks["y_support"]), jnp.ones(x_s.shape[:2]))
        xq, yq = jnp.asarray(tasks["x_query"]), jnp.asarray(tasks["y_query"])
        pool, ev = (
            (xq[:, : args.pool], yq[:, : args.pool]),
            (xq[:, args.pool :], yq[:, args.pool :]),
        )
        # a family's tasks share one trained model (skewed reuses the sinusoid's fit)
        if spec.name not in trained:
            trained[spec.name] = fitted(spec, args.methods, args.budget, args.seed, args.steps)
        results, curves[fam_name] = {}, {}
        loop_key = jax.random.PRNGKey(args.seed)
        for name, (method, state, _) in trained[spec.name].items():
            results[name], curves[fam_name][name] = {}, {}
            for acq in acqs:
                res = looped(loop_key, method, state, support, pool, ev, acq, args.queries,
                             args.samples, args.task_chunk)  # fmt: skip
                results[name][acq] = res
                curves[fam_name][name][acq] = learning_curve(res, acq)
            print(f"  {name}: looped", flush=True)
        for r in family_rows(fam_name, results, metric):
            rows.append({**r, "metric": metric})
        result = {
            "provenance": provenance(
                script_command(__file__, argv),
                budget=args.budget,
                steps={
                    m: info.get("steps") for s in trained.values() for m, (_, _, info) in s.items()
                },  # fmt: skip
                train_seconds={
                    f"{sn}/{m}": info.get("train_s")
                    for sn, s in trained.items()
                    for m, (_, _, info) in s.items()
                },  # fmt: skip
                num_tasks=args.num_tasks,
                k=args.k,
                pool=args.pool,
                num_eval=args.num_eval,
                queries=args.queries,
                crowd=args.crowd,
                task_chunk=args.task_chunk,
                samples=args.samples,
                seed=args.seed,
                task_seed=args.task_seed,
                window=list(WINDOW),
                skipped=skips,
                seconds=round(time.perf_counter() - t_start, 1),
            ),
            "rows": rows,
            "curves": curves,
        }
        write_report(args.out, args.name, result, markdown)
    write_report(args.out, args.name, result, markdown, plot)
    return result


if __name__ == "__main__":
    run()
