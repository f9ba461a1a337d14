"""Prototypical networks, plain and Bayesian: the conjugate class posterior, the limits, the
invariances, and meta-training on Gaussian-blob tasks (whose Bayes-optimal classifier is a
Bayesian ProtoNet with the identity embedding)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.evaluate import evaluate
from bayesmeta.inference import protonet, train
from bayesmeta.inference.config import ConfigError
from bayesmeta.inference.protonet import class_posterior, prototype_logits
from bayesmeta.inference.registry import METHODS
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.tasks import Support, TaskBatch, sample_batch
from bayesmeta.tasks import blobs as blob_family

WAYS, DX = 3, 4


def _model(classes: int = WAYS) -> HierarchicalModel:
    return HierarchicalModel(
        mlp((DX, 16, 8, classes), activation="tanh"),
        likelihood="categorical",
        dx=DX,
        num_classes=classes,
        prior_scale=0.1,
    )


def blobs(key, num_tasks: int, shots: int, num_query: int) -> TaskBatch:
    """Gaussian-blob tasks (:func:`bayesmeta.tasks.blobs`): ``shots`` per class, all real."""
    return sample_batch(blob_family(WAYS, DX), key, num_tasks, (shots, shots), num_query)[0]


@pytest.fixture(scope="module")
def batch():
    return blobs(jax.random.PRNGKey(0), 4, 2, 12)


def _support(b: TaskBatch) -> Support:
    return Support(b.x_support, b.y_support, b.mask_support)


def test_class_posterior_matches_a_float64_computation():
    rng = np.random.default_rng(0)
    k, d, c = 9, 5, 3
    h = rng.normal(size=(k, d))
    labels = rng.integers(0, c, size=k)
    labels[:3] = [0, 1, 2]
    mask = np.ones(k)
    mask[[4, 7]] = 0.0
    m0, tau2, sigma2 = rng.normal(size=d), rng.uniform(0.5, 2, d), rng.uniform(0.2, 1, d)
    post = class_posterior(jnp.asarray(h, jnp.float32), jnp.asarray(labels), jnp.asarray(mask),
                           c, jnp.asarray(m0, jnp.float32), jnp.asarray(tau2, jnp.float32),
                           jnp.asarray(sigma2, jnp.float32))  # fmt: skip
    for cls in range(c):
        keep = (labels == cls) & (mask > 0)
        n = keep.sum()
        var = 1.0 / (1.0 / tau2 + n / sigma2)
        mean = var * (m0 / tau2 + h[keep].sum(0) / sigma2)
        np.testing.assert_allclose(post.var[cls], var, rtol=1e-5)
        np.testing.assert_allclose(post.mean[cls], mean, rtol=1e-4, atol=1e-5)
        assert int(post.count[cls]) == n
    # the exact predictive's log density per class, against scipy-free float64
    x = rng.normal(size=(6, d))
    s2 = sigma2 + np.asarray(post.var, np.float64)
    ref = np.stack([-0.5 * (((x - np.asarray(post.mean[i], np.float64)) ** 2 / s2[i]).sum(-1)
                            + np.log(s2[i]).sum()) for i in range(c)], -1)  # fmt: skip
    got = prototype_logits(jnp.asarray(x, jnp.float32), post.mean, jnp.log(jnp.asarray(s2)))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_plain_protonet_is_the_squared_distance_classifier(batch):
    method = protonet(_model())
    state = method.init(jax.random.PRNGKey(1))
    post = method.adapt(jax.random.PRNGKey(2), state, _support(batch), 5)
    assert post.num_samples == 1 and post.method == "protonet"
    h_s = method.extras["embed"](state, batch.x_support.reshape(-1, DX)).reshape(4, -1, 8)
    h_q = method.extras["embed"](state, batch.x_query.reshape(-1, DX)).reshape(4, -1, 8)
    onehot = jax.nn.one_hot(batch.y_support, WAYS)
    protos = jnp.einsum("tkc,tkd->tcd", onehot, h_s) / onehot.sum(1)[..., None]
    logits = -jnp.sum((h_q[:, :, None] - protos[:, None]) ** 2, -1)  # Snell et al. 2017
    np.testing.assert_allclose(post.probs(batch.x_query), jax.nn.softmax(logits, -1),
                               rtol=1e-4, atol=1e-6)  # fmt: skip


def test_zero_variance_flat_prior_limit_of_the_bayesian_posterior_is_the_class_mean():
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    labels, mask = jnp.array([0, 0, 1, 1, 1, 0]), jnp.ones(6)
    flat = class_posterior(h, labels, mask, 2, jnp.zeros(3), jnp.full(3, 1e8), jnp.full(3, 0.5))
    plain = class_posterior(h, labels, mask, 2, jnp.zeros(3), None, jnp.full(3, 0.5))
    np.testing.assert_allclose(flat.mean, plain.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat.var, plain.var, rtol=1e-5)  # σ²/n_c
    np.testing.assert_allclose(plain.mean[0], h[np.array([0, 1, 5])].mean(0), rtol=1e-6)


@pytest.mark.parametrize("bayesian", [False, True])
def test_support_order_changes_nothing_and_masked_points_count_for_nothing(batch, bayesian):
    method = protonet(_model(), bayesian=bayesian)
    state = method.init(jax.random.PRNGKey(1))
    adapt = jax.jit(method.adapt, static_argnums=3)
    sup = _support(batch)
    base = adapt(jax.random.PRNGKey(0), state, sup, 1)
    perm = np.random.default_rng(0).permutation(sup.x.shape[1])
    shuffled = adapt(jax.random.PRNGKey(0), state, Support(sup.x[:, perm], sup.y[:, perm],
                                                            sup.mask[:, perm]), 1)  # fmt: skip
    np.testing.assert_allclose(shuffled.phi, base.phi, rtol=1e-5, atol=1e-6)
    # unequal shots: padding rows with a zero mask equal dropping them
    drop = np.array([0, 1, 2, 3])  # classes 0, 1, 2 once, class 0 twice
    short = Support(sup.x[:, drop], sup.y[:, drop], sup.mask[:, drop])
    junk = Support(sup.x.at[:, 4:].set(50.0), sup.y, sup.mask.at[:, 4:].set(0.0))
    a = method.adapt(jax.random.PRNGKey(0), state, short, 1)
    b = method.adapt(jax.random.PRNGKey(0), state, junk, 1)
    np.testing.assert_allclose(a.probs(batch.x_query), b.probs(batch.x_query), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


def test_sampled_prototypes_have_the_class_posteriors_moments(batch):
    method = protonet(_model(), bayesian=True, predictive="sampled", init_prior_scale=0.7)
    state = method.init(jax.random.PRNGKey(1))
    post = method.adapt(jax.random.PRNGKey(3), state, _support(batch), 4000)
    cp = method.extras["class_posterior"](state, _support(batch))
    mu = post.phi[0, :, : WAYS * 8].reshape(4000, WAYS, 8)
    np.testing.assert_allclose(
        mu.mean(0), cp.mean[0], atol=4 * float(jnp.sqrt(cp.var.max() / 4000))
    )
    np.testing.assert_allclose(mu.var(0), cp.var[0], rtol=0.15)


def test_meta_step_jitted_equals_eager_and_traces_once(batch):
    method = protonet(_model(), bayesian=True)
    state = method.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(5)
    s_eager, i_eager = method.meta_step(key, state, batch)
    traces = []

    def counted(k, s, b):
        traces.append(1)
        return method.meta_step(k, s, b)

    step = jax.jit(counted)
    s_jit, i_jit = step(key, state, batch)
    np.testing.assert_allclose(i_eager.loss, i_jit.loss, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(s_eager.theta),
                    jax.tree_util.tree_leaves(s_jit.theta), strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for i in range(3):
        s_jit, _ = step(key, s_jit, blobs(jax.random.PRNGKey(10 + i), 4, 2, 12))
    assert len(traces) == 1


@pytest.mark.parametrize("name", ["protonet", "bayesian-protonet"])
def test_meta_training_beats_the_initial_embedding_on_held_out_tasks(name):
    method = METHODS[name].factory(_model(), lr=3e-3)
    state = method.init(jax.random.PRNGKey(0))
    test = blobs(jax.random.PRNGKey(99), 60, 1, 12)

    def score(st):
        post = jax.jit(method.adapt, static_argnums=3)(jax.random.PRNGKey(0), st, _support(test), 8)
        return evaluate(post, test.x_query, test.y_query)

    before = score(state)
    sampler = lambda k: blobs(k, 8, 1, 12)  # noqa: E731
    res = train(method, state, sampler, jax.random.PRNGKey(1), 300, chunk_size=150,
                progress=False)  # fmt: skip
    after = score(res.state)
    assert after["nll"] < before["nll"] - 0.1 and after["accuracy"] > 0.8
    assert np.isfinite(after["ece"]) and 0 <= after["ece"] < 0.1


def test_bad_models_and_options_are_refused():
    from bayesmeta.inference.registry import check_serves

    with pytest.raises(ValueError, match="categorical likelihood"):
        protonet(HierarchicalModel(mlp((1, 8, 1))))
    with pytest.raises(ValueError, match=r"'bayesian-protonet' serves \['categorical'\]"):
        check_serves("bayesian-protonet", HierarchicalModel(mlp((1, 8, 1))))
    check_serves("protonet", _model())
    with pytest.raises(ConfigError, match="protonet: predictive: 'sampled'"):
        protonet(_model(), predictive="sampled")
    with pytest.raises(ConfigError, match="bayesian-protonet: unknown option"):
        METHODS["bayesian-protonet"].factory(_model(), inner_steps=2)
