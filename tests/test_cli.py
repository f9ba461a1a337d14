import json
import subprocess
import sys

import numpy as np
import pytest

from bayesmeta.cli import main
from bayesmeta.tasks.io import load_tasks


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tasks") / "tasks.npz"
    assert (
        main(
            [
                "tasks",
                "sinusoid",
                "--k",
                "3",
                "--num-tasks",
                "6",
                "--queries",
                "8",
                "--out",
                str(path),
            ]
        )
        == 0
    )
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "maml"
    assert (
        main(
            [
                "fit",
                "models/sinusoid.py",
                "--method",
                "maml",
                "--steps",
                "20",
                "--quiet",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    return run


def test_tasks_file_has_design_layout(task_file):
    data = load_tasks(task_file)
    assert data["x_support"].shape == (6, 3, 1)
    assert data["y_query"].shape == (6, 8, 1)


def test_fit_evaluate_round_trip(fitted, task_file, tmp_path):
    info = json.loads((fitted / "run.json").read_text())
    assert info["steps"] == 20 and info["method"] == "maml"
    report, pred = tmp_path / "report.json", tmp_path / "pred.npz"
    assert (
        main(
            [
                "evaluate",
                str(fitted),
                "--tasks",
                str(task_file),
                "--samples",
                "7",
                "--out",
                str(report),
                "--predictive",
                str(pred),
            ]
        )
        == 0
    )
    rep = json.loads(report.read_text())
    for k in ("method", "n_tasks", "nll", "mse", "calibration_error", "coverage"):
        assert k in rep
    assert rep["n_tasks"] == 6 and set(rep["coverage"]) == {"0.5", "0.8", "0.9", "0.95"}
    arrays = np.load(pred)
    assert arrays["log_predictive"].shape == (6, 8)
    assert arrays["mean"].shape == (6, 8, 1) and arrays["samples"].shape == (6, 7, 8, 1)
    np.testing.assert_allclose(-arrays["log_predictive"].mean(), rep["nll"], rtol=1e-5)


def test_reference_run_evaluates_to_the_oracle(task_file, tmp_path):
    run = tmp_path / "ref"
    assert main(["fit", "sinusoid", "--method", "reference", "--out", str(run)]) == 0
    out = tmp_path / "r.json"
    assert main(["evaluate", str(run), "--tasks", str(task_file), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["method"] == "reference"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["fit", "sinusoid", "--method", "nope", "--out", "{tmp}/x"], "--method"),
        (["fit", "sinusoid", "--method", "maml", "--steps", "0", "--out", "{tmp}/x"], "--steps"),
        (["fit", "no_such_model", "--method", "maml", "--out", "{tmp}/x"], "MODEL"),
        (["evaluate", "{tmp}/missing", "--tasks", "{tasks}", "--out", "{tmp}/r.json"], "RUN_DIR"),
        (["evaluate", "{run}", "--tasks", "{tmp}/not_npz.npz", "--out", "{tmp}/r.json"], "npz"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, needle, tmp_path, task_file, fitted):
    (tmp_path / "not_npz.npz").write_text("hello")
    args = [a.format(tmp=tmp_path, tasks=task_file, run=fitted) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "bayesmeta.cli", *args], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_abml_fit_evaluate_round_trip(task_file, tmp_path):
    run = tmp_path / "abml"
    assert (
        main(["fit", "sinusoid", "--method", "abml", "--steps", "5", "--quiet", "--out", str(run)])
        == 0
    )
    out = tmp_path / "a.json"
    assert (
        main(
            ["evaluate", str(run), "--tasks", str(task_file), "--samples", "50", "--out", str(out)]
        )
        == 0
    )
    rep = json.loads(out.read_text())
    assert rep["method"] == "abml" and rep["samples"] == 50
    assert 0.0 <= rep["coverage"]["0.9"] <= 1.0 and np.isfinite(rep["nll"])
