"""benchmarks/scaling_groups.py runs end to end on small pools and writes what it says: one
child per (size, mode) with its own peak memory, groups/s, provenance and a figure."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "scaling_groups.py"


@pytest.mark.slow  # four child processes, each compiling a short amortized training
def test_scaling_groups_writes_rates_and_memory_per_pool_size(tmp_path):
    spec = importlib.util.spec_from_file_location("scaling_groups", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.run(["--sizes", "300", "3000", "--steps", "10", "--meta-batch", "4",
                      "--out", str(tmp_path)])  # fmt: skip
    saved = json.loads((tmp_path / "scaling_groups.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for key in ("commit", "command", "machine", "steps", "seed", "seconds", "meta_batch"):
        assert key in saved["provenance"], key
    rows = {(r["groups"], r["mode"]): r for r in saved["rows"]}
    assert set(rows) == {(g, m) for g in (300, 3000) for m in ("mmap", "memory")}
    for r in rows.values():
        assert r["groups_per_second"] > 0 and r["peak_rss_mb"] > 50
        assert r["timed_steps"] == 8 and r["pool_mb"] > 0
    assert rows[(3000, "mmap")]["pool_mb"] == pytest.approx(
        10 * rows[(300, "mmap")]["pool_mb"], rel=0.05
    )
    md = (tmp_path / "scaling_groups.md").read_text()
    assert "| 3,000 |" in md and "mmap" in md
    assert (tmp_path / "scaling_groups.png").read_bytes()[:4] == b"\x89PNG"
