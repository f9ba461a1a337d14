"""One process of the multi-process training test (``tests/test_distributed.py``).

    python tests/distributed_child.py --num-processes N --process-id I --port P --out DIR
        [--steps S] [--die-after D] [--resume]

Meta-trains a small MAML and ABML for ``--steps`` steps (chunks of 15) over a task mesh that
spans the N processes (N = 1: one process, no mesh) on two task streams, so that every N
draws the same tasks; process 0 writes each method's θ to ``DIR/<method>.npz``. With
``--die-after D`` the process SIGKILLs itself after the step-D checkpoint of MAML (a killed
run); ``--resume`` continues MAML from the checkpoint in ``DIR/maml``.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import jax
import numpy as np

from bayesmeta.checkpoint import CHECKPOINT_NAME, load_checkpoint
from bayesmeta.inference import abml, maml, train
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.parallel import initialize_distributed, is_primary, stream_sampler, task_mesh
from bayesmeta.tasks import sample_batch, sinusoid

STREAMS, TASKS_PER_STREAM, CHUNK = 2, 4, 15


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--num-processes", type=int, required=True)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--die-after", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()

    mesh = None
    if args.num_processes > 1:
        initialize_distributed(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
        mesh = task_mesh()
        assert mesh.devices.size == args.num_processes, mesh
    out = Path(args.out)
    model = HierarchicalModel(mlp((1, 16, 16, 1), activation="tanh"), prior_scale=0.1)
    fam = sinusoid(noise=0.3)
    sampler = stream_sampler(
        lambda key: sample_batch(fam, key, TASKS_PER_STREAM, (1, 10), 10)[0], STREAMS, mesh
    )
    methods = {
        "maml": maml(model, inner_steps=2),
        "abml": abml(model, inner_steps=1, inner_samples=2, outer_samples=2),
    }
    if args.resume or args.die_after is not None:
        methods = {"maml": methods["maml"]}
    for name, method in methods.items():
        state, key = method.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(5)
        steps = args.steps
        if args.resume:
            ckpt = load_checkpoint(out / name / CHECKPOINT_NAME, template=state)
            state, key = ckpt["state"], np.asarray(ckpt["key"])
            steps -= int(ckpt["step"])
        if args.die_after is not None:
            steps = args.die_after
        res = train(
            method,
            state,
            sampler,
            key,
            steps,
            chunk_size=CHUNK,
            run_dir=out / name,
            checkpoint_every=1,
            progress=False,
            mesh=mesh,
        )
        if args.die_after is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        if is_primary():
            leaves = jax.tree_util.tree_leaves(res.state.theta)
            np.savez(
                out / f"{name}.npz",
                *[np.asarray(x) for x in leaves],
                loss=res.history["loss"],
                step=int(res.state.step),
            )


if __name__ == "__main__":
    main()
