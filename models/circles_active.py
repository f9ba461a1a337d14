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

from dataclasses import replace

from bayesmeta.modelfiles import load_model_spec
from bayesmeta.tasks import circles

# circles' network, prior and recipes; only the supports (and so the K range) differ
SPEC = replace(
    load_model_spec("circles"),
    name="circles_active",
    family=circles(support="first-inside"),
    k_range=(1, 11),
)
