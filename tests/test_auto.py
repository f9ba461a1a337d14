"""auto: the candidates are scored on the same validation groups, the best is kept, and the
choice is recorded; the classical empirical-Bayes linear posterior is always a candidate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_runs import _rows  # the toy grouped rows (random slopes)

import bayesmeta as bm
from bayesmeta.auto import CANDIDATES, fit_auto
from bayesmeta.errors import UsageError
from bayesmeta.tasks.data import from_groups


def test_auto_keeps_the_candidate_with_the_lowest_validation_nll():
    rows = _rows()
    candidates = (("linear", "reference", {}), ("linear", "maml", {}))
    f = fit_auto(rows, candidates=candidates, budget="quick", progress=False)
    auto = f.info["auto"]
    scores = [c["validation_nll"] for c in auto["candidates"]]
    assert [(c["model"], c["method"]) for c in auto["candidates"]] == [
        ("linear", "reference"),
        ("linear", "maml"),
    ]
    assert all(np.isfinite(scores))
    best = auto["candidates"][int(np.argmin(scores))]
    assert (auto["chosen"]["model"], auto["chosen"]["method"]) == (best["model"], best["method"])
    assert f.method.name == best["method"] and "linear/reference" in auto["reason"]
    # a point estimate has no uncertainty about a new group's slope: the posterior wins
    assert scores[0] < scores[1]
    # the chosen run is an ordinary fitted run: it evaluates on test groups and saves
    tasks = f.held_out(k=3)
    assert np.isfinite(f.evaluate(tasks)["nll"])


@pytest.mark.parametrize(
    "second, chosen",
    [
        (lambda base, noise: base - 0.02 + 0.5 * noise, "reference"),  # lower mean, by noise
        (lambda base, noise: base - 0.3 + 0.01 * noise, "maml"),  # clearly better
    ],
)
def test_another_candidate_must_beat_the_classical_one_by_a_paired_margin(
    monkeypatch, second, chosen
):
    import bayesmeta.auto as auto

    rng = np.random.default_rng(0)
    base, noise = rng.normal(1.0, 0.2, 30), rng.normal(size=30)
    noise -= noise.mean()  # so that the second candidate's mean is lower by exactly the shift
    per_group = {"reference": base, "maml": second(base, noise)}

    class _Fit:
        def __init__(self, run):
            self.method = type("M", (), {"name": run.method})()
            self.info = {"steps": 1, "best_step": 1}

    monkeypatch.setattr(auto, "fit_run", lambda run, **_: _Fit(run))
    monkeypatch.setattr(auto, "_validation_nll", lambda f, run, seed: per_group[f.method.name])
    candidates = (("linear", "reference", {}), ("linear", "maml", {}))
    f = auto.fit_auto(_rows(), candidates=candidates, progress=False)
    rec = f.info["auto"]
    assert rec["chosen"]["method"] == chosen
    maml = rec["candidates"][1]
    assert maml["beats_first"] == (chosen == "maml") and maml["difference_se"] > 0
    if chosen == "reference":  # it had the lower mean, and still was not chosen
        assert maml["validation_nll"] < rec["candidates"][0]["validation_nll"]
        assert "no candidate beat" in rec["reason"]


def test_the_classical_model_is_the_first_candidate():
    assert CANDIDATES[0][:2] == ("linear", "reference")


def test_auto_refuses_what_it_cannot_choose_for():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(12), 6)
    labels = from_groups(rng.normal(size=(72, 2)), rng.integers(0, 3, 72), g, labels=True)
    with pytest.raises(UsageError, match="auto is for a real y"):
        fit_auto(labels, candidates=(("mlp", "maml", {}),))
    with pytest.raises(UsageError, match="data"):
        fit_auto(None)
    with pytest.raises(ValueError, match="auto"):
        bm.fit("auto", data=_rows(), steps=10)


@pytest.mark.slow
def test_auto_from_the_command_line_reports_in_data_units(tmp_path):
    from test_cli_data import COLS, _write

    from bayesmeta.cli import main

    csv_path = _write(tmp_path / "rows.csv")
    run, tasks, rep = tmp_path / "auto", tmp_path / "t.npz", tmp_path / "r.json"
    assert main(["fit", "auto", "--data", str(csv_path), *COLS, "--budget", "quick", "--quiet",
                 "--out", str(run)]) == 0  # fmt: skip
    info = json.loads((run / "run.json").read_text())
    assert len(info["auto"]["candidates"]) == len(CANDIDATES)
    assert main(["tasks", "--data", str(csv_path), *COLS, "--k", "3", "--out", str(tasks)]) == 0
    assert main(["evaluate", str(run), "--tasks", str(tasks), "--samples", "50", "--quiet",
                 "--out", str(rep)]) == 0  # fmt: skip
    report = json.loads(rep.read_text())
    assert report["units"] == "data" and "eb_linear" in report["baselines"]
    # auto is never worse than the classical model on the groups it chose on; on test groups
    # it stays close to it
    assert report["nll"] <= report["baselines"]["eb_linear"]["nll"] + 0.1
    assert main(["fit", "auto", "--method", "abml", "--data", str(csv_path), *COLS,
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
