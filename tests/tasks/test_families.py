import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.tasks import (
    FAMILIES,
    make_task_set,
    sample_batch,
    sine_line,
    sinusoid,
    sinusoid_hetero,
)


@pytest.mark.parametrize("name", sorted(n for n in FAMILIES if n != "blobs"))  # K points
def test_batch_shapes_masks_and_ranges(name, key):
    fam = FAMILIES[name]()
    batch, params = jax.jit(lambda k: sample_batch(fam, k, 64, (1, 10), 7))(key)
    y_shape = (64, 7) if fam.likelihood == "categorical" else (64, 7, 1)
    assert batch.x_support.shape == (64, 10, fam.dx) and batch.y_query.shape == y_shape
    k = np.asarray(batch.mask_support.sum(1))
    assert k.min() >= 1 and k.max() <= 10 and len(np.unique(k)) > 3
    # the mask is a prefix: real points first, padding after
    np.testing.assert_array_equal(np.sort(batch.mask_support, axis=1)[:, ::-1], batch.mask_support)
    lo, hi = fam.x_range
    assert float(batch.x_support.min()) >= lo and float(batch.x_query.max()) <= hi
    assert params.shape[0] == 64 and np.all(np.isfinite(params))


def test_sinusoid_noise_and_parameter_ranges(key):
    fam = sinusoid(noise=0.3)
    batch, params = sample_batch(fam, key, 2000, (10, 10), 10)
    assert float(params[:, 0].min()) >= 0.1 and float(params[:, 0].max()) <= 5.0
    assert float(params[:, 1].min()) >= 0.0 and float(params[:, 1].max()) <= math.pi
    resid = batch.y_query - jax.vmap(fam.mean_fn)(params, batch.x_query)
    # 20000 residuals: the std of the sample std is 0.3/sqrt(2·20000) ≈ 0.0015
    assert abs(float(jnp.std(resid)) - 0.3) < 0.01


def test_hetero_noise_follows_x(key):
    """sinusoid_hetero: y − f has sd exp(a₀ + a₁ x), whichever the task."""
    fam = sinusoid_hetero(log_noise=(math.log(0.5), 0.3))
    batch, params = sample_batch(fam, key, 2000, (10, 10), 10)
    x = np.asarray(batch.x_query[..., 0]).ravel()
    z = np.asarray(batch.y_query - jax.vmap(fam.mean_fn)(params, batch.x_query))[..., 0].ravel()
    z = z / np.exp(math.log(0.5) + 0.3 * x)
    # 20000 standardised residuals: sd 1 within 0.02 (over 10 se), and no trend left in x
    assert abs(z.std() - 1.0) < 0.02
    for lo, hi in ((-5, -2), (2, 5)):
        sel = (x > lo) & (x < hi)
        assert abs(z[sel].std() - 1.0) < 0.05
    raw = np.asarray(batch.y_query - jax.vmap(fam.mean_fn)(params, batch.x_query))[..., 0].ravel()
    assert raw[x > 3].std() > 5 * raw[x < -3].std()


def test_sine_line_mixes_both_hypotheses(key):
    _, params = sample_batch(sine_line(), key, 4000, (1, 1), 1)
    frac_line = float(jnp.mean(params[:, 0]))
    assert abs(frac_line - 0.5) < 0.03  # 4σ of a binomial with n = 4000
    lines = params[params[:, 0] > 0.5]
    assert float(jnp.abs(lines[:, 1:]).max()) <= 3.0


def test_task_sets_are_reproducible_and_exact_k(key):
    a = make_task_set(sinusoid(), key, 5, 4, 9)
    b = make_task_set(sinusoid(), key, 5, 4, 9)
    assert a["x_support"].shape == (5, 4, 1)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_finite_pool_draws_only_pool_tasks(key):
    from bayesmeta.tasks import finite_pool, sinusoid_bmaml

    fam = sinusoid_bmaml()
    pool = finite_pool(fam, 5, seed=3)
    assert pool.name == "sinusoid_bmaml-pool5"
    members = np.asarray(fam.sample_params(jax.random.PRNGKey(3), 5))
    _, params = sample_batch(pool, key, 200, (5, 5), 4)
    params = np.asarray(params)
    # Every drawn task is one of the 5 pool members, and all 5 appear in 200 draws.
    dist = np.abs(params[:, None, :] - members[None]).max(-1)
    assert np.all(dist.min(1) == 0.0)
    assert len(set(dist.argmin(1).tolist())) == 5
    with pytest.raises(ValueError, match="num_tasks"):
        finite_pool(fam, 0)


