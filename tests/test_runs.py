"""bayesmeta.fit / Fitted / load: the notebook path, on a built-in model, a custom optimiser
and the user's own grouped data."""

from __future__ import annotations

import json

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest

import bayesmeta as bm
from bayesmeta.cli import main
from bayesmeta.tasks import from_groups


@pytest.fixture(scope="module")
def fitted():
    return bm.fit("sinusoid", "maml", steps=20, progress=False, meta_batch=4)


def test_fit_adapt_evaluate_save_load(fitted, tmp_path):
    assert fitted.info["steps"] == 20 and fitted.info["settings"]["meta_batch"] == 4
    tasks = fitted.held_out(k=5, num_tasks=6, num_query=10)
    # one task with plain (K,) arrays, or a batch; the mask is built for the user
    one = fitted.adapt(tasks["x_support"][0, :, 0], tasks["y_support"][0, :, 0])
    many = fitted.adapt(tasks["x_support"], tasks["y_support"])
    assert one.num_tasks == 1 and many.num_tasks == 6
    np.testing.assert_allclose(one.phi[0], many.phi[0], rtol=1e-5, atol=1e-6)
    # a masked point changes nothing but which points count
    half = fitted.adapt(tasks["x_support"][0], tasks["y_support"][0], mask=[1, 1, 1, 0, 0])
    short = fitted.adapt(tasks["x_support"][0, :3], tasks["y_support"][0, :3])
    np.testing.assert_allclose(half.phi, short.phi, rtol=1e-4, atol=1e-5)
    report = fitted.evaluate(tasks)
    # (the exact reference's grid beside it: test_plot_shows_the_reference, slow tier)
    fig = fitted.plot(tasks, 20, reference=False, task_indices=(0, 1), path=tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 0 and len(fig.axes) >= 2
    assert report["n_tasks"] == 6 and np.isfinite(report["nll"]) and report["nll_se"] > 0
    run = fitted.save(tmp_path / "run")
    again = bm.load(run)
    assert again.evaluate(tasks)["nll"] == pytest.approx(report["nll"], abs=1e-6)
    assert json.loads((run / "run.json").read_text())["method"] == "maml"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted.save(run)
    # the command line reads the same run directory
    from bayesmeta.tasks.io import save_tasks

    save_tasks(tmp_path / "t.npz", tasks)
    assert main(["evaluate", str(run), "--tasks", str(tmp_path / "t.npz"), "--samples", "1",
                 "--quiet", "--out", str(tmp_path / "r.json")]) == 0  # fmt: skip


@pytest.mark.slow  # the reference's quadrature grid, compiled at the default tier's -O0
def test_plot_shows_the_reference(fitted, tmp_path):
    tasks = fitted.held_out(k=5, num_tasks=2, num_query=10)
    fig = fitted.plot(tasks, 20, task_indices=(0, 1), path=tmp_path / "bands.png")
    assert (tmp_path / "bands.png").stat().st_size > 0 and len(fig.axes) >= 4  # maml + reference


def test_bad_input_names_the_argument(fitted):
    with pytest.raises(ValueError, match=r"x_support: expected \(K, 1\)"):
        fitted.adapt(np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="y_support: expected"):
        fitted.adapt(np.zeros((5, 1)), np.zeros(4))
    with pytest.raises(ValueError, match="mask: expected"):
        fitted.adapt(np.zeros((5, 1)), np.zeros(5), mask=[1, 0])
    with pytest.raises(ValueError, match="num_partcles"):
        bm.fit("sinusoid", "emaml", steps=1, num_partcles=3)
    with pytest.raises(TypeError, match="model: expected"):
        bm.fit(3.0, "maml")
    with pytest.raises(ValueError, match="model: with data"):
        bm.fit("sinusoid", "maml", data="Cigar")


def test_own_optimizer_is_used_and_needed_to_load(tmp_path):
    f = bm.fit("sinusoid", "maml", steps=3, progress=False, meta_batch=2, optimizer=optax.sgd(0.0))
    # a zero learning rate leaves θ at its initialisation (fit's init key: PRNGKey(seed) split)
    start = f.method.init(jax.random.split(jax.random.PRNGKey(0))[0])
    assert int(f.state.step) == 3
    for k in f.state.theta:
        np.testing.assert_allclose(f.state.theta[k], start.theta[k], atol=1e-6)
    run = f.save(tmp_path / "sgd")
    with pytest.raises(ValueError, match="optimizer: .* own optimizer"):
        bm.load(run)
    assert bm.load(run, optimizer=optax.sgd(0.0)).info["optimizer"] == "custom"


def _rows():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(24), 8)
    slope = rng.normal(1.0, 0.5, 24)[g]
    x = rng.normal(size=(g.size, 1))
    y = slope * x[:, 0] + rng.normal(0, 0.2, g.size)
    return from_groups(x, y, g, name="toy")


