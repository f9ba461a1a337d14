"""Few-shot glyph classification (Omniglot-like, rendered offline; docs/data_glyphs.md).

Tasks: 5-way classification of characters rendered from matplotlib's fonts; k ∈ {1, …, 5}
shots per class, 25 query images (5 per class). Meta-training draws characters from the
training scripts, held-out tasks from the test scripts (disjoint alphabets, as Omniglot).
Network: MAML's conv4 (Finn et al. 2017) with 32 filters, stride-2 3×3 convolutions and a
parameter-free per-example normalisation; categorical likelihood. The glyphs are rendered
(≈10 s, needs pillow) and cached on the first episode.

The recipes are sized for 2 CPU cores: one inner step in meta-training and adaptation (as
MAML's Omniglot training), meta-batches of 8 tasks (4 for the methods that carry several
samples or particles per task), a few samples or particles, and per method the number of
steps that its former 560 s wall-clock cap allowed on a loaded 2-core machine, on the same
20k-step cosine schedule (so a fit takes about 10 minutes or less and is the same on any
machine).
"""

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import conv4
from bayesmeta.tasks.glyphs import glyphs
from bayesmeta.zoo import ModelSpec

N_WAY = 5

RECIPES = {
    "*": {
        "meta_batch": 8,
        "num_query": 25,
        "chunk_size": 25,
        "lr": 3e-3,
        "steps": 2_500,
        "lr_decay_steps": 20_000,
    },
    "maml": {"inner_steps": 1, "inner_lr": 0.4},
    "meta-sgd": {"inner_steps": 1, "inner_lr": 0.4},
    "emaml": {"meta_batch": 4, "num_particles": 4, "inner_steps": 1, "inner_lr": 0.4},
    "bmaml": {
        "steps": 2_000,
        "meta_batch": 4,
        "num_particles": 4,
        "inner_steps": 1,
        "inner_lr": 0.4,
        "outer": "predictive",
    },
    # Plain (not prior-preconditioned) inner steps: preconditioned by σ² ≈ 1e-3 the steps
    # barely move the weights, the labels (random per task) are never learned and ABML stays
    # at chance.
    "abml": {
        "steps": 7_000,
        "meta_batch": 4,
        "inner_steps": 1,
        "inner_lr": 0.1,
        "precondition": False,
        "inner_samples": 2,
        "outer_samples": 4,
        "outer": "predictive",
    },
    "platipus": {
        "steps": 6_000,
        "meta_batch": 4,
        "inner_steps": 1,
        "inner_lr": 0.4,
        "train_samples": 2,
        "outer": "predictive",
    },
    # The prototype networks take no inner step, so a step costs a fraction of MAML's and
    # the same ten minutes buy several times the steps; their validation NLL still falls at
    # the end of the classification budget's run (benchmarks/results/classification/).
    "protonet": {"steps": 10_000, "lr_decay_steps": 10_000},
    "bayesian-protonet": {"steps": 10_000, "lr_decay_steps": 10_000},
    # At lr 3e-3 the encoder collapses to uniform predictions; at 1e-3 with a wider encoder
    # it leaves the plateau after ≈ 1000 steps.
    "neural-process": {
        "steps": 16_000,
        "lr": 1e-3,
        "encoder_sizes": (256, 256),
        "train_samples": 4,
        "outer": "predictive",
    },
}
BUDGETS = {
    "full": {"*": {"steps": 100_000, "lr_decay_steps": 100_000, "max_seconds": None}},
    "quick": {"*": {"steps": 200, "lr_decay_steps": None, "max_seconds": None}},
}

SPEC = ModelSpec(
    name="glyphs",
    family=glyphs(N_WAY, "test"),
    train_family=glyphs(N_WAY, "train"),
    validation_family=glyphs(N_WAY, "validation"),
    model=HierarchicalModel(
        conv4((28, 28, 1), N_WAY, filters=32),
        likelihood="categorical",
        dx=28 * 28,
        num_classes=N_WAY,
        prior_scale=(0.1, 0.03, 0.03, 0.03, 0.1),
    ),
    recipes=RECIPES,
    budgets=BUDGETS,
    k_range=(1, 5),
    eval_k=(1, 5),
)
