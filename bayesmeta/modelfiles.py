"""Model files: a Python file that defines ``SPEC = ModelSpec(...)`` (see
``models/sinusoid.py``). ``bayesmeta fit models/sinusoid.py --method abml`` loads one by path;
built-in names (``sinusoid``, ``sine_line``) load the files shipped as ``bayesmeta.models``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

from bayesmeta.zoo import ModelSpec


def _models_dir() -> Path | None:
    """The directory of built-in model files: the installed ``bayesmeta.models`` package, or
    ``models/`` beside the ``bayesmeta`` source tree (a checkout on ``sys.path``)."""
    try:
        import bayesmeta.models as pkg

        return Path(pkg.__file__).parent
    except ModuleNotFoundError:
        here = Path(__file__).resolve().parent.parent / "models"
        return here if here.is_dir() else None


def _exec_model_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ValueError(
            f"MODEL: {str(path)!r} failed to load ({type(err).__name__}: {err})"
        ) from None
    return module


def load_model_spec(model: str) -> ModelSpec:
    """Load a model file by path, or a built-in model by name.

    A bare built-in name (``"sinusoid"``) always means the built-in model, even when the
    working directory happens to hold a folder or file of that name; a path (``.py``, a
    directory separator) or an existing file whose name is not a built-in is a model file."""
    path = Path(model)
    explicit = path.suffix == ".py" or "/" in model or os.sep in model
    if explicit or (path.is_file() and model not in builtin_models()):
        if not path.is_file():
            raise ValueError(f"MODEL: no model file at {model!r}")
        module = _exec_model_file(path, f"bayesmeta_user_model_{abs(hash(str(path.resolve())))}")
        source = str(path.resolve())
    else:
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
    return dataclasses.replace(spec_obj, source=source)


def builtin_models() -> tuple[str, ...]:
    """Names of the built-in model files."""
    folder = _models_dir()
    if folder is None:
        return ()
    return tuple(sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")))


__all__ = ["builtin_models", "load_model_spec"]
