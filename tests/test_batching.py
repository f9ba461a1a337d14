"""``map_batches``: equal to ``vmap`` item for item, and no remainder branch to deadlock in."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.batching import map_batches


def _f(item):
    x, y = item
    return {"s": jnp.sum(x * y), "v": jnp.tanh(x) + y[0]}


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 7, 50])
def test_equals_vmap(jit, batch_size):
    x = jax.random.normal(jax.random.PRNGKey(0), (7, 5))
    y = jax.random.normal(jax.random.PRNGKey(1), (7, 5))

    def run(xs):
        return map_batches(_f, xs, batch_size)

    got = (jax.jit(run) if jit else run)((x, y))
    want = jax.vmap(_f)((x, y))
    assert got["s"].shape == (7,) and got["v"].shape == (7, 5)
    np.testing.assert_allclose(got["s"], want["s"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["v"], want["v"], rtol=1e-6, atol=1e-6)


def test_empty_pytree_is_an_error():
    with pytest.raises(ValueError, match="xs"):
        map_batches(lambda a: a, (), 2)


def test_batched_cholesky_with_a_remainder_does_not_hang():
    """A batched Cholesky mapped in batches that do not divide the items: ``lax.map``'s
    remainder branch ran beside its scan and deadlocked XLA's CPU thread pool (two cores);
    in a subprocess so that a hang fails the test instead of stalling the suite."""
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from bayesmeta.batching import map_batches
        a = jax.random.normal(jax.random.PRNGKey(0), (40, 2000, 10, 10))
        a = a @ jnp.swapaxes(a, -1, -2) + 10 * jnp.eye(10)
        f = lambda m: jnp.linalg.cholesky(m).sum((-1, -2))
        got = jax.jit(lambda a: map_batches(f, a, 16))(a)
        np.testing.assert_allclose(got, jax.vmap(f)(a), rtol=1e-5)
        print("ok")
        """
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired:
        pytest.fail("map_batches over a batched Cholesky hung (XLA CPU thread-pool deadlock)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
