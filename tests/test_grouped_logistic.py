"""The grouped logistic example (models/grouped_logistic.py): VerbAgg's respondents as tasks,
a Bernoulli GLMM with a random intercept and two random slopes (docs/models.md)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import bayesmeta as bm
from bayesmeta.modelfiles import load_model_spec

MODEL_FILE = Path(__file__).resolve().parent.parent / "models" / "grouped_logistic.py"


@pytest.fixture(scope="module")
def spec():
    return load_model_spec(str(MODEL_FILE))


def test_data_are_respondents_with_binary_answers_in_their_own_units(spec):
    s = spec.splits
    sizes = [len(p.lengths) for p in (s.train, s.validation, s.test)]
    assert sum(sizes) == 316 and min(sizes) >= 40
    assert s.scaler.y_mean is None  # y is not standardised: a Bernoulli site reads 0/1
    tasks = spec.held_out("test", 5, 20, 10)
    assert tasks["x_support"].shape == (20, 5, 6) and tasks["x_query"].shape == (20, 10, 6)
    assert set(np.unique(tasks["y_support"])) <= {0.0, 1.0}
    assert set(np.unique(tasks["y_query"])) == {0.0, 1.0}


def test_sites_and_bernoulli_density_equal_a_hand_computation(spec):
    m = spec.model
    assert m.theta_keys == ("mu", "tau", "beta") and m.phi_sites == {"w": (1, 3)}
    assert m.num_params == 3 and m.likelihood == "generic"
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (7, 6))
    y = (jax.random.uniform(jax.random.fold_in(key, 1), (7, 1)) < 0.5).astype(jnp.float32)
    th = {
        "mu": jnp.array([0.2, -0.1, 0.3]),
        "tau": jnp.array([0.0, -0.5, 0.2]),  # unconstrained: log τ
        "beta": jnp.array([0.5, -0.4, 0.3, 0.1]),
    }
    phi = jnp.array([0.4, -0.7, 1.1])
    logits = phi[0] + x[:, :2] @ phi[1:] + x[:, 2:] @ th["beta"]
    want = jnp.sum(
        y[:, 0] * jax.nn.log_sigmoid(logits) + (1 - y[:, 0]) * jax.nn.log_sigmoid(-logits)
    )
    assert jnp.allclose(m.log_likelihood(th, phi, x, y), want, rtol=1e-5)
    prior = jnp.sum(norm.logpdf(phi, th["mu"], jnp.exp(th["tau"])))
    assert jnp.allclose(m.log_prior(th, phi), prior, rtol=1e-5)


@pytest.mark.slow  # two fits
@pytest.mark.parametrize("method", ["maml", "amortized"])
def test_a_short_fit_scores_held_out_respondents(spec, method):
    fitted = bm.fit(spec, method, steps=4, progress=False, validate=False)
    tasks = fitted.held_out(k=5, num_tasks=6, num_query=10)
    report = fitted.evaluate(tasks, num_samples=8)
    assert report["n_tasks"] == 6 and np.isfinite(report["nll"])
    assert 0.0 < report["nll"] < 5.0  # near log 2 per answer for a barely trained model
