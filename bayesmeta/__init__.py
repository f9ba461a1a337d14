"""bayesmeta: probabilistic (Bayesian) meta-learning on NumPyro and JAX.

The hierarchical model (:class:`HierarchicalModel`) is written once; every method
(:func:`maml`, :func:`abml`, :func:`reference`, ...) meta-trains its θ on batches of tasks and
returns a :class:`TaskPosterior` for new tasks, which every evaluator consumes.
"""

from bayesmeta.inference import (
    DivergenceError,
    MetaState,
    Method,
    abml,
    maml,
    reference,
    train,
)
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import Network, mlp
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks import Support, TaskBatch, TaskFamily
from bayesmeta.zoo import ModelSpec, load_model_spec

__version__ = "0.1.0"

__all__ = [
    "DivergenceError",
    "HierarchicalModel",
    "MetaState",
    "Method",
    "ModelSpec",
    "Network",
    "Support",
    "TaskBatch",
    "TaskFamily",
    "TaskPosterior",
    "abml",
    "load_model_spec",
    "maml",
    "mlp",
    "reference",
    "train",
]
