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


# -- the linear mixed model (statsmodels MixedLM) -------------------------------------------

BETA = np.array([1.0, -0.5, 0.3])  # two slopes, then the intercept
_L = np.array([[0.6, 0.0, 0.0], [0.2, 0.3, 0.0], [-0.3, 0.1, 0.5]])
G_TRUE = _L @ _L.T
S2_TRUE = 0.25


def _mixed_groups(num_groups, seed):
    """Rows of the random-intercept-and-slope model y = [x, 1](β + b_g) + ε."""
    rng = np.random.default_rng(seed)
    x, y, g = [], [], []
    for i in range(num_groups):
        n = int(rng.integers(6, 12))
        xi = rng.normal(size=(n, 2))
        w = BETA + _L @ rng.normal(size=3)
        x.append(xi)
        y.append(np.c_[xi, np.ones(n)] @ w + rng.normal(0, np.sqrt(S2_TRUE), n))
        g.append(np.full(n, i))
    return np.concatenate(x), np.concatenate(y), np.concatenate(g)


def _tasks(x, y, g, k):
    """One task per group: the first k rows as support, the next 3 as queries."""
    labels = np.unique(g)
    xs = np.stack([x[g == i][:k] for i in labels])
    ys = np.stack([y[g == i][:k] for i in labels])
    xq = np.stack([x[g == i][k : k + 3] for i in labels])
    yq = np.stack([y[g == i][k : k + 3] for i in labels])
    return xs, ys, np.ones(xs.shape[:2]), xq, yq


@pytest.fixture(scope="module")
def mixed():
    pytest.importorskip("statsmodels")
    from bayesmeta.evaluate.baselines import fit_mixed_model

    x, y, g = _mixed_groups(250, seed=1)
    eb = fit_linear_baselines(x, y, g)
    return fit_mixed_model(x, y, g, start=eb), eb


def test_mixed_model_recovers_the_simulated_parameters(mixed):
    mm, _ = mixed
    assert mm.structure == "full" and mm.random == (0, 1, 2) and mm.reml
    assert mm.tried[-1]["kept"] and len(mm.tried) == 1
    np.testing.assert_allclose(mm.beta, BETA, atol=0.12)
    np.testing.assert_allclose(mm.G, G_TRUE, atol=0.1)
    assert mm.noise_var == pytest.approx(S2_TRUE, rel=0.1)


def test_mixed_model_predictive_matches_the_eb_baseline(mixed):
    mm, eb = mixed
    xs, ys, ms, xq, yq = _tasks(*_mixed_groups(60, seed=2), k=3)
    lp = baseline_log_predictive(eb, xs, ys, ms, xq, yq, mixed=mm)
    assert set(lp) == {"pooled_linear", "eb_linear", "mixed_model"}
    # the same model class by two estimators (REML, ML by EM): nearly the same predictive
    assert abs(lp["mixed_model"].mean() - lp["eb_linear"].mean()) < 0.01
    assert lp["mixed_model"].mean() > lp["pooled_linear"].mean()
    # without a mixed model the output is what it always was
    assert set(baseline_log_predictive(eb, xs, ys, ms, xq, yq)) == {"pooled_linear", "eb_linear"}


def test_mixed_model_with_no_support_rows_is_the_marginal(mixed):
    from bayesmeta.evaluate.baselines import baseline_predictive

    mm, eb = mixed
    _, _, _, xq, yq = _tasks(*_mixed_groups(4, seed=3), k=3)
    P = np.concatenate([xq, np.ones(xq.shape[:2] + (1,))], -1)
    mean = P @ mm.beta
    var = mm.noise_var + np.einsum("tqi,ij,tqj->tq", P, mm.G, P)
    want = -0.5 * (np.log(2 * np.pi * var) + (yq - mean) ** 2 / var)
    empty = np.zeros((4, 0, 2))
    lp = baseline_log_predictive(eb, empty, np.zeros((4, 0)), np.zeros((4, 0)), xq, yq, mixed=mm)
    np.testing.assert_allclose(lp["mixed_model"], want, rtol=1e-10)
    # every support row masked out is the same as none
    xs, ys = np.ones((4, 3, 2)), np.ones((4, 3))
    pred = baseline_predictive(eb, xs, ys, np.zeros((4, 3)), xq, mixed=mm)["mixed_model"]
    np.testing.assert_allclose(pred[0], mean, rtol=1e-10)
    np.testing.assert_allclose(pred[1], var, rtol=1e-10)


