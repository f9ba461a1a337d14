"""Issue 44, items 1-3, 13 and 15: the model file runs the bytes that were hashed, one writer
per run directory, best.npz tied to its run, sizes checked before anything is read or built,
and the smaller mistakes (a moved CSV, stale temporary files, a malformed run.json, a model
file that calls ``sys.exit``, an optional package missing)."""

from __future__ import annotations

import _io
import builtins
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bayesmeta.checkpoint import CheckpointError
from bayesmeta.cli import main
from bayesmeta.errors import UsageError
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.rundir import load_run

ROOT = Path(__file__).parent.parent
SINUSOID = (ROOT / "models" / "sinusoid.py").read_text()
FIT = ["fit", "sinusoid", "--method", "maml", "--steps", "3", "--quiet"]


def read_manifest(path: Path) -> dict:
    """A checkpoint's manifest, read with numpy alone."""
    with np.load(path, allow_pickle=False) as f:
        return json.loads(str(f["__manifest__"]))


def _one_line(capsys, needle: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A validated run, a second run of another seed, and a task file."""
    d = tmp_path_factory.mktemp("hardening")
    for name, seed in (("a", "0"), ("b", "1")):
        assert main([*FIT, "--validate", "--seed", seed, "--out", str(d / name)]) == 0
    assert main(["tasks", "sinusoid", "--k", "3", "--num-tasks", "2", "--queries", "4",
                 "--out", str(d / "tasks.npz")]) == 0  # fmt: skip
    return d


def _copy_run(base: Path, tmp_path: Path, name: str = "a") -> Path:
    out = tmp_path / f"copy_{name}"
    shutil.copytree(base / name, out)
    return out


# -- 1. the model file: read once, hashed, and exactly those bytes run -------------------------
@contextlib.contextmanager
def _swap_after_first_open(target: Path, replacement: bytes, monkeypatch):
    """Replace ``target`` on disk (a new inode) right after it is first opened: a reader that
    opens it again sees ``replacement`` (a deterministic stand-in for a racing writer)."""
    state = {"opened": 0}
    real_open, real_open_code = builtins.open, _io.open_code
    swap = target.with_suffix(".swap")
    swap.write_bytes(replacement)

    def hook(fh, file):
        try:
            same = Path(os.fsdecode(file)).resolve() == target.resolve()
        except (TypeError, ValueError):
            same = False
        if same:
            state["opened"] += 1
            if state["opened"] == 1:
                os.replace(swap, target)
        return fh

    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: hook(real_open(f, *a, **k), f))
    monkeypatch.setattr(io, "open", builtins.open)
    monkeypatch.setattr(_io, "open_code", lambda f: hook(real_open_code(f), f))
    yield state


def _model_files(tmp_path: Path):
    marker = tmp_path / "MARKER"
    good = SINUSOID.encode()
    evil = f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n".encode() + good
    path = tmp_path / "model.py"
    path.write_bytes(good)
    return path, good, evil, marker


def test_loading_a_run_runs_the_bytes_whose_hash_matched(tmp_path, monkeypatch):
    path, good, evil, marker = _model_files(tmp_path)
    run = tmp_path / "run"
    assert main(["fit", str(path), "--method", "maml", "--steps", "2", "--quiet",
                 "--out", str(run)]) == 0  # fmt: skip
    assert read_manifest(run / "checkpoint.npz")["model_sha256"] == hashlib.sha256(good).hexdigest()
    with _swap_after_first_open(path, evil, monkeypatch) as seen:
        load_run(str(run), trust_model_file=True)
    assert seen["opened"] == 1, "the model file was opened again after it was hashed"
    assert not marker.exists(), "the swapped file ran"


def test_fit_records_the_hash_of_the_bytes_it_ran(tmp_path, monkeypatch):
    from bayesmeta.fitting import Run

    path, good, evil, marker = _model_files(tmp_path)
    with _swap_after_first_open(path, evil, monkeypatch):
        manifest = Run(str(path), "maml", steps=2).manifest()
    assert not marker.exists()
    assert manifest["model_sha256"] == hashlib.sha256(good).hexdigest()


def test_a_mismatched_hash_runs_nothing(tmp_path):
    from bayesmeta.modelfiles import ModelFileChanged

    path, _, evil, marker = _model_files(tmp_path)
    path.write_bytes(evil)
    with pytest.raises(ModelFileChanged, match="has changed, so it was not run"):
        load_model_spec(str(path), expected_sha256="0" * 64)
    assert not marker.exists()


# -- 2. one writer per run directory; best.npz belongs to its run ------------------------------
@contextlib.contextmanager
def _held_by_another(path: Path):
    """The lock of ``path`` as another process holds it (its own open file description)."""
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        yield
    finally:
        os.close(fd)


def test_a_second_writer_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with _held_by_another(out):
        assert main([*FIT, "--out", str(out)]) == 2
    _one_line(capsys, "is in use by another bayesmeta command")
    assert list(out.iterdir()) == []
    assert main([*FIT, "--out", str(out)]) == 0  # released: the next writer goes ahead


def test_save_and_upgrade_take_the_lock_too(base, tmp_path):
    import bayesmeta as bm
    from bayesmeta.rundir import upgrade

    fitted = bm.load(str(base / "a"))
    out = tmp_path / "saved"
    out.mkdir()
    with _held_by_another(out), pytest.raises(UsageError, match="in use"):
        fitted.save(out)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "checkpoint.pkl").write_bytes(b"never unpickled")
    with _held_by_another(legacy), pytest.raises(UsageError, match="in use"):
        upgrade(str(legacy))
    fitted.save(out)
    assert (out / "checkpoint.npz").is_file()


def test_the_lock_is_released_on_an_error(tmp_path):
    from bayesmeta.rundir import run_dir_lock

    out = tmp_path / "run"
    with pytest.raises(RuntimeError), run_dir_lock(out):
        raise RuntimeError("boom")
    with _held_by_another(out):  # would raise BlockingIOError if still held
        pass


def test_a_best_state_of_another_run_is_refused(base, tmp_path, capsys):
    run = _copy_run(base, tmp_path)
    shutil.copy(base / "b" / "best.npz", run / "best.npz")
    out = tmp_path / "report.json"
    assert main(["evaluate", str(run), "--tasks", str(base / "tasks.npz"), "--samples", "3",
                 "--out", str(out), "--quiet"]) == 2  # fmt: skip
    _one_line(capsys, "best.npz")
    assert not out.exists()
    assert main(["info", str(run)]) == 2
    assert "belongs to another run" in _one_line(capsys, "best.npz")


def test_the_run_id_is_shared_by_checkpoints_and_kept_on_resume(base, tmp_path):
    from bayesmeta.fitting import Run, fit_run

    run = _copy_run(base, tmp_path)
    ids = {read_manifest(run / n).get("run_id") for n in ("checkpoint.npz", "best.npz")}
    assert len(ids) == 1 and None not in ids
    resumed = fit_run(Run("sinusoid", "maml", steps=3), out=run, resume=True, validate=True,
                      progress=False)  # fmt: skip
    assert resumed.manifest["run_id"] in ids


def test_stale_temporary_files_are_removed_when_the_directory_is_next_written(base, tmp_path):
    run = _copy_run(base, tmp_path)
    stale = [run / "checkpoint.npz.k3j2x9.tmp", run / "run.json.abc.tmp", run / "best.npz.q.tmp"]
    for p in stale:
        p.write_bytes(b"half written")
    mine = run / "notes.tmp"
    mine.write_text("the user's own file")
    assert main([*FIT, "--out", str(run), "--force"]) == 0
    assert not any(p.exists() for p in stale)
    assert mine.exists()


# -- 3. sizes: checked before anything is read, allocated or run -------------------------------
def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _write_zip(path: Path, members: dict[str, bytes], deflate: tuple[str, ...] = ()) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            kind = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
            z.writestr(name, raw, compress_type=kind)


def _bomb(path: Path, name: str, header: bytes, size: int) -> None:
    """Add ``name`` to the zip at ``path``: ``header`` then ``size`` zero bytes, deflated
    (a small file that expands ``size`` bytes), written in blocks."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "a") as z, z.open(info, "w", force_zip64=True) as fh:
        fh.write(header)
        block = bytes(1 << 20)
        for _ in range(size >> 20):
            fh.write(block)


def _npy_header(shape: tuple, dtype: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_a_member_that_is_not_part_of_the_state_is_refused_unread(base, tmp_path, capsys):
    run = _copy_run(base, tmp_path)
    (run / "best.npz").unlink()
    _bomb(run / "checkpoint.npz", "junk.npy", _npy_header((64 << 18,)), 64 << 20)
    assert (run / "checkpoint.npz").stat().st_size < 2 << 20
    peak = _peak_mb(lambda: main(["info", str(run)]))
    assert "junk" in _one_line(capsys, "member")
    assert peak < 32, f"info held {peak:.0f} MB reading a small hostile checkpoint"


@pytest.mark.parametrize("deflated", [True, False])
def test_a_member_that_stores_more_than_its_shape_needs_is_refused(
    base, tmp_path, capsys, deflated
):
    run = _copy_run(base, tmp_path)
    (run / "best.npz").unlink()
    members = _members(run / "checkpoint.npz")
    name = next(n for n in members if n.startswith("state") and "mu" in n)
    shape = np.load(io.BytesIO(members[name])).shape
    if deflated:  # a zip bomb: small on disk, large once inflated
        del members[name]
        _write_zip(run / "checkpoint.npz", members)
        _bomb(run / "checkpoint.npz", name, _npy_header(shape), 16 << 20)
    else:
        members[name] += bytes(1 << 20)
        _write_zip(run / "checkpoint.npz", members)
    assert main(["info", str(run)]) == 2
    line = _one_line(capsys, name[:-4])
    assert "stores" in line or "expands" in line


def test_a_declared_shape_is_checked_before_reading(base, tmp_path, capsys):
    run = _copy_run(base, tmp_path)
    (run / "best.npz").unlink()
    members = _members(run / "checkpoint.npz")
    name = next(n for n in members if n.startswith("state") and "mu" in n)
    members[name] = _npy_header((10**12,)) + b"\0" * 64  # declares 4 TB, holds 64 bytes
    _write_zip(run / "checkpoint.npz", members)
    assert main(["info", str(run)]) == 2
    _one_line(capsys, name[:-4])


@pytest.mark.parametrize(
    ("field", "key", "value"),
    [("settings", "inner_steps", 10**9), ("method_config", "inner_steps", 10**9),
     ("settings", "num_particles", 5_000)],
)  # fmt: skip
def test_manifest_sizes_beyond_their_caps_are_refused(base, tmp_path, capsys, field, key, value):
    run = _copy_run(base, tmp_path)
    (run / "best.npz").unlink()
    members = _members(run / "checkpoint.npz")
    manifest = json.loads(str(np.load(io.BytesIO(members["__manifest__.npy"]))))
    manifest[field][key] = value
    buf = io.BytesIO()
    np.save(buf, np.array(json.dumps(manifest)))
    members["__manifest__.npy"] = buf.getvalue()
    _write_zip(run / "checkpoint.npz", members)
    assert main(["info", str(run)]) == 2
    assert f"{key}={value}" in _one_line(capsys, "expected at most")


def test_a_state_template_beyond_the_cap_is_refused_before_it_is_built(base, monkeypatch):
    import bayesmeta.rundir as rundir

    monkeypatch.setattr(rundir, "MAX_STATE_BYTES", 1000)
    with pytest.raises(CheckpointError, match="expected at most 1000"):
        load_run(str(base / "a"))


# -- 13. the smaller mistakes -------------------------------------------------------------------
def _csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "a", "target"])
        for g in range(24):
            for _ in range(8):
                a = rng.normal()
                w.writerow([f"s{g:02d}", a, 0.8 * a + rng.normal(0, 0.3)])
    return path


