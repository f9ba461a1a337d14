"""MAML's sinusoid with the network written in Equinox (docs/models.md, "Networks").

The same hierarchical model as ``models/sinusoid.py`` (Gaussian prior over the weights,
Gaussian likelihood with learned noise) around an ``equinox.nn.MLP`` 1-40-40-1 (tanh),
through :func:`bayesmeta.nn.from_equinox`. Needs ``equinox`` (``pip install equinox``).
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import from_equinox
from bayesmeta.recipes import REGRESSION_BUDGETS, REGRESSION_RECIPES
from bayesmeta.tasks import sinusoid
from bayesmeta.zoo import ModelSpec

MLP = eqx.nn.MLP(1, 1, 40, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))

SPEC = ModelSpec(
    name="sinusoid_equinox",
    family=sinusoid(noise=0.3),
    model=HierarchicalModel(from_equinox(MLP), prior_scale=0.03, noise_init=0.5),
    recipes=REGRESSION_RECIPES,
    budgets=REGRESSION_BUDGETS,
    k_range=(1, 10),
)
