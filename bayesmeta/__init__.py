"""bayesmeta: probabilistic meta-learning on NumPyro and JAX."""
