"""The linear baselines against float64 closed forms computed another way."""

from __future__ import annotations

import numpy as np
import pytest

from bayesmeta.evaluate.baselines import baseline_log_predictive, fit_linear_baselines


def _groups(num_groups=40, seed=0):
    rng = np.random.default_rng(seed)
    x, y, g = [], [], []
    for i in range(num_groups):
        w = rng.normal([1.0, -0.5], [0.8, 0.3])
        n = int(rng.integers(6, 15))
        xi = rng.normal(size=(n, 1))
        x.append(xi)
        y.append(w[0] * xi[:, 0] + w[1] + rng.normal(0, 0.4, n))
        g.append(np.full(n, i))
    return np.concatenate(x), np.concatenate(y), np.concatenate(g)


def _marginal_ll(fit_m, fit_S, s2, x, y, g):
    total = 0.0
    for lab in np.unique(g):
        r = g == lab
        P = np.concatenate([x[r], np.ones((r.sum(), 1))], 1)
        cov = P @ fit_S @ P.T + s2 * np.eye(r.sum())
        d = y[r] - P @ fit_m
        total += -0.5 * (np.linalg.slogdet(2 * np.pi * cov)[1] + d @ np.linalg.solve(cov, d))
    return total


@pytest.fixture(scope="module")
def fitted():
    x, y, g = _groups()
    return fit_linear_baselines(x, y, g), (x, y, g)


def test_pooled_is_least_squares_and_eb_maximises_the_marginal_likelihood(fitted):
    fit, (x, y, g) = fitted
    A = np.concatenate([x, np.ones((x.shape[0], 1))], 1)
    np.testing.assert_allclose(fit.w, np.linalg.solve(A.T @ A, A.T @ y), rtol=1e-10)
    best = _marginal_ll(fit.m, fit.S, fit.eb_noise_var, x, y, g)
    for dm, sS, ss in [((0.05, 0), 1, 1), ((0, -0.05), 1, 1), ((0, 0), 1.1, 1), ((0, 0), 0.9, 1),
                       ((0, 0), 1, 1.05), ((0, 0), 1, 0.95)]:  # fmt: skip
        other = _marginal_ll(fit.m + np.array(dm), fit.S * sS, fit.eb_noise_var * ss, x, y, g)
        assert best > other
    assert fit.eb_noise_var == pytest.approx(0.16, rel=0.3)  # the simulated noise variance


def test_eb_predictive_is_the_gaussian_conditional_of_query_given_support(fitted):
    fit, _ = fitted
    xs, ys, gs = _groups(3, seed=5)
    k = 4
    x_s = np.stack([xs[gs == i][:k] for i in range(3)])
    y_s = np.stack([ys[gs == i][:k] for i in range(3)])
    x_q = np.stack([xs[gs == i][k : k + 2] for i in range(3)])
    y_q = np.stack([ys[gs == i][k : k + 2] for i in range(3)])
    mask = np.ones((3, k))
    mask[1, -1] = 0  # a padded support row is ignored
    lp = baseline_log_predictive(fit, x_s, y_s, mask, x_q, y_q)
    for t in range(3):
        keep = mask[t] > 0
        P = np.concatenate([x_s[t][keep], np.ones((keep.sum(), 1))], 1)
        Q = np.concatenate([x_q[t], np.ones((2, 1))], 1)
        s2 = fit.eb_noise_var
        css = P @ fit.S @ P.T + s2 * np.eye(keep.sum())
        cqs = Q @ fit.S @ P.T
        mean = Q @ fit.m + cqs @ np.linalg.solve(css, y_s[t][keep] - P @ fit.m)
        var = np.diag(Q @ fit.S @ Q.T + s2 * np.eye(2) - cqs @ np.linalg.solve(css, cqs.T))
        want = -0.5 * (np.log(2 * np.pi * var) + (y_q[t] - mean) ** 2 / var)
        np.testing.assert_allclose(lp["eb_linear"][t], want, rtol=1e-8)
    # with varying slopes, using the support set beats ignoring the groups
    assert lp["eb_linear"].mean() > lp["pooled_linear"].mean()
