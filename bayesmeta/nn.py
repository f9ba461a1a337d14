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


NORMS = ("layer", "none")
CONV_IMPLS = ("auto", "conv", "matmul")


def _conv_matmul(x: Array, w: Array, stride: int) -> Array:
    """``conv_general_dilated(x, w, stride, "SAME")`` (NHWC, HWIO) as patches @ weights.

    The k×k shifted, strided slices of the padded input are concatenated along channels and
    multiplied by the reshaped kernel: under ``vmap`` over per-task kernels this is a batched
    matmul, where XLA:CPU turns a batched-kernel convolution into a slow grouped one.
    """
    n, h, wd, c = x.shape
    kh, kw = w.shape[0], w.shape[1]
    ho, wo = -(-h // stride), -(-wd // stride)
    ph = max((ho - 1) * stride + kh - h, 0)
    pw = max((wo - 1) * stride + kw - wd, 0)
    xp = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    cols = [
        xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride, :]
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.concatenate(cols, -1) @ w.reshape(kh * kw * c, -1)


def conv4(
    image_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 5,
    filters: int = 32,
    *,
    num_blocks: int = 4,
    stride: int = 2,
    norm: str = "layer",
    impl: str = "auto",
    name: str | None = None,
) -> Network:
    """The 4-block convolutional network of MAML's Omniglot experiments (Finn et al. 2017).

    Each block is a 3×3 convolution with ``filters`` channels and ``stride`` (MAML uses
    stride 2 instead of max-pooling for Omniglot; 28 → 14 → 7 → 4 → 2), a normalisation, a
    per-channel bias and a ReLU. The feature map of the last block is averaged over space
    (as MAML does for Omniglot) and a linear layer gives the logits.

    Normalisation: MAML's batch norm uses the statistics of the batch it is applied to, which
    makes one point's prediction depend on the others (and needs running statistics to
    avoid that at test time). Here ``norm="layer"`` normalises each example's feature map to
    zero mean and unit variance over (H, W, C), with no parameters of its own: predictions
    are per-example, nothing is stored outside φ, and vmapping over tasks, particles or
    samples needs no care. The following bias (MAML's β) and the next layer's weights carry
    the scale. ``norm="none"`` drops it (the bias is then the convolution's).

    Parameters
    ----------
    image_shape : (H, W, C)
        Inputs are flattened images ``x (N, H·W·C)`` in row-major (H, W, C) order.
    num_classes : int
        Width of the logits.
    filters : int
        F, channels of every convolution.
    num_blocks : int
        Number of convolutional blocks (4 for conv4).
    stride : int
        Stride of every convolution (``"SAME"`` padding).
    norm : {"layer", "none"}
    impl : {"auto", "conv", "matmul"}
        How a convolution is computed: ``"conv"`` is ``jax.lax.conv_general_dilated``;
        ``"matmul"`` the same convolution as strided patches times the kernel (equal to
        float rounding). Methods vmap the network over per-task weights, which XLA:CPU
        compiles into slow grouped convolutions (benchmarks/glyph_step.py measures it), so
        ``"auto"`` picks ``"matmul"`` on CPU and ``"conv"`` elsewhere.
    name : str, optional

    Notes
    -----
    Parameters are a list of layers, ``[{"w": (3, 3, C_in, F), "b": (F,)}] * num_blocks +
    [{"w": (F, num_classes), "b": (num_classes,)}]``, weights drawn with He (fan-in) scaling
    ``N(0, 2 / fan_in)`` (fan-in ``9·C_in`` for a convolution), biases zero; the last entry
    is the output layer (what the neural process treats as the task variable).
    """
    shape = tuple(image_shape)
    if len(shape) != 3 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in shape):
        raise ValueError(f"image_shape: expected three positive integers (H, W, C), got {shape}")
    h, w, c = (int(v) for v in shape)
    for arg, val, lo in (
        ("num_classes", num_classes, 1),
        ("filters", filters, 1),
        ("num_blocks", num_blocks, 1),
        ("stride", stride, 1),
    ):
        if isinstance(val, bool) or not isinstance(val, int) or val < lo:
            raise ValueError(f"{arg}: expected an integer >= {lo}, got {val!r}")
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
    if impl not in CONV_IMPLS:
        raise ValueError(f"impl: expected one of {CONV_IMPLS}, got {impl!r}")
    dx = h * w * c

    shapes = [(3, 3, c if i == 0 else filters, filters) for i in range(num_blocks)]
    shapes.append((filters, num_classes))
    fan_in = [math.prod(sh[:-1]) for sh in shapes]
    sizes = [math.prod(sh) for sh in shapes]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]

    @jax.jit
    def init(key):
        # One draw for all weights (one compiled random kernel, fast to initialise).
        z = jax.random.normal(key, (sum(sizes),))
        return [
            {
                "w": z[o : o + n].reshape(sh) * math.sqrt(2.0 / f),
                "b": jnp.zeros((sh[-1],)),
            }
            for o, n, sh, f in zip(offsets, sizes, shapes, fan_in, strict=True)
        ]

    def apply(params, x):
        if x.shape[-1] != dx:
            raise ValueError(
                f"x: expected (N, {dx}) flattened {h}×{w}×{c} images, got shape {x.shape}"
            )
        lead = x.shape[:-1]
        hid = x.reshape(-1, h, w, c).astype(jnp.result_type(x.dtype, params[0]["w"].dtype))
        use = impl if impl != "auto" else ("matmul" if jax.default_backend() == "cpu" else "conv")
        for layer in params[:-1]:
            if use == "conv":
                hid = jax.lax.conv_general_dilated(
                    hid,
                    layer["w"],
                    window_strides=(stride, stride),
                    padding="SAME",
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                )
            else:
                hid = _conv_matmul(hid, layer["w"], stride)
            if norm == "layer":
                mean = jnp.mean(hid, axis=(1, 2, 3), keepdims=True)
                var = jnp.var(hid, axis=(1, 2, 3), keepdims=True)
                hid = (hid - mean) * jax.lax.rsqrt(var + 1e-5)
            hid = jax.nn.relu(hid + layer["b"])
        feat = jnp.mean(hid, axis=(1, 2))
        out = feat @ params[-1]["w"] + params[-1]["b"]
        # the output width is the last layer's: an identity last layer gives the features
        return out.reshape(*lead, out.shape[-1])

    return Network(
        init=init,
        apply=apply,
        name=name or f"conv{num_blocks}-{h}x{w}x{c}-f{filters}-s{stride}-{norm}-{num_classes}",
    )


