"""Evaluators: metrics of a :class:`~bayesmeta.posterior.TaskPosterior` on query sets.

:func:`evaluate` gives the ``REPORT.json`` fields of DESIGN.md §4, :func:`predictive_arrays`
the ``PRED.npz`` arrays, and :func:`compare` / :func:`format_table` / :func:`markdown_table`
put reports of several methods side by side with the gap to an oracle (the ``reference``
method's exact posterior predictive). :mod:`bayesmeta.evaluate.active` holds the acquisition
functions and the active-learning loop (:func:`run_active`, and :func:`propose` /
:func:`label` for a loop driven by hand).

Every metric works from the posterior predictive mixture ``Σ_s w_s p(y | f_φs(x), σ_s)``,
never from a Gaussian fitted to the samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.evaluate import active
from bayesmeta.evaluate.active import (
    ACQUISITIONS,
    ActiveResult,
    ActiveState,
    get_acquisition,
    init_active,
    label,
    learning_curve,
    paired_difference,
    propose,
    reveal,
    run_active,
    select_top,
)
from bayesmeta.evaluate.loop import ActiveLoop
from bayesmeta.evaluate.metrics import (
    DEFAULT_CALIBRATION_LEVELS,
    DEFAULT_COVERAGE_LEVELS,
    accuracy,
    brier,
    calibration_curve,
    classification_metrics,
    coverage_from_pit,
    ece,
    fit_temperature,
    level_key,
    mce,
    mse,
    nll,
    pit_histogram,
    regression_calibration_error,
    reliability_curve,
    scale_temperature,
)
from bayesmeta.evaluate.report import Report
from bayesmeta.likelihoods import Likelihood

__all__ = [
    "ACQUISITIONS",
    "ActiveLoop",
    "ActiveResult",
    "ActiveState",
    "Report",
    "DEFAULT_CALIBRATION_LEVELS",
    "DEFAULT_COVERAGE_LEVELS",
    "accuracy",
    "active",
    "brier",
    "calibration_curve",
    "classification_metrics",
    "compare",
    "task_nll",
    "coverage_from_pit",
    "ece",
    "evaluate",
    "fit_temperature",
    "format_table",
    "get_acquisition",
    "init_active",
    "label",
    "learning_curve",
    "level_key",
    "markdown_table",
    "mce",
    "mse",
    "nll",
    "paired_difference",
    "pit_histogram",
    "predictive_arrays",
    "propose",
    "regression_calibration_error",
    "reliability_curve",
    "reveal",
    "run_active",
    "scale_temperature",
    "select_top",
]

_LIKELIHOODS = ("gaussian", "categorical", "generic")


# -- input checks ---------------------------------------------------------------------------------
def _count_nonfinite(a: np.ndarray) -> str | None:
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    n_nan = int(np.isnan(a).sum())
    return f"{n_nan} NaN and {int(bad.sum()) - n_nan} inf of {a.size}"


def _check_query(posterior, x_query, y_query) -> tuple[jax.Array, jax.Array]:
    """Validate query arrays against the posterior; return them as JAX arrays.

    Catches the shape errors that :class:`TaskPosterior` would otherwise broadcast silently
    (e.g. regression ``y (T, Q)`` against outputs ``(S, Q, 1)``).
    """
    from bayesmeta.posterior import TaskPosterior

    if not isinstance(posterior, TaskPosterior):
        raise TypeError(f"posterior: expected a TaskPosterior, got {type(posterior).__name__}")
    if not isinstance(posterior.likelihood, Likelihood):
        raise ValueError(
            f"posterior.likelihood: expected one of {_LIKELIHOODS}, got {posterior.likelihood!r}"
        )
    t = posterior.num_tasks
    x = np.asarray(x_query)
    y = np.asarray(y_query)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"x_query: expected a numeric array, got dtype {x.dtype}")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"y_query: expected a numeric array, got dtype {y.dtype}")
    if x.ndim != 3:
        raise ValueError(f"x_query: expected 3-D (T, Q, Dx), got shape {x.shape}")
    if x.shape[0] != t:
        raise ValueError(
            f"x_query: expected T={t} tasks (posterior.num_tasks) in shape (T, Q, Dx), "
            f"got {x.shape}"
        )
    if x.shape[1] < 1:
        raise ValueError(f"x_query: expected Q >= 1 query points in (T, Q, Dx), got {x.shape}")
    bad = _count_nonfinite(x.astype(np.float64))
    if bad:
        raise ValueError(f"x_query: expected finite values, got {bad}")
    dtype = posterior.phi.dtype if jnp.issubdtype(posterior.phi.dtype, jnp.floating) else None
    xj = jnp.asarray(x, dtype=dtype)
    try:
        out = jax.eval_shape(posterior.outputs, xj)  # (T, S, Q, Dy or C)
    except (TypeError, ValueError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"x_query: shape (T, Q, Dx)={x.shape} does not fit the posterior's network "
            f"(is Dx={x.shape[2]} the model's input dimension?): {msg}"
        ) from None
    width = out.shape[-1]
    q = x.shape[1]
    if posterior.likelihood.classifier:
        if y.shape != x.shape[:2]:
            raise ValueError(
                f"y_query: expected shape (T, Q)={x.shape[:2]} integer labels matching "
                f"x_query (T, Q, Dx)={x.shape}, got {y.shape}"
            )
        if y.dtype.kind not in "iu":
            raise ValueError(f"y_query: expected integer class labels, got dtype {y.dtype}")
        if y.min() < 0 or y.max() >= width:
            raise ValueError(
                f"y_query: expected class labels in [0, {width - 1}] (C={width} from the "
                f"posterior's logits), got min {y.min()}, max {y.max()}"
            )
        return xj, jnp.asarray(y, dtype=jnp.int32)
    expected = (t, q, width)
    if y.shape != expected:
        raise ValueError(
            f"y_query: expected shape (T, Q, Dy)={expected} matching x_query and the "
            f"posterior's outputs, got {y.shape}"
        )
    bad = _count_nonfinite(y.astype(np.float64))
    if bad:
        raise ValueError(f"y_query: expected finite values, got {bad}")
    return xj, jnp.asarray(y, dtype=dtype)


# -- reports --------------------------------------------------------------------------------------
def evaluate(
    posterior,
    x_query,
    y_query,
    return_pit: bool = False,
    mask_query=None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Metrics of a posterior predictive on query sets: the ``REPORT.json`` fields.

    Parameters
    ----------
    posterior : TaskPosterior
        Posterior for T tasks.
    x_query : array (T, Q, Dx)
    y_query : array (T, Q, Dy) float (gaussian likelihood) or (T, Q) int (categorical)

    Returns
    -------
    dict
        A :class:`~bayesmeta.evaluate.report.Report` (a dict with a readable repr and
        ``to_dataframe()``). Always ``method``, ``n_tasks``, ``n_points`` (the scored query
        points of all tasks: T·Q, or the mask's total) and ``nll`` (mean negative log
        predictive density per point). Regression adds ``mse`` (predictive mean),
        ``calibration_error`` (PACOH), ``coverage`` ``{"0.5", "0.8", "0.9", "0.95"}`` of the
        central predictive intervals (noise included) and ``pit_histogram`` (10-bin density of
        the PIT). Classification adds ``accuracy``, ``ece``, ``mce`` (15 bins) and ``brier``,
        each with a standard error over tasks (``accuracy_se``, ...;
        :func:`~bayesmeta.evaluate.metrics.classification_metrics`).
        All values are plain Python scalars, lists and dicts (JSON-serialisable).
        ``return_pit=True`` (regression) adds ``pit``, the ``(T, Q, Dy)`` PIT values as a
        NumPy array (not JSON-serialisable), so callers need not compute the CDF again.
        ``nll_per_task`` is each task's mean NLL per query point and ``nll_se`` their standard
        error over tasks, ``std_t / √T`` (tasks are the independent units; with T = 1 it is
        omitted).
    mask_query : array (T, Q) of 0/1, optional
        For tasks with different numbers of query points: only the points with 1 are scored,
        every metric is a mean over those.
    temperature : float, optional
        Classification: a temperature fitted on validation tasks
        (:func:`~bayesmeta.evaluate.metrics.fit_temperature`); the report then also holds
        ``temperature`` and ``temperature_scaled``, the same metrics of the scaled predictive,
        beside (never instead of) the method's own.
    """
    x, y = _check_query(posterior, x_query, y_query)
    if mask_query is None:
        keep = None

        def real(a):
            return a

    else:
        from bayesmeta.tasks.io import _check_mask_query

        keep = _check_mask_query(mask_query, x.shape[:2]).astype(bool)

        def real(a):
            # the real points of every task, as one task of M points: (1, M, ...)
            return np.asarray(a)[keep][None]

    lp_all = np.asarray(posterior.log_predictive(x, y))
    lp = real(lp_all)
    report = Report(
        method=str(posterior.method),
        n_tasks=int(x.shape[0]),
        n_points=int(x.shape[0] * x.shape[1]) if keep is None else int(keep.sum()),
        nll=nll(lp),
    )
    report.update(task_nll(lp_all, keep))
    y_all = y
    if keep is not None:
        y = real(y)
    if posterior.likelihood.classifier:
        probs = real(posterior.probs(x))
        report.update({k: v for k, v in classification_metrics(probs, y).items()
                       if k not in ("nll", "nll_se")})  # fmt: skip
        if temperature is not None:
            scaled = classification_metrics(scale_temperature(probs, temperature), y)
            report.update(temperature=float(temperature), temperature_scaled=scaled)
        return report
    if temperature is not None:
        raise ValueError("temperature: temperature scaling is for classifiers; this posterior's "
                         f"likelihood is {posterior.likelihood!r}")  # fmt: skip
    pit = real(posterior.pit(x, y_all))
    _, density = pit_histogram(pit)
    report.update(
        mse=mse(real(posterior.mean(x)), y),
        calibration_error=regression_calibration_error(pit),
        coverage=coverage_from_pit(pit),
        pit_histogram=[float(v) for v in density],
    )
    if return_pit:
        report["pit"] = np.asarray(pit)
    return report


