"""Run directories: the one writer and the one reader of a fitted run.

A run directory holds ``checkpoint.npz`` (the state and the run's manifest, data only:
:mod:`bayesmeta.checkpoint`), ``best.npz`` when the run validated, ``run.json`` (its record:
settings, history, seconds, versions) and, for a run fitted on data held in memory,
``data.npz`` (the split groups it was fitted on, data only). :func:`write_run` writes them,
:func:`load_run` reads them back without running code the user did not ask for, and
:func:`run_info` / :func:`upgrade` serve ``bayesmeta info`` and ``bayesmeta upgrade``.

The manifest's ``model_kind`` says how the model comes back: ``builtin`` (by name), ``file``
(a model file, run only when named or trusted and only if its SHA-256 matches), ``data`` (the
built-in ``linear`` / ``mlp`` data models, rebuilt from the run's data) or ``object`` (a model
given as a Python object, which the caller passes again).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bayesmeta.atomic import remove_stale_temps, save_npz, write_text
from bayesmeta.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    LEGACY_CHECKPOINT_NAME,
    MAX_STATE_BYTES,
    CheckpointError,
    as_json,
    file_sha256,
    load_checkpoint,
    load_legacy_checkpoint,
    read_manifest,
    read_npz,
    restore_state,
    save_checkpoint,
    state_arrays,
    template_nbytes,
)
from bayesmeta.errors import UsageError

RUN_JSON = "run.json"
DATA_NAME = "data.npz"
#: The lock file of a run directory on a file system that cannot lock the directory itself
#: (:func:`run_dir_lock`).
LOCK_NAME = ".lock"
MODEL_KINDS = ("builtin", "file", "data", "object")
_SPLIT_FIELDS = ("x", "y", "lengths", "groups")
#: The files of a run directory whose temporary files a crash may leave (``NAME.*.tmp``).
_WRITTEN = (CHECKPOINT_NAME, BEST_NAME, RUN_JSON, DATA_NAME)
#: The most bytes ``run.json`` may hold (its history included).
MAX_RUN_JSON_BYTES = 64 << 20
#: A manifest's identity: ``best.npz`` must share it with ``checkpoint.npz`` (one run).
IDENTITY_KEYS = ("run_id", "model_source", "model_sha256", "method", "seed", "settings")
#: The largest value a saved run may give an integer setting (or each entry of a list of
#: them): sizes that would make loading or adapting allocate or loop without bound. Other
#: integer settings are capped at :data:`DEFAULT_SIZE_CAP`.
SIZE_CAPS = {
    "num_particles": 1_000,
    "inner_steps": 1_000,
    "leader_steps": 1_000,
    "inner_samples": 10_000,
    "outer_samples": 10_000,
    "train_samples": 10_000,
    "head_components": 1_000,
    "encoder_sizes": 65_536,
    "meta_batch": 1_000_000,
    "num_query": 1_000_000,
}
DEFAULT_SIZE_CAP = 10**9
_held: dict[str, int] = {}  # run directories this process holds the lock of -> depth


# -- one writer at a time -----------------------------------------------------------------------
@contextlib.contextmanager
def run_dir_lock(run_dir: str | os.PathLike, arg: str = "RUN_DIR") -> Iterator[Path]:
    """Hold the run directory's lock (``fcntl.flock``, exclusive) while writing it.

    The lock is taken on the directory itself, so a refused or finished command leaves no
    file behind; where the file system cannot lock a directory, on ``RUN_DIR/.lock``. The
    directory is made if it is missing. A second writer (another process) is refused at once
    with a UsageError naming the directory; the lock is released when the block ends, on an
    error too, and by the operating system if the process dies. Nested blocks of one process
    on one directory share the lock. Once it is held, temporary files that a crashed writer
    left (``checkpoint.npz.*.tmp``, ...) are removed: no writer is active.

    Parameters
    ----------
    run_dir : path
    arg : str
        How the refusal names the directory (``--out``, ``run_dir``, ``RUN_DIR``).
    """
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if key in _held:
        _held[key] += 1
        try:
            yield path
        finally:
            _held[key] -= 1
        return
    fd = _lock(path, arg)
    _held[key] = 1
    try:
        remove_stale_temps(path, _WRITTEN)
        yield path
    finally:
        del _held[key]
        os.close(fd)


def _lock(path: Path, arg: str) -> int:
    """An open descriptor holding the exclusive lock of ``path`` (a directory)."""
    import errno
    import fcntl

    busy = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError as err:
        os.close(fd)
        if err.errno in busy:
            raise _in_use(path, path, arg) from None
    # a file system that cannot lock a directory (NFS): a lock file in it
    lock = path / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        raise UsageError(
            f"{arg}: cannot open the lock file {str(lock)!r} ({err.strerror or err}); expected "
            "a writable run directory"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise _in_use(path, lock, arg) from None
    return fd


def _in_use(path: Path, lock: Path, arg: str) -> UsageError:
    return UsageError(
        f"{arg}: {str(path)!r} is in use by another bayesmeta command (it holds the lock of "
        f"{str(lock)!r}); wait for it to finish or write elsewhere"
    )


# -- the data a run was fitted on ---------------------------------------------------------------
class DataRef:
    """A grouped data file and how to read and split it (``--data``, ``--group``, ``--x``,
    ``--y``, ``--split-seed``). Reading it runs no code. The split depends only on the file
    and ``split_seed``, so ``fit`` and ``tasks`` see the same train / validation / test
    groups."""

    def __init__(self, path, group=None, x=None, y=None, split_seed=0, sha256=None,
                 labels=False):  # fmt: skip
        self.path = str(Path(path).resolve()) if Path(path).exists() else str(path)
        self.group, self.y, self.labels = group, y, bool(labels)
        self.x = [c for c in x.split(",") if c] if isinstance(x, str) else x
        self.split_seed, self.sha256 = split_seed, sha256

    def rows(self):
        from bayesmeta.tasks.data import load_rows

        rows = load_rows(self.path, x=self.x, y=self.y, group=self.group, labels=self.labels)
        digest = file_sha256(self.path)
        if self.sha256 is not None and digest != self.sha256:
            raise ValueError(
                f"--data: {self.path!r} has SHA-256 {digest[:16]}..., but the run was fitted on "
                f"{self.sha256[:16]}...: the data file has changed since the run"
            )
        self.sha256 = digest
        return rows

    def splits(self):
        """The file's rows split by group (train / validation / test) by ``split_seed``."""
        return self.rows().split(seed=self.split_seed)

    def manifest(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "group": self.group,
            "x": self.x,
            "y": self.y,
            "split_seed": self.split_seed,
            "labels": self.labels,
        }

    @classmethod
    def from_manifest(cls, d: dict) -> DataRef:
        return cls(d["path"], d.get("group"), d.get("x"), d.get("y"), d.get("split_seed", 0),
                   d.get("sha256"), d.get("labels", False))  # fmt: skip


