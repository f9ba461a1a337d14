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
gives N host devices; on one host with accelerators, ``task_mesh()`` takes them all.

Across processes (several hosts, or several processes on one host), call
:func:`initialize_distributed` on every process first (JAX's distributed runtime; on CPU the
collectives are gloo's): ``jax.devices()`` then lists every process's devices and
``task_mesh()`` spans them. :func:`stream_sampler` splits the meta-batch into independent
task streams, one key each, so that under the mesh each device draws only its own streams'
tasks inside the jit: no batch crosses between processes, only the gradient's all-reduce.
The same ``stream_sampler`` on one process, without a mesh, draws the very same tasks, so a
run's θ does not depend on how many processes trained it (up to the order of float sums).
Checkpoints are written by process 0 only (:func:`is_primary`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
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


def stream_sampler(
    sample_fn: Callable[[jax.Array], Any], num_streams: int, mesh: Mesh | None = None
) -> Callable[[jax.Array], Any]:
    """A sampler of ``num_streams`` independent task streams, concatenated along tasks.

    ``sample(key)`` splits ``key`` into ``num_streams`` stream keys and draws
    ``sample_fn(key_s)`` (``b`` tasks each) for every stream, giving ``num_streams * b``
    tasks, stream-major. With ``mesh`` the stream axis is split over its devices, so each
    device (and so each process) computes only its own streams' tasks; without it the same
    tasks are drawn on one device.

    Parameters
    ----------
    sample_fn : key -> task-major pytree
        A jittable sampler of one stream's tasks, with static shapes.
    num_streams : int
        Streams per batch; a multiple of the mesh's device count when a mesh is given.
    """
    if not isinstance(num_streams, int) or num_streams < 1:
        raise ValueError(f"num_streams: expected a positive integer, got {num_streams!r}")
    if mesh is not None:
        check_divisible(num_streams, mesh, "num_streams")

    def sample(key: jax.Array) -> Any:
        keys = jax.random.split(key, num_streams)
        if mesh is not None:
            keys = shard_tasks(keys, mesh)
        per_stream = jax.vmap(sample_fn)(keys)
        if mesh is not None:
            per_stream = shard_tasks(per_stream, mesh)
        return jax.tree_util.tree_map(
            lambda x: x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:]), per_stream
        )

    return sample


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {text!r}") from None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> tuple[int, int]:
    """Join JAX's distributed runtime; return ``(process_index, process_count)``.

    Arguments left as ``None`` are read from ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; what is still unset is left to JAX's own
    cluster detection (Slurm, Open MPI, Kubernetes). On CPU the cross-process collectives are
    gloo's. Call it once per process, before any other JAX computation.
    """
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes: expected a positive integer, got {num_processes}")
    if (
        process_id is not None
        and num_processes is not None
        and not (0 <= process_id < num_processes)
    ):
        raise ValueError(
            f"process_id: expected an integer in [0, {num_processes}), got {process_id}"
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    return jax.process_index(), jax.process_count()


def is_primary() -> bool:
    """Whether this is process 0, the one that writes checkpoints and reports."""
    return jax.process_index() == 0


__all__ = [
    "TASK_AXIS",
    "check_divisible",
    "initialize_distributed",
    "is_primary",
    "replicate",
    "shard_tasks",
    "stream_sampler",
    "task_mesh",
]
