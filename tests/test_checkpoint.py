"""Run directories are safe to share: reading one never runs code the user did not ask for.

Each unsafe case is refused with one line on stderr and exit status 2, and its payload's side
effect (a marker file) must not appear; the trusted cases show that the same payloads do
fire when allowed, so the absence of the marker means something.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import jax
import numpy as np
import pytest

from bayesmeta.checkpoint import (
    CheckpointError,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from bayesmeta.cli import main
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.zoo import METHOD_NAMES

MODELS = Path(__file__).parent.parent / "models"


class _Payload:
    """Unpickling this writes ``marker`` (what a crafted checkpoint.pkl could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("safe")
    marker = base / "MARKER"
    # a model file that writes the marker when it is executed, and is otherwise the sinusoid
    evil = base / "evil_model.py"
    evil.write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        + (MODELS / "sinusoid.py").read_text()
    )
    good = base / "good"
    assert main(["fit", "sinusoid", "--method", "maml", "--steps", "3", "--quiet",
                 "--out", str(good)]) == 0  # fmt: skip
    assert main(["tasks", "sinusoid", "--k", "3", "--num-tasks", "2", "--queries", "4",
                 "--out", str(base / "tasks.npz")]) == 0  # fmt: skip
    assert main(["tasks", "sinusoid", "--k", "3", "--num-tasks", "2", "--queries", "4",
                 "--pool", "3", "--out", str(base / "pool.npz")]) == 0  # fmt: skip
    with np.load(good / "checkpoint.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    manifest = json.loads(str(arrays.pop("__manifest__")))

    def run_with(name, **changes):
        d = base / name
        d.mkdir()
        buf = io.BytesIO()
        np.savez(buf, **arrays, __manifest__=np.array(json.dumps({**manifest, **changes})))
        (d / "checkpoint.npz").write_bytes(buf.getvalue())
        return d

    crafted = base / "crafted"
    crafted.mkdir()
    (crafted / "checkpoint.pkl").write_bytes(pickle.dumps({"format_version": 1,
                                                           "x": _Payload(marker)}))  # fmt: skip
    model_file = dict(model_source=str(evil), model_sha256=file_sha256(evil))
    return {
        "base": base,
        "marker": marker,
        "evil": evil,
        "good": good,
        "tasks": base / "tasks.npz",
        "pool": base / "pool.npz",
        "crafted": crafted,
        "model_file": run_with("model_file", **model_file),
        "changed": run_with("changed", model_source=str(evil), model_sha256="0" * 64),
        "future": run_with("future", format_version=3),
        "manifest": manifest,
    }


def _refused(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    return err[0]


@pytest.mark.parametrize(
    ("run", "extra", "needle"),
    [
        ("crafted", [], "legacy pickle checkpoint"),
        ("model_file", [], "--trust-model-file"),
        ("changed", ["--trust-model-file"], "the file has changed since the run"),
        ("future", [], "format version 3, written by a newer bayesmeta"),
    ],
)
@pytest.mark.parametrize("command", ["evaluate", "active", "fit-resume", "info"])
def test_unsafe_run_directories_are_refused_and_nothing_runs(runs, capsys, tmp_path, run,
                                                             extra, needle, command):  # fmt: skip
    out = tmp_path / "report.json"
    before = sorted(p.name for p in runs[run].iterdir())
    if command == "fit-resume":
        # fit names its model on the command line (no trust flags): a manifest that points
        # at another model (any model file) is refused before that file is looked at
        needle = "model_source=" if run in ("model_file", "changed") else needle
        argv = ["fit", "sinusoid", "--method", "maml", "--steps", "3", "--quiet",
                "--out", str(runs[run]), "--resume"]  # fmt: skip
    else:
        argv = [command, str(runs[run]), *extra]
    if command == "evaluate":
        argv += ["--tasks", str(runs["tasks"]), "--samples", "3", "--out", str(out)]
    if command == "active":
        argv += ["--tasks", str(runs["pool"]), "--acquisition", "bald", "--queries", "1",
                 "--samples", "3", "--out", str(out)]  # fmt: skip
    _refused(capsys, argv, needle)
    assert not runs["marker"].exists(), "the payload ran"
    assert not out.exists()
    assert sorted(p.name for p in runs[run].iterdir()) == before  # nothing written there


def test_truncated_checkpoint_is_refused(runs, capsys, tmp_path):
    raw = (runs["good"] / "checkpoint.npz").read_bytes()
    (tmp_path / "checkpoint.npz").write_bytes(raw[: len(raw) // 3])
    _refused(capsys, ["info", str(tmp_path)], "corrupt or truncated")


@pytest.mark.parametrize(
    ("offset", "value", "needle"),
    [(6, 173, "corrupt or truncated (NotImplementedError)"), (10, 99, "zip compression 99")],
    ids=["version", "method"],
)
def test_a_mangled_zip_field_is_refused_in_one_line(runs, capsys, tmp_path, offset, value, needle):
    # zipfile raises NotImplementedError, not BadZipFile, for an unknown "version needed to
    # extract" (17.3) in a central directory entry (found by the fuzzer); an unknown
    # compression method has a message of its own
    raw = bytearray((runs["good"] / "checkpoint.npz").read_bytes())
    at = raw.index(b"PK\x01\x02") + offset
    raw[at : at + 2] = value.to_bytes(2, "little")
    (tmp_path / "checkpoint.npz").write_bytes(bytes(raw))
    _refused(capsys, ["info", str(tmp_path)], needle)


def test_a_named_or_trusted_model_file_runs_only_when_its_hash_matches(runs, capsys, tmp_path):
    out = tmp_path / "r.json"
    ev = ["--tasks", str(runs["tasks"]), "--samples", "3", "--out", str(out)]
    _refused(capsys, ["evaluate", str(runs["changed"]), "--model", str(runs["evil"]), *ev],
             "the file has changed")  # fmt: skip
    assert not runs["marker"].exists()
    # the payload does fire once the user names the file (so the refusals above mean something)
    assert main(["evaluate", str(runs["model_file"]), "--model", str(runs["evil"]), *ev]) == 0
    assert runs["marker"].read_text() == "ran" and out.exists()
    runs["marker"].unlink()


def test_legacy_pickle_needs_allow_pickle_and_upgrade_converts_it(runs, capsys, tmp_path):
    # a real format-1 run: the good run's state, pickled as the old checkpoint did
    spec = load_model_spec("sinusoid")
    method, _ = spec.build("maml", **runs["manifest"]["settings"])
    good = load_checkpoint(
        runs["good"] / "checkpoint.npz", template=method.init(jax.random.PRNGKey(0))
    )
    legacy = {k: v for k, v in good.items() if k not in ("arrays", "model_sha256")}
    legacy["format_version"] = 1
    d = tmp_path / "legacy"
    d.mkdir()
    (d / "checkpoint.pkl").write_bytes(pickle.dumps(legacy))
    _refused(capsys, ["info", str(d)], "bayesmeta upgrade RUN_DIR")
    assert main(["info", str(d), "--allow-pickle"]) == 0
    rep = tmp_path / "r.json"
    ev = ["evaluate", str(d), "--tasks", str(runs["tasks"]), "--samples", "3", "--out", str(rep)]
    _refused(capsys, ev, "legacy pickle checkpoint")
    assert main([*ev, "--allow-pickle", "--quiet"]) == 0 and rep.exists()
    capsys.readouterr()
    assert main(["upgrade", str(d)]) == 0
    assert (d / "checkpoint.npz").is_file() and (d / "checkpoint.pkl.bak").is_file()
    assert not (d / "checkpoint.pkl").exists()
    new = load_checkpoint(d / "checkpoint.npz", template=method.init(jax.random.PRNGKey(0)))
    for a, b in zip(jax.tree_util.tree_leaves(good["state"]),
                    jax.tree_util.tree_leaves(new["state"]), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(good["key"], new["key"])
    assert new["step"] == good["step"] and new["model_sha256"] is None
    assert main(["info", str(d)]) == 0  # no flag needed any more
    _refused(capsys, ["upgrade", str(d)], "already in the data-only format")


def _model_for(method: str) -> str:
    """A small built-in model the method serves: classifiers (and the grid reference) on
    circles, the others on the sinusoid."""
    from bayesmeta.inference.registry import METHODS

    info = METHODS.get(method)
    classifier = info is not None and info.likelihoods == ("categorical",)
    return "circles" if method == "reference" or classifier else "sinusoid"


@pytest.mark.parametrize("method", [m for m in METHOD_NAMES])
def test_every_methods_state_round_trips(tmp_path, method):
    spec = load_model_spec(_model_for(method))
    m, _ = spec.build(method)
    state = m.init(jax.random.PRNGKey(3))
    key = jax.random.PRNGKey(4)
    save_checkpoint(tmp_path / "c.npz", {"state": state, "key": key, "method": method,
                                         "settings": {"k": (1, 2)}})  # fmt: skip
    back = load_checkpoint(tmp_path / "c.npz", template=m.init(jax.random.PRNGKey(0)))
    assert jax.tree_util.tree_structure(back["state"]) == jax.tree_util.tree_structure(state)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(back["state"]),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), b)
        assert np.asarray(a).dtype == b.dtype
    np.testing.assert_array_equal(back["key"], key)
    assert back["method"] == method and back["settings"] == {"k": [1, 2]}
    with np.load(tmp_path / "c.npz", allow_pickle=False) as f:  # data only: no object arrays
        assert all(f[k].dtype.kind != "O" for k in f.files)


def test_a_state_from_another_method_is_refused(tmp_path):
    spec = load_model_spec("sinusoid")
    a, _ = spec.build("maml")
    b, _ = spec.build("abml")
    save_checkpoint(tmp_path / "c.npz", {"state": a.init(jax.random.PRNGKey(0))})
    with pytest.raises(CheckpointError, match="does not match this model and method"):
        load_checkpoint(tmp_path / "c.npz", template=b.init(jax.random.PRNGKey(0)))


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in METHOD_NAMES])
def test_jitted_adapt_is_identical_before_and_after_the_round_trip(tmp_path, method):
    from bayesmeta.tasks import Support, make_task_set

    spec = load_model_spec(_model_for(method))
    m, _ = spec.build(method)
    state = m.init(jax.random.PRNGKey(3))
    save_checkpoint(tmp_path / "c.npz", {"state": state})
    back = load_checkpoint(tmp_path / "c.npz", template=m.init(jax.random.PRNGKey(0)))["state"]
    tasks = make_task_set(spec.family, jax.random.PRNGKey(5), num_tasks=2, k=3, num_query=2)
    support = Support(tasks["x_support"], tasks["y_support"], jax.numpy.ones((2, 3)))
    adapt = jax.jit(m.adapt, static_argnums=3)
    a = adapt(jax.random.PRNGKey(7), state, support, 4)
    b = adapt(jax.random.PRNGKey(7), jax.tree_util.tree_map(jax.numpy.asarray, back), support, 4)
    np.testing.assert_array_equal(np.asarray(a.phi), np.asarray(b.phi))
    np.testing.assert_array_equal(np.asarray(a.log_weights), np.asarray(b.log_weights))
