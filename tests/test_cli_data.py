"""`bayesmeta fit/tasks/evaluate --data`: the user's own grouped rows end to end, in the data's
own units, with one-line errors for bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bayesmeta.cli import main
from bayesmeta.tasks.io import load_tasks

COLS = ["--group", "site", "--x", "a,b", "--y", "target"]


def _write(path: Path, scale: float = 1.0, shift: float = 0.0, nan_row: int | None = None):
    """Ragged groups of a random-slope linear model; y = scale * y0 + shift."""
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "a", "b", "target", "note"])
        row = 0
        for g in range(30):
            slope = rng.normal(1.0, 0.5)
            for _ in range(int(rng.integers(4, 14))):
                a, b = rng.normal(), rng.normal()
                y = slope * a - 0.5 * b + rng.normal(0, 0.3)
                y = "nan" if row == nan_row else scale * y + shift
                w.writerow([f"s{g:02d}", a, b, y, "x"])
                row += 1
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    base = tmp_path_factory.mktemp("data")
    out = {}
    for name, scale, shift in (("raw", 1.0, 0.0), ("scaled", 10.0, 5.0)):
        csv_path = _write(base / f"{name}.csv", scale, shift)
        run, tasks, rep = base / f"run_{name}", base / f"tasks_{name}.npz", base / f"{name}.json"
        assert main(["fit", "linear", "--method", "maml", "--data", str(csv_path), *COLS,
                     "--steps", "30", "--quiet", "--out", str(run)]) == 0  # fmt: skip
        assert main(["tasks", "--data", str(csv_path), *COLS, "--split", "test", "--k", "3",
                     "--out", str(tasks)]) == 0  # fmt: skip
        assert main(["evaluate", str(run), "--tasks", str(tasks), "--samples", "20",
                     "--out", str(rep), "--quiet"]) == 0  # fmt: skip
        out[name] = (csv_path, run, tasks, json.loads(rep.read_text()))
    return base, out


def test_reports_are_in_the_datas_own_units(fitted):
    # The same rows with y -> 10 y + 5 standardise to the same numbers, so the same seed trains
    # the same θ: NLL per point moves by log 10, MSE by 100, coverage not at all.
    _, runs = fitted
    a, b = runs["raw"][3], runs["scaled"][3]
    assert a["units"] == b["units"] == "data"
    assert b["nll"] == pytest.approx(a["nll"] + np.log(10.0), abs=2e-3)
    assert b["mse"] == pytest.approx(100 * a["mse"], rel=2e-3)
    assert b["coverage"] == pytest.approx(a["coverage"], abs=1e-6)
    # the linear baselines, in the same units and on the same tasks
    for name in ("pooled_linear", "eb_linear"):
        assert b["baselines"][name]["nll"] == pytest.approx(
            a["baselines"][name]["nll"] + np.log(10.0), abs=1e-6
        )
    # standard errors over tasks move with nothing but the tasks; the paired one is given
    assert b["nll_se"] == pytest.approx(a["nll_se"], abs=1e-3) and a["nll_se"] > 0
    assert len(a["nll_per_task"]) == a["n_tasks"]
    assert a["baselines"]["eb_linear"]["diff_se"] > 0
    # random slopes per site: the per-group posterior beats ignoring the groups
    assert a["baselines"]["eb_linear"]["nll"] < a["baselines"]["pooled_linear"]["nll"]


def test_task_file_is_one_task_per_test_group_with_masked_queries(fitted):
    _, runs = fitted
    csv_path, run, tasks_path, report = runs["raw"]
    tasks = load_tasks(tasks_path)
    mask = tasks["mask_query"]
    assert tasks["x_support"].shape[1:] == (3, 2) and mask.shape == tasks["x_query"].shape[:2]
    assert report["n_points"] == int(mask.sum()) and report["n_tasks"] == mask.shape[0]
    assert (mask.sum(1) >= 2).all() and (mask.sum(1) < mask.shape[1]).any()  # ragged
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["model"].endswith("/linear")
    # validated on the validation groups at the start and after every chunk; the best state
    # is kept
    hist = manifest["history"]
    assert hist["validation_step"] == [0, *hist["step"]]
    assert len(hist["validation_nll"]) == len(hist["step"]) + 1
    assert manifest["best_step"] in hist["validation_step"]
    assert (run / "best.npz").is_file()
    # test groups are not training groups: the run's split is recorded and reproducible
    with np.load(run / "checkpoint.npz", allow_pickle=False) as f:
        m = json.loads(str(f["__manifest__"]))
    assert m["data"]["split_seed"] == 0 and m["data"]["x"] == ["a", "b"]
    assert set(m["scaler"]) == {"x_mean", "x_scale", "y_mean", "y_scale"}


def test_resumed_data_run_continues_its_history_and_best_state(fitted, tmp_path, monkeypatch):
    # Chunks of 10 steps (a checkpoint every 10 chunks); the first process scores its start,
    # then dies while validating chunk 11, the second (resumed) while validating chunk 21, the
    # third finishes:
    # history, seconds and best state span the whole run through both interruptions.
    import bayesmeta.datamodels as datamodels
    import bayesmeta.fitting as fitting

    recipes = datamodels.fixed_step_recipes
    monkeypatch.setattr(datamodels, "fixed_step_recipes",
                        lambda n, **kw: recipes(n, chunk_size=10, **kw))  # fmt: skip
    validation = fitting.default_validator
    calls = []

    def dying(*a, **kw):
        make = validation(*a, **kw)

        def make_dying(method):
            score = make(method)

            def v(state):
                calls.append(int(state.step))
                if len(calls) in (12, 23):
                    raise KeyboardInterrupt
                return score(state)

            return v

        return make_dying

    monkeypatch.setattr(fitting, "default_validator", dying)
    csv_path, run = fitted[1]["raw"][0], tmp_path / "run"
    args = ["fit", "linear", "--method", "maml", "--data", str(csv_path), *COLS, "--quiet",
            "--steps", "300", "--out", str(run)]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert not (run / "run.json").exists()
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--resume"])
    assert calls[12] == 110, calls  # the second process resumed from the step-100 checkpoint
    assert main([*args, "--resume"]) == 0
    assert calls[23] == 210, calls  # the third from the step-200 checkpoint
    info = json.loads((run / "run.json").read_text())
    assert info["history"]["step"] == list(range(10, 310, 10))
    # the start is scored once, by the first process, not again on resuming
    assert info["history"]["validation_step"] == list(range(0, 310, 10))
    assert len(info["history"]["validation_nll"]) == 31
    seconds = info["history"]["seconds"]
    assert all(b > a for a, b in zip(seconds, seconds[1:], strict=False)), seconds
    assert info["train_seconds"] >= seconds[-1] * 0.5
    assert info["best_validation_nll"] == min(info["history"]["validation_nll"])
    with np.load(run / "best.npz", allow_pickle=False) as f:
        best = json.loads(str(f["__manifest__"]))
    assert best["validation_nll"] == info["best_validation_nll"]
    assert best["step"] == info["best_step"]


def test_changed_data_file_is_refused(fitted, tmp_path, capsys):
    base, runs = fitted
    csv_path, run, tasks, _ = runs["raw"]
    raw = csv_path.read_bytes()
    try:
        csv_path.write_bytes(raw + b"s99,0,0,0,x\r\n")
        assert main(["evaluate", str(run), "--tasks", str(tasks), "--out",
                     str(tmp_path / "r.json")]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "the data file has changed since the run" in err[0]
    finally:
        csv_path.write_bytes(raw)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--group", "site", "--x", "a,zz", "--y", "target"], "--x: no column 'zz'"),
        (
            ["--group", "site", "--x", "a,note", "--y", "target"],
            "--x: column 'note' is not numeric",
        ),
        (["--group", "site", "--x", "a"], "--y: a CSV needs"),
        (["--group", "site", "--x", "a", "--y", "target", "--nan"], "y: expected finite values"),
    ],
)
def test_bad_data_exits_2_with_one_line(fitted, tmp_path, capsys, args, needle):
    base, _ = fitted
    path = base / "raw.csv"
    if "--nan" in args:
        args = [a for a in args if a != "--nan"]
        path = _write(tmp_path / "nan.csv", nan_row=7)
    out = tmp_path / "run"
    assert main(["fit", "mlp", "--method", "maml", "--data", str(path), *args,
                 "--steps", "2", "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_small_groups_are_named_and_can_be_left_out(fitted, tmp_path, capsys):
    base, _ = fitted
    args = ["tasks", "--data", str(base / "raw.csv"), *COLS, "--split", "train", "--k", "8"]
    assert main([*args, "--out", str(tmp_path / "t.npz")]) == 2
    err = capsys.readouterr().err
    assert "have fewer than K + 1 = 9 rows" in err and "--min-group-size" in err
    assert not (tmp_path / "t.npz").exists()
    assert main([*args, "--min-group-size", "9", "--out", str(tmp_path / "t.npz")]) == 0
    assert (load_tasks(tmp_path / "t.npz")["mask_query"].sum(1) >= 1).all()


def test_a_task_file_of_another_dx_is_refused(fitted, tmp_path, capsys):
    _, runs = fitted
    other = tmp_path / "sin.npz"
    assert main(["tasks", "sinusoid", "--k", "3", "--num-tasks", "2", "--out", str(other)]) == 0
    assert main(["evaluate", str(runs["raw"][1]), "--tasks", str(other), "--out",
                 str(tmp_path / "r.json")]) == 2  # fmt: skip
    assert "Dx=2" in capsys.readouterr().err


def test_column_flags_need_data(tmp_path, capsys):
    assert main(["tasks", "sinusoid", "--x", "a", "--out", str(tmp_path / "t.npz")]) == 2
    assert "--x: only with --data FILE" in capsys.readouterr().err


def test_class_labels_from_a_csv_by_name(tmp_path):
    # --labels: named classes are coded in sorted order; the run is categorical end to end.
    rng = np.random.default_rng(1)
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user", "u", "v", "kind"])
        for g in range(16):
            centre = rng.normal(0, 2, size=(3, 2))
            for _ in range(10):
                c = int(rng.integers(3))
                u, v = centre[c] + rng.normal(0, 0.3, 2)
                w.writerow([g, u, v, ["ant", "bee", "cat"][c]])
    cols = ["--group", "user", "--x", "u,v", "--y", "kind", "--labels"]
    run, tasks, rep = tmp_path / "run", tmp_path / "t.npz", tmp_path / "r.json"
    assert main(["fit", "mlp", "--method", "maml", "--data", str(path), *cols, "--steps", "20",
                 "--quiet", "--out", str(run)]) == 0  # fmt: skip
    assert main(["tasks", "--data", str(path), *cols, "--split", "test", "--k", "3",
                 "--out", str(tasks)]) == 0  # fmt: skip
    t = load_tasks(tasks)
    assert t["y_support"].dtype.kind == "i" and set(np.unique(t["y_query"])) <= {0, 1, 2}
    assert main(["evaluate", str(run), "--tasks", str(tasks), "--samples", "10", "--out",
                 str(rep), "--quiet"]) == 0  # fmt: skip
    report = json.loads(rep.read_text())
    assert 0.0 <= report["accuracy"] <= 1.0 and np.isfinite(report["nll"])
    # without --labels the same column is not numeric: one line naming it
    assert main(["tasks", "--data", str(path), *cols[:-1], "--split", "test", "--k", "3",
                 "--out", str(tmp_path / "u.npz")]) == 2  # fmt: skip


def test_linear_reference_on_data_is_the_empirical_bayes_baseline(fitted, tmp_path):
    # `fit linear --method reference`: nothing to train; its report is the baseline's posterior
    base, runs = fitted
    csv_path, _, tasks, _ = runs["raw"]
    run, rep = tmp_path / "ref", tmp_path / "ref.json"
    assert main(["fit", "linear", "--method", "reference", "--data", str(csv_path), *COLS,
                 "--quiet", "--out", str(run)]) == 0  # fmt: skip
    assert main(["evaluate", str(run), "--tasks", str(tasks), "--samples", "1000",
                 "--out", str(rep), "--quiet"]) == 0  # fmt: skip
    report = json.loads(rep.read_text())
    assert report["units"] == "data"
    assert report["nll"] == pytest.approx(report["baselines"]["eb_linear"]["nll"], abs=0.02)
    assert report["nll"] < report["baselines"]["pooled_linear"]["nll"]
    # mlp has no exact reference on data: a named error, exit 2
    assert main(["fit", "mlp", "--method", "reference", "--data", str(csv_path), *COLS,
                 "--quiet", "--out", str(tmp_path / "no")]) == 2  # fmt: skip


def test_a_notebook_saved_data_run_reports_in_data_units_from_the_cli(fitted, tmp_path):
    # The same rows through the CLI and through a notebook (rows held in memory, saved with
    # Fitted.save): the same θ, and `bayesmeta evaluate` reports both in the data's units.
    import bayesmeta as bm
    from bayesmeta.tasks.data import from_csv

    csv_path, cli_run, tasks, cli_rep = fitted[1]["raw"]
    rows = from_csv(csv_path, x=["a", "b"], y="target", group="site")
    f = bm.fit("linear", "maml", data=rows, steps=30, progress=False)
    run = f.save(tmp_path / "nb")
    assert (run / "data.npz").is_file()  # the rows travel with the run
    rep = tmp_path / "nb.json"
    assert main(["evaluate", str(run), "--tasks", str(tasks), "--samples", "20",
                 "--out", str(rep), "--quiet"]) == 0  # fmt: skip
    nb = json.loads(rep.read_text())
    assert nb["units"] == "data" and {"pooled_linear", "eb_linear"} <= set(nb["baselines"])
    assert nb["baselines"]["eb_linear"]["nll"] == pytest.approx(
        cli_rep["baselines"]["eb_linear"]["nll"], abs=1e-6
    )
    assert nb["nll"] == pytest.approx(cli_rep["nll"], abs=2e-3)
    # and `info` reads it, from its run.json and checkpoint
    assert main(["info", str(run)]) == 0
    # the other way: the CLI's run loads into a notebook with its data
    g = bm.load(cli_run)
    assert g.spec.splits is not None and g.info["model_kind"] == "data"
    held = g.held_out(k=3, num_tasks=4, num_query=2)
    assert np.isfinite(g.evaluate(held)["nll"])


# -- ask/tell: `bayesmeta active RUN --data FILE --group-id G --suggest N` ---------------------
def _ask_file(path: Path, told: dict[int, float] | None = None) -> tuple[Path, list[int]]:
    """Group 'new' with 2 labelled rows and 7 with an empty target (``told``: row i's y),
    between rows of other groups; returns the file and the candidates' line numbers."""
    rng = np.random.default_rng(5)
    told = told or {}
    lines, line = [], 2  # the header is line 1
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "a", "b", "target", "note"])
        w.writerow(["s00", 0.1, 0.2, "", "x"])  # another group's empty row: not a candidate
        line += 1
        for i in range(9):
            a, b = rng.normal(size=2)
            y = 1.2 * a - 0.5 * b if i < 2 else told.get(line, "")
            if i >= 2 and line not in told:
                lines.append(line)
            w.writerow(["new", a, b, y, "x"])
            line += 1
        w.writerow(["full", 0.3, 0.3, 1.0, "x"])
    return path, lines


