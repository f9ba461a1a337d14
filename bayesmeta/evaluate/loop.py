"""Active learning driven by hand: suggest a point, run the experiment, tell the result.

:class:`ActiveLoop` (made by :meth:`bayesmeta.fitted.Fitted.active`) holds one task: its
support set, a pool of candidate inputs and the current posterior. ``suggest`` ranks the
unlabelled candidates by an acquisition (:data:`~bayesmeta.evaluate.active.ACQUISITIONS`),
``tell`` writes labels into the support set and re-adapts (``method.adapt``, never
re-meta-training)::

    loop = fitted.active(x_support, y_support, x_pool, acquisition="bald")
    i = loop.suggest()[0]                  # the most informative candidate
    loop.tell(i, run_experiment(x_pool[i]))
    loop.plot()                            # predictive bands and the candidates' scores

It is the notebook face of :func:`~bayesmeta.evaluate.active.init_active`,
:func:`~bayesmeta.evaluate.active.propose` and :func:`~bayesmeta.evaluate.active.label`:
the support set is padded to ``K + P`` slots with a mask from the start, so every adaptation
has the same shapes and ``method.adapt`` compiles once, however many points are told.

On a fit to your own data (``bayesmeta.fit(model, method, data=rows)``) every input and
output of the loop is in the data's own units, as :meth:`Fitted.evaluate
<bayesmeta.fitted.Fitted.evaluate>` reads a task set in data units: ``x`` is standardised by
the fit's scaler (``fitted.spec.splits.scaler``) on the way in, a real ``y`` too, and the
plot maps the predictive back. The posterior itself and the acquisition scores are in the
fitted (standardised) units.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.evaluate.active import ActiveState, get_acquisition, init_active, label
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support

__all__ = ["ActiveLoop"]

#: :func:`label` compiled: one program per shape instead of its eager ops one by one (the
#: loop checks its inputs itself, with messages naming ``tell``'s arguments)
_label = jax.jit(label)


def _ranked(scores: np.ndarray, available: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` best available indices, best first, as
    :func:`~bayesmeta.evaluate.active.select_top` ranks them (NaN lowest, unavailable never),
    with ties going to the lower index, so that the first is ``argmax`` of the scores."""
    s = np.where(np.isnan(scores), np.finfo(np.float64).min, scores)
    s = np.where(available, s, -np.inf)
    return np.argsort(-s, kind="stable")[:n].astype(np.int64)


def _finite(name: str, a: np.ndarray) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: expected finite values, got {int(bad.sum())} NaN/inf value(s) (the first "
            f"at {first})"
        )


