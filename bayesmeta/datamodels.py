"""Data models: the built-in ``linear`` and ``mlp`` models sized from the user's grouped data,
the grouped-data recipe, and :func:`as_spec`, which turns any model reference (a name, a model
file, a ModelSpec, a NumPyro model function, a HierarchicalModel) and optional data into a
:class:`~bayesmeta.zoo.ModelSpec`.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bayesmeta.inference import Method
from bayesmeta.model import HierarchicalModel
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.nn import Network, linear, mlp
from bayesmeta.recipes import fixed_step_recipes
from bayesmeta.zoo import ModelSpec, _data_splits

#: Built-in networks-with-likelihoods that size themselves from a data set (``--data``).
DATA_MODELS = ("linear", "mlp", "mixed")
DATA_STEPS = 3_000


def data_model_spec(model: str, splits, *, name: str = "data") -> ModelSpec:
    """A ModelSpec for the user's own grouped data (:mod:`bayesmeta.tasks.data`).

    Parameters
    ----------
    model : {"linear", "mlp", "mixed"}
        ``linear``: a linear model per task, ``y = [x, 1] w + ε`` (Gaussian likelihood);
        ``mlp``: two tanh hidden layers of 40 units, Gaussian likelihood for a real ``y`` and
        categorical for labels; ``mixed``: the linear mixed model with random intercept and
        slopes fitted by statsmodels' ``MixedLM`` (REML), the classical answer, through the
        ``reference`` method only (its exact posterior; nothing is meta-trained:
        :func:`~bayesmeta.inference.reference.mixed_reference`).

    Both start where the data says (:func:`empirical_bayes`, a real one-column ``y``): the
    linear model's θ is the per-group empirical-Bayes fit of the training groups itself
    (:func:`eb_linear_model`), and the MLP's last layer also sees the raw features through the
    same fit (:func:`eb_skip_mlp_model`), so the classical hierarchical linear model lies
    inside both classes and training starts from it.
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
    eb = None if train.classification or train.y.shape[-1] != 1 else empirical_bayes(train)
    if model in ("linear", "mixed"):
        if train.classification or (model == "mixed" and eb is None):
            raise ValueError(f"MODEL: {model!r} is for a real one-column y; use 'mlp' for "
                             "class labels")  # fmt: skip
        if eb is None:
            hm = HierarchicalModel(linear(dx, int(train.y.shape[-1])), dx=dx, prior_scale=1.0,
                                   noise_init=0.7)  # fmt: skip
        else:
            hm = eb_linear_model(eb, dx)
    elif eb is not None:
        hm = eb_skip_mlp_model(eb, dx)
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
    recipe = data_recipe(splits)
    if eb is not None:  # the exact last layer where the method has one (EXACT_HEADS)
        for method, options in EXACT_HEADS.items():
            recipe["recipes"][method] = {**recipe["recipes"].get(method, {}), **options}
        if model == "linear":
            for method, options in LINEAR_EXACT.items():
                recipe["recipes"][method] = {**recipe["recipes"][method], **options}
    return ModelSpec(
        name=f"{name}/{model}",
        data=splits,
        model=hm,
        reference_method=(
            functools.partial(_mixed_reference, train)
            if model == "mixed"
            else functools.partial(_linear_reference, train)
            if model == "linear"
            else None
        ),  # fmt: skip
        reference_only=model == "mixed",
        source=model,
        **recipe,
    )


#: The data models' last layer is linear and Gaussian: these methods integrate it exactly by
#: default, so that started at the empirical-Bayes fit they are the classical posterior
#: (the ``linear`` model) or contain it (the ``mlp``); ``head="adapted"`` overrides. BMAML
#: also keeps the model's initial prior scales and one noise shared by its particles, as the
#: classical model has (per-particle noise under BMAML's fixed Gamma prior moves the noise
#: away from the fit's on every support set, so that started at the fit it was not the
#: classical posterior); the neural process's conjugate encoder starts its prior at the
#: model's own scales too.
EXACT_HEADS: dict[str, dict[str, Any]] = {
    "abml": {"head": "collapsed"},
    "bmaml": {"head": "collapsed", "noise": "shared", "init_prior_scale": None},
    "neural-process": {"init_prior_scale": None},
    "platipus": {"head": "collapsed"},
}
#: On the ``linear`` model, whose last layer is all of φ, the neural process's prior is one
#: Gaussian, as the classical model's is (the regression recipe's two-component mixture, kept
#: on the ``mlp``, is another model there).
LINEAR_EXACT: dict[str, dict[str, Any]] = {"neural-process": {"head_components": 1}}


class EmpiricalBayes(NamedTuple):
    """The per-group linear model fitted to the training groups by empirical Bayes:
    ``w_g ~ N(m, S)`` over ``[x, 1]``, ``y = [x, 1] w_g + ε``, ``ε ~ N(0, σ²)``
    (:func:`bayesmeta.evaluate.baselines.fit_linear_baselines`), with ``L`` the Cholesky
    factor of ``S``."""

    m: np.ndarray
    S: np.ndarray
    L: np.ndarray
    noise_var: float


