"""Predictive metrics: pure functions on arrays.

Every function accepts JAX or NumPy arrays, computes in float64 NumPy and returns Python
floats or NumPy arrays. Inputs are validated; a bad input raises ``ValueError`` naming the
argument, what was expected and what was got.

Regression metrics work from the posterior predictive's log density and its CDF at the
observed ``y`` (the probability integral transform, PIT). For a calibrated predictive the PIT
values ``u = F(y | x, D)`` are uniform on [0, 1].

Classification metrics work from predictive class probabilities ``probs (..., C)`` and integer
labels ``labels (...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_CALIBRATION_LEVELS",
    "DEFAULT_COVERAGE_LEVELS",
    "accuracy",
    "brier",
    "calibration_curve",
    "classification_metrics",
    "coverage_from_pit",
    "ece",
    "fit_temperature",
    "level_key",
    "mce",
    "mse",
    "nll",
    "pit_histogram",
    "regression_calibration_error",
    "reliability_curve",
    "scale_temperature",
]

DEFAULT_COVERAGE_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
DEFAULT_CALIBRATION_LEVELS: np.ndarray = np.arange(1, 20) / 20  # 0.05, 0.10, ..., 0.95

# PIT values computed in float32 can leave [0, 1] by rounding; this much is tolerated (and clipped).
_PIT_SLACK = 1e-5
# Class probabilities must sum to one within this tolerance.
_PROBS_SUM_TOL = 1e-3


# -- validation helpers ---------------------------------------------------------------------------
def _array(name: str, a, *, dtype=np.float64) -> np.ndarray:
    try:
        out = np.asarray(a)
    except Exception as e:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name}: expected an array, got {type(a).__name__} ({e})") from e
    if out.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric array, got dtype {out.dtype}")
    return out.astype(dtype) if dtype is not None else out


def _no_nan(name: str, a: np.ndarray) -> None:
    n_nan = int(np.isnan(a).sum())
    if n_nan:
        raise ValueError(f"{name}: expected no NaN values, got {n_nan} NaN of {a.size}")


def _finite(name: str, a: np.ndarray) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        n_nan = int(np.isnan(a).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ValueError(
            f"{name}: expected finite values, got {n_nan} NaN and {n_inf} inf of {a.size}"
        )


def _nonempty(name: str, a: np.ndarray) -> None:
    if a.size == 0:
        raise ValueError(f"{name}: expected at least one value, got shape {a.shape}")


def _pit(pit) -> np.ndarray:
    u = _array("pit", pit)
    _nonempty("pit", u)
    _no_nan("pit", u)
    lo, hi = float(u.min()), float(u.max())
    if lo < -_PIT_SLACK:
        raise ValueError(f"pit: expected values in [0, 1], got min {lo:.6g}")
    if hi > 1 + _PIT_SLACK:
        raise ValueError(f"pit: expected values in [0, 1], got max {hi:.6g}")
    return np.clip(u, 0.0, 1.0).ravel()


def _levels(name: str, levels, *, closed: bool) -> np.ndarray:
    lv = _array(name, levels).ravel()
    _nonempty(name, lv)
    _no_nan(name, lv)
    ok = (lv >= 0) & (lv <= 1) if closed else (lv > 0) & (lv < 1)
    if not ok.all():
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"{name}: expected values in {interval}, got {lv.tolist()}")
    return lv


def _shape_names(ndim: int) -> tuple[str, str]:
    """Symbolic shapes of (labels, probs) for error messages."""
    if ndim == 3:
        return "(T, Q)", "(T, Q, C)"
    if ndim == 2:
        return "(N,)", "(N, C)"
    return "probs.shape[:-1]", "(..., C)"


def _classification(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten to ``probs (N, C)`` float64 and ``labels (N,)`` int64."""
    p = _array("probs", probs)
    if p.ndim < 2:
        raise ValueError(
            f"probs: expected shape (N, C) or (T, Q, C) with a class axis last, got {p.shape}"
        )
    lab_sym, probs_sym = _shape_names(p.ndim)
    y = np.asarray(labels)
    if y.shape != p.shape[:-1]:
        raise ValueError(
            f"labels: expected shape {lab_sym} matching probs {probs_sym}={p.shape}, got {y.shape}"
        )
    if y.dtype.kind not in "iu":
        raise ValueError(f"labels: expected integer class labels, got dtype {y.dtype}")
    _nonempty("probs", p)
    _finite("probs", p)
    c = p.shape[-1]
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            f"probs: expected probabilities in [0, 1], got min {p.min():.6g}, max {p.max():.6g}"
        )
    sums = p.sum(-1)
    worst = float(np.abs(sums - 1).max())
    if worst > _PROBS_SUM_TOL:
        raise ValueError(
            f"probs: expected each row to sum to 1 over the class axis (C={c}), "
            f"got sums off by up to {worst:.3g}"
        )
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= c:
        raise ValueError(
            f"labels: expected class labels in [0, {c - 1}] (C={c} from probs {p.shape}), "
            f"got min {y.min()}, max {y.max()}"
        )
    return p.reshape(-1, c), y.ravel()


