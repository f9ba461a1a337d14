"""A fitted run exported as a NumPyro user expects (issue 43, item 7): ArviZ data naming the
model's own sites with θ, a float64 log-likelihood that ``az.loo`` reads, clear messages for
one-draw and particle posteriors, and NUTS reachable from a fit."""

from __future__ import annotations

import warnings

import arviz as az
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesmeta as bm
from bayesmeta.tasks.data import from_groups


def _poisson(x, y=None, mask=None):
    t, n, _ = x.shape
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    with numpyro.plate("tasks", t, dim=-2):
        a = numpyro.sample("a", dist.Normal(mu, tau))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Poisson(jnp.exp(a + b[..., 0] * x[..., 0])), obs=y)


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(40), 8)
    x = rng.normal(size=(g.size, 1))
    y = rng.poisson(np.exp(rng.normal(1.0, 0.5, 40)[g] + 0.3 * x[:, 0]))
    return from_groups(x, y, g)


@pytest.fixture(scope="module")
def fitted(rows):
    return bm.fit(_poisson, "abml", data=rows, steps=3)


def test_inference_data_names_the_models_sites_and_theta(fitted):
    t = fitted.held_out(k=3)
    sl = slice(0, 3)
    idata = fitted.inference_data(t["x_support"][sl], t["y_support"][sl], 40,
                                  x=t["x_query"][sl], y=t["y_query"][sl])  # fmt: skip
    post = idata.posterior
    assert {"a", "b", "mu", "tau"} <= set(post.data_vars)
    assert "phi" not in post and "noise_std" not in post  # a Poisson has no noise scale
    assert post["b"].dims[:3] == ("chain", "draw", "task") and post["b"].shape[-1] == 2
    assert float(post["tau"].min()) > 0  # constrained, as NumPyro reports it
    assert np.ptp(post["mu"].values) == 0  # θ: the fitted point estimate in every draw
    assert idata.log_likelihood["y"].dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto-k warnings on a 3-step fit
        assert np.isfinite(az.loo(idata).elpd_loo)


@pytest.mark.slow  # two more fits (compiles) for two warnings
def test_one_draw_and_particles_say_so(rows, fitted):
    t = fitted.held_out(k=3)
    maml = bm.fit(_poisson, "maml", data=rows, steps=2)
    with pytest.warns(UserWarning, match="one draw .* need several draws"):
        maml.inference_data(t["x_support"][:2], t["y_support"][:2], 10)
    bmaml = bm.fit(_poisson, "bmaml", data=rows, steps=2, num_particles=4)
    with pytest.warns(UserWarning, match="is its 4 particles, not the 50 draws"):
        bmaml.adapt(t["x_support"][:2], t["y_support"][:2], 50)


def test_nuts_is_reachable_from_a_fit_and_from_bm_fit(rows, fitted):
    t = fitted.held_out(k=3)
    two = {k: v[:2] for k, v in t.items()}
    at_fit = fitted.nuts(num_warmup=50, num_chains=2)
    assert at_fit.method.name == "nuts" and at_fit.info["theta_from"] == "abml"
    report = at_fit.evaluate(two, 40, units="fitted")  # a plain dict says no units
    assert report["method"] == "nuts" and np.isfinite(report["nll"])
    at_init = bm.fit(_poisson, "nuts", data=rows, num_warmup=50, num_chains=2)
    post = at_init.adapt(two["x_support"], two["y_support"], 40)
    assert post.num_samples == 40
    with pytest.raises(ValueError, match="num_steps: not an option of 'nuts'"):
        bm.fit(_poisson, "nuts", data=rows, num_steps=3)
