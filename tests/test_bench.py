"""The calibration benchmark end to end on a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bayesmeta import bench
from bayesmeta.bench import Budget, Family, markdown, run_calibration, summarise

TINY = Budget(seconds=0.5, seeds=(0, 1), num_tasks=4, num_samples=5, chunk_size=5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    mp = pytest.MonkeyPatch()
    # one K per family keeps the grid references cheap; "add a family" is one dict entry
    mp.setitem(bench.FAMILIES, "sinusoid", Family("sinusoid", (5,)))
    mp.setitem(bench.FAMILIES, "circles", Family("circles", (1,), num_query=20))
    try:
        rows = run_calibration(
            TINY, out=out, families=["sinusoid", "circles"], methods=["maml"], log=None
        )
    finally:
        mp.undo()
    return rows, out


@pytest.mark.slow  # the tiny bench run: two families, two seeds
def test_rows_hold_every_field_and_the_oracle(tiny_run):
    rows, out = tiny_run
    assert json.loads((out / "calibration.json").read_text()) == json.loads(
        json.dumps(rows, default=float)
    )
    fams = {(r["family"], r["method"]) for r in rows}
    assert fams == {(f, m) for f in ("sinusoid", "circles") for m in ("maml", "reference")}
    for r in rows:
        assert r["seed"] in (0, 1) and r["k"] in (1, 5)
        assert np.isfinite(r["nll"]) and np.isfinite(r["oracle_nll"])
        assert r["gap"] == pytest.approx(r["nll"] - r["oracle_nll"])
        if r["family"] == "circles":
            assert {"accuracy", "ece", "mce", "brier"} <= set(r)
            assert 0 <= r["ece"] <= 1 and 0 <= r["accuracy"] <= 1
        else:
            assert {"mse", "cov50", "cov90", "calibration_error"} <= set(r)
            assert 0 <= r["cov90"] <= 1
        if r["method"] == "maml":
            assert r["steps"] >= 5 and r["train_seconds"] > 0


@pytest.mark.slow  # the tiny bench run: two families, two seeds
def test_summary_and_markdown(tiny_run):
    rows, out = tiny_run
    summ = summarise(rows)
    one = next(s for s in summ if s["family"] == "sinusoid" and s["k"] == 5)
    vals = [
        r["nll"]
        for r in rows
        if (r["family"], r["k"], r["method"]) == ("sinusoid", 5, one["method"])
    ]
    assert one["nll"]["mean"] == pytest.approx(np.mean(vals))
    assert one["nll"]["se"] == pytest.approx(np.std(vals, ddof=1) / np.sqrt(2))
    md = (out / "calibration.md").read_text()
    assert "### sinusoid" in md and "### circles" in md and "| 5 | maml |" in md
    assert markdown(rows) in md


def test_worse_calibrated_than_maml_is_marked():
    base = dict(family="circles", k=1, nll=0.5, gap=None, accuracy=0.8, mce=0.1, brier=0.2)
    rows = [
        {**base, "method": "maml", "seed": 0, "ece": 0.05},
        {**base, "method": "abml", "seed": 0, "ece": 0.09},
        {**base, "method": "bmaml", "seed": 0, "ece": 0.01},
    ]
    md = markdown(rows)
    assert "0.090 †" in md and "0.010 †" not in md and "0.050 †" not in md


@pytest.mark.slow  # the tiny bench run: two families, two seeds
def test_arviz_export_is_the_one_exporter_and_loo_reads_it(tiny_run):
    az = pytest.importorskip("arviz")
    _, out = tiny_run
    reg = az.from_netcdf(str(out / "posteriors" / "sinusoid_maml_k5.nc"))
    assert reg.posterior_predictive["y"].dims == ("chain", "draw", "task", "point", "dy")
    assert reg.log_likelihood["y"].dims == ("chain", "draw", "task", "point")
    assert set(reg.groups()) >= {"posterior", "observed_data", "constant_data"}
    cls = az.from_netcdf(str(out / "posteriors" / "circles_reference_k1.nc"))
    assert cls.log_likelihood["y"].dims == ("chain", "draw", "task", "point")
    assert np.isfinite(float(az.loo(cls, pointwise=False).elpd_loo))


@pytest.mark.slow  # the tiny bench run: two families, two seeds
def test_figures_are_written(tiny_run):
    _, out = tiny_run
    names = {p.name for p in (out / "calibration").glob("*.png")}
    assert {"circles_reliability_maml.png", "sinusoid_calibration_k5.png"} <= names
    assert "sinusoid_bands_k5.png" in names


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="budget: expected one of"):
        run_calibration("huge")
    with pytest.raises(ValueError, match="families: expected names"):
        run_calibration(TINY, families=["mnist"])
    with pytest.raises(ValueError, match="methods: expected names"):
        run_calibration(TINY, methods=["reference"])
    with pytest.raises(ValueError, match="seconds: expected > 0"):
        run_calibration(TINY, seconds=0)


STEPS = Budget(seconds=None, seeds=(0, 1), num_tasks=4, num_samples=5, chunk_size=5,
               steps={"sinusoid": {"*": 10}})  # fmt: skip


@pytest.mark.slow  # three tiny step-based runs of the grid
def test_shards_merge_to_the_whole_grid_and_a_rerun_resumes(tmp_path):
    mp = pytest.MonkeyPatch()
    mp.setitem(bench.FAMILIES, "sinusoid", Family("sinusoid", (5,)))
    kw = dict(families=["sinusoid"], methods=["maml", "emaml"], log=None, figures=False)
    try:
        whole = run_calibration(STEPS, out=tmp_path / "whole", command="test", **kw)
        for i in range(2):
            run_calibration(STEPS, out=tmp_path / f"s{i}", shard=(i, 2), command="test", **kw)
        # a rerun of a finished shard trains nothing and keeps its rows
        lines: list[str] = []
        again = run_calibration(
            STEPS, out=tmp_path / "s0", shard=(0, 2), command="test", **{**kw, "log": lines.append}
        )
    finally:
        mp.undo()
    assert not [line for line in lines if "steps" in line and "seed" in line]
    s0 = json.loads((tmp_path / "s0" / "calibration.json").read_text())
    assert again == s0
    assert {(r["method"], r["seed"]) for r in s0 if r["method"] != "reference"} == {
        ("maml", 0),
        ("emaml", 0),
    }  # units (maml, 0), (maml, 1), (emaml, 0), (emaml, 1): shard 0 of 2 takes the even ones
    merged = bench.merge([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    key = lambda r: (r["family"], r["method"], r["k"], r["seed"])  # noqa: E731
    # step-based: the same seed and steps give the same numbers in any process
    assert {key(r): r["nll"] for r in merged} == {key(r): r["nll"] for r in whole}
    for r in merged:  # provenance in every row
        assert {"commit", "command", "budget", "samples", "machine", "max_seconds"} <= set(r)
        if r["method"] != "reference":
            assert r["steps"] == 10 and r["train_seconds"] > 0 and r["compile_seconds"] > 0
    assert json.loads((tmp_path / "merged" / "calibration.json").read_text()) == merged
    # another budget never resumes into (and mixes with) these rows
    with pytest.raises(ValueError, match="holds rows of budget custom, not 'small'"):
        run_calibration("small", out=tmp_path / "merged", command="test", **kw)


def test_shard_and_merge_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="shard: expected I/N"):
        bench.parse_shard("2")
    with pytest.raises(ValueError, match="shard: expected 0 <= I < N"):
        bench.parse_shard("3/3")
    with pytest.raises(ValueError, match="shards: no calibration.json"):
        bench.merge([tmp_path], tmp_path / "out")
    assert bench.units(["a"], ["m", "n"], [0, 1])[1::2] == [("a", "m", 1), ("a", "n", 1)]


def test_bench_cli_refuses_bad_shards_and_an_empty_merge(tmp_path, capsys):
    from bayesmeta.cli import main

    assert main(["bench", "merge", "--out", str(tmp_path / "m")]) == 2
    assert "bench merge needs at least one shard folder" in capsys.readouterr().err
    assert main(["bench", "calibration", "--shard", "3/2", "--out", str(tmp_path / "c")]) == 2
    assert "--shard: expected 0 <= I < N" in capsys.readouterr().err


@pytest.mark.slow  # a digits run with validation after every other chunk
def test_classification_rows_early_stop_on_validation_and_fit_a_temperature(tmp_path):
    pytest.importorskip("sklearn")
    budget = Budget(seconds=None, seeds=(0,), num_tasks=6, num_samples=4, chunk_size=10,
                    steps={"digits": {"*": 50}}, validate=True,
                    validate_every={"digits": 2})  # fmt: skip
    rows = run_calibration(budget, out=tmp_path, families=["digits"],
                           methods=["bayesian-protonet"], log=None, figures=False)  # fmt: skip
    assert {r["k"] for r in rows} == {1, 5} and all(r["n_tasks"] == 6 for r in rows)
    for r in rows:
        # scored at the start (one fit path: fitting.fit_run), after chunks 2 and 4 and the
        # last: steps 0, 20, 40, 50
        assert r["steps"] == 50 and r["validation_step"] == [0, 20, 40, 50]
        assert r["best_step"] in (0, 20, 40, 50) and r["validate_every"] == 2
        assert len(r["validation_nll"]) == 4 == len(r["validation_seconds"])
        assert all(0 <= a <= 1 for a in r["validation_accuracy"])
        assert len(r["validation_accuracy"]) == 4
        assert r["temperature"] > 0 and 0 <= r["ts_ece"] <= 1 and r["accuracy_se"] > 0
        # temperature scaling never changes which class is predicted
        assert r["ts_accuracy"] == pytest.approx(r["accuracy"])
    assert "ECE at T" in (tmp_path / "calibration.md").read_text()
    assert (tmp_path / "digits_learning_curves.png").stat().st_size > 0
    assert (tmp_path / "digits_learning_curves_accuracy.png").stat().st_size > 0


def test_adapting_in_batches_of_tasks_equals_adapting_all_at_once():
    # memory-bounded adaptation (hundreds of image tasks): batches are a function of the shapes
    # and the joined posterior is the one posterior over every task, in order
    import jax

    from bayesmeta.modelfiles import load_model_spec
    from bayesmeta.posterior import concatenate
    from bayesmeta.tasks.base import padded_support
    from bayesmeta.zoo import held_out_tasks

    spec = load_model_spec("sinusoid")
    method, _ = spec.build("maml")
    state = method.init(jax.random.PRNGKey(0))
    support = padded_support(held_out_tasks(spec, 3, num_tasks=7, num_query=4), 5)
    key = jax.random.PRNGKey(1)
    whole = bench.adapt_in_batches(method, key, state, support, 1)
    np.testing.assert_array_equal(whole.phi, method.adapt(key, state, support, 1).phi)
    per_task = 1 * 5 * 1 * 64  # S · K · D · 64 floats
    parts = bench.adapt_in_batches(method, key, state, support, 1, max_floats=3 * per_task)
    assert parts.num_tasks == 7  # batches of 3, 3 and 1 tasks
    np.testing.assert_allclose(parts.phi, whole.phi, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(parts.noise_std, whole.noise_std, rtol=1e-6)
    with pytest.raises(ValueError, match="posteriors: expected at least one"):
        concatenate([])
    other = whole.__class__.from_samples(whole.phi[:, :1], 1.0, whole.apply, method="other")
    with pytest.raises(ValueError, match=r"posteriors\[1\]: expected likelihood"):
        concatenate([whole, other])


def test_the_published_grid_is_the_standard_budget_complete_with_provenance():
    """``benchmarks/results/calibration.json``: every method × family × K of the ``standard``
    budget with its 3 seeds, each row trained for the budget's steps and carrying its
    provenance (a partial rerun or a row from another budget fails here)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "calibration.json"
    rows = json.loads(path.read_text())
    budget = bench.BUDGETS["standard"]
    assert {r["budget"] for r in rows} == {"standard"}
    for r in rows:
        assert {"commit", "command", "machine", "samples", "seed", "max_seconds"} <= set(r), r
        if r["method"] != "reference":
            assert r["nll"] is not None and r["train_seconds"] > 0, r
            want = budget.steps.get(r["family"], {}).get(r["method"])
            if want is not None:  # the grouped data sets keep their recipe's fixed steps
                assert r["steps"] == want, (r["family"], r["method"], r["seed"], r["steps"])
    for family in budget.families:
        ks = bench.FAMILIES[family].ks
        for method in bench.METHODS:
            for k in ks:
                seeds = sorted(
                    r["seed"]
                    for r in rows
                    if (r["family"], r["method"], r["k"]) == (family, method, k)
                )
                assert seeds == list(budget.seeds), (family, method, k, seeds)
