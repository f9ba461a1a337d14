"""BMAML's sinusoid regression setting (Yoon et al. 2018, section 5.1).

Tasks: y = A sin(ω x + b) + ε, A ∈ [0.1, 5], ω ∈ [0.5, 2], b ∈ [0, 2π], x ∈ [−5, 5],
ε ~ N(0, (0.01 A)²). Meta-training sees a finite pool of 1000 tasks (the paper also uses 100:
``dataclasses.replace(SPEC, train_family=finite_pool(SPEC.family, 100))``); held-out tasks are
fresh draws. K ∈ {5, …, 10} support points, M = 10 particles for BMAML and EMAML.
Network: MLP 1-40-40-1 (tanh; see models/sinusoid.py for why not ReLU).
The noise is too small for a quadrature grid, so there is no exact reference; the paper's
comparison is the MSE of BMAML against EMAML.
"""

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.recipes import REGRESSION_BUDGETS, REGRESSION_RECIPES
from bayesmeta.tasks import finite_pool, sinusoid_bmaml
from bayesmeta.zoo import ModelSpec

FAMILY = sinusoid_bmaml()

SPEC = ModelSpec(
    name="sinusoid_bmaml",
    family=FAMILY,
    train_family=finite_pool(FAMILY, 1000, seed=0),
    model=HierarchicalModel(
        mlp((1, 40, 40, 1), activation="tanh"), prior_scale=0.03, noise_init=0.5
    ),
    recipes=REGRESSION_RECIPES,
    budgets=REGRESSION_BUDGETS,
    k_range=(5, 10),
    eval_k=(5, 10),
)
