"""Meta-training throughput (tasks per second) against the number of processes and the
meta-batch size, and each method's peak memory.

Every configuration runs in fresh child processes (one per JAX process, joined by JAX's
distributed runtime when there are several), so compile caches and peak memory do not leak
between rows. Each child trains the sinusoid model's recipe network through the library's
jitted chunk runner, on a task mesh over every device of every process, with one task stream
per device (:func:`bayesmeta.parallel.stream_sampler`). A row's ``speedup`` is its tasks/s
over the one-process run of the same method and meta-batch in the same invocation.

    python benchmarks/scaling.py                      # CPU preset: 1 and 2 processes
    python benchmarks/scaling.py --preset gpu         # one process, every GPU, larger batches
    python benchmarks/scaling.py --processes 1 2 --meta-batch 8 32 --methods maml --steps 20

Writes ``scaling.json`` and ``scaling.md`` (and ``scaling.png``) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PRESETS = {
    # about three minutes on 2 CPU cores. ABML's meta-batch stops at 32 here: at 128 its
    # timed chunk sat at ~0% CPU for minutes on this machine (the XLA CPU stall seen before
    # with large programs), so that row would measure the stall, not the method.
    "cpu": {
        "processes": [1, 2],
        "meta_batch": {"maml": [8, 32, 128], "abml": [8, 32]},
        "methods": ["maml", "abml"],
        "steps": 25,
    },
    # one process drives every local accelerator; well under five minutes on one GPU
    "gpu": {
        "processes": [1],
        "meta_batch": [32, 128, 512, 2048],
        "methods": ["maml", "abml"],
        "steps": 100,
    },  # fmt: skip
}
NUM_QUERY = 10


def _child(args) -> None:
    """One JAX process of one configuration; process 0 prints a RESULT line."""
    import resource

    import jax

    from bayesmeta.bench import time_chunks
    from bayesmeta.inference.train import make_chunk_runner
    from bayesmeta.modelfiles import load_model_spec
    from bayesmeta.parallel import (
        initialize_distributed,
        is_primary,
        replicate,
        stream_sampler,
        task_mesh,
    )

    if args.num_processes > 1:
        initialize_distributed(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
    mesh = task_mesh() if len(jax.devices()) > 1 else None
    streams = mesh.devices.size if mesh is not None else 1
    spec = load_model_spec("sinusoid")
    method, _ = spec.build(args.method)
    sampler = stream_sampler(spec.sampler(args.meta_batch // streams, NUM_QUERY), streams, mesh)
    run = make_chunk_runner(method, sampler, args.steps, mesh)
    carry = (method.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    if mesh is not None:
        carry = replicate(carry, mesh)
    first, best = time_chunks(run, carry, args.repeats)
    device = jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        peak_mb, memory = stats["peak_bytes_in_use"] / 2**20, "device peak bytes in use"
    else:  # ru_maxrss is in KiB on Linux
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        memory = "process peak RSS"
    if is_primary():
        row = {
            "method": args.method,
            "processes": args.num_processes,
            "devices": len(jax.devices()),
            "meta_batch": args.meta_batch,
            "steps": args.steps,
            "seconds": best,
            "compile_s": max(first - best, 0.0),
            "steps_per_s": args.steps / best,
            "tasks_per_s": args.steps * args.meta_batch / best,
            "peak_mb": peak_mb,
            "memory": memory,
            "platform": device.platform,
        }
        print("RESULT" + json.dumps(row), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_config(method: str, meta_batch: int, n: int, steps: int, repeats: int) -> dict:
    port = _free_port()
    env = {**os.environ}
    if n > 1:  # one CPU device per process; a forced device count would multiply them
        env["XLA_FLAGS"] = " ".join(
            f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f
        )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                "--method",
                method,
                "--meta-batch",
                str(meta_batch),
                "--steps",
                str(steps),
                "--repeats",
                str(repeats),
                "--num-processes",
                str(n),
                "--process-id",
                str(i),
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(n)
    ]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise RuntimeError(f"{method} B={meta_batch} x{n}: no result in 600 s") from None
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"{method} B={meta_batch} x{n}: child failed\n{err[-2000:]}")
    line = [ln for ln in outs[0][0].splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


def markdown(rows: list[dict]) -> str:
    lines = [
        "| method | processes | devices | meta-batch | tasks/s | speedup vs 1 process "
        "| meta-steps/s | compile s | peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['processes']} | {r['devices']} | {r['meta_batch']} | "
            f"{r['tasks_per_s']:.0f} | {r['speedup']:.2f} | {r['steps_per_s']:.1f} | "
            f"{r['compile_s']:.1f} | {r['peak_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({r["method"] for r in rows})
    fig, axes = plt.subplots(1, len(methods), figsize=(4.5 * len(methods), 3.6), squeeze=False)
    for ax, m in zip(axes[0], methods, strict=True):
        for n in sorted({r["processes"] for r in rows}):
            sel = sorted((r for r in rows if r["method"] == m and r["processes"] == n),
                         key=lambda r: r["meta_batch"])  # fmt: skip
            ax.plot([r["meta_batch"] for r in sel], [r["tasks_per_s"] for r in sel], "o-",
                    label=f"{n} process{'es' if n > 1 else ''}")  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="meta-batch (tasks)", ylabel="tasks / s",
               title=m)  # fmt: skip
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=list(PRESETS), default="cpu")
    p.add_argument("--processes", type=int, nargs="+", default=None)
    p.add_argument("--meta-batch", type=int, nargs="+", default=None)
    p.add_argument("--methods", nargs="+", choices=["maml", "abml", "emaml", "bmaml"],
                   default=None)  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="meta-steps per timed chunk")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", default="maml", help=argparse.SUPPRESS)
    p.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.meta_batch = args.meta_batch[0]
        _child(args)
        return []
    preset = PRESETS[args.preset]
    processes = args.processes or preset["processes"]
    batches = args.meta_batch or preset["meta_batch"]
    methods = args.methods or preset["methods"]
    steps = args.steps or preset["steps"]
    flat = [b for bs in batches.values() for b in bs] if isinstance(batches, dict) else batches
    bad = [b for b in flat for n in processes if b % n]
    if bad:
        p.error(f"--meta-batch: expected multiples of every process count, got {bad}")
    t_start = time.perf_counter()
    rows = []
    for method in methods:
        for b in batches[method] if isinstance(batches, dict) else batches:
            base = None
            for n in sorted(processes):
                row = _run_config(method, b, n, steps, args.repeats)
                base = base or row["tasks_per_s"]
                row["speedup"] = row["tasks_per_s"] / base
                rows.append(row)
                print(
                    f"{method:6s} B={b:5d} processes={n}: {row['tasks_per_s']:9.0f} tasks/s "
                    f"(x{row['speedup']:.2f}), peak {row['peak_mb']:.0f} MB",
                    flush=True,
                )
    from bayesmeta.bench import report_head

    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        **report_head("scaling", __file__, argv, program=Path(sys.argv[0]).name),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "setting": f"sinusoid recipe network (MLP 1-40-40-1), K<=10, Q={NUM_QUERY}; one task "
        "stream per device; best of --repeats timed chunks after a compiled one",
        "steps": steps,
        "repeats": args.repeats,
        "total_seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    (args.out / "scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "scaling.md").write_text(markdown(rows))
    plot(rows, args.out / "scaling.png")
    print(f"wrote {args.out / 'scaling.json'}, scaling.md, scaling.png")
    return rows


if __name__ == "__main__":
    main()