def test_mixed_model_falls_back_when_the_full_structure_fails(monkeypatch):
    pytest.importorskip("statsmodels")
    from statsmodels.regression.mixed_linear_model import MixedLM

    from bayesmeta.evaluate.baselines import fit_mixed_model

    fit = MixedLM.fit

    def failing_full(self, *args, free=None, **kwargs):
        if self.k_re > 1 and free is None:  # an unstructured covariance: refuse
            raise np.linalg.LinAlgError("Singular matrix")
        return fit(self, *args, free=free, **kwargs)

    monkeypatch.setattr(MixedLM, "fit", failing_full)
    x, y, g = _mixed_groups(60, seed=4)
    mm = fit_mixed_model(x, y, g)
    assert mm.structure == "diagonal" and mm.random == (0, 1, 2)
    assert [t["structure"] for t in mm.tried] == ["full", "diagonal"]
    assert "LinAlgError" in mm.tried[0]["reason"] and not mm.tried[0]["kept"]
    assert np.all(mm.G[~np.eye(3, dtype=bool)] == 0) and np.all(np.diag(mm.G) > 0)


def test_within_structure_leaves_out_slopes_of_group_constant_features():
    pytest.importorskip("statsmodels")
    from bayesmeta.evaluate.baselines import fit_mixed_model

    x, y, g = _mixed_groups(60, seed=4)
    x2 = np.c_[x[:, :1], g % 2]  # the second feature is constant inside every group
    mm2 = fit_mixed_model(x2, y, g, structures=("within",))
    assert mm2.structure == "within" and mm2.random == (0, 2)
    assert np.all(mm2.G[1] == 0) and np.all(mm2.G[:, 1] == 0)


def test_mixed_model_without_statsmodels_says_how_to_install(monkeypatch):
    import sys

    from bayesmeta.evaluate.baselines import fit_mixed_model

    monkeypatch.setitem(sys.modules, "statsmodels.regression.mixed_linear_model", None)
    x, y, g = _mixed_groups(5, seed=5)
    with pytest.raises(ImportError, match=r'pip install "bayesmeta\[data\]"'):
        fit_mixed_model(x, y, g)


def test_a_degenerate_fit_reported_as_converged_is_not_kept():
    """statsmodels' L-BFGS reports convergence at a point with log-likelihood +inf, G = 0 and
    a zero intercept on these rows (a random intercept only); the fit must be the proper
    optimum its default optimiser finds, from the EM start."""
    pytest.importorskip("statsmodels")
    from statsmodels.regression.mixed_linear_model import MixedLM

    from bayesmeta.evaluate.baselines import fit_mixed_model

    rng = np.random.default_rng(0)
    xs, ys, gs = [], [], []
    for g in range(25):
        w = np.array([1.0, -0.5, 0.3]) + rng.normal(0, 0.6, 3)
        n = int(rng.integers(3, 12))
        x = rng.normal(size=(n, 2))
        xs.append(x)
        ys.append(x @ w[:2] + w[2] + rng.normal(0, 0.3, n))
        gs.append(np.full(n, g))
    x, y, g = np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)
    phi = np.concatenate([x, np.ones((len(x), 1))], 1)
    lbfgs = MixedLM(y, phi, g, exog_re=phi[:, 2:]).fit(reml=True, method=["lbfgs"])
    assert not np.isfinite(lbfgs.llf)  # the trap this guards against is still there
    want = MixedLM(y, phi, g, exog_re=phi[:, 2:]).fit(reml=True)
    mm = fit_mixed_model(x, y, g, structures=("intercept",))
    np.testing.assert_allclose(mm.beta, want.fe_params, rtol=1e-4, atol=1e-5)
    assert mm.G[2, 2] == pytest.approx(float(np.asarray(want.cov_re).reshape(-1)[0]), rel=1e-3)
    assert mm.noise_var == pytest.approx(want.scale, rel=1e-4)
