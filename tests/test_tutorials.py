"""The tutorials (jupytext notebooks in docs/tutorials) execute as notebooks, on small budgets.

Each ``.py`` is read by jupytext into a notebook and executed cell by cell in a Jupyter kernel
by nbclient (the ``notebooks`` extra, which CI installs); the executed notebook, outputs and
figures included, is written beside the figures. Without the extra the test runs the file as a
script instead, so a tutorial that breaks still fails.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).parent.parent / "docs" / "tutorials").glob("*.py"))
NOTEBOOKS = all(importlib.util.find_spec(m) for m in ("jupytext", "nbclient", "ipykernel"))


def _execute_notebook(path: Path, out: Path, env: dict) -> None:
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(out)}}).execute()  # fmt: skip
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    jupytext.write(nb, out / f"{path.stem}.ipynb")


# each tutorial runs a few fits end to end in its own kernel or process: the slow tier
@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_executes(path, tmp_path):
    env = {"BAYESMETA_TUTORIAL_QUICK": "1", "BAYESMETA_TUTORIAL_OUT": str(tmp_path),
           "MPLBACKEND": "Agg"}  # fmt: skip
    if NOTEBOOKS:
        _execute_notebook(path, tmp_path, env)
        executed = (tmp_path / f"{path.stem}.ipynb").read_text()
        assert '"outputs"' in executed and '"execution_count": 1' in executed
        print(f"executed notebook {path.stem}.ipynb")  # shown in CI's log with -rA
    else:
        proc = subprocess.run([sys.executable, str(path)], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=900)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp_path.glob("*.png")), "the tutorial saved no figure"


def test_there_are_five_tutorials():
    assert {p.stem for p in TUTORIALS} == {
        "fit_posterior",
        "calibration_benchmark",
        "active_learning",
        "your_own_data",
        "compare_with_arviz",
    }