def save_splits(path: str | os.PathLike, splits) -> str:
    """Write the three splits of a data set and their standardiser to ``path`` (``.npz``, data
    only, atomic); return the SHA-256 of what was written, which the manifest records."""
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "validation", "test"):
        part = splits[split]
        for f in _SPLIT_FIELDS:
            a = np.asarray(getattr(part, f))
            arrays[f"{split}.{f}"] = a.astype(str) if a.dtype.kind == "O" else a
    meta = {
        "name": splits.train.name,
        "features": list(splits.train.features),
        "target": splits.train.target,
        "scaler": splits.scaler.to_json(),
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
    save_npz(path, arrays)
    return file_sha256(path)


def load_splits(path: str | os.PathLike, sha256: str | None = None):
    """The :class:`~bayesmeta.tasks.data.Splits` written by :func:`save_splits`, read without
    pickle and checked against the SHA-256 the run recorded."""
    from bayesmeta.tasks.data import Splits, Standardizer
    from bayesmeta.tasks.grouped import GroupedData

    path = Path(path)
    where = f"checkpoint: the run's data {str(path)!r}"
    if not path.is_file():
        raise CheckpointError(f"{where} is missing")
    if sha256 is not None and file_sha256(path) != sha256:
        raise CheckpointError(f"{where} has changed since the run was saved")
    names = {f"{split}.{f}" for split in ("train", "validation", "test") for f in _SPLIT_FIELDS}
    arrays = read_npz(path, where, lambda name: name in names or name == "meta")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (KeyError, ValueError, RecursionError) as err:  # a missing meta, bad UTF-8 or JSON
        raise CheckpointError(f"{where} has no readable meta ({type(err).__name__})") from None
    _check_splits(where, arrays, meta)
    try:
        scaler = Standardizer.from_json(meta["scaler"])
        parts = {}
        for split in ("train", "validation", "test"):
            parts[split] = GroupedData(
                name=str(meta["name"]),
                split=split,
                **{f: arrays[f"{split}.{f}"] for f in _SPLIT_FIELDS},
                features=tuple(meta["features"]),
                target=str(meta["target"]),
                x_mean=scaler.x_mean,
                x_std=scaler.x_scale,
                y_mean=scaler.y_mean,
                y_std=scaler.y_scale,
            )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint: the run's data {str(path)!r} is corrupt ({type(err).__name__})"
        ) from None
    return Splits(**parts, scaler=scaler)