def test_evaluate_a_data_run_whose_csv_moved(tmp_path, capsys):
    cols = ["--group", "site", "--x", "a", "--y", "target"]
    data, run, tasks = _csv(tmp_path / "rows.csv"), tmp_path / "run", tmp_path / "t.npz"
    assert main(["fit", "linear", "--method", "maml", "--data", str(data), *cols, "--steps", "4",
                 "--quiet", "--out", str(run)]) == 0  # fmt: skip
    assert main(["tasks", "--data", str(data), *cols, "--k", "3", "--out", str(tasks)]) == 0
    moved = tmp_path / "elsewhere" / "rows.csv"
    moved.parent.mkdir()
    data.rename(moved)
    ev = ["evaluate", str(run), "--tasks", str(tasks), "--samples", "5", "--quiet", "--out"]
    assert main([*ev, str(tmp_path / "r0.json")]) == 2
    capsys.readouterr()
    assert main([*ev, str(tmp_path / "r1.json"), "--data", str(moved)]) == 0
    assert json.loads((tmp_path / "r1.json").read_text())["units"] == "data"
    capsys.readouterr()
    changed = tmp_path / "changed.csv"
    changed.write_text(moved.read_text().replace("s00", "s99"))
    assert main([*ev, str(tmp_path / "r2.json"), "--data", str(changed)]) == 2
    _one_line(capsys, "SHA-256")
    assert not (tmp_path / "r2.json").exists()


