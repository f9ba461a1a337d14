"""benchmarks/active_families.py runs end to end on a few tasks and writes what it says:
curves per family, method and acquisition, window means, paired differences to random and the
captured fraction of the exact posterior's advantage, with provenance."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "active_families.py"


@pytest.mark.slow  # a short MAML fit per family and the jitted loops
def test_active_families_writes_curves_differences_and_captured_fractions(tmp_path):
    spec = importlib.util.spec_from_file_location("active_families", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.run(["--families", "skewed", "circles", "--methods", "reference", "maml",
                      "--steps", "50", "--num-tasks", "8", "--queries", "6", "--samples", "10",
                      "--pool", "20", "--num-eval", "10", "--out", str(tmp_path)])  # fmt: skip
    saved = json.loads((tmp_path / "active_families.json").read_text())
    assert saved == json.loads(json.dumps(result))
    prov = saved["provenance"]
    for key in ("commit", "command", "machine", "steps", "task_seed", "seed", "samples"):
        assert key in prov, key
    assert prov["steps"]["maml"] == 50 and prov["task_seed"] == mod.TASK_SEED
    rows = {(r["family"], r["method"], r["acquisition"]): r for r in saved["rows"]}
    assert ("skewed", "maml", "variance") in rows and ("circles", "maml", "entropy") in rows
    assert rows[("circles", "maml", "bald")]["metric"] == "accuracy"
    for r in rows.values():
        assert np.isfinite(r["nll_window"])
        if r["acquisition"] != "random":
            assert np.isfinite(r["nll_vs_random"]) and r["nll_vs_random_se"] >= 0
    ref = rows[("skewed", "reference", "bald")]
    if "nll_captured" in ref:  # the oracle against itself captures all of its advantage
        assert ref["nll_captured"] == pytest.approx(1.0)
    curve = saved["curves"]["skewed"]["maml"]["random"]
    assert curve["n_queries"] == list(range(7)) and len(curve["nll"]) == 7
    assert "| skewed | maml | variance |" in (tmp_path / "active_families.md").read_text()
    assert (tmp_path / "active_families.png").read_bytes()[:4] == b"\x89PNG"


def test_skewed_pool_crowds_candidates_and_labels_them_from_the_family():
    spec = importlib.util.spec_from_file_location("active_families", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import jax

    from bayesmeta.modelfiles import load_model_spec
    from bayesmeta.tasks.base import make_task_set

    fam = load_model_spec("sinusoid").family
    tasks = make_task_set(fam, jax.random.PRNGKey(0), 6, 1, 60)
    out = mod.skewed_pool(fam, tasks, jax.random.PRNGKey(1), 50, 0.9)
    x = np.asarray(out["x_query"])[:, :50, 0]
    assert 0.8 < np.mean(x < -3.0) < 1.0  # crowded in the leftmost fifth of [-5, 5]
    np.testing.assert_array_equal(
        np.asarray(out["x_query"])[:, 50:], np.asarray(tasks["x_query"])[:, 50:]
    )
    psi = np.asarray(tasks["task_params"])
    mean = np.asarray(jax.vmap(fam.mean_fn)(psi, out["x_query"][:, :50]))
    resid = np.asarray(out["y_query"])[:, :50] - mean
    assert 0.2 < resid.std() < 0.4  # the family's noise (0.3), around the task's own curve