def empirical_bayes(train) -> EmpiricalBayes:
    """:class:`EmpiricalBayes` of a split's groups (``train``: a GroupedData, ``Dy = 1``)."""
    from bayesmeta.evaluate.baselines import fit_linear_baselines

    real = np.arange(train.x.shape[1])[None, :] < train.lengths[:, None]
    groups = np.repeat(np.arange(train.num_groups), train.lengths)
    fit = fit_linear_baselines(train.x[real], train.y[real][:, 0], groups)
    S = np.asarray(fit.S, np.float64)
    L = np.linalg.cholesky(S + 1e-9 * np.eye(S.shape[0]))
    return EmpiricalBayes(np.asarray(fit.m), S, L, float(max(fit.eb_noise_var, 1e-6)))


@dataclass(frozen=True)
class DataModel(HierarchicalModel):
    """A :class:`~bayesmeta.model.HierarchicalModel` whose initial prior scales are given per
    weight (``log_sigma0``, the flat φ's length), rather than per layer: the data models put a
    unit prior on the whitened linear part and a tight one on the redundant bias."""

    log_sigma0: tuple[float, ...] = field(default=(), compare=False)

    def __post_init__(self):
        super().__post_init__()
        if len(self.log_sigma0) != self.num_params:
            raise ValueError(f"log_sigma0: expected {self.num_params} values, got "
                             f"{len(self.log_sigma0)}")  # fmt: skip
        object.__setattr__(self, "_log_scale0", jnp.asarray(self.log_sigma0, jnp.float32))


#: The prior scale of a data model's last-layer bias: the intercept already lies in the
#: whitened linear part, so the bias only keeps the last layer's {w, b} form.
BIAS_SCALE = 1e-3


def _flat(tree) -> tuple[float, ...]:
    """A pytree of per-weight values in the order of the flat φ (``ravel_pytree``'s)."""
    return tuple(float(v) for v in ravel_pytree(tree)[0])


def _whitened(eb: EmpiricalBayes):
    """``([x, 1] L)`` as a function of ``x (N, Dx)``, and the whitened prior mean ``L⁻¹ m``."""
    L = jnp.asarray(eb.L, jnp.float32)

    def features(x):
        return jnp.concatenate([x, jnp.ones((*x.shape[:-1], 1), x.dtype)], -1) @ L

    return features, np.linalg.solve(eb.L, eb.m).astype(np.float32)


def eb_linear_model(eb: EmpiricalBayes, dx: int) -> DataModel:
    """The per-group linear model in the empirical-Bayes fit's whitened basis:
    ``f(x) = ([x, 1] L) w + b`` with ``w ~ N(L⁻¹ m, I)`` at initialisation, so that
    ``L w ~ N(m, S)``: θ starts at the classical fit exactly (noise ``σ``), and every method's
    posterior over ``w`` is the empirical-Bayes one's up to its own approximation. The last
    layer is linear after an empty body, so methods with an exact last layer integrate it."""
    features, w0 = _whitened(eb)
    d = dx + 1

    def init(key):
        return [{}, {"w": jnp.asarray(w0)[:, None], "b": jnp.zeros((1,))}]

    def apply(params, x):
        return features(x) @ params[-1]["w"] + params[-1]["b"]

    net = Network(init=init, apply=apply, name=f"eb-linear-{dx}")
    log_sigma0 = _flat([{}, {"w": jnp.zeros((d, 1)), "b": jnp.full((1,), math.log(BIAS_SCALE))}])
    return DataModel(net, dx=dx, noise_init=math.sqrt(eb.noise_var), log_sigma0=log_sigma0)


def eb_skip_mlp_model(eb: EmpiricalBayes, dx: int, hidden: int = 40,
                      scale: float = 0.1) -> DataModel:  # fmt: skip
    """Two tanh hidden layers of ``hidden`` units whose linear last layer also sees the
    whitened raw features: ``f(x) = [h(x), [x, 1] L] w + b``. The skip weights start at the
    empirical-Bayes fit (``N(L⁻¹ m, I)``), the hidden part at zero with prior scale ``scale``,
    the noise at the fit's: the linear solution lies inside the class and training starts
    there."""
    features, w0 = _whitened(eb)
    body = mlp((dx, hidden, hidden), activation="tanh")
    d = dx + 1

    def init(key):
        layers = body.init(key)
        w = jnp.concatenate([jnp.zeros((hidden, 1)), jnp.asarray(w0)[:, None]], 0)
        return [*layers, {"w": w, "b": jnp.zeros((1,))}]

    def apply(params, x):
        h = jnp.tanh(body.apply(params[:-1], x))  # body's own apply ends linear
        z = jnp.concatenate([h, features(x)], -1)
        return z @ params[-1]["w"] + params[-1]["b"]

    net = Network(init=init, apply=apply, name=f"eb-skip-mlp-{dx}-{hidden}")
    log_s = math.log(scale)
    layers = jax.tree_util.tree_map(
        lambda a: jnp.full(a.shape, log_s), body.init(jax.random.PRNGKey(0))
    )
    w = jnp.concatenate([jnp.full((hidden, 1), log_s), jnp.zeros((d, 1))], 0)
    log_sigma0 = _flat([*layers, {"w": w, "b": jnp.full((1,), math.log(BIAS_SCALE))}])
    return DataModel(net, dx=dx, noise_init=math.sqrt(eb.noise_var), log_sigma0=log_sigma0)


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


