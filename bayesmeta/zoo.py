"""Model specs: a hierarchical model, its task family and a training recipe per method
(:class:`ModelSpec`), and the held-out task streams.

The rest of what this module once held has its own home: recipes in :mod:`bayesmeta.recipes`,
model files in :mod:`bayesmeta.modelfiles`, data models in :mod:`bayesmeta.datamodels`. The
old names still import from here, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bayesmeta import recipes as _recipes
from bayesmeta.inference import Method
from bayesmeta.inference.config import ConfigError, MethodConfig, TrainConfig
from bayesmeta.inference.registry import METHODS, REFERENCES, check_serves, method_names
from bayesmeta.model import HierarchicalModel, NumPyroModel
from bayesmeta.recipes import BUDGETS, TRAIN_KEYS, manifest_config
from bayesmeta.tasks.base import TaskBatch, TaskFamily, sample_batch

#: ``name -> factory`` of every registered method (:mod:`bayesmeta.inference.registry`).
METHOD_FACTORIES: dict[str, Callable[..., Method]] = {n: i.factory for n, i in METHODS.items()}
METHOD_NAMES = method_names()

#: Held-out task streams of a synthetic family: tasks are drawn from ``PRNGKey(seed + K)``.
#: Training draws from ``PRNGKey(fit seed)`` split, so the streams never share a key: recipe
#: choices and early stopping look at ``validation`` only, published tables at ``test``.
#: ``test`` is spent: recipes were chosen on it before the validation stream existed (issue
#: 46), so results added since are scored on ``fresh``, which no choice or earlier result has
#: used, until every table is rerun on it.
STREAM_SEEDS = {"validation": 31_000_000, "test": 20_261_122, "fresh": 41_000_000}


@dataclass(frozen=True)
class ModelSpec:
    """A complete hierarchical model with its task family and training recipes.

    Attributes
    ----------
    name : str
    family : TaskFamily, optional
        Where meta-training and held-out tasks come from (not needed with ``data``).
    model : HierarchicalModel, NumPyroModel or NumPyro model function
        Network, prior and likelihood. A plain function ``model(x, y=None, mask=None)``
        following docs/models.md is wrapped as ``NumPyroModel(fn, dx=family.dx)``.
    recipes : dict
        ``method -> settings``; settings are training keys (``steps``, ``meta_batch``,
        ``num_query``, ``chunk_size``, ``max_seconds``, ``k_power``: p(k) ∝ k^(−k_power) over
        ``k_range``) and the method's own keyword arguments.
        A ``"*"`` entry applies to every method.
    budgets : dict
        ``budget -> method -> overrides`` (e.g. ``"full"`` for longer training); default
        :data:`bayesmeta.recipes.REGRESSION_BUDGETS`, so that ``budget="quick"`` is short on
        a model file that names no budgets (it was the default recipe there).
    k_range : (int, int)
        Support sizes drawn during meta-training, so one model serves every K.
    eval_k : tuple of int
        Support sizes reported by default.
    train_family : TaskFamily, optional
        Where meta-training tasks come from when it is not ``family`` (e.g. a finite pool,
        :func:`~bayesmeta.tasks.finite_pool`); held-out tasks always come from ``family``.
    validation_family : TaskFamily, optional
        Where validation tasks come from (data sets: the validation groups). Without it a
        synthetic family (no ``train_family``) validates on its own disjoint key stream
        (:data:`STREAM_SEEDS`), and a spec with a finite ``train_family`` has no validation.
    data : str, Rows or Splits, optional
        Grouped data instead of a family (:mod:`bayesmeta.tasks.data`): the name of a built-in
        data set (``"nlschools"``, ``"Cigar"``, ``"Sitka"``, :func:`~bayesmeta.tasks.grouped.
        dataset_splits`), the user's rows (split by group with seed 0) or their splits. Then
        ``train_family``, ``validation_family`` and ``family`` are the train, validation and
        test groups (standardised with the training groups' statistics), and ``splits`` holds
        the splits and their standardiser.
    reference_method : () -> Method, optional
        The exact ``reference`` where the family has none of its own (a per-group linear model
        on data: :func:`~bayesmeta.inference.reference.linear_reference`).
    reference_only : bool
        Only the references serve this model (the classical ``mixed`` data model: a fitted
        statistical model, nothing to meta-train).
    """

    name: str
    family: TaskFamily | None = None
    model: HierarchicalModel | NumPyroModel | Callable | None = None
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    budgets: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: copy.deepcopy(_recipes.REGRESSION_BUDGETS)
    )
    k_range: tuple[int, int] = (1, 10)
    eval_k: tuple[int, ...] = (1, 5, 10)
    source: str = ""
    train_family: TaskFamily | None = None
    validation_family: TaskFamily | None = None
    data: Any = field(default=None, repr=False, compare=False)
    reference_method: Callable[[], Method] | None = field(default=None, repr=False, compare=False)
    reference_only: bool = False
    splits: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.data is not None:
            splits = _data_splits(self.data)
            object.__setattr__(self, "splits", splits)
            for name, split in (("family", "test"), ("train_family", "train"),
                                ("validation_family", "validation")):  # fmt: skip
                if getattr(self, name) is None:
                    object.__setattr__(self, name, splits[split].family())
        if self.family is None:
            raise ValueError(f"family: model {self.name!r} needs a task family or data=")
        if self.model is None:
            raise ValueError(f"model: model {self.name!r} needs a model")
        # A plain NumPyro model function is a model (docs/models.md): wrap it once here.
        if not isinstance(self.model, HierarchicalModel | NumPyroModel):
            if not callable(self.model):
                raise TypeError(
                    f"model: expected a HierarchicalModel, a NumPyroModel or a NumPyro model "
                    f"function, got {type(self.model).__name__}"
                )
            wrapped = NumPyroModel(self.model, dx=int(self.family.dx), name=self.name)
            object.__setattr__(self, "model", wrapped)
        if self.model.likelihood.generic and self.family.dx != self.model.dx:
            raise ValueError(
                f"model: its dx={self.model.dx} does not match the family's dx={self.family.dx}"
            )
        self._check_recipes()

    def _check_recipes(self) -> None:
        """Every recipe and budget entry names a method and options that exist (a typo is an
        error when the model file is loaded, not when the method is built)."""
        every = set(TRAIN_KEYS).union(*(i.config.field_names() for i in METHODS.values()))
        for where, table in [("recipes", self.recipes)] + [
            (f"budgets[{b!r}]", t) for b, t in self.budgets.items()
        ]:
            for method, settings in table.items():
                if method == "*":
                    valid = every
                elif method in METHODS:
                    valid = set(TRAIN_KEYS) | set(METHODS[method].config.field_names())
                elif method in REFERENCES:
                    valid = set(TRAIN_KEYS)
                else:
                    raise ValueError(
                        f"{where}: model {self.name!r} names the method {method!r}; expected "
                        f"one of {['*', *METHOD_NAMES]}"
                    )
                unknown = sorted(set(settings) - valid)
                if unknown:
                    raise ValueError(
                        f"{where}[{method!r}]: model {self.name!r} sets unknown option(s) "
                        f"{unknown}; valid: {sorted(valid)}"
                    )

    def recipe(self, method: str, budget: str = "default", **overrides) -> dict[str, Any]:
        """Resolved settings for ``method`` as one flat dict (training keys and the method's
        options, JSON-ready): :meth:`resolve`'s two configs merged."""
        train, cfg = self.resolve(method, budget, **overrides)
        out = asdict(train)
        if cfg is not None:
            out.update(cfg.to_dict())
            out.pop("version")
        return out

    def resolve(
        self, method: str, budget: str = "default", **overrides
    ) -> tuple[TrainConfig, MethodConfig | None]:
        """``(TrainConfig, method config)`` for ``method``: defaults < recipe (``"*"``, then
        the method's) < budget (``"*"``, then the method's) < ``overrides`` (None values are
        skipped). A ``"*"`` option applies to the methods that have it; an override the method
        does not have is a :class:`~bayesmeta.inference.config.ConfigError`. ``reference``
        has no method config (None)."""
        if method not in METHOD_NAMES:
            raise ValueError(f"method: expected one of {list(METHOD_NAMES)}, got {method!r}")
        if budget not in BUDGETS:
            raise ValueError(f"budget: expected one of {list(BUDGETS)}, got {budget!r}")
        cfg_cls = METHODS[method].config if method in METHODS else None
        own = set(TRAIN_KEYS) | set(cfg_cls.field_names() if cfg_cls else ())
        merged: dict[str, Any] = {}
        for src, wildcard in (
            (self.recipes.get("*", {}), True),
            (self.recipes.get(method, {}), False),
            (self.budgets.get(budget, {}).get("*", {}), True),
            (self.budgets.get(budget, {}).get(method, {}), False),
        ):
            merged.update({k: v for k, v in src.items() if not wildcard or k in own})
        merged.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(merged) - own)
        if unknown:
            raise ConfigError(
                f"{method}: unknown option(s) {unknown}; its options are {sorted(own)}"
            )
        train = TrainConfig(**{k: merged[k] for k in TRAIN_KEYS if k in merged})
        if cfg_cls is None:
            return train, None
        return train, cfg_cls.make({k: v for k, v in merged.items() if k not in TRAIN_KEYS})

    def build(
        self,
        method: str,
        budget: str = "default",
        optimizer=None,
        config: MethodConfig | None = None,
        **overrides,
    ) -> tuple[Method, dict]:
        """``(Method, training settings)`` for ``method`` under this spec; ``optimizer`` (an
        optax transformation) replaces the recipe's Adam; ``config`` (the method's typed
        config, e.g. read back from a checkpoint) replaces the recipe's method options."""
        train, cfg = self.resolve(method, budget, **overrides)
        train_cfg = asdict(train)
        if method in REFERENCES:  # nothing to train
            ref = REFERENCES[method].build(self.family, self.reference_method)
            return ref, {**train_cfg, "steps": 0}
        if self.reference_only:
            raise ValueError(f"method: the model {self.name!r} is fitted, not meta-trained; "
                             f"expected 'reference', got {method!r}")  # fmt: skip
        check_serves(method, self.model)
        if config is not None:
            cfg = METHODS[method].config.make(config)
        extra = {} if optimizer is None else {"optimizer": optimizer}
        return METHOD_FACTORIES[method](self.model, cfg, **extra), train_cfg

    def build_from_manifest(self, payload: dict, optimizer=None) -> tuple[Method, dict]:
        """``(Method, training settings)`` of a saved run: its typed ``method_config`` (of any
        config version, migrated) and the training half of its ``settings``. A run saved
        before typed configs holds only ``settings``; its options are read as version 1."""
        method = payload["method"]
        settings = dict(payload.get("settings") or {})
        train = {k: settings[k] for k in TRAIN_KEYS if k in settings}
        return self.build(method, optimizer=optimizer, config=manifest_config(payload), **train)

    def fit(
        self,
        method: str,
        budget: str = "default",
        seed: int = 0,
        progress: bool | None = None,
        run_dir: str | Path | None = None,
        mesh=None,
        task_streams: int | None = None,
        validate=None,
        optimizer=None,
        force: bool = False,
        **overrides,
    ):
        """Meta-train ``method`` with its recipe: ``(Method, TrainResult)`` (the training's
        last state is ``TrainResult.state``, the best validated ``best_state``).

        A shorthand for :func:`bayesmeta.fitting.fit_run` of ``Run(self, method, ...)``, the
        one fit path: ``overrides`` are recipe overrides (``steps``, ``lr``, ...);
        ``task_streams=S`` draws each meta-batch as S independent streams (with a ``mesh``,
        which may span processes, each device draws its own), so the same S gives the same θ
        on any number of processes; ``validate`` is ``Method -> (state -> float)``, a held-out
        score computed after every chunk (None: no validation); ``force`` replaces a run
        already in ``run_dir``.
        """
        from bayesmeta.fitting import Run, fit_run

        steps = overrides.pop("steps", None)
        run = Run(self, method, budget=budget, steps=steps, seed=seed, config=overrides,
                  task_streams=task_streams, optimizer=optimizer)  # fmt: skip
        fitted = fit_run(run, out=run_dir, validate=validate is not None, validator=validate,
                         mesh=mesh, progress=progress, force=force)  # fmt: skip
        return fitted.method, fitted.result

    def held_out(
        self, split: str, k: int, num_tasks: int, num_query: int = 50
    ) -> dict[str, np.ndarray]:
        """A task set (docs/formats.md) of ``num_tasks`` held-out tasks with ``k`` support points:
        ``split="test"`` from ``family`` (what tables publish), ``"validation"`` from
        ``validation_family`` or the family's validation key stream (what recipes and early
        stopping look at), ``"fresh"`` from ``family`` on a stream nothing was chosen on
        (:data:`STREAM_SEEDS`). On grouped data, one task per group of the split with at least
        ``k + 1`` rows (at most ``num_tasks``), the rest of the group as masked queries (at
        most ``num_query``): :func:`~bayesmeta.tasks.grouped.group_tasks`."""
        from bayesmeta.tasks.base import make_task_set

        if split not in STREAM_SEEDS:
            raise ValueError(f"split: expected one of {list(STREAM_SEEDS)}, got {split!r}")
        if self.splits is not None:  # grouped data: one task per group, the rest as queries
            from bayesmeta.tasks.grouped import group_tasks

            if split not in ("validation", "test"):
                raise ValueError(
                    f"split: grouped data are split once by group into train, validation and "
                    f"test; expected 'validation' or 'test', got {split!r}"
                )

            return group_tasks(self.splits[split], int(k), STREAM_SEEDS[split] + int(k),
                               max_tasks=num_tasks, max_query=num_query)  # fmt: skip
        fam = self.family
        if split == "validation":
            fam = self.validation_family
            if fam is None and self.train_family is None:
                fam = self.family
            if fam is None:
                raise ValueError(
                    f"split: {self.name!r} has no validation tasks (its training tasks are a "
                    "finite set and no validation_family is given)"
                )
        key = jax.random.PRNGKey(STREAM_SEEDS[split] + int(k))
        return make_task_set(fam, key, int(num_tasks), int(k), int(num_query))

    def validator(self, k: int | None = None, num_tasks: int = 100, num_query: int = 20,
                  num_samples: int = 50, accuracy: bool = False):  # fmt: skip
        """``Method -> (state -> NLL)``: the mean negative log predictive density per query
        point on a fixed validation task set (:meth:`held_out`), for :func:`train`'s
        ``validate`` (the history's ``validation_nll``, the best state kept). With
        ``accuracy`` (categorical likelihoods) the score is ``{"nll": ..., "accuracy": ...}``,
        the accuracy of the predictive's most probable class (``validation_accuracy``)."""
        if accuracy and not self.family.likelihood.classifier:
            raise ValueError(
                f"accuracy: {self.name!r} has a {self.family.likelihood!r} likelihood; "
                "validation accuracy needs a categorical one"
            )
        from bayesmeta.tasks.base import padded_support

        k = min(5, self.k_range[1]) if k is None else int(k)
        tasks = self.held_out("validation", k, num_tasks, num_query)
        x_q, y_q = jax.numpy.asarray(tasks["x_query"]), jax.numpy.asarray(tasks["y_query"])
        # padded to the training support size, so that adapt compiles once
        support = padded_support(tasks, self.k_range[1])

        def make(method):
            adapt = jax.jit(method.adapt, static_argnums=3)

            def validate(state):
                post = adapt(jax.random.PRNGKey(0), state, support, num_samples)
                nll = float(-jax.numpy.mean(post.log_predictive(x_q, y_q)))
                if not accuracy:
                    return nll
                probs = post.probs(x_q)
                hit = jax.numpy.argmax(probs, -1) == y_q.reshape(probs.shape[:-1]).astype(int)
                return {"nll": nll, "accuracy": float(jax.numpy.mean(hit))}

            return validate

        return make

    def sampler(
        self, meta_batch: int, num_query: int, k_power: float = 0.0
    ) -> Callable[[jax.Array], TaskBatch]:
        """Jittable episode sampler for meta-training: support sizes on ``k_range`` with
        p(k) ∝ k^(−k_power)."""
        fam = self.train_family or self.family
        return lambda key: sample_batch(fam, key, meta_batch, self.k_range, num_query, k_power)[0]


