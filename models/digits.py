"""Few-shot classification of handwritten digits (scikit-learn's bundled UCI digits, 8×8).

Tasks: 3-way classification; k ∈ {1, …, 5} shots per class, 15 query images (5 per class).
Meta-training draws from the digits 0-3, validation from 4-6 and the test tasks from 7-9,
which no training step or choice saw; the training digits' rotations and mirror images are
training classes too (:mod:`bayesmeta.tasks.digits`). Network: conv4 with 32 filters
(8 → 4 → 2 → 1 → 1) and a linear layer to the logits; categorical likelihood. A second image
family beside the glyphs, so classification results are not tuned to one data set. Needs
scikit-learn (``data`` extra).
"""

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import conv4
from bayesmeta.tasks.digits import digits
from bayesmeta.zoo import ModelSpec

N_WAY = 3

# The glyph recipes, on images 12 times smaller (a step costs a fraction of a glyph step).
RECIPES = {
    "*": {
        "meta_batch": 8,
        "num_query": 15,
        "chunk_size": 100,
        "lr": 3e-3,
        "steps": 3_000,
        "lr_decay_steps": 3_000,
    },
    "maml": {"inner_steps": 1, "inner_lr": 0.4},
    "meta-sgd": {"inner_steps": 1, "inner_lr": 0.4},
    "emaml": {"meta_batch": 4, "num_particles": 4, "inner_steps": 1, "inner_lr": 0.4},
    "bmaml": {
        "meta_batch": 4,
        "num_particles": 4,
        "inner_steps": 1,
        "inner_lr": 0.4,
        "outer": "predictive",
    },  # fmt: skip
    "abml": {
        "meta_batch": 4,
        "inner_steps": 1,
        "inner_lr": 0.1,
        "precondition": False,
        "inner_samples": 2,
        "outer_samples": 4,
        "outer": "predictive",
    },  # fmt: skip
    "platipus": {
        "meta_batch": 4,
        "inner_steps": 1,
        "inner_lr": 0.4,
        "train_samples": 2,
        "outer": "predictive",
    },  # fmt: skip
    "neural-process": {"lr": 1e-3, "encoder_sizes": (64, 64), "train_samples": 4},
}
BUDGETS = {
    "full": {"*": {"steps": 30_000, "lr_decay_steps": 30_000, "max_seconds": None}},
    "quick": {"*": {"steps": 200, "lr_decay_steps": None, "max_seconds": None}},
}

SPEC = ModelSpec(
    name="digits",
    family=digits(N_WAY, "test"),
    train_family=digits(N_WAY, "train"),
    validation_family=digits(N_WAY, "validation"),
    model=HierarchicalModel(
        conv4((8, 8, 1), N_WAY, filters=32),
        likelihood="categorical",
        dx=64,
        num_classes=N_WAY,
        prior_scale=(0.1, 0.03, 0.03, 0.03, 0.1),
    ),
    recipes=RECIPES,
    budgets=BUDGETS,
    k_range=(1, 5),
    eval_k=(1, 5),
)
