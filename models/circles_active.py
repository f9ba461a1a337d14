"""Circles for active learning: PLATIPUS's circles whose supports look like an active learner's.

The task family is ``circles`` (docs in ``models/circles.py``) except for its support sets:
the first support point lies inside the disc (the one positive an active learner starts
from), the others are drawn uniformly on the square and labelled like any point — the points
a learner picks from a uniform pool. Meta-trained with K ∈ {1, …, 11}, so one starting point
plus ten acquired labels stays inside the training distribution (on ``circles`` every
training support point is a positive near the centre, and labelled pool points, mostly
negatives, are not: ``docs/results.md``, active learning on circles). The exact reference
weighs the location of the first point only.
"""

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.tasks import circles
from bayesmeta.zoo import REGRESSION_BUDGETS, REGRESSION_RECIPES, ModelSpec

SPEC = ModelSpec(
    name="circles_active",
    family=circles(support="first-inside"),
    model=HierarchicalModel(
        mlp((2, 40, 40, 2), activation="tanh"),
        likelihood="categorical",
        dx=2,
        num_classes=2,
        prior_scale=0.03,
    ),
    recipes=REGRESSION_RECIPES,
    budgets=REGRESSION_BUDGETS,
    k_range=(1, 11),
    eval_k=(1, 5),
)