def as_spec(model: Any, data: Any = None, *, split_seed: int = 0) -> ModelSpec:
    """The :class:`ModelSpec` of a model reference and, optionally, grouped data: a ModelSpec
    as it is; a built-in name or model file; with ``data`` (a data set's name, ``Rows`` or
    ``Splits``) ``"linear"``, ``"mlp"``, a NumPyro model function or a
    :class:`~bayesmeta.model.HierarchicalModel` sized from the data.

    With a model of its own, the data are read as its observation site ``y`` needs them
    before anything is trained (:func:`~bayesmeta.tasks.data.rows_for_observation`): counts
    for a Poisson, negative-binomial or Bernoulli site (in their own units, never
    standardised, every value checked against the support), real standardised values for a
    continuous one. ``Rows`` are split by ``split_seed``."""
    if isinstance(model, ModelSpec):
        if data is not None:
            raise ValueError("data: a ModelSpec already names its tasks; pass one or the other")
        return model
    if data is not None:
        if isinstance(model, str):
            if model not in DATA_MODELS:
                raise ValueError(
                    f"model: with data, expected one of {list(DATA_MODELS)}, a NumPyro model "
                    f"function or a HierarchicalModel, got {model!r}"
                )
            _warn_inferred_labels(data)
            splits = data.split(seed=split_seed) if _is_rows(data) else _data_splits(data)
            return data_model_spec(model, splits, name=splits.train.name)
        name = getattr(model, "__name__", type(model).__name__)
        splits, model = _splits_for_model(model, data, name, split_seed)
        return ModelSpec(name=f"{splits.train.name}/{name}", data=splits, model=model,
                         **data_recipe(splits))  # fmt: skip
    if isinstance(model, str | Path):
        return load_model_spec(str(model))
    raise TypeError(
        "model: expected a built-in model's name, a model file, a ModelSpec, or (with data) "
        f"'linear', 'mlp', a NumPyro model function or a HierarchicalModel; got "
        f"{type(model).__name__}"
    )


def _is_rows(data: Any) -> bool:
    from bayesmeta.tasks.data import Rows

    return isinstance(data, Rows)


def _warn_inferred_labels(data: Any) -> None:
    """Say so when integer targets become class labels by their type alone."""
    if _is_rows(data) and data.classification and data.labels_inferred:
        warnings.warn(
            f"y: the integer values of column {data.target!r} are read as "
            f"{int(data.y.max()) + 1} class labels; pass labels=False to read them as numbers "
            "(counts or real values), or labels=True to say so",
            UserWarning,
            stacklevel=3,
        )


def _splits_for_model(model: Any, data: Any, name: str, split_seed: int):
    """``(Splits, model)`` for a model of the user's own: the model wrapped once, and the data
    read as its observation site needs them (or refused in one line)."""
    from bayesmeta.model import NumPyroModel
    from bayesmeta.tasks.data import check_splits_for_observation, rows_for_observation

    rows = data if _is_rows(data) else None
    if rows is None:
        data = _data_splits(data)
    dx = rows.x.shape[1] if rows is not None else int(data.train.dx)
    label = rows.name if rows is not None else data.train.name
    if not isinstance(model, HierarchicalModel | NumPyroModel):
        if not callable(model):
            raise TypeError(
                f"model: expected a NumPyro model function or a HierarchicalModel, got "
                f"{type(model).__name__}"
            )
        model = NumPyroModel(model, dx=dx, name=f"{label}/{name}")
    support, what = model.observation
    if what == "Categorical":  # class labels: read as the rows already are
        return (rows.split(seed=split_seed) if rows is not None else data), model
    if rows is None:
        check_splits_for_observation(data, support, what)
        return data, model
    rows, standardize = rows_for_observation(rows, support, what)
    return rows.split(seed=split_seed, standardize_y=standardize), model


def _linear_reference(train) -> Method:
    """The exact empirical-Bayes linear posterior fitted on a data run's training groups."""
    from bayesmeta.inference import linear_reference

    real = np.arange(train.x.shape[1])[None, :] < train.lengths[:, None]
    groups = np.repeat(np.asarray(train.groups), train.lengths)
    return linear_reference(train.x[real], train.y[real], groups)


def _mixed_reference(train) -> Method:
    """The exact posterior of the linear mixed model (REML) fitted on the training groups."""
    from bayesmeta.inference import mixed_reference

    real = np.arange(train.x.shape[1])[None, :] < train.lengths[:, None]
    groups = np.repeat(np.asarray(train.groups), train.lengths)
    return mixed_reference(train.x[real], train.y[real], groups)


__all__ = ["DATA_MODELS", "as_spec", "data_model_spec", "data_recipe"]
