import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.inference import neural_process, train
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.tasks import Support, sample_batch, sinusoid


@pytest.fixture
def model():
    return HierarchicalModel(mlp((1, 8, 1), activation="tanh"), noise_init=0.5)


ENCODERS = ["mlp", "conjugate", "mixture"]


def _np(model, encoder, **kw):
    """The method with ``encoder``; "mixture" is the conjugate encoder with two components."""
    if encoder == "mixture":
        return neural_process(model, encoder="conjugate", head_components=2, **kw)
    return neural_process(model, encoder=encoder, **kw)


def _support(key, t=3, k=5):
    b = sample_batch(sinusoid(), key, t, (1, k), 4)[0]
    return b, Support(b.x_support, b.y_support, b.mask_support)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True])
def test_samples_are_full_phi_with_the_shared_body(model, key, jit, encoder):
    method = _np(model, encoder, encoder_sizes=(16,))
    st = method.init(key)
    batch, sup = _support(key)
    adapt = jax.jit(method.adapt, static_argnums=3) if jit else method.adapt
    post = adapt(key, st, sup, 7)
    assert post.phi.shape == (3, 7, model.num_params) and post.method == "neural-process"
    body = st.theta["body"]
    np.testing.assert_array_equal(post.phi[..., : body.shape[0]], np.broadcast_to(body, (3, 7, 16)))
    # The last layer (9 weights) is drawn from q(w | D_tr), mean m and marginal sd s.
    m, s = method.extras["variational_params"](st, sup)
    w = np.asarray(post.phi[..., body.shape[0] :])
    assert w.shape == (3, 7, 9) and bool(jnp.all(s > 0))
    big = method.adapt(key, st, sup, 4000)
    np.testing.assert_allclose(
        np.asarray(big.phi[..., 16:]).mean(1), m, atol=5 * float(s.max()) / 60
    )
    np.testing.assert_allclose(np.asarray(big.phi[..., 16:]).std(1), s, rtol=0.1)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_encoder_is_permutation_invariant_and_ignores_padding(model, key, encoder):
    method = _np(model, encoder, encoder_sizes=(16,))
    st = method.init(key)
    _, sup = _support(key, t=1, k=5)
    x, y = sup.x[0], sup.y[0]
    mask = jnp.ones(5)
    perm = jnp.array([3, 0, 4, 1, 2])
    q = method.extras["variational_params"]
    a = q(st, Support(x[None], y[None], mask[None]))
    b = q(st, Support(x[perm][None], y[perm][None], mask[None]))
    # Padding: the same 3 points, padded to 5 with garbage that the mask removes.
    xp = x.at[3:].set(100.0)
    c = q(st, Support(xp[None], y[None], mask.at[3:].set(0.0)[None]))
    d = q(st, Support(x[:3][None], y[:3][None], jnp.ones((1, 3))))
    for u, v in ((a, b), (c, d)):
        np.testing.assert_allclose(u[0], v[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(u[1], v[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "outer, encoder",
    [
        pytest.param("predictive", "mlp", marks=pytest.mark.slow),
        ("elbo", "mlp"),
        pytest.param("predictive", "conjugate", marks=pytest.mark.slow),
        pytest.param("elbo", "mixture", marks=pytest.mark.slow),
    ],
)
def test_meta_training_improves_held_out_predictive(key, outer, encoder):
    model = HierarchicalModel(mlp((1, 32, 32, 1), activation="tanh"), noise_init=0.5)
    method = _np(model, encoder, encoder_sizes=(32, 32), lr=3e-3, outer=outer, train_samples=8)
    fam = sinusoid()
    sampler = lambda k: sample_batch(fam, k, 16, (1, 10), 10)[0]  # noqa: E731
    held = sample_batch(fam, jax.random.PRNGKey(99), 100, (5, 5), 20)[0]
    sup = Support(held.x_support, held.y_support, held.mask_support)

    def nll(st):
        post = method.adapt(key, st, sup, 32)
        return -float(jnp.mean(post.log_predictive(held.x_query, held.y_query)))

    state = method.init(key)
    before = nll(state)
    res = train(method, state, sampler, jax.random.PRNGKey(1), 1500, chunk_size=500,
                progress=False)  # fmt: skip
    assert math.isfinite(res.history["loss"][-1])
    assert nll(res.state) < before - 0.3


@pytest.mark.parametrize("encoder", ENCODERS)
def test_meta_step_traces_once(model, key, encoder):
    method = _np(model, encoder, encoder_sizes=(16,), outer="elbo")
    traces = []

    def counted(k, s, b):
        traces.append(1)
        return method.meta_step(k, s, b)

    step = jax.jit(counted)
    st = method.init(key)
    for i in range(3):
        st, info = step(key, st, _support(jax.random.PRNGKey(i))[0])
    assert len(traces) == 1 and np.isfinite(float(info.loss))


def test_bad_arguments_are_named(model):
    with pytest.raises(ValueError, match="outer"):
        neural_process(model, outer="moment")
    with pytest.raises(ValueError, match="train_samples"):
        neural_process(model, train_samples=0)
    with pytest.raises(ValueError, match="at least two layers"):
        neural_process(HierarchicalModel(mlp((1, 1))))
    with pytest.raises(ValueError, match="encoder"):
        neural_process(model, encoder="set-transformer")
    with pytest.raises(ValueError, match="encoder: 'conjugate' needs a Gaussian"):
        classifier = HierarchicalModel(mlp((2, 8, 3)), likelihood="categorical", num_classes=3)
        neural_process(classifier, encoder="conjugate")
    with pytest.raises(ValueError, match="init_prior_scale: expected > 0"):
        neural_process(model, init_prior_scale=0.0)
    with pytest.raises(ValueError, match="components"):
        neural_process(model, head_components=0)
    with pytest.raises(ValueError, match="components: a mixture prior needs"):
        neural_process(model, encoder="mlp", head_components=2)


def _blr_posterior(z, y, prior_mean, prior_cov, noise):
    """Bayesian linear regression by the textbook formulas, in float64 NumPy."""
    prec = np.linalg.inv(prior_cov) + z.T @ z / noise**2
    cov = np.linalg.inv(prec)
    mean = cov @ (np.linalg.solve(prior_cov, prior_mean) + z.T @ y / noise**2)
    return mean, cov


def _conjugate_setup(key, components=1, **kw):
    model = HierarchicalModel(mlp((1, 8, 1), activation="tanh"), noise_init=0.4)
    method = neural_process(model, encoder="conjugate", head_components=components, **kw)
    st = method.init(key)
    # A full (non-diagonal) prior factor and a non-zero prior mean exercise every term.
    theta = dict(st.theta)
    noise = jax.random.normal(jax.random.PRNGKey(5), theta["prior_chol"].shape)
    theta["prior_chol"] = theta["prior_chol"] + 0.2 * noise
    theta["prior_mean"] = theta["prior_mean"] + 0.3
    theta["prior_logits"] = jnp.linspace(0.0, 0.7, components)
    return model, method, st._replace(theta=theta)


def _prior_factors(th):
    raw = np.tril(th["prior_chol"])
    eye = np.eye(raw.shape[-1])
    return raw * (1 - eye) + np.exp(raw * eye) * eye  # the exp diagonal of L₀, per component


def _log_evidence(model, th, x, y, c):
    """log N(y; Z M₀_c, Z S₀_c Zᵀ + σ² I) of component c, float64."""
    l0 = _prior_factors(th)[c]
    z = _features(model, th, np.asarray(x, np.float64))
    cov = z @ l0 @ l0.T @ z.T + 0.4**2 * np.eye(len(z))
    r = np.asarray(y, np.float64)[:, 0] - z @ th["prior_mean"][c][:, 0]
    _, logdet = np.linalg.slogdet(2 * np.pi * cov)
    return -0.5 * (logdet + r @ np.linalg.solve(cov, r))


def _features(model, theta, x):
    # z(x) = [h(x), 1] computed from the flat body by hand: layer 1 of the 1-8-1 network.
    w1, b1 = theta["body"][8:16].reshape(1, 8), theta["body"][:8]  # ravel order: b then w
    return np.concatenate([np.tanh(x @ w1 + b1), np.ones((x.shape[0], 1))], 1)


@pytest.mark.parametrize("components", [1, 2])
def test_conjugate_posterior_is_the_exact_last_layer_posterior(key, components):
    model, method, st = _conjugate_setup(key, components)
    th = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), st.theta)
    x = np.linspace(-4, 4, 6)[:, None]
    y = np.sin(x) * 2.0
    mask = np.array([1, 1, 0, 1, 1, 0], np.float32)
    post = method.extras["conjugate_posterior"](st, x, y, mask)
    keep = mask > 0
    z = _features(model, th, x[keep])
    l0 = _prior_factors(th)
    log_prior = th["prior_logits"] - np.logaddexp.reduce(th["prior_logits"])
    log_w = log_prior + [_log_evidence(model, th, x[keep], y[keep], c) for c in range(components)]
    np.testing.assert_allclose(post.log_weights, log_w - np.logaddexp.reduce(log_w), atol=1e-4)
    for c in range(components):
        m_ref, c_ref = _blr_posterior(z, y[keep], th["prior_mean"][c], l0[c] @ l0[c].T, 0.4)
        np.testing.assert_allclose(post.mean[c], m_ref, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(post.cov[c], c_ref, rtol=1e-3, atol=1e-5)
    # The closed-form predictive equals the model's own likelihood averaged over q's samples.
    xq = np.linspace(-5, 5, 7)[:, None]
    yq = np.cos(xq)
    lw, mu, var = method.extras["conjugate_predictive"](st, post, xq)
    per_comp = -0.5 * ((yq - mu) ** 2 / var + np.log(2 * np.pi * var))[..., 0]
    exact = np.logaddexp.reduce(np.asarray(lw)[:, None] + per_comp, axis=0)
    samples = method.adapt(key, st, Support(x[None], y[None], mask[None]), 20_000)
    mc = samples.log_predictive(xq[None], yq[None])[0]
    np.testing.assert_allclose(mc, exact, rtol=0.01, atol=0.02)


@pytest.mark.parametrize("components", [1, 2])
def test_conjugate_elbo_is_the_query_sets_joint_predictive(key, components):
    """With q exact, the conditional ELBO equals log p(D_ts | D_tr) = log p(D) − log p(D_tr),
    each evidence a mixture over the prior's components."""
    model, method, st = _conjugate_setup(key, components, outer="elbo")
    th = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), st.theta)
    batch = sample_batch(sinusoid(), key, 1, (4, 4), 5)[0]
    log_prior = th["prior_logits"] - np.logaddexp.reduce(th["prior_logits"])

    def log_evidence(x, y):
        ev = [_log_evidence(model, th, x, y, c) for c in range(components)]
        return np.logaddexp.reduce(log_prior + ev)

    xs, ys = batch.x_support[0], batch.y_support[0]
    xq, yq = batch.x_query[0], batch.y_query[0]
    want = log_evidence(np.concatenate([xs, xq]), np.concatenate([ys, yq])) - log_evidence(xs, ys)
    got = -5 * float(method.extras["query_loss"](st, batch))
    np.testing.assert_allclose(got, want, rtol=1e-4)


