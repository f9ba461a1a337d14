"""Shared pieces of the inference methods."""

import jax
import numpy as np
import pytest

from bayesmeta.inference.base import log_mean_exp


@pytest.mark.parametrize("jit", [False, True])
def test_log_mean_exp_is_log_of_the_sample_mean_and_stable(key, jit):
    f = jax.jit(log_mean_exp) if jit else log_mean_exp
    x = jax.random.normal(key, (7, 3, 2))
    np.testing.assert_allclose(f(x), np.log(np.mean(np.exp(x), 0)), rtol=1e-5)
    big = np.array([[-1000.0], [-1001.0]], np.float32)  # exp underflows; the result must not
    np.testing.assert_allclose(f(big), -1000 + np.log((1 + np.exp(-1)) / 2), rtol=1e-6)