def task_nll(log_predictive, keep=None) -> dict[str, Any]:
    """``{"nll_per_task": [T floats], "nll_se": float}`` from ``(T, Q)`` log predictive
    densities and an optional ``(T, Q)`` boolean mask of the real query points."""
    lp = np.asarray(log_predictive, np.float64)
    m = np.ones(lp.shape, bool) if keep is None else np.asarray(keep, bool)
    per_task = -(np.where(m, lp, 0.0)).sum(1) / np.maximum(m.sum(1), 1)
    out: dict[str, Any] = {"nll_per_task": [float(v) for v in per_task]}
    if per_task.size > 1:
        out["nll_se"] = float(per_task.std(ddof=1) / np.sqrt(per_task.size))
    return out


def predictive_arrays(
    posterior, key: jax.Array, x_query, y_query, num_samples: int
) -> dict[str, np.ndarray]:
    """The ``PRED.npz`` arrays of DESIGN.md §4.

    Parameters
    ----------
    posterior : TaskPosterior
    key : PRNG key
        For the predictive draws.
    x_query : array (T, Q, Dx)
    y_query : array (T, Q, Dy) float or (T, Q) int
    num_samples : int
        Number S of predictive draws per task (regression).

    Returns
    -------
    dict of ndarray
        ``log_predictive (T, Q)``; regression ``mean (T, Q, Dy)`` and ``samples (T, S, Q, Dy)``
        (draws of y, noise included); classification ``probs (T, Q, C)``.
    """
    if (
        not isinstance(num_samples, (int, np.integer))
        or isinstance(num_samples, bool)
        or num_samples < 1
    ):
        raise ValueError(f"num_samples: expected a positive integer, got {num_samples!r}")
    x, y = _check_query(posterior, x_query, y_query)
    out = {"log_predictive": np.asarray(posterior.log_predictive(x, y))}
    if posterior.likelihood.classifier:
        out["probs"] = np.asarray(posterior.probs(x))
        return out
    out["mean"] = np.asarray(posterior.mean(x))
    out["samples"] = np.asarray(posterior.sample_predictive(key, x, int(num_samples)))
    return out


