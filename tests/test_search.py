"""The seeded search on validation groups (issue 42, item 3): the recipe is the first trial,
optuna proposes the rest from a fixed seed, the best validation NLL is kept, and every trial
goes into ``info["search"]``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import bayesmeta.search as search
from bayesmeta.errors import UsageError
from bayesmeta.fitting import Run
from bayesmeta.tasks.data import from_groups


class _Stub:
    """What the search reads of a fit: ``info`` with the best validation NLL."""

    def __init__(self, run):
        cfg = run.config
        # a bowl in log space whose minimum lies inside the space, away from the recipe
        lr, inner = cfg.get("lr", 3e-4), cfg.get("inner_lr", 0.01)
        score = (math.log10(lr) + 3.2) ** 2 + (math.log10(inner) + 1.5) ** 2
        self.info = {"best_validation_nll": score, "best_step": run.steps, "params": dict(cfg)}


def _rows(groups: int = 40):
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(groups), 6)
    x = rng.normal(size=(g.size, 1))
    return from_groups(x, x[:, 0] * rng.normal(1, 0.3, groups)[g], g)


@pytest.fixture
def stubbed(monkeypatch):
    calls = []

    def fake_fit_run(run, **_):
        calls.append(run)
        return _Stub(run)

    monkeypatch.setattr(search, "fit_run", fake_fit_run)
    return calls


def test_the_recipe_is_the_first_trial_and_the_best_trial_is_kept(stubbed):
    run = Run("linear", "maml", _rows(), steps=50)
    fitted = search.fit_search(run, 400)
    rec = fitted.info["search"]
    assert len(rec["trials"]) == 8 == len(stubbed)  # 400 steps of 50-step trials
    assert rec["trials"][0]["params"] == {"lr": 3e-4, "inner_lr": 0.01}  # the recipe as it is
    scores = [t["validation_nll"] for t in rec["trials"]]
    assert rec["chosen_validation_nll"] == min(scores) and fitted.info["params"] == rec["chosen"]
    lo, hi = search.search_space("maml")["lr"]
    assert all(lo <= t["params"]["lr"] <= hi for t in rec["trials"])
    json.dumps(rec)  # run.json holds it


def test_the_same_seed_proposes_the_same_trials(stubbed):
    run = Run("linear", "maml", _rows(), steps=50)
    first = search.fit_search(run, 250).info["search"]["trials"]
    again = search.fit_search(run, 250).info["search"]["trials"]
    other = search.fit_search(Run("linear", "maml", _rows(), steps=50, seed=1), 250)
    assert [t["params"] for t in first] == [t["params"] for t in again]
    assert [t["params"] for t in first] != [t["params"] for t in other.info["search"]["trials"]]


def test_too_few_validation_groups_fall_back_to_the_recipe_and_say_so(stubbed):
    run = Run("linear", "maml", _rows(groups=12), steps=50)  # 2 validation groups
    rec = search.fit_search(run, 400).info["search"]
    assert "skipped" in rec and "at least 5" in rec["skipped"] and len(stubbed) == 1


def test_bad_budgets_and_clashes_are_one_line():
    rows = _rows()
    with pytest.raises(UsageError, match="--search-budget: expected a positive number"):
        search.fit_search(Run("linear", "maml", rows), 0)
    with pytest.raises(UsageError, match="the search chooses lr"):
        search.fit_search(Run("linear", "maml", rows, config={"lr": 1e-3}), 100)
    with pytest.raises(UsageError, match="'reference' has nothing to train"):
        search.fit_search(Run("linear", "reference", rows), 100)
    with pytest.raises(UsageError, match="pass data"):
        search.fit_search(Run("sinusoid", "maml"), 100)


@pytest.mark.slow
def test_a_search_from_the_command_line_is_recorded_and_reloads(tmp_path):
    import csv

    import bayesmeta as bm
    from bayesmeta.cli import main

    rows = _rows()
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["g", "x", "y"])
        for gi, xi, yi in zip(rows.groups, rows.x[:, 0], rows.y[:, 0], strict=True):
            w.writerow([gi, xi, yi])
    out = tmp_path / "run"
    argv = ["fit", "linear", "--method", "maml", "--data", str(path), "--group", "g", "--x",
            "x", "--y", "y", "--steps", "4", "--search-budget", "8", "--quiet", "--out",
            str(out)]  # fmt: skip
    assert main(argv) == 0
    info = json.loads((out / "run.json").read_text())
    assert len(info["search"]["trials"]) == 2 and info["search"]["chosen"]
    loaded = bm.load(out)
    assert loaded.manifest["settings"]["lr"] == pytest.approx(info["search"]["chosen"]["lr"])
