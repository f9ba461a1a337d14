import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.inference import emaml, maml
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.tasks import Support, sample_batch, sinusoid


@pytest.fixture
def setup(key):
    model = HierarchicalModel(mlp((1, 8, 1)), noise_init=0.5)
    batch, _ = sample_batch(sinusoid(), key, 4, (1, 5), 6)
    return model, batch


@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True])
def test_particles_train_exactly_like_independent_maml_runs(setup, key, jit):
    # Particle m of EMAML is MAML started from split(key, M)[m] and stepped with
    # split(step_key, M)[m] on the same batches: nothing couples the particles.
    model, batch = setup
    ens = emaml(model, num_particles=3, inner_steps=2, lr=1e-2)
    single = maml(model, inner_steps=2, lr=1e-2)
    step = jax.jit(ens.meta_step) if jit else ens.meta_step
    state = ens.init(key)
    k_step = jax.random.PRNGKey(7)
    for _ in range(2):
        state, info = step(k_step, state, batch)
    assert int(state.step) == 2 and info.loss.shape == ()
    for i, k in enumerate(jax.random.split(key, 3)):
        s = single.init(k)
        for _ in range(2):
            s, _ = single.meta_step(jax.random.split(k_step, 3)[i], s, batch)
        np.testing.assert_allclose(state.theta["mu"][i], s.theta["mu"], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(state.theta["log_noise"][i], s.theta["log_noise"], rtol=1e-5)


def test_posterior_is_the_adapted_particles(setup, key):
    model, batch = setup
    ens = emaml(model, num_particles=4, inner_steps=2)
    state = ens.init(key)
    # Give each particle its own noise so the posterior must carry them per sample.
    state = state._replace(theta={**state.theta, "log_noise": jnp.log(jnp.arange(1.0, 5.0))})
    support = Support(batch.x_support, batch.y_support, batch.mask_support)
    post = jax.jit(ens.adapt, static_argnums=3)(key, state, support, 4)
    assert post.phi.shape == (4, 4, model.num_params) and post.method == "emaml"
    np.testing.assert_allclose(post.noise_std, np.tile(np.arange(1.0, 5.0), (4, 1)), rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(post.log_weights), 0.25, rtol=1e-6)
    single = maml(model, inner_steps=2)
    for m in range(4):
        theta = jax.tree_util.tree_map(lambda a, m=m: a[m], state.theta)
        one = single.adapt(key, state._replace(theta=theta), support, 1)
        np.testing.assert_allclose(post.phi[:, m], one.phi[:, 0], rtol=1e-5, atol=1e-6)
    # The ensemble's predictive is the equally weighted mixture of the particles' Gaussians.
    lp = post.log_predictive(batch.x_query, batch.y_query)
    assert lp.shape == batch.x_query.shape[:2] and bool(jnp.all(jnp.isfinite(lp)))


def test_bad_num_particles(setup):
    with pytest.raises(ValueError, match="num_particles"):
        emaml(setup[0], num_particles=0)
