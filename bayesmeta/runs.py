"""Fit, adapt, evaluate, save and load in a few lines: the notebook's entry points.

    import bayesmeta as bm

    fitted = bm.fit("sinusoid", "bmaml", steps=2000)           # a built-in model, its recipe
    tasks = fitted.held_out(k=5, num_tasks=50)                 # test tasks never trained on
    post = fitted.adapt(tasks["x_support"], tasks["y_support"])  # a TaskPosterior
    report = fitted.evaluate(tasks)                            # NLL, MSE, coverage, ...
    fitted.plot(tasks)                                         # bands beside the reference
    fitted.save("runs/bmaml"); fitted = bm.load("runs/bmaml")

``model`` is a built-in model's name or a model file, a :class:`~bayesmeta.zoo.ModelSpec`, or
with ``data`` (grouped rows, :mod:`bayesmeta.tasks.data`) ``"linear"``, ``"mlp"``, a NumPyro
model function or a :class:`~bayesmeta.model.HierarchicalModel`. A saved run is the command
line's run directory (``checkpoint.npz``, ``run.json``), so ``bayesmeta evaluate`` reads it
too.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bayesmeta.inference.base import MetaState, Method
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support
from bayesmeta.zoo import (
    DATA_MODELS,
    ModelSpec,
    _data_splits,
    data_model_spec,
    data_recipe,
    load_model_spec,
)


@dataclass(frozen=True)
class Fitted:
    """A meta-trained method: its model spec, the method's pure functions, the trained state
    and the run's provenance (``info``: model, method, seed, steps, settings, seconds,
    history, versions).

    ``state`` is the best validated state when the fit validated, else the last one.
    """

    spec: ModelSpec
    method: Method
    state: MetaState
    info: dict = field(default_factory=dict)

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
        return self._adapt(key, self.state, support, int(num_samples))

    def _support(self, x_support, y_support, mask) -> Support:
        fam = self.spec.family
        classify = fam.likelihood == "categorical"
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
        self, tasks: dict | str | Path, num_samples: int = 100, *, key: jax.Array | None = None
    ) -> dict[str, Any]:
        """Adapt to a task set's support sets and score its query sets
        (:func:`bayesmeta.evaluate.evaluate`). ``tasks`` is a dict from :meth:`held_out` or
        :func:`~bayesmeta.tasks.io.load_tasks`, or a task file's path."""
        from bayesmeta.evaluate import evaluate

        if not isinstance(tasks, dict):
            from bayesmeta.tasks.io import load_tasks

            tasks = load_tasks(tasks)
        post = self.adapt(
            tasks["x_support"],
            tasks["y_support"],
            num_samples,
            mask=tasks.get("mask_support"),
            key=key,
        )
        report = evaluate(post, tasks["x_query"], tasks["y_query"],
                          mask_query=tasks.get("mask_query"))  # fmt: skip
        report.update(model=self.spec.name, k=int(np.shape(tasks["x_support"])[1]),
                      samples=int(num_samples))  # fmt: skip
        return report

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
        if fam.likelihood == "categorical" or fam.dx != 1 or fam.dy != 1:
            raise ValueError(
                "tasks: predictive bands are for 1-D regression (Dx = Dy = 1); use "
                "bayesmeta.plots.reliability_diagram or calibration_curves for this model"
            )
        support = self._support(tasks["x_support"], tasks["y_support"], tasks.get("mask_support"))
        posts = {self.method.name: self._adapt(jax.random.PRNGKey(0), self.state, support,
                                               int(num_samples))}  # fmt: skip
        if reference and self.method.name != "reference":
            try:
                ref, _ = self.spec.build("reference")
            except ValueError:  # no exact reference for this model
                ref = None
            if ref is not None:
                posts["reference"] = ref.adapt(jax.random.PRNGKey(1), ref.init(None), support,
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
        """Write the run directory (``checkpoint.npz`` data only, atomic; ``run.json``) that
        :func:`load` and ``bayesmeta evaluate`` read. A model given as an object rather than
        a built-in name or model file must be given again to :func:`load`."""
        from bayesmeta.atomic import write_text
        from bayesmeta.checkpoint import CHECKPOINT_NAME, as_json, file_sha256, save_checkpoint
        from bayesmeta.zoo import builtin_models

        out = Path(run_dir)
        if (out / CHECKPOINT_NAME).exists() and not overwrite:
            raise FileExistsError(
                f"run_dir: {str(out)!r} already holds a run; pass overwrite=True to replace it"
            )
        out.mkdir(parents=True, exist_ok=True)
        source = self.spec.source
        is_file = bool(source) and source not in builtin_models() and Path(source).is_file()
        save_checkpoint(
            out / CHECKPOINT_NAME,
            {
                "model_source": source,
                "model_sha256": file_sha256(source) if is_file else None,
                "model_name": self.spec.name,
                "settings": as_json(self.info.get("settings", {})),
                "method_config": self.info.get("method_config"),
                "seed": self.info.get("seed", 0),
                "budget": self.info.get("budget", "default"),
                "task_streams": 1,
                "method": self.method.name,
                "state": self.state,
                "key": jax.random.PRNGKey(self.info.get("seed", 0)),
                "step": int(self.state.step),
            },
        )
        write_text(out / "run.json", json.dumps(self.info, indent=2, default=str))
        return out


def _as_spec(model: Any, data: Any) -> ModelSpec:
    if isinstance(model, ModelSpec):
        if data is not None:
            raise ValueError("data: a ModelSpec already names its tasks; pass one or the other")
        return model
    if data is not None:
        splits = _data_splits(data)
        if isinstance(model, str):
            if model not in DATA_MODELS:
                raise ValueError(
                    f"model: with data, expected one of {list(DATA_MODELS)}, a NumPyro model "
                    f"function or a HierarchicalModel, got {model!r}"
                )
            return data_model_spec(model, splits, name=splits.train.name)
        name = getattr(model, "__name__", type(model).__name__)
        return ModelSpec(name=f"{splits.train.name}/{name}", data=splits, model=model,
                         **data_recipe(splits))  # fmt: skip
    if isinstance(model, str | Path):
        return load_model_spec(str(model))
    raise TypeError(
        "model: expected a built-in model's name, a model file, a ModelSpec, or (with data) "
        f"'linear', 'mlp', a NumPyro model function or a HierarchicalModel; got "
        f"{type(model).__name__}"
    )


def fit(
    model: Any,
    method: str = "abml",
    data: Any = None,
    *,
    steps: int | None = None,
    seed: int = 0,
    budget: str = "default",
    optimizer: Any = None,
    progress: bool | None = None,
    validate: bool | None = None,
    **config: Any,
) -> Fitted:
    """Meta-train ``method`` on ``model`` with its recipe and return a :class:`Fitted`.

    Parameters
    ----------
    model : str, Path, ModelSpec, NumPyro model function or HierarchicalModel
        See the module docstring.
    method : str
        A registered method (``maml``, ``meta-sgd``, ``abml``, ``emaml``, ``bmaml``,
        ``platipus``, ``neural-process``) or ``reference`` (nothing to train).
    data : str, Rows or Splits, optional
        Grouped data: a built-in data set's name or the user's rows, split by group.
    steps : int, optional
        Meta-training steps (default: the recipe's).
    seed : int
        θ's initialisation and the training stream.
    optimizer : optax.GradientTransformation, optional
        Replaces the recipe's Adam (learning rate, schedule and clipping).
    progress : bool, optional
        A progress bar (``tqdm.auto``: a widget in a notebook); default on in a terminal or a
        notebook.
    validate : bool, optional
        Score the validation tasks after every chunk and keep the best state (default: when
        the model has validation groups, i.e. on data).
    **config
        Recipe overrides (``lr``, ``meta_batch``, ``inner_steps``, ``num_particles``, ...);
        a misspelt one is a ``ValueError`` naming it.
    """
    import bayesmeta

    spec = _as_spec(model, data)
    t0 = time.perf_counter()
    settings = spec.recipe(method, budget, steps=steps, **config)
    if method == "reference":
        ref, _ = spec.build("reference")
        state, res = ref.init(jax.random.PRNGKey(seed)), None
        m = ref
    else:
        if validate is None:
            validate = spec.validation_family is not None
        validator = None
        if validate:
            k_val, nq = min(5, spec.k_range[1]), int(settings["num_query"])
            if spec.splits is not None:  # as many points as the largest validation group has
                largest = int(np.max(spec.splits.validation.lengths))
                k_val = max(1, min(k_val, largest - 1))
                nq = max(1, min(nq, largest - k_val))
            validator = spec.validator(k=k_val, num_tasks=50, num_query=nq)
        m, res = spec.fit(method, budget, seed, progress=progress, validate=validator,
                          optimizer=optimizer, steps=steps, **config)  # fmt: skip
        state = res.best_state if res.best_state is not None else res.state
    info: dict[str, Any] = {
        "model": spec.name,
        "model_source": spec.source,
        "method": method,
        "budget": budget,
        "seed": int(seed),
        "steps": int(res.state.step) if res is not None else 0,
        "settings": settings,
        "method_config": None if method == "reference" else m.config.to_dict(),
        "optimizer": "recipe" if optimizer is None else "custom",
        "train_seconds": time.perf_counter() - t0,
        "compile_seconds": res.compile_seconds if res is not None else 0.0,
        "history": {k: np.asarray(v).tolist() for k, v in res.history.items()} if res else {},
        "bayesmeta_version": bayesmeta.__version__,
        "jax_version": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    if res is not None and res.best_state is not None:
        info["best_step"] = int(res.best_state.step)
        info["best_validation_nll"] = float(np.min(res.history["validation_nll"]))
    return Fitted(spec, m, state, info)


def load(
    run_dir: str | Path,
    *,
    model: Any = None,
    optimizer: Any = None,
    trust_model_file: bool = False,
) -> Fitted:
    """A saved run (from :meth:`Fitted.save` or ``bayesmeta fit --out``) as a
    :class:`Fitted`: its best state when it validated, else its last.

    ``model`` is needed when the run's model was given as an object (a ModelSpec or a
    function); for a model file it is the file's path (or pass ``trust_model_file``: loading
    runs the file). ``optimizer``: the one the run was fitted with, if not the recipe's (its
    state has that optimiser's shape).
    """
    from bayesmeta.cli import load_run

    path = Path(run_dir)
    info_path = path / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.get("optimizer") == "custom" and optimizer is None:
        raise ValueError(
            f"optimizer: the run in {str(path)!r} was fitted with its own optimizer; pass the "
            "same optimizer= to load it (its state has that optimizer's shape)"
        )
    spec = model if isinstance(model, ModelSpec) else None
    spec, method, state, _ = load_run(
        str(path),
        model=None if model is None or spec is not None else str(model),
        trust_model_file=trust_model_file,
        spec=spec,
        optimizer=optimizer,
    )
    return Fitted(spec, method, state, info)


__all__ = ["Fitted", "fit", "load"]
