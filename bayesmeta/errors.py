"""Bad input, said in one line: the error type every entry point raises for it, and the checks
of output paths and counts that the command line and the library share.

A :class:`UsageError` (a ``ValueError``) names the argument, what was expected and what came;
the command line prints it as one line and exits with status 2.
"""

from __future__ import annotations

import numbers
from pathlib import Path


class UsageError(ValueError):
    """Bad input: the argument, what was expected and what came, in one line."""


def check_out_file(path: str | Path, arg: str = "--out") -> None:
    """Refuse an output file path that can never be written, before any work is done."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{arg}: expected a file path, got the existing directory {str(path)!r}")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(
                    f"{arg}: expected a file path in a directory, but {str(parent)!r} in "
                    f"{str(path)!r} is a file"
                )
            break


def check_out_dir(path: str | Path, arg: str = "--out") -> None:
    """Refuse an output directory path that is an existing file (or lies under one)."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise UsageError(
                    f"{arg}: expected a directory, but {str(q)!r} in {str(path)!r} is a file"
                )
            break


def check_positive(arg: str, value) -> None:
    """Refuse anything but a positive integer (``True`` included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UsageError(f"{arg}: expected a positive integer, got {value!r}")


__all__ = ["UsageError", "check_out_dir", "check_out_file", "check_positive"]
