"""Sharded meta-training equals unsharded (4 forced host devices, in a child process: the
device count is fixed when jax starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from bayesmeta.parallel import check_divisible, shard_tasks, task_mesh

CHILD = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from bayesmeta.inference import abml, maml, train
    from bayesmeta.model import HierarchicalModel
    from bayesmeta.nn import mlp
    from bayesmeta.parallel import shard_tasks, task_mesh
    from bayesmeta.tasks import sample_batch, sinusoid

    assert len(jax.devices()) == 4, jax.devices()
    mesh = task_mesh()
    model = HierarchicalModel(mlp((1, 16, 16, 1), activation="tanh"), prior_scale=0.1)
    fam = sinusoid(noise=0.3)
    sampler = lambda key: sample_batch(fam, key, 8, (1, 10), 10)[0]
    out = {}
    for name, method in [
        ("maml", maml(model, inner_steps=2)),
        ("abml", abml(model, inner_steps=1, inner_samples=2, outer_samples=2)),
    ]:
        state = method.init(jax.random.PRNGKey(0))
        # 30 Adam steps in two chunks from the same start: only the order of float sums differs
        r1 = train(method, state, sampler, jax.random.PRNGKey(5), 30, chunk_size=15)
        r4 = train(method, state, sampler, jax.random.PRNGKey(5), 30, chunk_size=15, mesh=mesh)
        d = [
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree_util.tree_leaves(r1.state.theta),
                            jax.tree_util.tree_leaves(r4.state.theta))
        ]
        out[name + "_theta_maxabs"] = max(d)
        out[name + "_history"] = float(np.max(np.abs(r1.history["loss"] - r4.history["loss"])))
        leaf = jax.tree_util.tree_leaves(r4.state.theta)[0]
        out[name + "_replicated"] = leaf.sharding.is_fully_replicated
    # the meta-gradient itself, on a batch placed on the 4 devices by hand
    method = maml(model, inner_steps=2)
    state = method.init(jax.random.PRNGKey(0))
    batch = sampler(jax.random.PRNGKey(7))
    def loss(theta, b):
        st = state._replace(theta=theta)
        return method.meta_step(jax.random.PRNGKey(0), st, b)[1].loss
    g1 = jax.jit(jax.grad(loss))(state.theta, batch)
    sb = shard_tasks(batch, mesh)
    assert len(sb.x_support.sharding.device_set) == 4
    g4 = jax.jit(jax.grad(loss))(state.theta, sb)
    out["grad_maxrel"] = max(
        float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12))
        for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g4))
    )
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def sharded_run():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


# the sharded run is a child process with 4 host devices (~30 s): the slow tier
@pytest.mark.slow
@pytest.mark.parametrize("name", ["maml", "abml"])
def test_sharded_meta_step_and_training_equal_unsharded(sharded_run, name):
    r = sharded_run
    assert r[name + "_theta_maxabs"] < 1e-4
    assert r[name + "_history"] < 1e-4
    assert r[name + "_replicated"]


@pytest.mark.slow
def test_sharded_meta_gradient_equals_unsharded(sharded_run):
    assert sharded_run["grad_maxrel"] < 1e-5


def test_task_mesh_and_shard_tasks_on_one_device():
    mesh = task_mesh()
    assert mesh.axis_names == ("tasks",)
    x = jax.numpy.ones((6, 3))
    assert shard_tasks({"x": x}, mesh)["x"].shape == (6, 3)
    with pytest.raises(ValueError, match="devices: expected between 1"):
        task_mesh(len(jax.devices()) + 1)


def test_uneven_split_is_rejected():
    class FakeMesh:
        class devices:
            size = 4

    with pytest.raises(ValueError, match="meta_batch: expected a multiple of the 4 devices"):
        check_divisible(10, FakeMesh)
