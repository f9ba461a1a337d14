"""MAML's sinusoid regression (Finn et al. 2017) with Gaussian label noise 0.3.

Tasks: y = A sin(x + b) + ε, A ∈ [0.1, 5], b ∈ [0, π], x ∈ [−5, 5], ε ~ N(0, 0.3²).
Network: MLP 1-40-40-1 (ReLU). Prior: N(μ, diag σ²) over its 1761 weights; Gaussian
likelihood with learned noise. Meta-training draws support sizes K ∈ {1, …, 10}.
"""

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.tasks import sinusoid
from bayesmeta.zoo import ModelSpec

SPEC = ModelSpec(
    name="sinusoid",
    family=sinusoid(noise=0.3),
    model=HierarchicalModel(mlp((1, 40, 40, 1)), prior_scale=0.1, noise_init=0.5),
    recipes={
        "*": {"meta_batch": 25, "num_query": 10, "chunk_size": 250},
        "maml": {"steps": 20_000, "inner_steps": 5, "inner_lr": 0.01},
        "meta-sgd": {"steps": 20_000, "inner_steps": 5, "inner_lr": 0.01},
        "abml": {"steps": 20_000, "inner_steps": 5, "inner_lr": 0.1, "outer": "predictive"},
    },
    budgets={
        "full": {"*": {"steps": 70_000}},
        "quick": {"*": {"steps": 3_000}},
    },
    k_range=(1, 10),
)
