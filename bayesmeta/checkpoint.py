"""Data-only, atomic checkpoints: one ``.npz`` that holds arrays and a JSON manifest.

A checkpoint is ``checkpoint.npz``: every leaf of the method's state as an array named by its
key path (``state.theta['mu']``), the PRNG key as ``key``, and ``__manifest__``, a JSON
string (format version, method, settings, model reference, step, seed, provenance). It is
read with ``numpy.load(..., allow_pickle=False)``: reading it never runs code, and the state
is rebuilt from the method's own template (:func:`restore_state`), so renamed classes in
optax or bayesmeta do not break old runs. It is written to a temporary file and renamed, so
a crash never leaves a half-written checkpoint.

The format before version 2 was a pickle (``checkpoint.pkl``), which can run arbitrary code
when read: :func:`load_legacy_checkpoint` reads one only when asked, and
``bayesmeta upgrade RUN_DIR`` converts it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tokenize
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

CHECKPOINT_NAME = "checkpoint.npz"
#: the state with the best validation score, when training had a validation stream
BEST_NAME = "best.npz"
LEGACY_CHECKPOINT_NAME = "checkpoint.pkl"
FORMAT_VERSION = 2
MANIFEST = "__manifest__"
STATE_PREFIX = "state"
KEY = "key"
#: The most a checkpoint's manifest (a JSON string: settings, history) may hold, in bytes.
MAX_MANIFEST_BYTES = 64 << 20
#: The most a state (every array of a checkpoint or of a run's data) may declare, in bytes.
MAX_STATE_BYTES = 1 << 30
#: The most members an ``.npz`` may hold.
MAX_MEMBERS = 100_000
#: The most a compressed member may expand (``np.savez`` stores; only another writer deflates).
MAX_DEFLATE_RATIO = 100
#: The PRNG key's largest size (threefry keys hold 2 numbers, rbg keys 4).
MAX_KEY_SIZE = 16
_MAX_HEADER = 10_000  # numpy's own limit on an npy header
# numpy parses an npy header with ``tokenize``: a mangled header can raise its TokenError;
# zipfile raises NotImplementedError for a mangled version or compression field
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, RuntimeError, zlib.error,
                tokenize.TokenError, SyntaxError, NotImplementedError)  # fmt: skip


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, unsafe to read, or belongs to another model or
    method. ``member`` names the array at fault when one is (:class:`NpzFile`)."""

    member: str | None = None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray | jax.Array):
        return np.asarray(obj).tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def as_json(value: Any) -> Any:
    """``value`` as it reads back from a manifest (tuples become lists, numpy scalars
    Python numbers): compare a recipe with a stored one through this."""
    return json.loads(json.dumps(value, default=_json_default))


def state_arrays(state: Any) -> dict[str, np.ndarray]:
    """The leaves of ``state`` as host arrays named by their key paths."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {STATE_PREFIX + jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


def _shape_dtype(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    """A template leaf's shape and dtype: an array, a Python number or a
    ``jax.ShapeDtypeStruct`` (``jax.eval_shape(method.init, key)``, which allocates nothing)."""
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    a = np.asarray(leaf)
    return a.shape, a.dtype


def template_nbytes(template: Any) -> int:
    """The bytes ``template``'s leaves hold (arrays or ``jax.ShapeDtypeStruct``)."""
    total = 0
    for leaf in jax.tree_util.tree_leaves(template):
        shape, dtype = _shape_dtype(leaf)
        total += math.prod(shape) * dtype.itemsize
    return total


