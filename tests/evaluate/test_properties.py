"""Property-based tests of the evaluators (hypothesis) on random shapes and values.

Ranges (ECE, MCE, coverage, accuracy in [0, 1]; Brier in [0, 2]; calibration error in
[0, 0.5]), orderings (MCE >= ECE, coverage non-decreasing in the level), invariance to
permuting tasks and points, and agreement with direct definitions (Brier, accuracy, a
posterior of identical samples at the true function).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bayesmeta.evaluate import evaluate
from bayesmeta.evaluate import metrics as M
from bayesmeta.posterior import TaskPosterior

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
FEW = settings(max_examples=15, deadline=None, derandomize=True)


# -- strategies -------------------------------------------------------------------------------
@st.composite
def classification_data(draw, max_t=4, max_q=6, max_c=5):
    """``probs (T, Q, C)`` on the simplex (some rows one-hot or uniform) and labels."""
    t = draw(st.integers(1, max_t))
    q = draw(st.integers(1, max_q))
    c = draw(st.integers(2, max_c))
    raw = draw(
        hnp.arrays(np.float64, (t, q, c), elements=st.floats(0.0, 1.0, allow_subnormal=False))
    )
    kind = draw(st.sampled_from(["random", "sharp", "onehot", "uniform"]))
    if kind == "sharp":
        raw = raw**8
    elif kind == "onehot":
        raw = np.eye(c)[raw.argmax(-1)]
    elif kind == "uniform":
        raw = np.ones_like(raw)
    raw = raw + 1e-12  # no all-zero rows
    probs = raw / raw.sum(-1, keepdims=True)
    labels = draw(hnp.arrays(np.int64, (t, q), elements=st.integers(0, c - 1)))
    return probs, labels


pits = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=8),
    elements=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.5, 1.0])),
)


# -- classification metrics ---------------------------------------------------------------------
@SETTINGS
@given(classification_data(), st.integers(1, 20))
def test_classification_metrics_ranges_and_order(data, n_bins):
    probs, labels = data
    acc, brier = M.accuracy(probs, labels), M.brier(probs, labels)
    ece, mce = M.ece(probs, labels, n_bins), M.mce(probs, labels, n_bins)
    for v in (acc, ece, mce):
        assert 0.0 <= v <= 1.0
    assert 0.0 <= brier <= 2.0 + 1e-12
    assert ece <= mce + 1e-12  # a weighted mean of the bin gaps is at most their maximum
    r = M.reliability_curve(probs, labels, n_bins)
    assert r["count"].sum() == labels.size and len(r["count"]) == n_bins


@SETTINGS
@given(classification_data())
def test_classification_metrics_match_definitions(data):
    probs, labels = data
    p, y = probs.reshape(-1, probs.shape[-1]), labels.ravel()
    n, c = p.shape
    want_brier = (
        sum(sum((p[i, k] - (1.0 if k == y[i] else 0.0)) ** 2 for k in range(c)) for i in range(n))
        / n
    )
    assert M.brier(probs, labels) == pytest.approx(want_brier, abs=1e-12)
    assert M.accuracy(probs, labels) == pytest.approx(np.mean(p.argmax(-1) == y))
    # One bin: ECE = |accuracy - mean confidence|
    assert M.ece(probs, labels, 1) == pytest.approx(
        abs(M.accuracy(probs, labels) - p.max(-1).mean()), abs=1e-12
    )


@SETTINGS
@given(classification_data(), st.randoms(use_true_random=False))
def test_classification_metrics_invariant_to_permuting_tasks_and_points(data, rnd):
    probs, labels = data
    t, q = labels.shape
    tasks = list(range(t))
    rnd.shuffle(tasks)
    flat = list(range(t * q))
    rnd.shuffle(flat)
    perms = [
        (probs[tasks], labels[tasks]),
        (probs.reshape(t * q, -1)[flat], labels.ravel()[flat]),
    ]
    for fn in (M.accuracy, M.brier, M.ece, M.mce):
        want = fn(probs, labels)
        for pp, ll in perms:
            assert fn(pp, ll) == pytest.approx(want, abs=1e-12)


@FEW
@given(classification_data())
def test_certain_correct_classifier_is_perfect(data):
    probs, _ = data
    labels = probs.argmax(-1)
    onehot = np.eye(probs.shape[-1])[labels]
    assert M.accuracy(onehot, labels) == 1.0
    assert M.brier(onehot, labels) == 0.0
    assert M.ece(onehot, labels) == 0.0 and M.mce(onehot, labels) == 0.0


# -- regression metrics -----------------------------------------------------------------------
@SETTINGS
@given(pits)
def test_pit_metrics_ranges_and_monotone_coverage(pit):
    ce = M.regression_calibration_error(pit)
    assert 0.0 <= ce <= 0.5 + 1e-12
    levels = np.linspace(0.01, 0.99, 25)
    cov = M.coverage_from_pit(pit, levels)
    values = [cov[M.level_key(p)] for p in levels]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))  # nested intervals
    lv, observed = M.calibration_curve(pit)
    assert np.all(np.diff(observed) >= 0) and np.all((observed >= 0) & (observed <= 1))
    edges, density = M.pit_histogram(pit, bins=7)
    assert np.sum(density * np.diff(edges)) == pytest.approx(1.0)


@SETTINGS
@given(pits, st.randoms(use_true_random=False))
def test_pit_metrics_invariant_to_order(pit, rnd):
    order = list(range(pit.size))
    rnd.shuffle(order)
    shuffled = pit.ravel()[order]
    assert M.regression_calibration_error(shuffled) == pytest.approx(
        M.regression_calibration_error(pit), abs=1e-12
    )
    assert M.coverage_from_pit(shuffled) == M.coverage_from_pit(pit)


@SETTINGS
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
        elements=st.floats(-1e6, 1e6),
    )
)
def test_nll_and_mse_definitions(lp):
    assert M.nll(lp) == pytest.approx(-lp.mean(), rel=1e-12, abs=1e-12)
    assert math.isfinite(M.nll(lp))
    assert M.mse(lp, lp) == 0.0
    assert M.mse(lp, np.zeros_like(lp)) == pytest.approx(np.mean(lp**2), rel=1e-12)


# -- evaluate on random posteriors --------------------------------------------------------------
def _line(p, x):
    """(N, 1) -> (N, 1): p[0] + p[1] x."""
    return p[0] + p[1] * x


def _logits(p, x):
    """(N, 1) -> (N, 3) logits."""
    return x * p[None, :3] + p[None, 3:]


SHAPES = [(1, 1, 1), (2, 3, 4), (3, 5, 2)]  # (T, S, Q): few, so that jit compiles stay cached


@st.composite
def posterior_data(draw, categorical=False):
    t, s, q = draw(st.sampled_from(SHAPES))
    finite = st.floats(-3.0, 3.0, width=32)
    phi = draw(hnp.arrays(np.float32, (t, s, 6 if categorical else 2), elements=finite))
    x = draw(hnp.arrays(np.float32, (t, q, 1), elements=finite))
    if categorical:
        y = draw(hnp.arrays(np.int32, (t, q), elements=st.integers(0, 2)))
        post = TaskPosterior.from_samples(jnp.asarray(phi), 1.0, _logits, "categorical")
    else:
        y = draw(hnp.arrays(np.float32, (t, q, 1), elements=finite))
        noise = draw(hnp.arrays(np.float32, (t, s), elements=st.floats(0.125, 2.0, width=32)))
        post = TaskPosterior.from_samples(jnp.asarray(phi), jnp.asarray(noise), _line)
    return post, x, y


def _permuted(post, x, y, perm):
    p = TaskPosterior.from_samples(
        post.phi[perm], post.noise_std[perm], post.apply, post.likelihood, post.method
    )
    return p, x[perm], y[perm]


@FEW
@given(posterior_data(), st.randoms(use_true_random=False))
def test_evaluate_regression_ranges_and_task_permutation(data, rnd):
    post, x, y = data
    rep = evaluate(post, x, y)
    assert math.isfinite(rep["nll"]) and rep["mse"] >= 0.0
    assert 0.0 <= rep["calibration_error"] <= 0.5 + 1e-9
    assert all(0.0 <= v <= 1.0 for v in rep["coverage"].values())
    cov = [rep["coverage"][k] for k in ("0.5", "0.8", "0.9", "0.95")]
    assert cov == sorted(cov)
    perm = list(range(post.num_tasks))
    rnd.shuffle(perm)
    rep2 = evaluate(*_permuted(post, x, y, np.asarray(perm)))
    for k in ("nll", "mse", "calibration_error"):
        assert rep2[k] == pytest.approx(rep[k], rel=1e-5, abs=1e-6)
    assert rep2["coverage"] == rep["coverage"]


@FEW
@given(posterior_data(categorical=True), st.randoms(use_true_random=False))
def test_evaluate_classification_ranges_and_task_permutation(data, rnd):
    post, x, y = data
    rep = evaluate(post, x, y)
    assert math.isfinite(rep["nll"]) and rep["nll"] >= -1e-6  # probabilities <= 1
    for k in ("accuracy", "ece", "mce"):
        assert 0.0 <= rep[k] <= 1.0
    assert 0.0 <= rep["brier"] <= 2.0 + 1e-6 and rep["ece"] <= rep["mce"] + 1e-9
    perm = list(range(post.num_tasks))
    rnd.shuffle(perm)
    rep2 = evaluate(*_permuted(post, x, y, np.asarray(perm)))
    for k in ("nll", "accuracy", "brier", "ece", "mce"):
        assert rep2[k] == pytest.approx(rep[k], rel=1e-5, abs=1e-6)


@FEW
@given(posterior_data())
def test_identical_samples_at_the_truth(data):
    """Every sample at the true parameters, noise-free targets at the true function: MSE 0,
    every PIT 1/2 (so every central interval covers), NLL = log(σ √(2π))."""
    post, x, _ = data
    true_phi = post.phi[:, :1]  # (T, 1, P): one parameter vector per task
    phi = jnp.repeat(true_phi, post.num_samples, axis=1)
    sigma = 0.7
    truth = TaskPosterior.from_samples(phi, sigma, _line)
    y = jax.vmap(_line)(true_phi[:, 0], jnp.asarray(x))
    rep = evaluate(truth, x, y)
    assert rep["mse"] <= 1e-10
    assert all(v == 1.0 for v in rep["coverage"].values())
    assert rep["nll"] == pytest.approx(math.log(sigma * math.sqrt(2 * math.pi)), rel=1e-5)
    pit = np.asarray(truth.cdf(jnp.asarray(x), y))
    np.testing.assert_allclose(pit, 0.5, atol=1e-6)
