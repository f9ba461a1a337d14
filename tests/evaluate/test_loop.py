"""The hand-driven active-learning loop (issue 45 item 2): ``Fitted.active`` -> suggest / tell
/ scores / plot, the same posterior as adapting on the enlarged support, one compilation
across tells, the data's own units on a data fit, a NumPyro model, one-line errors."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bayesmeta as bm
from bayesmeta.evaluate.loop import ActiveLoop
from bayesmeta.tasks.data import from_groups

X_POOL = np.linspace(-4.5, 4.5, 24).astype(np.float32)


@pytest.fixture(scope="module")
def ref():
    """The exact grid posterior of the sinusoid (nothing to train)."""
    return bm.fit("sinusoid", "reference")


@pytest.fixture(scope="module")
def maml():
    return bm.fit("sinusoid", "maml", steps=30, progress=False)


def _loop(fitted, acquisition="bald", k=2, **kw) -> ActiveLoop:
    xs = np.array([-2.0, 1.0], np.float32)[:k]
    with warnings.catch_warnings():  # the grid's S nodes are not the samples asked for
        warnings.simplefilter("ignore", UserWarning)
        return fitted.active(xs, np.sin(xs), X_POOL, acquisition, **kw)


def _adapt(fitted, x, y, num_samples, key):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fitted.adapt(x, y, num_samples, key=key)


@pytest.mark.parametrize("name", ["ref", "maml"])
@pytest.mark.parametrize("k", [0, 2])
def test_tell_moves_the_posterior_as_adapting_on_the_enlarged_support(name, k, request):
    fitted = request.getfixturevalue(name)
    loop = _loop(fitted, "variance", k=k, key=jax.random.PRNGKey(3), num_samples=20)
    loop.tell([5, 11], [0.3, -0.4]).tell(17, 0.9)
    assert loop.labelled.tolist() == [5, 11, 17] and len(loop.history) == 2
    np.testing.assert_array_equal(loop.x_support[k:, 0], X_POOL[[5, 11, 17]])
    np.testing.assert_allclose(loop.y_support[k:, 0], [0.3, -0.4, 0.9])
    want = _adapt(fitted, loop.x_support, loop.y_support, 20, loop.adapt_key)
    got = loop.posterior
    assert got.phi.shape == want.phi.shape
    np.testing.assert_allclose(got.phi, want.phi, atol=1e-5)
    np.testing.assert_allclose(got.log_weights, want.log_weights, atol=2e-4)
    x = X_POOL[None, :, None]
    np.testing.assert_allclose(got.mean(x), want.mean(x), atol=1e-4)
    # the posterior moved: the same loop before its tells is another posterior
    before = _loop(fitted, "variance", k=k, key=jax.random.PRNGKey(3), num_samples=20)
    assert not np.allclose(before.posterior.mean(x), got.mean(x), atol=1e-3)


def test_suggest_never_returns_a_labelled_index_and_starts_at_the_argmax(ref):
    loop = _loop(ref, "bald")
    loop.tell([int(loop.suggest()[0]), 3], [0.5, -0.2])
    scores = loop.scores
    assert scores.shape == (24,) and np.all(scores[loop.labelled] == -np.inf)
    assert np.isfinite(np.delete(scores, loop.labelled)).all()
    everything = loop.suggest(22)
    assert set(everything.tolist()) == set(range(24)) - set(loop.labelled.tolist())
    assert everything[0] == np.argmax(scores)
    assert np.all(np.diff(scores[everything]) <= 0)  # best first
    np.testing.assert_array_equal(loop.suggest(4), everything[:4])
    # a fantasised batch: distinct, unlabelled, the argmax first; the loop itself unchanged
    batch = loop.suggest(4, fantasize=True)
    assert len(set(batch.tolist())) == 4 and not set(batch) & set(loop.labelled.tolist())
    assert batch[0] == everything[0]
    np.testing.assert_array_equal(loop.scores, scores)
    assert len(loop.labelled) == 2 and len(loop.history) == 1


def test_variance_acquisition_picks_the_highest_predictive_variance(ref):
    loop = _loop(ref, "variance", k=1)
    var = np.asarray(loop.posterior.variance(X_POOL[None, :, None]))[0, :, 0]
    np.testing.assert_allclose(loop.scores, var, rtol=1e-4)
    assert loop.suggest()[0] == np.argmax(var)
    loop.tell(int(np.argmax(var)), 0.0)
    var = np.array(loop.posterior.variance(X_POOL[None, :, None]))[0, :, 0]
    var[loop.labelled] = -np.inf
    assert loop.suggest()[0] == np.argmax(var)


def test_one_compilation_across_tells(maml):
    traces = []
    adapt = maml.method.adapt

    def counting(key, state, support, num_samples):
        traces.append(support.x.shape)
        return adapt(key, state, support, num_samples)

    fitted = dataclasses.replace(maml, method=maml.method._replace(adapt=counting))
    loop = fitted.active([0.5], [0.4], X_POOL, "variance", num_samples=5)
    for i in range(4):
        loop.tell(int(loop.suggest()[0]), 0.1 * i)
    loop.suggest(3, fantasize=True)  # two more adaptations, same shapes
    assert traces == [(1, 1 + 24, 1)]  # K + P slots from the start
    assert len(loop.labelled) == 4


def test_keys_make_the_loop_reproducible(ref):
    a, b = (_loop(ref, "random", key=jax.random.PRNGKey(7)) for _ in range(2))
    c = _loop(ref, "random", key=8)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.array_equal(a.scores, c.scores)
    a.tell(0, 0.1)
    b.tell(0, 0.1)
    np.testing.assert_array_equal(a.suggest(3), b.suggest(3))


def _rows(scale=1.0, shift=0.0):
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(24), 8)
    x = rng.normal(size=(g.size, 2))
    y = rng.normal(1.0, 0.5, 24)[g] * x[:, 0] - 0.5 * x[:, 1] + rng.normal(0, 0.3, g.size)
    return from_groups(x, scale * y + shift, g)


def test_a_data_fit_reads_and_answers_in_the_datas_own_units():
    # y -> 10 y + 5 standardises to the same numbers, so both fits are the same posterior
    # and rank the candidates alike; the loop takes and gives y in each data's own units
    fits = [bm.fit("linear", "reference", data=_rows(s, m)) for s, m in ((1.0, 0.0), (10.0, 5.0))]
    rng = np.random.default_rng(1)
    xs, xp = rng.normal(size=(2, 2)), rng.normal(size=(15, 2))
    ys = np.array([0.4, -1.1])
    loops = [f.active(xs, s * ys + m, xp, "variance", key=2, num_samples=5)
             for f, (s, m) in zip(fits, ((1.0, 0.0), (10.0, 5.0)), strict=True)]  # fmt: skip
    for lp, (s, m) in zip(loops, ((1.0, 0.0), (10.0, 5.0)), strict=True):
        lp.tell([4, 9], s * np.array([0.2, 1.5]) + m)
    a, b = loops
    np.testing.assert_allclose(b.y_support, 10 * a.y_support + 5, rtol=1e-5)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3)
    np.testing.assert_array_equal(a.suggest(3), b.suggest(3))
    np.testing.assert_allclose(a.posterior.phi, b.posterior.phi, atol=1e-3)
    scaler = fits[1].spec.splits.scaler
    want = fits[1].adapt(scaler.transform_x(b.x_support), scaler.transform_y(b.y_support), 5,
                         key=b.adapt_key)  # fmt: skip
    np.testing.assert_allclose(b.posterior.phi, want.phi, atol=1e-5)


def _poisson(x, y=None, mask=None):
    t, n, _ = x.shape
    a = numpyro.sample("mu", dist.Normal(0.0, 2.0))
    with numpyro.plate("tasks", t, dim=-2):
        b = numpyro.sample("b", dist.Normal(a, 1.0))
    with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
        numpyro.sample("y", dist.Poisson(jnp.exp(b + 0.3 * x[..., 0])), obs=y)


def test_a_numpyro_model_on_counts():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(20), 6)
    x = rng.normal(size=(g.size, 1))
    y = rng.poisson(np.exp(rng.normal(1.0, 0.5, 20)[g] + 0.3 * x[:, 0]))
    fitted = bm.fit(_poisson, "maml", data=from_groups(x, y, g), steps=2, progress=False)
    loop = fitted.active(x[:2], y[:2], np.linspace(-2, 2, 9), "variance", num_samples=8)
    assert np.isfinite(loop.scores).all()
    i = int(loop.suggest()[0])
    loop.tell(i, 3)
    assert loop.y_support.tolist() == [[float(y[0])], [float(y[1])], [3.0]]
    assert i not in loop.suggest(8).tolist()
    want = fitted.adapt(fitted.spec.splits.scaler.transform_x(loop.x_support), loop.y_support, 8,
                        key=loop.adapt_key)  # fmt: skip
    np.testing.assert_allclose(loop.posterior.phi, want.phi, atol=1e-4)


def test_plot_draws_bands_support_and_scores(ref, tmp_path):
    loop = _loop(ref, "bald").tell(0, 0.2)
    ax = loop.plot(num_draws=200, num_grid=50)
    assert len(ax.collections) >= 3 and len(ax.figure.axes) == 2  # bands, points; the twin
    lo, hi = ax.get_xlim()
    assert lo < X_POOL.min() and hi > X_POOL.max()
    ax.figure.savefig(tmp_path / "loop.png")
    assert (tmp_path / "loop.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda lp: lp.tell(24, 0.0), "indices: expected pool indices in [0, 24)"),
        (lambda lp: lp.tell(-1, 0.0), "indices: expected pool indices in [0, 24)"),
        (lambda lp: lp.tell([1.5], [0.0]), "indices: expected integer pool indices"),
        (lambda lp: lp.tell([2, 2], [0.0, 1.0]), "indices: expected no repeats"),
        (lambda lp: lp.tell(3, 0.0).tell([4, 3], [0, 1]), "indices: expected unlabelled"),
        (lambda lp: lp.tell([1, 2], [0.0]), "y: expected shape (2,) or (2, 1)"),
        (lambda lp: lp.tell(1, np.nan), "y: expected finite values"),
        (lambda lp: lp.tell(1, "high"), "y: expected numbers"),
        (lambda lp: lp.suggest(0), "n: expected an integer in [1, 24]"),
        (lambda lp: lp.suggest(25), "n: expected an integer in [1, 24]"),
    ],
)
def test_bad_calls_raise_one_line_naming_the_argument(maml, call, needle):
    loop = maml.active([0.5], [0.4], X_POOL, "variance", num_samples=3)
    with pytest.raises(ValueError) as err:
        call(loop)
    assert str(err.value).startswith(needle.split(":")[0] + ":") and needle in str(err.value)
    assert "\n" not in str(err.value)
    assert np.isfinite(np.asarray(loop.posterior.phi)).all()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (([[0.5, 1.0]], [0.4], X_POOL), "x_support: expected shape (K, 1)"),
        (([0.5], [0.4, 0.1], X_POOL), "y_support: expected shape (1,) or (1, 1)"),
        (([0.5], [np.inf], X_POOL), "y_support: expected finite values"),
        (([0.5], [0.4], X_POOL[None, :, None]), "x_pool: expected shape (P, 1)"),
        (([0.5], [0.4], X_POOL[:0]), "x_pool: expected at least one candidate"),
        (([0.5], [0.4], X_POOL, "curiosity"), "acquisition: expected one of"),
        ((None, [0.4], X_POOL), "y_support: expected no labels"),
    ],
)
def test_bad_loops_are_refused_with_one_line(maml, args, needle):
    with pytest.raises(ValueError, match="^" + needle.replace("(", r"\(").replace(")", r"\)")):
        maml.active(*args)


def test_a_cost_ranks_by_information_per_unit_cost(ref):
    """score / cost, best first: a candidate ten times dearer must be ten times as
    informative; equal costs change nothing; fantasised batches honour the cost too."""
    loop = _loop(ref, "bald")
    scores = loop.scores
    np.testing.assert_array_equal(loop.suggest(5, cost=np.full(24, 3.0)), loop.suggest(5))
    cost = np.ones(24)
    cost[int(np.argmax(scores))] = 1e6  # the most informative point, priced out
    got = loop.suggest(5, cost=cost)
    np.testing.assert_array_equal(got, np.argsort(-(scores / cost), kind="stable")[:5])
    assert int(np.argmax(scores)) not in got.tolist()
    batch = loop.suggest(3, fantasize=True, cost=cost)
    assert len(set(batch.tolist())) == 3 and int(np.argmax(scores)) not in batch.tolist()


@pytest.mark.parametrize(
    ("cost", "needle"),
    [
        (np.ones(5), r"cost: expected one per pool point, shape \(24,\)"),
        (2.0, r"cost: expected one per pool point"),
        (np.r_[np.ones(23), 0.0], "cost: expected positive finite costs, got 0.0 at pool index 23"),
        (np.r_[np.nan, np.ones(23)], "cost: expected positive finite costs, got nan at pool"),
    ],
)
def test_a_bad_cost_is_refused_with_one_line(ref, cost, needle):
    with pytest.raises(ValueError, match=needle):
        _loop(ref, "bald").suggest(2, cost=cost)


def test_a_cost_needs_non_negative_scores():
    """A differential entropy can be negative: score / cost would then prefer the dearest."""
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(24), 8)
    x = rng.normal(size=(g.size, 2))
    y = rng.normal(1.0, 0.5, 24)[g] * x[:, 0] + rng.normal(0, 0.01, g.size)  # nearly exact
    fitted = bm.fit("linear", "reference", data=from_groups(x, y, g))
    xs = np.array([[0.1, 0.2], [0.3, -0.1]], np.float32)
    pool = np.random.default_rng(1).normal(size=(6, 2)).astype(np.float32) * 0.1
    loop = fitted.active(xs, np.array([0.1, 0.2], np.float32), pool, "entropy",
                         key=jax.random.PRNGKey(0), num_samples=50)  # fmt: skip
    assert np.all(loop.scores < 0)  # a predictive sd far below 1/√(2πe) standardised units
    with pytest.raises(ValueError, match="needs non-negative scores.*use 'bald' or 'variance'"):
        loop.suggest(2, cost=np.ones(6))