def check_template(template: Any, shapes: dict[str, tuple], where: str = "checkpoint") -> None:
    """Refuse a checkpoint whose state arrays (``name -> (shape, dtype)``, from the members'
    headers or from arrays) are not exactly ``template``'s: a missing, extra or mis-shaped
    array, or one of another kind of dtype. Nothing is read."""
    leaves = jax.tree_util.tree_flatten_with_path(template)[0]
    names = [STATE_PREFIX + jax.tree_util.keystr(p) for p, _ in leaves]
    stored = {k for k in shapes if k.startswith(STATE_PREFIX)}
    missing, extra = [n for n in names if n not in shapes], sorted(stored - set(names))
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has the unexpected array {extra[0]!r}"
        raise CheckpointError(
            f"{where} does not match this model and method (its state {what}; parameter "
            "structures differ)"
        )
    for name, (_, t) in zip(names, leaves, strict=True):
        shape, dtype = shapes[name]
        want_shape, want_dtype = _shape_dtype(t)
        if tuple(shape) != want_shape:
            raise CheckpointError(
                f"{where} does not match this model and method ({name}: expected shape "
                f"{want_shape}, got {tuple(shape)})"
            )
        if np.dtype(dtype).kind != want_dtype.kind:
            raise CheckpointError(
                f"{where} does not match this model and method ({name}: expected "
                f"{want_dtype}, got {np.dtype(dtype)})"
            )


def restore_state(template: Any, arrays: dict[str, np.ndarray], where: str = "checkpoint"):
    """Rebuild a state with ``template``'s structure (``method.init(key)``, or its
    ``jax.eval_shape``) from :func:`state_arrays`' names; raise CheckpointError on a missing,
    extra or mis-shaped array."""
    check_template(template, {k: (a.shape, a.dtype) for k, a in arrays.items()}, where)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [STATE_PREFIX + jax.tree_util.keystr(p) for p, _ in leaves]
    return jax.tree_util.tree_unflatten(treedef, [arrays[n] for n in names])


