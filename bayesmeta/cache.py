"""JAX's persistent compilation cache, on by default: a method compiled once (its meta-step,
its adapt) is read back from disk by the next process instead of compiled again, so a second
``bayesmeta run`` or notebook session reaches its first result sooner.

The folder is ``$BAYESMETA_COMPILATION_CACHE`` when that names a folder, else
``$XDG_CACHE_HOME/bayesmeta/jax`` (``~/.cache/bayesmeta/jax``). Turn it off with
``BAYESMETA_COMPILATION_CACHE=0`` (or ``off``) before importing bayesmeta. A cache folder the
user configured in JAX already (``jax_compilation_cache_dir``) is left as it is, and a folder
that cannot be created leaves the cache off (a cache is never worth an error).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "BAYESMETA_COMPILATION_CACHE"
_OFF = {"0", "off", "false", "no", ""}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bayesmeta/jax``, or ``~/.cache/bayesmeta/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bayesmeta" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None,
                             min_compile_seconds: float | None = None) -> Path | None:  # fmt: skip
    """Point JAX's persistent compilation cache at ``path`` (default: from the environment,
    see the module docstring) and return the folder, or None when it stays off.

    ``min_compile_seconds``: only compilations that took at least this long are written
    (JAX's own default when None); small functions recompile faster than they load.
    """
    import jax

    if min_compile_seconds is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    setting = os.environ.get(ENV)
    if path is None:
        if setting is not None and setting.strip().lower() in _OFF:
            return None
        if jax.config.jax_compilation_cache_dir:  # the user's (or an earlier call's) choice
            return Path(jax.config.jax_compilation_cache_dir)
        path = setting or default_cache_dir()
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder


__all__ = ["ENV", "default_cache_dir", "enable_compilation_cache"]
