"""benchmarks/student_t_gap.py runs end to end on a few tasks and writes what it says: each
method's NLL beside the exact sinusoid predictive on the same tasks, paired, with provenance."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "student_t_gap.py"


@pytest.mark.slow  # a short amortized fit of the Student-t MLP model
def test_student_t_gap_writes_the_gap_to_the_exact_predictive(tmp_path):
    spec = importlib.util.spec_from_file_location("student_t_gap", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--methods", "amortized", "--k", "1", "5", "--steps", "20", "--num-tasks", "12",
            "--stream", "fresh", "--out", str(tmp_path)]  # fmt: skip
    result = mod.run(args)
    saved = json.loads((tmp_path / "student_t_gap.json").read_text())
    assert saved == json.loads(json.dumps(result))
    prov = saved["provenance"]
    for key in ("commit", "command", "machine", "steps_ran", "samples", "seed", "seconds"):
        assert key in prov, key
    assert prov["steps_ran"] == {"amortized": 20} and "--steps 20" in prov["command"]
    assert prov["test_stream"] == "fresh"
    rows = {r["k"]: r for r in saved["rows"]}
    assert set(rows) == {1, 5}
    for r in rows.values():
        # the gap is the paired difference of two finite NLLs over the same tasks
        assert np.isfinite(r["nll"]) and np.isfinite(r["exact_nll"])
        assert r["gap"] == pytest.approx(r["nll"] - r["exact_nll"], abs=1e-5)
        assert r["gap_se"] > 0
    # more support points pin the sinusoid down: the exact predictive gets sharper
    assert rows[5]["exact_nll"] < rows[1]["exact_nll"]
    md = (tmp_path / "student_t_gap.md").read_text()
    assert "| amortized | 5 | 20 |" in md and "The bar: amortized's K = 5 gap" in md
