"""A report is an object (issue 42, item 7): a dict of the metrics, JSON as it stands, with a
readable repr and one row per task in ``to_dataframe()``."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.evaluate import Report, evaluate
from bayesmeta.posterior import TaskPosterior


def _report():
    rng = np.random.default_rng(0)
    post = TaskPosterior(
        phi=jnp.asarray(rng.normal(size=(3, 20, 2)), jnp.float32),
        log_weights=jnp.full((3, 20), -jnp.log(20.0)),
        noise_std=jnp.full((3, 20), 0.5),
        apply=lambda phi, x: x * phi[0] + phi[1],
        method="toy",
    )
    x = rng.uniform(-1, 1, (3, 4, 1)).astype(np.float32)
    y = rng.normal(size=(3, 4, 1)).astype(np.float32)
    return evaluate(post, x, y)


def test_a_report_is_a_dict_with_a_readable_repr():
    rep = _report()
    assert isinstance(rep, Report) and isinstance(rep, dict)
    assert json.loads(json.dumps(rep))["nll"] == pytest.approx(rep["nll"])
    text = repr(rep)
    assert text.startswith("Report: toy") and "NLL per point" in text and "±" in text
    assert "coverage" in text and "{" not in text  # not a raw dict
    assert rep["n_points"] == 12  # all query points of all tasks


def test_per_task_rows_and_baseline_differences():
    rep = _report()
    rep["baselines"] = {
        "eb_linear": {
            "nll": 1.0,
            "nll_per_task": [1.0, 2.0, 3.0],
            "diff_se": 0.1,
        }
    }
    cols = rep.per_task()
    assert cols["task"] == [0, 1, 2]
    np.testing.assert_allclose(
        cols["diff_eb_linear"], np.asarray(rep["nll_per_task"]) - [1.0, 2.0, 3.0]
    )
    assert "vs eb_linear" in repr(rep) and "difference" in repr(rep)
    pd = pytest.importorskip("pandas")
    df = rep.to_dataframe()
    assert isinstance(df, pd.DataFrame) and list(df.columns) == list(cols) and len(df) == 3
