import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import conv4, mlp

SMALL = (12, 12, 1)  # small images keep the compiled tests fast


def _images(key, n, shape=(28, 28, 1)):
    return jax.random.uniform(key, (n, math.prod(shape)))


def test_conv4_output_shape_and_leading_dims(key):
    net = conv4((28, 28, 1), num_classes=5, filters=8)
    params = jax.jit(net.init)(key)
    assert len(params) == 5  # four blocks and the output layer
    x = _images(key, 7)
    assert jax.jit(net.apply)(params, x).shape == (7, 5)
    assert jax.eval_shape(net.apply, params, x.reshape(1, 7, 784)).shape == (1, 7, 5)
    flat, unravel = net.flat(key)
    # 3·3·1·8 + 8, three times 3·3·8·8 + 8, then 8·5 + 5
    assert flat.shape == (80 + 3 * 584 + 45,)


@pytest.mark.parametrize("shape, stride", [((28, 28, 1), 2), ((15, 13, 2), 2), ((9, 9, 3), 1)])
def test_conv4_matmul_equals_lax_conv(key, shape, stride):
    k_p, k_x = jax.random.split(key)
    kw = dict(num_classes=4, filters=6, stride=stride)
    a, b = conv4(shape, impl="conv", **kw), conv4(shape, impl="matmul", **kw)
    params = jax.jit(a.init)(k_p)
    x = _images(k_x, 5, shape)
    both = jax.jit(lambda p, x: (a.apply(p, x), b.apply(p, x)))
    np.testing.assert_allclose(*both(params, x), rtol=1e-4, atol=1e-5)


def test_conv4_gradients_are_finite_and_nonzero(key):
    net = conv4(SMALL, num_classes=5, filters=8)
    params = jax.jit(net.init)(key)
    x = _images(key, 10, SMALL)
    y = jnp.arange(10) % 5

    def loss(p):
        logp = jax.nn.log_softmax(net.apply(p, x))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))

    grads = jax.jit(jax.grad(loss))(params)
    for layer in grads:
        for g in layer.values():
            assert bool(jnp.all(jnp.isfinite(g)))
            assert float(jnp.abs(g).max()) > 0.0


def test_conv4_he_initialisation(key):
    f = 64
    params = jax.jit(conv4((28, 28, 1), num_classes=10, filters=f).init)(key)
    fan_in = [9 * 1, 9 * f, 9 * f, 9 * f, f]
    for layer, n in zip(params, fan_in, strict=True):
        w = np.asarray(layer["w"])
        # the sample std of n_w Gaussians has relative std 1/sqrt(2 n_w) (≤ 3% here): allow 4σ
        tol = 4 / math.sqrt(2 * w.size)
        assert abs(w.std() / math.sqrt(2.0 / n) - 1.0) < tol
        assert abs(w.mean()) < 4 * math.sqrt(2.0 / n / w.size)
        np.testing.assert_array_equal(layer["b"], 0.0)


def test_conv4_layer_norm_is_per_example_and_scale_free(key):
    net = conv4(SMALL, num_classes=5, filters=8, norm="layer")
    plain = conv4(SMALL, num_classes=5, filters=8, norm="none")
    params = jax.jit(net.init)(key)
    x = _images(key, 6, SMALL)
    xs = jnp.concatenate([x, 3.0 * x])

    @jax.jit
    def run(params):
        return net.apply(params, xs), net.apply(params, x[:1]), plain.apply(params, xs)

    out, first, out_plain = run(params)
    # one point's prediction never depends on the others (no batch statistics)
    np.testing.assert_allclose(first, out[:1], rtol=1e-5, atol=1e-6)
    # the first normalisation removes the input's scale
    np.testing.assert_allclose(out[6:], out[:6], rtol=1e-4, atol=1e-5)
    assert not np.allclose(out_plain[6:], out_plain[:6])


def test_conv4_vmaps_over_per_task_weights(key):
    net = conv4(SMALL, num_classes=5, filters=4)
    params = jax.vmap(net.init)(jax.random.split(key, 3))
    x = _images(key, 12, SMALL).reshape(3, 4, -1)
    out = jax.jit(jax.vmap(net.apply))(params, x)
    one = jax.jit(net.apply)
    for t in range(3):
        p_t = jax.tree_util.tree_map(lambda a, t=t: a[t], params)
        np.testing.assert_allclose(out[t], one(p_t, x[t]), rtol=1e-5, atol=1e-6)


