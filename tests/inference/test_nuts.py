import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.inference import linear_gaussian_posterior, nuts, nuts_task_samples
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import linear
from bayesmeta.tasks import Support

NOISE = 0.5


def _task(key, k=6):
    kx, ke = jax.random.split(key)
    x = jax.random.uniform(kx, (k, 1), minval=-2, maxval=2)
    y = 1.2 * x - 0.4 + NOISE * jax.random.normal(ke, x.shape)
    return x, y, jnp.ones(k)


@pytest.fixture
def lin():
    model = HierarchicalModel(linear(), noise_init=NOISE)
    theta = {
        "mu": jnp.array([0.3, -0.2]),  # (b, w)
        "log_sigma": jnp.log(jnp.array([0.8, 1.5])),
        "log_noise": jnp.log(jnp.asarray(NOISE)),
    }
    return model, theta


def test_nuts_recovers_the_closed_form_posterior(lin, key):
    # 4 chains x 500 draws: Monte Carlo error of the mean is ~0.01 posterior sd per
    # coordinate (ESS ~ 2000), so a tolerance of 0.1 sd fails with probability < 1e-6.
    model, theta = lin
    x, y, mask = _task(key)
    phi, diag = nuts_task_samples(key, model, theta, x, y, mask, num_warmup=300, num_samples=500)
    mean, cov = linear_gaussian_posterior(
        x, y, mask, theta["mu"][::-1], jnp.exp(theta["log_sigma"])[::-1], NOISE
    )
    sd = np.sqrt(np.diag(cov))
    draws = np.asarray(phi)[:, ::-1]  # (b, w) -> (w, c)
    assert draws.shape == (2000, 2)
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.1 * sd.min())
    np.testing.assert_allclose(draws.std(0), sd, rtol=0.08)
    np.testing.assert_allclose(np.corrcoef(draws.T)[0, 1], cov[0, 1] / sd.prod(), atol=0.05)
    assert diag["max_r_hat"] < 1.05 and diag["divergences"] == 0


def test_nuts_method_gives_a_task_posterior(lin, key):
    model, theta = lin
    method = nuts(model, theta, num_warmup=200, num_chains=2)
    x, y, mask = _task(key)
    sup = Support(jnp.stack([x, x]), jnp.stack([y, -y]), jnp.stack([mask, mask]))
    post = method.adapt(key, method.init(key), sup, 301)
    assert post.phi.shape == (2, 301, 2) and post.method == "nuts"
    assert len(method.extras["diagnostics"]) == 2
    # y -> -y flips the slope's posterior mean.
    assert float(post.phi[0, :, 1].mean()) > 0.5 > -0.5 > float(post.phi[1, :, 1].mean())
    with pytest.raises(ValueError, match="nothing to train"):
        method.meta_step(key, method.init(key), None)
    # the chains are kept: az.summary gives split R-hat and ESS per task and coordinate
    az = pytest.importorskip("arviz")
    idata = method.extras["inference_data"]()
    assert idata.posterior["phi"].dims == ("chain", "draw", "task", "param")
    assert idata.posterior["phi"].shape == (2, 151, 2, 2)  # ceil(301 / 2) draws per chain
    summary = az.summary(idata)
    assert len(summary) == 4 and {"r_hat", "ess_bulk", "ess_tail"} <= set(summary.columns)
    assert (summary["r_hat"] < 1.1).all() and (summary["ess_bulk"] > 50).all()


def test_nuts_needs_a_prior_scale(key):
    model = HierarchicalModel(linear())
    with pytest.raises(ValueError, match="log_sigma"):
        nuts(model, {"mu": jnp.zeros(2), "log_noise": jnp.zeros(())})
