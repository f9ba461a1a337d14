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
import os
import zipfile
from pathlib import Path
from typing import Any

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


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, unsafe to read, or belongs to another model or
    method."""


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


def restore_state(template: Any, arrays: dict[str, np.ndarray], where: str = "checkpoint"):
    """Rebuild a state with ``template``'s structure (``method.init(key)``) from
    :func:`state_arrays`' names; raise CheckpointError on a missing, extra or mis-shaped
    array."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [STATE_PREFIX + jax.tree_util.keystr(p) for p, _ in leaves]
    stored = {k for k in arrays if k.startswith(STATE_PREFIX)}
    missing, extra = [n for n in names if n not in arrays], sorted(stored - set(names))
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has the unexpected array {extra[0]!r}"
        raise CheckpointError(
            f"{where} does not match this model and method (its state {what}; parameter "
            "structures differ)"
        )
    out = []
    for name, (_, t) in zip(names, leaves, strict=True):
        a = arrays[name]
        if a.shape != np.shape(t):
            raise CheckpointError(
                f"{where} does not match this model and method ({name}: expected shape "
                f"{tuple(np.shape(t))}, got {a.shape})"
            )
        if a.dtype.kind != np.asarray(t).dtype.kind:
            raise CheckpointError(
                f"{where} does not match this model and method ({name}: expected "
                f"{np.asarray(t).dtype}, got {a.dtype})"
            )
        out.append(a)
    return jax.tree_util.tree_unflatten(treedef, out)


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


def load_checkpoint(path: str | os.PathLike, template: Any = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without running any code.

    Returns the manifest's fields plus ``"arrays"`` (name -> array), ``"key"`` and, with a
    ``template`` state, ``"state"`` rebuilt in its structure. Raises CheckpointError if the
    file is missing, truncated, not a bayesmeta checkpoint, or of another format version.
    """
    path = Path(path)
    where = f"checkpoint: {str(path)!r}"
    if path.suffix == ".pkl" or path.name == LEGACY_CHECKPOINT_NAME:
        raise CheckpointError(
            f"{where} is a legacy pickle checkpoint, which can run code when read; convert a "
            "run you trust with `bayesmeta upgrade RUN_DIR`"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint: no file at {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise CheckpointError(f"{where} is corrupt or truncated ({type(err).__name__})") from None
    if MANIFEST not in arrays or arrays[MANIFEST].dtype.kind != "U" or arrays[MANIFEST].ndim:
        raise CheckpointError(f"{where} is not a bayesmeta checkpoint (no manifest)")
    try:
        manifest = json.loads(str(arrays.pop(MANIFEST)))
    except json.JSONDecodeError:
        raise CheckpointError(f"{where} has a corrupt manifest (not JSON)") from None
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