def _check_splits(where: str, arrays: dict[str, np.ndarray], meta: Any) -> None:
    """Refuse the arrays and meta of a ``data.npz`` that :func:`save_splits` cannot have
    written: every split's ``x (N, L, Dx)`` finite floats, ``y (N, L, Dy)`` finite floats or
    ``(N, L)`` integer labels, ``lengths (N,)`` integers in 1..L, ``groups (N,)``, one Dx and
    one kind of ``y`` in all splits, and a meta naming Dx features, a target and a scaler."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where} has meta={_short(meta)}; expected a JSON object")
    features, name, target = meta.get("features"), meta.get("name"), meta.get("target")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise CheckpointError(f"{where} has features={_short(features)}; expected column names")
    if not isinstance(name, str) or not isinstance(target, str):
        raise CheckpointError(
            f"{where} has name={_short(name)}, target={_short(target)}; expected strings"
        )
    shapes = set()
    for split in ("train", "validation", "test"):
        x, y, n, g = (arrays.get(f"{split}.{f}") for f in _SPLIT_FIELDS)
        if any(a is None for a in (x, y, n, g)):
            raise CheckpointError(f"{where} lacks one of the {split} arrays {list(_SPLIT_FIELDS)}")
        label = y.ndim == 2 and y.dtype.kind in "iu"
        problem = None
        if x.dtype.kind != "f" or x.ndim != 3 or min(x.shape) < 1 or x.shape[2] != len(features):
            problem = f"x {x.dtype} of shape {x.shape}; expected (N, L, {len(features)}) floats"
        elif not (label or (y.ndim == 3 and y.dtype.kind == "f" and y.shape[2] >= 1)):
            problem = f"y {y.dtype} of shape {y.shape}; expected (N, L, Dy) floats or (N, L) labels"
        elif y.shape[:2] != x.shape[:2] or n.shape != x.shape[:1] or g.shape != x.shape[:1]:
            problem = (f"shapes x {x.shape}, y {y.shape}, lengths {n.shape}, groups {g.shape}; "
                       "expected one N and L")  # fmt: skip
        elif n.dtype.kind not in "iu" or n.min() < 1 or n.max() > x.shape[1]:
            problem = f"lengths {n.dtype} in [{n.min()}, {n.max()}]; expected 1..{x.shape[1]}"
        elif not np.isfinite(x).all() or (not label and not np.isfinite(y).all()):
            problem = "non-finite x or y; expected finite values"
        if problem is not None:
            raise CheckpointError(f"{where} has {split} {problem}, so it is corrupt")
        shapes.add((x.shape[2], y.shape[2:], label))
    if len(shapes) != 1:
        raise CheckpointError(f"{where} has splits of different Dx or y ({sorted(shapes)})")
    ((dx, dy, label),) = shapes
    check_scaler(where, meta.get("scaler"), dx, None if label else dy[0])


#: The largest magnitude of a standardiser's entries (the device computes in float32).
_F32_MAX = float(np.finfo(np.float32).max)


def check_scaler(where: str, scaler: Any, dx: int | None, dy: int | None) -> None:
    """Refuse a standardiser (a manifest's or a ``data.npz``'s ``scaler``) other than
    ``x_mean`` and ``x_scale`` of ``dx`` finite numbers and ``y_mean`` and ``y_scale`` of ``dy``
    (or both null; always null for labels, ``dy`` None), every scale positive and every entry
    within float32 range; ``dx`` or ``dy`` 0 means any length."""
    if not isinstance(scaler, dict):
        raise CheckpointError(f"{where} has scaler={_short(scaler)}; expected a standardiser")

    def numbers(v: Any, n: int) -> bool:
        return (isinstance(v, list) and len(v) >= 1 and (not n or len(v) == n)
                and all(isinstance(e, int | float) and not isinstance(e, bool)
                        and abs(e) <= _F32_MAX for e in v))  # fmt: skip

    for mean, scale, n in (("x_mean", "x_scale", dx), ("y_mean", "y_scale", dy)):
        m, sc = scaler.get(mean), scaler.get(scale)
        if mean == "y_mean" and m is None and sc is None:
            continue
        if n is None or not (numbers(m, n) and numbers(sc, len(m)) and min(sc) > 0):
            want = "null (labels)" if n is None else f"{n or 'D'} finite numbers (scales > 0)"
            raise CheckpointError(
                f"{where} has scaler {mean}={_short(m)}, {scale}={_short(sc)}; expected {want}"
            )


def _check_data_ref(run_dir: str | os.PathLike, entry: dict) -> None:
    """Refuse a data file's manifest entry whose fields are not what
    :meth:`DataRef.manifest` writes (a path, column names, a split seed, a hash)."""
    kinds = {"path": str, "group": str | None, "y": str | None, "x": list | None,
             "split_seed": int, "labels": bool, "sha256": str | None}  # fmt: skip
    for key, kind in kinds.items():
        value = entry.get(key, False if key == "labels" else 0 if key == "split_seed" else None)
        bad = not isinstance(value, kind)
        if key == "split_seed" and not bad:
            bad = isinstance(value, bool) or not 0 <= value < 2**32
        if key == "x" and isinstance(value, list):
            bad = not value or not all(isinstance(c, str) for c in value)
        if bad:
            raise CheckpointError(
                f"checkpoint: {str(run_dir)!r} has a corrupt data entry ({key}={_short(value)})"
            )


def data_entry(data: Any) -> dict | None:
    """The manifest's ``data`` entry for the data a run is fitted on: a file's
    :meth:`DataRef.manifest`, a built-in data set's name, or (rows or splits held in memory)
    ``{"saved": "data.npz"}``, which :func:`write_run` fills in with the stored file's hash."""
    from bayesmeta.tasks.grouped import DATASETS

    if data is None:
        return None
    if isinstance(data, DataRef):
        return data.manifest()
    if isinstance(data, str) and data in DATASETS:
        return {"dataset": data, "split_seed": 0}
    return {"saved": DATA_NAME, "sha256": None}


