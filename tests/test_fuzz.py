"""Fuzzing the readers of hostile files (issue 44): 500 seeded random mutations of a valid run
directory, task file and data CSV, each applied to a fresh copy and read by the commands that
read it (``info``, ``evaluate``, ``fit --data``, ``tasks --data``).

Every call must end in exit 0, or in exit 2 with exactly one line on stderr: never a traceback
(exit 1, an uncaught exception), never code run from the files (the mutations plant a model
file and pickles that would write a marker file if executed), never a report with a NaN score
(an infinite NLL is allowed: a task file may hold any float32, and the NLL of a value near
float32's limit overflows), and never more than :data:`MAX_RSS_GROWTH_MB` of growth of the
process's peak resident memory per call (``resource.getrusage``; the mutated files are small,
so a reader that allocates what a header declares, or inflates a zip bomb, shows here).

The base artefacts are built once per module with tiny settings; most mutations are refused
before a model is built, so little is compiled per mutation. The CSV fits use the ``reference``
method (exact, nothing to train), and every :data:`MAML_EVERY`-th one MAML, so that the
training path reads the mutated data too.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import pickle
import resource
import shutil
import sys
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from bayesmeta.cli import main

pytestmark = pytest.mark.slow

SEED = 44
N_RUN, N_TASKS, N_CSV = 180, 120, 200  # 500 mutations in all
#: The most one call may raise the process's peak RSS, in MiB: the readers' own caps (a state
#: of at most 1 GiB, say) are larger, but a small mutated file must stay cheap to refuse.
MAX_RSS_GROWTH_MB = 256
MAML_EVERY = 12
COLS = ["--group", "g", "--x", "a,b", "--y", "y"]


# -- the base artefacts -------------------------------------------------------------------------
def _write_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["g", "a", "b", "y"])
        for g in range(12):
            for _ in range(5):
                a, b = rng.normal(size=2)
                y = 0.5 * a - b + rng.normal(0, 0.3)
                w.writerow([f"s{g}", f"{a:.4f}", f"{b:.4f}", f"{y:.4f}"])
    return path


class _Evil:
    """Unpickling this writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


@contextlib.contextmanager
def _compilation_cache(where: Path):
    """JAX's persistent compilation cache in ``where`` (a fresh folder of this module's, so no
    earlier run's programs are reused) while the block runs: every mutation
    rebuilds its method, so the same programs are traced again, but an accepted mutation of
    the same shapes then loads its compiled program instead of compiling it."""
    import jax

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")  # fmt: skip
    old = {n: getattr(jax.config, n) for n in names}
    try:
        from jax._src.compilation_cache import reset_cache
    except ImportError:  # a JAX without it: no cache, only slower
        yield
        return
    for n, v in zip(names, (str(where), 0.0, 0), strict=True):
        jax.config.update(n, v)
    reset_cache()  # the cache is set up once per process, at the first compilation
    try:
        yield
    finally:
        for n, v in old.items():
            jax.config.update(n, v)
        reset_cache()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Iterator[Path]:
    """A validated sinusoid run (with best.npz), a run on a CSV, a run saved with its rows
    (data.npz), a task file of each kind, the CSV, and a model file that writes a marker."""
    d = tmp_path_factory.mktemp("fuzz")
    with _compilation_cache(d / "xla-cache"):
        yield _build(d)


def _build(d: Path) -> Path:
    import bayesmeta as bm
    from bayesmeta.tasks.data import from_csv

    quiet = ["--steps", "2", "--quiet"]
    assert main(["fit", "sinusoid", "--method", "maml", *quiet, "--validate",
                 "--out", str(d / "run")]) == 0  # fmt: skip
    assert main(["tasks", "sinusoid", "--k", "3", "--num-tasks", "2", "--queries", "4",
                 "--out", str(d / "tasks.npz")]) == 0  # fmt: skip
    rows = _write_csv(d / "rows.csv")
    assert main(["fit", "linear", "--method", "maml", "--data", str(rows), *COLS, *quiet,
                 "--out", str(d / "drun")]) == 0  # fmt: skip
    assert main(["tasks", "--data", str(rows), *COLS, "--k", "2",
                 "--out", str(d / "dtasks.npz")]) == 0  # fmt: skip
    fitted = bm.fit("linear", "maml", data=from_csv(rows, x=["a", "b"], y="y", group="g"),
                    steps=2, progress=False)  # fmt: skip
    fitted.save(d / "nbrun")
    marker = d / "MARKER"
    evil = d / "evil.py"
    sinusoid = (Path(__file__).parent.parent / "models" / "sinusoid.py").read_text()
    evil.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
                    + sinusoid)  # fmt: skip
    return d


