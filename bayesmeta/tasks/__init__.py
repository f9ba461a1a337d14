"""Task families, episodic batches and task files.

The module is also callable: ``bayesmeta.tasks(source, k=5, num_tasks=100)`` is a held-out
task set of a model or a data set (:func:`bayesmeta.runs.task_set`).
"""

import sys
import types

from bayesmeta.tasks.base import (
    Support,
    TaskBatch,
    TaskFamily,
    finite_pool,
    make_task_set,
    sample_batch,
    support_of,
)
from bayesmeta.tasks.data import (
    Rows,
    Splits,
    Standardizer,
    from_csv,
    from_dataframe,
    from_groups,
    from_pool,
    load_pool_file,
)
from bayesmeta.tasks.families import (
    FAMILIES,
    blobs,
    circles,
    linear_gaussian,
    sine_line,
    sinusoid,
    sinusoid_bmaml,
    sinusoid_hetero,
)
from bayesmeta.tasks.glyphs import GlyphData as GlyphData
from bayesmeta.tasks.glyphs import load_glyphs as load_glyphs
from bayesmeta.tasks.grouped import dataset, dataset_splits

__all__ = [
    "FAMILIES",
    "Rows",
    "Splits",
    "Standardizer",
    "Support",
    "TaskBatch",
    "TaskFamily",
    "blobs",
    "circles",
    "dataset",
    "dataset_splits",
    "finite_pool",
    "from_csv",
    "from_dataframe",
    "from_groups",
    "from_pool",
    "linear_gaussian",
    "load_pool_file",
    "make_task_set",
    "sample_batch",
    "sine_line",
    "sinusoid",
    "sinusoid_bmaml",
    "sinusoid_hetero",
    "support_of",
]


class _CallableModule(types.ModuleType):
    """``bayesmeta.tasks`` is both this package and the notebook's task-set function."""

    def __call__(
        self, source, k: int = 5, num_tasks: int = 100, *, num_query: int | None = None,
        split: str = "test",
    ) -> dict:  # fmt: skip
        """Held-out tasks: :func:`bayesmeta.runs.task_set`."""
        from bayesmeta.runs import task_set

        return task_set(source, k, num_tasks, num_query=num_query, split=split)


sys.modules[__name__].__class__ = _CallableModule
