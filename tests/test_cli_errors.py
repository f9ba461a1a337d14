"""Every bad input to the CLI gets one clear error (issue 8).

One table: each case is a command line with placeholders and a needle that the error must
name (the offending argument or key). Every case must exit with status 2, print exactly one
line on stderr (no traceback) and nothing on stdout, and leave no file behind: neither the
requested output nor a temporary (the fixture directory and the test's own directory are
compared before and after).

Fixtures are built once per module: a sinusoid and a circles run (MAML, 5 steps), a good task
file of each with a pool, and bad task files and run directories derived from them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bayesmeta.cli import main
from bayesmeta.tasks.io import load_tasks

T, K, Q, P = 3, 2, 4, 5


def _run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return exc.code


def _snapshot(*dirs: Path) -> set[str]:
    return {str(p) for d in dirs for p in d.rglob("*")}


# -- fixtures ---------------------------------------------------------------------------------
def _nan_at(a, value=np.nan):
    a = np.array(a, dtype=np.float32)
    a.flat[a.size // 2] = value
    return a


def _bad_task_files(data: dict, classification: bool) -> dict[str, dict]:
    """name -> arrays, each derived from a good pool task file by one change."""

    def change(**kw):
        out = dict(data)
        for key, val in kw.items():
            if val is None:
                out.pop(key)
            else:
                out[key] = val(out[key]) if callable(val) else val
        return out

    bad: dict[str, dict] = {}
    for key in ("x_support", "x_query", "x_pool"):
        bad[f"nan_{key}"] = change(**{key: _nan_at})
    bad["inf_x_support"] = change(x_support=lambda a: _nan_at(a, np.inf))
    for key in ("x_support", "y_support", "x_query", "y_query"):
        bad[f"missing_{key}"] = change(**{key: None})
    bad["missing_y_pool"] = change(y_pool=None)
    bad["no_pool"] = change(x_pool=None, y_pool=None)
    bad["rank_x_support"] = change(x_support=lambda a: a[..., 0])
    bad["rank_x_query"] = change(x_query=lambda a: a[None])
    bad["rank_x_pool"] = change(x_pool=lambda a: a[..., 0])
    bad["tasks_y_support"] = change(y_support=lambda a: a[:-1])
    bad["tasks_x_query"] = change(x_query=lambda a: a[:-1])
    bad["tasks_y_pool"] = change(y_pool=lambda a: a[:-1])
    bad["k_y_support"] = change(y_support=lambda a: a[:, :-1])
    bad["q_y_query"] = change(y_query=lambda a: a[:, :-1])
    bad["empty_support"] = change(x_support=lambda a: a[:, :0], y_support=lambda a: a[:, :0])
    bad["empty_tasks"] = {k: v[:0] for k, v in data.items()}
    bad["dx_query"] = change(x_query=lambda a: np.concatenate([a, a], axis=-1))
    bad["dtype_x_support"] = change(x_support=lambda a: a.astype(str))
    bad["huge_x_query"] = change(x_query=lambda a: np.full(a.shape, 1e300))
    if classification:
        for key in ("y_support", "y_query", "y_pool"):
            bad[f"label_high_{key}"] = change(**{key: lambda a: np.where(a == a, 2, a)})
        bad["label_negative"] = change(y_query=lambda a: a - 1)
        bad["float_labels_support"] = change(y_support=lambda a: a.astype(np.float32))
        bad["float_labels_query"] = change(y_query=lambda a: a.astype(np.float64) + 0.5)
        bad["onehot_labels"] = change(y_support=lambda a: np.eye(2, dtype=np.float32)[a])
    else:
        for key in ("y_support", "y_query", "y_pool"):
            bad[f"nan_{key}"] = change(**{key: _nan_at})
        bad["inf_y_query"] = change(y_query=lambda a: _nan_at(a, -np.inf))
        bad["rank_y_support"] = change(y_support=lambda a: a[..., 0])
        bad["rank_y_query"] = change(y_query=lambda a: a[..., 0])
        bad["dx_all"] = change(
            **{
                k: (lambda a: np.concatenate([a, a], -1))
                for k in ("x_support", "x_query", "x_pool")
            }
        )
        bad["dy_all"] = change(
            **{
                k: (lambda a: np.concatenate([a, a], -1))
                for k in ("y_support", "y_query", "y_pool")
            }
        )
        bad["int_labels_regression"] = change(
            y_support=lambda a: np.zeros(a.shape[:2], np.int32),
            y_query=lambda a: np.zeros(a.shape[:2], np.int32),
            y_pool=lambda a: np.zeros(a.shape[:2], np.int32),
        )
    return bad


def _bad_run_dirs(good: Path, base: Path) -> dict[str, Path]:
    """name -> a run directory derived from a good sinusoid run by one corruption."""
    raw = (good / "checkpoint.npz").read_bytes()
    with np.load(good / "checkpoint.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    manifest = json.loads(str(arrays.pop("__manifest__")))
    mu = "state.theta['mu']"

    def variant(name: str, data: bytes | None) -> Path:
        d = base / f"run_{name}"
        d.mkdir()
        if data is not None:
            (d / "checkpoint.npz").write_bytes(data)
        return d

    def dump(drop=(), manifest_text=None, **kw) -> bytes:
        """The good checkpoint with manifest fields (or, for state.* names, arrays) replaced."""
        a = {k: v for k, v in arrays.items() if not any(k.startswith(d) for d in drop)}
        m = dict(manifest)
        for k, v in kw.items():
            if k.startswith("state"):
                a[k] = v
            else:
                m[k] = v
        buf = io.BytesIO()
        np.savez(buf, **a, __manifest__=np.array(manifest_text or json.dumps(m)))
        return buf.getvalue()

    runs = {
        "no_checkpoint": variant("no_checkpoint", None),
        "truncated": variant("truncated", raw[: len(raw) // 2]),
        "random_bytes": variant("random_bytes", np.random.default_rng(0).bytes(4096)),
        "empty_file": variant("empty_file", b""),
        "not_a_dict": variant("not_a_dict", dump(manifest_text="[1, 2, 3]")),
        "old_format": variant("old_format", dump(format_version=0)),
        "future_format": variant("future_format", dump(format_version=99)),
        "no_state": variant("no_state", dump(drop=("state",))),
        "other_model": variant("other_model", dump(model_source="circles")),
        "param_shapes": variant("param_shapes", dump(**{mu: arrays[mu][:-3]})),
        "nan_params": variant("nan_params", dump(**{mu: _nan_at(arrays[mu])})),
        "unknown_method": variant("unknown_method", dump(method="nope")),
        "bad_settings": variant("bad_settings", dump(settings="steps=5")),
        "missing_model_file": variant(
            "missing_model_file", dump(model_source="/nonexistent/m.py", model_sha256="0" * 64)
        ),
    }
    (base / "run_is_a_file").write_text("not a run")
    runs["is_a_file"] = base / "run_is_a_file"
    runs["missing"] = base / "run_missing"
    return runs


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli_errors")
    sin_run, circ_run = base / "sinusoid_run", base / "circles_run"
    assert (
        main(
            [
                "fit",
                "sinusoid",
                "--method",
                "maml",
                "--steps",
                "5",
                "--quiet",
                "--out",
                str(sin_run),
            ]
        )
        == 0
    )
    # The exact reference needs no training: a real circles run without compiling a meta-step.
    assert main(["fit", "circles", "--method", "reference", "--out", str(circ_run)]) == 0
    for model in ("sinusoid", "circles"):
        path = base / f"{model}_tasks.npz"
        args = ["--k", str(K), "--num-tasks", str(T), "--queries", str(Q), "--pool", str(P)]
        assert main(["tasks", model, *args, "--out", str(path)]) == 0
    bad = {}
    for model, classification in (("sinusoid", False), ("circles", True)):
        good = load_tasks(base / f"{model}_tasks.npz")
        for name, arrays in _bad_task_files(good, classification).items():
            path = base / f"{model}_{name}.npz"
            np.savez(path, **arrays)
            bad[f"{model[:3]}_{name}"] = path
    # files that are not task files at all
    (base / "text.npz").write_text("hello, not an archive\n")
    (base / "empty.npz").write_bytes(b"")
    np.save(base / "array.npy", np.zeros((3, 2, 1)))
    good_bytes = (base / "sinusoid_tasks.npz").read_bytes()
    (base / "truncated.npz").write_bytes(good_bytes[: len(good_bytes) // 2])
    with zipfile.ZipFile(base / "zip_of_text.npz", "w") as zf:
        zf.writestr("x_support.npy", "not an array")
    np.savez(base / "object.npz", x_support=np.array([{"a": 1}], dtype=object))
    (base / "a_dir").mkdir()
    (base / "a_file.txt").write_text("a file")
    (base / "nospec.py").write_text("X = 1\n")
    (base / "syntax.py").write_text("def (:\n")
    files = {
        "text": base / "text.npz",
        "empty": base / "empty.npz",
        "npy": base / "array.npy",
        "truncated": base / "truncated.npz",
        "zip_of_text": base / "zip_of_text.npz",
        "object": base / "object.npz",
        "missing": base / "missing.npz",
        "dir": base / "a_dir",
    }
    return {
        "base": base,
        "sin_run": sin_run,
        "circ_run": circ_run,
        "sin_tasks": base / "sinusoid_tasks.npz",
        "circ_tasks": base / "circles_tasks.npz",
        "bad": bad,
        "file": files,
        "run": _bad_run_dirs(base / "sinusoid_run", base),
        "dir": base / "a_dir",
        "a_file": base / "a_file.txt",
        "nospec": base / "nospec.py",
        "syntax": base / "syntax.py",
    }


# -- the table --------------------------------------------------------------------------------
EV = ["evaluate", "{sin_run}", "--samples", "3", "--out", "{out}", "--predictive", "{pred}"]
EV_C = ["evaluate", "{circ_run}", "--samples", "3", "--out", "{out}", "--predictive", "{pred}"]
AC = ["active", "{sin_run}", "--acquisition", "bald", "--queries", "2", "--out", "{out}"]
AC_C = ["active", "{circ_run}", "--acquisition", "bald", "--queries", "2", "--out", "{out}"]
FIT = ["fit", "sinusoid", "--method", "maml", "--steps", "5", "--quiet"]
TASKS = ["tasks", "sinusoid", "--k", "2", "--num-tasks", "3", "--queries", "4"]


def _tasks_cases(prefix, cmd, names_needles):
    return [
        pytest.param(
            [*cmd, "--tasks", f"{{bad[{prefix}_{name}]}}"],
            needle,
            id=f"{cmd[0]}-{prefix}-{name}",
        )
        for name, needle in names_needles
    ]


# (bad task file, needle) for evaluate: regression (sinusoid)
SIN_EVAL = [
    ("nan_x_support", "x_support"),
    ("inf_x_support", "x_support"),
    ("nan_y_support", "y_support"),
    ("nan_x_query", "x_query"),
    ("nan_y_query", "y_query"),
    ("inf_y_query", "y_query"),
    ("nan_x_pool", "x_pool"),
    ("missing_x_support", "x_support"),
    ("missing_y_support", "y_support"),
    ("missing_x_query", "x_query"),
    ("missing_y_query", "y_query"),
    ("missing_y_pool", "y_pool"),
    ("rank_x_support", "x_support"),
    ("rank_y_support", "y_support"),
    ("rank_x_query", "x_query"),
    ("rank_y_query", "y_query"),
    ("tasks_y_support", "y_support"),
    ("tasks_x_query", "x_query"),
    ("k_y_support", "y_support"),
    ("q_y_query", "y_query"),
    ("empty_support", "x_support"),
    ("empty_tasks", "x_support"),
    ("dx_all", "Dx=1"),
    ("dx_query", "x_query"),
    ("dy_all", "Dy=1"),
    ("int_labels_regression", "y_support"),
    ("dtype_x_support", "x_support"),
    ("huge_x_query", "x_query"),
]
# classification (circles)
CIRC_EVAL = [
    ("nan_x_support", "x_support"),
    ("nan_x_query", "x_query"),
    ("label_high_y_support", "y_support"),
    ("label_high_y_query", "y_query"),
    ("label_negative", "y_query"),
    ("float_labels_support", "y_support"),
    ("float_labels_query", "y_query"),
    ("onehot_labels", "y_support"),
    ("missing_y_query", "y_query"),
    ("rank_x_query", "x_query"),
    ("tasks_x_query", "x_query"),
    ("empty_support", "x_support"),
    ("dx_query", "x_query"),
]
SIN_ACTIVE = [
    ("nan_x_pool", "x_pool"),
    ("nan_y_pool", "y_pool"),
    ("rank_x_pool", "x_pool"),
    ("tasks_y_pool", "y_pool"),
    ("missing_y_pool", "y_pool"),
    ("no_pool", "x_pool"),
    ("nan_x_support", "x_support"),
    ("dx_all", "Dx=1"),
    ("empty_support", "x_support"),
]
CIRC_ACTIVE = [
    ("label_high_y_pool", "y_pool"),
    ("label_high_y_support", "y_support"),
    ("float_labels_support", "y_support"),
    ("nan_x_pool", "x_pool"),
    ("no_pool", "x_pool"),
]
NOT_TASK_FILES = [
    ("text", "npz"),
    ("empty", "npz"),
    ("npy", "npz"),
    ("truncated", "npz"),
    ("zip_of_text", "x_support"),
    ("object", "x_support"),
    ("missing", "no such file"),
    ("dir", "directory"),
]
BAD_RUNS = [
    ("no_checkpoint", "checkpoint"),
    ("truncated", "corrupt"),
    ("random_bytes", "corrupt"),
    ("empty_file", "corrupt"),
    ("not_a_dict", "manifest"),
    ("old_format", "format version 0, written by an older bayesmeta"),
    ("future_format", "format version 99, written by a newer bayesmeta"),
    ("no_state", "state"),
    ("other_model", "does not match this model and method"),
    ("param_shapes", "does not match this model and method"),
    ("nan_params", "non-finite"),
    ("unknown_method", "method"),
    ("bad_settings", "settings"),
    ("missing_model_file", "model"),
    ("is_a_file", "RUN_DIR"),
    ("missing", "RUN_DIR"),
]

CASES = [
    # -- fit --------------------------------------------------------------------------------
    pytest.param([*FIT[:3], "nope", "--out", "{outdir}"], "--method", id="fit-unknown-method"),
    pytest.param(["fit", "sinusoid", "--out", "{outdir}"], "--method", id="fit-missing-method"),
    pytest.param(FIT, "--out", id="fit-missing-out"),
    pytest.param([*FIT[:4], "--steps", "0", "--out", "{outdir}"], "--steps", id="fit-steps-0"),
    pytest.param([*FIT[:4], "--steps", "-3", "--out", "{outdir}"], "--steps", id="fit-steps-neg"),
    pytest.param(
        [*FIT[:4], "--steps", "2.5", "--out", "{outdir}"], "--steps", id="fit-steps-float"
    ),
    pytest.param([*FIT[:4], "--steps", "ten", "--out", "{outdir}"], "--steps", id="fit-steps-text"),
    pytest.param([*FIT, "--seed", "x", "--out", "{outdir}"], "--seed", id="fit-seed-text"),
    pytest.param([*FIT, "--seed", "-1", "--out", "{outdir}"], "--seed", id="fit-seed-neg"),
    pytest.param([*FIT, "--seed", str(2**32), "--out", "{outdir}"], "--seed", id="fit-seed-big"),
    pytest.param([*FIT, "--budget", "huge", "--out", "{outdir}"], "--budget", id="fit-budget"),
    pytest.param(
        ["fit", "no_such_model", *FIT[2:], "--out", "{outdir}"], "MODEL", id="fit-model-name"
    ),
    pytest.param(
        ["fit", "models/nope.py", *FIT[2:], "--out", "{outdir}"], "MODEL", id="fit-model-file"
    ),
    pytest.param(["fit", "{nospec}", *FIT[2:], "--out", "{outdir}"], "SPEC", id="fit-model-nospec"),
    pytest.param(
        ["fit", "{syntax}", *FIT[2:], "--out", "{outdir}"], "MODEL", id="fit-model-syntax"
    ),
    pytest.param([*FIT, "--out", "{a_file}"], "--out", id="fit-out-is-file"),
    pytest.param([*FIT, "--out", "{a_file}/run"], "--out", id="fit-out-under-file"),
    pytest.param(
        ["fit", "circles", *FIT[2:], "--out", "{sin_run}", "--resume"],
        "--resume",
        id="fit-resume-other-model",
    ),
    pytest.param(
        [*FIT[:5], "7", "--quiet", "--out", "{sin_run}", "--resume"],
        "--resume",
        id="fit-resume-other-steps",
    ),
    *[
        pytest.param(
            [*FIT, "--out", f"{{run[{name}]}}", "--resume"],
            # fit names its model: a manifest naming another is refused before its state is read
            "model_source='circles'" if name == "other_model" else needle,
            id=f"fit-resume-{name}",
        )
        for name, needle in BAD_RUNS
        if name not in ("no_checkpoint", "missing", "is_a_file")
    ],
    pytest.param(
        [*FIT, "--out", "{run[is_a_file]}", "--resume"], "--out", id="fit-resume-is_a_file"
    ),
    # -- evaluate ---------------------------------------------------------------------------
    *_tasks_cases("sin", EV, SIN_EVAL),
    *_tasks_cases("cir", EV_C, CIRC_EVAL),
    pytest.param([*EV, "--tasks", "{circ_tasks}"], "Dx=1", id="evaluate-sin-run-circles-tasks"),
    pytest.param([*EV_C, "--tasks", "{sin_tasks}"], "Dx=2", id="evaluate-circles-run-sin-tasks"),
    *[
        pytest.param([*EV, "--tasks", f"{{file[{name}]}}"], needle, id=f"evaluate-file-{name}")
        for name, needle in NOT_TASK_FILES
    ],
    *[
        pytest.param(
            ["evaluate", f"{{run[{name}]}}", *EV[2:], "--tasks", "{sin_tasks}"],
            needle,
            id=f"evaluate-run-{name}",
        )
        for name, needle in BAD_RUNS
    ],
    pytest.param(
        ["evaluate", "{sin_run}", "--tasks", "{sin_tasks}", "--samples", "0", "--out", "{out}"],
        "--samples",
        id="evaluate-samples-0",
    ),
    pytest.param(
        ["evaluate", "{sin_run}", "--tasks", "{sin_tasks}", "--samples", "-5", "--out", "{out}"],
        "--samples",
        id="evaluate-samples-neg",
    ),
    pytest.param(
        ["evaluate", "{sin_run}", "--out", "{out}"], "--tasks", id="evaluate-missing-tasks"
    ),
    pytest.param(
        ["evaluate", "{sin_run}", "--tasks", "{sin_tasks}"], "--out", id="evaluate-missing-out"
    ),
    pytest.param(
        ["evaluate", "--tasks", "{sin_tasks}", "--out", "{out}"],
        "RUN_DIR",
        id="evaluate-missing-run",
    ),
    pytest.param(
        [*EV[:-4], "--out", "{dir}", "--tasks", "{sin_tasks}"], "--out", id="evaluate-out-is-dir"
    ),
    pytest.param(
        [*EV[:-4], "--out", "{a_file}/r.json", "--tasks", "{sin_tasks}"],
        "--out",
        id="evaluate-out-under-file",
    ),
    pytest.param(
        [*EV[:-2], "--predictive", "{dir}", "--tasks", "{sin_tasks}"],
        "--predictive",
        id="evaluate-pred-is-dir",
    ),
    pytest.param(
        [*EV[:-2], "--predictive", "{out}", "--tasks", "{sin_tasks}"],
        "--predictive",
        id="evaluate-pred-is-out",
    ),
    # -- active -----------------------------------------------------------------------------
    *_tasks_cases("sin", AC, SIN_ACTIVE),
    *_tasks_cases("cir", AC_C, CIRC_ACTIVE),
    pytest.param([*AC, "--tasks", "{circ_tasks}"], "Dx=1", id="active-sin-run-circles-tasks"),
    *[
        pytest.param([*AC, "--tasks", f"{{file[{name}]}}"], needle, id=f"active-file-{name}")
        for name, needle in NOT_TASK_FILES
    ],
    *[
        pytest.param(
            ["active", f"{{run[{name}]}}", *AC[2:], "--tasks", "{sin_tasks}"],
            needle,
            id=f"active-run-{name}",
        )
        for name, needle in BAD_RUNS
    ],
    pytest.param(
        [*AC[:3], "curiosity", *AC[4:], "--tasks", "{sin_tasks}"],
        "--acquisition",
        id="active-unknown-acquisition",
    ),
    pytest.param(
        [*AC[:5], "0", *AC[6:], "--tasks", "{sin_tasks}"], "--queries", id="active-queries-0"
    ),
    pytest.param([*AC, "--batch", "0", "--tasks", "{sin_tasks}"], "--batch", id="active-batch-0"),
    pytest.param(
        [*AC, "--samples", "0", "--tasks", "{sin_tasks}"], "--samples", id="active-samples-0"
    ),
    pytest.param(
        [*AC, "--batch", "3", "--tasks", "{sin_tasks}"], "P=5", id="active-pool-too-small"
    ),
    pytest.param(
        [*AC[:-2], "--out", "{dir}", "--tasks", "{sin_tasks}"], "--out", id="active-out-is-dir"
    ),
    pytest.param(
        ["active", "{sin_run}", "--tasks", "{sin_tasks}", "--out", "{out}"],
        "--acquisition",
        id="active-missing-acquisition",
    ),
    # -- tasks ------------------------------------------------------------------------------
    pytest.param([*TASKS[:2], "--k", "0", "--out", "{out_npz}"], "--k", id="tasks-k-0"),
    pytest.param(
        [*TASKS[:2], "--num-tasks", "0", "--out", "{out_npz}"],
        "--num-tasks",
        id="tasks-num-tasks-0",
    ),
    pytest.param(
        [*TASKS[:2], "--queries", "-1", "--out", "{out_npz}"], "--queries", id="tasks-queries-neg"
    ),
    pytest.param([*TASKS, "--pool", "0", "--out", "{out_npz}"], "--pool", id="tasks-pool-0"),
    pytest.param([*TASKS, "--seed", "abc", "--out", "{out_npz}"], "--seed", id="tasks-seed-text"),
    pytest.param(
        ["tasks", "nope", *TASKS[2:], "--out", "{out_npz}"], "MODEL", id="tasks-unknown-model"
    ),
    pytest.param(TASKS, "--out", id="tasks-missing-out"),
    pytest.param([*TASKS, "--out", "{dir}"], "--out", id="tasks-out-is-dir"),
    pytest.param([*TASKS, "--out", "{a_file}/t.npz"], "--out", id="tasks-out-under-file"),
    # -- info -------------------------------------------------------------------------------
    *[
        pytest.param(["info", f"{{run[{name}]}}"], needle, id=f"info-run-{name}")
        for name, needle in BAD_RUNS
    ],
    # -- run --------------------------------------------------------------------------------
    pytest.param(["run", "--seconds", "0", "--out", "{outdir}"], "--seconds", id="run-seconds-0"),
    pytest.param(
        ["run", "--num-tasks", "0", "--out", "{outdir}"], "--num-tasks", id="run-num-tasks-0"
    ),
    pytest.param(["run", "--seed", "-2", "--out", "{outdir}"], "--seed", id="run-seed-neg"),
    pytest.param(["run", "--out", "{a_file}", "--quiet"], "--out", id="run-out-is-file"),
    # -- the command itself -----------------------------------------------------------------
    pytest.param([], "command", id="no-command"),
    pytest.param(["frobnicate"], "frobnicate", id="unknown-command"),
    pytest.param(
        ["evaluate", "{sin_run}", "--tasks", "{sin_tasks}", "--out", "{out}", "--bogus"],
        "--bogus",
        id="unknown-option",
    ),
]


def _fill(args: list[str], env: dict, tmp_path: Path) -> list[str]:
    fmt = {
        **{k: v for k, v in env.items() if k != "base"},
        "out": tmp_path / "out.json",
        "out_npz": tmp_path / "out.npz",
        "outdir": tmp_path / "run",
        "pred": tmp_path / "pred.npz",
    }
    return [a.format(**fmt) for a in args]


@pytest.mark.parametrize("args, needle", CASES)
def test_bad_input_exits_2_with_one_line(args, needle, env, tmp_path, capsys):
    argv = _fill(args, env, tmp_path)
    before = _snapshot(env["base"], tmp_path)
    capsys.readouterr()
    code = _run_main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, (code, err)
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and err.strip(), err
    assert needle in err, err
    assert captured.out == "", captured.out
    assert _snapshot(env["base"], tmp_path) == before  # no output, no temporary left behind


def test_good_fixtures_pass(env, tmp_path):
    """The files the bad ones derive from are good: the same commands succeed on them."""
    for run, tasks in (("sin_run", "sin_tasks"), ("circ_run", "circ_tasks")):
        out, pred = tmp_path / f"{run}.json", tmp_path / f"{run}.npz"
        args = ["--samples", "3", "--out", str(out), "--predictive", str(pred)]
        assert main(["evaluate", str(env[run]), "--tasks", str(env[tasks]), *args]) == 0
        assert out.exists() and pred.exists()
    assert main(["info", str(env["sin_run"])]) == 0


# -- through a real process: nothing but the one line reaches stderr -----------------------
SUBPROCESS_CASES = [
    pytest.param([*EV, "--tasks", "{bad[sin_nan_y_query]}"], "y_query", id="evaluate-nan"),
    pytest.param(
        ["evaluate", "{run[truncated]}", *EV[2:], "--tasks", "{sin_tasks}"],
        "corrupt",
        id="evaluate-corrupt-checkpoint",
    ),
    pytest.param([*FIT[:4], "--steps", "0", "--out", "{outdir}"], "--steps", id="fit-steps-0"),
]


@pytest.mark.parametrize("args, needle", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process(args, needle, env, tmp_path):
    argv = _fill(args, env, tmp_path)
    before = _snapshot(env["base"], tmp_path)
    cmd = [sys.executable, "-m", "bayesmeta.cli", *argv]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr and proc.stdout == ""
    assert _snapshot(env["base"], tmp_path) == before


def test_error_leaves_earlier_outputs_alone(env, tmp_path):
    """A failed evaluate does not remove or half-overwrite a report written before."""
    out = tmp_path / "report.json"
    out.write_text("{}")
    args = ["evaluate", str(env["sin_run"]), "--tasks", str(env["bad"]["sin_nan_x_query"])]
    assert _run_main([*args, "--out", str(out)]) == 2
    assert out.read_text() == "{}"
