"""``auto``: fit several candidate models and methods on the user's grouped data, score each on
the validation groups, and keep the best.

    fitted = bm.fit("auto", data=rows)            # or: bayesmeta fit auto --data FILE ...
    fitted.info["auto"]                            # every candidate's score, and the choice

The candidates (:data:`CANDIDATES`) start with the classical answer, the per-group
empirical-Bayes linear model's exact posterior (``linear`` / ``reference``), so ``auto`` never
chooses something that scored worse than it on the validation groups. Every candidate is
scored by the same number: the mean negative log predictive density per query row of one task
per validation group (:func:`bayesmeta.fitting.default_validator`, the same tasks for each),
at the state the candidate's own early stopping kept. No test group is seen by any choice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from bayesmeta.errors import UsageError
from bayesmeta.fitted import Fitted
from bayesmeta.fitting import Run, default_validator, fit_run

#: ``(model, method, recipe overrides)`` tried by ``auto``, the classical model first: the
#: exact empirical-Bayes linear posterior, the same model with a meta-learned prior (PLATIPUS
#: with the exact last layer), and the MLP whose last layer also sees the raw features (the
#: neural process's exact last layer). Particle and MLP-wide sampling methods are left out of
#: the default set for its time budget; pass ``candidates=`` to try them.
CANDIDATES: tuple[tuple[str, str, Mapping[str, Any]], ...] = (
    ("linear", "reference", {}),
    ("linear", "platipus", {"head": "collapsed"}),
    ("mlp", "neural-process", {}),
)


def fit_auto(
    data: Any,
    *,
    candidates: Sequence[tuple[str, str, Mapping[str, Any]]] = CANDIDATES,
    seed: int = 0,
    budget: str = "default",
    progress: bool | None = None,
    log=None,
) -> Fitted:
    """Fit every candidate on ``data`` and return the one with the lowest validation NLL per
    row, its ``info["auto"]`` recording each candidate (model, method, options, validation
    NLL, steps, seconds) and the choice.

    Parameters
    ----------
    data : DataRef, str, Rows or Splits
        Grouped data (a real ``y``): a file, a built-in data set's name, or rows in memory.
    candidates : sequence of (model, method, overrides)
        Default :data:`CANDIDATES`.
    seed, budget, progress
        As for :func:`bayesmeta.fit`; every candidate uses the same seed.
    log : callable, optional
        Called with one line per finished candidate.
    """
    if data is None:
        raise UsageError("data: auto chooses among models fitted to grouped data; pass data=")
    if not candidates:
        raise UsageError("candidates: expected at least one (model, method, overrides)")
    trials, best = [], None
    for model, method, overrides in candidates:
        run = Run(model, method, data, budget=budget, seed=seed, config=dict(overrides))
        if run.spec.splits is None or not run.spec.family.likelihood.gaussian:
            raise UsageError("data: auto is for a real y (regression); fit 'mlp' with a "
                             "classifier method for class labels")  # fmt: skip
        t0 = time.perf_counter()
        fitted = fit_run(run, validate=True, progress=progress)
        score = _validation_nll(fitted, run, seed)
        trial = {
            "model": model,
            "method": method,
            "overrides": dict(overrides),
            "validation_nll": score,
            "steps": int(fitted.info["steps"]),
            "best_step": fitted.info.get("best_step"),
            "seconds": time.perf_counter() - t0,
        }
        trials.append(trial)
        if log is not None:
            log(f"auto: {model}/{method} validation NLL {score:.4f} per row "
                f"({trial['seconds']:.0f} s)")  # fmt: skip
        if best is None or score < best[0]:
            best = (score, fitted, trial)
    score, fitted, trial = best
    reference = trials[0]
    fitted.info["auto"] = {
        "candidates": trials,
        "chosen": {k: trial[k] for k in ("model", "method", "overrides")},
        "criterion": "validation NLL per query row, one task per validation group",
        "reason": (
            f"lowest validation NLL ({score:.4f}); the classical "
            f"{reference['model']}/{reference['method']} scored "
            f"{reference['validation_nll']:.4f}"
        ),
    }
    return fitted


def _validation_nll(fitted: Fitted, run: Run, seed: int) -> float:
    """The candidate's score at its kept state, on the validation tasks every candidate
    shares."""
    make = default_validator(fitted.spec, run.built[1], seed)
    if make is None:
        raise UsageError("data: no validation group is large enough to score the candidates; "
                         "auto needs validation groups of at least K + 1 rows")  # fmt: skip
    return float(make(fitted.method)(fitted.state))


__all__ = ["CANDIDATES", "fit_auto"]