def splits_of_entry(run_dir: str | os.PathLike, entry: dict, data: str | None = None):
    """The split data a manifest's ``data`` entry names (:func:`data_entry`); ``data``
    replaces the recorded path of a data file that has moved (its SHA-256 is still checked)."""
    if data is not None:
        if not isinstance(entry, dict) or "saved" in entry or "dataset" in entry:
            what = "data held in memory (data.npz)" if "saved" in entry else "a built-in data set"
            raise UsageError(
                f"--data: the run in {str(run_dir)!r} was fitted on {what}, not on a data "
                f"file; expected no --data, got {str(data)!r}"
            )
        entry = {**entry, "path": str(data)}
    try:
        if "saved" in entry:
            if entry["saved"] != DATA_NAME:  # never a path out of the run directory
                raise KeyError("saved")
            return load_splits(Path(run_dir) / DATA_NAME, entry.get("sha256"))
        if "dataset" in entry:
            from bayesmeta.tasks.grouped import DATASETS, dataset_splits

            seed = entry.get("split_seed", 0)
            if not isinstance(entry["dataset"], str) or entry["dataset"] not in DATASETS:
                raise KeyError("dataset")
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
                raise KeyError("split_seed")
            return dataset_splits(entry["dataset"], seed)
        _check_data_ref(run_dir, entry)
        return DataRef.from_manifest(entry).splits()
    except (KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint: {str(run_dir)!r} has a corrupt data entry ({err})"
        ) from None


# -- writing a run ------------------------------------------------------------------------------
def prepare_run_dir(out: str | os.PathLike, manifest: dict, splits=None) -> dict:
    """Make ``out`` and write what the run's checkpoints will refer to (``data.npz`` for data
    held in memory); return the manifest with that file's hash filled in."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entry = manifest.get("data")
    if isinstance(entry, dict) and "saved" in entry:
        if splits is None:
            raise ValueError("splits: a run on data held in memory needs its splits to save")
        manifest = {**manifest, "data": {**entry, "sha256": save_splits(out / DATA_NAME, splits)}}
    return manifest


def write_run(out: str | os.PathLike, manifest: dict, state, key, info: dict, splits=None) -> Path:
    """Write a whole run directory: its data (:func:`prepare_run_dir`), ``checkpoint.npz``
    (the state and ``manifest``) and ``run.json`` (``info``), each atomically, holding the
    directory's lock (:func:`run_dir_lock`). A manifest without a ``run_id`` gets one; a
    ``best.npz`` of another run is removed."""

    out = Path(out)
    if not manifest.get("run_id"):
        manifest = {**manifest, "run_id": uuid.uuid4().hex}
    with run_dir_lock(out, "run_dir"):
        manifest = prepare_run_dir(out, manifest, splits)
        save_checkpoint(
            out / CHECKPOINT_NAME,
            {**manifest, "state": state, "key": key, "step": int(state.step),
             "history": info.get("history") or {}},
        )  # fmt: skip
        best = out / BEST_NAME
        if best.exists() or best.is_symlink():
            try:
                check_best(str(out), read_manifest(best), manifest)
            except CheckpointError:
                best.unlink()
        data = manifest.get("data")
        write_run_json(out, {**info, "data": data} if data else info)
    return out


def write_run_json(out: str | os.PathLike, info: dict) -> Path:
    """``run.json``: the run's record (settings, history, seconds, versions), atomically."""
    return write_text(Path(out) / RUN_JSON, json.dumps(info, indent=2, default=str))


