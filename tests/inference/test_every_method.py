"""Every registered method, jitted and not: one test over the registry, so that a method
added to :data:`bayesmeta.inference.registry.METHODS` is checked without a line here.

For each method on a small built-in model and a small NumPyro model (where it serves one):
a meta-step under ``jit`` equals the eager one (θ to float32 round-off), two jitted steps with
other keys and batches trace once, and ``adapt`` under ``jit`` equals eager ``adapt``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from bayesmeta.inference.registry import METHODS
from bayesmeta.model import HierarchicalModel, NumPyroModel
from bayesmeta.nn import mlp
from bayesmeta.tasks import Support, blobs, sample_batch, sinusoid

pytestmark = pytest.mark.slow

#: the smallest settings each method accepts, so that its eager step takes seconds
SMALL = {
    "maml": {"inner_steps": 1},
    "meta-sgd": {"inner_steps": 1},
    "abml": {"inner_steps": 1, "outer_samples": 2},
    "amortized": {"encoder_sizes": (8,), "decoder_sizes": (), "rank": 2, "train_samples": 2},
    "emaml": {"inner_steps": 1, "num_particles": 2},
    "bmaml": {"inner_steps": 1, "num_particles": 2},
    "platipus": {"inner_steps": 1, "train_samples": 2},
    "neural-process": {"encoder_sizes": (8,), "train_samples": 2},
    "protonet": {},
    "bayesian-protonet": {"predictive": "sampled", "train_samples": 2},
}


def _line(x, y=None, mask=None):
    t, n, _ = x.shape
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with numpyro.plate("tasks", t, dim=-2):
        w = numpyro.sample("w", dist.Normal(mu, 1.0).to_event(1))
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Normal(w[..., 0] * x[..., 0] + w[..., 1], 0.3), obs=y)


MODELS = {
    "builtin": lambda: HierarchicalModel(mlp((1, 8, 1)), noise_init=0.5),
    "numpyro": lambda: NumPyroModel(_line, dx=1),
    "classifier": lambda: HierarchicalModel(
        mlp((2, 8, 3)), likelihood="categorical", dx=2, num_classes=3
    ),  # fmt: skip
}
FAMILIES = {"builtin": sinusoid, "numpyro": sinusoid, "classifier": lambda: blobs(3, 2)}
CASES = [
    (name, kind)
    for name, info in METHODS.items()
    for kind in MODELS
    if (kind == "classifier") == (info.likelihoods == ("categorical",))
    and (kind != "numpyro" or info.any_model)
]


def _close(a, b, tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_method_jitted_equals_eager_and_traces_once(name, kind):
    assert set(SMALL) == set(METHODS), "give a new method its small settings here"
    method = METHODS[name].factory(MODELS[kind](), **SMALL[name])
    fam = FAMILIES[kind]()
    key = jax.random.PRNGKey(0)
    state = method.init(key)
    batches = [sample_batch(fam, jax.random.PRNGKey(i), 2, (1, 3), 3)[0] for i in (1, 2)]
    traces = []

    def step(k, s, b):
        traces.append(1)
        return method.meta_step(k, s, b)

    jitted = jax.jit(step)
    new_jit, info_jit = jitted(key, state, batches[0])
    with jax.disable_jit():
        new_eager, info_eager = method.meta_step(key, state, batches[0])
    _close(new_jit.theta, new_eager.theta, 2e-4)
    np.testing.assert_allclose(float(info_jit.loss), float(info_eager.loss), rtol=1e-3)
    jitted(jax.random.PRNGKey(5), new_jit, batches[1])
    assert len(traces) == 1  # another key, state and batch: no new trace
    assert np.all(np.isfinite(np.asarray(info_jit.loss)))

    b = batches[1]
    support = Support(b.x_support, b.y_support, b.mask_support)
    adapt_jit = jax.jit(method.adapt, static_argnums=3)(key, new_jit, support, 4)
    with jax.disable_jit():
        adapt_eager = method.adapt(key, new_jit, support, 4)
    np.testing.assert_allclose(
        np.asarray(adapt_jit.log_predictive(b.x_query, b.y_query)),
        np.asarray(adapt_eager.log_predictive(b.x_query, b.y_query)),
        rtol=1e-3,
        atol=1e-3,
    )
    assert jnp.all(jnp.isfinite(adapt_jit.log_predictive(b.x_query, b.y_query)))
