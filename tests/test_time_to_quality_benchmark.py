"""benchmarks/time_to_quality.py: its curves, their provenance and ``--merge``."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "time_to_quality.py"


def _script():
    spec = importlib.util.spec_from_file_location("time_to_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _curve(family, method, tag):
    return {"family": family, "method": method, "tag": tag}


def test_merge_keeps_the_curves_this_run_does_not_recompute_with_their_own_provenance():
    ttq = _script()
    old = {
        "provenance": {"command": "old run"},
        "curves": [_curve("sinusoid", "maml", "old"), _curve("sinusoid", "abml", "old"),
                   _curve("sine_line", "maml", "old")],
    }  # fmt: skip
    new = [dict(_curve("sinusoid", "abml", "new"), provenance={"command": "new run"})]
    merged = ttq.merge_curves(old, new)
    assert [(c["family"], c["method"], c["tag"]) for c in merged] == [
        ("sinusoid", "maml", "old"),
        ("sinusoid", "abml", "new"),
        ("sine_line", "maml", "old"),
    ]
    assert [c["provenance"]["command"] for c in merged] == ["old run", "new run", "old run"]
    assert ttq.merge_curves(None, new) == new


def test_seconds_to_reach_is_the_first_validation_at_or_below_the_level():
    ttq = _script()
    assert ttq.seconds_to_reach([1.0, 2.0, 3.0], [0.6, 0.2, 0.1], 0.2) == 2.0
    assert ttq.seconds_to_reach([1.0, 2.0], [0.6, 0.3], 0.2) is None


@pytest.mark.slow
def test_a_short_run_writes_curves_with_provenance_and_merges_into_the_file(tmp_path):
    ttq = _script()
    args = ["--families", "sinusoid", "--chunks", "2", "--tasks", "4", "--samples", "4",
            "--steps-scale", "0.0001", "--out", str(tmp_path)]  # fmt: skip
    ttq.run([*args, "--methods", "maml"])
    ttq.run([*args, "--methods", "abml", "--merge"])
    result = json.loads((tmp_path / "time_to_quality.json").read_text())
    assert [c["method"] for c in result["curves"]] == ["maml", "abml"]
    for c in result["curves"]:
        assert len(c["gap_k5"]) == len(c["step"]) == len(c["seconds"]) >= 2
        prov = c["provenance"]
        assert prov["validation_tasks"] == 4 and "--methods" in prov["command"]
    assert (tmp_path / "time_to_quality.png").stat().st_size > 1000
