"""Calibrated intervals for regression, fitted on validation tasks (on grouped data: validation
groups) and applied to held-out ones: the regression analogue of temperature scaling and
split-conformal intervals over tasks.

**Variance scaling.** The predictive ``p(y | x, D)`` is widened (``s > 1``) or narrowed about
its mean ``m(x)``: ``y_s = m + s (y − m)`` with ``y ~ p``, so

    log p_s(y) = log p(m + (y − m) / s) − D_y log s,    F_s(y) = F(m + (y − m) / s),

and ``s`` minimises the validation tasks' NLL (:func:`fit_variance_scale`). For a continuous
likelihood only: a count's support does not stretch.

**Split-conformal intervals over tasks** (few-shot conformal prediction: Fisch, Schuster,
Jaakkola & Barzilay 2021; for grouped data Dunn, Wasserman & Ramdas 2022). The score of a query
point is ``r = |2 F(y) − 1|`` (how far out in the predictive's central intervals ``y`` lies,
with ``F`` the method's own predictive CDF, randomised where it is discrete). On ``n``
calibration tasks:

- ``"subsample"``: one query point per task, drawn at random (seeded); ``q̂`` is
  the ``⌈(1 − α)(n + 1)⌉``-th smallest of the ``n`` scores. For a new task exchangeable with
  the calibration tasks and a query point drawn at random from it, the central predictive
  interval of level ``q̂`` covers ``y`` with probability at least ``1 − α`` (finite-sample,
  whatever the method). With ``n < 1/α − 1`` there are too few tasks: ``q̂ = 1``, the whole
  line (``finite`` is False).
- ``"pooled"`` (default): every query point, each task weighted equally (a point of a task with
  ``n_t`` points weighs ``1 / n_t``); ``q̂`` the weighted ``(1 − α)(1 + 1/n)`` quantile. It
  uses all the points, and its guarantee is weaker: coverage at least ``1 − 2α`` (Dunn et al.
  2022), in practice close to ``1 − α``, and it varies far less from one calibration set to
  the next than one point per task does when there are few tasks.

The interval itself is the predictive's central interval of level ``q̂``,
``[F⁻¹((1 − q̂)/2), F⁻¹((1 + q̂)/2)]`` (:func:`central_interval`), so it keeps the method's
shape (skew, heteroscedasticity) and only its width is calibrated.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.evaluate.metrics import golden_section

#: Interval levels that are calibrated and reported.
LEVELS = (0.5, 0.9)


def _keep(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    return np.asarray(mask).astype(bool)


def _check_regression(posterior, what: str) -> None:
    if posterior.likelihood.classifier:
        raise ValueError(f"{what}: for regression; a classifier is calibrated by a temperature "
                         "(bayesmeta.evaluate.fit_temperature)")  # fmt: skip


def scaled_log_predictive(posterior, x, y, scale: float) -> jax.Array:
    """``log p_s(y | x, D)``, ``(T, N)``: the predictive widened about its mean by ``scale``."""
    m = posterior.mean(x)
    y = jnp.asarray(y)
    lp = posterior.log_predictive(x, m + (y - m) / scale)
    return lp - y.shape[-1] * math.log(scale)


def scaled_pit(posterior, x, y, scale: float) -> jax.Array:
    """``F_s(y)``, ``(T, N, Dy)``: the PIT under the widened predictive."""
    m = posterior.mean(x)
    return posterior.pit(x, m + (jnp.asarray(y) - m) / scale)


def fit_variance_scale(posterior, x, y, mask=None, bounds: tuple[float, float] = (0.05, 20.0)
                       ) -> float:  # fmt: skip
    """The scale ``s`` that minimises the mean NLL of ``p_s`` on validation query points.

    A grid over ``log s`` followed by a golden-section search in the best cell; the NLL of a
    scale family is smooth in ``log s``, so this finds its minimum within ``bounds`` to about
    1e-4 relative.

    Raises
    ------
    ValueError
        For a classifier, or a discrete likelihood (its support cannot be stretched).
    """
    _check_regression(posterior, "fit_variance_scale")
    keep = _keep(mask, np.shape(y)[:2])
    if getattr(posterior, "likelihood", "") == "generic":
        from bayesmeta.posterior import _generic_info

        if _generic_info(posterior, jnp.asarray(x))[0]:
            raise ValueError("fit_variance_scale: the predictive is discrete (counts); a "
                             "variance scale does not apply - use conformal intervals")  # fmt: skip
    m = np.asarray(posterior.mean(x))
    y = np.asarray(y, np.float32)

    def nll(log_s: float) -> float:
        s = math.exp(log_s)
        lp = np.asarray(posterior.log_predictive(x, (m + (y - m) / s).astype(np.float32)))
        return float(-(lp[keep]).mean() + y.shape[-1] * log_s)

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    grid = np.linspace(lo, hi, 41)
    values = [nll(v) for v in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    return float(math.exp(golden_section(nll, a, b, 30)))


def conformity_scores(posterior, x, y, mask=None, key=None) -> np.ndarray:
    """``|2 F(y) − 1|`` per query point, ``(T, N)`` (NaN where ``mask`` is 0), for ``Dy = 1``."""
    _check_regression(posterior, "conformity_scores")
    if np.shape(y)[-1] != 1:
        raise ValueError(
            f"y: conformal intervals are for one real target, got Dy={np.shape(y)[-1]}"
        )
    pit = np.asarray(posterior.pit(x, y, key=key) if key is not None else posterior.pit(x, y))
    r = np.abs(2.0 * pit[..., 0] - 1.0)
    return np.where(_keep(mask, r.shape), r, np.nan)


class Conformal(NamedTuple):
    """Calibrated central-interval levels: ``levels[α-level] = q̂`` (e.g. ``{"0.9": 0.97}``),
    how they were fitted (``method``, ``num_tasks``) and whether each is finite."""

    levels: dict[str, float]
    finite: dict[str, bool]
    method: str
    num_tasks: int

    def guarantee(self) -> str:
        if self.method == "subsample":
            return ("for a new task exchangeable with the calibration tasks and a random query "
                    "point of it, coverage >= the nominal level (finite-sample)")  # fmt: skip
        return "coverage >= 1 - 2(1 - nominal level) (Dunn et al. 2022); close to nominal"


def fit_conformal(scores: np.ndarray, levels=LEVELS, method: str = "pooled",
                  seed: int = 0) -> Conformal:  # fmt: skip
    """Split-conformal levels from the calibration tasks' scores ``(T, N)`` (NaN: padding).

    Parameters
    ----------
    scores : array (T, N)
        :func:`conformity_scores` of the calibration (validation) tasks.
    levels : sequence of float
        Nominal coverages ``1 − α``.
    method : {"subsample", "pooled"}
        See the module docstring for each one's guarantee.
    seed : int
        Which query point of each task ``"subsample"`` keeps.
    """
    if method not in ("subsample", "pooled"):
        raise ValueError(f"method: expected 'subsample' or 'pooled', got {method!r}")
    s = np.asarray(scores, np.float64)
    real = ~np.isnan(s)
    tasks = np.flatnonzero(real.any(1))
    n = int(tasks.size)
    if n == 0:
        raise ValueError("scores: expected at least one calibration task with a query point")
    out, finite = {}, {}
    if method == "subsample":
        rng = np.random.default_rng(seed)
        picked = np.array([s[t, rng.choice(np.flatnonzero(real[t]))] for t in tasks])
        picked.sort()
        for lv in levels:
            rank = math.ceil(float(lv) * (n + 1))
            finite[str(lv)] = rank <= n
            out[str(lv)] = float(picked[rank - 1]) if rank <= n else 1.0
    else:
        w = (real / real.sum(1, keepdims=True).clip(1))[real] / n
        v = s[real]
        order = np.argsort(v)
        v, cw = v[order], np.cumsum(w[order])
        for lv in levels:
            target = float(lv) * (1 + 1 / n)
            finite[str(lv)] = target <= 1.0
            i = int(np.searchsorted(cw, min(target, 1.0) - 1e-12))
            out[str(lv)] = float(v[min(i, v.size - 1)]) if target <= 1.0 else 1.0
    return Conformal(out, finite, method, n)


def conformal_coverage(scores: np.ndarray, conformal: Conformal) -> dict[str, float]:
    """Empirical coverage of the conformal intervals on held-out tasks' scores (NaN: padding):
    the fraction of query points with ``r ≤ q̂``."""
    s = np.asarray(scores, np.float64)
    real = ~np.isnan(s)
    return {lv: float((s[real] <= q + 1e-12).mean()) for lv, q in conformal.levels.items()}


class Calibration(NamedTuple):
    """What :meth:`Fitted.calibrate <bayesmeta.fitted.Fitted.calibrate>` fitted on validation
    tasks with ``k`` support points: the variance ``scale`` (None for a discrete likelihood)
    and the :class:`Conformal` levels."""

    scale: float | None
    conformal: Conformal
    k: int
    num_tasks: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (``run.json``'s ``calibration`` entries); :meth:`from_dict`
        reads it back."""
        c = self.conformal
        return {
            "scale": None if self.scale is None else float(self.scale),
            "conformal": {"levels": dict(c.levels), "finite": dict(c.finite),
                          "method": c.method, "num_tasks": int(c.num_tasks)},
            "k": int(self.k),
            "num_tasks": int(self.num_tasks),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        c = d["conformal"]
        conf = Conformal({str(k): float(v) for k, v in c["levels"].items()},
                         {str(k): bool(v) for k, v in c["finite"].items()},
                         str(c["method"]), int(c["num_tasks"]))  # fmt: skip
        scale = None if d.get("scale") is None else float(d["scale"])
        return cls(scale, conf, int(d["k"]), int(d["num_tasks"]))


def support_size(tasks: dict) -> int:
    """The number of support points of a task set: the largest real count over tasks."""
    xs = np.asarray(tasks["x_support"])
    mask = tasks.get("mask_support")
    if mask is None:
        return int(xs.shape[1])
    return int(np.asarray(mask).astype(bool).sum(1).max())


def stored_calibration(info: dict, tasks: dict) -> Calibration | None:
    """The calibration a run stored (``info["calibration"]``, one entry per support size, as
    :func:`bayesmeta.auto.fit_auto` writes it) for a task set with ``k`` support points: the
    entry fitted at ``k`` itself, else at the largest size below ``k``, else the smallest.
    None when the run stored none."""
    stored = info.get("calibration") if isinstance(info, dict) else None
    if not stored:
        return None
    ks = sorted(int(k) for k in stored)
    k = support_size(tasks)
    below = [j for j in ks if j <= k]
    pick = below[-1] if below else ks[0]
    return Calibration.from_dict(stored[str(pick)])


def calibrated_metrics(posterior, x, y, mask, calibration: Calibration,
                       log_jacobian: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """The report fields of a calibration applied to held-out tasks: ``recalibrated`` (the
    variance-scaled predictive's NLL, in the units ``log_jacobian`` converts to, and interval
    coverage) and ``conformal`` (the calibrated levels, their coverage and guarantee)."""
    from bayesmeta.evaluate.metrics import coverage_from_pit

    keep = _keep(mask, np.shape(y)[:2])
    out: dict[str, Any] = {}
    if calibration.scale is not None:
        lp = np.asarray(scaled_log_predictive(posterior, x, y, calibration.scale))
        pit = np.asarray(scaled_pit(posterior, x, y, calibration.scale))[keep][None]
        per_task = -np.where(keep, lp, 0.0).sum(1) / keep.sum(1).clip(1) + log_jacobian
        out["recalibrated"] = {
            "variance_scale": calibration.scale,
            "nll": float(-lp[keep].mean() + log_jacobian),
            "nll_per_task": per_task.tolist(),
            "coverage": coverage_from_pit(pit),
            "fitted_on": f"{calibration.num_tasks} validation tasks, K = {calibration.k}",
        }
    conf = calibration.conformal
    out["conformal"] = {
        "method": conf.method,
        "levels": conf.levels,
        "finite": conf.finite,
        "coverage": conformal_coverage(conformity_scores(posterior, x, y, mask), conf),
        "guarantee": conf.guarantee(),
        "fitted_on": f"{conf.num_tasks} validation tasks, K = {calibration.k}",
    }
    return out


def central_interval(posterior, x, level: float, *, lo: float | None = None,
                     hi: float | None = None, iterations: int = 60) -> tuple[Any, Any]:  # fmt: skip
    """The predictive's central interval of level ``level`` at each ``x``: ``(lower, upper)``,
    each ``(T, N)``, by bisection on the predictive CDF (``Dy = 1``). ``level = 1`` gives
    ``(-inf, inf)``."""
    _check_regression(posterior, "central_interval")
    m = np.asarray(posterior.mean(x))[..., 0]
    if level >= 1.0:
        return np.full(m.shape, -np.inf), np.full(m.shape, np.inf)
    sd = np.sqrt(np.asarray(posterior.variance(x))[..., 0])

    def solve(p: float) -> np.ndarray:
        a = m - 50 * sd if lo is None else np.full(m.shape, lo)
        b = m + 50 * sd if hi is None else np.full(m.shape, hi)
        for _ in range(iterations):
            mid = (a + b) / 2
            below = np.asarray(posterior.cdf(x, mid[..., None].astype(np.float32)))[..., 0] < p
            a, b = np.where(below, mid, a), np.where(below, b, mid)
        return (a + b) / 2

    return solve((1 - level) / 2), solve((1 + level) / 2)


__all__ = [
    "LEVELS",
    "Calibration",
    "Conformal",
    "calibrated_metrics",
    "central_interval",
    "conformal_coverage",
    "conformity_scores",
    "fit_conformal",
    "fit_variance_scale",
    "scaled_log_predictive",
    "scaled_pit",
    "stored_calibration",
    "support_size",
]