# -- comparison tables ----------------------------------------------------------------------------
def compare(reports: Mapping[str, Mapping[str, Any]], oracle: str = "reference") -> list[dict]:
    """Rows of a comparison table, one per report, with the NLL gap to an oracle.

    Parameters
    ----------
    reports : dict name -> report
        Reports from :func:`evaluate` (or ``REPORT.json``), all on the same task set. The name
        becomes the row's ``method``.
    oracle : str
        Name of the oracle report (the exact ``reference`` posterior). When present, each row
        gets ``oracle_nll`` and ``gap = nll − oracle_nll`` (≥ 0 up to Monte Carlo error for an
        exact oracle).

    Returns
    -------
    list of dict
        Copies of the reports in the given order.
    """
    for name, rep in reports.items():
        if not isinstance(rep, Mapping) or "nll" not in rep:
            raise ValueError(f"reports[{name!r}]: expected a report dict with 'nll', got {rep!r}")
    ref = reports.get(oracle)
    rows = []
    for name, rep in reports.items():
        row = {**rep, "method": str(name)}
        if ref is not None:
            for k in ("n_tasks", "n_points"):
                if k in rep and k in ref and rep[k] != ref[k]:
                    raise ValueError(
                        f"reports[{name!r}]: {k}={rep[k]} differs from the oracle {oracle!r} "
                        f"{k}={ref[k]}; the NLL gap needs the same task set"
                    )
            row["oracle_nll"] = float(ref["nll"])
            row["gap"] = float(rep["nll"]) - float(ref["nll"])
        rows.append(row)
    return rows


