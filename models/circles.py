"""PLATIPUS's ambiguous 2-D circle classification (Finn, Xu & Levine 2018).

Tasks: the positive class is a disc with centre uniform on [−3, 3]² and radius uniform on
[1, 3]; inputs uniform on [−5, 5]²; p(y = 1 | x) = sigmoid((r − ‖x − c‖)/0.1). Support points
lie inside the disc (positives), K ∈ {1, …, 5}: one positive point leaves the circle's centre
and size ambiguous. Network: MLP 2-40-40-2 (tanh) giving logits; categorical likelihood.
"""

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.recipes import REGRESSION_BUDGETS, REGRESSION_RECIPES
from bayesmeta.tasks import circles
from bayesmeta.zoo import ModelSpec

SPEC = ModelSpec(
    name="circles",
    family=circles(),
    model=HierarchicalModel(
        mlp((2, 40, 40, 2), activation="tanh"),
        likelihood="categorical",
        dx=2,
        num_classes=2,
        prior_scale=0.03,
    ),
    recipes=REGRESSION_RECIPES,
    budgets=REGRESSION_BUDGETS,
    k_range=(1, 5),
    eval_k=(1, 5),
)
