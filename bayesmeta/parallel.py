"""Task batches sharded over a device mesh.

Meta-learning is data-parallel over tasks: every method's meta-loss is a mean over the tasks
of a batch, and θ is shared. :func:`task_mesh` builds a one-axis mesh ``("tasks",)`` over
devices; :func:`shard_tasks` places (or, inside ``jit``, constrains) the leading task axis of
a :class:`~bayesmeta.tasks.TaskBatch`, :class:`~bayesmeta.tasks.Support` or any task-major
pytree across it, and :func:`replicate` puts θ and the optimiser state on every device.
``train(..., mesh=mesh)`` does both inside its jitted chunk, so each device adapts its slice
of the tasks and XLA's SPMD partitioner turns the mean over tasks, and its gradient, into an
all-reduce:

    ∇θ (1/T) Σ_t L_t(θ)  =  Σ_d (1/T) Σ_{t ∈ shard d} ∇θ L_t(θ)      (one psum over devices)

Sharded ``jit`` rather than ``shard_map``: with a replicated θ, gradients taken inside a
``shard_map`` are summed over devices unless θ is first cast to varying and the loss is
``pmean``-ed (DESIGN.md, section 7); here the partitioner derives the collective, and
``tests/test_parallel.py`` checks that sharded meta-gradients and trained parameters equal
the unsharded ones.

On one CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before importing jax)
gives N host devices; on one host with accelerators, ``task_mesh()`` takes them all. Across
hosts, call ``jax.distributed.initialize()`` on every process first: ``jax.devices()`` then
lists every host's devices, ``task_mesh()`` spans them, and each process feeds the same
sampler key, so the batches agree without communication (they are drawn inside the jit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TASK_AXIS = "tasks"


def task_mesh(devices: Sequence[jax.Device] | int | None = None) -> Mesh:
    """A one-axis mesh named ``"tasks"``.

    Parameters
    ----------
    devices : sequence of devices, int or None
        The devices (default: all of ``jax.devices()``), or how many of them to use.
    """
    available = jax.devices()
    if devices is None:
        devices = available
    elif isinstance(devices, int):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices: expected between 1 and {len(available)} (the devices present), "
                f"got {devices}"
            )
        devices = available[:devices]
    devices = list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got none")
    return Mesh(np.array(devices), (TASK_AXIS,))


def _task_sharding(mesh: Mesh, x: Any) -> NamedSharding:
    ndim = np.ndim(x)
    return NamedSharding(mesh, PartitionSpec(TASK_AXIS, *([None] * (ndim - 1))))


def check_divisible(num_tasks: int, mesh: Mesh, name: str = "meta_batch") -> None:
    """Raise if ``num_tasks`` does not split evenly over the mesh's devices."""
    n = mesh.devices.size
    if num_tasks % n:
        raise ValueError(
            f"{name}: expected a multiple of the {n} devices of the mesh, got {num_tasks}"
        )


def shard_tasks(tree: Any, mesh: Mesh) -> Any:
    """Split the leading (task) axis of every array in ``tree`` over ``mesh``.

    Outside ``jit`` the arrays are placed on the devices; inside, the sharding is a
    constraint for the partitioner. The number of tasks must divide evenly.
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return tree
    check_divisible(int(np.shape(leaves[0])[0]), mesh, "number of tasks")

    def place(x):
        s = _task_sharding(mesh, x)
        if isinstance(x, jax.core.Tracer):
            return jax.lax.with_sharding_constraint(x, s)
        return jax.device_put(x, s)

    return jax.tree_util.tree_map(place, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put a full copy of every array in ``tree`` (θ, optimiser state, keys) on each device."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


__all__ = ["TASK_AXIS", "check_divisible", "replicate", "shard_tasks", "task_mesh"]