# -- VERSA's per-class encoder for classifiers ----------------------------------------------------
def _classifier(ways=3, dx=4):
    return HierarchicalModel(mlp((dx, 16, 8, ways), activation="tanh"), likelihood="categorical",
                             dx=dx, num_classes=ways, prior_scale=0.1)  # fmt: skip


def test_per_class_encoder_is_the_classifier_default_and_equivariant_across_classes(key):
    from bayesmeta.tasks import blobs

    method = neural_process(_classifier(), encoder_sizes=(16,))
    assert method.config.classifier_encoder == "per-class"
    st = method.init(key)
    b = sample_batch(blobs(3, 4), key, 2, (2, 2), 6)[0]
    vp = method.extras["variational_params"]
    m, s = vp(st, Support(b.x_support, b.y_support, b.mask_support))
    # relabelling the classes (0 -> 1 -> 2 -> 0) permutes the last layer's columns the same way
    relabel = (b.y_support + 1) % 3
    m2, s2 = vp(st, Support(b.x_support, relabel, b.mask_support))
    num_feat = 8  # the flat last layer is [b (C), w (F, C) row-major]
    cols = lambda f: jnp.concatenate([f[:, :3][:, None], f[:, 3:].reshape(-1, num_feat, 3)], 1)  # noqa: E731
    np.testing.assert_allclose(cols(m2), jnp.roll(cols(m), 1, axis=-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cols(s2), jnp.roll(cols(s), 1, axis=-1), rtol=1e-5, atol=1e-6)
    # a class's shots in any order, and masked extra shots, change nothing
    perm = np.array([3, 4, 5, 0, 1, 2])
    m3, _ = vp(st, Support(b.x_support[:, perm], b.y_support[:, perm], b.mask_support))
    np.testing.assert_allclose(m3, m, rtol=1e-5, atol=1e-6)


def test_per_class_encoder_learns_blobs_far_above_chance(key):
    from bayesmeta.evaluate import evaluate
    from bayesmeta.tasks import blobs

    fam = blobs(3, 4)
    method = neural_process(_classifier(), encoder_sizes=(32,), train_samples=4, lr=3e-3)
    res = train(method, method.init(key), lambda k: sample_batch(fam, k, 8, (1, 3), 12)[0],
                jax.random.PRNGKey(1), 400, chunk_size=200, progress=False)  # fmt: skip
    test = sample_batch(fam, jax.random.PRNGKey(7), 60, (1, 1), 12)[0]
    post = method.adapt(key, res.state, Support(test.x_support, test.y_support,
                                                test.mask_support), 16)  # fmt: skip
    report = evaluate(post, test.x_query, test.y_query)
    assert report["accuracy"] > 0.7, report["accuracy"]  # chance is 1/3


def test_version_2_classifier_configs_keep_the_raw_input_encoder():
    from bayesmeta.inference import NeuralProcessConfig

    old = NeuralProcessConfig.from_dict({"version": 2, "encoder": "auto"})
    assert (
        old.classifier_encoder == "mlp" and NeuralProcessConfig().classifier_encoder == "per-class"
    )
