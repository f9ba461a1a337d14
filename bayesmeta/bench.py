"""The calibration benchmark: every method on every task family, several seeds.

For each family (a model file) and seed, each method is meta-trained with its recipe under a
wall-clock budget, adapted to held-out tasks (disjoint scripts for glyphs, disjoint groups
for real grouped data, fresh draws for the synthetic families) at each support size K, and
scored by :func:`bayesmeta.evaluate.evaluate`. Synthetic families also get the exact
reference posterior, so each row carries the oracle NLL and the gap to it.

Adding a family or a method is one line: an entry in :data:`FAMILIES` (a built-in model name
or a model file, the support sizes to report) or a name in :data:`METHODS`.

    from bayesmeta.bench import run_calibration
    rows = run_calibration("small", out="benchmarks/results")

Rows follow ``calibration.json``: ``{family, method, k, seed, nll, oracle_nll, gap, mse |
accuracy, cov50, cov90, calibration_error | ece, mce, brier, train_seconds, steps}``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.inference.registry import METHODS as METHOD_REGISTRY
from bayesmeta.inference.registry import ORACLE, bench_methods, trainable
from bayesmeta.tasks.base import padded_support
from bayesmeta.zoo import STREAM_SEEDS

EVAL_SEED = STREAM_SEEDS["test"]  # the test stream (bayesmeta.zoo)


@dataclass(frozen=True)
class Family:
    """A benchmark family: a model (built-in name or file), the K to report, query size."""

    model: str
    ks: tuple[int, ...]
    num_query: int = 50
    label: str = ""
    max_samples: int | None = None


@dataclass(frozen=True)
class Budget:
    """How long each method trains and how much is evaluated.

    ``seconds`` caps each training run (None: the recipe's step count, or the model file's
    ``full`` budget); ``recipe_budget`` names the model file's budget whose steps are used;
    ``steps`` (``family -> method -> steps``, ``"*"`` for every method) replaces the recipe's
    step count and the length of its learning-rate schedule, so the same seed gives the same
    row on any machine. ``families`` and ``methods`` are the budget's default grid (None:
    every family, the registry's benchmark methods). ``validate``: where a family has a
    validation stream, score it after every chunk and publish the best state's rows (early
    stopping that looks at validation tasks only), after every ``validate_every[family]``-th
    chunk (default every chunk).
    """

    seconds: float | None
    seeds: tuple[int, ...]
    num_tasks: int
    num_samples: int
    recipe_budget: str = "default"
    chunk_size: int | None = None
    overrides: dict = field(default_factory=dict)
    steps: dict[str, dict[str, int]] | None = None
    families: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    validate: bool = False
    validate_every: dict[str, int] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {
    "sinusoid": Family("sinusoid", (1, 5, 10)),
    "sine_line": Family("sine_line", (1, 5)),
    "circles": Family("circles", (1, 5)),
    # 8 posterior samples: the conv4 predictive of 100 samples x 60 tasks x 50 images needs
    # ~35 GB in one batch (TaskPosterior batches tasks by S, not by network size)
    "glyphs": Family("glyphs", (1, 5), num_query=50, label="glyphs 5-way", max_samples=8),
    "digits": Family("digits", (1, 5), num_query=15, label="digits 3-way", max_samples=8),
    "nlschools": Family("nlschools", (1, 5), num_query=8),
    "cigar": Family("cigar", (5, 10), num_query=15),
}
METHODS: tuple[str, ...] = bench_methods()
#: The ``standard`` budget's training steps per family and method, sized so that the methods'
#: runs take comparable time (a run's seconds are in ``calibration.json``); the grouped data
#: sets keep their recipe's fixed step count, past which they overfit.
STANDARD_STEPS: dict[str, dict[str, int]] = {
    "sinusoid": {"maml": 50_000, "emaml": 10_000, "bmaml": 3_000, "abml": 2_500,
                 "platipus": 25_000, "neural-process": 100_000},
    "sine_line": {"maml": 50_000, "emaml": 10_000, "bmaml": 3_000, "abml": 2_500,
                  "platipus": 25_000, "neural-process": 100_000},
    "circles": {"maml": 30_000, "emaml": 6_000, "bmaml": 2_000, "abml": 2_000,
                "platipus": 15_000, "neural-process": 50_000},
    "glyphs": {"maml": 1_000, "emaml": 800, "bmaml": 800, "abml": 2_500, "platipus": 2_000,
               "neural-process": 6_000},
}  # fmt: skip
#: The few-shot classifiers of the ``classification`` budget (issue 28's table).
CLASSIFIERS: tuple[str, ...] = ("maml", "protonet", "bayesian-protonet", "neural-process",
                                "abml", "bmaml", "platipus")  # fmt: skip
#: Its steps per family and method: on 2 CPU cores about 5-10 minutes a run on glyphs (the
#: prototype networks run several times more steps in the same time than MAML's inner loop).
CLASSIFICATION_STEPS: dict[str, dict[str, int]] = {
    "glyphs": {"maml": 6_000, "protonet": 10_000, "bayesian-protonet": 10_000,
               "neural-process": 6_000, "abml": 5_000, "bmaml": 2_000, "platipus": 4_000},
    "digits": {"*": 3_000, "protonet": 6_000, "bayesian-protonet": 6_000},
}  # fmt: skip
BUDGETS: dict[str, Budget] = {
    # the whole suite in under 30 minutes on 2 CPU cores
    "small": Budget(seconds=6.0, seeds=(0, 1), num_tasks=60, num_samples=100, chunk_size=20),
    # step counts, not seconds: the same rows on any machine; 3 seeds; a long grid (each
    # row's training seconds are in calibration.json: shard it with --shard I/N and join the
    # shards with `bayesmeta bench merge`)
    "standard": Budget(
        seconds=None,
        seeds=(0, 1, 2),
        num_tasks=200,
        num_samples=100,
        steps=STANDARD_STEPS,
        families=("sinusoid", "sine_line", "circles", "glyphs", "nlschools", "cigar"),
    ),
    # few-shot classification: 600 test tasks per seed and K, temperatures fitted on
    # validation tasks (disjoint classes) and reported beside each method's own calibration
    "classification": Budget(
        seconds=None,
        seeds=(0, 1, 2),
        num_tasks=600,
        num_samples=8,
        steps=CLASSIFICATION_STEPS,
        families=("glyphs", "digits"),
        methods=CLASSIFIERS,
        validate=True,
        # a glyph validation pass costs about a chunk of training: score every 250 steps
        validate_every={"glyphs": 10},
    ),
    # the papers' step counts (each model file's ``full`` budget), five seeds
    "full": Budget(
        seconds=None, seeds=(0, 1, 2, 3, 4), num_tasks=500, num_samples=500, recipe_budget="full"
    ),
}


def _held_out(spec, k: int, seed: int, num_tasks: int, num_query: int) -> dict:
    from bayesmeta.tasks.base import make_task_set

    key = jax.random.PRNGKey(EVAL_SEED + 7919 * seed + k)
    return make_task_set(spec.family, key, num_tasks, k, num_query)


def _row(family: str, method: str, k: int, seed: int, rep: dict) -> dict[str, Any]:
    row: dict[str, Any] = {
        "family": family,
        "method": method,
        "k": int(k),
        "seed": int(seed),
        "nll": rep["nll"],
        "n_tasks": rep.get("n_tasks"),
        "oracle_nll": None,
        "gap": None,
    }
    if "accuracy" in rep:
        row.update(
            accuracy=rep["accuracy"],
            ece=rep["ece"],
            mce=rep["mce"],
            brier=rep["brier"],
            cov50=None,
            cov90=None,
        )
        for name in ("nll", "accuracy", "ece", "mce", "brier"):
            if f"{name}_se" in rep:  # over the row's tasks
                row[f"{name}_se"] = rep[f"{name}_se"]
        if "temperature" in rep:  # fitted on validation tasks: beside, never instead
            row["temperature"] = rep["temperature"]
            row.update({f"ts_{k}": v for k, v in rep["temperature_scaled"].items()
                        if not k.endswith("_se")})  # fmt: skip
    else:
        cov = rep["coverage"]
        row.update(
            mse=rep["mse"],
            calibration_error=rep["calibration_error"],
            cov50=cov["0.5"],
            cov90=cov["0.9"],
        )
    return row


def export_inference_data(post, tasks: dict, path: Path, key: jax.Array, max_tasks: int = 20):
    """Write a posterior on held-out query points as ArviZ netCDF: the first ``max_tasks``
    tasks of ``post`` through the one exporter, :meth:`TaskPosterior.to_inference_data`
    (``posterior``, ``posterior_predictive``, ``observed_data``, pointwise ``log_likelihood``,
    ``constant_data``; dims ``chain, draw, task, point``), so ``az.from_netcdf(path)`` gives
    what ``az.loo``, ``az.compare`` and ``az.plot_ppc`` read. Grid, weighted or large
    posteriors are resampled to 100 equally weighted draws to keep the file small."""
    from bayesmeta.atomic import atomic_path

    t = min(post.num_tasks, max_tasks)
    sub = post.select(slice(0, t))
    if sub.num_samples > 200 or not bool(jnp.allclose(sub.log_weights, sub.log_weights[:, :1])):
        sub = sub.resample(jax.random.fold_in(key, 1), 100)
    x = jnp.asarray(tasks["x_query"])[:t]
    y = jnp.asarray(tasks["y_query"])[:t]
    idata = sub.to_inference_data(x, key=key, y=y)
    with atomic_path(path) as tmp:
        idata.to_netcdf(str(tmp))
    return path


def units(
    families: Sequence[str], methods: Sequence[str], seeds: Sequence[int]
) -> list[tuple[str, str, int]]:
    """The benchmark grid as ``(family, method, seed)`` training runs, in a fixed order that
    every shard agrees on."""
    return [(f, m, s) for f in families for m in methods for s in seeds]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N`` (a clear error otherwise)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard: expected I/N, e.g. 0/4, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard: expected 0 <= I < N, got {text!r}")
    return i, n


def _done(rows: Sequence[dict]) -> set[tuple[str, str, int]]:
    """The units that have rows: finished, or diverged (its error is the row; the same seed and
    steps would diverge again)."""
    return {(r["family"], r["method"], r["seed"]) for r in rows if r["method"] != ORACLE}


def run_calibration(
    budget: str | Budget = "small",
    out: str | os.PathLike | None = None,
    families: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    seconds: float | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
    figures: bool = True,
    export_dir: str | os.PathLike | None = None,
    shard: tuple[int, int] = (0, 1),
    resume: bool = True,
    command: str | None = None,
) -> list[dict]:
    """Run the benchmark; return its rows and, with ``out``, write ``calibration.json``,
    ``calibration.md`` and the figures there.

    The grid is a list of training runs, ``(family, method, seed)`` (:func:`units`). Each
    finished run's rows are written at once, and with ``resume`` a rerun into the same ``out``
    skips the runs whose rows are there, so a long suite may be stopped and continued.
    ``shard=(I, N)`` runs every N-th run from the I-th, so N machines (a job array) share the
    grid; :func:`merge` joins their folders. Every row records its provenance: commit,
    command, budget, steps, training and compile seconds, posterior samples, seed, machine.

    Parameters
    ----------
    budget : {"small", "standard", "full"} or Budget
    out : path, optional
        Results folder.
    families, methods, seeds : optional subsets (default: all of :data:`FAMILIES`,
        :data:`METHODS`, the budget's seeds).
    seconds : float, optional
        A wall-clock cap per training run (recorded in each row as ``max_seconds``).
    export_dir : path, optional
        Where the ArviZ ``.nc`` files of the seed-0 posteriors go (default ``out/posteriors``).
    shard : (int, int)
        ``(I, N)``: this process's share of the grid.
    resume : bool
        Keep the rows already in ``out/calibration.json`` and skip their runs.
    command : str, optional
        The command line recorded in each row (default: this process's ``sys.argv``).
    """
    import platform
    import sys

    from bayesmeta.evaluate import evaluate
    from bayesmeta.fitting import Run, fit_run
    from bayesmeta.inference.train import DivergenceError, make_chunk_runner
    from bayesmeta.modelfiles import load_model_spec
    from bayesmeta.zoo import METHOD_NAMES

    budget_name = budget if isinstance(budget, str) else _budget_name(budget)
    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise ValueError(f"budget: expected one of {list(BUDGETS)}, got {budget!r}")
        budget = BUDGETS[budget]
    fams = list(families or budget.families or FAMILIES)
    for f in fams:
        if f not in FAMILIES:
            raise ValueError(f"families: expected names from {list(FAMILIES)}, got {f!r}")
    meths = list(methods or budget.methods or METHODS)
    for m in meths:
        if m not in METHOD_NAMES or not trainable(m):
            raise ValueError(f"methods: expected names from {list(METHODS)}, got {m!r}")
    seeds = tuple(seeds if seeds is not None else budget.seeds)
    if not seeds:
        raise ValueError("seeds: expected at least one seed, got none")
    secs = seconds if seconds is not None else budget.seconds
    if secs is not None and not secs > 0:
        raise ValueError(f"seconds: expected > 0, got {secs}")
    i_shard, n_shard = shard
    if not (n_shard >= 1 and 0 <= i_shard < n_shard):
        raise ValueError(f"shard: expected 0 <= I < N, got {i_shard}/{n_shard}")
    say = log or (lambda s: None)
    out_dir = Path(out) if out is not None else None
    exp_dir = Path(export_dir) if export_dir else (out_dir / "posteriors" if out_dir else None)
    rows: list[dict] = []
    if resume and out_dir is not None and (out_dir / "calibration.json").is_file():
        rows = json.loads((out_dir / "calibration.json").read_text())
        other = sorted({str(r.get("budget")) for r in rows} - {budget_name})
        if other:
            # a run of another budget would skip these units as done and mix its rows in
            raise ValueError(
                f"out: {str(out_dir / 'calibration.json')!r} holds rows of budget "
                f"{', '.join(other)}, not {budget_name!r}; write this budget to another --out "
                "(or pass --no-resume to replace them)"
            )
    done = _done(rows)
    mine = set(units(fams, meths, seeds)[i_shard::n_shard]) - done
    provenance = {
        "commit": git_commit(),
        "command": command if command is not None else " ".join(sys.argv),
        "budget": budget_name,
        "max_seconds": secs,
        "samples": budget.num_samples,
        "machine": f"{platform.machine()} {jax.default_backend()}, {os.cpu_count()} cores",
    }
    t_start = time.perf_counter()
    for fname in fams:
        fam = FAMILIES[fname]
        todo = [(m, s) for m in meths for s in seeds if (fname, m, s) in mine]
        if not todo:
            continue
        spec = load_model_spec(fam.model)
        run_seeds = sorted({s for _, s in todo})
        tasks = {
            (s, k): _held_out(spec, k, s, budget.num_tasks, fam.num_query)
            for s in run_seeds
            for k in fam.ks
        }
        size = max(v["x_support"].shape[1] for v in tasks.values())
        has_validation = spec.validation_family is not None
        posts: dict[tuple[str, int, int], Any] = {}
        has_ref = spec.family.reference_grid is not None or spec.family.gaussian_prior is not None
        ref_nll: dict[tuple[int, int], float] = {}
        if has_ref:
            ref, _ = spec.build(ORACLE)
            for (s, k), ts in tasks.items():
                post = ref.adapt(jax.random.PRNGKey(s), None, padded_support(ts, size), 1)
                rep = evaluate(post, ts["x_query"], ts["y_query"])
                ref_nll[(s, k)] = rep["nll"]
                posts[(ORACLE, s, k)] = post
                if any(
                    (r["family"], r["method"], r["k"], r["seed"]) == (fname, ORACLE, k, s)
                    for r in rows
                ):
                    continue
                rows.append({**_row(fname, ORACLE, k, s, rep), "train_seconds": 0.0})
                rows[-1].update(oracle_nll=rep["nll"], gap=0.0, steps=0, **provenance)
        for mname in meths:
            m_seeds = [s for m, s in todo if m == mname]
            if not m_seeds:
                continue
            overrides = {"max_seconds": secs, **budget.overrides}
            if budget.chunk_size:
                overrides["chunk_size"] = budget.chunk_size
            if budget.steps is not None:
                table = budget.steps.get(fname, {})
                n_steps = table.get(mname, table.get("*"))
                if n_steps is not None:
                    overrides.update(steps=n_steps, lr_decay_steps=n_steps)
            runs = {s: Run(spec, mname, budget=budget.recipe_budget, seed=s,
                           config=overrides) for s in m_seeds}  # fmt: skip
            method, cfg = runs[m_seeds[0]].built
            sampler = spec.sampler(cfg["meta_batch"], cfg["num_query"], cfg["k_power"])
            # compile once, outside the timed budget (the runner is cached for every seed)
            chunk = min(cfg["chunk_size"], cfg["steps"])
            t0 = time.perf_counter()
            warm = make_chunk_runner(method, sampler, chunk)
            jax.block_until_ready(warm(method.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(0)))
            compile_s = time.perf_counter() - t0
            validator = None
            if budget.validate and has_validation:
                categorical = spec.family.likelihood.classifier
                validator = spec.validator(k=fam.ks[0], num_tasks=100, num_query=fam.num_query,
                                           num_samples=8, accuracy=categorical)  # fmt: skip
            validate = validator is not None
            for s in m_seeds:
                try:
                    fitted = fit_run(runs[s], validate=validate, validator=validator,
                                     validate_every=budget.validate_every.get(fname, 1),
                                     progress=progress, method=method, sampler=sampler)  # fmt: skip
                    res = fitted.result
                except DivergenceError as err:
                    say(f"{fname}/{mname}/seed{s}: {err}")
                    for k in fam.ks:
                        rows.append(
                            {"family": fname, "method": mname, "k": k, "seed": s, "nll": None,
                             "error": str(err), **provenance}
                        )  # fmt: skip
                    continue
                state = res.best_state if res.best_state is not None else res.state
                new_rows = []
                for k in fam.ks:
                    ts = tasks[(s, k)]
                    key = jax.random.PRNGKey(1000 + s)
                    n_s = min(budget.num_samples, fam.max_samples or budget.num_samples)
                    post = adapt_in_batches(method, key, state, padded_support(ts, size), n_s)
                    temp = None
                    if spec.family.likelihood.classifier and has_validation:
                        temp = validation_temperature(spec, method, state, k, s, n_s,
                                                      fam.num_query, size)  # fmt: skip
                    rep = evaluate(post, ts["x_query"], ts["y_query"], temperature=temp)
                    row = _row(fname, mname, k, s, rep)
                    row.update(
                        train_seconds=res.seconds,
                        compile_seconds=compile_s,
                        steps=int(res.state.step),
                        **provenance,
                    )
                    if validate:  # the published state: the best validated one
                        hist = res.history
                        row.update(best_step=int(state.step),
                                   validate_every=budget.validate_every.get(fname, 1),
                                   validation_step=[int(v) for v in hist["validation_step"]],
                                   validation_nll=[float(v) for v in hist["validation_nll"]],
                                   validation_accuracy=[float(v) for v in
                                                        hist.get("validation_accuracy", [])],
                                   validation_seconds=[float(v) for v in
                                                       hist["validation_seconds"]])  # fmt: skip
                    row["samples"] = n_s
                    if has_ref:
                        ref_k = ref_nll[(s, k)]
                        row.update(oracle_nll=ref_k, gap=row["nll"] - ref_k)
                    new_rows.append(row)
                    if s == seeds[0]:
                        posts[(mname, s, k)] = post
                rows += new_rows
                say(
                    f"{fname:10s} {mname:15s} seed {s}: {int(res.state.step):6d} steps "
                    f"{res.seconds:6.1f} s  "
                    + "  ".join(f"K={r['k']} nll {r['nll']:.3f}" for r in new_rows)
                )
                if out_dir is not None:  # each finished run at once: a stopped suite resumes
                    write_results(rows, out_dir, budget_name=budget_name, elapsed=None)
        if exp_dir is not None:
            for (mname, s, k), post in posts.items():
                if s == seeds[0] and k == fam.ks[0]:
                    export_inference_data(
                        post,
                        tasks[(s, k)],
                        exp_dir / f"{fname}_{mname}_k{k}.nc",
                        jax.random.PRNGKey(7),
                    )
        if out_dir is not None and figures and seeds[0] in run_seeds:
            try:
                _figures(fname, spec, fam, posts, tasks, seeds[0], out_dir)
            except Exception as err:  # a figure must never cost the rows already computed
                say(f"{fname}: figures skipped ({type(err).__name__}: {str(err)[:200]})")
    elapsed = time.perf_counter() - t_start
    say(f"calibration suite: {len(rows)} rows in {elapsed / 60:.1f} min")
    if out_dir is not None:
        write_results(rows, out_dir, budget_name=budget_name, elapsed=elapsed)
    return rows


#: How many floats one batch of tasks may hold while a method adapts to it (8 GiB in float32):
#: S samples' forward and backward passes over every support input. Regression and small
#: classifiers adapt to every task at once; hundreds of image tasks go in a few batches.
ADAPT_FLOATS = 2**31


def adapt_in_batches(method, key, state, support, num_samples: int,
                     max_floats: int = ADAPT_FLOATS):  # fmt: skip
    """``method.adapt`` over the tasks of ``support`` in batches small enough for memory.

    The batch holds at most ``max_floats // (S · K · D · 64)`` tasks (S samples, K support
    points of input size D, about 64 activations per input value in a network's first layers),
    a function of the shapes only, so every machine adapts in the same batches. Where every
    task fits, this is ``method.adapt(key, ...)`` itself; else batch ``i`` uses
    ``fold_in(key, i)`` and the posteriors are joined with
    :func:`~bayesmeta.posterior.concatenate`.
    """
    from bayesmeta.posterior import concatenate, tasks_per_batch

    t = int(support.x.shape[0])
    size = tasks_per_batch(t, num_samples, support.x.shape[1:], max_floats)
    if size >= t:
        return method.adapt(key, state, support, num_samples)
    parts = []
    for i, start in enumerate(range(0, t, size)):
        part = jax.tree_util.tree_map(lambda a, start=start: a[start : start + size], support)
        parts.append(method.adapt(jax.random.fold_in(key, i), state, part, num_samples))
    return concatenate(parts)


def validation_temperature(spec, method, state, k: int, seed: int, num_samples: int,
                           num_query: int, size: int, num_tasks: int = 200) -> float:  # fmt: skip
    """The temperature (:func:`~bayesmeta.evaluate.metrics.fit_temperature`) that minimises
    the NLL of a trained classifier's predictive on validation tasks with ``k`` shots, which
    share no class with the test tasks: post-hoc calibration's baseline."""
    from bayesmeta.evaluate import fit_temperature

    val = spec.held_out("validation", k, num_tasks, num_query)
    post = adapt_in_batches(method, jax.random.PRNGKey(2000 + seed), state,
                            padded_support(val, size), num_samples)  # fmt: skip
    return fit_temperature(np.asarray(post.probs(jnp.asarray(val["x_query"]))), val["y_query"])


def merge(shards: Sequence[str | os.PathLike], out: str | os.PathLike) -> list[dict]:
    """Join the ``calibration.json`` of several shard folders into ``out`` (rows keyed by
    family, method, K and seed; the reference rows every shard computed are kept once, and a
    key that two shards give different numbers is an error)."""
    merged: dict[tuple, dict] = {}
    budgets = set()
    for folder in shards:
        path = Path(folder) / "calibration.json"
        if not path.is_file():
            raise ValueError(f"shards: no calibration.json in {str(folder)!r}")
        for r in json.loads(path.read_text()):
            key = (r["family"], r["method"], r["k"], r["seed"])
            budgets.add(r.get("budget"))
            old = merged.get(key)
            if old is not None and old.get("nll") is not None and r.get("nll") is not None:
                if not math.isclose(old["nll"], r["nll"], rel_tol=1e-9, abs_tol=1e-12):
                    raise ValueError(
                        f"shards: {key} differs between shards ({old['nll']} vs {r['nll']}); "
                        "were they run from the same commit and budget?"
                    )
                continue
            if old is None or old.get("nll") is None:
                merged[key] = r
    rows = sorted(merged.values(), key=lambda r: (r["family"], r["method"], r["seed"], r["k"]))
    names = sorted(b for b in budgets if b)
    write_results(rows, out, budget_name="+".join(names) or "?", elapsed=None)
    return rows


def machine() -> str:
    """The machine a result came from: architecture, JAX backend and cores."""
    import platform

    return f"{platform.machine()} {jax.default_backend()}, {os.cpu_count()} cores"


def provenance(command: str, **extra: Any) -> dict[str, Any]:
    """Where a results file came from: the commit, the exact command, the machine and the
    library versions, plus ``extra`` (steps, samples, seed, seconds, ...)."""
    return {
        "commit": git_commit(),
        "command": command,
        "machine": machine(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        **extra,
    }


def script_command(script: str | os.PathLike, argv: Sequence[str] | None = None) -> str:
    """The command line that ran ``benchmarks/<script>`` with ``argv`` (default: this
    process's arguments), as a results file's provenance records it."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{Path(script).name}", *args])


def write_report(
    out: str | os.PathLike,
    name: str,
    result: dict,
    markdown: Callable[[dict], str],
    figure: Callable[[dict, Any], None] | None = None,
) -> None:
    """Write ``<name>.json``, ``<name>.md`` (``markdown(result)``) and, with ``figure``,
    ``<name>.png`` (``figure(result, file)``) under ``out``, each atomically."""
    from bayesmeta.atomic import atomic_write, write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / f"{name}.json", json.dumps(result, indent=1) + "\n")
    write_text(out / f"{name}.md", markdown(result))
    if figure is not None:
        atomic_write(out / f"{name}.png", lambda f: figure(result, f))


def git_commit(where: str | os.PathLike | None = None) -> str | None:
    """The short commit hash of the checkout at ``where`` (a results file's provenance), with
    ``+dirty`` when tracked files differ from it (the result then came from code no commit
    holds), or None outside a git checkout."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=where or Path(__file__).parent).stdout.strip()  # fmt: skip

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def report_head(
    benchmark: str,
    script: str | os.PathLike,
    argv: Sequence[str] | None = None,
    program: str | None = None,
) -> dict[str, Any]:
    """The first entries of a benchmark script's report: ``benchmark``, the commit of the
    checkout that ``script`` sits in, the command (``program``, default
    ``benchmarks/<script>``, then ``argv``, default this process's arguments) and the date."""
    import sys

    args = argv if argv is not None else sys.argv[1:]
    return {
        "benchmark": benchmark,
        "commit": git_commit(Path(script).parent),
        "command": " ".join([program or f"benchmarks/{Path(script).name}", *args]),
        "date": time.strftime("%Y-%m-%d"),
    }


def time_chunks(run: Callable, carry: tuple, repeats: int) -> tuple[float, float]:
    """Seconds of a chunk runner's calls (:func:`~bayesmeta.inference.train.make_chunk_runner`)
    from ``carry = (state, key)``: the first (it compiles) and the best of ``repeats`` calls
    after it, each going on from the one before."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(run(*carry))
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(run(out[0], out[1]))
        best = min(best, time.perf_counter() - t0)
    return first, best


def _budget_name(budget: Budget) -> str:
    return next((k for k, v in BUDGETS.items() if v == budget), "custom")


def _figures(fname, spec, fam, posts, tasks, seed, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayesmeta import plots
    from bayesmeta.evaluate import calibration_curve

    fig_dir = out_dir / "calibration"
    fig_dir.mkdir(parents=True, exist_ok=True)
    order = (ORACLE, *dict.fromkeys((*METHODS, *CLASSIFIERS, *METHOD_REGISTRY)))
    names = [m for m in order if (m, seed, fam.ks[0]) in posts]
    if spec.model.likelihood.classifier:
        k = fam.ks[0]
        ts = tasks[(seed, k)]
        for m in names:
            probs = np.asarray(posts[(m, seed, k)].probs(jnp.asarray(ts["x_query"])))
            fig = plots.reliability_diagram(
                probs,
                np.asarray(ts["y_query"]),
                title=f"{fam.label or fname}, K={k}: {m}",
                path=fig_dir / f"{fname}_reliability_{m}.png",
            )
            plt.close(fig)
        return
    k = fam.ks[len(fam.ks) // 2]
    ts = tasks[(seed, k)]
    curves = {}
    for m in names:
        if (m, seed, k) in posts:
            pit = np.asarray(posts[(m, seed, k)].pit(ts["x_query"], ts["y_query"]))
            curves[m] = calibration_curve(pit)
    fig = plots.calibration_curves(curves, path=fig_dir / f"{fname}_calibration_k{k}.png")
    plt.close(fig)
    # bands for the sinusoid only: for sine-or-line the same call was OOM-killed (24 GB)
    # in this suite and is not yet understood
    if fname == "sinusoid" and spec.model.dx == 1 and ORACLE in names:
        fam_obj = spec.family
        params = np.asarray(ts["task_params"])
        sub = {m: posts[(m, seed, k)] for m in names if (m, seed, k) in posts}
        # the grid reference has ~10⁴ weighted nodes: 500 draws of it draw the same bands
        sub[ORACLE] = sub[ORACLE].resample(jax.random.PRNGKey(3), 500)
        sup = padded_support(ts, ts["x_support"].shape[1])
        fig = plots.predictive_bands(
            sub,
            sup.x,
            sup.y,
            sup.mask,
            task_indices=(0, 1, 2),
            x_range=fam_obj.x_range,
            true_fn=lambda i, x: np.asarray(fam_obj.mean_fn(params[i], x[:, None]))[:, 0],
            path=fig_dir / f"{fname}_bands_k{k}.png",
            num_draws=500,
        )
        plt.close(fig)


METRICS_REG = ("nll", "gap", "mse", "cov50", "cov90", "calibration_error")
METRICS_CLS = ("nll", "gap", "accuracy", "ece", "mce", "brier", "ts_ece", "temperature")


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Mean and standard error over seeds of each metric, per (family, k, method)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["k"], r["method"]), []).append(r)
    out = []
    for (fam, k, m), rs in groups.items():
        s: dict[str, Any] = {"family": fam, "k": k, "method": m, "seeds": len(rs)}
        cls = any("accuracy" in r for r in rs)
        for name in (*(METRICS_CLS if cls else METRICS_REG), "train_seconds"):
            vals = [r[name] for r in rs if r.get(name) is not None]
            if not vals:
                s[name] = None
                continue
            arr = np.asarray(vals, dtype=float)
            se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else None
            s[name] = {"mean": float(arr.mean()), "se": se}
        s["failed"] = sum(1 for r in rs if r.get("error"))
        out.append(s)
    return out


def _fmt(cell, digits=3) -> str:
    if cell is None:
        return "–"
    if cell["se"] is None:
        return f"{cell['mean']:.{digits}f}"
    return f"{cell['mean']:.{digits}f} ± {cell['se']:.{digits}f}"


def markdown(rows: Sequence[dict]) -> str:
    """The ``calibration.md`` tables: one per family, mean ± standard error over seeds.

    In classification tables a † marks a method whose ECE is above MAML's at the same K.
    """
    summ = summarise(rows)
    order = {m: i for i, m in enumerate((ORACLE, *METHODS, *CLASSIFIERS))}
    lines = []
    for fam in dict.fromkeys(s["family"] for s in summ):
        fs = [s for s in summ if s["family"] == fam]
        cls = any(s.get("accuracy") for s in fs)
        label = FAMILIES[fam].label if fam in FAMILIES and FAMILIES[fam].label else fam
        lines.append(f"### {label}\n")
        if cls:
            head = ("| K | method | NLL | gap | accuracy | ECE | MCE | Brier | ECE at T | T "
                    "| train s |")  # fmt: skip
        else:
            head = "| K | method | NLL | gap | MSE | cov 50% | cov 90% | calib. err. | train s |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for s in sorted(fs, key=lambda s: (s["k"], order.get(s["method"], 99))):
            name = s["method"] + (f" ({s['failed']} diverged)" if s["failed"] else "")
            cells = [str(s["k"]), name, _fmt(s["nll"]), _fmt(s["gap"])]
            if cls:
                maml = next(
                    (x for x in fs if x["method"] == "maml" and x["k"] == s["k"]),
                    None,
                )
                worse = (
                    maml is not None
                    and s["method"] not in ("maml", ORACLE)
                    and s.get("ece") is not None
                    and maml.get("ece") is not None
                    and s["ece"]["mean"] > maml["ece"]["mean"]
                )
                cells += [
                    _fmt(s["accuracy"]),
                    _fmt(s["ece"]) + (" †" if worse else ""),
                    _fmt(s["mce"]),
                    _fmt(s["brier"]),
                    _fmt(s.get("ts_ece")),
                    _fmt(s.get("temperature"), 2),
                ]
            else:
                cells += [_fmt(s["mse"]), _fmt(s["cov50"]), _fmt(s["cov90"])]
                cells.append(_fmt(s["calibration_error"]))
            cells.append(_fmt(s["train_seconds"], 0))
            lines.append("| " + " | ".join(cells) + " |")
        if cls:
            lines.append("\n† ECE above MAML's at the same K (worse calibrated than MAML). "
                         "ECE at T: after temperature scaling with T fitted on validation "
                         "classes (post-hoc baseline, beside each method's own).")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def write_results(rows: Sequence[dict], out_dir: str | os.PathLike, **meta) -> None:
    """Write ``calibration.json`` (the rows) and ``calibration.md`` atomically."""
    from bayesmeta.atomic import write_text

    out_dir = Path(out_dir)
    for name, text in (
        ("calibration.json", json.dumps(list(rows), indent=1, default=float)),
        ("calibration.md", _md_header(meta) + markdown(rows)),
    ):
        write_text(out_dir / name, text)
    learning_curve_figures(rows, out_dir)


def learning_curve_figures(rows: Sequence[dict], out_dir: str | os.PathLike) -> list[Path]:
    """``<family>_learning_curves.png`` for every family whose rows carry validation curves:
    validation NLL against training seconds, a line per method and seed (the rows of a run
    share one curve; the first K's is drawn); and ``<family>_learning_curves_accuracy.png``,
    validation accuracy, for the runs that recorded it (classifiers)."""
    from bayesmeta import plots

    paths = []
    for family in sorted({r["family"] for r in rows if r.get("validation_nll")}):
        curves: dict[str, dict[str, list]] = {}
        for r in rows:
            if r["family"] != family or not r.get("validation_nll"):
                continue
            name = f"{r['method']} (seed {r['seed']})"
            if name in curves:
                continue
            n = len(r["validation_nll"])
            steps = r.get("validation_step") or list(range(1, n + 1))
            curves[name] = {"method": r["method"], "seconds": r["validation_seconds"][:n],
                            "step": steps, "nll": r["validation_nll"]}  # fmt: skip
            if r.get("validation_accuracy"):
                curves[name]["accuracy"] = r["validation_accuracy"]
        label = FAMILIES[family].label if family in FAMILIES else family
        path = Path(out_dir) / f"{family}_learning_curves.png"
        title = f"{label}: validation NLL against training time"
        plots.training_curves(curves, "nll", path=path, title=title)
        paths.append(path)
        with_accuracy = {n: c for n, c in curves.items() if "accuracy" in c}
        if with_accuracy:
            # runs made before accuracy was recorded have only the NLL figure's line
            path = Path(out_dir) / f"{family}_learning_curves_accuracy.png"
            title = f"{label}: validation accuracy against training time"
            plots.training_curves(with_accuracy, "accuracy", path=path, title=title)
            paths.append(path)
    return paths


def _md_header(meta: dict) -> str:
    import platform

    dev = jax.devices()[0].device_kind
    el = meta.get("elapsed")
    took = f", {el / 60:.1f} min in all" if el else ""
    return (
        f"## Calibration benchmark (budget `{meta.get('budget_name', '?')}`{took})\n\n"
        f"{platform.machine()} {dev}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}. "
        "Mean ± standard error over seeds; held-out tasks only. NLL per query point; gap = "
        "NLL − the exact reference's NLL (synthetic families).\n\n"
    )


__all__ = [
    "BUDGETS",
    "FAMILIES",
    "METHODS",
    "Budget",
    "Family",
    "export_inference_data",
    "learning_curve_figures",
    "machine",
    "markdown",
    "merge",
    "parse_shard",
    "provenance",
    "run_calibration",
    "script_command",
    "summarise",
    "units",
    "write_results",
]
