"""Figures for task posteriors and their evaluation.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot`` state, so
nothing here changes a notebook's backend or leaks open figures), saves it as a PNG when
``path`` is given, and returns it so that a notebook displays it.

Colours are fixed per method (:data:`PALETTE`), with ``reference`` always black, so the same
method has the same colour in every figure. Names outside the palette get a colour chosen by a
stable hash of the name; :func:`learning_curves` instead gives each of its curves a colour of
its own (the palette's where no other curve has it, else the next unused colour of
Matplotlib's colour cycle).

Functions
---------
predictive_bands
    Posterior predictive of 1-D regression tasks: one row per method, one column per task.
calibration_curves
    Expected vs observed fraction (regression calibration), one line per method.
pit_histograms
    Histograms of probability integral transform values, one panel per method.
reliability_diagram
    Accuracy per confidence bin for classification, with the gap and ECE.
metric_bars
    Grouped bars of a metric per method and support size, with the oracle per group.
learning_curves
    Active-learning curves: a metric against the number of labels, ±1 standard error.
hypothesis_samples
    Sine-or-line posterior samples coloured by the hypothesis they resemble.
decision_boundaries
    2-D classification: decision boundaries of posterior samples over the predictive.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zlib
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import rcParams
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullFormatter

from bayesmeta.inference.registry import METHODS, REFERENCES
from bayesmeta.posterior import TaskPosterior

__all__ = [
    "PALETTE",
    "calibration_curves",
    "decision_boundaries",
    "hypothesis_samples",
    "learning_curves",
    "training_curves",
    "method_color",
    "metric_bars",
    "pit_histograms",
    "predictive_bands",
    "reliability_diagram",
]

DPI = 120

#: Fixed colour of each method (and of each active-learning acquisition function).
PALETTE: dict[str, str] = {
    "reference": "#000000",
    **{name: info.colour for name, info in METHODS.items()},
    # acquisition functions
    "random": "#7F7F7F",
    "variance": "#1F77B4",
    "entropy": "#FF7F0E",
    "bald": "#2CA02C",
}

_FALLBACK = ["#8C564B", "#9467BD", "#BCBD22", "#17BECF", "#E377C2", "#AEC7E8", "#FF9896"]

_METRIC_LABELS = {
    "nll": "NLL (nats per point)",
    "mse": "MSE",
    "accuracy": "accuracy",
    "brier": "Brier score",
    "calibration_error": "calibration error",
    "ece": "ECE",
}

_TRUE_COLOR = "#C0392B"


def method_color(name: str) -> str:
    """Colour of a method: its :data:`PALETTE` entry, else a stable hash of its name."""
    if name in PALETTE:
        return PALETTE[name]
    return _FALLBACK[zlib.crc32(name.encode()) % len(_FALLBACK)]


def _distinct_colors(names: Sequence[str]) -> dict[str, str]:
    """A colour of its own for each name of one figure.

    A name keeps its :data:`PALETTE` colour unless an earlier name in the palette has the same
    one; every other name, in order, takes the next colour of Matplotlib's colour cycle
    (``axes.prop_cycle``, then the fallback colours) that no name has taken yet. Colours
    repeat only when the names outnumber the cycle's colours.

    Parameters
    ----------
    names : sequence of str
        The curves of one figure, in drawing order.

    Returns
    -------
    dict[str, str]
        Name -> colour (a hex string).
    """
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        colour = PALETTE.get(name)
        if colour is not None and to_hex(colour) not in taken:
            out[name] = colour
            taken.add(to_hex(colour))
    cycle = [to_hex(c) for c in rcParams["axes.prop_cycle"].by_key().get("color", [])]
    free = [c for c in dict.fromkeys([*cycle, *(to_hex(c) for c in _FALLBACK)]) if c not in taken]
    rest = [name for name in names if name not in out]
    for i, name in enumerate(rest):
        out[name] = free[i % len(free)] if free else method_color(name)
    return out


def _band_color(name: str) -> str:
    # Bands of the black reference would hide everything under them: use grey.
    return REFERENCES[name].colour if name in REFERENCES else method_color(name)


def _metric_label(metric: str) -> str:
    return _METRIC_LABELS.get(metric, metric.replace("_", " "))


def _order_methods(names: Sequence[str]) -> list[str]:
    names = list(names)
    return [n for n in names if n in REFERENCES] + [n for n in names if n not in REFERENCES]


def _style(ax, grid: str | None = "y") -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=8)
    if grid:
        ax.grid(True, axis=grid, color="0.9", linewidth=0.8)
        ax.set_axisbelow(True)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.set_facecolor("white")
    return fig


def _single_axes(width: float, height: float, grid: str | None = "y"):
    """A new figure of one styled axes: ``(fig, ax)``."""
    fig = _new_figure(width, height)
    ax = fig.add_subplot()
    _style(ax, grid=grid)
    return fig, ax


def _labels(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=11)


def _boxed_legend(ax, **kw) -> None:
    """The legend of a line plot, in a light box over the lines."""
    ax.legend(fontsize=8, frameon=True, framealpha=0.9, edgecolor="0.85", **kw)


def _finish(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        parent = os.path.dirname(os.fspath(path))
        if parent:
            os.makedirs(parent, exist_ok=True)
        fig.savefig(path, dpi=DPI, facecolor="white")
    return fig


# -- regression: predictive bands ---------------------------------------------------------------


def _select_tasks(post: TaskPosterior, idx: Sequence[int]) -> TaskPosterior:
    """The sub-posterior of tasks ``idx``."""
    return post.select(idx)


def _predictive_quantiles(
    post: TaskPosterior,
    x: jax.Array,
    key: jax.Array,
    levels: Sequence[float],
    num_draws: int = 1000,
) -> np.ndarray:
    """Quantiles of the posterior predictive (noise included) from mixture draws.

    Parameters
    ----------
    post : TaskPosterior
        Regression posterior of T tasks (any likelihood: the quantiles are of draws).
    x : (T, N, Dx)
        Inputs.
    key : PRNGKey
    levels : sequence of float in (0, 1)
        Quantile levels.
    num_draws : int
        Draws of y per input from :meth:`TaskPosterior.sample_predictive` (φ drawn by weight).

    Returns
    -------
    np.ndarray, (L, T, N, Dy)
        The empirical quantiles of the draws at each level.
    """
    draws = np.asarray(post.sample_predictive(key, x, num_draws))  # (T, D, N, Dy)
    return np.quantile(draws, np.asarray(levels, dtype=float), axis=1)


def _function_curves(
    post: TaskPosterior, x: jax.Array, key: jax.Array, num_curves: int
) -> np.ndarray:
    """Up to ``num_curves`` equally weighted function draws, ``(T, C, N)`` (first output; the
    observation mean under a model's own likelihood)."""
    lw = np.asarray(post.log_weights)
    if np.allclose(lw, lw[:, :1]):
        params = post.params
        if post.params_per_sample:
            params = jax.tree_util.tree_map(lambda a: a[:, :num_curves], params)
        sub = dataclasses.replace(
            post,
            phi=post.phi[:, :num_curves],
            log_weights=post.log_weights[:, :num_curves],
            noise_std=post.noise_std[:, :num_curves],
            params=params,
        )
    else:
        sub = post.resample(key, num_curves)
    return np.asarray(sub.outputs(x))[..., 0]


def predictive_bands(
    posteriors: Mapping[str, TaskPosterior],
    x_support,
    y_support,
    mask_support,
    task_indices: Sequence[int] = (0, 1, 2, 3),
    x_range: tuple[float, float] = (-5.0, 5.0),
    true_fn: Callable[[int, np.ndarray], np.ndarray] | None = None,
    num_curves: int = 8,
    key: jax.Array | None = None,
    path: str | os.PathLike | None = None,
    num_draws: int = 2000,
    num_grid: int = 200,
) -> Figure:
    """Posterior predictive of 1-D regression tasks, one row per method, one column per task.

    Each panel shows the support points (where ``mask_support == 1``) as black dots, the true
    function (dashed) when ``true_fn`` is given, the predictive mean, the central 50% and 90%
    predictive intervals of y (observation noise included; quantiles of the mixture estimated
    from ``num_draws`` predictive draws per grid point) and up to ``num_curves`` function
    draws. The ``reference`` row, if present, comes first. Panels in a column share y limits.

    Parameters
    ----------
    posteriors : dict[str, TaskPosterior]
        Method name -> regression posterior (any likelihood) of the same T tasks (Dx = Dy = 1).
    x_support, y_support : (T, K, 1)
        Support sets, padded to capacity K.
    mask_support : (T, K)
        1 where a support point is real.
    task_indices : sequence of int
        Tasks to show, one column each.
    x_range : (low, high)
        Range of the grid of ``num_grid`` inputs.
    true_fn : callable ``(task_index, x_grid (G,)) -> y (G,)`` or None
        The noise-free function of a task.
    num_curves : int
        Function draws per panel (weighted posteriors are resampled first); 0 for none.
    key : PRNGKey or None
        Randomness of the predictive draws and resampling (default ``PRNGKey(0)``).
    path : path-like or None
        Where to save the PNG.
    num_draws, num_grid : int
        Predictive draws per grid point and grid size.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not posteriors:
        raise ValueError("predictive_bands needs at least one posterior")
    idx = [int(i) for i in task_indices]
    xs = np.asarray(x_support)
    ys = np.asarray(y_support)
    ms = np.asarray(mask_support)
    if xs.ndim == 2:
        xs = xs[..., None]
    if ys.ndim == 2:
        ys = ys[..., None]
    n_tasks = xs.shape[0]
    if any(i < 0 or i >= n_tasks for i in idx):
        raise ValueError(f"task_indices {idx} out of range for {n_tasks} tasks")
    if xs.shape[-1] != 1 or ys.shape[-1] != 1:
        raise ValueError("predictive_bands plots 1-D regression (Dx = Dy = 1)")
    key = jax.random.PRNGKey(0) if key is None else key
    methods = _order_methods(posteriors)

    grid = np.linspace(x_range[0], x_range[1], num_grid)
    xg = jnp.broadcast_to(jnp.asarray(grid, jnp.float32)[None, :, None], (len(idx), num_grid, 1))
    levels = (0.05, 0.25, 0.75, 0.95)

    results = {}
    for m_i, name in enumerate(methods):
        post = posteriors[name]
        if post.likelihood.classifier:
            raise ValueError(f"predictive_bands plots regression; {name!r} is a classifier")
        if post.num_tasks != n_tasks:
            raise ValueError(f"{name!r} has {post.num_tasks} tasks, the support sets {n_tasks}")
        sub = _select_tasks(post, idx)
        k_q, k_c = jax.random.split(jax.random.fold_in(key, m_i))
        q = _predictive_quantiles(sub, xg.astype(sub.phi.dtype), k_q, levels, num_draws)[..., 0]
        mean = np.asarray(sub.mean(xg.astype(sub.phi.dtype)))[..., 0]
        curves = None
        if num_curves > 0:
            curves = _function_curves(sub, xg.astype(sub.phi.dtype), k_c, num_curves)
        results[name] = (q, mean, curves)

    truths = None
    if true_fn is not None:
        truths = [np.asarray(true_fn(i, grid), dtype=float).reshape(-1) for i in idx]

    # shared y limits per column: intervals, support points and the true function
    ylims = []
    for c, i in enumerate(idx):
        vals = [results[n][0][[0, -1], c].ravel() for n in methods]
        sel = ms[i] > 0.5
        vals.append(ys[i, sel, 0])
        if truths is not None:
            vals.append(truths[c])
        v = np.concatenate(vals)
        v = v[np.isfinite(v)]
        lo, hi = (float(v.min()), float(v.max())) if v.size else (-1.0, 1.0)
        pad = 0.08 * max(hi - lo, 1e-3)
        ylims.append((lo - pad, hi + pad))

    nrows, ncols = len(methods), len(idx)
    fig = _new_figure(3.1 * ncols + 0.4, 2.3 * nrows + 0.6)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False, sharex=True))
    for r, name in enumerate(methods):
        q, mean, curves = results[name]
        color = method_color(name)
        band = _band_color(name)
        for c, i in enumerate(idx):
            ax = axes[r, c]
            _style(ax, grid="both")
            ax.fill_between(grid, q[0, c], q[3, c], color=band, alpha=0.15, lw=0)
            ax.fill_between(grid, q[1, c], q[2, c], color=band, alpha=0.30, lw=0)
            if curves is not None:
                for s in range(curves.shape[1]):
                    ax.plot(grid, curves[c, s], color=band, lw=0.7, alpha=0.45)
            ax.plot(grid, mean[c], color=color, lw=2.0)
            if truths is not None:
                ax.plot(grid, truths[c], color=_TRUE_COLOR, lw=1.5, ls="--", zorder=4)
            sel = ms[i] > 0.5
            ax.scatter(
                xs[i, sel, 0],
                ys[i, sel, 0],
                s=42,
                color="black",
                edgecolor="white",
                linewidth=0.8,
                zorder=5,
            )
            ax.text(
                0.03,
                0.95,
                f"K = {int(sel.sum())}",
                transform=ax.transAxes,
                ha="left",
                va="top",
                fontsize=8,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.8", "alpha": 0.85},
            )
            ax.set_xlim(*x_range)
            ax.set_ylim(*ylims[c])
            if r == 0:
                ax.set_title(f"task {i}", fontsize=10)
            if r == nrows - 1:
                ax.set_xlabel("x", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{name}\ny", fontsize=9, color=color, fontweight="bold")

    handles = [
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            color="black",
            markeredgecolor="white",
            markersize=7,
            label="support points",
        ),
    ]
    if truths is not None:
        handles.append(Line2D([], [], color=_TRUE_COLOR, ls="--", lw=1.5, label="true function"))
    handles += [
        Line2D([], [], color="0.2", lw=2.0, label="predictive mean"),
        Patch(facecolor="0.35", alpha=0.45, label="50% interval"),
        Patch(facecolor="0.35", alpha=0.15, label="90% interval"),
    ]
    if num_curves > 0:
        handles.append(Line2D([], [], color="0.35", lw=0.7, alpha=0.6, label="function draws"))
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False
    )
    fig.suptitle("Posterior predictive (intervals include observation noise)", fontsize=11)
    return _finish(fig, path)


# -- regression: calibration -----------------------------------------------------------------


def calibration_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike | None = None,
) -> Figure:
    """Expected vs observed fraction, one line per method, with the diagonal.

    Parameters
    ----------
    curves : dict[str, (levels, observed)]
        Method name -> the levels p and the observed fraction of query points with predictive
        CDF(y) <= p (or the empirical coverage of level-p intervals).
    path : path-like or None
        Where to save the PNG.

    Returns
    -------
    matplotlib.figure.Figure
        The legend gives each method's calibration error, mean |observed - expected|.
    """
    fig, ax = _single_axes(4.8, 4.6, grid="both")
    ax.plot([0, 1], [0, 1], color="0.55", ls="--", lw=1.2, label="perfect calibration")
    for name in _order_methods(curves):
        levels, observed = (np.asarray(a, dtype=float).ravel() for a in curves[name])
        if levels.shape != observed.shape:
            raise ValueError(f"{name!r}: levels {levels.shape} vs observed {observed.shape}")
        ce = float(np.mean(np.abs(observed - levels)))
        order = np.argsort(levels)
        ax.plot(
            levels[order],
            observed[order],
            color=method_color(name),
            lw=2,
            marker="o",
            markersize=3.5,
            label=f"{name}  (CE {ce:.3f})",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    _labels(ax, "expected fraction", "observed fraction", "Calibration")
    _boxed_legend(ax, loc="upper left")
    return _finish(fig, path)


def pit_histograms(
    pits: Mapping[str, np.ndarray],
    bins: int = 10,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Histograms of PIT values (predictive CDF at the observed y), one panel per method.

    A calibrated predictive gives uniform PIT values (density 1, the dashed line); a U shape
    means over-confident, a hump under-confident, a slope a biased predictive.

    Parameters
    ----------
    pits : dict[str, array]
        Method name -> PIT values in [0, 1] (any shape; NaNs are dropped).
    bins : int
        Number of equal-width bins.
    path : path-like or None
        Where to save the PNG.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per method; each is annotated with the calibration error
        mean_p |F_PIT(p) - p| over p in {0.05, ..., 0.95}.
    """
    names = _order_methods(pits)
    if not names:
        raise ValueError("pit_histograms needs at least one method")
    ncols = min(len(names), 4)
    nrows = math.ceil(len(names) / ncols)
    fig = _new_figure(2.7 * ncols + 0.3, 2.3 * nrows + 0.5)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False, sharey=True)).ravel()
    for ax in axes[len(names) :]:
        fig.delaxes(ax)
    edges = np.linspace(0, 1, bins + 1)
    p_levels = np.linspace(0.05, 0.95, 19)
    top = 2.0
    for ax, name in zip(axes, names, strict=False):
        u = np.asarray(pits[name], dtype=float).ravel()
        u = u[np.isfinite(u)]
        _style(ax)
        if u.size:
            dens, _, _ = ax.hist(
                np.clip(u, 0, 1),
                bins=edges,
                density=True,
                color=_band_color(name),
                alpha=0.75,
                edgecolor="white",
                linewidth=0.8,
            )
            top = max(top, 1.1 * float(np.max(dens)))
            ce = float(np.mean(np.abs(np.mean(u[:, None] <= p_levels[None], axis=0) - p_levels)))
            ax.text(
                0.5,
                0.96,
                f"CE {ce:.3f}   n = {u.size}",
                transform=ax.transAxes,
                ha="center",
                va="top",
                fontsize=7.5,
                color="0.25",
            )
        ax.axhline(1.0, color="black", ls="--", lw=1.2)
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "", "0.5", "", "1"])
        ax.set_title(name, fontsize=10, color=method_color(name), fontweight="bold")
        ax.set_xlabel("PIT", fontsize=9)
    for ax in axes[: len(names)]:
        ax.set_ylim(0, top)
    for r in range(nrows):
        axes[r * ncols].set_ylabel("density", fontsize=9)
    fig.suptitle("PIT histograms (uniform = calibrated)", fontsize=11)
    return _finish(fig, path)