def level_key(p: float) -> str:
    """The JSON key of a level: ``0.5 -> "0.5"``, ``0.95 -> "0.95"``."""
    return format(float(p), "g")


# -- regression -----------------------------------------------------------------------------------
def nll(log_predictive) -> float:
    r"""Mean negative log predictive density per query point.

    .. math::

        \mathrm{NLL} = -\frac{1}{TQ} \sum_{t=1}^{T} \sum_{q=1}^{Q}
            \log p(y_{tq} \mid x_{tq}, \mathcal{D}_t)

    Parameters
    ----------
    log_predictive : array (T, Q)
        Log posterior predictive density of each query point (e.g.
        :meth:`TaskPosterior.log_predictive`). ``-inf`` (zero density) is allowed and gives
        ``inf``; NaN is rejected.

    Returns
    -------
    float
    """
    lp = _array("log_predictive", log_predictive)
    if lp.ndim != 2:
        raise ValueError(f"log_predictive: expected 2-D (T, Q), got shape {lp.shape}")
    _nonempty("log_predictive", lp)
    _no_nan("log_predictive", lp)
    return float(-lp.mean())


def mse(mean, y) -> float:
    r"""Mean squared error of the predictive mean over all elements.

    .. math::

        \mathrm{MSE} = \frac{1}{N} \sum_{i=1}^{N} (\hat y_i - y_i)^2,

    where ``i`` runs over every element of ``mean`` and ``y`` (tasks, points, output dims).

    Parameters
    ----------
    mean : array (T, Q, Dy)
        Predictive mean.
    y : array, same shape as ``mean``
        Observed outputs.

    Returns
    -------
    float
    """
    m = _array("mean", mean)
    t = _array("y", y)
    if m.shape != t.shape:
        raise ValueError(f"y: expected shape {m.shape} matching mean, got {t.shape}")
    _nonempty("mean", m)
    _finite("mean", m)
    _finite("y", t)
    return float(np.mean((m - t) ** 2))


def coverage_from_pit(pit, levels: Sequence[float] = DEFAULT_COVERAGE_LEVELS) -> dict[str, float]:
    r"""Empirical coverage of central predictive intervals, from PIT values.

    The central interval of mass ``p`` of a continuous predictive with CDF ``F`` is
    ``[F⁻¹((1 − p)/2), F⁻¹((1 + p)/2)]``; ``y`` lies in it iff its PIT ``u = F(y)`` lies in
    ``[(1 − p)/2, (1 + p)/2]``. The coverage at level ``p`` is

    .. math::

        c(p) = \frac{1}{N} \sum_{i=1}^{N}
            \mathbf 1\left[\tfrac{1-p}{2} \le u_i \le \tfrac{1+p}{2}\right],

    which equals ``p`` in expectation for a calibrated predictive.

    Parameters
    ----------
    pit : array, any shape
        PIT values in [0, 1].
    levels : sequence of float in (0, 1)
        Interval masses.

    Returns
    -------
    dict
        ``{"0.5": c(0.5), "0.8": c(0.8), ...}``; keys from :func:`level_key`.
    """
    u = _pit(pit)
    lv = _levels("levels", levels, closed=False)
    out = {}
    for p in lv:
        lo, hi = (1 - p) / 2, (1 + p) / 2
        out[level_key(p)] = float(np.mean((u >= lo) & (u <= hi)))
    return out


