"""Likelihoods as objects (issue 41, item 3): each carries its own kernels, reads as its name,
and every model, family and task posterior holds the object."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import bayesmeta as bm
from bayesmeta.likelihoods import (
    CATEGORICAL,
    GAUSSIAN,
    GENERIC,
    Likelihood,
    as_likelihood,
)
from bayesmeta.posterior import TaskPosterior


def test_a_likelihood_reads_as_its_name():
    assert GAUSSIAN == "gaussian" and json.dumps({"l": GAUSSIAN}) == '{"l": "gaussian"}'
    assert repr(CATEGORICAL) == "'categorical'" and hash(GENERIC) == hash("generic")
    assert as_likelihood("gaussian") is GAUSSIAN and as_likelihood(GENERIC) is GENERIC
    with pytest.raises(ValueError, match="likelihood: expected one of"):
        as_likelihood("poisson")
    with pytest.raises(ValueError, match=r"expected one of \('gaussian', 'categorical'\)"):
        as_likelihood("generic", ("gaussian", "categorical"))
    kinds = {(lik.gaussian, lik.classifier, lik.generic) for lik in (GAUSSIAN, CATEGORICAL,
                                                                      GENERIC)}  # fmt: skip
    assert len(kinds) == 3


def test_models_families_and_posteriors_hold_the_object():
    spec = bm.load_model_spec("sinusoid")
    assert isinstance(spec.family.likelihood, Likelihood) and spec.family.likelihood.gaussian
    assert isinstance(spec.model.likelihood, Likelihood)
    post = TaskPosterior(jnp.zeros((1, 2, 1)), jnp.log(jnp.full((1, 2), 0.5)),
                         jnp.ones((1, 2)), lambda p, x: x * p[0], "gaussian")  # fmt: skip
    assert post.likelihood is GAUSSIAN


def test_the_gaussian_kernels_are_the_mixture_formulas():
    rng = np.random.default_rng(0)
    phi = jnp.asarray(rng.normal(size=(2, 3, 1)), jnp.float32)
    sd = jnp.asarray(rng.uniform(0.3, 1.0, (2, 3)), jnp.float32)
    lw = jnp.log(jnp.asarray([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], jnp.float32))
    post = TaskPosterior(phi, lw, sd, lambda p, x: x * p[0], "gaussian")
    x = jnp.asarray(rng.normal(size=(2, 4, 1)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(2, 4, 1)), jnp.float32)
    f = np.asarray(x)[:, None] * np.asarray(phi)[:, :, None, :]  # (T, S, N, 1)
    w, s = np.exp(np.asarray(lw)), np.asarray(sd)
    dens = (w[:, :, None] * stats.norm.pdf(np.asarray(y)[:, None, :, 0], f[..., 0],
                                           s[:, :, None])).sum(1)  # fmt: skip
    np.testing.assert_allclose(post.log_predictive(x, y), np.log(dens), rtol=1e-5)
    cdf = (w[:, :, None] * stats.norm.cdf(np.asarray(y)[:, None, :, 0], f[..., 0],
                                          s[:, :, None])).sum(1)  # fmt: skip
    np.testing.assert_allclose(np.asarray(post.cdf(x, y))[..., 0], cdf, rtol=1e-5)
    mean = (w[:, :, None] * f[..., 0]).sum(1)
    var = (w[:, :, None] * (f[..., 0] - mean[:, None]) ** 2).sum(1) + (w * s**2).sum(1)[:, None]
    np.testing.assert_allclose(np.asarray(post.mean(x))[..., 0], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(post.variance(x))[..., 0], var, rtol=1e-5)


def test_the_categorical_kernel_is_the_softmax_mixture():
    rng = np.random.default_rng(1)
    phi = jnp.asarray(rng.normal(size=(1, 2, 3)), jnp.float32)
    lw = jnp.log(jnp.asarray([[0.25, 0.75]], jnp.float32))
    post = TaskPosterior(phi, lw, jnp.ones((1, 2)), lambda p, x: x * p, "categorical")
    x = jnp.ones((1, 2, 3))
    y = jnp.asarray([[0, 2]])
    probs = jax.nn.softmax(np.asarray(phi)[0], -1)  # (S, C)
    want = np.log(0.25 * probs[0] + 0.75 * probs[1])[[0, 2]]
    np.testing.assert_allclose(np.asarray(post.log_predictive(x, y))[0], want, rtol=1e-5)
    assert math.isclose(float(np.asarray(post.probs(x)).sum(-1)[0, 0]), 1.0, rel_tol=1e-6)
