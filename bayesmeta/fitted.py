"""A fitted run: adapt, evaluate, plot and save a meta-trained method
(:func:`bayesmeta.fit` and :func:`bayesmeta.load` return one)."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.inference.base import MetaState, Method
from bayesmeta.inference.registry import ORACLE, trainable
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support
from bayesmeta.zoo import ModelSpec


@dataclass(frozen=True)
class Fitted:
    """A meta-trained method: its model spec, the method's pure functions, the trained state
    and the run's provenance (``info``: model, method, seed, steps, settings, seconds,
    history, versions).

    ``state`` is the best validated state when the fit validated, else the last one;
    ``manifest`` is what determined it (:meth:`bayesmeta.fitting.Run.manifest`), which
    :meth:`save` writes beside it; ``result`` is the training's
    :class:`~bayesmeta.inference.train.TrainResult` (None for a loaded run or ``reference``).
    """

    spec: ModelSpec
    method: Method
    state: MetaState
    info: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    result: Any = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        """One line: model, method, steps, seed, best validation NLL and training time (the
        dataclass default would print the whole spec and state)."""
        i = self.info
        parts = [f"model={self.spec.name!r}", f"method={self.method.name!r}"]
        for key in ("steps", "seed", "best_step"):
            if i.get(key) is not None:
                parts.append(f"{key}={i[key]}")
        if i.get("best_validation_nll") is not None:
            parts.append(f"validation_nll={float(i['best_validation_nll']):.4g}")
        if i.get("train_seconds") is not None:
            parts.append(f"train_seconds={float(i['train_seconds']):.1f}")
        return f"Fitted({', '.join(parts)})"

    @functools.cached_property
    def _adapt(self):
        return jax.jit(self.method.adapt, static_argnums=3)

    def adapt(
        self,
        x_support: Any,
        y_support: Any,
        num_samples: int = 100,
        *,
        mask: Any = None,
        key: jax.Array | None = None,
    ) -> TaskPosterior:
        """The task posterior given support sets.

        Parameters
        ----------
        x_support : (K, Dx) for one task or (T, K, Dx) for T tasks; (K,) when Dx = 1
        y_support : (K,) or (K, Dy) for one task, (T, K) or (T, K, Dy) for T; class labels
            (K,) or (T, K) for a classifier
        num_samples : int
            Posterior samples (particles, draws) per task.
        mask : (K,) or (T, K) of 0/1, optional
            Which support points are real (default: all).
        key : PRNG key, optional
            Default ``PRNGKey(0)``: the same call gives the same samples.

        Returns
        -------
        TaskPosterior
            For T tasks (T = 1 for a single task).
        """
        support = self._support(x_support, y_support, mask)
        key = jax.random.PRNGKey(0) if key is None else key
        if self.method.name == "nuts":  # one MCMC run per task: nothing to jit
            return self.method.adapt(key, self.state, support, int(num_samples))
        post = self._adapt(key, self.state, support, int(num_samples))
        if post.num_samples != int(num_samples) and post.num_samples > 1:
            warnings.warn(
                f"num_samples: the {self.method.name!r} posterior is its {post.num_samples} "
                f"particles, not the {int(num_samples)} draws asked for",
                UserWarning,
                stacklevel=2,
            )
        return post

    def active(
        self,
        x_support: Any,
        y_support: Any,
        x_pool: Any,
        acquisition: Any = "bald",
        key: jax.Array | int | None = None,
        num_samples: int = 100,
    ):
        """Active learning on one task, driven by hand: ``loop.suggest(n)`` ranks the pool,
        ``loop.tell(indices, y)`` adds labels and re-adapts, ``loop.plot()`` shows it
        (:class:`~bayesmeta.evaluate.loop.ActiveLoop`, docs/active.md).

        On a fit to your own data, ``x`` and ``y`` are in the data's own units (standardised
        by the fit's scaler on the way in, as :meth:`evaluate` does with ``units="data"``).

        Parameters
        ----------
        x_support : (K, Dx), or (K,) when Dx = 1; K may be 0 (or ``None``)
        y_support : (K,) or (K, Dy); class labels (K,) for a classifier
        x_pool : (P, Dx), or (P,) when Dx = 1
            The candidates.
        acquisition : str or callable
            ``"variance"``, ``"entropy"``, ``"bald"``, ``"random"`` or
            ``fn(key, posterior, x_pool) -> scores (1, P)``.
        key : PRNG key or int, optional
            Default ``PRNGKey(0)``; split once per adaptation.
        num_samples : int
            Posterior samples per adaptation.

        Returns
        -------
        bayesmeta.evaluate.loop.ActiveLoop
        """
        from bayesmeta.evaluate.loop import ActiveLoop

        return ActiveLoop(self, x_support, y_support, x_pool, acquisition, key, num_samples)

    def _support(self, x_support, y_support, mask) -> Support:
        fam = self.spec.family
        classify = fam.likelihood.classifier
        x = np.asarray(x_support, np.float32)
        if x.ndim == 1 and fam.dx == 1:
            x = x[:, None]
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[-1] != fam.dx:
            raise ValueError(
                f"x_support: expected (K, {fam.dx}) or (T, K, {fam.dx}), got {np.shape(x_support)}"
            )
        t, k = x.shape[:2]
        y = np.asarray(y_support)
        if classify:
            if y.ndim == 1:
                y = y[None]
            if y.shape != (t, k) or y.dtype.kind not in "iu":
                raise ValueError(
                    f"y_support: expected integer labels of shape ({k},) or ({t}, {k}), got "
                    f"{np.shape(y_support)} {y.dtype}"
                )
            y = y.astype(np.int32)
        else:
            y = y.astype(np.float32)
            if y.ndim == 1 and fam.dy == 1 and y.shape[0] == k:
                y = y[:, None]
            if y.ndim == 2 and y.shape == (k, fam.dy) and t == 1:
                y = y[None]
            if y.ndim == 2 and y.shape == (t, k) and fam.dy == 1:
                y = y[..., None]
            if y.shape != (t, k, fam.dy):
                raise ValueError(
                    f"y_support: expected ({k},) or ({k}, {fam.dy}) for one task, or "
                    f"({t}, {k}, {fam.dy}), got {np.shape(y_support)}"
                )
        if mask is None:
            m = np.ones((t, k), np.float32)
        else:
            m = np.asarray(mask, np.float32)
            m = m[None] if m.ndim == 1 else m
            if m.shape != (t, k):
                raise ValueError(f"mask: expected ({k},) or ({t}, {k}), got {np.shape(mask)}")
        return Support(jnp.asarray(x), jnp.asarray(y), jnp.asarray(m))

    def held_out(
        self, k: int, num_tasks: int = 100, num_query: int = 50, split: str = "test"
    ) -> dict[str, np.ndarray]:
        """A task set (docs/formats.md) of tasks no training step saw: ``split="test"`` for
        reports, ``"validation"`` for choices (:meth:`ModelSpec.held_out`)."""
        return self.spec.held_out(split, k, num_tasks, num_query)

    def evaluate(
        self,
        tasks: dict | str | Path,
        num_samples: int = 100,
        *,
        key: jax.Array | None = None,
        temperature: float | None = None,
        units: str | None = None,
        calibration=None,
    ):
        """Adapt to a task set's support sets and score its query sets: the scorer of
        ``bayesmeta evaluate`` (:func:`bayesmeta.scoring.score_tasks`).

        ``tasks`` is a dict from :meth:`held_out` or :func:`~bayesmeta.tasks.io.load_tasks`,
        or a task file's path. A classifier's ``temperature`` (:meth:`temperature`) adds the
        temperature-scaled metrics beside its own.

        On a fit to grouped data with a real ``y`` the report is in the data's own units, with
        the pooled and the per-group empirical-Bayes linear regressions beside the method and
        the paired differences, as the command line reports it. ``units`` says which units
        ``tasks`` are in: ``"fitted"`` (standardised, as :meth:`held_out` and
        :func:`bayesmeta.tasks` give them; the default for a dict) or ``"data"`` (the data's
        own, as ``bayesmeta tasks --data`` writes them; the default for a file). A task set
        from :meth:`held_out`, :func:`bayesmeta.tasks` or
        :func:`bayesmeta.tasks.data.held_out_tasks` says its units itself; a plain dict on a
        data fit must say them here. A regression's
        ``calibration`` (:meth:`calibrate`) adds ``recalibrated`` (the variance-scaled
        predictive's NLL and coverage) and ``conformal`` (split-conformal intervals' coverage
        and their guarantee) beside the method's own numbers. A run that stored its
        calibration (``info["calibration"]``: ``auto`` fits one on the validation groups at
        each support size it scores) uses the stored one fitted at the task set's support
        size unless ``calibration=False``.

        Returns
        -------
        Report
            A dict of the metrics with a readable repr and ``to_dataframe()`` (one row per
            task; on grouped data a task is one group, so standard errors are over groups).
        """
        from bayesmeta.scoring import score_tasks

        splits = getattr(self.spec, "splits", None)
        if units is None:
            units = getattr(tasks, "units", None) if isinstance(tasks, dict) else "data"
        if units is None:
            if splits is not None:  # a data fit: the two units differ, and nothing says which
                raise ValueError(
                    "units: this task set does not say its units; pass units='fitted' for "
                    "tasks in the fit's standardised units (held_out, bayesmeta.tasks) or "
                    "units='data' for the data's own (bayesmeta.tasks.data.held_out_tasks)"
                )
            units = "fitted"
        if units not in ("fitted", "data"):
            raise ValueError(f"units: expected 'fitted' or 'data', got {units!r}")
        if not isinstance(tasks, dict):
            from bayesmeta.tasks.io import load_tasks

            tasks = load_tasks(tasks)
        scaler = None if splits is None or splits.scaler.y_mean is None else splits.scaler
        if scaler is not None and units == "fitted":
            tasks = dict(tasks)
            for name in ("x_support", "x_query"):
                tasks[name] = np.asarray(tasks[name]) * scaler.x_scale + scaler.x_mean
            for name in ("y_support", "y_query"):
                tasks[name] = scaler.inverse_y(tasks[name])
        elif splits is not None and units == "data" and scaler is None:
            tasks = dict(tasks)  # only x was standardised (labels, counts)
            for name in ("x_support", "x_query"):
                tasks[name] = splits.scaler.transform_x(tasks[name]).astype(np.float32)
        if calibration is None:
            from bayesmeta.evaluate.calibrate import stored_calibration

            calibration = stored_calibration(self.info, tasks)
        elif calibration is False:
            calibration = None
        report, _ = score_tasks(self.spec, self.method, self.state, tasks, int(num_samples),
                                key=key, scaler=scaler, temperature=temperature,
                                adapt=None if self.method.name == "nuts" else self._adapt,
                                calibration=calibration)  # fmt: skip
        return report

    def inference_data(
        self,
        x_support: Any,
        y_support: Any,
        num_samples: int = 1000,
        *,
        x: Any = None,
        y: Any = None,
        mask: Any = None,
        chains: int = 1,
        key: jax.Array | None = None,
    ):
        """The task posterior given support sets as ``arviz.InferenceData``, as
        ``az.from_numpyro`` would give it: for a NumPyro model the posterior group names the
        model's own per-task sites (constrained, dims ``(chain, draw, task, ...)``) and its θ
        sites (the fitted point estimate in every draw); with query inputs ``x`` the posterior
        predictive, and with their targets ``y`` the pointwise log-likelihood (float64) for
        ``az.loo`` / ``az.waic`` (:meth:`TaskPosterior.to_inference_data
        <bayesmeta.posterior.TaskPosterior.to_inference_data>`)."""
        post = self.adapt(x_support, y_support, num_samples, mask=mask, key=key)
        model = self.spec.model
        sites = theta = None
        if hasattr(model, "site_values"):
            names = set(model.theta_keys)
            th = {k: v for k, v in self.state.theta.items() if k in names}
            values = jax.jit(jax.vmap(jax.vmap(lambda p: model.site_values(th, p))))

            def sites(draws):
                out = values(jnp.asarray(draws))
                return {k: v for k, v in out.items() if k not in names}

            one = model.site_values(th, jnp.zeros(model.num_params))
            theta = {k: np.asarray(v) for k, v in one.items() if k in names}
        xq = None if x is None else jnp.asarray(x, jnp.float32)
        return post.to_inference_data(x=xq, y=y, chains=chains, key=key, sites=sites,
                                      theta=theta)  # fmt: skip

    def nuts(
        self, num_warmup: int = 500, num_chains: int = 4, target_accept_prob: float = 0.9
    ) -> Fitted:
        """NUTS over each task's φ at this fit's θ (:func:`bayesmeta.inference.nuts`): the
        exact posterior that this fit's method approximates, as a :class:`Fitted` whose
        :meth:`adapt`, :meth:`evaluate` and :meth:`inference_data` run NUTS per task (a
        reference for small networks and a few tasks; ``bayesmeta.fit(model, "nuts")`` is
        this at the model's initial θ). The built-in model needs a θ with a prior scale, so a
        MAML-type fit of it is refused."""
        import dataclasses

        from bayesmeta.inference.nuts import nuts

        method = nuts(self.spec.model, dict(self.state.theta), num_warmup=num_warmup,
                      num_chains=num_chains, target_accept_prob=target_accept_prob)  # fmt: skip
        info = {**self.info, "method": "nuts", "theta_from": self.method.name}
        return dataclasses.replace(self, method=method, state=method.init(None), info=info,
                                   result=None)  # fmt: skip

    def calibrate(
        self,
        k: int,
        num_tasks: int = 200,
        num_query: int = 50,
        num_samples: int = 100,
        *,
        conformal: str = "pooled",
        seed: int = 0,
    ):
        """Fit a regression's interval calibration on validation tasks with ``k`` support
        points (on grouped data: one task per validation group): the variance scale and the
        split-conformal levels (:mod:`bayesmeta.evaluate.calibrate`, where each one's
        coverage guarantee is stated). Pass the result to :meth:`evaluate`.

        Returns
        -------
        bayesmeta.evaluate.calibrate.Calibration
        """
        from bayesmeta.evaluate.calibrate import (
            Calibration,
            conformity_scores,
            fit_conformal,
            fit_variance_scale,
        )

        if self.spec.family.likelihood.classifier:
            raise ValueError("calibrate: for regression; a classifier's calibration is "
                             "temperature()")  # fmt: skip
        tasks = self.held_out(k, num_tasks, num_query, split="validation")
        post = self.adapt(tasks["x_support"], tasks["y_support"], num_samples,
                          mask=tasks.get("mask_support"))  # fmt: skip
        xq, yq, mask = tasks["x_query"], tasks["y_query"], tasks.get("mask_query")
        try:
            scale = fit_variance_scale(post, xq, yq, mask)
        except ValueError:  # a discrete likelihood: conformal intervals only
            scale = None
        conf = fit_conformal(conformity_scores(post, xq, yq, mask), method=conformal, seed=seed)
        return Calibration(scale, conf, int(k), int(np.shape(xq)[0]))

    def temperature(
        self, k: int, num_tasks: int = 200, num_query: int | None = None, num_samples: int = 100
    ) -> float:
        """The temperature T that minimises a classifier's NLL on validation tasks with ``k``
        shots (:func:`~bayesmeta.evaluate.metrics.fit_temperature`; classes no test task
        uses): pass it to :meth:`evaluate` for the post-hoc calibrated baseline."""
        from bayesmeta.evaluate import fit_temperature

        if not self.spec.family.likelihood.classifier:
            raise ValueError("temperature: temperature scaling is for classifiers; this model's "
                             f"likelihood is {self.spec.family.likelihood!r}")  # fmt: skip
        if num_query is None:
            num_query = int(self.info.get("settings", {}).get("num_query", 50))
        tasks = self.held_out(k, num_tasks, num_query, split="validation")
        post = self.adapt(tasks["x_support"], tasks["y_support"], num_samples,
                          mask=tasks.get("mask_support"))  # fmt: skip
        probs = np.asarray(post.probs(jnp.asarray(tasks["x_query"])))
        return fit_temperature(probs, tasks["y_query"])

    def plot(
        self,
        tasks: dict,
        num_samples: int = 100,
        *,
        reference: bool = True,
        task_indices=(0, 1, 2),
        path: str | Path | None = None,
    ):
        """Predictive bands of a few tasks (1-D regression), beside the exact reference when
        the model has one (:func:`bayesmeta.plots.predictive_bands`); returns the figure."""
        from bayesmeta import plots

        fam = self.spec.family
        if fam.likelihood.classifier or fam.dx != 1 or fam.dy != 1:
            raise ValueError(
                "tasks: predictive bands are for 1-D regression (Dx = Dy = 1); use "
                "bayesmeta.plots.reliability_diagram or calibration_curves for this model"
            )
        support = self._support(tasks["x_support"], tasks["y_support"], tasks.get("mask_support"))
        posts = {self.method.name: self._adapt(jax.random.PRNGKey(0), self.state, support,
                                               int(num_samples))}  # fmt: skip
        if reference and trainable(self.method.name):
            try:
                ref, _ = self.spec.build(ORACLE)
            except ValueError:  # no exact reference for this model
                ref = None
            if ref is not None:
                posts[ORACLE] = ref.adapt(jax.random.PRNGKey(1), ref.init(None), support,
                                               int(num_samples))  # fmt: skip
        return plots.predictive_bands(
            posts,
            support.x,
            support.y,
            support.mask,
            task_indices=task_indices,
            x_range=tuple(fam.x_range),
            path=path,
        )

    def save(self, run_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write the run directory that :func:`bayesmeta.load` and ``bayesmeta evaluate`` /
        ``info`` read (:func:`bayesmeta.rundir.write_run`: ``checkpoint.npz`` data only,
        ``run.json``, and ``data.npz`` when the data was held in memory, each atomic). A model
        given as an object rather than a built-in name, data model or model file must be given
        again to :func:`bayesmeta.load` (``model=``). The directory's lock is held while it is
        written (:func:`bayesmeta.rundir.run_dir_lock`): a second writer is refused."""
        from bayesmeta.checkpoint import CHECKPOINT_NAME
        from bayesmeta.rundir import run_dir_lock, write_run

        out = Path(run_dir)
        if not self.manifest:
            raise ValueError("manifest: this Fitted records no run manifest, so it cannot be "
                             "saved; fit it with bayesmeta.fit")  # fmt: skip
        if (out / CHECKPOINT_NAME).exists() and not overwrite:
            raise FileExistsError(
                f"run_dir: {str(out)!r} already holds a run; pass overwrite=True to replace it"
            )
        key = jax.random.PRNGKey(int(self.info.get("seed", 0)))
        with run_dir_lock(out, "run_dir"):  # a second writer is refused; checked again inside
            if (out / CHECKPOINT_NAME).exists() and not overwrite:
                raise FileExistsError(
                    f"run_dir: {str(out)!r} already holds a run; pass overwrite=True to replace it"
                )
            return write_run(out, self.manifest, self.state, key, self.info, self.spec.splits)


__all__ = ["Fitted"]
