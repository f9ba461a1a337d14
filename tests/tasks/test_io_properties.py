"""Property-based tests of the task-file writer and reader (hypothesis).

Random valid task sets round-trip exactly (bytes, dtypes and extra keys); random invalid ones
(NaN/inf, wrong ranks, mismatched T/K/Q, empty arrays, bad dtypes, missing keys) and random
garbage raise ``TaskFileError`` (a ``ValueError``) and nothing else, both from
``validate_tasks`` and through a file.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bayesmeta.tasks.io import TaskFileError, load_tasks, save_tasks, validate_tasks

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True)

f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def task_sets(draw, classification=None):
    """A valid task dict of random sizes (T, K, Q, P, Dx, Dy or C) and float32 values."""
    if classification is None:
        classification = draw(st.booleans())
    t, k, q = (draw(st.integers(1, 4)) for _ in range(3))
    dx = draw(st.integers(1, 3))
    dy = draw(st.integers(1, 2))
    pool = draw(st.integers(0, 3))
    sizes = {"support": k, "query": q, **({"pool": pool} if pool else {})}
    out = {}
    for name, n in sizes.items():
        out[f"x_{name}"] = draw(hnp.arrays(np.float32, (t, n, dx), elements=f32))
        if classification:
            out[f"y_{name}"] = draw(hnp.arrays(np.int32, (t, n), elements=st.integers(0, 9)))
        else:
            out[f"y_{name}"] = draw(hnp.arrays(np.float32, (t, n, dy), elements=f32))
    if draw(st.booleans()):
        out["task_params"] = draw(hnp.arrays(np.float64, (t, 2), elements=st.floats(-5, 5)))
    return out


def _tmpfile() -> str:
    fd, path = tempfile.mkstemp(suffix=".npz")
    os.close(fd)
    return path


@SETTINGS
@given(task_sets())
def test_round_trip_is_exact(tasks):
    path = _tmpfile()
    try:
        save_tasks(path, tasks)
        back = load_tasks(path)
    finally:
        os.remove(path)
    assert set(back) == set(tasks)
    for key, a in tasks.items():
        b = back[key]
        assert b.dtype == a.dtype and b.shape == a.shape, key
        assert b.tobytes() == a.tobytes(), key  # bit for bit (-0.0, subnormals, extremes)
    again = validate_tasks(back)
    assert all(again[k].tobytes() == back[k].tobytes() for k in back)


@st.composite
def broken_task_sets(draw):
    """A valid task set with one random defect; returns (tasks, the key the error must name)."""
    tasks = dict(draw(task_sets()))
    keys = [k for k in tasks if k != "task_params"]
    key = draw(st.sampled_from(keys))
    a = tasks[key]
    classification = tasks["y_support"].ndim == 2
    defects = ["rank_up", "rank_down", "tasks", "empty", "dtype", "missing"]
    if key.startswith("x_") or not classification:
        defects += ["nan", "inf", "huge"]
    if key.startswith("x_"):
        defects.append("dx")
    if key.startswith("y_") and classification:
        defects += ["negative", "float_labels"]
    defect = draw(st.sampled_from(defects))
    if defect in ("nan", "inf", "huge"):
        a = a.astype(np.float64)
        i = draw(st.integers(0, a.size - 1))
        a.flat[i] = {"nan": np.nan, "inf": draw(st.sampled_from([np.inf, -np.inf])), "huge": 1e39}[
            defect
        ]
    elif defect == "rank_up":
        a = a[..., None]
    elif defect == "rank_down":
        a = a[..., 0]
    elif defect == "tasks":
        a = a[: a.shape[0] - 1] if draw(st.booleans()) else np.concatenate([a, a[:1]])
    elif defect == "empty":
        a = a[:, :0]
    elif defect == "dtype":
        a = draw(st.sampled_from([a.astype(str), a > 0, a.astype(np.complex64)]))
    elif defect == "missing":
        tasks.pop(key)
        a = None
    elif defect == "dx":
        a = np.concatenate([a, a], axis=-1)
    elif defect == "negative":
        a = a - 10
    elif defect == "float_labels":
        a = a.astype(np.float32) + 0.5
    if a is not None:
        tasks[key] = a
    return tasks, key, defect


@SETTINGS
@given(broken_task_sets())
def test_invalid_task_sets_raise_task_file_error(case):
    tasks, named, defect = case
    with pytest.raises(TaskFileError) as info:
        validate_tasks(tasks)
    msg = str(info.value)
    assert "\n" not in msg
    # the message names the broken array (first, or as the reference another one differs from)
    assert named in msg, (defect, msg)
    assert isinstance(info.value, ValueError)


@SETTINGS
@given(broken_task_sets())
def test_invalid_task_files_raise_task_file_error(case):
    tasks, _, _ = case
    path = _tmpfile()
    try:
        with pytest.raises(TaskFileError):  # refused: nothing is written
            save_tasks(path, tasks)
        assert not os.path.exists(path + ".tmp")
        try:
            np.savez(path, **tasks)  # written anyway, without validation
        except Exception:  # noqa: BLE001 - numpy cannot even write it: nothing to read
            return
        with open(path, "rb") as fh:
            assert fh.read(2) == b"PK"
        with pytest.raises(TaskFileError):
            load_tasks(path)
    finally:
        os.remove(path)


ANY_DTYPE = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8, np.bool_]
)


@st.composite
def garbage(draw):
    """Random arrays (any rank 0-4, sizes 0-3, any numeric dtype, any values) under the task
    keys, some keys missing."""
    out = {}
    for key in ("x_support", "y_support", "x_query", "y_query", "x_pool", "y_pool"):
        if draw(st.integers(0, 5)) == 0:
            continue
        dtype = draw(ANY_DTYPE)
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3))
        out[key] = draw(hnp.arrays(dtype, shape))
    return out


@SETTINGS
@given(garbage(), st.sampled_from([None, True, False]), st.sampled_from([None, 1, 2]))
def test_garbage_is_accepted_or_raises_task_file_error_only(tasks, classification, dx):
    try:
        out = validate_tasks(tasks, classification=classification, dx=dx)
    except TaskFileError as err:
        assert "\n" not in str(err)
        return
    # accepted: then it really is a valid task set
    for key in ("x_support", "y_support", "x_query", "y_query"):
        assert out[key].shape[0] == out["x_support"].shape[0] >= 1
        assert np.all(np.isfinite(out[key]))
    assert out["x_support"].shape[1] >= 1


@SETTINGS
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_raise_task_file_error_only(data, zip_magic):
    path = _tmpfile()
    try:
        with open(path, "wb") as fh:
            fh.write((b"PK\x03\x04" if zip_magic else b"") + data)
        with pytest.raises(TaskFileError):
            load_tasks(path)
    finally:
        os.remove(path)