def _coverage_at(level: float):
    def get(row):
        cov = row.get("coverage")
        return None if not isinstance(cov, Mapping) else cov.get(level_key(level))

    return get


def _num(fmt: str):
    def f(v) -> str:
        if v is None:
            return "-"
        v = float(v)
        return "nan" if math.isnan(v) else format(v, fmt)

    return f


# (header, getter, formatter, shown only when present in some row)
_COLUMNS = [
    ("method", lambda r: r.get("method"), lambda v: "-" if v is None else str(v), False),
    ("K", lambda r: r.get("K", r.get("k")), lambda v: "-" if v is None else str(v), True),
    ("nll", lambda r: r.get("nll"), _num(".4f"), False),
    ("oracle_nll", lambda r: r.get("oracle_nll"), _num(".4f"), False),
    ("gap", lambda r: r.get("gap"), _num("+.4f"), False),
    ("mse", lambda r: r.get("mse"), _num(".4g"), False),
    ("cov50", _coverage_at(0.5), _num(".3f"), False),
    ("cov90", _coverage_at(0.9), _num(".3f"), False),
    ("cal_err", lambda r: r.get("calibration_error"), _num(".4f"), False),
    ("acc", lambda r: r.get("accuracy"), _num(".4f"), True),
    ("ece", lambda r: r.get("ece"), _num(".4f"), True),
    ("train_s", lambda r: r.get("train_s"), _num(".1f"), True),
]


def _cells(rows) -> tuple[list[str], list[list[str]]]:
    if isinstance(rows, Mapping):
        rows = compare(rows)
    rows = list(rows)
    cols = [c for c in _COLUMNS if not c[3] or any(c[1](r) is not None for r in rows)]
    header = [c[0] for c in cols]
    body = [[fmt(get(r)) for _, get, fmt, _ in cols] for r in rows]
    return header, body


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width text table of comparison rows, for a terminal.

    Columns: method, K (if any row has ``K`` or ``k``), nll, oracle_nll, gap, mse, cov50,
    cov90, cal_err, then acc, ece and train_s where some row has them. Missing values print
    as ``-``.

    Parameters
    ----------
    rows : list of dict
        From :func:`compare` (a ``{name: report}`` dict is passed through :func:`compare`).

    Returns
    -------
    str
    """
    header, body = _cells(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]

    def line(cells):
        parts = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(b) for b in body)])


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table of :func:`format_table` as GitHub-flavoured Markdown."""
    header, body = _cells(rows)
    align = ["---"] + ["---:"] * (len(header) - 1)
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(out)
