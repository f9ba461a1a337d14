"""benchmarks/rerun_row.py reruns a published calibration row and compares every metric."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "rerun_row.py"


def _script():
    spec = importlib.util.spec_from_file_location("rerun_row", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_field_is_compared_numbers_within_the_tolerance_counts_exactly():
    compare = _script().compare_rows
    old = {"nll": 1.0, "cov90": 0.9, "steps": 500, "n_tasks": 12, "temperature": None,
           "train_seconds": 3.0, "commit": "abc", "gap": float("nan")}  # fmt: skip
    same = compare(old, {**old, "nll": 1.0 + 1e-6, "train_seconds": 9.0, "commit": "x"}, 1e-4)
    assert set(same) == {"nll", "cov90", "steps", "n_tasks", "temperature", "gap"}
    assert all(f["passed"] for f in same.values())
    moved = compare(old, {**old, "cov90": 0.8}, 1e-4)
    assert not moved["cov90"]["passed"] and moved["nll"]["passed"]
    assert not compare(old, {**old, "steps": 501}, 1.0)["steps"]["passed"]  # counts exactly
    assert not compare(old, {k: v for k, v in old.items() if k != "nll"}, 1e-4)["nll"]["passed"]


@pytest.mark.slow
def test_a_cheap_published_row_reruns_identically(tmp_path):
    out = tmp_path / "rerun.json"
    code = _script().main(["--family", "cigar", "--method", "neural-process", "--seed", "2",
                           "--tol", "1e-4", "--out", str(out)])  # fmt: skip
    saved = json.loads(out.read_text())
    assert code == 0 and saved["passed"], saved["comparison"]
    for c in saved["comparison"]:
        assert {"nll", "gap", "mse", "cov50", "cov90", "calibration_error", "steps"} <= set(
            c["fields"]
        )
