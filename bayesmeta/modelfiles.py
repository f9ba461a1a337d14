"""Model files: a Python file that defines ``SPEC = ModelSpec(...)`` (see
``models/sinusoid.py``). ``bayesmeta fit models/sinusoid.py --method abml`` loads one by path;
built-in names (``sinusoid``, ``sine_line``) load the files shipped as ``bayesmeta.models``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import types
from pathlib import Path

from bayesmeta.zoo import ModelSpec

#: The attribute of a ModelSpec loaded from a file that holds the SHA-256 of the bytes executed
#: (not a dataclass field: ``dataclasses.replace`` drops it, and :func:`source_sha256` is None).
_SHA_ATTR = "_source_sha256"


class ModelFileChanged(ValueError):
    """A model file's bytes do not have the SHA-256 its run recorded (nothing was executed).

    Attributes
    ----------
    path : str
        The file.
    actual, expected : str
        The SHA-256 of the bytes read, and the one asked for.
    """

    def __init__(self, path: str, actual: str, expected: str):
        super().__init__(
            f"MODEL: {path!r} has SHA-256 {actual[:16]}..., expected {expected[:16]}...: the "
            "file has changed, so it was not run"
        )
        self.path, self.actual, self.expected = path, actual, expected


def _models_dir() -> Path | None:
    """The directory of built-in model files: the installed ``bayesmeta.models`` package, or
    ``models/`` beside the ``bayesmeta`` source tree (a checkout on ``sys.path``)."""
    try:
        import bayesmeta.models as pkg

        return Path(pkg.__file__).parent
    except ModuleNotFoundError:
        here = Path(__file__).resolve().parent.parent / "models"
        return here if here.is_dir() else None


def _exec_model_file(path: Path, name: str, source: bytes | None = None) -> types.ModuleType:
    """Execute a model file's bytes as a fresh module ``name``.

    ``source`` are the bytes to run (read once by the caller, who hashed them); without it
    the file is read here. Exactly these bytes are compiled: the file is not opened again, so
    a file swapped after it was read (and hashed) is never the one that runs. A model file
    that raises, or that calls ``sys.exit`` while loading, is a ValueError naming the file."""
    if source is None:
        source = _read_model_file(path)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    previous = sys.modules.get(name)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - the user named or trusted this file
    except (Exception, SystemExit) as err:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        what = (
            f"SystemExit({err.code!r}) while loading"
            if isinstance(err, SystemExit)
            else (f"{type(err).__name__}: {err}")
        )
        raise ValueError(f"MODEL: {str(path)!r} failed to load ({what})") from None
    return module


def _read_model_file(path: Path) -> bytes:
    """A model file's bytes, read once; an unreadable file is one line naming it."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValueError(
            f"MODEL: {str(path)!r} could not be read ({err.strerror or type(err).__name__})"
        ) from None


def source_sha256(spec: ModelSpec) -> str | None:
    """The SHA-256 of the model file's bytes that :func:`load_model_spec` executed to make
    ``spec`` (None for a built-in model, or a spec not made by :func:`load_model_spec`)."""
    return getattr(spec, _SHA_ATTR, None)


def load_model_spec(model: str, *, expected_sha256: str | None = None) -> ModelSpec:
    """Load a model file by path, or a built-in model by name.

    A bare built-in name (``"sinusoid"``) always means the built-in model, even when the
    working directory happens to hold a folder or file of that name; a path (``.py``, a
    directory separator) or an existing file whose name is not a built-in is a model file.

    A model file is read once: its bytes are hashed and exactly those bytes are executed, so
    the hash recorded for a run (:func:`source_sha256`) is that of the code that ran.

    Parameters
    ----------
    model : str
        A model file's path or a built-in model's name.
    expected_sha256 : str, optional
        Refuse a model file whose bytes have another SHA-256, before running anything
        (a saved run's recorded hash, :func:`bayesmeta.rundir.load_run`).

    Raises
    ------
    ModelFileChanged
        The file's bytes do not have ``expected_sha256``.
    ValueError
        No such file or built-in model, the file failed to load, or it defines no ``SPEC``.
    """
    path = Path(model)
    explicit = path.suffix == ".py" or "/" in model or os.sep in model
    digest = None
    if explicit or (path.is_file() and model not in builtin_models()):
        if not path.is_file():
            raise ValueError(f"MODEL: no model file at {model!r}")
        source = str(path.resolve())
        code = _read_model_file(path)
        digest = hashlib.sha256(code).hexdigest()
        if expected_sha256 is not None and digest != expected_sha256:
            raise ModelFileChanged(source, digest, expected_sha256)
        module = _exec_model_file(path, f"bayesmeta_user_model_{abs(hash(source))}", code)
    else:
        if expected_sha256 is not None:
            raise ValueError(
                f"MODEL: expected a model file (a path) with SHA-256 {expected_sha256[:16]}..., "
                f"got the built-in model name {model!r}"
            )
        if model not in builtin_models():
            raise ValueError(
                f"MODEL: expected a model file or one of {list(builtin_models())}, got {model!r}"
            )
        name = f"bayesmeta.models.{model}"
        module = sys.modules.get(name) or _exec_model_file(_models_dir() / f"{model}.py", name)
        source = model
    spec_obj = getattr(module, "SPEC", None)
    if not isinstance(spec_obj, ModelSpec):
        raise ValueError(f"MODEL: {model!r} does not define SPEC = ModelSpec(...)")
    out = dataclasses.replace(spec_obj, source=source)
    if digest is not None:
        object.__setattr__(out, _SHA_ATTR, digest)  # ModelSpec is frozen; not a field
    return out


def builtin_models() -> tuple[str, ...]:
    """Names of the built-in model files."""
    folder = _models_dir()
    if folder is None:
        return ()
    return tuple(sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")))


__all__ = ["ModelFileChanged", "builtin_models", "load_model_spec", "source_sha256"]
