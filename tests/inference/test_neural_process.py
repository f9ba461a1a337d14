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


def _support(key, t=3, k=5):
    b = sample_batch(sinusoid(), key, t, (1, k), 4)[0]
    return b, Support(b.x_support, b.y_support, b.mask_support)


@pytest.mark.parametrize("jit", [False, True])
def test_samples_are_full_phi_with_the_shared_body(model, key, jit):
    method = neural_process(model, encoder_sizes=(16,))
    st = method.init(key)
    batch, sup = _support(key)
    adapt = jax.jit(method.adapt, static_argnums=3) if jit else method.adapt
    post = adapt(key, st, sup, 7)
    assert post.phi.shape == (3, 7, model.num_params) and post.method == "neural-process"
    body = st.theta["body"]
    np.testing.assert_array_equal(post.phi[..., : body.shape[0]], np.broadcast_to(body, (3, 7, 16)))
    # The last layer (9 weights) is drawn from q(w | D_tr) = N(m, s²).
    m, s = method.extras["variational_params"](st, sup)
    w = np.asarray(post.phi[..., body.shape[0] :])
    assert w.shape == (3, 7, 9) and bool(jnp.all(s > 0))
    big = method.adapt(key, st, sup, 4000)
    np.testing.assert_allclose(
        np.asarray(big.phi[..., 16:]).mean(1), m, atol=5 * float(s.max()) / 60
    )


def test_encoder_is_permutation_invariant_and_ignores_padding(model, key):
    method = neural_process(model, encoder_sizes=(16,))
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


@pytest.mark.parametrize("outer", ["predictive", "elbo"])
def test_meta_training_improves_held_out_predictive(key, outer):
    model = HierarchicalModel(mlp((1, 32, 32, 1), activation="tanh"), noise_init=0.5)
    method = neural_process(model, encoder_sizes=(32, 32), lr=3e-3, outer=outer, train_samples=8)
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


def test_meta_step_traces_once(model, key):
    method = neural_process(model, encoder_sizes=(16,), outer="elbo")
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
