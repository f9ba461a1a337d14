"""Linear baselines for grouped regression data, beside every method where no exact
reference exists.

- **Pooled linear regression** ignores groups: one ``y = [x, 1] w + ε`` fitted by least
  squares on every training row, ``ε ~ N(0, σ²)`` with σ² the residual variance; a new
  group's support set is not used. Its predictive is ``N([x, 1] ŵ, σ²)``.
- **Per-group Bayesian linear regression with an empirical-Bayes prior**: each group has its
  own ``w_g ~ N(m, S)`` with ``y = [x, 1] w_g + ε``, ``ε ~ N(0, σ²)``; ``(m, S, σ²)``
  maximise the training groups' marginal likelihood (EM for the linear mixed model, float64),
  and a new group's predictive given its support set is closed form:
  ``Σ_n = (S⁻¹ + ΦᵀΦ/σ²)⁻¹``, ``μ_n = Σ_n (S⁻¹ m + Φᵀy/σ²)``,
  ``p(y* | x*) = N(φ*ᵀ μ_n, σ² + φ*ᵀ Σ_n φ*)``.

Both work in whatever units they are given (the runs' standardised units) on ``Dy = 1``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LinearBaselines(NamedTuple):
    """Fitted parameters: pooled ``w (D+1,)``, ``noise_var``; empirical-Bayes prior
    ``m (D+1,)``, ``S (D+1, D+1)`` and ``eb_noise_var``."""

    w: np.ndarray
    noise_var: float
    m: np.ndarray
    S: np.ndarray
    eb_noise_var: float


def _design(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.concatenate([x, np.ones(x.shape[:-1] + (1,))], -1)


def fit_linear_baselines(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, iterations: int = 200
) -> LinearBaselines:
    """Fit both baselines on training rows ``x (N, Dx)``, ``y (N,)`` or ``(N, 1)``, one group
    id per row."""
    y = np.asarray(y, np.float64).reshape(-1)
    phi = _design(x)
    n, d = phi.shape
    w, *_ = np.linalg.lstsq(phi, y, rcond=None)
    noise_var = float(np.mean((y - phi @ w) ** 2))
    rows = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    m, S, s2 = w.copy(), np.eye(d), max(noise_var, 1e-6)
    for _ in range(iterations):
        S_inv = np.linalg.inv(S)
        mus, sigmas, resid = [], [], 0.0
        for r in rows:
            P, t = phi[r], y[r]
            cov = np.linalg.inv(S_inv + P.T @ P / s2)
            mu = cov @ (S_inv @ m + P.T @ t / s2)
            mus.append(mu)
            sigmas.append(cov)
            resid += float(np.sum((t - P @ mu) ** 2) + np.trace(P @ cov @ P.T))
        mus_a = np.stack(mus)
        m = mus_a.mean(0)
        dev = mus_a - m
        S = (dev.T @ dev + np.sum(sigmas, 0)) / len(rows) + 1e-9 * np.eye(d)
        s2 = max(resid / n, 1e-9)
    return LinearBaselines(w, noise_var, m, S, s2)


def baseline_log_predictive(
    fit: LinearBaselines,
    x_support: np.ndarray,
    y_support: np.ndarray,
    mask_support: np.ndarray,
    x_query: np.ndarray,
    y_query: np.ndarray,
) -> dict[str, np.ndarray]:
    """``{"pooled_linear": (T, Q), "eb_linear": (T, Q)}`` log predictive densities of the
    query points; support rows with mask 0 are ignored."""
    ps, pq = _design(x_support), _design(x_query)
    ys = np.asarray(y_support, np.float64).reshape(ps.shape[:2])
    yq = np.asarray(y_query, np.float64).reshape(pq.shape[:2])
    mask = np.asarray(mask_support, np.float64)

    def normal_logpdf(v, mean, var):
        return -0.5 * (np.log(2 * np.pi * var) + (v - mean) ** 2 / var)

    pooled = normal_logpdf(yq, pq @ fit.w, fit.noise_var)
    S_inv = np.linalg.inv(fit.S)
    eb = np.empty_like(yq)
    for t in range(ps.shape[0]):
        P = ps[t] * mask[t][:, None]
        cov = np.linalg.inv(S_inv + P.T @ P / fit.eb_noise_var)
        mu = cov @ (S_inv @ fit.m + P.T @ (ys[t] * mask[t]) / fit.eb_noise_var)
        var = fit.eb_noise_var + np.einsum("qi,ij,qj->q", pq[t], cov, pq[t])
        eb[t] = normal_logpdf(yq[t], pq[t] @ mu, var)
    return {"pooled_linear": pooled, "eb_linear": eb}


__all__ = ["LinearBaselines", "baseline_log_predictive", "fit_linear_baselines"]
