"""Task files: round trip, atomic writes, and one clear TaskFileError per malformed file."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from bayesmeta.tasks import make_task_set, sinusoid
from bayesmeta.tasks.io import TaskFileError, load_tasks, save_tasks, validate_tasks

T, K, Q, P = 4, 5, 7, 3


@pytest.fixture(scope="module")
def task_set():
    return {
        k: np.asarray(v)
        for k, v in make_task_set(sinusoid(), jax.random.PRNGKey(0), T, K, Q).items()
    }


def _regression(**overrides):
    rng = np.random.default_rng(0)
    d = {
        "x_support": rng.normal(size=(T, K, 1)),
        "y_support": rng.normal(size=(T, K, 1)),
        "x_query": rng.normal(size=(T, Q, 1)),
        "y_query": rng.normal(size=(T, Q, 1)),
    }
    d.update(overrides)
    return {k: v for k, v in d.items() if v is not None}


def _classification(**overrides):
    rng = np.random.default_rng(1)
    d = {
        "x_support": rng.normal(size=(T, K, 2)),
        "y_support": rng.integers(0, 3, size=(T, K)),
        "x_query": rng.normal(size=(T, Q, 2)),
        "y_query": rng.integers(0, 3, size=(T, Q)),
    }
    d.update(overrides)
    return {k: v for k, v in d.items() if v is not None}


def test_round_trip_make_task_set(tmp_path, task_set):
    path = tmp_path / "tasks.npz"
    save_tasks(path, task_set)
    assert not os.path.exists(str(path) + ".tmp")
    loaded = load_tasks(path, dx=1)
    assert set(loaded) == set(task_set)
    for key, value in task_set.items():
        np.testing.assert_array_equal(loaded[key], value)
    assert loaded["x_support"].dtype == np.float32 and loaded["y_query"].dtype == np.float32
    assert loaded["task_params"].shape == (T, 2)  # extra key kept


def test_round_trip_pool_and_classification(tmp_path):
    rng = np.random.default_rng(2)
    tasks = _classification(x_pool=rng.normal(size=(T, P, 2)), y_pool=rng.integers(0, 3, (T, P)))
    path = tmp_path / "clf.npz"
    save_tasks(str(path), tasks)
    loaded = load_tasks(str(path), classification=True, dx=2)
    for key in tasks:  # float64 inputs are stored as float32 on load
        np.testing.assert_array_equal(loaded[key], tasks[key].astype(loaded[key].dtype))
    np.testing.assert_allclose(loaded["x_query"], tasks["x_query"], rtol=1e-6)
    assert loaded["y_support"].dtype == np.int32 and loaded["y_pool"].dtype == np.int32
    assert loaded["x_pool"].dtype == np.float32
    # Classification inferred from 2-D integer labels.
    assert load_tasks(path)["y_query"].dtype == np.int32


def test_save_is_atomic_and_replaces(tmp_path, task_set):
    path = tmp_path / "tasks.npz"
    save_tasks(path, task_set)
    changed = {**task_set, "y_query": task_set["y_query"] + 1}
    save_tasks(path, changed)
    np.testing.assert_array_equal(load_tasks(path)["y_query"], changed["y_query"])
    # A refused (invalid) save leaves the old file in place and no temporary behind.
    with pytest.raises(TaskFileError, match="y_query"):
        save_tasks(path, {**task_set, "y_query": task_set["y_query"][:, :, 0]})
    np.testing.assert_array_equal(load_tasks(path)["y_query"], changed["y_query"])
    assert sorted(os.listdir(tmp_path)) == ["tasks.npz"]


def test_save_without_suffix_writes_exact_path(tmp_path, task_set):
    path = tmp_path / "tasks.bin"
    save_tasks(path, task_set)
    assert os.listdir(tmp_path) == ["tasks.bin"]
    np.testing.assert_array_equal(load_tasks(path)["x_query"], task_set["x_query"])


def test_validate_normalises_dtypes_without_a_file():
    tasks = _regression(
        y_support=np.ones((T, K, 1), np.int64), y_query=np.ones((T, Q, 1), np.int64)
    )
    out = validate_tasks(tasks, classification=False)
    assert out["y_support"].dtype == np.float32 and np.all(out["y_support"] == 1.0)


BAD = {
    "nan": (
        _regression(x_query=np.where(np.eye(Q)[None, :, :1] > 0, np.nan, 1.0).repeat(T, 0)),
        {},
        r"x_query: expected finite values, got 4 NaN and 0 inf",
    ),
    "inf": (
        _regression(y_support=np.full((T, K, 1), np.inf)),
        {},
        r"y_support: .*0 NaN and 20 inf",
    ),
    "missing_key": (_regression(y_query=None), {}, r"y_query: missing key"),
    "wrong_rank_x": (
        _regression(x_support=np.zeros((T, K))),
        {},
        r"x_support: expected 3-D \(T, K, Dx\), got 2-D",
    ),
    "wrong_rank_y": (
        _regression(y_support=np.zeros((T, K, 1, 1))),
        {},
        r"y_support: expected 3-D \(T, K, Dy\) float .* got 4-D",
    ),
    "y_query_2d_regression": (
        _regression(y_query=np.zeros((T, Q))),
        {},
        r"y_query: expected 3-D \(T, Q, Dy\)",
    ),
    "mismatched_T": (
        _regression(x_query=np.zeros((T + 1, Q, 1)), y_query=np.zeros((T + 1, Q, 1))),
        {},
        r"x_query: expected T=4 tasks",
    ),
    "mismatched_K": (
        _regression(y_support=np.zeros((T, K - 1, 1))),
        {},
        r"y_support: expected K=5 points as in x_support",
    ),
    "mismatched_Q": (
        _regression(y_query=np.zeros((T, Q + 1, 1))),
        {},
        r"y_query: expected Q=7 points",
    ),
    "mismatched_Dy": (_regression(y_query=np.zeros((T, Q, 2))), {}, r"y_query: expected Dy=1"),
    "empty_support": (
        _regression(x_support=np.zeros((T, 0, 1)), y_support=np.zeros((T, 0, 1))),
        {},
        r"x_support: expected K >= 1 points .*empty",
    ),
    "empty_query": (
        _regression(x_query=np.zeros((T, 0, 1)), y_query=np.zeros((T, 0, 1))),
        {},
        r"x_query: expected Q >= 1",
    ),
    "no_tasks": (
        _regression(
            **{k: np.zeros((0, 2, 1)) for k in ("x_support", "y_support", "x_query", "y_query")}
        ),
        {},
        r"x_support: expected T >= 1",
    ),
    "dx_mismatch": (
        _regression(),
        {"dx": 2},
        r"x_support: expected Dx=2 \(from dx\), got \(T, K, Dx\)=\(4, 5, 1\)",
    ),
    "dx_query_mismatch": (
        _regression(x_query=np.zeros((T, Q, 3))),
        {},
        r"x_query: expected Dx=1 as in x_support",
    ),
    "string_dtype": (
        _regression(x_support=np.full((T, K, 1), "a")),
        {},
        r"x_support: expected a numeric .* got dtype <U1",
    ),
    "float_labels": (
        _classification(y_support=np.zeros((T, K))),
        {"classification": True},
        r"y_support: expected integer class labels \(classification\), got dtype float64",
    ),
    "float_2d_inferred": (
        _classification(y_support=np.zeros((T, K))),
        {},
        r"y_support: expected 3-D \(T, K, Dy\) float \(regression\) or 2-D \(T, K\) integer",
    ),
    "negative_labels": (
        _classification(y_query=-np.ones((T, Q), int)),
        {},
        r"y_query: expected class labels >= 0, got min -1 \(28 negative",
    ),
    "3d_labels": (
        _classification(y_support=np.zeros((T, K, 1), int)),
        {"classification": True},
        r"y_support: expected 2-D \(T, K\) integer labels",
    ),
    "regression_forced_on_labels": (
        _classification(),
        {"classification": False},
        r"y_support: expected 3-D \(T, K, Dy\) float outputs \(regression\)",
    ),
    "pool_without_y_pool": (
        _regression(x_pool=np.zeros((T, P, 1))),
        {},
        r"y_pool: missing key \(x_pool is present",
    ),
    "y_pool_without_x_pool": (
        _regression(y_pool=np.zeros((T, P, 1))),
        {},
        r"x_pool: missing key \(y_pool is present",
    ),
    "pool_mismatched_P": (
        _regression(x_pool=np.zeros((T, P, 1)), y_pool=np.zeros((T, P + 1, 1))),
        {},
        r"y_pool: expected P=3 points as in x_pool",
    ),
    "pool_nan": (
        _regression(x_pool=np.zeros((T, P, 1)), y_pool=np.full((T, P, 1), np.nan)),
        {},
        r"y_pool: expected finite values, got 12 NaN",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_task_dict_raises_one_line(case):
    tasks, kwargs, match = BAD[case]
    with pytest.raises(TaskFileError, match=match) as info:
        validate_tasks(tasks, **kwargs)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_task_file_raises_naming_the_key(tmp_path, case):
    tasks, kwargs, match = BAD[case]
    path = tmp_path / "bad.npz"
    save_tasks(path, tasks, validate=False)
    with pytest.raises(TaskFileError, match=match) as info:
        load_tasks(path, **kwargs)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(TaskFileError, match=r"no such file"):
        load_tasks(tmp_path / "absent.npz")


def test_not_an_npz(tmp_path):
    text = tmp_path / "tasks.npz"
    text.write_text("x_support,y_support\n1,2\n")
    with pytest.raises(TaskFileError, match=r"expected an \.npz \(zip\) archive"):
        load_tasks(text)
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(TaskFileError, match=r"expected an \.npz \(zip\) archive"):
        load_tasks(npy)
    with pytest.raises(TaskFileError, match=r"got a directory"):
        load_tasks(tmp_path)


def test_pickled_object_array_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    tasks = _regression()
    tasks["x_support"] = np.array([object()] * 3, dtype=object)
    np.savez(path, **tasks)
    with pytest.raises(TaskFileError, match=r"x_support: cannot read array"):
        load_tasks(path)


def test_dx_argument_validated():
    with pytest.raises(TaskFileError, match=r"dx: expected a positive integer"):
        validate_tasks(_regression(), dx=0)


def test_mask_query_is_validated_and_kept():
    rng = np.random.default_rng(0)
    tasks = {
        "x_support": rng.normal(size=(2, 3, 1)),
        "y_support": rng.normal(size=(2, 3, 1)),
        "x_query": rng.normal(size=(2, 4, 1)),
        "y_query": rng.normal(size=(2, 4, 1)),
    }
    ok = validate_tasks({**tasks, "mask_query": np.array([[1, 1, 0, 0], [1, 1, 1, 1]])})
    assert ok["mask_query"].dtype == np.float32 and ok["mask_query"].sum() == 6
    for bad, needle in [
        (np.ones((2, 3)), r"mask_query: expected shape \(T, Q\)=\(2, 4\)"),
        (np.full((2, 4), 0.5), "mask_query: expected only 0"),
        (np.array([[0, 0, 0, 0], [1, 1, 1, 1]]), "in 1 tasks \\(first: task 0\\)"),
    ]:
        with pytest.raises(TaskFileError, match=needle):
            validate_tasks({**tasks, "mask_query": bad})