def _data_splits(data: Any):
    """``data`` of :class:`ModelSpec` as :class:`~bayesmeta.tasks.data.Splits`."""
    from bayesmeta.tasks.data import Rows, Splits
    from bayesmeta.tasks.grouped import DATASETS, dataset_splits

    if isinstance(data, Splits):
        return data
    if isinstance(data, Rows):
        return data.split(seed=0)
    if isinstance(data, str):
        if data not in DATASETS:
            raise ValueError(
                f"data: expected a built-in data set {sorted(DATASETS)}, Rows or Splits (a CSV "
                f"is read with bayesmeta.tasks.from_csv), got {data!r}"
            )
        return dataset_splits(data)
    raise TypeError(f"data: expected a data set name, Rows or Splits, got {type(data).__name__}")


def held_out_tasks(
    spec, k: int, num_tasks: int, num_query: int = 50, seed: int = STREAM_SEEDS["test"]
):
    """``num_tasks`` held-out tasks of ``spec``'s family with ``k`` support points, drawn from
    ``PRNGKey(seed + k)`` (default: the test stream, :data:`STREAM_SEEDS`)."""
    from bayesmeta.tasks.base import make_task_set

    return make_task_set(spec.family, jax.random.PRNGKey(seed + k), num_tasks, k, num_query)


#: Names that moved out of this module: ``name -> new home``. They still import from here
#: (model files written against the old documented imports keep working), with a warning.
MOVED = {
    **dict.fromkeys(("REGRESSION_RECIPES", "REGRESSION_BUDGETS", "fixed_step_recipes"),
                    "bayesmeta.recipes"),
    **dict.fromkeys(("load_model_spec", "builtin_models"), "bayesmeta.modelfiles"),
    **dict.fromkeys(("DATA_MODELS", "DATA_STEPS", "data_model_spec", "data_recipe", "as_spec"),
                    "bayesmeta.datamodels"),
}  # fmt: skip


def __getattr__(name: str):
    if name in MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"bayesmeta.zoo.{name} moved to {MOVED[name]}.{name}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(MOVED[name]), name)
    raise AttributeError(f"module 'bayesmeta.zoo' has no attribute {name!r}")


__all__ = ["METHOD_NAMES", "STREAM_SEEDS", "ModelSpec", "held_out_tasks"]
