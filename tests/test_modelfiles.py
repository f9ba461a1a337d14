"""Model files written against the old documented imports keep loading after the zoo split
(issue 41, item 9): the moved names import from bayesmeta.zoo with a DeprecationWarning."""

from __future__ import annotations

import warnings

import pytest

from bayesmeta.modelfiles import builtin_models, load_model_spec
from bayesmeta.recipes import REGRESSION_RECIPES

OLD_STYLE = """
from bayesmeta.zoo import ModelSpec, REGRESSION_RECIPES
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.tasks import sinusoid

SPEC = ModelSpec(
    name="old_style",
    family=sinusoid(),
    model=HierarchicalModel(mlp((1, 8, 1)), dx=1),
    recipes=REGRESSION_RECIPES,
)
"""


def test_a_model_file_written_the_old_way_loads_with_a_warning(tmp_path):
    path = tmp_path / "old_style.py"
    path.write_text(OLD_STYLE)
    with pytest.warns(DeprecationWarning, match="bayesmeta.recipes.REGRESSION_RECIPES"):
        spec = load_model_spec(str(path))
    assert spec.name == "old_style" and spec.recipes is REGRESSION_RECIPES
    assert spec.build("maml", steps=2)[0].name == "maml"


def test_every_moved_name_is_the_same_object_from_its_old_home():
    import bayesmeta.zoo as zoo

    for name, home in zoo.MOVED.items():
        module = __import__(home, fromlist=[name])
        with pytest.warns(DeprecationWarning, match=f"{home}.{name}"):
            assert getattr(zoo, name) is getattr(module, name)
    with pytest.raises(AttributeError, match="no_such_name"):
        zoo.no_such_name  # noqa: B018


def test_the_builtin_models_import_from_their_new_homes():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for name in ("sinusoid", "sine_line", "circles"):
            assert name in builtin_models()
            assert load_model_spec(name).name
