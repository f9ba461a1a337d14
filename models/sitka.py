"""Growth of Sitka spruces in ozone-enriched and control chambers (``Sitka``; Diggle et al.).

Tasks: the 79 trees, each measured 5 times in 1988. y = log size ``size``, x = (``Time``,
ozone indicator), standardised with train-tree statistics. The model names the data set
(``ModelSpec(data="Sitka")``): 55 train, 12 validation and 12 test trees
(:func:`bayesmeta.tasks.grouped.dataset_splits`, seed 0). With 5 points per tree, episodes
have K ∈ {1, 2, 3} support and 2 query points. Network: MLP 2-40-40-1 (tanh); Gaussian prior
over its weights; Gaussian likelihood with learned noise.

Recipe (untuned): as ``nlschools``, a short run (3,000 steps at Adam 3e-4), because long
meta-training memorises a finite data set.
"""

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.recipes import fixed_step_recipes
from bayesmeta.zoo import ModelSpec

STEPS = 3_000
RECIPES = fixed_step_recipes(STEPS, lr=3e-4, num_query=2)
BUDGETS = {"quick": {"*": {"steps": 500, "lr_decay_steps": 500}}}

SPEC = ModelSpec(
    name="sitka",
    data="Sitka",
    model=HierarchicalModel(
        mlp((2, 40, 40, 1), activation="tanh"), dx=2, prior_scale=0.03, noise_init=0.3
    ),
    recipes=RECIPES,
    budgets=BUDGETS,
    k_range=(1, 3),
    eval_k=(1, 3),
)