def read_run_json(run_dir: str | os.PathLike) -> dict:
    """A run directory's ``run.json`` (``{}`` when it has none), or one clear error."""
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        return {}
    size = path.stat().st_size
    if size > MAX_RUN_JSON_BYTES:
        raise UsageError(f"RUN_DIR: {str(path)!r} holds {size} bytes; expected a run record of "
                         f"at most {MAX_RUN_JSON_BYTES}")  # fmt: skip
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise UsageError(
            f"RUN_DIR: {str(path)!r} is not readable JSON ({type(err).__name__})"
        ) from None
    if not isinstance(info, dict):
        raise UsageError(f"RUN_DIR: {str(path)!r} holds a {type(info).__name__}, not a record")
    return info


# -- reading a run ------------------------------------------------------------------------------
def load_run(
    run_dir: str,
    *,
    model: Any = None,
    trust_model_file: bool = False,
    allow_pickle: bool = False,
    prefer_best: bool = True,
    spec=None,
    optimizer=None,
    data: str | os.PathLike | None = None,
):
    """``(spec, method, state, manifest)`` of a fitted run directory, without running code
    the user did not ask for. ``spec`` (a ModelSpec) replaces the one the manifest names (a
    run whose model was an object, :func:`bayesmeta.load`); ``optimizer`` is the run's own
    when it was not the recipe's (the state holds its shape); ``data`` is the data file of a
    run fitted on a CSV that has moved since (``evaluate --data``; its SHA-256 is checked).

    Nothing is allocated before it is checked: the manifest's sizes against
    :data:`SIZE_CAPS`, the method's state template by ``jax.eval_shape`` against
    :data:`~bayesmeta.checkpoint.MAX_STATE_BYTES`, and each stored array's declared shape
    against the template, before any array is read. A ``best.npz`` is used only if its
    manifest names the same run as ``checkpoint.npz`` (:func:`check_best`).

    The checkpoint is data only (:mod:`bayesmeta.checkpoint`). A run fitted with a built-in
    model loads that model by name. A run fitted with a model file records the file's path
    and SHA-256: it is executed only when the user names it (``model``, ``--model FILE``) or
    passes ``trust_model_file``, and only if its hash still matches. A legacy pickle
    checkpoint (``checkpoint.pkl``) is read only with ``allow_pickle`` (unsafe). A run that
    was validated during training holds ``best.npz`` (the lowest validation NLL), which is
    loaded unless ``prefer_best`` is False (``fit --resume`` continues from the last state).

    Raises
    ------
    ValueError
        ``run_dir`` is not a directory.
    CheckpointError
        Its checkpoint is missing, corrupt, unsafe to read without a flag, names a model or
        method that cannot be built, names a model file that was not trusted or has changed,
        or holds parameters whose shapes do not match that model (or that are not finite).
    """
    import jax
    import numpy as np

    from bayesmeta.modelfiles import builtin_models

    path = Path(run_dir)
    if not path.exists():
        raise ValueError(f"RUN_DIR: no run directory at {run_dir!r}")
    if not path.is_dir():
        raise ValueError(
            f"RUN_DIR: expected a run directory (from bayesmeta fit --out), got the file "
            f"{run_dir!r}"
        )
    legacy = path / LEGACY_CHECKPOINT_NAME
    if not (path / CHECKPOINT_NAME).exists() and legacy.exists():
        if not allow_pickle:
            raise CheckpointError(
                f"checkpoint: {run_dir!r} holds a legacy pickle checkpoint (checkpoint.pkl), "
                "which can run code when read; for a run you trust, convert it with "
                "`bayesmeta upgrade RUN_DIR` or pass --allow-pickle (unsafe)"
            )
        payload = load_legacy_checkpoint(legacy)
        if "state" not in payload:
            raise CheckpointError(f"checkpoint: {run_dir!r} lacks 'state'; not a bayesmeta run")
        payload["arrays"] = state_arrays(payload.pop("state"))
        source = payload.get("model_source")
        if isinstance(source, str) and source not in builtin_models() and Path(source).is_file():
            # format 1 recorded no hash; the user trusts this run, so trust its file as it is
            payload.setdefault("model_sha256", file_sha256(source))
        file = None
    else:
        best = prefer_best and (path / BEST_NAME).is_file()
        file = path / (BEST_NAME if best else CHECKPOINT_NAME)
        payload = read_manifest(file)
        snapshot = json.dumps(payload, sort_keys=True)
        if best and (path / CHECKPOINT_NAME).is_file():
            check_best(run_dir, payload, read_manifest(path / CHECKPOINT_NAME))
    for key, kind in (("model_source", str), ("method", str), ("settings", dict)):
        if key not in payload:
            raise CheckpointError(f"checkpoint: {run_dir!r} lacks {key!r}; not a bayesmeta run")
        if not isinstance(payload[key], kind):
            raise CheckpointError(
                f"checkpoint: {run_dir!r} has {key}={payload[key]!r}; expected a "
                f"{kind.__name__}, so it is corrupt"
            )
    check_sizes(run_dir, payload)
    if spec is None:
        spec = _spec_of_run(run_dir, payload, model, trust_model_file, data)
    elif data is not None:
        raise UsageError("data: only for a run loaded from its manifest (not with spec=)")
    try:
        method, _ = spec.build_from_manifest(payload, optimizer=optimizer)
    except (ValueError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint: {run_dir!r} names model {payload['model_source']!r} / method "
            f"{payload['method']!r}, which cannot be built ({str(err).splitlines()[0]})"
        ) from None
    where = f"checkpoint: {run_dir!r} (model {spec.name!r} / method {payload['method']!r})"
    if payload.get("scaler") is not None:  # evaluate reports in the data's units through it
        m = spec.model
        dy = None if getattr(m, "likelihood", None) == "categorical" else getattr(m, "dy", 0)
        check_scaler(where, payload["scaler"], getattr(m, "dx", 0) or 0, dy)
    template = jax.eval_shape(method.init, jax.random.PRNGKey(0))  # shapes, nothing allocated
    size = template_nbytes(template)
    if size > MAX_STATE_BYTES:
        raise CheckpointError(
            f"{where}: its settings make a state of {size} bytes; expected at most "
            f"{MAX_STATE_BYTES}"
        )
    if file is None:
        state = restore_state(template, payload.pop("arrays"), where)
    else:
        loaded = load_checkpoint(file, template=template)
        state, key = loaded.pop("state"), loaded.pop("key")
        loaded.pop("arrays")
        if json.dumps(loaded, sort_keys=True) != snapshot:
            raise CheckpointError(f"{where}: {str(file)!r} changed while it was read")
        payload["key"] = key
    for b in jax.tree_util.tree_leaves(getattr(state, "theta", state)):
        b = np.asarray(b)
        if b.dtype.kind == "f" and not np.isfinite(b).all():
            raise CheckpointError(
                f"checkpoint: {run_dir!r} holds non-finite parameters "
                f"({int((~np.isfinite(b)).sum())} NaN/inf of {b.size} in an array of shape "
                f"{b.shape}); the run diverged or the file is corrupt"
            )
    state = jax.tree_util.tree_map(jax.numpy.asarray, state)
    return spec, method, state, payload


