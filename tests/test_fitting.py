"""The one fit path (bayesmeta.fitting): a Run fits the same θ whichever door it comes through,
saves and loads back whatever its model and data, and refuses what cannot be resumed."""

from __future__ import annotations

import importlib.util
import json

import jax
import numpy as np
import pytest
from test_runs import _line, _rows  # the same toy rows and NumPyro model

import bayesmeta as bm
from bayesmeta.cli import main
from bayesmeta.errors import UsageError
from bayesmeta.fitting import Run, fit_run
from bayesmeta.tasks.data import from_groups


def _theta(state):
    return jax.tree_util.tree_leaves(state.theta)


def _same(a, b):
    for x, y in zip(_theta(a), _theta(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_every_door_fits_the_same_theta(tmp_path):
    # the command line, the notebook, ModelSpec.fit and fit_run are one path
    kw = {"steps": 6, "seed": 3}
    direct = fit_run(Run("sinusoid", "maml", config={"chunk_size": 3}, **kw), progress=False)
    notebook = bm.fit("sinusoid", "maml", progress=False, chunk_size=3, **kw)
    _, res = bm.load_model_spec("sinusoid").fit("maml", seed=3, steps=6, chunk_size=3,
                                                progress=False)  # fmt: skip
    assert main(["fit", "sinusoid", "--method", "maml", "--steps", "6", "--seed", "3",
                 "--quiet", "--out", str(tmp_path / "cli")]) == 0  # fmt: skip
    cli = bm.load(tmp_path / "cli")
    for other in (notebook.state, res.state):
        _same(direct.state, other)
    # the CLI's recipe chunks differently; with the same chunking it is the same θ
    assert int(cli.state.step) == 6
    assert direct.manifest["model_kind"] == "builtin"
    assert direct.manifest == notebook.manifest


def test_a_run_saved_from_a_notebook_loads_back_whatever_its_model(tmp_path):
    rows = _rows()
    # a data model on rows held in memory (issue 41: this failed before)
    ref = bm.fit("linear", "reference", data=rows)
    run = ref.save(tmp_path / "ref")
    for loaded in (bm.load(run), bm.load(run, model="linear")):
        assert loaded.spec.name == "toy/linear" and loaded.method.name == "reference"
    assert main(["info", str(run)]) == 0
    # a NumPyro model function: load needs it again, and says so by its name
    f = bm.fit(_line, "maml", data=rows, steps=10, progress=False, meta_batch=4, chunk_size=5)
    own = f.save(tmp_path / "own")
    with pytest.raises(ValueError, match="model: .*'_line'.*pass it again"):
        bm.load(own)
    g = bm.load(own, model=_line)
    _same(f.state, g.state)
    tasks = f.held_out(k=3, num_tasks=4, num_query=4)
    assert g.evaluate(tasks)["nll"] == pytest.approx(f.evaluate(tasks)["nll"], abs=1e-6)
    # the CLI describes it from its manifest without the function
    assert main(["info", str(own)]) == 0


def test_a_changed_saved_data_file_is_refused(tmp_path):
    run = bm.fit("linear", "reference", data=_rows()).save(tmp_path / "ref")
    data = run / "data.npz"
    data.write_bytes(data.read_bytes()[:-7] + b"garbage")
    with pytest.raises(ValueError, match="data"):
        bm.load(run)


def test_resume_refuses_a_missing_directory_and_keeps_seconds(tmp_path, capsys):
    missing = tmp_path / "no" / "such"
    args = ["fit", "sinusoid", "--method", "maml", "--steps", "4", "--quiet", "--out"]
    assert main([*args, str(missing), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "no run directory" in err[0]
    assert not missing.exists()
    # an existing empty directory is a first start (a job array resubmitting with --resume)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args, str(empty), "--resume"]) == 0
    assert json.loads((empty / "run.json").read_text())["steps"] == 4
    with pytest.raises(UsageError, match="resume, force"):
        fit_run(Run("sinusoid", "maml", steps=2), resume=True)


def test_a_notebook_evaluation_of_a_data_fit_is_the_command_lines(tmp_path):
    # issue 42 item 7: fitted.evaluate reports in the data's own units, with the linear
    # baselines and paired differences, and agrees with `bayesmeta evaluate` on the same tasks
    from bayesmeta.scoring import evaluate_run
    from bayesmeta.tasks.io import save_tasks

    toy = _rows()
    rows = from_groups(toy.x * 3 + 10, 50 + 5 * toy.y, toy.groups, name="toy")
    fitted = bm.fit("linear", "reference", data=rows)
    tasks = fitted.held_out(k=3)  # standardised, as the fit sees them
    report = fitted.evaluate(tasks)
    assert report["units"] == "data" and {"pooled_linear", "eb_linear"} <= set(report["baselines"])
    assert "diff_se" in report["baselines"]["eb_linear"]
    if importlib.util.find_spec("statsmodels") is not None:  # the data extra
        mixed = report["baselines"]["mixed_model"]
        assert mixed["structure"] and abs(mixed["nll"] - report["nll"]) < 0.1
    scaler = fitted.spec.splits.scaler
    raw = {
        "x_support": np.asarray(tasks["x_support"]) * scaler.x_scale + scaler.x_mean,
        "x_query": np.asarray(tasks["x_query"]) * scaler.x_scale + scaler.x_mean,
        "y_support": scaler.inverse_y(tasks["y_support"]),
        "y_query": scaler.inverse_y(tasks["y_query"]),
        "mask_query": tasks["mask_query"],
    }
    save_tasks(tmp_path / "t.npz", {k: np.asarray(v, np.float32) for k, v in raw.items()})
    fitted.save(tmp_path / "run")
    cli = evaluate_run(str(tmp_path / "run"), str(tmp_path / "t.npz"), str(tmp_path / "r.json"),
                       samples=100, quiet=True)  # fmt: skip
    from_file = fitted.evaluate(tmp_path / "t.npz")  # a task file: the data's own units
    with pytest.raises(ValueError, match="units: this task set does not say its units"):
        fitted.evaluate(dict(tasks))  # a plain dict on a data fit: which units?
    in_data_units = fitted.evaluate(raw, units="data")
    for rep in (cli, from_file, in_data_units):
        assert rep["nll"] == pytest.approx(report["nll"], abs=1e-4)
        assert rep["baselines"]["eb_linear"]["nll"] == pytest.approx(
            report["baselines"]["eb_linear"]["nll"], abs=1e-4
        )


def test_a_fitted_run_prints_in_one_line():
    fitted = bm.fit("linear", "reference", data=_rows())
    text = repr(fitted)
    assert text.startswith("Fitted(model='toy/linear', method='reference'") and "\n" not in text
    assert len(text) < 200


def test_validation_in_batches_with_a_ragged_last_batch_is_the_unbatched_score(monkeypatch):
    # a validation split whose eligible groups are not a multiple of the batch: the last batch
    # is padded and its padding is not scored (before: a reshape error, fit --data exited 1
    # whenever more than one batch of validation groups was not a whole number of batches)
    import bayesmeta.fitting as fitting

    run = Run("linear", "maml", _rows(), steps=1)
    method, cfg = run.built
    state = method.init(jax.random.PRNGKey(0))
    whole = fitting.default_validator(run.spec, cfg, 0)(method)(state)
    monkeypatch.setattr(fitting, "VALIDATION_BATCH", 3)  # 4 groups: a ragged last batch
    ragged = fitting.default_validator(run.spec, cfg, 0)(method)(state)
    assert ragged == pytest.approx(whole, rel=1e-5)


def test_check_run_dir_refuses_what_cannot_take_a_new_run(tmp_path):
    """One check for every fit that writes a run directory (fit_run, the search, auto)."""
    from bayesmeta.fitting import check_run_dir

    assert check_run_dir(tmp_path / "new") == []
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(UsageError, match="pass --resume to continue it or --force"):
        check_run_dir(tmp_path)
    with pytest.raises(UsageError, match=r"already holds a run \(run.json\); pass --force to"):
        check_run_dir(tmp_path, resumable=False)
    assert check_run_dir(tmp_path, force=True) == ["run.json"]
    with pytest.raises(UsageError, match="--force: replaces the run in RUN_DIR"):
        check_run_dir(tmp_path, resume=True, force=True)
    with pytest.raises(UsageError, match="--resume: no run directory"):
        check_run_dir(tmp_path / "missing", resume=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="--out: expected a directory"):
        check_run_dir(tmp_path / "file" / "run")