class NpzMember(NamedTuple):
    """One array of an ``.npz`` as its header declares it (nothing of its data read)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    info: zipfile.ZipInfo

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class NpzFile:
    """An ``.npz`` opened once, its members' headers checked before any data is read.

    The file is opened a single time (a file swapped afterwards is not read). For each
    member, the npy header alone is read (``numpy.lib.format``): a member that is not an npy
    array, holds Python objects, or whose stored size is not what its declared shape and dtype
    need (a truncated member, or a zip bomb) is refused, as is a deflated member that expands
    more than :data:`MAX_DEFLATE_RATIO` times. ``members`` maps each array's name to its
    :class:`NpzMember`; :meth:`read` reads one.

    Parameters
    ----------
    path : path
    where : str
        How errors name the file (``"checkpoint: 'run/checkpoint.npz'"``).
    """

    def __init__(self, path: str | os.PathLike, where: str):
        self.where = where
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as err:
            if isinstance(err, FileNotFoundError):
                raise CheckpointError(f"{where}: no such file") from None
            raise CheckpointError(
                f"{where} is corrupt or truncated ({type(err).__name__})"
            ) from None
        try:
            self.members = self._headers()
        except BaseException:
            self._zip.close()
            raise

    def _headers(self) -> dict[str, NpzMember]:
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise CheckpointError(
                f"{self.where} holds {len(infos)} members; expected at most {MAX_MEMBERS}"
            )
        out: dict[str, NpzMember] = {}
        for info in infos:
            try:
                out[info.filename[:-4]] = self._header(info, out)
            except CheckpointError as err:
                err.member = info.filename.removesuffix(".npy")
                raise
        return out

    def _header(self, info: zipfile.ZipInfo, out: dict[str, NpzMember]) -> NpzMember:
        """One member's checked header (``out``: the members checked so far)."""
        name = info.filename
        if not name.endswith(".npy") or name[:-4] in out or info.is_dir():
            raise CheckpointError(
                f"{self.where} has the member {name!r}; expected uniquely named .npy arrays"
            )
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"{self.where}: member {name!r} uses zip compression {info.compress_type}; "
                "expected stored or deflated members"
            )
        if info.compress_type == zipfile.ZIP_DEFLATED and (
            info.file_size > MAX_DEFLATE_RATIO * info.compress_size + (1 << 20)
        ):
            raise CheckpointError(
                f"{self.where}: member {name!r} expands from {info.compress_size} to "
                f"{info.file_size} bytes; expected at most {MAX_DEFLATE_RATIO} times "
                "(a zip bomb?)"
            )
        try:
            with self._zip.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    header = np.lib.format.read_array_header_1_0(fh, _MAX_HEADER)
                elif version == (2, 0):
                    header = np.lib.format.read_array_header_2_0(fh, _MAX_HEADER)
                else:
                    raise ValueError(f"npy format {version}")
                offset = fh.tell()
        except _READ_ERRORS as err:
            raise CheckpointError(
                f"{self.where}: member {name!r} is corrupt or not an npy array "
                f"({type(err).__name__})"
            ) from None
        shape, _, dtype = header
        if dtype.hasobject:
            raise CheckpointError(
                f"{self.where}: member {name!r} holds Python objects; expected numbers or "
                "text (reading it would unpickle)"
            )
        member = NpzMember(tuple(int(d) for d in shape), dtype, info)
        if info.file_size != offset + member.nbytes:
            raise CheckpointError(
                f"{self.where}: member {name!r} declares shape {member.shape} of "
                f"{dtype} ({member.nbytes} bytes) but stores {info.file_size - offset}; "
                "it is corrupt"
            )
        return member

    def read(self, name: str) -> np.ndarray:
        """The array ``name`` (checked by its header already)."""
        member = self.members[name]
        try:
            with self._zip.open(member.info) as fh:
                a = np.lib.format.read_array(fh, allow_pickle=False)
        except _READ_ERRORS as err:
            error = CheckpointError(
                f"{self.where}: member {name!r} is corrupt or truncated ({type(err).__name__})"
            )
            error.member = name
            raise error from None
        if a.shape != member.shape or a.dtype != member.dtype:
            raise CheckpointError(f"{self.where}: member {name!r} changed while it was read")
        return a

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> NpzFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_npz(
    path: str | os.PathLike,
    where: str,
    allowed: Callable[[str], bool],
    max_bytes: int = MAX_STATE_BYTES,
) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` whose members ``allowed(name)`` accepts and whose declared
    sizes add up to at most ``max_bytes``, checked from their headers before anything is read
    (:class:`NpzFile`)."""
    with NpzFile(path, where) as npz:
        for name in npz.members:
            if not allowed(name):
                raise CheckpointError(f"{where} has the unexpected member {name!r}")
        total = sum(m.nbytes for m in npz.members.values())
        if total > max_bytes:
            raise CheckpointError(
                f"{where} declares {total} bytes of arrays; expected at most {max_bytes}"
            )
        return {name: npz.read(name) for name in npz.members}


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically to ``path`` (an ``.npz``).

    ``payload["state"]`` (any pytree of arrays) and ``payload["key"]`` become arrays; every
    other entry must be JSON-serialisable and goes into the manifest.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = state_arrays(payload.get("state", {}))
    if payload.get("key") is not None:
        arrays[KEY] = np.asarray(payload["key"])
    manifest = {k: v for k, v in payload.items() if k not in ("state", "key")}
    manifest["format_version"] = FORMAT_VERSION
    from bayesmeta import __version__

    manifest.setdefault("bayesmeta_version", __version__)
    arrays[MANIFEST] = np.array(json.dumps(manifest, default=_json_default, sort_keys=True))
    _atomic_savez(path, arrays)


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from bayesmeta.atomic import save_npz

    save_npz(path, arrays)


def _where(path: Path) -> str:
    return f"checkpoint: {str(path)!r}"


def _refuse_legacy(path: Path) -> None:
    if path.suffix == ".pkl" or path.name == LEGACY_CHECKPOINT_NAME:
        raise CheckpointError(
            f"{_where(path)} is a legacy pickle checkpoint, which can run code when read; "
            "convert a run you trust with `bayesmeta upgrade RUN_DIR`"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint: no file at {str(path)!r}")


def _manifest_of(npz: NpzFile) -> dict[str, Any]:
    """The manifest of an open checkpoint, after checking its members' names (the manifest,
    the key and ``state...`` arrays only) and the manifest's and key's declared sizes."""
    where = npz.where
    for name, member in npz.members.items():
        if name != MANIFEST and name != KEY and not name.startswith(STATE_PREFIX):
            raise CheckpointError(
                f"{where} has the member {name!r}; expected only {MANIFEST!r}, {KEY!r} and the "
                f"{STATE_PREFIX}... arrays"
            )
        if name == KEY and (member.dtype.kind not in "ui" or member.nbytes > 8 * MAX_KEY_SIZE):
            raise CheckpointError(
                f"{where}: its key has shape {member.shape} of {member.dtype}; expected at most "
                f"{MAX_KEY_SIZE} integers"
            )
    man = npz.members.get(MANIFEST)
    if man is None or man.dtype.kind != "U" or man.shape:
        raise CheckpointError(f"{where} is not a bayesmeta checkpoint (no manifest)")
    if man.nbytes > MAX_MANIFEST_BYTES:
        raise CheckpointError(
            f"{where} has a manifest of {man.nbytes} bytes; expected at most {MAX_MANIFEST_BYTES}"
        )
    try:
        manifest = json.loads(str(npz.read(MANIFEST)))
    except json.JSONDecodeError:
        raise CheckpointError(f"{where} has a corrupt manifest (not JSON)") from None
    except RecursionError:
        raise CheckpointError(f"{where} has a corrupt manifest (nested too deeply)") from None
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{where} has a corrupt manifest (not a JSON object)")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{where} is not a bayesmeta checkpoint (no format version)")
    if version != FORMAT_VERSION:
        newer = "a newer" if version > FORMAT_VERSION else "an older"
        raise CheckpointError(
            f"{where} has format version {version}, written by {newer} bayesmeta; this "
            f"version reads format {FORMAT_VERSION}"
        )
    return manifest


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's manifest alone: no array of its state is read (``bayesmeta info``, the
    checks of ``fit --resume``). Raises CheckpointError as :func:`load_checkpoint` does."""
    path = Path(path)
    _refuse_legacy(path)
    with NpzFile(path, _where(path)) as npz:
        return _manifest_of(npz)


def load_checkpoint(path: str | os.PathLike, template: Any = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without running any code.

    Returns the manifest's fields plus ``"arrays"`` (name -> array), ``"key"`` and, with a
    ``template`` state, ``"state"`` rebuilt in its structure. Every member's declared shape
    and dtype is checked before any array is read: against ``template`` when given (its
    arrays or ``jax.eval_shape`` of ``method.init``), else against :data:`MAX_STATE_BYTES` in
    all. Raises CheckpointError if the file is missing, truncated, not a bayesmeta checkpoint,
    of another format version, holds members that are not part of a state, or does not
    match ``template``.
    """
    path = Path(path)
    where = _where(path)
    _refuse_legacy(path)
    with NpzFile(path, where) as npz:
        manifest = _manifest_of(npz)
        shapes = {k: (m.shape, m.dtype) for k, m in npz.members.items() if k != MANIFEST}
        if template is not None:
            check_template(template, shapes, where)
        total = sum(m.nbytes for k, m in npz.members.items() if k != MANIFEST)
        if total > MAX_STATE_BYTES:
            raise CheckpointError(
                f"{where} declares {total} bytes of arrays; expected at most {MAX_STATE_BYTES}"
            )
        arrays = {k: npz.read(k) for k in shapes}
    out = {**manifest, "arrays": arrays, "key": arrays.get(KEY)}
    if template is not None:
        out["state"] = restore_state(template, arrays, where)
    return out


def load_legacy_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a format-1 pickle checkpoint. **Unsafe**: unpickling runs whatever code the file
    names; call this only for runs you trust (``--allow-pickle``, ``bayesmeta upgrade``)."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint: no file at {str(path)!r}")
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh)  # noqa: S301 - the caller opted in to an unsafe read
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CheckpointError(
            f"checkpoint: {str(path)!r} is corrupt ({type(err).__name__})"
        ) from None
    if not isinstance(data, dict) or data.get("format_version") != 1:
        raise CheckpointError(f"checkpoint: {str(path)!r} is not a bayesmeta checkpoint")
    return data


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
