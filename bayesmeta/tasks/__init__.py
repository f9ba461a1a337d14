"""Task families, episodic batches and task files."""

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
    circles,
    linear_gaussian,
    sine_line,
    sinusoid,
    sinusoid_bmaml,
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
    "support_of",
]
