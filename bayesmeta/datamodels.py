"""Data models: the built-in ``linear`` and ``mlp`` models sized from the user's grouped data,
the grouped-data recipe, and :func:`as_spec`, which turns any model reference (a name, a model
file, a ModelSpec, a NumPyro model function, a HierarchicalModel) and optional data into a
:class:`~bayesmeta.zoo.ModelSpec`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from bayesmeta.inference import Method
from bayesmeta.model import HierarchicalModel
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.nn import linear, mlp
from bayesmeta.recipes import fixed_step_recipes
from bayesmeta.zoo import ModelSpec, _data_splits

#: Built-in networks-with-likelihoods that size themselves from a data set (``--data``).
DATA_MODELS = ("linear", "mlp")
DATA_STEPS = 3_000


def data_model_spec(model: str, splits, *, name: str = "data") -> ModelSpec:
    """A ModelSpec for the user's own grouped data (:mod:`bayesmeta.tasks.data`).

    Parameters
    ----------
    model : {"linear", "mlp"}
        ``linear``: a linear model per task, ``y = x W + b`` (Gaussian likelihood);
        ``mlp``: two tanh hidden layers of 40 units, Gaussian likelihood for a real ``y`` and
        categorical for labels.
    splits : bayesmeta.tasks.data.Splits
        Meta-training tasks come from ``splits.train``, validation tasks (early stopping) from
        ``splits.validation`` and held-out tasks from ``splits.test``.

    The recipe is the grouped-data one (nlschools): every method runs a fixed number of
    steps with Adam 3e-4 and a cosine decay, since long training memorises a finite set of
    groups. Support sizes and query counts follow the training groups' median size ``m``:
    ``num_query = clip(m // 2, 1, 5)`` and ``k_max = clip(m − num_query, 1, 10)``.
    """
    if model not in DATA_MODELS:
        raise ValueError(f"MODEL: expected one of {list(DATA_MODELS)} with --data, got {model!r}")
    train = splits.train
    dx = train.dx
    classes = train.family().num_classes if train.classification else None
    if model == "linear":
        if train.classification:
            raise ValueError("MODEL: 'linear' is for a real y; use 'mlp' for class labels")
        net = linear(dx, int(train.y.shape[-1]))
        hm = HierarchicalModel(net, dx=dx, prior_scale=1.0, noise_init=0.7)
    else:
        out = classes if train.classification else int(train.y.shape[-1])
        hm = HierarchicalModel(
            mlp((dx, 40, 40, out), activation="tanh"),
            likelihood="categorical" if train.classification else "gaussian",
            dx=dx,
            num_classes=classes,
            prior_scale=0.1,
            noise_init=0.7,
        )
    return ModelSpec(
        name=f"{name}/{model}",
        data=splits,
        model=hm,
        reference_method=functools.partial(_linear_reference, train) if model == "linear" else None,
        source=model,
        **data_recipe(splits),
    )


def data_recipe(splits) -> dict[str, Any]:
    """The grouped-data recipe sized from the training groups' median size ``m``: every method
    runs :data:`DATA_STEPS` steps with Adam 3e-4 and a cosine decay (long training memorises
    a finite set of groups), ``num_query = clip(m // 2, 1, 5)`` query rows and support sizes
    up to ``k_max = clip(m − num_query, 1, 10)``. The ``recipes``, ``budgets``, ``k_range``
    and ``eval_k`` of a :class:`ModelSpec` on data."""
    train = splits.train
    median = int(np.median(train.lengths))
    num_query = int(np.clip(median // 2, 1, 5))
    k_max = int(np.clip(median - num_query, 1, 10))
    recipes = fixed_step_recipes(DATA_STEPS, lr=3e-4, num_query=num_query)
    recipes["*"]["meta_batch"] = int(min(10, max(2, train.num_groups // 2)))
    return {
        "recipes": recipes,
        "budgets": {"quick": {"*": {"steps": 300, "lr_decay_steps": 300}}},
        "k_range": (1, k_max),
        "eval_k": (1, min(5, k_max)),
    }


def as_spec(model: Any, data: Any = None) -> ModelSpec:
    """The :class:`ModelSpec` of a model reference and, optionally, grouped data: a ModelSpec
    as it is; a built-in name or model file; with ``data`` (a data set's name, ``Rows`` or
    ``Splits``) ``"linear"``, ``"mlp"``, a NumPyro model function or a
    :class:`~bayesmeta.model.HierarchicalModel` sized from the data."""
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


def _linear_reference(train) -> Method:
    """The exact empirical-Bayes linear posterior fitted on a data run's training groups."""
    from bayesmeta.inference import linear_reference

    real = np.arange(train.x.shape[1])[None, :] < train.lengths[:, None]
    groups = np.repeat(np.asarray(train.groups), train.lengths)
    return linear_reference(train.x[real], train.y[real], groups)


__all__ = ["DATA_MODELS", "as_spec", "data_model_spec", "data_recipe"]
