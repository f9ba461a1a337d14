"""Every method's behaviour pinned at fixed keys, so that a refactor of the methods (issue 41's
layered kernels) can show it changed nothing: the first jitted meta-step's loss and gradient
norm, θ after two steps, and the adapted log predictive on query points, for every registered
method on the small models of :mod:`test_every_method`, compared with the values recorded in
``pinned.json`` before the refactor.

A change of behaviour that is meant must say so: regenerate the file with
``python tests/inference/test_pinned.py`` and name the change and its reason in the commit.
The tolerance is float32 round-off across machines and XLA versions, not a loose one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_every_method import CASES, FAMILIES, MODELS, SMALL  # noqa: E402

from bayesmeta.inference.registry import METHODS  # noqa: E402
from bayesmeta.tasks import Support, sample_batch  # noqa: E402

PINNED = Path(__file__).parent / "pinned.json"
RTOL = 2e-4


def fingerprint(name: str, kind: str) -> dict[str, float]:
    """Scalars that change when a method's maths changes: loss and gradient norm of the first
    step, θ's sum and sum of squares after two, the adapted mean log predictive."""
    method = METHODS[name].factory(MODELS[kind](), **SMALL[name])
    fam = FAMILIES[kind]()
    batches = [sample_batch(fam, jax.random.PRNGKey(i), 2, (1, 3), 3)[0] for i in (1, 2)]
    step = jax.jit(method.meta_step)
    state = method.init(jax.random.PRNGKey(0))
    state, info = step(jax.random.PRNGKey(3), state, batches[0])
    state, _ = step(jax.random.PRNGKey(4), state, batches[1])
    leaves = [jnp.asarray(a, jnp.float64 if jax.config.x64_enabled else jnp.float32)
              for a in jax.tree.leaves(state.theta)]  # fmt: skip
    b = batches[1]
    post = jax.jit(method.adapt, static_argnums=3)(
        jax.random.PRNGKey(5), state, Support(b.x_support, b.y_support, b.mask_support), 4
    )
    lp = post.log_predictive(b.x_query, b.y_query)
    return {
        "loss": float(info.loss),
        "grad_norm": float(info.grad_norm),
        "theta_sum": float(sum(jnp.sum(a) for a in leaves)),
        "theta_sumsq": float(sum(jnp.sum(a * a) for a in leaves)),
        "log_predictive": float(jnp.mean(lp)),
    }


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kind"), CASES)
def test_behaviour_is_what_was_pinned(name, kind):
    pinned = json.loads(PINNED.read_text())
    key = f"{name}/{kind}"
    assert key in pinned, f"{key}: no pinned values; regenerate {PINNED.name} (see the docstring)"
    got = fingerprint(name, kind)
    for field, want in pinned[key].items():
        # theta_sum can sit near zero: its tolerance is relative to the sum of squares
        scale = max(abs(want), np.sqrt(abs(pinned[key]["theta_sumsq"])) if field == "theta_sum"
                    else abs(want), 1.0)  # fmt: skip
        assert abs(got[field] - want) <= RTOL * scale, (key, field, got[field], want)


if __name__ == "__main__":  # regenerate: behaviour changed on purpose
    values = {f"{n}/{k}": fingerprint(n, k) for n, k in CASES}
    PINNED.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    print(f"{len(values)} cases -> {PINNED}")
