"""benchmarks/choose_recipes.py: option values, combinations given together, and its report's
table (the fits themselves are the library's, tested there)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "choose_recipes.py"


@pytest.fixture(scope="module")
def mod():
    spec = importlib.util.spec_from_file_location("choose_recipes", SCRIPT)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def test_a_trial_is_one_combination_of_typed_values(mod):
    assert mod.parse_trial("steps=60000,lr_decay_steps=60000,outer=ml-pip,lr=3e-4") == {
        "steps": 60000, "lr_decay_steps": 60000, "outer": "ml-pip", "lr": 3e-4}  # fmt: skip
    assert mod.parse_grid(["inner_lr=0.5,0.1"]) == {"inner_lr": [0.5, 0.1]}
    for bad in ("steps", "steps=", "=3", "steps=1,,"):
        with pytest.raises(SystemExit, match="--trial"):
            mod.parse_trial(bad)


def test_the_table_has_a_column_for_every_option_any_trial_set(mod):
    trials = [
        {"options": {"steps": 20000}, "validation_nll": 0.7, "best_step": 1, "steps": 2,
         "seconds": 3.0},
        {"options": {"steps": 60000, "outer": "ml-pip"}, "validation_nll": 0.6, "best_step": 4,
         "steps": 5, "seconds": 6.0},
    ]  # fmt: skip
    report = {"model": "m", "method": "amortized", "commit": "abc", "command": "c", "date": "d",
              "seed": 0, "total_seconds": 9.0, "trials": trials, "chosen": 1}  # fmt: skip
    md = mod.markdown(report)
    assert "| steps | outer | validation NLL |" in md
    assert "| 20000 |  | 0.7000 |" in md and "| 60000 | ml-pip | 0.6000 **(chosen)** |" in md