def _line(x, y=None, mask=None):
    t, n, _ = x.shape
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with numpyro.plate("tasks", t, dim=-2):
        w = numpyro.sample("w", dist.Normal(mu, 1.0).to_event(1))
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Normal(w[..., 0] * x[..., 0] + w[..., 1], 0.3), obs=y)


def test_own_data_with_a_builtin_or_own_model(tmp_path):
    rows = _rows()
    ref = bm.fit("linear", "reference", data=rows)
    tasks = ref.held_out(k=3, num_tasks=4, num_query=4)
    assert np.isfinite(ref.evaluate(tasks)["nll"])
    # on data the fit validates on the validation groups and keeps the best state
    f = bm.fit(_line, "maml", data=rows, steps=20, progress=False, meta_batch=4, chunk_size=10)
    assert f.info["history"]["validation_step"] == [0, 10, 20]  # the start is a candidate
    assert f.info["best_step"] in (0, 10, 20) and int(f.state.step) == f.info["best_step"]
    assert np.isfinite(f.evaluate(tasks)["nll"])
    # a model given as an object is given again to load
    run = f.save(tmp_path / "own")
    g = bm.load(run, model=f.spec)
    assert g.evaluate(tasks)["nll"] == pytest.approx(f.evaluate(tasks)["nll"], abs=1e-6)


def test_tasks_is_the_package_and_a_task_set_function(fitted):
    import bayesmeta.tasks as tasks_module
    from bayesmeta.tasks import Support  # the package still imports

    assert bm.tasks is tasks_module and Support is bm.Support
    t = bm.tasks("sinusoid", k=3, num_tasks=4, num_query=7)
    assert t["x_support"].shape == (4, 3, 1) and t["y_query"].shape == (4, 7, 1)
    # the same test tasks as the fitted run's, and disjoint from the validation stream
    same = fitted.held_out(k=3, num_tasks=4, num_query=7)
    np.testing.assert_array_equal(t["x_support"], same["x_support"])
    np.testing.assert_array_equal(bm.tasks(fitted, 3, 4, num_query=7)["y_query"], same["y_query"])
    val = bm.tasks("sinusoid", k=3, num_tasks=4, num_query=7, split="validation")
    assert not np.allclose(val["task_params"], t["task_params"])


def test_tasks_of_grouped_data_fit_the_groups():
    rows = bm.tasks.dataset("Cigar")
    t = bm.tasks(rows, k=3, num_tasks=5)  # num_query shrinks to what the groups hold
    test_groups = rows.split(seed=0).test
    assert t["x_support"].shape == (5, 3, rows.x.shape[1])
    assert 3 + t["x_query"].shape[1] <= int(np.max(test_groups.lengths))
    np.testing.assert_array_equal(bm.tasks("Cigar", k=3, num_tasks=5)["y_query"], t["y_query"])
    with pytest.raises(ValueError, match="k, num_tasks, num_query"):
        bm.tasks("sinusoid", k=0)
    with pytest.raises(ValueError, match="split"):
        bm.tasks("sinusoid", k=2, split="train")


def test_a_classifier_fits_its_temperature_on_validation_classes():
    pytest.importorskip("sklearn")
    fitted = bm.fit("digits", "bayesian-protonet", steps=20, progress=False, validate=False,
                    chunk_size=10)  # fmt: skip
    t = fitted.temperature(k=1, num_tasks=10, num_samples=1)
    tasks = bm.tasks(fitted, k=1, num_tasks=10, num_query=15)
    report = fitted.evaluate(tasks, 1, temperature=t)
    assert t > 0 and report["temperature"] == t
    assert report["temperature_scaled"]["accuracy"] == pytest.approx(report["accuracy"])
    assert {"ece_se", "brier_se", "accuracy_se"} <= set(report)
    with pytest.raises(ValueError, match="temperature scaling is for classifiers"):
        bm.fit("sinusoid", "reference").temperature(k=1)
