"""``auto``: fit several candidate models and methods on the user's grouped data, score each on
the validation groups, and keep the best.

    fitted = bm.fit("auto", data=rows)            # or: bayesmeta fit auto --data FILE ...
    fitted.info["auto"]                            # every candidate's score, and the choice

The candidates (:data:`CANDIDATES`) start with the classical answer a statistician would
fit, the linear mixed model with random intercept and slopes by REML (``mixed`` /
``reference``: statsmodels' ``MixedLM`` and a new group's exact conditional posterior; without
statsmodels installed, the same model by maximum likelihood, ``linear`` / ``reference``), so
that ``auto`` keeps the classical model unless the validation groups show something better.
Every candidate
is scored on the same validation tasks (:func:`bayesmeta.fitting.default_validator`): the
negative log predictive density per query row of one task per validation group, averaged over
support sizes 1, 3 and 5, at the state the candidate's own early stopping kept. Another
candidate replaces the classical one only when it beats it by more than :data:`MARGIN_SE`
paired standard errors over the validation groups (and then the best such one is kept): with
a few dozen groups the lowest mean alone is often noise. No test group is seen by any choice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bayesmeta.errors import UsageError
from bayesmeta.fitted import Fitted
from bayesmeta.fitting import VALIDATION_KS, Run, default_validator, fit_run

#: ``(model, method, recipe overrides)`` tried by ``auto``, the classical model first: the
#: linear mixed model (REML) and the same model's empirical-Bayes (ML) fit, both exact
#: posteriors, the same model with a meta-learned prior (PLATIPUS with the exact last layer),
#: and the MLP whose last layer also sees the raw features (the neural process's exact last
#: layer). Particle and MLP-wide sampling methods are left out of the default set for its
#: time budget; pass ``candidates=`` to try them. ``mixed`` needs statsmodels (the ``data``
#: extra) and is left out without it.
CANDIDATES: tuple[tuple[str, str, Mapping[str, Any]], ...] = (
    ("mixed", "reference", {}),
    ("linear", "reference", {}),
    ("linear", "platipus", {"head": "collapsed"}),
    ("mlp", "neural-process", {}),
)


#: How many paired standard errors (over validation groups) a candidate must beat the first,
#: classical one by to be chosen instead.
MARGIN_SE = 2.0


def fit_auto(
    data: Any,
    *,
    candidates: Sequence[tuple[str, str, Mapping[str, Any]]] = CANDIDATES,
    seed: int = 0,
    budget: str = "default",
    calibrate: bool = True,
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
    calibrate : bool
        Fit the chosen candidate's interval calibration (a variance scale and split-conformal
        levels, :mod:`bayesmeta.evaluate.calibrate`) on the validation groups at each support
        size of :data:`~bayesmeta.fitting.VALIDATION_KS`, stored in ``info["calibration"]``;
        :meth:`Fitted.evaluate <bayesmeta.fitted.Fitted.evaluate>` and ``bayesmeta evaluate``
        report it beside the method's own intervals. The same validation groups chose the
        candidate, so the conformal guarantee holds given that choice, not across it.
    log : callable, optional
        Called with one line per finished candidate.
    """
    if data is None:
        raise UsageError("data: auto chooses among models fitted to grouped data; pass data=")
    if candidates is CANDIDATES and not _have_statsmodels():
        candidates = tuple(c for c in CANDIDATES if c[0] != "mixed")
    if not candidates:
        raise UsageError("candidates: expected at least one (model, method, overrides)")
    trials, fits, scores = [], [], []
    for model, method, overrides in candidates:
        run = Run(model, method, data, budget=budget, seed=seed, config=dict(overrides))
        if run.spec.splits is None or not run.spec.family.likelihood.gaussian:
            raise UsageError("data: auto is for a real y (regression); fit 'mlp' with a "
                             "classifier method for class labels")  # fmt: skip
        t0 = time.perf_counter()
        fitted = fit_run(run, validate=True, progress=progress)
        per_group = _validation_nll(fitted, run, seed)
        score = float(per_group.mean())
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
        fits.append(fitted)
        scores.append(per_group)
        if log is not None:
            log(f"auto: {model}/{method} validation NLL {score:.4f} per row "
                f"({trial['seconds']:.0f} s)")  # fmt: skip
    # the first candidate (the classical model) is kept unless another beats it by more than
    # MARGIN_SE paired standard errors over the validation groups: with few groups, the
    # lowest mean alone is often noise, and a flexible model that won by noise loses on test
    base = scores[0]
    chosen = 0
    for i in range(1, len(trials)):
        diff = scores[i] - base
        se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("inf")
        trials[i]["difference_to_first"] = float(diff.mean())
        trials[i]["difference_se"] = se
        beats = float(diff.mean()) < -MARGIN_SE * se
        trials[i]["beats_first"] = bool(beats)
        if beats and trials[i]["validation_nll"] < trials[chosen]["validation_nll"]:
            chosen = i
    fitted, trial, reference = fits[chosen], trials[chosen], trials[0]
    if chosen == 0:
        reason = (
            f"no candidate beat the classical {reference['model']}/{reference['method']} "
            f"(validation NLL {reference['validation_nll']:.4f}) by more than {MARGIN_SE:g} "
            "paired standard errors over the validation groups"
        )
    else:
        reason = (
            f"validation NLL {trial['validation_nll']:.4f} against the classical "
            f"{reference['model']}/{reference['method']}'s {reference['validation_nll']:.4f}: "
            f"better by {-trial['difference_to_first']:.4f} ± {trial['difference_se']:.4f} "
            f"(paired, over validation groups), more than {MARGIN_SE:g} standard errors"
        )
    fitted.info["auto"] = {
        "candidates": trials,
        "chosen": {k: trial[k] for k in ("model", "method", "overrides")},
        "criterion": (
            "validation NLL per query row, one task per validation group averaged over support "
            f"sizes {list(VALIDATION_KS)}; the first candidate unless another beats it by more "
            f"than {MARGIN_SE:g} paired standard errors"
        ),
        "reason": reason,
    }
    if calibrate:
        fitted.info["calibration"] = _calibrations(fitted, seed)
    return fitted


def _have_statsmodels() -> bool:
    import importlib.util

    return importlib.util.find_spec("statsmodels") is not None


def _calibrations(fitted: Fitted, seed: int) -> dict[str, dict]:
    """The chosen fit's interval calibration on the validation groups at each support size
    some validation group can afford (one task per group), keyed by K."""
    out = {}
    for k in VALIDATION_KS:
        try:
            cal = fitted.calibrate(k, seed=seed)
        except ValueError:  # no validation group has k + 1 rows
            continue
        out[str(k)] = cal.to_dict()
    return out


def _validation_nll(fitted: Fitted, run: Run, seed: int) -> np.ndarray:
    """The candidate's NLL per validation group at its kept state, on the validation tasks
    every candidate shares."""
    make = default_validator(fitted.spec, run.built[1], seed)
    if make is None:
        raise UsageError("data: no validation group is large enough to score the candidates; "
                         "auto needs validation groups of at least K + 1 rows")  # fmt: skip
    return np.asarray(make(fitted.method).per_task(fitted.state))


__all__ = ["CANDIDATES", "MARGIN_SE", "fit_auto"]
