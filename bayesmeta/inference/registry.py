"""One registry of the meta-learning methods, read by the model specs, the CLI, the bench and
the plots: a new method is registered here once.

Each entry says how to build the method (``factory(model, **settings) -> Method``), how plots
draw it, whether the calibration benchmark runs it by default (and in which order), and
whether it serves any NumPyro model (:class:`~bayesmeta.model.NumPyroModel`) or needs the
built-in :class:`~bayesmeta.model.HierarchicalModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from bayesmeta.inference.abml import ABMLConfig, abml
from bayesmeta.inference.amortized import AmortizedConfig, amortized
from bayesmeta.inference.base import Method
from bayesmeta.inference.bmaml import BMAMLConfig, bmaml
from bayesmeta.inference.config import ConfigError, MethodConfig
from bayesmeta.inference.emaml import EMAMLConfig, emaml
from bayesmeta.inference.maml import MAMLConfig, MetaSGDConfig, maml
from bayesmeta.inference.neural_process import NeuralProcessConfig, neural_process
from bayesmeta.inference.platipus import PLATIPUSConfig, platipus
from bayesmeta.inference.protonet import BayesianProtoNetConfig, ProtoNetConfig, protonet
from bayesmeta.inference.reference import reference


class MethodInfo(NamedTuple):
    """A registered method.

    Attributes
    ----------
    name : str
    factory : (model, config=None, *, optimizer=None, **options) -> Method
    config : type
        Its frozen, versioned options dataclass (:mod:`bayesmeta.inference.config`).
    colour : str
        Its fixed colour in every plot.
    bench_order : int or None
        Position in the calibration benchmark's default set (None: not run by default).
    any_model : bool
        Serves any NumPyro model; otherwise it needs a ``HierarchicalModel``.
    needs : str
        What it needs of a model when ``any_model`` is False (for the error message).
    likelihoods : tuple of str or None
        The likelihoods it serves (None: any).
    """

    name: str
    factory: Callable[..., Method]
    config: type[MethodConfig]
    colour: str
    bench_order: int | None = None
    any_model: bool = True
    needs: str = ""
    likelihoods: tuple[str, ...] | None = None


def _meta_sgd(model, config=None, **kw) -> Method:
    return maml(model, MetaSGDConfig.make(config), **kw)


def _bayesian_protonet(model, config=None, **kw) -> Method:
    return protonet(model, BayesianProtoNetConfig.make(config), **kw)


_CLASSIFIER = "it classifies in an embedding space (a categorical likelihood, a linear last layer)"


def _classifier(name: str, factory, config: type[MethodConfig], colour: str) -> MethodInfo:
    """A few-shot classifier's entry: the built-in model only, a categorical likelihood."""
    return MethodInfo(
        name,
        factory,
        config,
        colour,
        any_model=False,
        needs=_CLASSIFIER,
        likelihoods=("categorical",),
    )


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo("maml", maml, MAMLConfig, "#E69F00", 0),
        MethodInfo("meta-sgd", _meta_sgd, MetaSGDConfig, "#F0C05A"),
        MethodInfo("abml", abml, ABMLConfig, "#009E73", 3),
        MethodInfo("emaml", emaml, EMAMLConfig, "#D55E00", 1),
        MethodInfo("bmaml", bmaml, BMAMLConfig, "#0072B2", 2),
        MethodInfo("platipus", platipus, PLATIPUSConfig, "#56B4E9", 4),
        MethodInfo("amortized", amortized, AmortizedConfig, "#999933", None, any_model=True),
        MethodInfo(
            "neural-process",
            neural_process,
            NeuralProcessConfig,
            "#CC79A7",
            5,
            any_model=False,
            needs="its conjugate encoder needs a network with a linear last layer",
        ),
        _classifier("protonet", protonet, ProtoNetConfig, "#7F7F7F"),
        _classifier("bayesian-protonet", _bayesian_protonet, BayesianProtoNetConfig, "#882255"),
    )
}


@dataclass(frozen=True)
class ReferenceConfig:
    """The typed config of a reference: it has no options (nothing is trained, nothing is
    tuned), but it is versioned and read back like every method's."""

    METHOD: ClassVar[str] = "reference"
    VERSION: ClassVar[int] = 1

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return ()

    @classmethod
    def make(cls, settings=None, **options) -> ReferenceConfig:
        extra = sorted({**dict(settings or {}), **options})
        if extra:
            raise ConfigError(f"{cls.METHOD}: has no options; got {extra}")
        return cls()

    def to_dict(self) -> dict:
        return {"version": self.VERSION}


class ReferenceInfo(NamedTuple):
    """A registered reference: an exact posterior to check the methods against, not trained.

    ``build(family, exact)`` returns its :class:`~bayesmeta.inference.base.Method` for a task
    family, or ``exact()`` (a model's own exact posterior, e.g. the empirical-Bayes linear
    one on grouped data) when the model has one."""

    name: str
    build: Callable[..., Method]
    config: type
    colour: str


def _reference(family, exact=None) -> Method:
    return exact() if exact is not None else reference(family)


#: The references, registered beside :data:`METHODS`; ``reference`` is the oracle every
#: table's gap is measured against.
REFERENCES: dict[str, ReferenceInfo] = {
    "reference": ReferenceInfo("reference", _reference, ReferenceConfig, "#555555"),
}
ORACLE = "reference"


def trainable(name: str) -> bool:
    """Whether ``name`` is a meta-trained method (False for a reference)."""
    if name in REFERENCES:
        return False
    method_info(name)  # a clear error for an unknown name
    return True


def method_names() -> tuple[str, ...]:
    """Every name a run may use: the methods, then the references."""
    return (*METHODS, *REFERENCES)


def method_info(name: str) -> MethodInfo:
    """The registry entry of ``name`` (a clear error naming the registered ones)."""
    if name not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {name!r}")
    return METHODS[name]


def method_config(
    name: str, settings: dict | MethodConfig | None = None, **options
) -> MethodConfig:
    """The typed config of method ``name`` from a mapping of its options (unknown ones are a
    :class:`~bayesmeta.inference.config.ConfigError` naming the valid ones)."""
    return method_info(name).config.make(settings, **options)


def bench_methods() -> tuple[str, ...]:
    """The calibration benchmark's default methods, in its table order."""
    ranked = [(i.bench_order, n) for n, i in METHODS.items() if i.bench_order is not None]
    return tuple(n for _, n in sorted(ranked))


def check_serves(name: str, model) -> None:
    """Raise a clear error when method ``name`` cannot serve ``model``."""
    info = method_info(name)
    likelihood = getattr(model, "likelihood", None)
    if info.likelihoods is not None and likelihood not in info.likelihoods:
        raise ValueError(
            f"method: {name!r} serves {list(info.likelihoods)} likelihoods ({info.needs}); "
            f"this model's is {likelihood!r}"
        )
    if not info.any_model and getattr(model, "likelihood", None) == "generic":
        raise ValueError(
            f"method: {name!r} needs the built-in HierarchicalModel: {info.needs}; this model "
            f"is a general NumPyro model: use one of "
            f"{[n for n, i in METHODS.items() if i.any_model]}"
        )


__all__ = [
    "METHODS",
    "ORACLE",
    "REFERENCES",
    "MethodInfo",
    "ReferenceConfig",
    "ReferenceInfo",
    "method_names",
    "trainable",
    "bench_methods",
    "check_serves",
    "method_config",
    "method_info",
]
