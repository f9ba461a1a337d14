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
- **The linear mixed model** of a statistician (:func:`fit_mixed_model`): the same model
  class, ``y = [x, 1] β + z b_g + ε`` with random effects ``b_g ~ N(0, G)`` on the intercept
  and every feature, fitted by statsmodels' ``MixedLM`` (REML) rather than our EM. Its
  predictive for a new group is the conditional (BLUP) Gaussian, the formula above with
  ``m = β`` and ``S = G`` (zero rows and columns for columns without a random effect), written
  in the form that needs no ``S⁻¹``:
  ``μ_n = m + SΦᵀ(ΦSΦᵀ + σ²I)⁻¹(y − Φm)``, ``Σ_n = S − SΦᵀ(ΦSΦᵀ + σ²I)⁻¹ΦS``.

All work in whatever units they are given (the runs' standardised units) on ``Dy = 1``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

_INSTALL_HINT = 'pip install "bayesmeta[data]"'


class LinearBaselines(NamedTuple):
    """Fitted parameters: pooled ``w (D+1,)``, ``noise_var``; empirical-Bayes prior
    ``m (D+1,)``, ``S (D+1, D+1)`` and ``eb_noise_var``."""

    w: np.ndarray
    noise_var: float
    m: np.ndarray
    S: np.ndarray
    eb_noise_var: float


@dataclass(frozen=True)
class MixedModel:
    """A fitted linear mixed model (:func:`fit_mixed_model`) on the design ``[x, 1]``.

    Attributes
    ----------
    beta : ndarray (D+1,)
        Fixed effects (the features' slopes, then the intercept).
    G : ndarray (D+1, D+1)
        Random-effects covariance on the same columns; rows and columns of columns without a
        random effect are zero.
    noise_var : float
        Residual variance σ².
    structure : str
        The random-effects structure that was fitted: ``"full"`` (intercept and every slope,
        unstructured covariance), ``"diagonal"`` (the same effects, independent),
        ``"within"`` (slopes only on the features that vary within some group, unstructured)
        or ``"intercept"`` (random intercept only).
    random : tuple of int
        The design columns with a random effect (``D`` is the intercept).
    reml : bool
        Whether the variance components are REML estimates.
    tried : list of dict
        Each structure tried in order: its name, whether it was kept, and why a rejected one
        failed (the exception or the convergence warning); the kept one lists the warnings it
        gave (e.g. an estimate on the boundary, which does not affect the predictive).
    """

    beta: np.ndarray
    G: np.ndarray
    noise_var: float
    structure: str
    random: tuple[int, ...]
    reml: bool = True
    tried: list = field(default_factory=list)


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


#: Random-effects structures in the order :func:`fit_mixed_model` tries them.
STRUCTURES = ("full", "diagonal", "within", "intercept")


def _import_mixedlm():
    try:
        from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams
    except ImportError as err:
        raise ImportError(
            f"the mixed-model baseline needs the optional package statsmodels: {_INSTALL_HINT}"
        ) from err
    return MixedLM, MixedLMParams


def _random_columns(structure: str, phi: np.ndarray, groups: np.ndarray) -> tuple[int, ...]:
    """The design columns with a random effect under ``structure`` (the intercept is last)."""
    d = phi.shape[1]
    if structure in ("full", "diagonal"):
        return tuple(range(d))
    if structure == "intercept":
        return (d - 1,)
    # "within": a slope on a feature that is constant inside every group is confounded with
    # the random intercept (only their sum per group is seen), so it gets none
    order = np.argsort(groups, kind="stable")
    g_sorted, p_sorted = groups[order], phi[order, :-1]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    varies = np.zeros(d - 1, bool)
    for a, b in zip(starts, np.r_[starts[1:], len(g_sorted)], strict=True):
        varies |= np.ptp(p_sorted[a:b], 0) > 0
    return (*np.flatnonzero(varies).tolist(), d - 1)


def _fit_structure(y, phi, groups, structure, reml, maxiter, start):
    """One structure's MixedLM fit from two starting points, statsmodels' own (``G = σ² I``)
    and the EM estimate ``start`` restricted to the structure (nlme starts its optimiser from
    EM iterations the same way); the converged fit with the higher (REML) log-likelihood is
    kept, because statsmodels' optimiser can report convergence at a poor point from its own
    start. Returns ``(beta, G (D+1, D+1), σ², columns, start name, warnings)`` or raises when
    no start gave a converged fit with finite, valid estimates."""
    MixedLM, MixedLMParams = _import_mixedlm()
    cols = list(_random_columns(structure, phi, groups))
    d, q = phi.shape[1], len(cols)
    free = None
    if structure == "diagonal" and q > 1:
        free = MixedLMParams.from_components(fe_params=np.ones(d), cov_re=np.eye(q))
    model = MixedLM(y, phi, groups, exog_re=phi[:, cols])
    S0 = np.asarray(start.S, np.float64)[np.ix_(cols, cols)] / start.eb_noise_var
    if structure == "diagonal":
        S0 = np.diag(np.diag(S0))
    starts = {
        "statsmodels": None,
        "em": MixedLMParams.from_components(fe_params=np.asarray(start.m), cov_re=S0),
    }
    best, failures, messages = None, [], set()
    for name, params in starts.items():
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = model.fit(
                    reml=reml,
                    free=free,
                    start_params=params,
                    method=["lbfgs", "bfgs"],
                    maxiter=maxiter,
                )
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as err:
            failures.append(f"{name} start: {type(err).__name__}: {err}")
            continue
        found = sorted({str(w.message) for w in caught})
        beta = np.asarray(res.fe_params, np.float64)
        G_re = np.atleast_2d(np.asarray(res.cov_re, np.float64))
        G_re = (G_re + G_re.T) / 2
        s2 = float(res.scale)
        if not res.converged:
            failures.append(
                f"{name} start: "
                + ("; ".join(m for m in found if "fail" in m) or "did not converge")
            )
        elif not (np.all(np.isfinite(beta)) and np.all(np.isfinite(G_re)) and np.isfinite(s2)):
            failures.append(f"{name} start: non-finite estimates")
        elif not np.isfinite(res.llf):
            # statsmodels can report convergence at a degenerate point whose log-likelihood
            # is +inf (seen with L-BFGS on a random intercept only); it would win every
            # comparison below
            failures.append(f"{name} start: non-finite log-likelihood {res.llf}")
        elif s2 <= 0 or np.linalg.eigvalsh(G_re).min() < -1e-8 * max(1.0, np.abs(G_re).max()):
            failures.append(f"{name} start: invalid variance estimates")
        elif best is None or res.llf > best[0]:
            best = (float(res.llf), beta, G_re, s2, name)
            messages = set(found)
    if best is None:
        raise RuntimeError("; ".join(failures))
    _, beta, G_re, s2, name = best
    G = np.zeros((d, d))
    G[np.ix_(cols, cols)] = G_re
    return beta, G, s2, tuple(cols), name, sorted(messages)


def fit_mixed_model(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    reml: bool = True,
    structures: tuple[str, ...] = STRUCTURES,
    maxiter: int = 500,
    start: LinearBaselines | None = None,
) -> MixedModel:
    """Fit the linear mixed model ``y = [x, 1] β + [x, 1] b_g + ε``, ``b_g ~ N(0, G)``,
    ``ε ~ N(0, σ²)``, on training rows ``x (N, Dx)``, ``y (N,)`` or ``(N, 1)``, one group id
    per row, by statsmodels' ``MixedLM``.

    REML (the default, as in lme4 and statsmodels) rather than ML: ML's variance components
    ignore the degrees of freedom spent on β and come out too small with few training groups
    (Cigar has about thirty states for five random effects), and G and σ² set the width of
    every new group's predictive. The per-group empirical-Bayes baseline is the ML fit of the
    same model, so the two differ only by the estimator.

    ``structures`` are tried in order (default :data:`STRUCTURES`): random intercept and
    slopes with a full covariance, then independent random effects, then slopes only on the
    features that vary within groups, then a random intercept only. The first whose fit
    converges to finite, valid estimates is kept; :attr:`MixedModel.structure` and
    :attr:`MixedModel.tried` record which and why the others were rejected.

    Each structure is optimised from statsmodels' default start and from the EM estimate
    ``start`` (:func:`fit_linear_baselines`; computed here with 50 EM iterations when not
    given), keeping the converged fit with the higher log-likelihood.

    Raises
    ------
    ImportError
        When statsmodels is not installed.
    RuntimeError
        When no structure could be fitted.
    """
    _import_mixedlm()
    for structure in structures:
        if structure not in STRUCTURES:
            raise ValueError(f"structures: expected names from {STRUCTURES}, got {structure!r}")
    y = np.asarray(y, np.float64).reshape(-1)
    phi = _design(x)
    groups = np.asarray(groups)
    if start is None:
        start = fit_linear_baselines(x, y, groups, iterations=50)
    tried = []
    for structure in structures:
        try:
            beta, G, s2, cols, began, messages = _fit_structure(
                y, phi, groups, structure, reml, maxiter, start
            )
        except RuntimeError as err:
            tried.append({"structure": structure, "kept": False, "reason": str(err)})
            continue
        tried.append({"structure": structure, "kept": True, "start": began, "warnings": messages})
        return MixedModel(beta, G, s2, structure, tuple(int(c) for c in cols), reml, tried)
    raise RuntimeError(
        "no random-effects structure could be fitted: "
        + "; ".join(f"{t['structure']}: {t['reason']}" for t in tried)
    )


def _gaussian_predictive(m, S, s2, ps, ys, mask, pq) -> tuple[np.ndarray, np.ndarray]:
    """Predictive means and variances ``(T, Q)`` of ``y = φᵀw + ε``, ``w ~ N(m, S)``, given
    support rows (masked rows dropped), in the covariance form that allows a singular S."""
    t_n, q_n = pq.shape[:2]
    mean, var = np.empty((t_n, q_n)), np.empty((t_n, q_n))
    for t in range(t_n):
        keep = mask[t] > 0
        P, r = ps[t][keep], ys[t][keep] - ps[t][keep] @ m
        mu, cov = m, S
        if P.shape[0]:
            SP = S @ P.T  # (D, K)
            gain = np.linalg.solve(P @ SP + s2 * np.eye(P.shape[0]), SP.T).T  # (D, K)
            mu = m + gain @ r
            cov = S - gain @ SP.T
            cov = (cov + cov.T) / 2
        mean[t] = pq[t] @ mu
        var[t] = s2 + np.maximum(np.einsum("qi,ij,qj->q", pq[t], cov, pq[t]), 0.0)
    return mean, var


def baseline_predictive(
    fit: LinearBaselines,
    x_support: np.ndarray,
    y_support: np.ndarray,
    mask_support: np.ndarray,
    x_query: np.ndarray,
    mixed: MixedModel | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The baselines' Gaussian predictives of the query points: ``{name: (mean (T, Q),
    variance (T, Q))}`` for ``"pooled_linear"``, ``"eb_linear"`` and, when ``mixed`` is
    given, ``"mixed_model"``; support rows with mask 0 are ignored (all masked, or K = 0:
    the marginal predictive of a new group)."""
    ps, pq = _design(x_support), _design(x_query)
    ys = np.asarray(y_support, np.float64).reshape(ps.shape[:2])
    mask = np.asarray(mask_support, np.float64).reshape(ps.shape[:2])
    pooled = (pq @ fit.w, np.full(pq.shape[:2], fit.noise_var))
    out = {
        "pooled_linear": pooled,
        "eb_linear": _gaussian_predictive(fit.m, fit.S, fit.eb_noise_var, ps, ys, mask, pq),
    }
    if mixed is not None:
        out["mixed_model"] = _gaussian_predictive(
            mixed.beta, mixed.G, mixed.noise_var, ps, ys, mask, pq
        )
    return out


def baseline_log_predictive(
    fit: LinearBaselines,
    x_support: np.ndarray,
    y_support: np.ndarray,
    mask_support: np.ndarray,
    x_query: np.ndarray,
    y_query: np.ndarray,
    mixed: MixedModel | None = None,
) -> dict[str, np.ndarray]:
    """``{"pooled_linear": (T, Q), "eb_linear": (T, Q)}`` log predictive densities of the
    query points, with ``"mixed_model"`` when a fitted :class:`MixedModel` is passed; support
    rows with mask 0 are ignored."""
    pred = baseline_predictive(fit, x_support, y_support, mask_support, x_query, mixed)
    yq = np.asarray(y_query, np.float64).reshape(np.shape(x_query)[:2])
    return {
        name: -0.5 * (np.log(2 * np.pi * var) + (yq - mean) ** 2 / var)
        for name, (mean, var) in pred.items()
    }


__all__ = [
    "STRUCTURES",
    "LinearBaselines",
    "MixedModel",
    "baseline_log_predictive",
    "baseline_predictive",
    "fit_linear_baselines",
    "fit_mixed_model",
]
