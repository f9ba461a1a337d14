"""A sequential map over the leading axis in fixed-size batches, without a remainder branch.

``jax.lax.map(f, xs, batch_size=b)`` runs ``f`` vmapped over batches of ``b`` inside a scan and
over the last ``T mod b`` items in a second, independent vmap. XLA's CPU runtime may run those
two branches at once; where ``f`` contains a batched LAPACK call (the Cholesky factors of the
conjugate heads), each call splits its batch over the same intra-op thread pool and waits for
its parts, and with both pool threads so waiting neither part ever runs: the program hangs
with no CPU use (jaxlib's ``ParallelBatchMap`` inside a thunk on a pool worker). Padding the
items to a multiple of ``b`` leaves a single scan, whose steps run one after the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["map_batches"]


def map_batches(f: Callable[[Any], Any], xs: Any, batch_size: int) -> Any:
    """``jax.lax.map(f, xs, batch_size=batch_size)`` as one scan over ``ceil(T / b)`` batches.

    The ``T`` items of ``xs`` (a pytree with a common leading axis) are padded to a multiple
    of ``b`` by repeating the last item; the outputs of the padding are dropped, so the result
    equals ``jax.vmap(f)(xs)`` item for item. ``b >= T`` is one vmap.
    """
    leaves = jax.tree_util.tree_leaves(xs)
    if not leaves:
        raise ValueError("xs: expected a pytree of arrays with a leading item axis, got none")
    t = int(leaves[0].shape[0])
    b = max(1, min(int(batch_size), t))
    if b == t:
        return jax.vmap(f)(xs)
    pad = -t % b
    if pad:
        xs = jax.tree_util.tree_map(
            lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]), xs
        )
    out = jax.lax.map(f, xs, batch_size=b)
    return jax.tree_util.tree_map(lambda a: a[:t], out) if pad else out