def test_data_on_a_run_without_a_data_file_is_refused(base, tmp_path, capsys):
    assert main(["evaluate", str(base / "a"), "--tasks", str(base / "tasks.npz"), "--data",
                 str(tmp_path / "x.csv"), "--out", str(tmp_path / "r.json")]) == 2  # fmt: skip
    _one_line(capsys, "--data")


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "{", "\xff\xfe"])
def test_load_refuses_a_malformed_run_json_in_one_error(base, tmp_path, text):
    import bayesmeta as bm

    run = _copy_run(base, tmp_path)
    (run / "run.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(UsageError, match="run.json") as err:
        bm.load(str(run))
    assert len(str(err.value).splitlines()) == 1


def test_fit_resume_errors_name_no_flag_that_fit_lacks(tmp_path, capsys):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "checkpoint.pkl").write_bytes(b"never unpickled")
    assert main([*FIT, "--out", str(legacy), "--resume"]) == 2
    line = _one_line(capsys, "upgrade")
    for flag in ("--model", "--trust-model-file", "--allow-pickle"):
        assert flag not in line


def test_a_model_file_that_calls_sys_exit_is_an_error(tmp_path, capsys):
    model = tmp_path / "quits.py"
    model.write_text("import sys\nsys.exit(0)\n")
    out = tmp_path / "run"
    assert main(["fit", str(model), "--method", "maml", "--steps", "2", "--out", str(out)]) == 2
    assert "SystemExit" in _one_line(capsys, str(model.resolve()))
    assert not (out / "checkpoint.npz").exists()


