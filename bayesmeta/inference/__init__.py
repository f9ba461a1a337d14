"""Inference methods (one module each) and the shared training loop."""

from bayesmeta.inference.abml import ABMLConfig, abml
from bayesmeta.inference.amortized import AmortizedConfig, amortized
from bayesmeta.inference.base import Info, MetaState, Method, make_optimizer
from bayesmeta.inference.bmaml import BMAMLConfig, bmaml
from bayesmeta.inference.config import ConfigError, MethodConfig, TrainConfig
from bayesmeta.inference.emaml import EMAMLConfig, emaml
from bayesmeta.inference.maml import MAMLConfig, MetaSGDConfig, maml
from bayesmeta.inference.neural_process import NeuralProcessConfig, neural_process
from bayesmeta.inference.nuts import nuts, nuts_task_samples
from bayesmeta.inference.platipus import PLATIPUSConfig, platipus
from bayesmeta.inference.protonet import BayesianProtoNetConfig, ProtoNetConfig, protonet
from bayesmeta.inference.reference import (
    linear_gaussian_posterior,
    linear_reference,
    mixed_reference,
    reference,
)
from bayesmeta.inference.train import DivergenceError, TrainResult, train

__all__ = [
    "ABMLConfig",
    "AmortizedConfig",
    "BMAMLConfig",
    "BayesianProtoNetConfig",
    "ConfigError",
    "EMAMLConfig",
    "MAMLConfig",
    "MetaSGDConfig",
    "MethodConfig",
    "NeuralProcessConfig",
    "PLATIPUSConfig",
    "ProtoNetConfig",
    "TrainConfig",
    "DivergenceError",
    "Info",
    "MetaState",
    "Method",
    "TrainResult",
    "abml",
    "amortized",
    "bmaml",
    "emaml",
    "linear_gaussian_posterior",
    "maml",
    "make_optimizer",
    "neural_process",
    "nuts",
    "nuts_task_samples",
    "platipus",
    "protonet",
    "linear_reference",
    "mixed_reference",
    "reference",
    "train",
]
