"""Atomic file writes: every file bayesmeta writes appears whole or not at all.

The data is written to a temporary file in the destination's folder, flushed to disk, given
the permissions a plain ``open`` would (the user's umask), and moved into place with
:func:`os.replace`, which is atomic on POSIX and Windows; on any error the temporary file is
removed and the old file, if any, is untouched. A reader (another process, a resumed run, a
crashed training) never sees a half-written checkpoint, task file or report.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

#: Temporary files are ``NAME.<random>.tmp`` beside the file ``NAME`` they will replace.
TEMP_SUFFIX = ".tmp"


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name (e.g. netCDF);
    on leaving the block without an error it replaces ``path``, else it is removed."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=TEMP_SUFFIX, dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a binary temporary file, fsync it and move it to ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def save_npz(
    path: str | os.PathLike, arrays: Mapping[str, Any], *, compressed: bool = False
) -> Path:
    """Write ``arrays`` as an ``.npz`` archive at exactly ``path`` (no suffix added),
    atomically."""
    import numpy as np

    save = np.savez_compressed if compressed else np.savez
    return atomic_write(path, lambda fh: save(fh, **arrays))


def remove_stale_temps(folder: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """Remove the temporary files that a writer of ``folder / name`` (for each of ``names``)
    left behind when it crashed between writing and renaming (``NAME.<random>.tmp``).

    Call it only while no writer is active (a run directory's lock held): a live writer's
    temporary file would be removed too. Links and folders are left alone. Returns the paths
    removed.

    Parameters
    ----------
    folder : path
    names : tuple of str
        The file names whose temporary files to remove (``checkpoint.npz``, ...).
    """
    removed = []
    for name in names:
        pattern = os.path.join(glob.escape(str(folder)), glob.escape(name) + ".*" + TEMP_SUFFIX)
        for tmp in glob.glob(pattern):
            path = Path(tmp)
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


__all__ = ["atomic_path", "atomic_write", "remove_stale_temps", "save_npz", "write_text"]