# -- 15. without the data extra ------------------------------------------------------------------
def test_the_digits_recipe_test_skips_without_scikit_learn(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoSklearn:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'sklearn':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NoSklearn())\n"
    )
    test = "tests/test_zoo.py::test_every_default_recipe_is_a_step_count_without_a_wall_clock_cap"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
         f"{test}[digits]"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "1 skipped" in res.stdout, res.stdout[-2000:]


# -- found by the fuzz test (tests/test_fuzz.py) -------------------------------------------------
@pytest.fixture(scope="module")
def data_runs(tmp_path_factory):
    """A run on a CSV file (the CLI), a run saved with its rows (data.npz) and a task file of
    the CSV's test groups; the exact ``reference`` method, so nothing is trained."""
    import bayesmeta as bm
    from bayesmeta.tasks.data import from_csv

    d = tmp_path_factory.mktemp("fuzzed")
    rows = _csv(d / "rows.csv")
    cols = ["--group", "site", "--x", "a", "--y", "target"]
    assert main(["fit", "linear", "--method", "reference", "--data", str(rows), *cols,
                 "--quiet", "--out", str(d / "csv_run")]) == 0  # fmt: skip
    assert main(["tasks", "--data", str(rows), *cols, "--k", "3",
                 "--out", str(d / "tasks.npz")]) == 0  # fmt: skip
    held = from_csv(rows, x=["a"], y="target", group="site")
    bm.fit("linear", "reference", data=held).save(d / "saved_run")
    return d