# -- classification --------------------------------------------------------------------------


def _reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int):
    conf = probs.max(-1)
    correct = (probs.argmax(-1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(b, minlength=n_bins).astype(float)
    safe = np.maximum(counts, 1)
    acc = np.bincount(b, weights=correct, minlength=n_bins) / safe
    mean_conf = np.bincount(b, weights=conf, minlength=n_bins) / safe
    ece = float(np.sum(counts / max(len(conf), 1) * np.abs(acc - mean_conf)))
    return edges, counts, acc, mean_conf, ece


def reliability_diagram(
    probs,
    labels,
    n_bins: int = 15,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Reliability diagram for classification.

    Top: accuracy of the predictions in each of ``n_bins`` equal-width confidence bins (bars),
    the gap to the bin's mean confidence shaded, and the diagonal. Bottom: number of
    predictions per bin. The title gives the expected calibration error
    ``ECE = Σ_b n_b/N |acc_b − conf_b|``.

    Parameters
    ----------
    probs : (..., C) or (...,)
        Predictive class probabilities (leading dimensions are flattened); a 1-D array is
        taken as the probability of class 1 of a binary problem.
    labels : (...,) int
        True classes.
    n_bins : int
    title : str or None
        Prefix of the title (e.g. the method's name).
    path : path-like or None
        Where to save the PNG.

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: the diagram and the count histogram.
    """
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels).reshape(-1).astype(int)
    if p.ndim == 1 or (p.ndim >= 1 and p.shape == np.asarray(labels).shape):
        p = np.stack([1.0 - p.reshape(-1), p.reshape(-1)], axis=-1)
    p = p.reshape(-1, p.shape[-1])
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"{p.shape[0]} predictions but {y.shape[0]} labels")
    edges, counts, acc, conf, ece = _reliability_bins(p, y, n_bins)
    width = edges[1] - edges[0]
    centers = edges[:-1] + width / 2
    has = counts > 0

    fig = _new_figure(4.6, 5.4)
    ax, ax_h = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    _style(ax, grid="both")
    _style(ax_h)
    ax.plot([0, 1], [0, 1], color="0.45", ls="--", lw=1.2, label="perfect calibration", zorder=3)
    ax.bar(
        centers[has],
        acc[has],
        width=width,
        color="#4C72B0",
        edgecolor="white",
        linewidth=0.8,
        label="accuracy",
        zorder=2,
    )
    lo = np.minimum(acc, conf)[has]
    ax.bar(
        centers[has],
        np.abs(conf - acc)[has],
        bottom=lo,
        width=width,
        color="#C44E52",
        alpha=0.35,
        edgecolor="#C44E52",
        hatch="//",
        linewidth=0.6,
        label="gap to confidence",
        zorder=2.5,
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy", fontsize=9)
    _boxed_legend(ax, loc="upper left")
    head = f"{title}: " if title else ""
    ax.set_title(f"{head}reliability (ECE = {ece:.3f})", fontsize=11)

    ax_h.bar(centers, counts, width=width, color="0.55", edgecolor="white", linewidth=0.8)
    ax_h.set_xlabel("confidence (max predicted probability)", fontsize=9)
    ax_h.set_ylabel("count", fontsize=9)
    ax_h.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    return _finish(fig, path)


# -- benchmark summaries ---------------------------------------------------------------------


def metric_bars(
    rows: Sequence[Mapping],
    metric: str = "nll",
    group: str = "k",
    path: str | os.PathLike | None = None,
) -> Figure:
    """Grouped bar chart of a metric per method (bars) and group, e.g. support size K.

    Parameters
    ----------
    rows : list of dict
        Each with ``"method"``, the ``group`` key and ``metric``, e.g.
        ``{"method": "abml", "k": 1, "nll": 0.9, "oracle_nll": 0.7}``. An optional
        ``metric + "_se"`` draws error bars; ``"oracle_" + metric`` draws the oracle (the
        exact Bayes predictive) as a black tick across its group.
    metric : str
    group : str
    path : path-like or None
        Where to save the PNG.

    Returns
    -------
    matplotlib.figure.Figure
    """
    rows = [r for r in rows if metric in r]
    if not rows:
        raise ValueError(f"no row holds the metric {metric!r}")
    methods = _order_methods(dict.fromkeys(str(r["method"]) for r in rows))
    groups = list(dict.fromkeys(r[group] for r in rows))
    try:
        groups = sorted(groups)
    except TypeError:
        pass
    gpos = {g: i for i, g in enumerate(groups)}
    n_m = len(methods)
    width = 0.8 / n_m

    fig, ax = _single_axes(max(4.5, 1.0 + 0.55 * n_m * len(groups) + 0.4 * len(groups)), 3.8)
    for j, name in enumerate(methods):
        mine = [r for r in rows if str(r["method"]) == name]
        x = np.array([gpos[r[group]] for r in mine], dtype=float) + (j - (n_m - 1) / 2) * width
        v = np.array([float(r[metric]) for r in mine])
        se = None
        if all(f"{metric}_se" in r for r in mine):
            se = np.array([float(r[f"{metric}_se"]) for r in mine])
        bars = ax.bar(
            x,
            v,
            width=width * 0.92,
            color=method_color(name),
            label=name,
            yerr=se,
            error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "0.3"},
            zorder=2,
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=6.5, padding=2, color="0.25")
    oracle_key = f"oracle_{metric}"
    labelled = False
    for g in groups:
        o = [float(r[oracle_key]) for r in rows if r[group] == g and oracle_key in r]
        if o:
            c = gpos[g]
            ax.hlines(
                np.mean(o),
                c - 0.45,
                c + 0.45,
                color="black",
                lw=2.2,
                zorder=3,
                label=None if labelled else "oracle (exact Bayes)",
            )
            labelled = True
    ax.axhline(0.0, color="0.3", lw=0.8, zorder=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{group.upper() if group == 'k' else group} = {g}" for g in groups])
    _labels(
        ax,
        "support size" if group == "k" else group,
        _metric_label(metric),
        f"{_metric_label(metric)} by method",
    )
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("oracle"))
    ax.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    ax.margins(y=0.12)
    return _finish(fig, path)


def learning_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    metric: str = "mse",
    path: str | os.PathLike | None = None,
    title: str | None = None,
    logy: bool = False,
) -> Figure:
    """Active-learning curves: a metric against the number of labelled points.

    Each curve gets a colour of its own: its :data:`PALETTE` colour where no other curve of
    the figure has it, else the next unused colour of Matplotlib's colour cycle, in order.

    Parameters
    ----------
    curves : dict[str, dict]
        Name (method or acquisition function) -> ``{"n_labels": [...], metric: [...]}`` with
        an optional ``metric + "_se"`` list, drawn as a ±1 standard error band.
    metric : str
    path : path-like or None
        Where to save the PNG.
    title : str, optional
        Figure title (default: the metric, ±1 s.e.).
    logy : bool
        Logarithmic y axis (MSE curves span decades).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _single_axes(5.2, 3.8, grid="both")
    names = _order_methods(curves)
    colors = _distinct_colors(names)
    for name in names:
        c = curves[name]
        n = np.asarray(c["n_labels"], dtype=float)
        v = np.asarray(c[metric], dtype=float)
        color = colors[name]
        ax.plot(n, v, color=color, lw=2, marker="o", markersize=3.5, label=name)
        if f"{metric}_se" in c:
            se = np.asarray(c[f"{metric}_se"], dtype=float)
            band = REFERENCES[name].colour if name in REFERENCES else color
            ax.fill_between(n, v - se, v + se, color=band, alpha=0.18, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if logy:
        ax.set_yscale("log")
    _labels(
        ax,
        "number of labelled points",
        _metric_label(metric),
        title or f"Active learning: {_metric_label(metric)} (±1 s.e.)",
    )
    _boxed_legend(ax)
    return _finish(fig, path)


def training_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    metric: str = "nll",
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Learning curves of meta-training: a held-out metric against training seconds (log x).

    Parameters
    ----------
    curves : dict[str, dict]
        Line label -> ``{"seconds": [...], metric: [...]}``, optionally ``"method"`` (the
        colour; runs of one method share it, the first drawn solid and the rest dashed).
    metric : str
        ``"nll"`` or ``"accuracy"`` (or any key the curves hold).
    path : path-like or None
        Where to save the PNG.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = _single_axes(6.0, 4.0, grid="both")
    seen: set[str] = set()
    for name in sorted(curves):
        c = curves[name]
        method = str(c.get("method", name))
        t = np.asarray(c["seconds"], dtype=float)
        v = np.asarray(c[metric], dtype=float)
        first = method not in seen
        seen.add(method)
        ax.plot(t, v, color=method_color(method), lw=1.8 if first else 1.0,
                ls="-" if first else "--", alpha=1.0 if first else 0.7,
                label=method if first else None)  # fmt: skip
    ax.set_xscale("log")
    # a span of less than a decade would label every minor tick, and the labels collide
    ax.xaxis.set_minor_formatter(NullFormatter())
    _labels(
        ax,
        "training seconds (validation excluded)",
        _metric_label(metric),
        title or f"Validation {_metric_label(metric)} during meta-training",
    )
    _boxed_legend(ax)
    return _finish(fig, path)


# -- ambiguous regression: which hypothesis the samples resemble ------------------------------

_HYPOTHESIS_COLORS = {"sine": "#0072B2", "line": "#D55E00"}


def hypothesis_samples(
    posteriors: Mapping[str, TaskPosterior],
    reference: TaskPosterior,
    x_support,
    y_support,
    mask_support,
    task_indices: Sequence[int] = (0, 1, 2, 3),
    num_curves: int = 40,
    x_range: tuple[float, float] = (-5.0, 5.0),
    key: jax.Array | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Sine-or-line posterior samples coloured by the hypothesis each resembles.

    One row per method, one column per task. Each panel draws up to ``num_curves`` function
    samples (resampled by weight), blue when the sample is closer to a sine and orange when
    closer to a line (:func:`bayesmeta.evaluate.hypotheses.classify_sine_line`), with the
    support points; its title gives the method's fraction of line-like samples beside the
    reference posterior's exact mass on the line hypothesis.
    """
    from bayesmeta.evaluate.hypotheses import classify_sine_line, reference_line_mass

    if not posteriors:
        raise ValueError("hypothesis_samples needs at least one posterior")
    idx = [int(i) for i in task_indices]
    xs, ys, ms = (np.asarray(a) for a in (x_support, y_support, mask_support))
    key = jax.random.PRNGKey(0) if key is None else key
    ref_mass = np.asarray(reference_line_mass(_select_tasks(reference, idx)))
    grid = np.linspace(x_range[0], x_range[1], 120)
    methods = _order_methods(posteriors)
    nrows, ncols = len(methods), len(idx)
    fig = _new_figure(3.1 * ncols + 0.4, 2.3 * nrows + 0.7)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False, sharex=True))
    for r, name in enumerate(methods):
        sub = _select_tasks(posteriors[name], idx)
        sub = sub.resample(jax.random.fold_in(key, r), num_curves)
        xg = jnp.broadcast_to(jnp.asarray(grid, sub.phi.dtype)[None, :, None], (len(idx), 120, 1))
        f = sub.outputs(xg)[..., 0]  # (T, C, G)
        labels = np.asarray(classify_sine_line(f, grid))
        f = np.asarray(f)
        for c, i in enumerate(idx):
            ax = axes[r, c]
            _style(ax, grid="both")
            for s in range(f.shape[1]):
                kind = "line" if labels[c, s] > 0.5 else "sine"
                ax.plot(grid, f[c, s], color=_HYPOTHESIS_COLORS[kind], lw=0.8, alpha=0.5)
            sel = ms[i] > 0.5
            ax.scatter(xs[i, sel, 0], ys[i, sel, 0], s=42, color="black", edgecolor="white",
                       linewidth=0.8, zorder=5)  # fmt: skip
            ax.set_xlim(*x_range)
            ax.set_ylim(-7, 7)
            ax.set_title(
                f"task {i}: line {labels[c].mean():.0%} (ref {ref_mass[c]:.0%})", fontsize=9
            )
            if c == 0:
                ax.set_ylabel(f"{name}\ny", fontsize=9, color=method_color(name),
                              fontweight="bold")  # fmt: skip
            if r == nrows - 1:
                ax.set_xlabel("x", fontsize=9)
    handles = [
        Line2D([], [], color=_HYPOTHESIS_COLORS["sine"], lw=1.5, label="sample resembles a sine"),
        Line2D([], [], color=_HYPOTHESIS_COLORS["line"], lw=1.5, label="sample resembles a line"),
        Line2D([], [], marker="o", ls="", color="black", label="support points"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("Sine or line? Posterior samples by hypothesis (ref = exact posterior mass)",
                 fontsize=11)  # fmt: skip
    return _finish(fig, path)


# -- 2-D classification: sampled decision boundaries -------------------------------------------


def decision_boundaries(
    posteriors: Mapping[str, TaskPosterior],
    x_support,
    y_support,
    mask_support,
    task_indices: Sequence[int] = (0, 1, 2, 3),
    num_boundaries: int = 12,
    x_range: tuple[float, float] = (-5.0, 5.0),
    true_circles=None,
    key: jax.Array | None = None,
    path: str | os.PathLike | None = None,
    num_grid: int = 80,
) -> Figure:
    """Decision boundaries of posterior samples for 2-D binary classification.

    One row per method, one column per task. Each panel shades the posterior predictive
    p(y = 1 | x, D) and draws the p = ½ contour of up to ``num_boundaries`` samples (resampled
    by weight), with the support points (filled: positive, open: negative) and, if given, the
    true boundary (``true_circles (T, 3)`` rows (c₁, c₂, r), dashed).
    """
    if not posteriors:
        raise ValueError("decision_boundaries needs at least one posterior")
    idx = [int(i) for i in task_indices]
    xs, ys, ms = (np.asarray(a) for a in (x_support, y_support, mask_support))
    if xs.shape[-1] != 2:
        raise ValueError(f"x_support: expected 2-D inputs (T, K, 2), got {xs.shape}")
    key = jax.random.PRNGKey(0) if key is None else key
    g = np.linspace(x_range[0], x_range[1], num_grid)
    gx, gy = np.meshgrid(g, g)
    pts = np.stack([gx.ravel(), gy.ravel()], -1)
    methods = _order_methods(posteriors)
    nrows, ncols = len(methods), len(idx)
    fig = _new_figure(2.8 * ncols + 0.6, 2.6 * nrows + 0.7)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    for r, name in enumerate(methods):
        post = _select_tasks(posteriors[name], idx)
        if not post.likelihood.classifier:
            raise ValueError(f"decision_boundaries needs a categorical likelihood; {name!r} is not")
        xg = jnp.broadcast_to(jnp.asarray(pts, post.phi.dtype)[None], (len(idx), *pts.shape))
        prob = np.asarray(post.probs(xg))[..., 1].reshape(len(idx), num_grid, num_grid)
        sub = post.resample(jax.random.fold_in(key, r), num_boundaries)
        logits = np.asarray(sub.outputs(xg))  # (T, B, G, 2)
        margin = (logits[..., 1] - logits[..., 0]).reshape(len(idx), -1, num_grid, num_grid)
        color = method_color(name)
        for c, i in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(prob[c], origin="lower", extent=(*x_range, *x_range), cmap="Greys",
                      vmin=0, vmax=1, alpha=0.5)  # fmt: skip
            for b in range(margin.shape[1]):
                if margin[c, b].min() < 0 < margin[c, b].max():
                    ax.contour(gx, gy, margin[c, b], levels=[0.0], colors=[color],
                               linewidths=0.9, alpha=0.7)  # fmt: skip
            if true_circles is not None:
                cx, cy, rad = np.asarray(true_circles)[i]
                t = np.linspace(0, 2 * np.pi, 200)
                ax.plot(cx + rad * np.cos(t), cy + rad * np.sin(t), color=_TRUE_COLOR, ls="--",
                        lw=1.3)  # fmt: skip
            sel = ms[i] > 0.5
            pos = sel & (ys[i] == 1)
            neg = sel & (ys[i] != 1)
            ax.scatter(xs[i, pos, 0], xs[i, pos, 1], s=45, color="black", edgecolor="white",
                       zorder=5)  # fmt: skip
            ax.scatter(xs[i, neg, 0], xs[i, neg, 1], s=45, facecolor="white", edgecolor="black",
                       zorder=5)  # fmt: skip
            ax.set_xlim(*x_range)
            ax.set_ylim(*x_range)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
            if r == 0:
                ax.set_title(f"task {i} (K = {int(sel.sum())})", fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=9, color=color, fontweight="bold")
    handles = [
        Line2D([], [], color="0.3", lw=1.0, label="sampled boundaries (p = ½)"),
        Patch(facecolor="0.5", alpha=0.5, label="predictive p(y = 1)"),
        Line2D([], [], marker="o", ls="", color="black", label="positive support point"),
    ]
    if true_circles is not None:
        handles.append(Line2D([], [], color=_TRUE_COLOR, ls="--", label="true boundary"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8,
               frameon=False)  # fmt: skip
    fig.suptitle("Circles: decision boundaries of posterior samples", fontsize=11)
    return _finish(fig, path)
