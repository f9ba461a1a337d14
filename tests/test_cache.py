"""The persistent compilation cache (issue 43, item 3): on by default in the user's cache
folder, a folder of one's own by the environment, off by ``BAYESMETA_COMPILATION_CACHE=0``."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import jax, jax.numpy as jnp
import bayesmeta
from bayesmeta.cache import enable_compilation_cache
print("DIR", jax.config.jax_compilation_cache_dir)
enable_compilation_cache(min_compile_seconds=0)
jax.jit(lambda a: jnp.sin(a) @ a.T)(jnp.ones((3, 3))).block_until_ready()
"""


def _run(env_value, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("BAYESMETA_COMPILATION_CACHE", None)
    if env_value is not None:
        env["BAYESMETA_COMPILATION_CACHE"] = env_value
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    return out.stdout.split("DIR", 1)[1].split()[0]


def test_on_by_default_in_the_users_cache_folder(tmp_path):
    folder = _run(None, tmp_path)
    assert folder == str(tmp_path / "xdg" / "bayesmeta" / "jax")
    assert any((tmp_path / "xdg" / "bayesmeta" / "jax").iterdir())  # a compiled program


def test_a_folder_of_ones_own_or_off(tmp_path):
    assert _run(str(tmp_path / "mine"), tmp_path) == str(tmp_path / "mine")
    assert _run("0", tmp_path) == "None"
    assert not (tmp_path / "xdg").exists()