def test_conv4_in_the_hierarchical_model(key):
    model = HierarchicalModel(
        conv4(SMALL, 5, filters=4),
        likelihood="categorical",
        dx=144,
        num_classes=5,
        prior_scale=(0.1, 0.03, 0.03, 0.03, 0.1),
    )
    theta = model.init_theta(key)
    x = _images(key, 10, SMALL)
    y = jnp.arange(10, dtype=jnp.int32) % 5
    ll = jax.jit(model.log_likelihood)(theta, theta["mu"], x, y)
    assert ll.shape == () and bool(jnp.isfinite(ll))
    assert model.dy == 1 and model.num_params == theta["mu"].shape[0]


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        (dict(image_shape=(28, 28)), "image_shape"),
        (dict(image_shape=(28, 0, 1)), "image_shape"),
        (dict(num_classes=0), "num_classes"),
        (dict(filters=0), "filters"),
        (dict(filters=2.5), "filters"),
        (dict(num_blocks=0), "num_blocks"),
        (dict(stride=0), "stride"),
        (dict(norm="batch"), "norm"),
        (dict(impl="cudnn"), "impl"),
    ],
)
def test_conv4_bad_arguments_raise(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        conv4(**kwargs)


def test_conv4_rejects_inputs_of_the_wrong_width(key):
    net = conv4((28, 28, 1), 5, filters=4)
    with pytest.raises(ValueError, match=r"x: expected \(N, 784\)"):
        net.apply(jax.eval_shape(net.init, key), jnp.zeros((3, 783)))


def test_mlp_shapes_and_he_init(key):
    net = mlp((3, 256, 2))
    params = jax.jit(net.init)(key)
    assert [p["w"].shape for p in params] == [(3, 256), (256, 2)]
    assert net.apply(params, jnp.ones((5, 3))).shape == (5, 2)
    w = np.asarray(params[0]["w"])
    assert abs(w.std() / math.sqrt(2.0 / 3) - 1.0) < 4 / math.sqrt(2 * w.size)
    flat, unravel = net.flat(key)
    assert flat.shape == (3 * 256 + 256 + 256 * 2 + 2,)
    np.testing.assert_allclose(unravel(flat)[1]["w"], params[1]["w"], rtol=1e-6)


@pytest.mark.parametrize(
    "sizes, activation, arg",
    [((3,), "relu", "sizes"), ((3, 0, 1), "relu", "sizes"), ((3, 4, 1), "swish", "activation")],
)
def test_mlp_bad_arguments_raise(sizes, activation, arg):
    with pytest.raises(ValueError, match=arg):
        mlp(sizes, activation=activation)


# -- networks from the ecosystem ------------------------------------------------------------------
def _maml_step_finite(network):
    from bayesmeta.inference import maml
    from bayesmeta.model import HierarchicalModel
    from bayesmeta.tasks.base import TaskBatch

    model = HierarchicalModel(network, prior_scale=0.1)
    method = maml(model, inner_steps=1)
    key = jax.random.PRNGKey(0)
    x = jax.random.uniform(key, (3, 6, 1), minval=-3, maxval=3)
    batch = TaskBatch(x[:, :3], jnp.sin(x[:, :3]), jnp.ones((3, 3)), x[:, 3:], jnp.sin(x[:, 3:]))
    state = method.init(key)
    new, info = jax.jit(method.meta_step)(key, state, batch)
    assert np.isfinite(float(info.loss)) and float(info.grad_norm) > 0
    return model


def test_from_apply_wraps_a_params_and_apply_pair():
    from bayesmeta.nn import from_apply

    params = {"w": jnp.ones((1, 3)), "v": jnp.full((3, 1), 0.5)}
    net = from_apply(params, lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"])
    model = _maml_step_finite(net)
    assert model.num_params == 6
    phi, unravel = net.flat(jax.random.PRNGKey(1))
    x = jnp.linspace(-1, 1, 4)[:, None]
    np.testing.assert_allclose(model.apply(phi, x), jnp.tanh(x) * 1.5, rtol=1e-6)
    with pytest.raises(TypeError, match="apply: expected a function"):
        from_apply(params, "not a function")


def test_from_equinox_wraps_a_module_acting_on_one_example():
    eqx = pytest.importorskip("equinox")
    from bayesmeta.nn import from_equinox

    mlp_ = eqx.nn.MLP(1, 1, 8, 2, activation=jnp.tanh, key=jax.random.PRNGKey(2))
    net = from_equinox(mlp_)
    model = _maml_step_finite(net)
    phi, _ = net.flat(jax.random.PRNGKey(0))
    x = jnp.linspace(-2, 2, 5)[:, None]
    np.testing.assert_allclose(model.apply(phi, x), jax.vmap(mlp_)(x), rtol=1e-6)
    assert model.num_params == sum(
        a.size for a in jax.tree_util.tree_leaves(eqx.filter(mlp_, eqx.is_array))
    )


def test_from_flax_wraps_a_linen_module():
    nn = pytest.importorskip("flax.linen")
    from bayesmeta.nn import from_flax

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(jnp.tanh(nn.Dense(8)(x)))

    module = MLP()
    net = from_flax(module, jnp.zeros((1, 1)))
    model = _maml_step_finite(net)
    key = jax.random.PRNGKey(3)
    phi, unravel = net.flat(key)
    x = jnp.linspace(-2, 2, 5)[:, None]
    np.testing.assert_allclose(model.apply(phi, x), module.apply(unravel(phi), x), rtol=1e-6)
