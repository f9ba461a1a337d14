"""benchmarks/scaling.py runs on CPU (one and two processes) and writes what it says."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "scaling.py"


@pytest.mark.slow
def test_scaling_benchmark_runs_on_cpu_with_one_and_two_processes(tmp_path):
    spec = importlib.util.spec_from_file_location("scaling", SCRIPT)
    scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scaling)
    rows = scaling.main(["--processes", "1", "2", "--meta-batch", "4", "--methods", "maml",
                         "--steps", "3", "--repeats", "1", "--out", str(tmp_path)])  # fmt: skip
    assert [(r["processes"], r["devices"]) for r in rows] == [(1, 1), (2, 2)]
    for r in rows:
        assert r["tasks_per_s"] == pytest.approx(r["steps"] * r["meta_batch"] / r["seconds"])
        assert r["tasks_per_s"] > 0 and r["peak_mb"] > 10 and r["memory"] == "process peak RSS"
    assert rows[0]["speedup"] == 1.0
    report = json.loads((tmp_path / "scaling.json").read_text())
    assert report["rows"] == json.loads(json.dumps(rows)) and report["steps"] == 3
    assert "| maml | 2 | 2 | 4 |" in (tmp_path / "scaling.md").read_text()
    assert (tmp_path / "scaling.png").stat().st_size > 1000
