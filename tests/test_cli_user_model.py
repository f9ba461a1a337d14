"""The bar of "your model": a model file written from docs/models.md alone fits and evaluates
through the CLI, scored under its own (heteroscedastic Student-t) likelihood."""

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bayesmeta.cli import main

USER_MODEL = textwrap.dedent(
    '''
    """A user's model: the sinusoid with a heteroscedastic Student-t likelihood."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    from bayesmeta.model import NumPyroModel
    from bayesmeta.nn import mlp
    from bayesmeta.tasks import sinusoid
    from bayesmeta.zoo import ModelSpec

    NET = mlp((1, 16, 1), activation="tanh")
    MU0, UNRAVEL = NET.flat(jax.random.PRNGKey(0))


    def forward(phi, x):
        return jax.vmap(lambda p, xt: NET.apply(UNRAVEL(p), xt)[:, 0])(phi, x)


    def scale(a, b, x):
        return jnp.exp(a + b * jnp.abs(x[..., 0]) / 5.0)


    def model(x, y=None, mask=None):
        t, n, _ = x.shape
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0).expand([MU0.size]).to_event(1))
        log_sigma = numpyro.sample(
            "log_sigma", dist.Normal(-2.0, 1.0).expand([MU0.size]).to_event(1)
        )
        df = numpyro.sample("df", dist.Gamma(2.0, 0.1))
        a = numpyro.sample("a", dist.Normal(-1.0, 1.0))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with numpyro.plate("tasks", t, dim=-2):
            phi = numpyro.sample("phi", dist.Normal(mu, jnp.exp(log_sigma)).to_event(1))
        f = forward(phi[:, 0], x)
        with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
            numpyro.sample("y", dist.StudentT(df, f, scale(a, b, x)), obs=y)


    SPEC = ModelSpec(
        name="user_t",
        family=sinusoid(noise=0.3),
        model=NumPyroModel(model, dx=1, init={"mu": MU0}),
        recipes={"*": {"meta_batch": 4, "num_query": 5, "chunk_size": 5}},
    )
    '''
)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    model_file = root / "user_t.py"
    model_file.write_text(USER_MODEL)
    tasks = root / "tasks.npz"
    args = ["tasks", str(model_file), "--k", "4", "--num-tasks", "5", "--queries", "6"]
    assert main([*args, "--out", str(tasks)]) == 0
    return model_file, tasks


def _fit_evaluate(method, model_file, tasks, tmp_path):
    run = tmp_path / method
    args = ["fit", str(model_file), "--method", method, "--steps", "10", "--quiet"]
    assert main([*args, "--out", str(run)]) == 0
    report, pred = tmp_path / f"{method}.json", tmp_path / f"{method}.npz"
    args = ["evaluate", str(run), "--model", str(model_file), "--tasks", str(tasks)]
    assert main([*args, "--out", str(report), "--predictive", str(pred), "--samples", "5"]) == 0
    rep = json.loads(report.read_text())
    arrays = np.load(pred)
    assert np.isfinite(rep["nll"]) and set(rep["coverage"]) == {"0.5", "0.8", "0.9", "0.95"}
    np.testing.assert_allclose(-arrays["log_predictive"].mean(), rep["nll"], rtol=1e-5)
    assert arrays["samples"].shape == (5, 5, 6, 1)
    return run, rep, arrays


def test_user_model_file_fits_with_maml_and_is_scored_under_its_own_likelihood(
    user_files, tmp_path
):
    from bayesmeta.runs import load_run
    from bayesmeta.tasks.io import load_tasks

    model_file, tasks = user_files
    run, rep, arrays = _fit_evaluate("maml", model_file, tasks, tmp_path)
    # MAML's posterior is a point mass: its log predictive is the Student-t log density at
    # the adapted weights, computed here by hand from the file's own functions
    spec, method, state, _ = load_run(run, model=str(model_file))[:4]
    data = load_tasks(tasks)
    from bayesmeta.tasks.base import padded_support

    post = method.adapt(jax.random.PRNGKey(0), state, padded_support(data, 4), 1)
    module = __import__("sys").modules[spec.model.fn.__module__]
    th = state.theta
    x = jnp.asarray(data["x_query"])
    f = module.forward(post.phi[:, 0], x)
    s = module.scale(th["a"], th["b"], x)
    want = scipy.stats.t.logpdf(
        np.asarray(data["y_query"][..., 0]), float(jnp.exp(th["df"])), np.asarray(f), np.asarray(s)
    )
    np.testing.assert_allclose(arrays["log_predictive"], want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["abml", "bmaml", "platipus"])
def test_user_model_file_fits_with_every_posterior_method(method, user_files, tmp_path):
    model_file, tasks = user_files
    _fit_evaluate(method, model_file, tasks, tmp_path)


def test_a_model_file_breaking_the_contract_exits_2_naming_the_site(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text(
        USER_MODEL.replace(
            'numpyro.sample("y", dist.StudentT', 'numpyro.sample("obs", dist.StudentT'
        )
    )
    code = main(["fit", str(bad), "--method", "maml", "--steps", "2", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "observed site to be named 'y'" in err and "Traceback" not in err