def model_kind(payload: dict) -> str:
    """How a run's model comes back (``model_kind``; inferred for runs saved before it)."""
    kind = payload.get("model_kind")
    if kind in MODEL_KINDS:
        return kind
    if isinstance(payload.get("data"), dict):
        return "data"
    return "file" if payload.get("model_sha256") else "builtin"


def check_best(run_dir: str, best: dict, checkpoint: dict) -> None:
    """Refuse a ``best.npz`` whose manifest (``best``) names another run than
    ``checkpoint.npz``'s (:data:`IDENTITY_KEYS`: the run id given at fit start and kept on
    resume, the model, method, seed and settings)."""
    for key in IDENTITY_KEYS:
        if best.get(key) != checkpoint.get(key):
            raise CheckpointError(
                f"checkpoint: {BEST_NAME} in {str(run_dir)!r} belongs to another run ({key}="
                f"{_short(best.get(key))}, but {CHECKPOINT_NAME} has "
                f"{_short(checkpoint.get(key))}); expected the same run, so it was not used "
                "(remove it, or fit again)"
            )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_sizes(run_dir: str, payload: dict) -> None:
    """Refuse a manifest whose integer settings (``settings`` and ``method_config``) exceed
    :data:`SIZE_CAPS` (else :data:`DEFAULT_SIZE_CAP`), before anything is built from it."""
    for field in ("settings", "method_config"):
        values = payload.get(field)
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            cap = SIZE_CAPS.get(name, DEFAULT_SIZE_CAP)
            items = value if isinstance(value, list) else [value]
            for v in items:
                if isinstance(v, int) and not isinstance(v, bool) and abs(v) > cap:
                    raise CheckpointError(
                        f"checkpoint: {str(run_dir)!r} has {field} {name}={_short(value)}; "
                        f"expected at most {cap}, so it is corrupt"
                    )


