"""PLATIPUS's ambiguous sine-or-line regression (Finn, Xu & Levine 2018).

Tasks: with probability 1/2 y = A sin(x + b) (A ∈ [0.1, 5], b ∈ [0, π]), otherwise
y = a x + c (a, c ∈ [−3, 3]); x ∈ [−5, 5]; noise 0.3. Network: MLP 1-40-40-1 (ReLU);
Gaussian prior over weights; learned Gaussian noise; support sizes K ∈ {1, …, 10}.
"""

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.tasks import sine_line
from bayesmeta.zoo import ModelSpec

SPEC = ModelSpec(
    name="sine_line",
    family=sine_line(noise=0.3),
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
