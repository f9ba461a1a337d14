"""bayesmeta: probabilistic (Bayesian) meta-learning on NumPyro and JAX.

The hierarchical model (:class:`HierarchicalModel`) is written once; every method
(:func:`maml`, :func:`abml`, :func:`reference`, ...) meta-trains its θ on batches of tasks and
returns a :class:`TaskPosterior` for new tasks, which every evaluator consumes.

    import bayesmeta as bm
    fitted = bm.fit("sinusoid", "bmaml")   # or bm.fit("mlp", "abml", data=rows)
    post = fitted.adapt(x_support, y_support)
"""

from bayesmeta.cache import enable_compilation_cache
from bayesmeta.inference import (
    DivergenceError,
    MetaState,
    Method,
    abml,
    amortized,
    bmaml,
    emaml,
    linear_reference,
    maml,
    neural_process,
    nuts,
    platipus,
    protonet,
    reference,
    train,
)
from bayesmeta.model import HierarchicalModel, NumPyroModel
from bayesmeta.modelfiles import load_model_spec
from bayesmeta.nn import Network, mlp
from bayesmeta.posterior import TaskPosterior
from bayesmeta.runs import Fitted, fit, load
from bayesmeta.tasks import Support, TaskBatch, TaskFamily
from bayesmeta.zoo import ModelSpec

# on by default (bayesmeta.cache says how to turn it off): the next process reads a compiled
# method back instead of compiling it again; nothing above compiles at import
enable_compilation_cache()

__version__ = "0.1.0"

__all__ = [
    "DivergenceError",
    "Fitted",
    "HierarchicalModel",
    "MetaState",
    "Method",
    "ModelSpec",
    "Network",
    "NumPyroModel",
    "Support",
    "TaskBatch",
    "TaskFamily",
    "TaskPosterior",
    "abml",
    "amortized",
    "bmaml",
    "emaml",
    "fit",
    "linear_reference",
    "load",
    "load_model_spec",
    "maml",
    "mlp",
    "neural_process",
    "nuts",
    "platipus",
    "protonet",
    "reference",
    "train",
]