def _spec_of_run(run_dir: str, payload: dict, model: Any, trusted: bool, data=None):
    """The run's ModelSpec: a built-in by name; a data model from the run's data; a model
    given as an object from ``model`` (with the run's data); a model file only when named or
    trusted, and only if its SHA-256 matches the one recorded at fit time."""
    from bayesmeta.datamodels import DATA_MODELS, as_spec
    from bayesmeta.modelfiles import ModelFileChanged, builtin_models, load_model_spec
    from bayesmeta.zoo import ModelSpec

    source, digest, kind = payload["model_source"], payload.get("model_sha256"), model_kind(payload)
    entry = payload.get("data")
    if entry is not None and not isinstance(entry, dict):
        raise CheckpointError(f"checkpoint: {run_dir!r} has a corrupt data entry ({entry!r})")
    if kind == "object" or (model is not None and not isinstance(model, str | os.PathLike)):
        name = source or payload.get("model_name")
        if model is None or isinstance(model, str | os.PathLike):
            raise ValueError(
                f"model: the run in {run_dir!r} was fitted with the model object {name!r} "
                "(a function, HierarchicalModel or ModelSpec), which a run directory cannot "
                "hold; pass it again: bayesmeta.load(run_dir, model=...)"
            )
        if isinstance(model, ModelSpec):
            return model
        return as_spec(model, None if entry is None else splits_of_entry(run_dir, entry, data))
    if kind == "data":
        if entry is None or source not in DATA_MODELS:
            raise CheckpointError(
                f"checkpoint: {run_dir!r} names the data model {source!r} without its data"
            )
        if model is not None and str(model) != source:
            raise ValueError(
                f"model: the run in {run_dir!r} was fitted with the data model {source!r}, "
                f"got {str(model)!r}"
            )
        splits = splits_of_entry(run_dir, entry, data)
        return as_spec(source, splits)
    if data is not None:
        raise UsageError(
            f"--data: the run in {run_dir!r} was fitted without a data file (model "
            f"{source!r}); expected no --data, got {str(data)!r}"
        )
    if digest is None:
        if source not in builtin_models():
            raise CheckpointError(
                f"checkpoint: {run_dir!r} names the model {source!r}, which is neither a "
                "built-in model nor a model file with a recorded SHA-256"
            )
        if model is not None and str(model) != source:
            raise ValueError(
                f"--model: the run in {run_dir!r} was fitted with the built-in model "
                f"{source!r}, got {str(model)!r}"
            )
        try:
            return load_model_spec(source)
        except ValueError as err:
            raise CheckpointError(f"checkpoint: {run_dir!r}: {err}") from None
    if model is None and not trusted:
        raise CheckpointError(
            f"checkpoint: {run_dir!r} was fitted with the model file {source!r}; loading it "
            "runs that file, so name it with --model FILE or pass --trust-model-file"
        )
    file = Path(model if model is not None else source)
    if not file.is_file():
        raise CheckpointError(
            f"checkpoint: {run_dir!r} was fitted with the model file {source!r}, which is not "
            f"at {str(file)!r}; name it with --model FILE"
        )
    if not isinstance(digest, str):
        raise CheckpointError(f"checkpoint: {run_dir!r} has model_sha256={_short(digest)}; "
                              "expected a hex string, so it is corrupt")  # fmt: skip
    try:  # the bytes read are hashed, and only those bytes run (no second read of the file)
        return load_model_spec(str(file), expected_sha256=digest)
    except ModelFileChanged as err:
        raise CheckpointError(
            f"checkpoint: the model file {str(file)!r} has SHA-256 {err.actual[:16]}..., but the "
            f"run in {run_dir!r} was fitted with {source!r} at {digest[:16]}...: the file has "
            "changed since the run, so it was not run"
        ) from None