class ActiveLoop:
    """One task's pool-based active learning, driven by hand (:meth:`Fitted.active
    <bayesmeta.fitted.Fitted.active>` makes one).

    Parameters
    ----------
    fitted : Fitted
        The meta-trained run; θ stays fixed.
    x_support : (K, Dx), or (K,) when Dx = 1; K may be 0
    y_support : (K,) or (K, Dy) real, or (K,) integer class labels
    x_pool : (P, Dx), or (P,) when Dx = 1
        The candidates.
    acquisition : str or callable
        A key of :data:`~bayesmeta.evaluate.active.ACQUISITIONS` or ``fn(key, posterior,
        x_pool (1, P, Dx)) -> (1, P)``.
    key : PRNG key or int, optional
        Default ``PRNGKey(0)``. Each adaptation splits it: ``key, adapt_key, score_key =
        split(key, 3)``, so the same calls give the same suggestions.
    num_samples : int
        Posterior samples per adaptation (ignored by particle and grid methods).

    Attributes
    ----------
    adapt_key, score_key : PRNG keys
        The keys of the current posterior's adaptation and of its acquisition scores:
        ``fitted.adapt(loop.x_support, loop.y_support, num_samples, key=loop.adapt_key)``
        is ``loop.posterior`` (up to float rounding of the padding).
    history : list of dict
        One ``{"indices": (b,) int, "y": labels}`` per :meth:`tell`, in order.
    """

    def __init__(
        self,
        fitted: Any,
        x_support: Any,
        y_support: Any,
        x_pool: Any,
        acquisition: Any = "bald",
        key: jax.Array | int | None = None,
        num_samples: int = 100,
    ):
        spec = fitted.spec
        fam = spec.family
        self._fitted = fitted
        self._classify = bool(fam.likelihood.classifier)
        self._dx, self._dy = int(fam.dx), int(fam.dy)
        self._num_classes = getattr(fam, "num_classes", None) or getattr(
            spec.model, "num_classes", None
        )
        self._fn = get_acquisition(acquisition)
        self.acquisition = (
            acquisition
            if isinstance(acquisition, str)
            else getattr(acquisition, "__name__", "custom")
        )
        if (
            isinstance(num_samples, bool)
            or not isinstance(num_samples, int | np.integer)
            or (num_samples < 1)
        ):
            raise ValueError(f"num_samples: expected a positive integer, got {num_samples!r}")
        self.num_samples = int(num_samples)
        splits = getattr(spec, "splits", None)
        self._scaler = None if splits is None else splits.scaler

        xs, ys = self._user_support(x_support, y_support)
        xp = self._user_x(x_pool, "x_pool", "P")
        if xp.shape[0] < 1:
            raise ValueError(f"x_pool: expected at least one candidate, got shape {xp.shape}")
        self._xs0, self._ys0, self._xp = xs, ys, xp
        self._xp_fit = jnp.asarray(self._to_fit_x(xp))[None]  # (1, P, Dx)
        k, p = xs.shape[0], xp.shape[0]
        support = Support(
            jnp.asarray(self._to_fit_x(xs))[None],
            jnp.asarray(self._to_fit_y(ys))[None],
            jnp.ones((1, k), jnp.float32),
        )
        # room for every candidate: the shapes never change, so adapt compiles once
        self._state: ActiveState = init_active(support, self._xp_fit, capacity=k + p)
        if fitted.method.name == "nuts":  # one MCMC run per task: nothing to jit
            self._adapt = fitted.method.adapt
        else:
            self._adapt = fitted._adapt
        if key is None:
            key = jax.random.PRNGKey(0)
        elif isinstance(key, int | np.integer) and not isinstance(key, bool):
            key = jax.random.PRNGKey(int(key))
        self._key = key
        self._labelled: list[int] = []
        self._told: list[np.ndarray] = []
        self.history: list[dict[str, np.ndarray]] = []
        self._readapt()
        n = self._post.num_samples
        if n != self.num_samples and n > 1:
            warnings.warn(
                f"num_samples: the {fitted.method.name!r} posterior is its {n} particles, not "
                f"the {self.num_samples} draws asked for",
                UserWarning,
                stacklevel=3,
            )

    # -- units and shapes -------------------------------------------------------------------
    def _to_fit_x(self, x: np.ndarray) -> np.ndarray:
        if self._scaler is None:
            return x
        return np.asarray(self._scaler.transform_x(x), np.float32)

    def _to_fit_y(self, y: np.ndarray) -> np.ndarray:
        if self._scaler is None or self._classify:
            return y
        return np.asarray(self._scaler.transform_y(y), np.float32)

    def _to_data_y(self, y: np.ndarray) -> np.ndarray:
        if self._scaler is None or self._classify:
            return np.asarray(y)
        return np.asarray(self._scaler.inverse_y(np.asarray(y, np.float64)))

    def _user_x(self, x: Any, name: str, n: str) -> np.ndarray:
        try:
            a = np.asarray(x, np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected numbers, got {type(x).__name__}") from None
        if a.ndim == 1 and self._dx == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[1] != self._dx:
            raise ValueError(
                f"{name}: expected shape ({n}, {self._dx}) (one task), got {np.shape(x)}"
            )
        _finite(name, a)
        return a

    def _user_y(self, y: Any, b: int, name: str, scalar: bool = False) -> np.ndarray:
        """``y`` of ``b`` points as ``(b, Dy)`` float32 or ``(b,)`` int32 labels."""
        try:
            a = np.asarray(y, np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected numbers, got {type(y).__name__}") from None
        if self._classify:
            if a.ndim == 0 and b == 1:
                a = a[None]
            if a.shape != (b,):
                raise ValueError(f"{name}: expected {b} class labels, shape ({b},), got {a.shape}")
            _finite(name, a)
            c = self._num_classes
            if np.any(a != np.round(a)) or np.any(a < 0) or (c is not None and np.any(a >= c)):
                rng = "0..C-1" if c is None else f"0..{int(c) - 1}"
                raise ValueError(
                    f"{name}: expected integer class labels in {rng}, got {a.tolist()}"
                )
            return a.astype(np.int32)
        dy = self._dy
        if a.ndim == 0 and b == 1 and dy == 1:
            a = a.reshape(1, 1)
        elif scalar and a.shape == (dy,):
            a = a[None]
        elif a.shape == (b,) and dy == 1:
            a = a[:, None]
        if a.shape != (b, dy):
            want = f"({b},) or ({b}, {dy})" if dy == 1 else f"({b}, {dy})"
            raise ValueError(f"{name}: expected shape {want} for {b} point(s), got {a.shape}")
        _finite(name, a)
        return a.astype(np.float32)

    def _user_support(self, x_support: Any, y_support: Any) -> tuple[np.ndarray, np.ndarray]:
        if x_support is None or np.size(x_support) == 0:
            xs = np.zeros((0, self._dx), np.float32)
        else:
            xs = self._user_x(x_support, "x_support", "K")
        k = xs.shape[0]
        if k == 0:
            if y_support is not None and np.size(y_support) != 0:
                raise ValueError(
                    f"y_support: expected no labels for an empty x_support, got shape "
                    f"{np.shape(y_support)}"
                )
            if self._classify:
                return xs, np.zeros((0,), np.int32)
            return xs, np.zeros((0, self._dy), np.float32)
        return xs, self._user_y(y_support, k, "y_support")

    # -- the loop ----------------------------------------------------------------------------
    def _readapt(self) -> None:
        self._key, self.adapt_key, self.score_key = jax.random.split(self._key, 3)
        st = self._fitted.state
        self._post = self._adapt(self.adapt_key, st, self._state.support, self.num_samples)
        self._raw_scores: jax.Array | None = None

    def _score(self, key: jax.Array, post: TaskPosterior) -> jax.Array:
        s = self._fn(key, post, self._xp_fit)
        p = self._xp_fit.shape[1]
        if tuple(jnp.shape(s)) != (1, p):
            raise ValueError(
                f"acquisition: expected scores of shape (1, P)=(1, {p}), got {jnp.shape(s)}"
            )
        return s

    def _current_scores(self) -> jax.Array:
        if self._raw_scores is None:
            self._raw_scores = self._score(self.score_key, self._post)
        return self._raw_scores

    @property
    def posterior(self) -> TaskPosterior:
        """The current task posterior (one task, fitted units)."""
        return self._post

    @property
    def scores(self) -> np.ndarray:
        """The acquisition scores of the pool ``(P,)`` on the current posterior (higher = more
        informative; fitted units); labelled points are ``-inf``."""
        s = np.asarray(self._current_scores()[0], np.float64).copy()
        s[~np.asarray(self._state.pool_available[0])] = -np.inf
        return s

    @property
    def labelled(self) -> np.ndarray:
        """Pool indices told so far, in order, ``(n,)``."""
        return np.asarray(self._labelled, np.int64)

    @property
    def unlabelled(self) -> np.ndarray:
        """Pool indices not told yet, ascending."""
        return np.flatnonzero(np.asarray(self._state.pool_available[0]))

    @property
    def x_pool(self) -> np.ndarray:
        """The candidates ``(P, Dx)`` as given."""
        return self._xp.copy()

    @property
    def x_support(self) -> np.ndarray:
        """The current support inputs ``(K + n, Dx)``: the initial ones, then the told ones."""
        return np.concatenate([self._xs0, self._xp[self.labelled]])

    @property
    def y_support(self) -> np.ndarray:
        """The current support labels: ``(K + n, Dy)`` real or ``(K + n,)`` class labels."""
        return np.concatenate([self._ys0, *self._told])

    def suggest(self, n: int = 1, fantasize: bool = False, cost: Any = None) -> np.ndarray:
        """The ``n`` unlabelled pool indices to label next, best first.

        Greedy (default): the top ``n`` scores of :attr:`scores`. With ``fantasize`` the batch
        is built one point at a time: each chosen point is labelled with its predictive mean
        (most probable class for a classifier), the posterior re-adapted and the pool
        rescored, so that the batch avoids near-duplicates (the "kriging believer"); the
        loop's own state is not changed.

        ``cost`` ``(P,)``, positive, one per candidate in the pool's order (the price of
        labelling it: an experiment's time, a lab's fee), ranks by information per unit cost,
        ``score / cost``. That needs non-negative scores (``variance``, ``bald``, ``random``;
        BALD's Monte Carlo estimate is clipped at 0); a differential entropy or a function's
        score that is negative is refused with a cost.
        """
        left = int(np.sum(np.asarray(self._state.pool_available)))
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= left:
            raise ValueError(
                f"n: expected an integer in [1, {left}] (the unlabelled pool points), got {n!r}"
            )
        n = int(n)
        per_unit = self._cost(cost)
        avail = np.asarray(self._state.pool_available[0])
        if not fantasize or n == 1:
            return _ranked(per_unit(self.scores, avail), avail, n)
        state, post, chosen = self._state, self._post, []
        for j in range(n):  # n small; each step re-adapts on the same shapes (no recompile)
            s = (
                self._current_scores()
                if j == 0
                else self._score(jax.random.fold_in(self.score_key, j), post)
            )
            best = int(_ranked(per_unit(np.asarray(s[0], np.float64), avail), avail, 1)[0])
            chosen.append(best)
            if j == n - 1:
                break
            avail = avail.copy()
            avail[best] = False
            idx = jnp.full((1, 1), best, jnp.int32)
            x_new = self._xp_fit[:, idx[0]]  # (1, 1, Dx)
            if self._classify:
                y_new = jnp.argmax(post.probs(x_new), -1).astype(state.support.y.dtype)
            else:
                y_new = post.mean(x_new).astype(state.support.y.dtype)
            state = _label(state, self._xp_fit, idx, y_new)
            k = jax.random.fold_in(self.adapt_key, j + 1)
            post = self._adapt(k, self._fitted.state, state.support, self.num_samples)
        return np.asarray(chosen, np.int64)

    def _cost(self, cost: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``(scores, available) -> scores / cost`` after checking ``cost`` (identity if None)."""
        if cost is None:
            return lambda scores, available: scores
        p = self._xp.shape[0]
        c = np.asarray(cost, np.float64)
        if c.shape != (p,):
            raise ValueError(f"cost: expected one per pool point, shape ({p},), got "
                             f"{np.shape(cost)}")  # fmt: skip
        if not np.all(np.isfinite(c) & (c > 0)):
            j = int(np.flatnonzero(~(np.isfinite(c) & (c > 0)))[0])
            raise ValueError(f"cost: expected positive finite costs, got {float(c[j])} at pool "
                             f"index {j}")  # fmt: skip

        # BALD and the variance are non-negative, but BALD's Monte Carlo estimate can dip just
        # below 0: clip. Any other score (a differential entropy, a user's function) may truly
        # be negative, and score / cost would then prefer the dearest point: refuse.
        clip = self.acquisition in ("bald", "variance", "random")

        def per_unit(scores: np.ndarray, available: np.ndarray) -> np.ndarray:
            if clip:
                return np.maximum(scores, 0.0) / c
            neg = available & (scores < 0)
            if neg.any():
                raise ValueError(
                    f"cost: information per unit cost needs non-negative scores, but "
                    f"{self.acquisition!r} scores pool index {int(np.flatnonzero(neg)[0])} "
                    "below 0; use 'bald' or 'variance' with a cost"
                )
            return scores / c

        return per_unit

    def tell(self, indices: Any, y: Any) -> ActiveLoop:
        """Add pool points with their labels to the support set and re-adapt.

        Parameters
        ----------
        indices : int or (b,) int
            Pool indices, none labelled before, no repeats.
        y : their labels, in the data's own units on a data fit: a scalar or ``(Dy,)`` for
            one index; ``(b,)`` or ``(b, Dy)`` real, or ``(b,)`` class labels

        Returns
        -------
        ActiveLoop
            Itself, with the new posterior.
        """
        p = self._xp.shape[0]
        scalar = np.ndim(indices) == 0
        idx = np.atleast_1d(np.asarray(indices))
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError(f"indices: expected an index or a 1-D list of them, got {idx.shape}")
        if idx.dtype.kind not in "iu":
            raise ValueError(
                f"indices: expected integer pool indices, got {idx.dtype} {idx.tolist()}"
            )
        if np.any((idx < 0) | (idx >= p)):
            raise ValueError(f"indices: expected pool indices in [0, {p}), got {idx.tolist()}")
        if np.unique(idx).size != idx.size:
            raise ValueError(f"indices: expected no repeats, got {idx.tolist()}")
        told = np.intersect1d(idx, self.labelled)
        if told.size:
            raise ValueError(f"indices: expected unlabelled pool points, got {told.tolist()} "
                             "already told")  # fmt: skip
        y_user = self._user_y(y, idx.size, "y", scalar=scalar)
        y_fit = jnp.asarray(self._to_fit_y(y_user))[None]
        self._state = _label(self._state, self._xp_fit, jnp.asarray(idx, jnp.int32)[None], y_fit)
        self._labelled.extend(int(i) for i in idx)
        self._told.append(y_user)
        self.history.append({"indices": idx.astype(np.int64), "y": y_user.copy()})
        self._readapt()
        return self

    def __repr__(self) -> str:
        return (
            f"ActiveLoop(method={self._fitted.method.name!r}, acquisition={self.acquisition!r}, "
            f"support={self._xs0.shape[0] + len(self._labelled)}, "
            f"labelled={len(self._labelled)} of {self._xp.shape[0]} candidates)"
        )

    # -- the picture -------------------------------------------------------------------------
    def plot(self, ax: Any = None, *, num_draws: int = 1000, num_grid: int = 200, key=None):
        """Predictive mean and central 50%/90% bands (noise included) over the pool's x range,
        the support points, and the candidates' scores on a twin axis, with the best one
        marked (1-D regression only; data units on a data fit).

        Returns
        -------
        matplotlib.axes.Axes
            The main axes (``ax.figure`` is the figure; the scores' axes is its twin).
        """
        from bayesmeta import plots

        if self._classify or self._dx != 1 or self._dy != 1:
            raise ValueError("plot: for 1-D regression (Dx = Dy = 1); this model has "
                             f"Dx={self._dx}, Dy={self._dy}"
                             + (", class labels" if self._classify else ""))  # fmt: skip
        xs, ys = self.x_support[:, 0], self.y_support[:, 0]
        xp = self._xp[:, 0]
        allx = np.concatenate([xs, xp])
        lo, hi = float(allx.min()), float(allx.max())
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        grid = np.linspace(lo - pad, hi + pad, int(num_grid)).astype(np.float32)
        xg = jnp.asarray(self._to_fit_x(grid[:, None]), jnp.float32)[None]  # (1, G, 1)
        key = jax.random.PRNGKey(0) if key is None else key
        levels = (0.05, 0.25, 0.75, 0.95)
        q = plots._predictive_quantiles(self._post, xg, key, levels, int(num_draws))
        q = self._to_data_y(q[:, 0, :, 0])  # (4, G)
        mean = self._to_data_y(np.asarray(self._post.mean(xg))[0])[:, 0]
        if ax is None:
            ax = plots._new_figure(6.0, 3.4).add_subplot()
        name = self._fitted.method.name
        band = plots._band_color(name)
        plots._style(ax, grid="both")
        ax.fill_between(grid, q[0], q[3], color=band, alpha=0.15, lw=0, label="90% interval")
        ax.fill_between(grid, q[1], q[2], color=band, alpha=0.30, lw=0, label="50% interval")
        ax.plot(grid, mean, color=plots.method_color(name), lw=2.0, label="predictive mean")
        ax.scatter(xs, ys, s=42, color="black", edgecolor="white", linewidth=0.8, zorder=5,
                   label=f"support (K = {xs.size})")  # fmt: skip
        ax.set_xlim(grid[0], grid[-1])
        ax.set_xlabel("x", fontsize=9)
        ax.set_ylabel("y", fontsize=9)
        twin = ax.twinx()
        scores = self.scores
        free = np.isfinite(scores) | np.isnan(scores)
        order = np.argsort(xp[free])
        color = plots.method_color(self.acquisition)
        twin.plot(xp[free][order], scores[free][order], color=color, lw=0.8, marker=".",
                  ms=4, alpha=0.8, label=f"{self.acquisition} score")  # fmt: skip
        if free.any():
            best = int(self.suggest()[0])
            ax.axvline(xp[best], color=color, ls="--", lw=1.0, label="next suggestion")
        twin.set_ylabel(f"{self.acquisition} score", fontsize=9, color=color)
        twin.tick_params(labelsize=8, colors=color)
        twin.spines["top"].set_visible(False)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left", frameon=False)
        return ax