# -- zip and npy surgery ------------------------------------------------------------------------
def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _write_zip(path: Path, members: dict[str, bytes], deflate: bool = False) -> None:
    kind = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=kind) as z:
        for name, raw in members.items():
            z.writestr(name, raw)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def _split_npy(raw: bytes) -> tuple[dict, bytes]:
    """An npy member's header (``descr``, ``fortran_order``, ``shape``) and its data bytes."""
    fh = io.BytesIO(raw)
    version = np.lib.format.read_magic(fh)
    read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
        version, np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read(fh)
    return {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
            "shape": shape}, raw[fh.tell():]  # fmt: skip


def _join_npy(header: dict, data: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


def _flip(raw: bytes, rng: np.random.Generator, n: int | None = None) -> bytes:
    b = bytearray(raw)
    if not b:
        return bytes(b)
    for _ in range(n or int(rng.integers(1, 9))):
        b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
    return bytes(b)


def _bomb(path: Path, name: str, header: dict, size: int) -> None:
    """Add ``name`` to the zip at ``path``: ``header`` and ``size`` zero bytes, deflated."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    block = bytes(1 << 20)
    with zipfile.ZipFile(path, "a") as z, z.open(info, "w", force_zip64=True) as fh:
        fh.write(_join_npy(header, b""))
        for _ in range(size >> 20):
            fh.write(block)


JUNK: list = [None, True, False, 0, -1, 1, 2**64, -(10**30), 10**400, 1.5, 1e308, -0.0,
              math.nan, math.inf, "", "x", "sinusoid", "../../etc/passwd", "1e9", "NaN", "é\x00",
              [], {}, [1, 2, 3], ["a", None], {"a": {"b": [None]}}, [[[[[]]]]], "x" * 5000,
              {"saved": "data.npz"}, {"dataset": "nope"}]  # fmt: skip


def _junk(rng: np.random.Generator, like=None):
    """A value of the wrong kind: from :data:`JUNK`, or ``like`` as a string / a huge number."""
    r = rng.random()
    if like is not None and r < 0.15:
        return str(like)  # a string where a number (or a list) goes
    if isinstance(like, int | float) and not isinstance(like, bool) and r < 0.3:
        return like * 10 ** int(rng.integers(3, 40))
    return JUNK[int(rng.integers(len(JUNK)))]


def _paths(obj, prefix=()) -> list[tuple]:
    """Every key path into a JSON value."""
    out = [prefix]
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for k, v in items:
        out += _paths(v, (*prefix, k))
    return out


def _mutate_json(obj, rng: np.random.Generator):
    """One random change of a JSON value: a value replaced, a key removed or added."""
    paths = [p for p in _paths(obj) if p]
    if not paths:
        return _junk(rng)
    path = paths[int(rng.integers(len(paths)))]
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    last, r = path[-1], rng.random()
    if r < 0.2 and isinstance(parent, dict):
        del parent[last]
    elif r < 0.3 and isinstance(parent, dict):
        parent[f"junk{int(rng.integers(100))}"] = _junk(rng)
    else:
        parent[last] = _junk(rng, parent[last])
    return obj


def _json_text(obj, rng: np.random.Generator) -> str:
    """``obj`` as JSON, now and then broken as text (cut short, nested deeply, doubled)."""
    text = json.dumps(obj)
    r = rng.random()
    if r < 0.05:
        return text[: int(rng.integers(len(text)))]
    if r < 0.08:
        return "[" * 50_000 + "]" * 50_000
    if r < 0.1:
        return text.replace("{", '{"a": 1, "a": ', 1) if "{" in text[1:] else text
    return text


# -- mutations of a run directory ---------------------------------------------------------------
def _manifest(members: dict[str, bytes]) -> dict:
    return json.loads(str(np.load(io.BytesIO(members["__manifest__.npy"]))))


def _set_manifest(members: dict[str, bytes], text: str) -> None:
    members["__manifest__.npy"] = _npy(np.array(text))


def _edit_manifests(run: Path, edit: Callable[[dict], dict | str], files=None) -> None:
    """Apply ``edit`` to the manifests of the run's checkpoints (``files``, default both)."""
    for name in files or ("checkpoint.npz", "best.npz"):
        path = run / name
        if not path.is_file():
            continue
        members = _members(path)
        new = edit(_manifest(members))
        _set_manifest(members, new if isinstance(new, str) else json.dumps(new))
        _write_zip(path, members)


def _mutate_member(members: dict[str, bytes], name: str, rng: np.random.Generator,
                   marker: Path) -> str:  # fmt: skip
    """One change of one npy member (its bytes, declared shape or dtype, values); the name of
    the change."""
    raw = members[name]
    header, data = _split_npy(raw)
    choice = int(rng.integers(12))
    if choice == 0:
        members[name] = _flip(raw, rng)
        return "flip"
    if choice == 1:
        shape = tuple(int(rng.integers(0, 5)) for _ in range(int(rng.integers(0, 4))))
        if rng.random() < 0.3:
            shape = (10 ** int(rng.integers(6, 19)),)
        members[name] = _join_npy({**header, "shape": shape}, data)
        return f"shape {shape}"
    if choice == 2:
        descr = ["<f8", "<f2", ">f4", "<i4", "<u1", "|b1", "<c8", "<U2", "|S4", "<m8[s]",
                 "|V4", "<f16"][int(rng.integers(12))]  # fmt: skip
        members[name] = _join_npy({**header, "descr": descr}, data)
        return f"descr {descr}"
    if choice == 3:
        members[name] = _join_npy({**header, "fortran_order": True}, data)
        return "fortran"
    if choice == 4:  # a consistent member of another dtype
        a = np.load(io.BytesIO(raw))
        dt = ["<f8", "<f2", ">f4", "<i8", "|b1", "<c8", "<U3"][int(rng.integers(7))]
        try:
            members[name] = _npy(a.astype(dt))
        except ValueError:  # a string member (the manifest) has no numeric form: truncate it
            dt = "<U3"
            members[name] = _npy(a.astype(dt))
        return f"astype {dt}"
    if choice == 5:  # a consistent member of another shape
        a = np.load(io.BytesIO(raw))
        new = np.resize(a, int(rng.integers(0, a.size + 3)))
        if a.ndim > 1 and rng.random() < 0.5:
            new = a[..., None]
        members[name] = _npy(new)
        return f"reshape {new.shape}"
    if choice == 6:
        a = np.load(io.BytesIO(raw))
        if a.dtype.kind == "f" and a.size:
            a = a.copy()
            a.flat[int(rng.integers(a.size))] = [np.nan, np.inf, -np.inf, 3e38, 1e30][
                int(rng.integers(5))
            ]
            members[name] = _npy(a)
        return "value"
    if choice == 7:
        members[name] = _npy(np.array([_Evil(marker)], dtype=object))
        return "pickle"
    if choice == 8:
        del members[name]
        return "removed"
    if choice == 9:
        members[name[:-4] + "x.npy"] = members.pop(name)
        return "renamed"
    if choice == 10:
        members[f"junk{int(rng.integers(10))}.npy"] = _npy(np.zeros(int(rng.integers(1, 9))))
        return "extra"
    members[name] = raw[: int(rng.integers(len(raw)))]
    return "cut"


def _mutate_run(run: Path, kind: str, base: Path, rng: np.random.Generator) -> str:
    """One change of a copied run directory; its description."""
    marker = base / "MARKER"
    has_best = (run / "best.npz").is_file()
    r = rng.random()
    target = "checkpoint.npz" if not has_best or rng.random() < 0.5 else "best.npz"
    if r < 0.08:  # the whole file's bytes
        path = run / target
        raw = path.read_bytes()
        if rng.random() < 0.5:
            path.write_bytes(_flip(raw, rng))
            return f"{target}: bytes flipped"
        path.write_bytes(raw[: int(rng.integers(len(raw)))])
        return f"{target}: truncated"
    if r < 0.35:  # one member
        members = _members(run / target)
        name = sorted(members)[int(rng.integers(len(members)))]
        what = _mutate_member(members, name, rng, marker)
        _write_zip(run / target, members, deflate=rng.random() < 0.2)
        return f"{target}: {name} {what}"
    if r < 0.62:  # the manifest's fields, in one file or both
        files = [target] if rng.random() < 0.4 else None
        seen: list = []

        def edit(m: dict):
            out = _json_text(_mutate_json(m, rng), rng)
            seen.append(out[:200])
            return out

        _edit_manifests(run, edit, files)
        return f"manifest of {files or 'both'}: {seen[0]!r}"
    if r < 0.75:  # run.json
        path = run / "run.json"
        info = json.loads(path.read_text())
        choice = rng.random()
        if choice < 0.15:
            path.write_bytes(_flip(path.read_bytes(), rng))
        elif choice < 0.2:
            path.write_bytes("é".encode("latin-1") + path.read_bytes())
        elif choice < 0.25:
            path.unlink()
        else:
            path.write_text(_json_text(_mutate_json(info, rng), rng))
        return f"run.json: {path.read_bytes()[:200] if path.exists() else 'removed'!r}"
    if r < 0.8:  # the planted model file, with its true hash: never run without trust
        digest = hashlib.sha256((base / "evil.py").read_bytes()).hexdigest()

        def evil(m: dict) -> dict:
            m.update(model_source=str(base / "evil.py"), model_sha256=digest, model_kind="file")
            if rng.random() < 0.5:
                m.pop("data", None)
            return m

        _edit_manifests(run, evil)
        return "model file planted"
    if r < 0.84:  # a legacy pickle that would run code
        (run / "checkpoint.npz").unlink()
        (run / "checkpoint.pkl").write_bytes(pickle.dumps(_Evil(marker)))
        return "checkpoint.pkl planted"
    if r < 0.88:  # best.npz removed, or another run's checkpoint as best.npz
        if rng.random() < 0.5 or not has_best:
            (run / "best.npz").unlink(missing_ok=True)
            return "best.npz removed"
        other = base / ("drun" if kind == "run" else "run")
        shutil.copy(other / "checkpoint.npz", run / "best.npz")
        return "best.npz of another run"
    if r < 0.9:  # a zip bomb member
        path = run / target
        members = _members(path)
        name = sorted(n for n in members if n.startswith("state"))[0]
        header, _ = _split_npy(members.pop(name))
        _write_zip(path, members)
        size = (MAX_RSS_GROWTH_MB + 128) << 20
        _bomb(path, name, {**header, "shape": (size // 4,), "descr": "<f4"}, size)
        return f"{target}: {name} a zip bomb"
    return _mutate_data(run, kind, base, rng)


def _mutate_data(run: Path, kind: str, base: Path, rng: np.random.Generator) -> str:
    """The run's data: data.npz (its hash updated, as a crafted directory would), or the data
    entry of a run on a CSV file."""
    if kind == "nbrun":
        path = run / "data.npz"
        members = _members(path)
        name = sorted(members)[int(rng.integers(len(members)))]
        if name == "meta.npy" and rng.random() < 0.7:
            meta = json.loads(np.load(io.BytesIO(members[name])).tobytes().decode())
            text = _json_text(_mutate_json(meta, rng), rng)
            members[name] = _npy(np.frombuffer(text.encode(), np.uint8))
            what = f"meta {text[:120]!r}"
        else:
            what = _mutate_member(members, name, rng, base / "MARKER")
        _write_zip(path, members)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()

        def rehash(m: dict) -> dict:
            if isinstance(m.get("data"), dict):
                m["data"]["sha256"] = digest
            return m

        _edit_manifests(run, rehash)
        return f"data.npz: {name} {what}"
    if kind == "drun":

        def entry(m: dict) -> dict:
            m["data"] = _mutate_json(m["data"], rng)
            return m

        seen: list = []
        _edit_manifests(run, lambda m: seen.append(entry(m)["data"]) or m)
        return f"data entry: {str(seen[0])[:200]}"
    # a run without data: give it one
    _edit_manifests(run, lambda m: {**m, "data": _junk(rng), "model_kind": "data"})
    return "data entry added"


# -- mutations of a task file and of a CSV ------------------------------------------------------
def _mutate_tasks(path: Path, rng: np.random.Generator, marker: Path) -> str:
    r = rng.random()
    if r < 0.1:
        path.write_bytes(_flip(path.read_bytes(), rng))
        return "bytes flipped"
    if r < 0.15:
        raw = path.read_bytes()
        path.write_bytes(raw[: int(rng.integers(len(raw)))])
        return "truncated"
    if r < 0.18:
        members = _members(path)
        name = sorted(members)[int(rng.integers(len(members)))]
        header, _ = _split_npy(members.pop(name))
        _write_zip(path, members)
        size = (MAX_RSS_GROWTH_MB + 128) << 20
        _bomb(path, name, {**header, "shape": (1, 1, size // 4), "descr": "<f4"}, size)
        return f"{name} a zip bomb"
    members = _members(path)
    if r < 0.25:
        members[f"{['x', 'y', 'mask'][int(rng.integers(3))]}_pool.npy"] = _npy(
            np.zeros((2, 3, 1), np.float32)
        )
        _write_zip(path, members)
        return "pool key added"
    if r < 0.3:
        members["mask_query.npy"] = _npy(np.asarray(_junk(rng) if rng.random() < 0.5 else
                                                     rng.integers(-1, 3, size=(2, 4))))  # fmt: skip
        _write_zip(path, members)
        return "mask_query junk"
    name = sorted(members)[int(rng.integers(len(members)))]
    what = _mutate_member(members, name, rng, marker)
    _write_zip(path, members, deflate=rng.random() < 0.2)
    return f"{name} {what}"


CELLS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e308", "1e39", "3e38", "-3.4e38", "1e-320",
         "", " ", "NA", "1,5", "0x10", "1_000", "١٢", "True", '"', "\x00", "é", "\u2028",
         "9" * 400, "s1", "1e5", "-0"]  # fmt: skip


def _mutate_csv(text: str, rng: np.random.Generator) -> tuple[bytes, str]:
    lines = text.splitlines()
    header = lines[0].split(",")
    r = rng.random()
    if r < 0.12:
        return _flip(text.encode(), rng), "bytes flipped"
    if r < 0.22:
        i = int(rng.integers(len(lines)))
        lines[i] = lines[i][: int(rng.integers(len(lines[i]) + 1))]
        return "\n".join(lines).encode(), f"line {i + 1} cut"
    if r < 0.3:
        enc = ["latin-1", "utf-16", "utf-16-be", "cp1252", "utf-32", "utf-7"][int(rng.integers(6))]
        lines[3] = lines[3].replace("s0", "sé", 1)
        return "\n".join(lines).encode(enc), f"encoded {enc}"
    if r < 0.38:
        i = int(rng.integers(len(lines)))
        extra = "," + CELLS[int(rng.integers(len(CELLS)))]
        lines = [ln + (extra if j == i or rng.random() < 0.5 else "") for j, ln in enumerate(lines)]
        return "\n".join(lines).encode(), "extra column"
    if r < 0.46:
        col = int(rng.integers(len(header)))
        rows = [",".join(c for j, c in enumerate(ln.split(",")) if j != col) for ln in lines]
        if rng.random() < 0.5:  # only some rows lose it
            rows = [a if rng.random() < 0.7 else b for a, b in zip(lines, rows, strict=True)]
        return "\n".join(rows).encode(), f"column {header[col]} missing"
    if r < 0.7:
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(1, len(lines)))
            cells = lines[i].split(",")
            cells[int(rng.integers(len(cells)))] = CELLS[int(rng.integers(len(CELLS)))]
            lines[i] = ",".join(cells)
        return "\n".join(lines).encode(), "cells replaced"
    if r < 0.76:
        return b"\xef\xbb\xbf" * int(rng.integers(1, 3)) + text.encode(), "BOM"
    if r < 0.82:
        h = list(header)
        h[int(rng.integers(len(h)))] = h[int(rng.integers(len(h)))]
        if rng.random() < 0.3:
            h[0] = " " + h[0].upper()
        return "\n".join([",".join(h), *lines[1:]]).encode(), f"header {h}"
    if r < 0.86:
        keep = int(rng.integers(0, 6))
        return "\n".join(lines[:keep]).encode(), f"only {keep} lines"
    if r < 0.9:
        col = int(rng.integers(len(header)))
        value = CELLS[int(rng.integers(len(CELLS)))]
        rows = [ln.split(",") for ln in lines[1:]]
        for c in rows:
            c[col] = value
        return "\n".join([lines[0], *(",".join(c) for c in rows)]).encode(), f"{col} all {value}"
    if r < 0.94:
        return text.replace(
            "\n", ["\r\n", "\r", "\n\n", ";\n"][int(rng.integers(4))]
        ).encode(), "eol"
    if r < 0.97:
        i = int(rng.integers(1, len(lines)))
        lines[i] = '"' + lines[i]
        return "\n".join(lines).encode(), "unbalanced quote"
    return ("\n".join(lines) + "\n" + lines[-1] * int(rng.integers(2, 50))).encode(), "long line"


# -- calling the command line ---------------------------------------------------------------------
class Checker:
    """Calls ``main`` and records every way a call breaks the contract."""

    def __init__(self, capsys, marker: Path):
        self.capsys, self.marker = capsys, marker
        self.problems: list[str] = []
        self.codes: dict[int, int] = {}
        self.seconds: dict[str, float] = {}

    def __call__(self, argv: list[str], what: str, report: Path | None = None) -> int:
        self.capsys.readouterr()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException as err:  # noqa: BLE001 - every escape is a finding
            tail = "".join(traceback.format_exception(err)[-3:]).strip().replace("\n", " | ")
            rc = -1
            self.problems.append(f"{what} :: {argv[0]}: uncaught {tail[-600:]}")
        key = f"{argv[0]} exit {rc}"
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        out = self.capsys.readouterr()
        self.codes[rc] = self.codes.get(rc, 0) + 1
        err_lines = out.err.strip().splitlines()
        if rc == 2 and len(err_lines) != 1:
            self.problems.append(f"{what} :: {argv[0]}: exit 2 with {len(err_lines)} lines: "
                                 f"{out.err[-600:]!r}")  # fmt: skip
        elif rc not in (0, 2, -1):
            self.problems.append(f"{what} :: {argv[0]}: exit {rc}: {out.err[-800:]!r}")
        if rc == 0 and report is not None and report.is_file():
            rep = json.loads(report.read_text())
            if any(math.isnan(rep.get(k) or 0.0) for k in ("nll", "mse", "accuracy")):
                self.problems.append(f"{what} :: {argv[0]}: a report with nll={rep.get('nll')}")
        if self.marker.exists():
            self.problems.append(f"{what} :: {argv[0]}: CODE RAN (the marker was written)")
            self.marker.unlink()
        if grown > MAX_RSS_GROWTH_MB:
            self.problems.append(f"{what} :: {argv[0]}: peak RSS grew {grown:.0f} MiB")
        return rc

    def verdict(self, n: int) -> None:
        spent = {k: round(v) for k, v in sorted(self.seconds.items())}
        summary = f"{n} mutations, exit codes {self.codes}, seconds {spent}"
        print(summary, file=sys.__stderr__)
        assert not self.problems, summary + "\n" + "\n".join(self.problems)


def _evaluate(run: Path, tasks: Path, out: Path) -> list[str]:
    return ["evaluate", str(run), "--tasks", str(tasks), "--samples", "3", "--quiet",
            "--out", str(out)]  # fmt: skip


RUNS = {"run": "tasks.npz", "drun": "dtasks.npz", "nbrun": "dtasks.npz"}


def test_mutated_run_directories(base, tmp_path, capsys):
    rng = np.random.default_rng([SEED, 0])
    check = Checker(capsys, base / "MARKER")
    kinds = sorted(RUNS)
    for i in range(N_RUN):
        kind = kinds[int(rng.integers(len(kinds)))]
        run = tmp_path / f"m{i}"
        shutil.copytree(base / kind, run)
        what = f"#{i} {kind} " + _mutate_run(run, kind, base, rng)
        check(["info", str(run)], what)
        if " run.json: " not in what:  # evaluate does not read run.json
            check(_evaluate(run, base / RUNS[kind], run / "r.json"), what, run / "r.json")
        shutil.rmtree(run)
    check.verdict(N_RUN)


def test_mutated_task_files(base, tmp_path, capsys):
    rng = np.random.default_rng([SEED, 1])
    check = Checker(capsys, base / "MARKER")
    for i in range(N_TASKS):
        kind = ["run", "drun"][int(rng.integers(2))]
        tasks = tmp_path / f"t{i}.npz"
        shutil.copy(base / RUNS[kind], tasks)
        what = f"#{i} {RUNS[kind]} " + _mutate_tasks(tasks, rng, base / "MARKER")
        check(_evaluate(base / kind, tasks, tmp_path / "r.json"), what, tmp_path / "r.json")
        with contextlib.suppress(FileNotFoundError):
            (tmp_path / "r.json").unlink()
        tasks.unlink()
    check.verdict(N_TASKS)


def test_mutated_csv_files(base, tmp_path, capsys):
    rng = np.random.default_rng([SEED, 2])
    check = Checker(capsys, base / "MARKER")
    text = (base / "rows.csv").read_text()
    for i in range(N_CSV):
        raw, what = _mutate_csv(text, rng)
        data = tmp_path / f"d{i}.csv"
        data.write_bytes(raw)
        what = f"#{i} {what}"
        check(["tasks", "--data", str(data), *COLS, "--k", "2",
               "--out", str(tmp_path / "t.npz")], what)  # fmt: skip
        method = "maml" if i % MAML_EVERY == 0 else "reference"
        check(["fit", "linear", "--method", method, "--data", str(data), *COLS, "--steps", "2",
               "--quiet", "--force", "--out", str(tmp_path / "run")], what)  # fmt: skip
        data.unlink()
    check.verdict(N_CSV)