def run_info(run_dir: str | None = None, access: dict | None = None) -> dict:
    """Versions of Python and the numerical stack, JAX's devices, and (with ``run_dir``) the
    run's model, method, seed, step and settings from its checkpoint and ``run.json``. The
    state is checked against its model as :func:`load_run` checks it (a model file is run only
    when named or trusted); a run whose model was a Python object is described from its
    manifest alone.

    A legacy pickle checkpoint is read only with ``access={"allow_pickle": True}``."""
    import importlib.metadata as md
    import platform

    import jax

    out: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {},
        "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()],
    }
    for pkg in ("bayesmeta", "jax", "jaxlib", "numpyro", "optax", "arviz", "numpy", "matplotlib"):
        try:
            out["versions"][pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out["versions"][pkg] = None
    if run_dir is None:
        return out
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"RUN_DIR: expected a run directory (from bayesmeta fit --out), got "
                         f"{str(run_dir)!r}")  # fmt: skip
    if (path / CHECKPOINT_NAME).exists() or not (path / LEGACY_CHECKPOINT_NAME).exists():
        payload = read_manifest(path / CHECKPOINT_NAME)
    elif (access or {}).get("allow_pickle"):
        payload = load_legacy_checkpoint(path / LEGACY_CHECKPOINT_NAME)
    else:
        raise CheckpointError(
            f"checkpoint: {str(run_dir)!r} holds a legacy pickle checkpoint (checkpoint.pkl), "
            "which can run code when read; for a run you trust, convert it with "
            "`bayesmeta upgrade RUN_DIR` or pass --allow-pickle (unsafe)"
        )
    for key, kind in (("model_source", str), ("method", str)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(
                f"checkpoint: {str(run_dir)!r} lacks {key!r}; not a bayesmeta run"
            )
    kind = model_kind(payload)
    if kind != "object":  # the state checked against its model, as evaluate would load it
        _, _, state, payload = load_run(str(run_dir), **(access or {}))
        payload["step"] = int(state.step)
    record = read_run_json(path)
    out["run"] = {k: payload.get(k) for k in ("model_name", "model_source", "method", "seed",
                                              "budget")}  # fmt: skip
    out["run"]["model_kind"] = kind
    out["run"]["step"] = int(payload.get("step") or 0)
    out["run"]["settings"] = payload.get("settings")
    if isinstance(payload.get("data"), dict):
        out["run"]["data"] = payload["data"]
    for key in ("train_seconds", "best_step", "best_validation_nll"):
        if key in record:
            out["run"][key] = record[key]
    out["run"]["has_best"] = (path / BEST_NAME).is_file()
    return out


def upgrade(run_dir: str) -> dict:
    """Convert ``RUN_DIR/checkpoint.pkl`` (format 1, a pickle) to ``checkpoint.npz``.

    Reading the pickle can run code: this is for runs you trust. The state is checked against
    its method's template before anything is written, a model file's SHA-256 is recorded
    (hashing the file as it is now), and the pickle is kept as ``checkpoint.pkl.bak``. The
    directory's lock is held throughout (:func:`run_dir_lock`).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise UsageError(f"RUN_DIR: expected a run directory, got {run_dir!r}")
    legacy = path / LEGACY_CHECKPOINT_NAME
    if (path / CHECKPOINT_NAME).exists():
        # never unpickle beside a data-only checkpoint: there is nothing to convert
        extra = " (the checkpoint.pkl beside it was not read)" if legacy.exists() else ""
        raise UsageError(
            f"RUN_DIR: {run_dir!r} is already in the data-only format{extra}; nothing to upgrade"
        )
    if not legacy.is_file():
        raise UsageError(f"RUN_DIR: {run_dir!r} has no checkpoint.pkl; nothing to upgrade")
    with run_dir_lock(path, "RUN_DIR"):
        return _upgrade(run_dir, path, legacy)


def _upgrade(run_dir: str, path: Path, legacy: Path) -> dict:
    from bayesmeta.modelfiles import builtin_models

    if (path / CHECKPOINT_NAME).exists():  # another upgrade finished first
        raise UsageError(f"RUN_DIR: {run_dir!r} is already in the data-only format; nothing to "
                         "upgrade")  # fmt: skip
    payload = load_legacy_checkpoint(legacy)
    source = payload.get("model_source")
    if isinstance(source, str) and source not in builtin_models():
        if not Path(source).is_file():
            raise UsageError(
                f"RUN_DIR: the run's model file {source!r} is gone, so its hash cannot be "
                "recorded; put it back and upgrade again"
            )
        payload["model_sha256"] = file_sha256(source)
    else:
        payload["model_sha256"] = None
    payload.pop("format_version", None)
    payload["settings"] = as_json(payload.get("settings"))
    # the state must rebuild from its method's template before the new file is written
    _, _, state, loaded = load_run(run_dir, trust_model_file=True, allow_pickle=True)
    if payload["model_sha256"] is not None:  # the hash of the bytes that load_run executed
        payload["model_sha256"] = loaded.get("model_sha256")
    payload["state"] = state
    payload["upgraded_from"] = "checkpoint.pkl (format 1)"
    save_checkpoint(path / CHECKPOINT_NAME, payload)
    os.replace(legacy, path / (LEGACY_CHECKPOINT_NAME + ".bak"))
    return {"run_dir": run_dir, "step": int(payload.get("step", 0)), "method": payload["method"]}
