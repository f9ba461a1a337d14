"""Data models start where the data says (issue 42, items 1-2): the linear model's θ at
initialisation is the per-group empirical-Bayes fit of the training groups, so its exact last
layer is the classical posterior; the MLP's last layer also sees the raw features and starts at
the same fit."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesmeta as bm
from bayesmeta.datamodels import DataModel, as_spec, empirical_bayes
from bayesmeta.evaluate.baselines import _design, fit_linear_baselines
from bayesmeta.inference.heads import conjugate_head
from bayesmeta.tasks.data import from_groups


@pytest.fixture(scope="module")
def rows():
    # random intercepts and slopes with correlated effects, noise well below the spread
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(40), 9)
    effects = rng.multivariate_normal(
        [1.0, -0.5, 2.0], [[0.5, 0.3, 0], [0.3, 0.4, 0], [0, 0, 1]], 40
    )
    x = rng.normal(size=(g.size, 2))
    y = np.sum(x * effects[g, :2], 1) + effects[g, 2] + rng.normal(0, 0.1, g.size)
    return from_groups(x, y, g, name="toy")


def _exact(fit, xs, ys, xq):
    """The empirical-Bayes posterior predictive mean and variance (float64)."""
    p, pq = _design(xs), _design(xq)
    s_inv = np.linalg.inv(fit.S)
    cov = np.linalg.inv(s_inv + p.T @ p / fit.eb_noise_var)
    mu = cov @ (s_inv @ fit.m + p.T @ ys / fit.eb_noise_var)
    return pq @ mu, np.einsum("qi,ij,qj->q", pq, cov, pq)


def test_the_linear_data_model_starts_at_the_empirical_bayes_fit(rows):
    spec = as_spec("linear", rows)
    model, train = spec.model, spec.splits.train
    assert isinstance(model, DataModel)
    eb = empirical_bayes(train)
    theta = model.init_theta(jax.random.PRNGKey(3))
    assert float(model.noise_std(theta)) ** 2 == pytest.approx(eb.noise_var, rel=1e-5)
    # the prior over f(x) = [x, 1] w is N([x, 1] m, [x, 1] S [x, 1]ᵀ)
    x = jnp.asarray(train.x[0, :5])
    jac = jax.jacobian(lambda phi: model.apply(phi, x)[:, 0])(theta["mu"])
    cov = (jac * jnp.exp(2 * theta["log_sigma"])) @ jac.T
    np.testing.assert_allclose(model.apply(theta["mu"], x)[:, 0], _design(x) @ eb.m, atol=1e-4)
    np.testing.assert_allclose(cov, _design(x) @ eb.S @ _design(x).T, atol=1e-4, rtol=1e-3)


def test_its_exact_last_layer_is_the_classical_posterior(rows):
    spec = as_spec("linear", rows)
    model, train, test = spec.model, spec.splits.train, spec.splits.test
    real = np.arange(train.x.shape[1])[None, :] < train.lengths[:, None]
    fit = fit_linear_baselines(train.x[real], train.y[real][:, 0],
                               np.repeat(np.arange(train.num_groups), train.lengths))  # fmt: skip
    head = conjugate_head(model)
    theta = model.init_theta(jax.random.PRNGKey(0))
    for g in range(test.num_groups):
        n = int(test.lengths[g])
        xs, ys, xq = test.x[g, :3], test.y[g, :3], test.x[g, 3:n]
        mean, var = head.predictive(theta, jnp.zeros(0), jnp.asarray(xs), jnp.asarray(ys),
                                    jnp.ones(3), jnp.asarray(xq))  # fmt: skip
        m_ex, v_ex = _exact(fit, xs, ys[:, 0], xq)
        np.testing.assert_allclose(mean[:, 0], m_ex, atol=2e-3)
        np.testing.assert_allclose(var[:, 0], v_ex, rtol=2e-2, atol=1e-4)


def test_the_mlp_starts_at_the_linear_fit_and_contains_it(rows):
    spec = as_spec("mlp", rows)
    model, train = spec.model, spec.splits.train
    eb = empirical_bayes(train)
    theta = model.init_theta(jax.random.PRNGKey(0))
    x = jnp.asarray(train.x[1, :6])
    np.testing.assert_allclose(model.apply(theta["mu"], x)[:, 0], _design(x) @ eb.m, atol=1e-4)
    assert float(model.noise_std(theta)) ** 2 == pytest.approx(eb.noise_var, rel=1e-5)
    # the last layer is linear after a body: methods with an exact last layer integrate it
    assert conjugate_head(model).num_body > 0


def test_labels_and_several_targets_keep_the_plain_models():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(12), 6)
    labels = from_groups(rng.normal(size=(72, 2)), rng.integers(0, 3, 72), g, labels=True)
    assert not isinstance(as_spec("mlp", labels).model, DataModel)
    wide = from_groups(rng.normal(size=(72, 2)), rng.normal(size=(72, 2)), g)
    assert not isinstance(as_spec("linear", wide).model, DataModel)


# eager and jitted for each way to the exact Gaussian (heads.with_exact, the neural process's)
@pytest.mark.parametrize(
    ("method", "jit"),
    [("abml", False), ("abml", True), ("bmaml", True), ("platipus", True),
     ("neural-process", False), ("neural-process", True)],
)  # fmt: skip
def test_at_its_start_each_exact_head_method_is_the_classical_posterior_in_closed_form(
    rows, method, jit
):
    # the data defaults (collapsed head; BMAML's shared noise and the model's prior scales) at
    # the untrained θ: the posterior carries the exact Gaussian, so its predictive is the
    # classical one's in closed form, not a Monte Carlo mixture of its draws
    from bayesmeta.tasks import Support

    spec = as_spec("linear", rows)
    m, _ = spec.build(method)
    state = m.init(jax.random.PRNGKey(0))
    train, test = spec.splits.train, spec.splits.test
    real = np.arange(train.x.shape[1])[None, :] < train.lengths[:, None]
    fit = fit_linear_baselines(train.x[real], train.y[real][:, 0],
                               np.repeat(np.arange(train.num_groups), train.lengths))  # fmt: skip
    t = test.num_groups
    xs, ys = jnp.asarray(test.x[:, :3]), jnp.asarray(test.y[:, :3])
    xq, yq = jnp.asarray(test.x[:, 3:6]), jnp.asarray(test.y[:, 3:6])

    def predictive(state, xs, ys, xq, yq):
        post = m.adapt(jax.random.PRNGKey(1), state, Support(xs, ys, jnp.ones((t, 3))), 20)
        return post.mean(xq), post.variance(xq), post.log_predictive(xq, yq)

    fn = jax.jit(predictive) if jit else predictive
    mean, var, lp = fn(state, xs, ys, xq, yq)
    noise = fit.eb_noise_var
    for g in range(t):
        m_ex, v_ex = _exact(fit, np.asarray(xs[g]), np.asarray(ys[g, :, 0]), np.asarray(xq[g]))
        np.testing.assert_allclose(mean[g, :, 0], m_ex, atol=2e-3)
        np.testing.assert_allclose(var[g, :, 0], v_ex + noise, rtol=2e-2, atol=1e-4)
        lp_ex = -0.5 * (
            (yq[g, :, 0] - m_ex) ** 2 / (v_ex + noise) + np.log(2 * np.pi * (v_ex + noise))
        )
        np.testing.assert_allclose(lp[g], lp_ex, atol=2e-2)


@pytest.mark.slow
def test_a_collapsed_method_on_the_linear_model_is_the_classical_posterior_untrained(rows):
    # one step of a tiny learning rate: the method's exact head at the classical θ
    ref = bm.fit("linear", "reference", data=rows)
    tasks = bm.runs.task_set(ref, k=3, num_tasks=40)
    f = bm.fit("linear", "abml", data=rows, steps=1, lr=1e-8, head="collapsed", progress=False)
    gap = f.evaluate(tasks, num_samples=1000)["nll"] - ref.evaluate(tasks, num_samples=1000)["nll"]
    assert abs(gap) < 0.05, gap


def test_held_out_on_data_is_one_task_per_group(rows):
    ref = bm.fit("linear", "reference", data=rows)
    tasks = ref.held_out(k=3)  # the default 50 query rows: capped at what the groups hold
    test = ref.spec.splits.test
    assert tasks["x_support"].shape[0] == test.num_groups
    assert tasks["x_query"].shape[1] == int(test.lengths.max()) - 3
    report = ref.evaluate(tasks)
    assert report["n_tasks"] == test.num_groups and np.isfinite(report["nll_se"])


# -- counts and labels (issue 42, item 8): the data are read as the model's observation site
# needs them, before anything is trained


def _poisson(x, y=None, mask=None):
    import numpyro
    import numpyro.distributions as dist

    t, n, _ = x.shape
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    with numpyro.plate("tasks", t, dim=-2):
        a = numpyro.sample("a", dist.Normal(mu, 0.5))
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Poisson(jnp.exp(a + 0.3 * x[..., 0])), obs=y)


def _normal(x, y=None, mask=None):
    import numpyro
    import numpyro.distributions as dist

    t, n, _ = x.shape
    with numpyro.plate("tasks", t, dim=-2):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Normal(a + x[..., 0], 0.5), obs=y)


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(30), 6)
    x = rng.normal(size=(g.size, 1))
    y = rng.poisson(np.exp(rng.normal(1.0, 0.5, 30)[g] + 0.3 * x[:, 0]))
    return x, y, g


def test_integer_counts_fit_a_poisson_model_in_their_own_units(counts):
    # before: integer y became class labels, training ran, and evaluation failed on a shape
    x, y, g = counts
    fitted = bm.fit(_poisson, "maml", data=from_groups(x, y, g), steps=3)
    splits = fitted.spec.splits
    assert splits.scaler.y_mean is None and splits.scaler.y_scale is None  # never standardised
    real = np.arange(splits.train.y.shape[1])[None, :] < splits.train.lengths[:, None]
    train_y = splits.train.y[real]
    assert train_y.shape[-1] == 1 and np.all(train_y == np.round(train_y)) and train_y.max() > 1
    report = fitted.evaluate(fitted.held_out(k=2))
    assert np.isfinite(report["nll"])


def test_counts_given_as_floats_are_not_standardised_either(counts):
    # before: labels=False standardised the counts and the Poisson likelihood diverged
    x, y, g = counts
    spec = as_spec(_poisson, from_groups(x, y.astype(float), g, labels=False))
    assert spec.splits.scaler.y_mean is None


@pytest.mark.parametrize(
    "bad, expected",
    [(2.5, "discrete support"), (-1.0, "discrete support")],
)
def test_values_outside_the_sites_support_are_refused_before_training(counts, bad, expected):
    x, y, g = counts
    y = y.astype(float)
    y[7] = bad
    with pytest.raises(ValueError, match=expected) as err:
        as_spec(_poisson, from_groups(x, y, g, labels=False, target="seizures"))
    msg = str(err.value)
    assert "\n" not in msg and "Poisson" in msg and "'seizures'" in msg and "row 7" in msg


def test_explicit_labels_or_standardised_splits_for_a_count_site_are_refused(counts):
    x, y, g = counts
    with pytest.raises(ValueError, match=r"labels=True\); pass labels=False"):
        as_spec(_poisson, from_groups(x, y, g, labels=True))
    standardised = from_groups(x, y, g, labels=False).split(seed=0)
    with pytest.raises(ValueError, match="standardize_y=False"):
        as_spec(_poisson, standardised)
    as_spec(_poisson, from_groups(x, y, g, labels=False).split(seed=0, standardize_y=False))


def test_integer_targets_of_a_real_site_are_real_and_standardised(counts):
    x, y, g = counts
    spec = as_spec(_normal, from_groups(x, y, g))
    assert spec.splits.scaler.y_scale is not None and not spec.splits.train.classification


def test_integers_become_labels_for_the_builtin_mlp_only_with_a_warning(counts):
    x, y, g = counts
    with pytest.warns(UserWarning, match="class labels; pass labels=False"):
        spec = as_spec("mlp", from_groups(x, y, g))
    assert spec.splits.train.classification
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_spec("mlp", from_groups(x, y, g, labels=True))
