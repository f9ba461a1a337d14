"""benchmarks/batch_active.py runs end to end on a few tasks and writes what it says: each
batch rule's NLL and MSE after labelling, paired with the top-B rule over the same tasks."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "batch_active.py"


@pytest.mark.slow  # a few ask/tell loops on the exact sine-or-line posterior
def test_batch_active_writes_paired_rules(tmp_path):
    spec = importlib.util.spec_from_file_location("batch_active", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--families", "sine_line", "--num-tasks", "3", "--batch", "2", "--pool", "12",
            "--num-eval", "6", "--samples", "100", "--out", str(tmp_path)]  # fmt: skip
    result = mod.run(args)
    saved = json.loads((tmp_path / "batch_active.json").read_text())
    assert saved == json.loads(json.dumps(result))
    prov = saved["provenance"]
    for key in ("commit", "command", "machine", "seed", "batch", "num_tasks", "seconds"):
        assert key in prov, key
    rows = {r["rule"]: r for r in saved["rows"]}
    assert set(rows) == {"random", "top", "fantasised"}
    top = np.asarray(rows["top"]["nll_per_task"])
    for rule in ("random", "fantasised"):
        r = rows[rule]
        d = np.asarray(r["nll_per_task"]) - top
        assert r["nll_vs_top"] == pytest.approx(d.mean(), abs=1e-6)
        assert np.isfinite([r["nll"], r["mse"], r["nll_vs_top_se"]]).all()
    assert "| sine_line | fantasised |" in (tmp_path / "batch_active.md").read_text()
