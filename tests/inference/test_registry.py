"""The method registry: one place that the specs, the CLI, the bench and the plots read."""

import pytest

from bayesmeta.inference.registry import METHODS, bench_methods, check_serves, method_info
from bayesmeta.model import NumPyroModel


def test_every_reader_sees_the_registry():
    from bayesmeta.bench import METHODS as BENCH
    from bayesmeta.plots import PALETTE
    from bayesmeta.zoo import METHOD_FACTORIES, METHOD_NAMES

    assert METHOD_NAMES == (*METHODS, "reference")
    assert {n: f for n, f in METHOD_FACTORIES.items()} == {n: i.factory for n, i in METHODS.items()}
    assert BENCH == bench_methods() and set(BENCH) <= set(METHODS)
    assert all(PALETTE[n] == i.colour for n, i in METHODS.items())
    assert len({i.colour for i in METHODS.values()}) == len(METHODS)  # told apart in plots


def test_a_method_that_needs_the_builtin_model_says_so():
    def model(x, y=None, mask=None):
        import numpyro
        import numpyro.distributions as dist

        t, n, _ = x.shape
        with numpyro.plate("tasks", t, dim=-2):
            a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        with numpyro.plate("tasks", t, dim=-2), numpyro.plate("points", n, dim=-1):
            numpyro.sample("y", dist.Normal(a + 0 * x[..., 0], 1.0), obs=y)

    generic = NumPyroModel(model, dx=1)
    with pytest.raises(ValueError, match="'neural-process' needs the built-in HierarchicalModel"):
        check_serves("neural-process", generic)
    for name, info in METHODS.items():
        if info.any_model:
            check_serves(name, generic)
    with pytest.raises(ValueError, match="method: expected one of"):
        method_info("maml2")


def test_the_reference_is_registered_once_not_trainable_with_a_typed_config():
    from bayesmeta.inference.config import ConfigError
    from bayesmeta.inference.registry import (
        ORACLE,
        REFERENCES,
        ReferenceConfig,
        method_names,
        trainable,
    )
    from bayesmeta.zoo import METHOD_NAMES

    assert ORACLE in REFERENCES and not trainable(ORACLE)
    assert all(trainable(n) for n in METHODS)
    assert METHOD_NAMES == method_names() == (*METHODS, *REFERENCES)
    assert ReferenceConfig.make().to_dict() == {"version": 1}
    with pytest.raises(ConfigError, match="reference: has no options"):
        ReferenceConfig.make(lr=1e-3)
    with pytest.raises(ValueError, match="method: expected one of"):
        trainable("referenc")