def test_model_spec_trains_on_its_pool_and_evaluates_on_the_family(key):
    from bayesmeta.modelfiles import load_model_spec

    spec = load_model_spec("sinusoid_bmaml")
    assert spec.train_family.name == "sinusoid_bmaml-pool1000"
    batch = spec.sampler(4, 3)(key)
    assert batch.x_support.shape == (4, 10, 1) and spec.eval_k == (5, 10)
    for method in ("emaml", "bmaml"):
        m, cfg = spec.build(method)
        assert m.name == method and cfg["max_seconds"] is None and cfg["steps"] > 0


@pytest.mark.slow
def test_circles_support_is_positive_and_reference_is_a_posterior(key):
    from bayesmeta.inference import reference
    from bayesmeta.tasks import circles
    from bayesmeta.tasks.base import padded_support

    fam = circles()
    ts = make_task_set(fam, key, 30, 1, 200)
    assert ts["x_support"].shape == (30, 1, 2) and ts["y_support"].shape == (30, 1)
    assert ts["y_support"].dtype == jnp.int32
    assert float(jnp.mean(ts["y_support"])) > 0.9  # support points lie inside the disc
    # Query labels follow the disc: inside -> 1 (up to the soft boundary).
    psi = np.asarray(ts["task_params"])
    d = np.linalg.norm(np.asarray(ts["x_query"]) - psi[:, None, :2], axis=-1)
    inside = d < psi[:, None, 2] - 0.3
    outside = d > psi[:, None, 2] + 0.3
    y = np.asarray(ts["y_query"])
    assert y[inside].mean() > 0.95 and y[outside].mean() < 0.05
    ref = reference(fam)
    post = ref.adapt(key, ref.init(key), padded_support(ts, 5), 1)
    np.testing.assert_allclose(np.exp(np.asarray(post.log_weights)).sum(-1), 1.0, rtol=1e-4)
    # The support point is inside every circle with real posterior mass.
    w = np.exp(np.asarray(post.log_weights))
    grid = np.asarray(post.phi)
    dist_s = np.linalg.norm(np.asarray(ts["x_support"])[:, :1, :] - grid[..., :2], axis=-1)
    assert np.sum(w * (dist_s > grid[..., 2] + 0.5)) / 30 < 1e-3
    # Exact posterior beats the prior on held-out labels.
    probs = post.probs(ts["x_query"])
    acc = float(jnp.mean(jnp.argmax(probs, -1) == ts["y_query"]))
    assert acc > 0.8


def test_circles_active_supports_start_inside_then_spread_like_a_pool(key):
    from bayesmeta.inference import reference
    from bayesmeta.tasks import circles
    from bayesmeta.tasks.base import padded_support

    fam = circles(support="first-inside")
    assert fam.name == "circles-active"
    ts = make_task_set(fam, key, 200, 6, 50)
    psi = np.asarray(ts["task_params"])
    xs = np.asarray(ts["x_support"])
    d = np.linalg.norm(xs - psi[:, None, :2], axis=-1)
    assert np.all(d[:, 0] <= 0.8 * psi[:, 2] + 1e-5)  # the first point: inside the disc
    # the rest: uniform on the square, so about 14 % inside (π E[r²] / 100), labelled to match
    rest_inside = (d[:, 1:] < psi[:, None, 2]).mean()
    assert 0.08 < rest_inside < 0.22
    assert abs(xs[:, 1:].mean()) < 0.3 and 2.6 < xs[:, 1:].std() < 3.2
    y = np.asarray(ts["y_support"])[:, 1:]
    assert y[d[:, 1:] < psi[:, None, 2] - 0.3].mean() > 0.95
    assert y[d[:, 1:] > psi[:, None, 2] + 0.3].mean() < 0.05
    # the reference weighs only the first point's location: a far negative costs no node
    lx = fam.support_x_logpdf(jnp.array([0.0, 0.0, 1.0]), jnp.array([[0.1, 0.0], [4.0, 4.0]]))
    assert float(lx[1]) == pytest.approx(-np.log(100.0))
    ref = reference(fam)
    few = {k: v[:40] for k, v in ts.items()}  # the grid posterior is costly: 40 of the tasks
    post = ref.adapt(key, ref.init(key), padded_support(few, 6), 1)
    acc = float(jnp.mean(jnp.argmax(post.probs(few["x_query"]), -1) == few["y_query"]))
    assert acc > 0.9  # six labelled points, one of them inside
    with pytest.raises(ValueError, match="support: expected 'inside' or 'first-inside'"):
        circles(support="pool")


