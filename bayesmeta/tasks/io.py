"""Reading and writing task files (DESIGN.md §4).

A task file is an ``.npz`` archive of T tasks with K support and Q query points each::

    x_support (T, K, Dx)   y_support (T, K, Dy) float  or  (T, K) int (classification)
    x_query   (T, Q, Dx)   y_query   (T, Q, Dy) float  or  (T, Q) int

Active-learning files add ``x_pool (T, P, Dx)`` and ``y_pool`` (both or neither). Other keys
(e.g. ``task_params``) are kept as they are.

:func:`load_tasks` and :func:`validate_tasks` raise :class:`TaskFileError` with one line naming
the key or argument, what was expected and what was got.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping

import numpy as np

__all__ = [
    "REQUIRED_KEYS",
    "TaskFileError",
    "load_tasks",
    "save_tasks",
    "validate_support",
    "validate_tasks",
]

REQUIRED_KEYS = ("x_support", "y_support", "x_query", "y_query")
POOL_KEYS = ("x_pool", "y_pool")

# (x key, y key, size symbol) of each point set.
_SETS = (("x_support", "y_support", "K"), ("x_query", "y_query", "Q"), ("x_pool", "y_pool", "P"))


class TaskFileError(ValueError):
    """A task file or task dict does not follow the task-file format."""


def _shape(a: np.ndarray) -> str:
    return f"{a.ndim}-D {a.dtype} of shape {a.shape}"


_F32_MAX = float(np.finfo(np.float32).max)


def _check_finite(key: str, a: np.ndarray) -> None:
    """Finite values that stay finite as float32 (the dtype they are read as)."""
    if a.dtype.kind not in "fiu":
        return
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            n_nan = int(np.isnan(a).sum())
            n_inf = int(bad.sum()) - n_nan
            raise TaskFileError(
                f"{key}: expected finite values, got {n_nan} NaN and {n_inf} inf of {a.size}"
            )
    big = float(np.max(np.abs(a.astype(np.float64))))
    if big > _F32_MAX:
        raise TaskFileError(
            f"{key}: expected values within float32 range (|v| <= {_F32_MAX:.4g}), "
            f"got max |v| = {big:.4g}"
        )


def _check_dim(name: str, value) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
    ):
        raise TaskFileError(f"{name}: expected a positive integer, got {value!r}")


def _check_mask_query(mask, shape: tuple[int, int]) -> np.ndarray:
    """``mask_query (T, Q)`` of 0/1 (1 = a real point), at least one real point per task."""
    try:
        m = np.asarray(mask)
    except Exception as e:  # noqa: BLE001 - anything unreadable is a bad mask
        raise TaskFileError(f"mask_query: expected a (T, Q) array of 0/1, got ({e})") from e
    if m.dtype.kind not in "biuf":
        raise TaskFileError(f"mask_query: expected 0/1 values, got dtype {m.dtype}")
    if m.shape != tuple(shape):
        raise TaskFileError(
            f"mask_query: expected shape (T, Q)={tuple(shape)} as in x_query, got {m.shape}"
        )
    if not np.all((m == 0) | (m == 1)):
        raise TaskFileError("mask_query: expected only 0 (padding) and 1 (a real point)")
    empty = np.flatnonzero(m.sum(1) == 0)
    if empty.size:
        raise TaskFileError(
            f"mask_query: expected at least one real query point per task, got none in "
            f"{empty.size} tasks (first: task {int(empty[0])})"
        )
    return m.astype(np.float32)


def validate_tasks(
    tasks: Mapping[str, object],
    *,
    dx: int | None = None,
    classification: bool | None = None,
    dy: int | None = None,
    num_classes: int | None = None,
) -> dict[str, np.ndarray]:
    """Check a task dict against the task-file format and normalise its dtypes.

    Parameters
    ----------
    tasks : mapping of str -> array
        ``x_support``, ``y_support``, ``x_query``, ``y_query`` and optionally ``x_pool`` with
        ``y_pool`` and ``mask_query (T, Q)`` (1 = a real query point, 0 = padding, for tasks
        of different sizes); other keys are passed through.
    dx : int, optional
        Expected input dimension Dx (e.g. the model's).
    classification : bool, optional
        ``True``: labels must be ``(T, N)`` integers; ``False``: outputs must be
        ``(T, N, Dy)``; ``None``: decided by the rank of ``y_support`` (2-D integer labels are
        classification, 3-D outputs regression).
    dy : int, optional
        Expected output dimension Dy (regression; e.g. the model's).
    num_classes : int, optional
        Number of classes C (classification): labels must lie in ``[0, C - 1]``.

    Returns
    -------
    dict of ndarray
        Inputs and regression outputs as float32, class labels as int32, other keys unchanged.

    Raises
    ------
    TaskFileError
        On the first problem found, with a one-line message naming the key or argument.
    """
    if not isinstance(tasks, Mapping):
        raise TaskFileError(f"tasks: expected a dict of arrays, got {type(tasks).__name__}")
    bad_keys = [k for k in tasks if not isinstance(k, str)]
    if bad_keys:
        raise TaskFileError(f"tasks: expected string keys, got {bad_keys[0]!r}")
    if classification not in (None, True, False):
        raise TaskFileError(f"classification: expected True, False or None, got {classification!r}")
    _check_dim("dx", dx)
    _check_dim("dy", dy)
    _check_dim("num_classes", num_classes)
    missing = [k for k in REQUIRED_KEYS if k not in tasks]
    if missing:
        raise TaskFileError(
            f"{missing[0]}: missing key (a task file needs {', '.join(REQUIRED_KEYS)}); "
            f"got keys {sorted(tasks)}"
        )
    has_pool = [k in tasks for k in POOL_KEYS]
    if any(has_pool) and not all(has_pool):
        present, absent = (POOL_KEYS[0], POOL_KEYS[1]) if has_pool[0] else POOL_KEYS[::-1]
        raise TaskFileError(f"{absent}: missing key ({present} is present; the pool needs both)")
    sets = [s for s in _SETS if s[0] in tasks]

    arrays: dict[str, np.ndarray] = {}
    for xk, yk, _ in sets:
        for key in (xk, yk):
            try:
                a = np.asarray(tasks[key])
            except Exception as e:
                raise TaskFileError(
                    f"{key}: expected a numeric array, got an unreadable value ({e})"
                ) from e
            if a.dtype.kind not in "iuf":
                raise TaskFileError(
                    f"{key}: expected a numeric (integer or float) array, got dtype {a.dtype}"
                )
            arrays[key] = a

    # Inputs: (T, N, Dx), one Dx.
    for xk, _, n in sets:
        x = arrays[xk]
        if x.ndim != 3:
            raise TaskFileError(f"{xk}: expected 3-D (T, {n}, Dx), got {_shape(x)}")
    x0 = arrays["x_support"]
    for xk, _, n in sets:
        x = arrays[xk]
        if dx is not None and x.shape[2] != dx:
            raise TaskFileError(f"{xk}: expected Dx={dx} (from dx), got (T, {n}, Dx)={x.shape}")
        if x.shape[2] != x0.shape[2]:
            raise TaskFileError(
                f"{xk}: expected Dx={x0.shape[2]} as in x_support {x0.shape}, got {x.shape}"
            )
        if x.shape[2] < 1:
            raise TaskFileError(f"{xk}: expected Dx >= 1 in (T, {n}, Dx), got {x.shape}")

    # Outputs: classification or regression, decided once from y_support.
    ys = arrays["y_support"]
    inferred = ""
    if classification is None:
        inferred = f"; y_support {_shape(ys)} makes this " + (
            "classification" if ys.ndim == 2 else "regression"
        )
        if ys.ndim == 2 and ys.dtype.kind in "iu":
            classification = True
        elif ys.ndim == 3:
            classification = False
        else:
            raise TaskFileError(
                "y_support: expected 3-D (T, K, Dy) float (regression) or 2-D (T, K) integer "
                f"(classification), got {_shape(ys)}"
            )
    for _, yk, n in sets:
        y = arrays[yk]
        why = inferred if yk != "y_support" else ""
        if classification:
            if y.ndim != 2:
                raise TaskFileError(
                    f"{yk}: expected 2-D (T, {n}) integer labels (classification{why}), "
                    f"got {_shape(y)}"
                )
            if y.dtype.kind not in "iu":
                raise TaskFileError(
                    f"{yk}: expected integer class labels (classification{why}), got dtype "
                    f"{y.dtype} of shape {y.shape}"
                )
        elif y.ndim != 3:
            hint = " (integer (T, N) labels need classification)" if y.ndim == 2 else ""
            raise TaskFileError(
                f"{yk}: expected 3-D (T, {n}, Dy) float outputs (regression{why}), "
                f"got {_shape(y)}{hint}"
            )
    if not classification:
        d0 = ys.shape[2]
        for _, yk, n in sets:
            y = arrays[yk]
            if dy is not None and y.shape[2] != dy:
                raise TaskFileError(f"{yk}: expected Dy={dy} (from dy), got (T, {n}, Dy)={y.shape}")
            if y.shape[2] != d0 or d0 < 1:
                raise TaskFileError(
                    f"{yk}: expected Dy={d0} >= 1 as in y_support {ys.shape}, "
                    f"got (T, {n}, Dy)={y.shape}"
                )

    # Sizes: one T, matching N between x and y of each set, N >= 1.
    t = x0.shape[0]
    if t < 1:
        raise TaskFileError(f"x_support: expected T >= 1 tasks in (T, K, Dx), got {x0.shape}")
    for xk, yk, n in sets:
        for key in (xk, yk):
            if arrays[key].shape[0] != t:
                raise TaskFileError(
                    f"{key}: expected T={t} tasks as in x_support {x0.shape}, "
                    f"got shape {arrays[key].shape}"
                )
        x, y = arrays[xk], arrays[yk]
        if y.shape[1] != x.shape[1]:
            raise TaskFileError(
                f"{yk}: expected {n}={x.shape[1]} points as in {xk} {x.shape}, got {y.shape}"
            )
        if x.shape[1] < 1:
            raise TaskFileError(
                f"{xk}: expected {n} >= 1 points per task in (T, {n}, Dx), got {x.shape} (empty)"
            )

    # Values.
    for xk, yk, _ in sets:
        _check_finite(xk, arrays[xk])
        _check_finite(yk, arrays[yk])
        if classification:
            y = arrays[yk]
            if y.min() < 0:
                raise TaskFileError(
                    f"{yk}: expected class labels >= 0, got min {y.min()} "
                    f"({int((y < 0).sum())} negative of {y.size})"
                )
            if num_classes is not None and y.max() >= num_classes:
                raise TaskFileError(
                    f"{yk}: expected class labels in [0, {num_classes - 1}] "
                    f"(num_classes={num_classes}), got max {y.max()} "
                    f"({int((y >= num_classes).sum())} out of range of {y.size})"
                )
            if y.max() > np.iinfo(np.int32).max:
                raise TaskFileError(f"{yk}: expected class labels < 2**31, got max {y.max()}")

    out: dict[str, np.ndarray] = {}
    for xk, yk, _ in sets:
        out[xk] = arrays[xk].astype(np.float32)
        out[yk] = arrays[yk].astype(np.int32 if classification else np.float32)
    if "mask_query" in tasks:
        out["mask_query"] = _check_mask_query(tasks["mask_query"], arrays["x_query"].shape[:2])
    for key, value in tasks.items():
        if key not in out:
            out[key] = np.asarray(value)
    return out


def _is_concrete(a) -> bool:
    try:
        import jax
    except ImportError:  # pragma: no cover - jax is a dependency
        return True
    return not isinstance(a, jax.core.Tracer)


def validate_support(
    support,
    *,
    dx: int | None = None,
    dy: int | None = None,
    num_classes: int | None = None,
    classification: bool | None = None,
) -> None:
    """Check the support sets a method adapts to (a :class:`~bayesmeta.tasks.base.Support`).

    Shapes: ``x (T, K, Dx)``, ``y (T, K, Dy)`` float (regression) or ``(T, K)`` integer
    labels (classification), ``mask (T, K)``, with T, K >= 1. Values (when the arrays are
    concrete, i.e. not traced inside ``jit``): finite ``x`` and ``y``, ``mask`` in [0, 1],
    labels in ``[0, num_classes - 1]``.

    Parameters
    ----------
    support : Support or (x, y, mask)
    dx, dy : int, optional
        The model's input and output dimensions.
    num_classes : int, optional
        The model's number of classes (classification).
    classification : bool, optional
        ``None``: decided by the rank of ``y`` (2-D means labels).

    Raises
    ------
    TaskFileError
        (a ``ValueError``) on the first problem, naming ``support.x``, ``support.y`` or
        ``support.mask``, what was expected and what was got.
    """
    try:
        x, y, mask = support
    except (TypeError, ValueError):
        raise TaskFileError(
            f"support: expected a Support (x, y, mask), got {type(support).__name__}"
        ) from None
    for name, value in (("dx", dx), ("dy", dy), ("num_classes", num_classes)):
        _check_dim(name, value)
    arrays = {}
    for name, a in (("support.x", x), ("support.y", y), ("support.mask", mask)):
        shape, dtype = getattr(a, "shape", None), getattr(a, "dtype", None)
        if shape is None or dtype is None:
            a = np.asarray(a)
            shape, dtype = a.shape, a.dtype
        if np.dtype(dtype).kind not in "biuf":
            raise TaskFileError(f"{name}: expected a numeric array, got dtype {dtype}")
        arrays[name] = (a, tuple(shape), np.dtype(dtype))
    (xa, xs, _), (ya, ys, ydt), (ma, ms, _) = arrays.values()
    if len(xs) != 3:
        raise TaskFileError(f"support.x: expected 3-D (T, K, Dx), got shape {xs}")
    t, k, d = xs
    if t < 1 or k < 1:
        raise TaskFileError(
            f"support.x: expected T >= 1 tasks and K >= 1 points in (T, K, Dx), got {xs}"
            + (" (an empty support set)" if k < 1 else "")
        )
    if dx is not None and d != dx:
        raise TaskFileError(f"support.x: expected Dx={dx} (the model's), got (T, K, Dx)={xs}")
    if classification is None:
        classification = len(ys) == 2
    if classification:
        if len(ys) != 2 or ys != (t, k):
            raise TaskFileError(
                f"support.y: expected (T, K)=({t}, {k}) integer labels matching support.x {xs}, "
                f"got shape {ys}"
            )
        if ydt.kind not in "iu":
            raise TaskFileError(f"support.y: expected integer class labels, got dtype {ydt}")
    else:
        if len(ys) != 3 or ys[:2] != (t, k):
            raise TaskFileError(
                f"support.y: expected (T, K, Dy) with (T, K)=({t}, {k}) as in support.x {xs}, "
                f"got shape {ys}"
            )
        if dy is not None and ys[2] != dy:
            raise TaskFileError(f"support.y: expected Dy={dy} (the model's), got {ys}")
    if ms != (t, k):
        raise TaskFileError(
            f"support.mask: expected shape (T, K)=({t}, {k}) matching support.x {xs}, got {ms}"
        )
    if not all(_is_concrete(a) for a in (xa, ya, ma)):
        return  # traced: shapes only
    for name, a in (("support.x", xa), ("support.y", ya), ("support.mask", ma)):
        v = np.asarray(a)
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            n_nan = int(np.isnan(v).sum())
            n_inf = int((~np.isfinite(v)).sum()) - n_nan
            raise TaskFileError(
                f"{name}: expected finite values, got {n_nan} NaN and {n_inf} inf of {v.size}"
            )
    m = np.asarray(ma)
    if m.min() < 0 or m.max() > 1:
        raise TaskFileError(
            f"support.mask: expected values in [0, 1], got min {m.min()}, max {m.max()}"
        )
    if classification:
        lab = np.asarray(ya)
        hi = num_classes - 1 if num_classes is not None else None
        if lab.min() < 0 or (hi is not None and lab.max() > hi):
            want = f"[0, {hi}]" if hi is not None else ">= 0"
            raise TaskFileError(
                f"support.y: expected class labels {want}, got min {lab.min()}, max {lab.max()}"
            )


def save_tasks(
    path: str | os.PathLike, tasks: Mapping[str, object], *, validate: bool = True
) -> None:
    """Write a task dict to ``path`` as ``.npz``, atomically.

    The archive is written to a temporary file beside ``path`` and moved into place
    (:mod:`bayesmeta.atomic`), so a reader never sees a half-written file. Extra keys
    (``task_params``, ``x_pool``, …) are kept.

    Parameters
    ----------
    path : str or PathLike
        Destination; written exactly there (no ``.npz`` suffix is added).
    tasks : mapping of str -> array
    validate : bool
        Check the format first (:func:`validate_tasks`) and refuse to write a bad file.
    """
    if validate:
        validate_tasks(tasks)
    elif not isinstance(tasks, Mapping):
        raise TaskFileError(f"tasks: expected a dict of arrays, got {type(tasks).__name__}")
    bad_keys = [k for k in tasks if not isinstance(k, str)]
    if bad_keys:
        raise TaskFileError(f"tasks: expected string keys, got {bad_keys[0]!r}")
    arrays = {k: np.asarray(v) for k, v in tasks.items()}
    from bayesmeta.atomic import save_npz

    save_npz(path, arrays)


def load_tasks(
    path: str | os.PathLike,
    *,
    dx: int | None = None,
    classification: bool | None = None,
    dy: int | None = None,
    num_classes: int | None = None,
) -> dict[str, np.ndarray]:
    """Read and validate a task file.

    Parameters
    ----------
    path : str or PathLike
        An ``.npz`` archive in the task-file format.
    dx, classification, dy, num_classes
        As in :func:`validate_tasks`.

    Returns
    -------
    dict of ndarray
        As :func:`validate_tasks` returns it.

    Raises
    ------
    TaskFileError
        The file is missing, is not an ``.npz`` archive, or fails :func:`validate_tasks`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise TaskFileError(f"tasks file {path!r}: no such file")
    if os.path.isdir(path):
        raise TaskFileError(f"tasks file {path!r}: expected an .npz file, got a directory")
    if not zipfile.is_zipfile(path):
        raise TaskFileError(
            f"tasks file {path!r}: expected an .npz (zip) archive of arrays, got another format"
        )
    from bayesmeta.checkpoint import CheckpointError, NpzFile

    # each member's npy header is checked before its data is read: a declared shape must be
    # what the member stores, and a deflated member may not expand without bound (a zip bomb)
    where = f"tasks file {path!r}"
    try:
        with NpzFile(path, where) as npz:
            data = {key: npz.read(key) for key in npz.members}
    except CheckpointError as e:
        msg = str(e).splitlines()[0]
        if e.member is None:
            raise TaskFileError(msg) from None
        detail = msg[len(where) :].lstrip(": ")
        raise TaskFileError(
            f"{e.member}: cannot read array from {path!r} (expected a plain numeric array; "
            f"{detail})"
        ) from None
    try:
        return validate_tasks(
            data, dx=dx, classification=classification, dy=dy, num_classes=num_classes
        )
    except TaskFileError as e:
        raise TaskFileError(f"{e} [in {path}]") from None
