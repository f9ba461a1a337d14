"""NUTS: the gold-standard posterior over φ for a task, given a fixed (learned) θ.

For one task's support set and meta-parameters θ (the prior N(μ, diag σ²) and the noise σ_y
that some method learned) the exact task posterior is

    p(φ | D_tr, θ) ∝ p(D_tr | φ, θ) p(φ | θ),

and NumPyro's No-U-Turn sampler draws from it (several chains vectorised on one device,
diagonal mass matrix adapted in warm-up). Both densities come from the shared model's traces,
so NUTS sees exactly the posterior that ABML, BMAML and PLATIPUS approximate given that θ:
the difference between their predictive NLL and NUTS's measures the approximation, not the
prior. It is a reference for small networks and a few tasks: tasks are run one after another
(each is its own MCMC run), never inside a training loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.diagnostics import split_gelman_rubin
from numpyro.infer import MCMC, NUTS

from bayesmeta.inference.base import MetaState, Method, checked_adapt, model_dims
from bayesmeta.model import HierarchicalModel
from bayesmeta.tasks.base import Support

__all__ = ["nuts", "nuts_task_samples"]


def _prior_theta(theta: dict, model=None) -> dict:
    if model is not None and model.likelihood.generic:
        missing = [k for k in model.theta_keys if k not in theta]
        if missing:
            raise ValueError(f"theta: NUTS needs every θ site of the model; missing {missing}")
        return {k: theta[k] for k in model.theta_keys}
    missing = [k for k in ("mu", "log_sigma") if k not in theta]
    if missing:
        raise ValueError(
            f"theta: NUTS needs the prior sites 'mu' and 'log_sigma'; missing {missing} "
            "(MAML-type methods learn no prior scale)"
        )
    return {k: theta[k] for k in ("mu", "log_sigma", "log_noise") if k in theta}


def nuts_task_samples(
    key: jax.Array,
    model: HierarchicalModel,
    theta: dict,
    x: jax.Array,
    y: jax.Array,
    mask: jax.Array | None = None,
    *,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 4,
    target_accept_prob: float = 0.9,
) -> tuple[jax.Array, dict]:
    """Samples ``(num_chains * num_samples, P)`` of p(φ | D, θ) for one task, and diagnostics.

    Chains start at the prior's Gaussian view, loc plus scale-weighted noise (μ, σ for the
    built-in model). Diagnostics: the largest split R-hat over
    coordinates, the divergence count and the mean acceptance probability.
    """
    for name, val in (("num_warmup", num_warmup), ("num_samples", num_samples)):
        if int(val) < 1:
            raise ValueError(f"{name}: expected a positive integer, got {val}")
    th = _prior_theta(theta, model)
    mask = jnp.ones(x.shape[0]) if mask is None else mask

    def potential(phi):
        return -(model.log_likelihood(th, phi, x, y, mask) + model.log_prior(th, phi))

    k_init, k_run = jax.random.split(key)
    loc, sigma = model.prior_loc(th), jnp.exp(model.prior_log_scale(th))
    init = loc + sigma * jax.random.normal(k_init, (num_chains, loc.shape[0]), loc.dtype)
    kernel = NUTS(potential_fn=potential, target_accept_prob=target_accept_prob)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(k_run, init_params=init, extra_fields=("diverging", "accept_prob"))
    chains = mcmc.get_samples(group_by_chain=True)  # (C, N, P)
    extra = mcmc.get_extra_fields()
    diag = {
        "max_r_hat": float(np.max(split_gelman_rubin(np.asarray(chains))))
        if num_chains > 1
        else float("nan"),
        "divergences": int(np.sum(np.asarray(extra["diverging"]))),
        "accept_prob": float(np.mean(np.asarray(extra["accept_prob"]))),
    }
    return chains.reshape(-1, chains.shape[-1]), diag


def nuts(
    model: HierarchicalModel,
    theta: dict,
    *,
    num_warmup: int = 500,
    num_chains: int = 4,
    target_accept_prob: float = 0.9,
) -> Method:
    """The ``nuts`` reference as a :class:`Method` for a fixed ``theta`` (nothing to train).

    ``adapt(key, state, support, num_samples)`` runs NUTS on each task in turn and returns
    ``num_samples`` draws per task (``num_samples / num_chains`` per chain, rounded up, then
    truncated); ``extras["diagnostics"]`` holds each call's per-task diagnostics.
    """
    th = _prior_theta(theta, model)
    diagnostics: list[dict] = []
    chains_by_task: list = []

    def init(key):
        del key
        return MetaState(th, (), jnp.zeros((), jnp.int32))

    def meta_step(key, state, batch):
        raise ValueError("method: 'nuts' is a reference for a fixed θ; it has nothing to train")

    def adapt(key, state: MetaState, support: Support, num_samples: int = 1000):
        per_chain = -(-int(num_samples) // num_chains)
        phis = []
        diagnostics.clear()
        chains_by_task.clear()
        for t, k in enumerate(jax.random.split(key, support.x.shape[0])):
            s, d = nuts_task_samples(
                k,
                model,
                state.theta,
                support.x[t],
                support.y[t],
                support.mask[t],
                num_warmup=num_warmup,
                num_samples=per_chain,
                num_chains=num_chains,
                target_accept_prob=target_accept_prob,
            )
            chains_by_task.append(np.asarray(s).reshape(num_chains, per_chain, -1))
            phis.append(s[:num_samples])
            diagnostics.append(d)
        phi = jnp.stack(phis)
        return model.posterior(phi, state.theta, "nuts")

    def inference_data():
        """The last ``adapt``'s draws as ``arviz.InferenceData`` with their chains kept:
        ``posterior.phi (chain, draw, task, param)``, so ``az.summary`` reports split R-hat
        and bulk/tail ESS per task and coordinate, and ``az.plot_trace`` shows each chain."""
        import arviz as az

        if not chains_by_task:
            raise ValueError("inference_data: run adapt first; there are no NUTS draws yet")
        phi = np.stack(chains_by_task, axis=2)  # (C, N, T, P)
        return az.from_dict(
            posterior={"phi": phi},
            coords={"task": np.arange(phi.shape[2])},
            dims={"phi": ["task", "param"]},
            attrs={"method": "nuts", "diagnostics": str(diagnostics)},
        )

    config = dict(
        num_warmup=num_warmup, num_chains=num_chains, target_accept_prob=target_accept_prob
    )
    return Method(
        "nuts",
        init,
        meta_step,
        checked_adapt(adapt, **model_dims(model)),
        config,
        extras={"diagnostics": diagnostics, "inference_data": inference_data},
    )
