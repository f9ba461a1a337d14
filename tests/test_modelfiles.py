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


def test_the_hetero_model_scores_each_point_under_its_own_noise():
    """models/sinusoid_hetero.py: log p(y | x, φ, θ) is N(f_φ(x), exp(a₀ + a₁ x)²) per point,
    and its family is the heteroscedastic sinusoid that the exact reference knows."""
    import math

    import jax
    import jax.numpy as jnp
    import numpy as np

    spec = load_model_spec("sinusoid_hetero")
    assert spec.family.noise_x_fn is not None and spec.family.reference_grid is not None
    model = spec.model
    theta = {**model.init_theta(jax.random.PRNGKey(0)), "noise_a0": jnp.asarray(-0.5),
             "noise_a1": jnp.asarray(0.4)}  # fmt: skip
    phi = model.prior_loc(theta)
    x = jnp.linspace(-4.0, 4.0, 5)[:, None]
    y = jnp.ones((5, 1))
    got = model.log_likelihood_points(theta, phi, x, y)
    f = np.asarray(model.observe(theta, phi, x).mean)[0]
    sd = np.exp(-0.5 + 0.4 * np.asarray(x[:, 0]))
    exact = -0.5 * ((1.0 - f) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5)
