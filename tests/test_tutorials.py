"""The tutorials (jupytext notebooks in docs/tutorials) execute, on small budgets."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).parent.parent / "docs" / "tutorials").glob("*.py"))


# each tutorial runs a few fits end to end in its own process: the slow tier
@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_executes(path, tmp_path):
    env = {**os.environ, "BAYESMETA_TUTORIAL_QUICK": "1", "BAYESMETA_TUTORIAL_OUT": str(tmp_path),
           "MPLBACKEND": "Agg"}  # fmt: skip
    proc = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp_path.glob("*.png")), "the tutorial saved no figure"


def test_there_are_three_tutorials():
    assert {p.stem for p in TUTORIALS} == {
        "fit_posterior",
        "calibration_benchmark",
        "active_learning",
    }
