"""A seeded search over a fit's learning rate and the method's key settings, scored on the
validation groups only: ``bm.fit(model, method, data=rows, search_budget=N)`` and
``bayesmeta fit ... --data FILE --search-budget N``.

Each trial is one fit of the same run with other settings (:func:`bayesmeta.fitting.fit_run`,
validated after every chunk, its best state kept), so the number of steps is chosen by the
same validation: a trial's score is its best validation NLL per query row, at its best step.
The first trial is the recipe as it is, so the search never keeps something that scored worse
than the default on the validation groups; the others are proposed by optuna's TPE sampler
from a fixed seed (Bergstra et al. 2011). Trials are counted in meta-training steps, never
in seconds, so what is tried and chosen does not depend on the machine's speed.

The budget is the total number of meta-training steps over all trials: ``budget //
steps`` trials of the recipe's ``steps`` each (at least one). A data set whose validation
split has fewer than :data:`MIN_VALIDATION_GROUPS` groups has too little to choose on: the
search is skipped, the recipe is fitted as it is, and ``info["search"]`` says why.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

from bayesmeta.errors import UsageError
from bayesmeta.fitted import Fitted
from bayesmeta.fitting import Run, fit_run

#: ``method -> {option: (low, high)}`` searched on a log scale; ``"*"`` applies to every
#: method that trains with Adam (all of them). The ranges bracket the recipes' defaults.
SEARCH_SPACE: dict[str, dict[str, tuple[float, float]]] = {
    "*": {"lr": (1e-4, 3e-3)},
    "maml": {"inner_lr": (1e-3, 0.3)},
    "meta-sgd": {"inner_lr": (1e-3, 0.3)},
    "emaml": {"inner_lr": (1e-3, 0.3)},
    "abml": {"inner_lr": (0.05, 2.0)},
    "bmaml": {"inner_lr": (0.01, 1.0)},
    "platipus": {"inner_lr": (1e-3, 0.3)},
}

#: Fewer validation groups than this leave the search skipped (the recipe is fitted).
MIN_VALIDATION_GROUPS = 5


def search_space(method: str) -> dict[str, tuple[float, float]]:
    """The options searched for ``method`` and their log-scale ranges."""
    return {**SEARCH_SPACE["*"], **SEARCH_SPACE.get(method, {})}


def fit_search(
    run: Run,
    budget: int,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Fitted:
    """Fit ``run`` with the settings that score best on its validation groups among the
    trials a ``budget`` of meta-training steps allows; ``info["search"]`` records every trial
    (settings, validation NLL, best step, seconds), the choice and the sampler.

    Raises
    ------
    UsageError
        For a budget that is not a positive integer, a run without data, a reference (it has
        nothing to train), or settings the search would choose that the run fixes itself.
    """
    import optuna

    from bayesmeta.inference.registry import trainable

    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UsageError(f"--search-budget: expected a positive number of steps, got {budget!r}")
    if run.data is None:
        raise UsageError("--search-budget: the search scores validation groups; pass data")
    if not trainable(run.method):
        raise UsageError(f"--search-budget: {run.method!r} has nothing to train or search")
    space = search_space(run.method)
    fixed = sorted(set(space) & set(run.config))
    if fixed:
        raise UsageError(f"--search-budget: the search chooses {fixed[0]}; drop it or the search")
    steps = int(run.settings()["steps"])
    n_val = int(run.spec.splits.validation.num_groups)
    record: dict[str, Any] = {
        "budget_steps": budget,
        "steps_per_trial": steps,
        "space": {k: list(v) for k, v in space.items()},
        "criterion": "best validation NLL per query row over the trial's chunks",
        "sampler": f"optuna TPESampler(seed={run.seed}), the recipe as the first trial",
    }
    if n_val < MIN_VALIDATION_GROUPS:
        record["skipped"] = (
            f"{n_val} validation groups; the search needs at least {MIN_VALIDATION_GROUPS}, "
            "so the recipe was fitted as it is"
        )
        fitted = fit_run(run, validate=True, progress=progress)
        fitted.info["search"] = record
        return fitted
    n_trials = max(1, budget // steps)
    default = {k: run.settings()[k] for k in space}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=run.seed, n_startup_trials=min(4, n_trials)),
    )
    study.enqueue_trial(default)
    trials: list[dict[str, Any]] = []
    best: tuple[float, Fitted, dict] | None = None
    for _ in range(n_trials):
        trial = study.ask()
        params = {k: trial.suggest_float(k, lo, hi, log=True) for k, (lo, hi) in space.items()}
        t0 = time.perf_counter()
        cand = dataclasses.replace(run, config={**run.config, **params})
        fitted = fit_run(cand, validate=True, progress=progress)
        score = fitted.info.get("best_validation_nll")
        score = float(score) if score is not None and math.isfinite(score) else math.inf
        study.tell(trial, score)
        row = {"params": params, "validation_nll": score,
               "best_step": fitted.info.get("best_step"),
               "seconds": time.perf_counter() - t0}  # fmt: skip
        trials.append(row)
        if log is not None:
            shown = ", ".join(f"{k}={v:.3g}" for k, v in params.items())
            log(f"search: {shown}: validation NLL {score:.4f} (best step {row['best_step']})")
        if best is None or score < best[0]:
            best = (score, fitted, row)
    assert best is not None
    score, fitted, row = best
    record.update(trials=trials, chosen=row["params"], chosen_best_step=row["best_step"],
                  chosen_validation_nll=score)  # fmt: skip
    fitted.info["search"] = record
    return fitted


__all__ = ["MIN_VALIDATION_GROUPS", "SEARCH_SPACE", "fit_search", "search_space"]
