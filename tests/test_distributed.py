"""Training across processes on JAX's distributed runtime (gloo collectives on CPU).

Two processes on localhost ports train MAML and ABML over one task mesh that spans them; the
result must equal one process drawing the same task streams. Tolerance: 1e-5 on every θ
entry after 30 Adam steps: the two runs differ only in the order of float32 sums in the
all-reduce of the meta-gradient.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.checkpoint import load_checkpoint
from bayesmeta.inference import maml, train
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.parallel import stream_sampler, task_mesh
from bayesmeta.tasks import sample_batch, sinusoid

CHILD = Path(__file__).parent / "distributed_child.py"
TOL = 1e-5
TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    # one CPU device per process, so the two-process mesh has two devices
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "force_host_platform_device_count" not in f)
    return env


def _launch(argv_for, n: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            argv_for(i), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(n)
    ]


def _wait(procs: list[subprocess.Popen]) -> list[int]:
    codes = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        codes.append((p.returncode, err[-2000:]))
    return codes


def _child(out: Path, n: int, *extra: str):
    port = _free_port()
    return lambda i: [
        sys.executable, str(CHILD), "--num-processes", str(n), "--process-id", str(i),
        "--port", str(port), "--out", str(out), *extra,
    ]  # fmt: skip


def _theta(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[k] for k in f.files if k.startswith("arr_")]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process and two processes trained from the same seed, concurrently."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    procs = _launch(_child(two, 2), 2) + _launch(_child(one, 1), 1)
    for code, err in _wait(procs):
        assert code == 0, err
    return one, two


# the three tests that start JAX processes run in the slow tier (CI runs it as its own step)
@pytest.mark.slow
@pytest.mark.parametrize("name", ["maml", "abml"])
def test_two_processes_train_the_same_theta_as_one(runs, name):
    one, two = runs
    a, b = _theta(one / f"{name}.npz"), _theta(two / f"{name}.npz")
    assert int(np.load(two / f"{name}.npz")["step"]) == 30
    assert _max_diff(a, b) < TOL
    assert max(float(np.abs(x).max()) for x in a) > 0  # a real θ, not zeros


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_theta(runs, tmp_path):
    one, _ = runs
    codes = _wait(_launch(_child(tmp_path, 2, "--die-after", "15"), 2))
    assert all(code == -signal.SIGKILL for code, _ in codes), codes
    assert not (tmp_path / "maml.npz").exists()
    assert load_checkpoint(tmp_path / "maml" / "checkpoint.npz")["step"] == 15
    for code, err in _wait(_launch(_child(tmp_path, 2, "--resume"), 2)):
        assert code == 0, err
    assert int(np.load(tmp_path / "maml.npz")["step"]) == 30
    assert _max_diff(_theta(one / "maml.npz"), _theta(tmp_path / "maml.npz")) < TOL


@pytest.mark.slow
def test_cli_fit_distributed_equals_one_process_with_the_same_streams(tmp_path):
    port = _free_port()
    base = [sys.executable, "-m", "bayesmeta.cli", "fit", "sinusoid", "--method", "maml",
            "--steps", "20", "--quiet"]  # fmt: skip
    dist = _launch(
        lambda i: [
            *base,
            "--out",
            str(tmp_path / "two"),
            "--distributed",
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            "2",
            "--process-id",
            str(i),
        ],  # fmt: skip
        2,
    )
    single = _launch(lambda i: [*base, "--out", str(tmp_path / "one"), "--task-streams", "2"], 1)
    for code, err in _wait(dist + single):
        assert code == 0, err
    a = load_checkpoint(tmp_path / "one" / "checkpoint.npz")
    b = load_checkpoint(tmp_path / "two" / "checkpoint.npz")
    assert a["step"] == b["step"] == 20 and a["task_streams"] == b["task_streams"] == 2
    ta, tb = ([v for k, v in sorted(c["arrays"].items()) if ".theta" in k] for c in (a, b))
    assert len(ta) >= 3
    assert _max_diff(ta, tb) < TOL
    info = json.loads((tmp_path / "two" / "run.json").read_text())
    assert info["processes"] == 2 and info["task_streams"] == 2


def test_stream_sampler_concatenates_independent_streams(key):
    fam = sinusoid()
    per = lambda k: sample_batch(fam, k, 3, (2, 2), 4)[0]  # noqa: E731
    batch = jax.jit(stream_sampler(per, 2))(key)
    k0, k1 = jax.random.split(key, 2)
    # the same draws (jitted against eager: float32 rounding of sin only)
    np.testing.assert_allclose(batch.x_support[:3], per(k0).x_support, rtol=1e-6)
    np.testing.assert_allclose(batch.y_query[3:], per(k1).y_query, rtol=1e-6, atol=1e-6)
    assert batch.x_support.shape == (6, 2, 1)
    # with a one-device mesh, the same tasks
    sharded = jax.jit(stream_sampler(per, 2, task_mesh(1)))(key)
    np.testing.assert_array_equal(sharded.x_support, batch.x_support)
    with pytest.raises(ValueError, match="num_streams: expected a positive integer, got 0"):
        stream_sampler(per, 0)


def test_only_process_zero_writes_checkpoints(key, tmp_path, monkeypatch):
    model = HierarchicalModel(mlp((1, 8, 1)))
    method = maml(model, inner_steps=1)
    fam = sinusoid()
    sampler = lambda k: sample_batch(fam, k, 2, (1, 3), 3)[0]  # noqa: E731
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    res = train(method, method.init(key), sampler, key, 4, chunk_size=2, run_dir=tmp_path,
                checkpoint_every=1, progress=False)  # fmt: skip
    assert int(res.state.step) == 4 and jnp.isfinite(res.history["loss"]).all()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--task-streams", "3"], "--task-streams: expected a divisor of the recipe's meta_batch"),
        (["--num-processes", "2", "--process-id", "2"], "process_id: expected an integer in"),
    ],
)
def test_bad_distributed_arguments_exit_2(tmp_path, args, needle):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bayesmeta.cli",
            "fit",
            "sinusoid",
            "--method",
            "maml",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "r"),
            *args,
        ],  # fmt: skip
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