def linear(dx: int = 1, dout: int = 1) -> Network:
    """The linear model ``f(x) = x W + b`` (for closed-form checks)."""
    net = mlp((dx, dout), name=f"linear-{dx}-{dout}")
    return Network(
        init=lambda key: [{"w": jnp.zeros((dx, dout)), "b": jnp.zeros((dout,))}],
        apply=net.apply,
        name=net.name,
    )


# -- networks from the ecosystem -----------------------------------------------------------------
def from_apply(params, apply: Callable[[object, Array], Array], name: str = "apply") -> Network:
    """A network from an initial parameter pytree and ``apply(params, x (N, Dx)) -> (N, Dout)``.

    ``params`` may also be a function ``key -> params`` (a fresh initialisation per key, which
    ensembles and particle methods use to start their members apart).
    """
    if not callable(apply):
        raise TypeError(f"apply: expected a function (params, x) -> outputs, got {apply!r}")
    init = params if callable(params) else (lambda key: params)
    return Network(init=init, apply=apply, name=name)


def from_equinox(module, name: str | None = None) -> Network:
    """A network from an Equinox module acting on one example ``x (Dx,) -> (Dout,)``.

    Its arrays (``eqx.partition(module, eqx.is_array)``) are the parameters; the rest is held
    static; ``apply`` maps the module over the N points. Every key gives the module's own
    weights: construct the module with the key you want.
    """
    import equinox as eqx

    params, static = eqx.partition(module, eqx.is_array)

    def apply(p, x):
        return jax.vmap(eqx.combine(p, static))(x)

    return Network(init=lambda key: params, apply=apply, name=name or type(module).__name__)


def from_flax(module, x_example: Array, name: str | None = None) -> Network:
    """A network from a Flax ``linen`` module acting on a batch ``x (N, Dx) -> (N, Dout)``.

    ``init(key)`` is ``module.init(key, x_example)`` (a fresh initialisation per key) and
    ``apply`` is ``module.apply``.
    """
    x0 = jnp.asarray(x_example)
    return Network(
        init=lambda key: module.init(key, x0),
        apply=module.apply,
        name=name or type(module).__name__,
    )