@pytest.mark.parametrize("jit", [False, True])
def test_k_power_weights_support_sizes(key, jit):
    """p(k) ∝ k^(−k_power) on k_range: counts over 20 000 tasks match it within 5 standard
    errors (a false failure rate below 1e-5 per size), and k_power = 0 is the uniform draw."""
    fam = sinusoid()

    def draw(p):
        return sample_batch(fam, key, 20_000, (1, 10), 2, p)[0].mask_support.sum(1)

    draw = jax.jit(draw, static_argnums=0) if jit else draw
    ks = np.arange(1, 11)
    for power in (0.0, 1.0, 2.0):
        got = np.bincount(np.asarray(draw(power)).astype(int), minlength=11)[1:] / 20_000
        want = ks**-power / (ks**-power).sum()
        np.testing.assert_array_less(np.abs(got - want), 5 * np.sqrt(want * (1 - want) / 20_000))
    uniform = sample_batch(fam, key, 50, (1, 10), 2)[0].mask_support
    same = sample_batch(fam, key, 50, (1, 10), 2, 0.0)[0].mask_support
    np.testing.assert_array_equal(same, uniform)


def test_k_power_rejects_bad_values(key):
    with pytest.raises(ValueError, match="k_power: expected a finite number"):
        sample_batch(sinusoid(), key, 2, (1, 5), 2, float("nan"))


def test_model_spec_recipe_k_power_reaches_the_training_sampler(key):
    from bayesmeta.modelfiles import load_model_spec

    spec = load_model_spec("sinusoid")
    _, cfg = spec.build("maml", k_power=3.0)
    assert cfg["k_power"] == 3.0 and spec.build("maml")[1]["k_power"] == 0.0
    k = np.asarray(spec.sampler(2000, 2, cfg["k_power"])(key).mask_support.sum(1))
    assert 0.75 < np.mean(k == 1) < 0.90  # 1 / Σ k^-3 = 0.83 of tasks have k = 1


def test_blobs_episodes_are_shot_major_balanced_and_masked(key):
    from bayesmeta.tasks import blobs

    fam = blobs(n_way=3, dx=2, spread=4.0)
    batch, params = jax.jit(lambda k: sample_batch(fam, k, 500, (1, 4), 6))(key)
    assert batch.x_support.shape == (500, 12, 2) and batch.y_query.shape == (500, 6)
    np.testing.assert_array_equal(batch.y_support[0], np.tile(np.arange(3), 4))
    shots = np.asarray(batch.mask_support.sum(1)) / 3
    assert set(np.unique(shots)) == {1.0, 2.0, 3.0, 4.0}  # whole shots per class
    # points scatter with unit variance around their class centre, centres with spread²
    centres = np.asarray(params).reshape(500, 3, 2)
    resid = np.asarray(batch.x_query) - np.take_along_axis(
        centres, np.asarray(batch.y_query)[..., None], 1)  # fmt: skip
    assert np.std(resid) == pytest.approx(1.0, rel=0.05)
    assert np.std(centres) == pytest.approx(4.0, rel=0.05)
    with pytest.raises(ValueError, match="num_query: expected a positive multiple"):
        sample_batch(fam, key, 2, (1, 2), 4)
