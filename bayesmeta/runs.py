"""Fit, adapt, evaluate, save and load in a few lines: the notebook's entry points.

    import bayesmeta as bm

    fitted = bm.fit("sinusoid", "bmaml", steps=2000)           # a built-in model, its recipe
    tasks = fitted.held_out(k=5, num_tasks=50)                 # test tasks never trained on
    post = fitted.adapt(tasks["x_support"], tasks["y_support"])  # a TaskPosterior
    report = fitted.evaluate(tasks)                            # NLL, MSE, coverage, ...
    fitted.plot(tasks)                                         # bands beside the reference
    fitted.save("runs/bmaml"); fitted = bm.load("runs/bmaml")

``model`` is a built-in model's name or a model file, a :class:`~bayesmeta.zoo.ModelSpec`, or
with ``data`` (grouped rows, :mod:`bayesmeta.tasks.data`) ``"linear"``, ``"mlp"``, a NumPyro
model function or a :class:`~bayesmeta.model.HierarchicalModel`. A saved run is the command
line's run directory (``checkpoint.npz``, ``run.json``), so ``bayesmeta evaluate`` reads it
too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from bayesmeta.datamodels import as_spec
from bayesmeta.fitted import Fitted
from bayesmeta.rundir import DataRef, load_run
from bayesmeta.tasks.base import padded_support
from bayesmeta.zoo import held_out_tasks

#: Checkpoint fields that are not the run's identity (a loaded run's manifest leaves them out).
MANIFEST_SKIP = ("key", "history", "step", "state", "format_version", "validation_nll", "arrays",
                 "bayesmeta_version")  # fmt: skip


def evaluate_methods(
    spec,
    fitted: dict,
    ks,
    num_tasks: int,
    num_samples: int = 100,
    seed: int = 0,
    train_seconds: dict | None = None,
):
    """Rows of metrics for every fitted ``{name: (method, state)}`` at each K, plus the
    posteriors (for plots)."""
    from bayesmeta.evaluate import calibration_curve, compare, evaluate

    rows, posts, tasks_by_k = [], {}, {}
    # every K's support is padded to the same size, so each method compiles its adapt once
    adapt = {name: jax.jit(m.adapt, static_argnums=3) for name, (m, _) in fitted.items()}
    for k in ks:
        ts = held_out_tasks(spec, k, num_tasks)
        tasks_by_k[k] = ts
        sup = padded_support(ts, max(spec.k_range[1], k))
        reports = {}
        for name, (_, state) in fitted.items():
            post = adapt[name](jax.random.PRNGKey(seed + k), state, sup, num_samples)
            rep = evaluate(post, ts["x_query"], ts["y_query"], return_pit=True)
            rep["calibration_curve"] = [c.tolist() for c in calibration_curve(rep["pit"])]
            reports[name] = rep
            posts[(name, k)] = post
        for row in compare(reports):
            row["k"] = k
            if train_seconds and row["method"] in train_seconds:
                row["train_s"] = train_seconds[row["method"]]
            rows.append(row)
    return rows, posts, tasks_by_k


def task_set(
    source: Any,
    k: int = 5,
    num_tasks: int = 100,
    *,
    num_query: int | None = None,
    split: str = "test",
) -> dict[str, np.ndarray]:
    """Held-out tasks of a model or a data set: ``bayesmeta.tasks(source, k=..., num_tasks=...)``.

    Parameters
    ----------
    source : Fitted, ModelSpec, model name or file, data set name, Rows or Splits
        Whose tasks: a fitted run's (:meth:`Fitted.held_out`), a model's (built-in name or
        file), or grouped data's (a built-in data set's name, the user's ``Rows`` split by
        group, or ``Splits``), in the units the model is fitted in (standardised for data).
    k : int
        Support points per task.
    num_tasks : int
        Tasks in the set; on grouped data at most one task per group of the split with at
        least ``k + 1`` rows (the rest of the group as masked queries), so that tasks are
        independent units and standard errors are over groups.
    num_query : int, optional
        Query points per task: default 50, and for data at most what the largest group of
        the split holds beyond ``k`` (rows a smaller group lacks are masked).
    split : {"test", "validation"}
        ``"test"`` for what is reported, ``"validation"`` for choices; neither shares a task
        with training.

    Returns
    -------
    dict
        A task set (docs/formats.md): ``x_support`` (T, K, Dx), ``y_support``, ``x_query``,
        ``y_query`` and, where groups are ragged, ``mask_support`` / ``mask_query``.
    """
    if isinstance(source, Fitted):
        spec = source.spec
    elif _is_data(source):
        spec = as_spec("linear", source)
    else:
        spec = as_spec(source)
    if num_query is None:
        num_query = 50
        if spec.splits is not None:
            part = spec.splits.validation if split == "validation" else spec.splits.test
            num_query = max(1, min(num_query, int(np.max(part.lengths)) - int(k)))
    if int(k) < 1 or int(num_tasks) < 1 or int(num_query) < 1:
        raise ValueError(
            f"k, num_tasks, num_query: expected positive integers, got {k}, {num_tasks}, "
            f"{num_query}"
        )
    return spec.held_out(split, int(k), int(num_tasks), int(num_query))


def _is_data(source: Any) -> bool:
    from bayesmeta.modelfiles import builtin_models
    from bayesmeta.tasks.data import Rows, Splits
    from bayesmeta.tasks.grouped import DATASETS

    if isinstance(source, Rows | Splits):
        return True
    # a built-in model of the same name (nlschools) is that data set's own model file
    return isinstance(source, str) and source in DATASETS and source not in builtin_models()


def fit(
    model: Any,
    method: str = "abml",
    data: Any = None,
    *,
    steps: int | None = None,
    seed: int = 0,
    budget: str = "default",
    optimizer: Any = None,
    progress: bool | None = None,
    validate: bool | None = None,
    search_budget: int | None = None,
    **config: Any,
) -> Fitted:
    """Meta-train ``method`` on ``model`` with its recipe and return a :class:`Fitted`.

    Parameters
    ----------
    model : str, Path, ModelSpec, NumPyro model function or HierarchicalModel
        See the module docstring; ``"auto"`` with ``data`` fits the candidate models and
        methods of :mod:`bayesmeta.auto` and keeps the best on the validation groups
        (``method`` is then ignored).
    method : str
        A registered method (``maml``, ``meta-sgd``, ``abml``, ``emaml``, ``bmaml``,
        ``platipus``, ``amortized``, ``neural-process``), ``reference`` (nothing to train) or
        ``nuts``: NUTS over each task's φ at the model's initial θ (for a data model the
        empirical-Bayes fit of the training groups; for a NumPyro model its ``init`` or prior
        means); ``fitted.nuts()`` runs it at a fitted θ. ``config`` then takes
        ``num_warmup``, ``num_chains`` and ``target_accept_prob``.
    data : str, Rows or Splits, optional
        Grouped data: a built-in data set's name or the user's rows, split by group.
    steps : int, optional
        Meta-training steps (default: the recipe's).
    seed : int
        θ's initialisation and the training stream.
    optimizer : optax.GradientTransformation, optional
        Replaces the recipe's Adam (learning rate, schedule and clipping).
    progress : bool, optional
        A progress bar (``tqdm.auto``: a widget in a notebook); default on in a terminal or a
        notebook.
    validate : bool, optional
        Score the validation tasks after every chunk and keep the best state (default: when
        the model has validation groups, i.e. on data).
    search_budget : int, optional
        With ``data``: choose the learning rate and the method's step size on the validation
        groups by a seeded search of this many meta-training steps in all
        (:func:`bayesmeta.search.fit_search`; ``info["search"]`` holds every trial).
    **config
        Recipe overrides (``lr``, ``meta_batch``, ``inner_steps``, ``num_particles``, ...);
        a misspelt one is a ``ValueError`` naming it.
    """
    from bayesmeta.fitting import Run, fit_run

    if isinstance(model, str) and model == "auto":
        from bayesmeta.auto import fit_auto

        if config or optimizer is not None or steps is not None:
            raise ValueError("model: 'auto' chooses its candidates' recipes itself; drop steps=, "
                             "optimizer= and recipe overrides")  # fmt: skip
        return fit_auto(data, seed=seed, budget=budget, progress=progress)
    if method == "nuts":
        return _nuts_at_initial_theta(model, data, seed, config)
    run = Run(model, method, data, budget=budget, steps=steps, seed=seed, config=config,
              optimizer=optimizer)  # fmt: skip
    if search_budget is not None:
        from bayesmeta.search import fit_search

        return fit_search(run, search_budget, progress=progress)
    return fit_run(run, validate=validate, progress=progress)


def _nuts_at_initial_theta(model: Any, data: Any, seed: int, config: dict) -> Fitted:
    """``bayesmeta.fit(model, "nuts")``: NUTS per task at the model's initial θ."""
    import jax

    from bayesmeta.fitting import Run
    from bayesmeta.inference.nuts import nuts

    allowed = {"num_warmup", "num_chains", "target_accept_prob"}
    extra = sorted(set(config) - allowed)
    if extra:
        raise ValueError(f"{extra[0]}: not an option of 'nuts' (expected {sorted(allowed)})")
    spec = Run(model, "reference", data, seed=seed).spec
    theta = spec.model.init_theta(jax.random.PRNGKey(seed))
    method = nuts(spec.model, theta, **config)
    info = {"model": spec.name, "method": "nuts", "seed": seed, "steps": 0,
            "theta_from": "the model's initial θ", "settings": dict(config)}  # fmt: skip
    return Fitted(spec, method, method.init(None), info)


def load(
    run_dir: str | Path,
    *,
    model: Any = None,
    optimizer: Any = None,
    trust_model_file: bool = False,
) -> Fitted:
    """A saved run (from :meth:`Fitted.save` or ``bayesmeta fit --out``) as a
    :class:`Fitted`: its best state when it validated, else its last.

    ``model`` is needed when the run's model was given as an object (a ModelSpec, a NumPyro
    model function or a HierarchicalModel: pass the same one); for a model file it is the
    file's path (or pass ``trust_model_file``: loading runs the file). A data run's data comes
    back from the run itself (``data.npz``) or its recorded file. ``optimizer``: the one the
    run was fitted with, if not the recipe's (its state has that optimiser's shape).
    """
    from bayesmeta.rundir import read_run_json

    path = Path(run_dir)
    info = read_run_json(path) if path.is_dir() else {}
    if info.get("optimizer") == "custom" and optimizer is None:
        raise ValueError(
            f"optimizer: the run in {str(path)!r} was fitted with its own optimizer; pass the "
            "same optimizer= to load it (its state has that optimizer's shape)"
        )
    spec, method, state, payload = load_run(str(path), model=model,
                                            trust_model_file=trust_model_file,
                                            optimizer=optimizer)  # fmt: skip
    manifest = {k: v for k, v in payload.items() if k not in MANIFEST_SKIP}
    return Fitted(spec, method, state, info, manifest)


__all__ = ["DataRef", "Fitted", "fit", "load", "load_run", "task_set"]
