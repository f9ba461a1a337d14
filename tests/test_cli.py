import json
import subprocess
import sys

import jax
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
                "--model",
                "models/sinusoid.py",
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
        (
            [
                "evaluate",
                "{run}",
                "--trust-model-file",
                "--tasks",
                "{tmp}/not_npz.npz",
                "--out",
                "{tmp}/r.json",
            ],
            "npz",
        ),
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


@pytest.mark.slow
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


# -- active learning ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pool") / "pool.npz"
    args = ["tasks", "sinusoid", "--k", "1", "--num-tasks", "5", "--queries", "10"]
    assert main([*args, "--pool", "12", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("refrun") / "ref"
    assert main(["fit", "sinusoid", "--method", "reference", "--out", str(run)]) == 0
    return run


def test_tasks_pool_layout(pool_file):
    data = load_tasks(pool_file)
    assert data["x_pool"].shape == (5, 12, 1) and data["y_pool"].shape == (5, 12, 1)
    assert data["x_support"].shape == (5, 1, 1) and data["x_query"].shape == (5, 10, 1)


def test_active_round_trip_starts_where_evaluate_ends(reference_run, pool_file, tmp_path):
    curve, report = tmp_path / "curve.json", tmp_path / "report.json"
    args = ["active", str(reference_run), "--tasks", str(pool_file), "--acquisition", "bald"]
    assert main([*args, "--queries", "3", "--out", str(curve)]) == 0
    c = json.loads(curve.read_text())
    assert c["acquisition"] == "bald" and c["method"] == "reference"
    assert c["n_labels"] == [1, 2, 3, 4] and c["n_queries"] == [0, 1, 2, 3]
    for k in ("nll", "nll_se", "mse", "mse_se"):
        assert len(c[k]) == 4 and np.all(np.isfinite(c[k]))
    assert c["n_tasks"] == 5 and c["pool_size"] == 12 and "accuracy" not in c
    # 0 labels acquired = the plain evaluation of the support sets
    assert (
        main(["evaluate", str(reference_run), "--tasks", str(pool_file), "--out", str(report)]) == 0
    )
    rep = json.loads(report.read_text())
    np.testing.assert_allclose([c["nll"][0], c["mse"][0]], [rep["nll"], rep["mse"]], rtol=1e-4)


def test_active_all_acquisitions_paired_against_random(fitted, pool_file, tmp_path):
    from bayesmeta.plots import learning_curves

    out = tmp_path / "all.json"
    args = [
        "active",
        str(fitted),
        "--model",
        "models/sinusoid.py",
        "--tasks",
        str(pool_file),
        "--acquisition",
        "all",
    ]
    assert main([*args, "--queries", "2", "--batch", "2", "--samples", "5", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["acquisition"] == "all" and rep["method"] == "maml" and rep["batch"] == 2
    assert set(rep["curves"]) == {"variance", "entropy", "bald", "random"}
    for name, c in rep["curves"].items():
        assert c["acquisition"] == name and c["n_labels"] == [1, 3, 5]
        assert c["mse"][0] == rep["curves"]["random"]["mse"][0]  # same start, paired
    assert "mse_vs_random_se" in rep["curves"]["bald"]
    assert "mse_vs_random" not in rep["curves"]["random"]
    np.testing.assert_allclose(rep["curves"]["bald"]["nll_vs_random"][0], 0.0)
    learning_curves(rep["curves"], "mse", tmp_path / "curves.png")


def _bad_pool_files(tmp_path, pool_file):
    from bayesmeta.tasks.io import save_tasks

    data = dict(load_tasks(pool_file))
    bad_dx = {**data, "x_pool": np.zeros((5, 12, 2), np.float32)}
    bad_p = {**data, "y_pool": data["y_pool"][:, :7]}
    save_tasks(tmp_path / "bad_dx.npz", bad_dx, validate=False)
    save_tasks(tmp_path / "bad_p.npz", bad_p, validate=False)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--tasks", "{tasks}", "--acquisition", "variance", "--queries", "2"], "x_pool"),
        (["--tasks", "{tmp}/bad_dx.npz", "--acquisition", "variance", "--queries", "2"], "x_pool"),
        (["--tasks", "{tmp}/bad_p.npz", "--acquisition", "variance", "--queries", "2"], "y_pool"),
        (["--tasks", "{pool}", "--acquisition", "curiosity", "--queries", "2"], "--acquisition"),
        (["--tasks", "{pool}", "--acquisition", "bald", "--queries", "0"], "--queries"),
        (["--tasks", "{pool}", "--acquisition", "bald", "--queries", "7", "--batch", "2"], "P=12"),
    ],
)
def test_active_bad_input_exits_2_with_one_line(
    extra, needle, tmp_path, task_file, pool_file, reference_run, capsys
):
    _bad_pool_files(tmp_path, pool_file)
    fmt = {"tmp": tmp_path, "tasks": task_file, "pool": pool_file}
    out = tmp_path / "curve.json"
    args = ["active", str(reference_run), *(a.format(**fmt) for a in extra), "--out", str(out)]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors (e.g. --queries 0)
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err, err
    assert "Traceback" not in err and not out.exists()
    if needle != "--queries":  # argparse adds a usage line before its own error line
        assert len(err.splitlines()) == 1


def test_active_cli_subprocess_exit_code(reference_run, task_file, tmp_path):
    out = tmp_path / "c.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bayesmeta.cli",
            "active",
            str(reference_run),
            "--tasks",
            str(task_file),
            "--acquisition",
            "random",
            "--queries",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "x_pool" in proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_resume_after_a_killed_process_reproduces_the_uninterrupted_run(tmp_path):
    # A real `bayesmeta fit` subprocess is killed (SIGKILL) right after its first checkpoint
    # (step 2500 of 5000); `fit --resume` then finishes it, and the parameters, optimiser state
    # and RNG key equal those of an uninterrupted run bit for bit.
    import time

    from bayesmeta.checkpoint import load_checkpoint

    args = ["fit", "sinusoid", "--method", "maml", "--steps", "5000", "--seed", "3", "--quiet"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main([*args, "--out", str(full)]) == 0
    code = "import sys; from bayesmeta.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, *args, "--out", str(killed)])
    ckpt = killed / "checkpoint.npz"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    step = load_checkpoint(ckpt)["step"]
    assert step == 2500, f"killed at step {step}"
    assert not (killed / "run.json").exists()  # it really did not finish
    assert main([*args, "--out", str(killed), "--resume"]) == 0
    a, b = load_checkpoint(full / "checkpoint.npz"), load_checkpoint(ckpt)
    assert a["step"] == b["step"] == 5000
    for x, y in zip(
        jax.tree_util.tree_leaves(a["arrays"]),
        jax.tree_util.tree_leaves(b["arrays"]),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Resuming a finished run is a no-op; resuming with other settings is refused.
    assert main([*args, "--out", str(killed), "--resume"]) == 0
    assert main(["fit", "sinusoid", "--method", "abml", "--steps", "5000", "--seed", "3",
                 "--quiet", "--out", str(killed), "--resume"]) == 2  # fmt: skip


def test_info_prints_versions_and_the_run(fitted, capsys):
    assert main(["info", str(fitted), "--trust-model-file"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["versions"]["jax"] and out["devices"]
    assert out["run"]["method"] == "maml" and out["run"]["step"] > 0


def test_bench_calibration_passes_its_options(monkeypatch, tmp_path, capsys):
    import bayesmeta.bench as bench

    seen = {}

    def fake(budget, **kw):
        seen.update(budget=budget, **kw)
        return [{"family": "circles"}]

    monkeypatch.setattr(bench, "run_calibration", fake)
    argv = ["bench", "calibration", "--families", "circles", "glyphs", "--methods", "maml"]
    argv += ["--seeds", "3", "--seconds", "5", "--out", str(tmp_path / "b"), "--quiet"]
    assert main(argv) == 0
    assert seen["budget"] == "small" and seen["families"] == ["circles", "glyphs"]
    assert seen["methods"] == ["maml"] and seen["seeds"] == [3] and seen["seconds"] == 5
    assert seen["out"] == str(tmp_path / "b") and seen["log"] is None
    assert "1 rows" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--families", "mnist"], "--families"),
        (["--methods", "reference"], "--methods"),
        (["--seconds", "0"], "--seconds"),
        (["--budget", "huge"], "--budget"),
    ],
)
def test_bench_rejects_bad_options(extra, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "calibration", *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0]


def test_version_flag(capsys):
    import bayesmeta

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"bayesmeta {bayesmeta.__version__}"


def test_a_bug_is_a_traceback_and_exit_1_not_bad_input(monkeypatch, tmp_path, capsys):
    # an error from inside a dependency (here NumPy) is not the user's input: exit 1, traceback
    import bayesmeta.modelfiles

    def broken(model, **kw):
        return np.linalg.inv(np.zeros((2, 3)))  # raises LinAlgError (a ValueError) in NumPy

    monkeypatch.setattr(bayesmeta.modelfiles, "load_model_spec", broken)
    code = main(["tasks", "sinusoid", "--k", "1", "--out", str(tmp_path / "t.npz")])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" in err and "internal error (LinAlgError)" in err
    # bayesmeta's own `raise` of a bad argument stays one line and exit 2
    monkeypatch.undo()
    assert main(["tasks", "no_such_model", "--k", "1", "--out", str(tmp_path / "t.npz")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_folder_named_like_a_builtin_model_does_not_shadow_it(tmp_path, monkeypatch):
    from bayesmeta.modelfiles import load_model_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sinusoid").mkdir()
    assert load_model_spec("sinusoid").source == "sinusoid"
    with pytest.raises(ValueError, match="no model file"):
        load_model_spec("./sinusoid")  # a path is a path
