"""Cigarette demand of 46 US states, 1963-1992 (``Cigar``; Baltagi & Levin 1992).

Tasks: the states (30 years each). y = log packs per capita (``log(sales)``: in logs the
slopes on the log prices and income are elasticities, and changes are by factors);
x = (``year``, log real price, log real per-capita income, log real minimum price in
neighbouring states), all standardised with train-state statistics. The model names the data
set (``ModelSpec(data="Cigar")``): 32 train, 7 validation and 7 test states
(:func:`bayesmeta.tasks.grouped.dataset_splits`, seed 0); every state has enough years for
K ≤ 10 support and 10 query years. Support and query years are drawn at random within a state
(interpolation, not forecasting). Network: MLP 4-40-40-1 (tanh); Gaussian prior over its
weights; Gaussian likelihood with learned noise.

Recipe: with about 30 train states, meta-training overfits within a few hundred steps (NLL on
held-out training states: MAML best near step 500, then rising as its learned noise shrinks;
ABML likewise). Every method runs 500 steps at Adam 3e-3; the gradient-based inner loops use
step size 0.1 (0.01 cannot move the state's level far enough in 5 steps). Chosen for MAML and
ABML only; the others are untuned.
"""

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.recipes import fixed_step_recipes
from bayesmeta.zoo import ModelSpec

STEPS = 500
RECIPES = fixed_step_recipes(STEPS)
for method in ("maml", "meta-sgd", "emaml"):
    RECIPES[method]["inner_lr"] = 0.1
# "full" is the default: longer training overfits the finite set of states.
BUDGETS = {"quick": {"*": {"steps": 250, "lr_decay_steps": 250}}}

SPEC = ModelSpec(
    name="cigar",
    data="Cigar",
    model=HierarchicalModel(
        mlp((4, 40, 40, 1), activation="tanh"), dx=4, prior_scale=0.03, noise_init=0.3
    ),
    recipes=RECIPES,
    budgets=BUDGETS,
    k_range=(1, 10),
    eval_k=(1, 5, 10),
)
