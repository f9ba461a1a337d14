"""Training recipes: the step counts and settings each method trains with, and budgets.

A recipe is a step count and its settings (``REGRESSION_RECIPES``: ``"*"`` for every method,
then each method's own); a budget (``REGRESSION_BUDGETS``: ``"full"``, ``"quick"``) overrides
it. :meth:`bayesmeta.zoo.ModelSpec.resolve` merges them into typed configs. Model files import
their recipes from here (``from bayesmeta.recipes import REGRESSION_RECIPES``).
"""

from __future__ import annotations

from typing import Any

from bayesmeta.inference.config import MethodConfig, TrainConfig
from bayesmeta.inference.registry import METHODS

TRAIN_KEYS = TrainConfig.field_names()

# Recipes tuned on the sinusoid (docs/results.md) and shared by the 1-D regression models:
# meta-batch 10, Adam 3e-3 with a cosine decay; ABML with 4 inner / 64 outer samples. Every
# recipe is a step count, so the same seed gives the same model on any machine; the counts
# keep a fit near or under 10 minutes on 2 CPU cores. ABML's stops at 12k steps of its 30k
# schedule, about where the wall-clock cap of the published runs stopped it, so that the
# step-based recipe trains the published model.
REGRESSION_RECIPES: dict[str, dict[str, Any]] = {
    "*": {"meta_batch": 10, "num_query": 10, "chunk_size": 250, "lr": 3e-3},
    "maml": {"steps": 100_000, "lr_decay_steps": 100_000, "inner_steps": 5, "inner_lr": 0.01},
    "meta-sgd": {"steps": 100_000, "lr_decay_steps": 100_000, "inner_steps": 5, "inner_lr": 0.01},
    "abml": {
        "steps": 12_000,
        "lr_decay_steps": 30_000,
        "inner_steps": 5,
        "inner_lr": 0.5,
        "inner_samples": 4,
        "outer_samples": 64,
        "outer": "predictive",
    },
    "amortized": {
        "steps": 20_000,
        "lr_decay_steps": 20_000,
        "covariance": "low-rank",
        "rank": 4,
        "train_samples": 8,
        "outer": "elbo",
    },
    "emaml": {
        "steps": 40_000,
        "lr_decay_steps": 40_000,
        "num_particles": 10,
        "inner_steps": 5,
        "inner_lr": 0.01,
    },
    "bmaml": {
        "steps": 15_000,
        "lr_decay_steps": 15_000,
        "num_particles": 10,
        "inner_steps": 5,
        "inner_lr": 0.1,
        "meta_sgd": True,
        "outer": "predictive",
    },
    "platipus": {
        "steps": 50_000,
        "lr_decay_steps": 50_000,
        "inner_steps": 5,
        "inner_lr": 0.01,
        "train_samples": 4,
        "outer": "predictive",
    },
    "neural-process": {
        "steps": 200_000,
        "lr_decay_steps": 200_000,
        "head_components": 2,
        "train_samples": 16,
        "outer": "predictive",
    },
}


def fixed_step_recipes(steps: int, **common) -> dict[str, dict[str, Any]]:
    """:data:`REGRESSION_RECIPES` with every method run for exactly ``steps`` steps on a cosine
    schedule of the same length (no wall-clock cap); ``common`` updates the shared ``"*"``
    settings. The recipe of the small grouped data sets, where long training overfits."""
    out = {
        method: {**settings, "steps": steps, "lr_decay_steps": steps, "max_seconds": None}
        for method, settings in REGRESSION_RECIPES.items()
        if method != "*"
    }
    out["*"] = {**REGRESSION_RECIPES["*"], **common}
    return out


REGRESSION_BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "*": {"steps": 300_000, "lr_decay_steps": 300_000, "max_seconds": None},
        "abml": {"steps": 100_000, "lr_decay_steps": 100_000, "max_seconds": None},
    },
    "quick": {"*": {"steps": 3_000, "lr_decay_steps": None}},
}
BUDGETS = ("default", "full", "quick")


def manifest_config(payload: dict) -> MethodConfig | None:
    """The typed method config a checkpoint or ``run.json`` records (None for ``reference``):
    ``method_config`` with its version, or, in a run saved before typed configs, the method's
    options in ``settings`` read as version 1. Renamed options are migrated."""
    method = payload.get("method")
    if method not in METHODS:
        return None
    cls = METHODS[method].config
    if isinstance(payload.get("method_config"), dict):
        return cls.from_dict(payload["method_config"])
    settings = payload.get("settings") or {}
    return cls.from_dict({k: v for k, v in settings.items() if k not in TRAIN_KEYS}, version=1)


__all__ = [
    "BUDGETS",
    "REGRESSION_BUDGETS",
    "REGRESSION_RECIPES",
    "TRAIN_KEYS",
    "fixed_step_recipes",
    "manifest_config",
]
