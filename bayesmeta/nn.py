"""Small functional networks as pure functions of pytrees.

A :class:`Network` is a pair ``init(key) -> params`` and ``apply(params, x) -> out``. The
hierarchical model works on the *flat* parameter vector φ ∈ R^P (``jax.flatten_util``), so that
priors, posteriors, particles and kernels are plain arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}


@dataclass(frozen=True)
class Network:
    """A functional network.

    Attributes
    ----------
    init : key -> params (pytree)
    apply : (params, x (N, Dx)) -> (N, Dout)
    name : str
    """

    init: Callable[[Array], object]
    apply: Callable[[object, Array], Array]
    name: str = "network"

    def flat(self, key: Array) -> tuple[Array, Callable[[Array], object]]:
        """Initial flat parameters φ0 (P,) and the function that unflattens φ."""
        params = self.init(key)
        flat, unravel = ravel_pytree(params)
        return flat, unravel


def mlp(sizes: Sequence[int], activation: str = "relu", name: str | None = None) -> Network:
    """Fully connected network ``sizes = (Dx, h1, ..., Dout)``.

    Weights are drawn with He (fan-in) scaling, ``W ~ N(0, 2/fan_in)``, biases zero.
    """
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"sizes: expected at least two positive layer sizes, got {tuple(sizes)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    act = ACTIVATIONS[activation]
    sizes = tuple(int(s) for s in sizes)

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        return [
            {
                "w": jax.random.normal(k, (m, n)) * math.sqrt(2.0 / m),
                "b": jnp.zeros((n,)),
            }
            for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
        ]

    def apply(params, x):
        h = x
        for layer in params[:-1]:
            h = act(h @ layer["w"] + layer["b"])
        return h @ params[-1]["w"] + params[-1]["b"]

    return Network(init=init, apply=apply, name=name or "mlp-" + "-".join(map(str, sizes)))


def linear(dx: int = 1, dout: int = 1) -> Network:
    """The linear model ``f(x) = x W + b`` (for closed-form checks)."""
    net = mlp((dx, dout), name=f"linear-{dx}-{dout}")
    return Network(
        init=lambda key: [{"w": jnp.zeros((dx, dout)), "b": jnp.zeros((dout,))}],
        apply=net.apply,
        name=net.name,
    )
