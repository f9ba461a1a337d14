"""Dutch pupils' language scores by school class (``nlschools``; Snijders & Bosker 1999).

Tasks: the 133 classes; y = language score ``lang``, x = (``IQ``, ``SES``, class size ``GS``,
combined-grade class ``COMB``), all standardised with train-class statistics. The model names
the data set (``ModelSpec(data="nlschools")``): the classes are split by the data path
(:func:`bayesmeta.tasks.grouped.dataset_splits`, seed 0) into 93 train, 20 validation and 20
test classes. Classes have 4 to 33 pupils and an episode needs ``k_max + num_query`` of them:
meta-training uses K ∈ {1, …, 8} and 5 queries (65 of the 93 train classes are large
enough); held-out sets at K = 5 with 8 queries use 11 of the 20 test classes. Network: MLP
4-40-40-1 (tanh); Gaussian prior over its weights; Gaussian likelihood with learned noise.

Recipe: the data are finite (about 1,650 training pupils), so long meta-training memorises
them. With the sinusoid's recipe (Adam 3e-3, 10^5 steps) MAML's NLL on held-out training
classes was best after a few hundred steps and then rose for thousands of steps while its
learned noise fell. Every method runs 3,000 steps with Adam 3e-4 and a cosine decay;
``fit --validate`` scores the validation classes after every chunk and keeps the best state.
"""

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.recipes import fixed_step_recipes
from bayesmeta.zoo import ModelSpec

STEPS = 3_000
RECIPES = fixed_step_recipes(STEPS, lr=3e-4, num_query=5)
# "full" is the default: longer training overfits the finite set of classes.
BUDGETS = {"quick": {"*": {"steps": 500, "lr_decay_steps": 500}}}

SPEC = ModelSpec(
    name="nlschools",
    data="nlschools",
    # noise_init near the within-class residual sd of lang given IQ and SES (standardised).
    model=HierarchicalModel(
        mlp((4, 40, 40, 1), activation="tanh"), dx=4, prior_scale=0.03, noise_init=0.7
    ),
    recipes=RECIPES,
    budgets=BUDGETS,
    k_range=(1, 8),
    eval_k=(1, 5),
)
