"""The model zoo: one file per hierarchical model (shipped as ``bayesmeta.models``)."""