@pytest.fixture(scope="module")
def ask_run(tmp_path_factory):
    """The exact linear reference fitted on a CSV (nothing to train): a posterior with spread."""
    base = tmp_path_factory.mktemp("ask")
    csv_path, run = _write(base / "train.csv"), base / "ref"
    assert main(["fit", "linear", "--method", "reference", "--data", str(csv_path), *COLS,
                 "--quiet", "--out", str(run)]) == 0  # fmt: skip
    return run


def test_ask_tell_round_trip_through_the_file(ask_run, tmp_path, capsys):
    import warnings

    import jax

    import bayesmeta as bm
    from bayesmeta.scoring import _ask_tell_rows

    ask, lines = _ask_file(tmp_path / "ask.csv")
    out = tmp_path / "next.csv"
    capsys.readouterr()
    # the columns default to the run's own (site / a,b / target)
    assert main(["active", str(ask_run), "--data", str(ask), "--group-id", "new", "--suggest",
                 "3", "--seed", "1", "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert "3 of 7 candidate rows by bald (support K=2)" in printed[0] and len(printed) == 6
    with open(out, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [r["rank"] for r in got] == ["1", "2", "3"] and list(got[0]) == [
        "rank", "line", "a", "b", "score"]  # fmt: skip
    scores = [float(r["score"]) for r in got]
    assert scores == sorted(scores, reverse=True)
    assert {int(r["line"]) for r in got} <= set(lines)
    # the notebook loop on the same rows and key ranks them the same, in the data's units
    rows = _ask_tell_rows(str(ask), ["a", "b"], "target", "site", "new", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loop = bm.load(ask_run).active(
            rows["x_support"], rows["y_support"], rows["x_candidates"], "bald",
            key=jax.random.PRNGKey(1),
        )  # fmt: skip
    best = loop.suggest(3)
    assert [int(r["line"]) for r in got] == [lines[i] for i in best]
    np.testing.assert_allclose(scores, loop.scores[best], rtol=1e-5)
    for r, i in zip(got, best, strict=True):
        np.testing.assert_allclose([float(r["a"]), float(r["b"])], rows["x_candidates"][i])
    # tell: the person fills in the top row's target; the next call reads it back
    top = int(got[0]["line"])
    ask, _ = _ask_file(tmp_path / "ask.csv", told={top: 0.7})
    rep_path = tmp_path / "next.json"
    again = ["active", str(ask_run), "--data", str(ask), *COLS, "--group-id", "new"]
    assert main([*again, "--suggest", "6", "--acquisition", "variance",
                 "--out", str(rep_path)]) == 0  # fmt: skip
    rep = json.loads(rep_path.read_text())
    assert rep["support_size"] == 3 and top in rep["support_lines"] and rep["candidates"] == 6
    assert top not in [s["line"] for s in rep["suggestions"]] and len(rep["suggestions"]) == 6
    assert rep["suggestions"][0]["rank"] == 1 and set(rep["suggestions"][0]["x"]) == {"a", "b"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--group-id", "nobody", "--suggest", "1"], "--group-id: no rows of group 'nobody'"),
        (["--group-id", "full", "--suggest", "1"], "--group-id: group 'full' has no candidate"),
        (["--group-id", "new", "--suggest", "0"], "--suggest"),
        (["--group-id", "new", "--suggest", "8"], "--suggest: expected at most the 7"),
        (["--group-id", "new", "--suggest", "1", "--x", "a,zz"], "--x: no column 'zz'"),
        (["--group-id", "new", "--suggest", "1", "--x", "a"], "--x: the run's model"),
        (["--group-id", "new", "--suggest", "1", "--y", "note"], "--y: column 'note' is not"),
        (["--group-id", "new", "--suggest", "1", "--tasks", "t.npz"], "--tasks: not with --data"),
        (["--group-id", "new"], "--suggest: required with --data"),
        (["--suggest", "1"], "--group-id: required with --data"),
        (["--group-id", "new", "--suggest", "1", "--out", "{tmp}/s.txt"], "--out: expected a"),
        (["--group-id", "new", "--suggest", "1", "--acquisition", "all"], "--acquisition"),
        (["--group-id", "new", "--suggest", "1", "--data", "{tmp}/none.csv"], "--data: no file"),
        (["--suggest", "1", "--no-data"], "--suggest: only with --data FILE"),
        (
            ["--group-id", "new", "--suggest", "1", "--cost", "note"],
            "--cost: expected a positive number in column 'note' for each candidate row, got 'x'",
        ),
        (["--group-id", "new", "--suggest", "1", "--cost", "price"], "--cost: no column 'price'"),
        (
            ["--group-id", "new", "--suggest", "2", "--cost", "a", "--acquisition", "entropy"],
            "--cost: expected a positive number in column 'a'",
        ),
    ],
)
def test_ask_tell_bad_input_exits_2_with_one_line(ask_run, tmp_path, capsys, args, needle):
    ask, _ = _ask_file(tmp_path / "ask.csv")
    out = tmp_path / "s.csv"
    args = [a.format(tmp=tmp_path) for a in args]
    data = [] if "--no-data" in args else ["--data", str(ask)]
    args = [a for a in args if a != "--no-data"]
    if "--out" not in args:
        args += ["--out", str(out)]
    capsys.readouterr()
    try:
        code = main(["active", str(ask_run), *data, *args])
    except SystemExit as exc:  # argparse's own (--suggest 0)
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists() and not (tmp_path / "s.txt").exists()


def test_ask_tell_with_a_cost_column_ranks_by_score_per_unit_cost(ask_run, tmp_path, capsys):
    """The most informative candidate priced a thousand times the others drops out of the
    top; the printed table, the CSV and the JSON carry each suggestion's cost."""
    ask, lines = _ask_file(tmp_path / "ask.csv")
    base = ["active", str(ask_run), "--data", "", "--group-id", "new", "--seed", "1"]
    first = tmp_path / "first.json"
    assert main([*base[:3], str(ask), *base[4:], "--suggest", "1", "--out", str(first)]) == 0
    top = json.loads(first.read_text())["suggestions"][0]["line"]
    with open(ask, newline="") as fh:
        rows = list(csv.reader(fh))
    rows[0].append("price")
    for i, r in enumerate(rows[1:], start=2):
        r.append("1000" if i == top else "2.5")
    priced = tmp_path / "priced.csv"
    with open(priced, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    out = tmp_path / "next.csv"
    capsys.readouterr()
    assert main([*base[:3], str(priced), *base[4:], "--suggest", "3", "--cost", "price",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert "best first per unit of 'price':" in printed[0] and printed[1].split()[-1] == "cost"
    with open(out, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert list(got[0])[-1] == "cost" and {r["cost"] for r in got} == {"2.5"}
    assert top not in [int(r["line"]) for r in got]
    assert {int(r["line"]) for r in got} <= set(lines)