def _edit_manifests(run: Path, edit) -> None:
    """Rewrite the manifest of each checkpoint of ``run`` with ``edit(manifest)``."""
    for name in ("checkpoint.npz", "best.npz"):
        if not (run / name).is_file():
            continue
        members = _members(run / name)
        manifest = json.loads(str(np.load(io.BytesIO(members["__manifest__.npy"]))))
        buf = io.BytesIO()
        np.save(buf, np.array(json.dumps(edit(manifest))))
        members["__manifest__.npy"] = buf.getvalue()
        _write_zip(run / name, members)


def test_an_npy_header_that_does_not_tokenize_is_refused(base, tmp_path, capsys):
    run = _copy_run(base, tmp_path)
    (run / "best.npz").unlink()
    members = _members(run / "checkpoint.npz")
    name = next(n for n in members if n.startswith("state") and "step" in n)
    text = "{'descr': '<i4', 'fortran_order': False, 'shape': ((), }"  # an unclosed bracket
    text += " " * (-(len(text) + 11) % 64) + "\n"
    members[name] = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()
    _write_zip(run / "checkpoint.npz", members)
    assert main(["info", str(run)]) == 2
    assert "TokenError" in _one_line(capsys, name)


def test_a_manifest_scaler_that_is_not_a_standardiser_is_refused(data_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(data_runs / "saved_run", run)
    _edit_manifests(run, lambda m: {**m, "scaler": {**m["scaler"], "x_scale": {"a": 1}}})
    out = tmp_path / "report.json"
    assert main(["evaluate", str(run), "--tasks", str(data_runs / "tasks.npz"), "--samples",
                 "3", "--quiet", "--out", str(out)]) == 2  # fmt: skip
    assert "x_scale" in _one_line(capsys, "scaler")
    assert not out.exists()


def test_a_data_npz_of_wrong_dtypes_is_refused(data_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(data_runs / "saved_run", run)
    members = _members(run / "data.npz")
    lengths = np.load(io.BytesIO(members["train.lengths.npy"]))
    buf = io.BytesIO()
    np.save(buf, lengths.astype(np.complex64))
    members["train.lengths.npy"] = buf.getvalue()
    _write_zip(run / "data.npz", members)
    digest = hashlib.sha256((run / "data.npz").read_bytes()).hexdigest()
    _edit_manifests(run, lambda m: {**m, "data": {**m["data"], "sha256": digest}})
    assert main(["info", str(run)]) == 2
    assert "lengths complex64" in _one_line(capsys, "data.npz")


@pytest.mark.parametrize(("key", "value"), [("split_seed", "x"), ("split_seed", -1),
                                            ("x", [{"a": 1}]), ("path", None)])  # fmt: skip
def test_a_data_entry_of_wrong_types_is_refused(data_runs, tmp_path, capsys, key, value):
    run = tmp_path / "run"
    shutil.copytree(data_runs / "csv_run", run)
    _edit_manifests(run, lambda m: {**m, "data": {**m["data"], key: value}})
    assert main(["info", str(run)]) == 2
    assert f"({key}=" in _one_line(capsys, "corrupt data entry")


def test_a_task_file_member_that_inflates_without_bound_is_refused(data_runs, tmp_path, capsys):
    tasks = tmp_path / "tasks.npz"
    shutil.copy(data_runs / "tasks.npz", tasks)
    _bomb(tasks, "task_params.npy", _npy_header((16 << 20,)), 64 << 20)
    assert main(["evaluate", str(data_runs / "csv_run"), "--tasks", str(tasks), "--samples", "3",
                 "--quiet", "--out", str(tmp_path / "r.json")]) == 2  # fmt: skip
    assert "expands" in _one_line(capsys, "task_params")
