"""Bad input, said in one line: the error type every entry point raises for it, the checks
of output paths and counts that the command line and the library share, and the rule that
tells bad input (one line, exit 2) from a bug (a traceback, exit 1).

A :class:`UsageError` (a ``ValueError``) names the argument, what was expected and what came;
the command line prints it as one line and exits with status 2.
"""

from __future__ import annotations

import numbers
import sys
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


def is_bad_input(err: BaseException) -> bool:
    """Whether ``err`` is bayesmeta saying the input is wrong (exit 2, one line), rather than
    a bug (exit 1, with the traceback): the error was raised by a ``raise`` statement in
    bayesmeta's own code (or argparse's), not from inside JAX, NumPy or another library, and
    not by Python itself (a wrong call, a missing key)."""
    import linecache

    if isinstance(err, UsageError | FileNotFoundError):
        return True
    tb = err.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    package = str(Path(__file__).resolve().parent)  # bayesmeta/
    if not str(Path(filename).resolve()).startswith(package):
        return False
    return linecache.getline(filename, tb.tb_lineno).strip().startswith("raise")


def report_bug(err: BaseException) -> int:
    """Print the traceback of an unexpected error and ask for a report; exit status 1."""
    import traceback

    traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    print(
        f"bayesmeta: internal error ({type(err).__name__}); this is a bug in bayesmeta or one "
        "of its dependencies, not in your input: please report it with the traceback above",
        file=sys.stderr,
    )
    return 1


__all__ = [
    "UsageError",
    "check_out_dir",
    "check_out_file",
    "check_positive",
    "is_bad_input",
    "report_bug",
]
