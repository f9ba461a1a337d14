"""ABML, BMAML and PLATIPUS against NUTS on the same task, with a small MLP.

Each method is meta-trained briefly on the sinusoid; NUTS then samples the exact task posterior
p(φ | D_tr, θ) under ABML's learned θ (prior N(μ, σ²) and noise σ_y). The test prints the
query-set NLL of every method and its difference to NUTS's (run ``pytest -s`` to see the
report), and checks that NUTS mixed, that ABML — whose own prior NUTS uses — is within
0.5 nats of it, and that every NLL is finite. (BMAML and PLATIPUS learn their own priors, so
against NUTS under ABML's θ a small negative difference is possible.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.inference import abml, bmaml, nuts, platipus, train
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.tasks import Support, sample_batch, sinusoid


@pytest.mark.slow
def test_methods_against_nuts_on_one_task(key):
    model = HierarchicalModel(mlp((1, 12, 1), activation="tanh"), noise_init=0.5, prior_scale=0.3)
    fam = sinusoid()
    sampler = lambda k: sample_batch(fam, k, 8, (3, 8), 10)[0]  # noqa: E731
    methods = {
        "abml": abml(model, lr=3e-3, inner_samples=4, outer_samples=8),
        "bmaml": bmaml(model, lr=3e-3, num_particles=8, meta_sgd=True, inner_lr=0.1),
        "platipus": platipus(model, lr=3e-3),
    }
    states = {}
    for name, m in methods.items():
        res = train(m, m.init(key), sampler, jax.random.PRNGKey(1), 600, chunk_size=300,
                    progress=False)  # fmt: skip
        states[name] = res.state
    task = sample_batch(fam, jax.random.PRNGKey(7), 1, (5, 5), 50)[0]
    sup = Support(task.x_support, task.y_support, task.mask_support)
    ref = nuts(model, states["abml"].theta, num_warmup=200, num_chains=4)
    posts = {"nuts": ref.adapt(key, ref.init(key), sup, 1000)}
    for name, m in methods.items():
        posts[name] = m.adapt(key, states[name], sup, 1000)
    nll = {
        n: -float(jnp.mean(p.log_predictive(task.x_query, task.y_query))) for n, p in posts.items()
    }
    print("\nquery NLL on one task (5 support points, 50 query points):")
    for n, v in nll.items():
        print(f"  {n:9s} {v:8.4f}   difference to NUTS {v - nll['nuts']:+.4f}")
    diag = ref.extras["diagnostics"][0]
    assert diag["max_r_hat"] < 1.1, diag
    assert all(np.isfinite(v) for v in nll.values())
    assert abs(nll["abml"] - nll["nuts"]) < 0.5