def calibration_curve(pit, levels=DEFAULT_CALIBRATION_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    r"""Observed frequency of ``PIT ≤ p`` at each level ``p``.

    .. math::

        \hat F(p) = \frac{1}{N} \sum_{i=1}^{N} \mathbf 1[u_i \le p]

    For a calibrated predictive ``\hat F(p) ≈ p`` (the curve lies on the diagonal).

    Parameters
    ----------
    pit : array, any shape
        PIT values in [0, 1].
    levels : array (L,)
        Levels in [0, 1]; default ``0.05, 0.10, …, 0.95``.

    Returns
    -------
    levels : ndarray (L,)
    observed : ndarray (L,)
    """
    u = _pit(pit)
    lv = _levels("levels", levels, closed=True)
    observed = np.mean(u[None, :] <= lv[:, None], axis=1)
    return lv, observed


def regression_calibration_error(pit, levels=DEFAULT_CALIBRATION_LEVELS) -> float:
    r"""Regression calibration error (PACOH, Rothfuss et al. 2021).

    .. math::

        \mathrm{CE} = \frac{1}{L} \sum_{l=1}^{L} \left| \hat F(p_l) - p_l \right|,
        \qquad p_l \in \{0.05, 0.10, \dots, 0.95\},

    with :math:`\hat F` from :func:`calibration_curve`. Zero for a perfectly calibrated
    predictive, at most ~0.5.

    Parameters
    ----------
    pit : array, any shape
        PIT values in [0, 1].
    levels : array (L,)

    Returns
    -------
    float
    """
    lv, observed = calibration_curve(pit, levels)
    return float(np.mean(np.abs(observed - lv)))


def pit_histogram(pit, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    r"""Histogram of PIT values on [0, 1], normalised as a density.

    .. math::

        h_b = \frac{\#\{i : u_i \in \text{bin } b\}}{N \, \Delta},\qquad \Delta = 1/B,

    so a calibrated predictive gives ``h_b ≈ 1`` in every bin; a ∪ shape means over-confidence,
    a ∩ shape under-confidence.

    Parameters
    ----------
    pit : array, any shape
        PIT values in [0, 1].
    bins : int
        Number of equal-width bins ``B``.

    Returns
    -------
    edges : ndarray (B + 1,)
    density : ndarray (B,)
    """
    if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    u = _pit(pit)
    density, edges = np.histogram(u, bins=int(bins), range=(0.0, 1.0), density=True)
    return edges, density


# -- classification -------------------------------------------------------------------------------
def accuracy(probs, labels) -> float:
    r"""Fraction of points whose most probable class is the label.

    .. math::

        \mathrm{acc} = \frac{1}{N}\sum_i \mathbf 1[\arg\max_c p_{ic} = y_i]

    Parameters
    ----------
    probs : array (T, Q, C) or (N, C)
        Predictive class probabilities.
    labels : int array (T, Q) or (N,)

    Returns
    -------
    float
    """
    p, y = _classification(probs, labels)
    return float(np.mean(p.argmax(-1) == y))


def brier(probs, labels) -> float:
    r"""Multi-class Brier score.

    .. math::

        \mathrm{Brier} = \frac{1}{N}\sum_{i=1}^{N}\sum_{c=1}^{C}
            \left(p_{ic} - \mathbf 1[y_i = c]\right)^2

    Zero for a certain, correct classifier; at most 2.

    Parameters
    ----------
    probs : array (T, Q, C) or (N, C)
    labels : int array (T, Q) or (N,)

    Returns
    -------
    float
    """
    p, y = _classification(probs, labels)
    onehot = np.eye(p.shape[-1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=-1)))


def _n_bins(n_bins) -> int:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive integer, got {n_bins!r}")
    return int(n_bins)


def reliability_curve(probs, labels, n_bins: int = 15) -> dict[str, np.ndarray]:
    r"""Reliability diagram on the confidence ``max_c p_ic`` with equal-width bins.

    Bin ``b`` is ``(b/B, (b+1)/B]`` (the first bin also holds 0). For the points ``I_b`` in it

    .. math::

        \mathrm{conf}_b = \frac{1}{|I_b|}\sum_{i\in I_b} \max_c p_{ic},\qquad
        \mathrm{acc}_b = \frac{1}{|I_b|}\sum_{i\in I_b} \mathbf 1[\arg\max_c p_{ic} = y_i].

    Parameters
    ----------
    probs : array (T, Q, C) or (N, C)
    labels : int array (T, Q) or (N,)
    n_bins : int
        Number of bins ``B`` (15, as in Guo et al. 2017).

    Returns
    -------
    dict
        ``bin_edges (B+1,)``, ``confidence (B,)`` and ``accuracy (B,)`` (NaN in empty bins),
        ``count (B,)`` int.
    """
    b = _n_bins(n_bins)
    p, y = _classification(probs, labels)
    conf = p.max(-1)
    correct = (p.argmax(-1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, b + 1)
    idx = np.digitize(conf, edges[1:-1], right=True)  # edges[i] < conf <= edges[i + 1]
    count = np.bincount(idx, minlength=b)
    sum_conf = np.bincount(idx, weights=conf, minlength=b)
    sum_acc = np.bincount(idx, weights=correct, minlength=b)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, sum_conf / count, np.nan)
        acc = np.where(count > 0, sum_acc / count, np.nan)
    return {"bin_edges": edges, "confidence": confidence, "accuracy": acc, "count": count}


def _bin_gaps(probs, labels, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``|acc_b − conf_b|`` and ``|I_b| / N`` of the non-empty bins of
    :func:`reliability_curve` (what :func:`ece` and :func:`mce` reduce)."""
    r = reliability_curve(probs, labels, n_bins)
    nonempty = r["count"] > 0
    gaps = np.abs(r["accuracy"][nonempty] - r["confidence"][nonempty])
    return gaps, r["count"][nonempty] / r["count"].sum()


def ece(probs, labels, n_bins: int = 15) -> float:
    r"""Expected calibration error (Guo et al. 2017).

    .. math::

        \mathrm{ECE} = \sum_{b=1}^{B} \frac{|I_b|}{N}\,\left|\mathrm{acc}_b - \mathrm{conf}_b\right|

    with the bins of :func:`reliability_curve`.

    Parameters
    ----------
    probs : array (T, Q, C) or (N, C)
    labels : int array (T, Q) or (N,)
    n_bins : int

    Returns
    -------
    float
    """
    gaps, weights = _bin_gaps(probs, labels, n_bins)
    return float(np.sum(weights * gaps))


def mce(probs, labels, n_bins: int = 15) -> float:
    r"""Maximum calibration error: the largest bin gap over non-empty bins.

    .. math::

        \mathrm{MCE} = \max_{b:\,|I_b|>0} \left|\mathrm{acc}_b - \mathrm{conf}_b\right|

    Parameters
    ----------
    probs : array (T, Q, C) or (N, C)
    labels : int array (T, Q) or (N,)
    n_bins : int

    Returns
    -------
    float
    """
    gaps, _ = _bin_gaps(probs, labels, n_bins)
    return float(np.max(gaps))


# -- classifier calibration: standard errors and temperature scaling ------------------------------
def _tasks_axis(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """``probs (T, Q, C)`` float64 and ``labels (T, Q)``, validated (a flat ``(N, C)`` is one
    task)."""
    p = _array("probs", probs)
    pf, yf = _classification(p, labels)
    if p.ndim == 2:
        return pf[None], yf[None]
    return pf.reshape(-1, p.shape[-2], p.shape[-1]), yf.reshape(-1, p.shape[-2])


def classification_metrics(
    probs, labels, n_bins: int = 15, n_boot: int = 200, seed: int = 0
) -> dict[str, float]:
    r"""Accuracy, ECE, MCE, Brier and NLL of predictive class probabilities, each with a
    standard error over tasks.

    Tasks are the independent units: accuracy, Brier and NLL get ``std_t / √T`` of their
    per-task means; ECE and MCE, which bin all points together, get the standard deviation of
    ``n_boot`` bootstrap resamples of whole tasks (fixed ``seed``). With one task (or a flat
    ``(N, C)``) the ``*_se`` keys are omitted.

    Parameters
    ----------
    probs : array (T, Q, C) or (N, C)
    labels : int array (T, Q) or (N,)

    Returns
    -------
    dict
        ``accuracy``, ``ece``, ``mce``, ``brier``, ``nll`` (−mean log p(y), probabilities
        floored at 1e-12) and with T > 1 ``accuracy_se``, ``ece_se``, ``mce_se``, ``brier_se``,
        ``nll_se``.
    """
    p, y = _tasks_axis(probs, labels)
    b = _n_bins(n_bins)
    t, q, c = p.shape
    onehot = np.eye(c)[y]
    per_task = {
        "accuracy": np.mean(p.argmax(-1) == y, -1),
        "brier": np.mean(np.sum((p - onehot) ** 2, -1), -1),
        "nll": -np.mean(
            np.log(np.maximum(np.take_along_axis(p, y[..., None], -1)[..., 0], 1e-12)), -1
        ),  # fmt: skip
    }
    out = {k: float(v.mean()) for k, v in per_task.items()}
    out["ece"], out["mce"] = ece(p, y, b), mce(p, y, b)
    if t > 1:
        for k, v in per_task.items():
            out[f"{k}_se"] = float(v.std(ddof=1) / np.sqrt(t))
        rng = np.random.default_rng(seed)
        boot = np.array([(ece(p[i], y[i], b), mce(p[i], y[i], b))
                         for i in rng.integers(0, t, size=(int(n_boot), t))])  # fmt: skip
        out["ece_se"], out["mce_se"] = (float(v) for v in boot.std(0, ddof=1))
    return {k: out[k] for k in sorted(out)}


def scale_temperature(probs, temperature: float) -> np.ndarray:
    r"""Temperature-scaled probabilities :math:`p_c^{1/T} / \sum_{c'} p_{c'}^{1/T}` (softmax of
    the log probabilities divided by T; Guo et al. 2017). T > 1 softens, T < 1 sharpens, and
    the most probable class never changes."""
    if not (isinstance(temperature, int | float | np.floating) and temperature > 0):
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    p = _array("probs", probs)
    z = np.log(np.maximum(p, 1e-300)) / float(temperature)
    z -= z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def fit_temperature(probs, labels, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    r"""The temperature T that minimises the NLL of :func:`scale_temperature`'d
    probabilities on held-out (validation) points: the post-hoc calibration baseline of Guo et
    al. (2017), fitted once and then applied unchanged to the test tasks.

    The NLL is convex in 1/T (a log-sum-exp of linear functions of it), so a golden-section
    search over log T on ``bounds`` finds the minimum to float precision.
    """
    p, y = _classification(probs, labels)
    lo, hi = (float(v) for v in bounds)
    if not 0 < lo < hi:
        raise ValueError(f"bounds: expected 0 < low < high, got {bounds!r}")
    logp = np.log(np.maximum(p, 1e-300))
    target = logp[np.arange(y.size), y]

    def nll_at(log_t: float) -> float:
        z = logp / np.exp(log_t)
        m = z.max(-1)
        return float(np.mean(m + np.log(np.exp(z - m[:, None]).sum(-1)) - target / np.exp(log_t)))

    return float(np.exp(golden_section(nll_at, np.log(lo), np.log(hi), 80)))


def golden_section(f, a: float, b: float, iterations: int) -> float:
    """The midpoint of the bracket ``[a, b]`` after ``iterations`` golden-section steps
    towards the minimum of a unimodal ``f``."""
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iterations):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2.0
