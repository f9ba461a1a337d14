"""Amortized training on a pool of up to a million groups, streamed from memory-mapped files
(issue 43, item 6).

For each pool size G a pool of small groups (4-10 rows, 2 features, random slopes: y = a_g +
b_g·x + noise, seeded numpy) is written to disk with :func:`bayesmeta.tasks.pool.write_pool`
in chunks, then ``amortized`` is meta-trained on a user's NumPyro random-slopes model from it
in a child process per (size, mode), so that each child's peak memory is its own (``os.wait4``):

- ``mmap``: the pool's files are memory-mapped; each meta-step reads only its T groups;
- ``memory``: the same pool read into RAM first (what holding every group costs), the same
  sampler and training code otherwise.

Each child reports groups/s (meta-batch × meta-steps per second, timed after the first chunk,
which compiles), its peak RSS (``ru_maxrss``) and, at the end, its anonymous and file-backed
resident memory (``/proc/self/status``: mapped file pages count in RSS but are the kernel's
page cache, dropped under pressure). The anonymous part is the memory that must not grow with G.

    python benchmarks/scaling_groups.py [--sizes 10000 100000 1000000] [--steps N]

Writes ``scaling_groups.json``, ``.md`` and ``.png`` under ``--out`` (default
benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
MODES = ("mmap", "memory")
MAX_ROWS, DX = 10, 2
CHUNK = 100_000


def pool_chunks(groups: int, seed: int):
    """``(x, y, lengths)`` chunks of random-slopes groups (for ``write_pool``)."""
    rng = np.random.default_rng(seed)
    for start in range(0, groups, CHUNK):
        g = min(CHUNK, groups - start)
        lengths = rng.integers(4, MAX_ROWS + 1, g).astype(np.int32)
        x = rng.uniform(-2, 2, (g, MAX_ROWS, DX)).astype(np.float32)
        w = rng.normal(0.5, 0.5, (g, DX + 1)).astype(np.float32)
        y = (
            w[:, None, 0]
            + np.einsum("gnd,gd->gn", x, w[:, 1:])
            + 0.2 * rng.normal(size=(g, MAX_ROWS)).astype(np.float32)
        )
        pad = np.arange(MAX_ROWS)[None, :] >= lengths[:, None]
        x[pad], y[pad] = 0.0, 0.0
        yield x, y.astype(np.float32), lengths


def memory_status() -> dict:
    """``RssAnon`` and ``RssFile`` of this process in MB (Linux), else empty."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024 / 1e6
    except OSError:
        pass
    return out


def child(pool_path: str, mode: str, steps: int, meta_batch: int, seed: int) -> dict:
    """Meta-train ``amortized`` from the pool; print and return the measurements."""
    import jax

    from bayesmeta.inference import train
    from bayesmeta.inference.registry import METHODS
    from bayesmeta.model import NumPyroModel
    from bayesmeta.modelfiles import load_model_spec
    from bayesmeta.tasks.base import sample_batch
    from bayesmeta.tasks.pool import GroupPool, open_pool

    pool = open_pool(pool_path)
    if mode == "memory":  # every group in RAM, the rest identical
        pool = GroupPool(
            pool.path, np.array(pool.x), np.array(pool.y), np.array(pool.lengths), pool.meta
        )
    fam = pool.family()
    # the random-slopes model of models/cigar_slopes.py, a plain NumPyro function (any d)
    slopes = load_model_spec("cigar_slopes").model.fn
    method = METHODS["amortized"].factory(NumPyroModel(slopes, dx=DX), lr=1e-3)
    state = method.init(jax.random.PRNGKey(seed))

    def sampler(key):
        return sample_batch(fam, key, meta_batch, (1, 5), 4)[0]

    chunk = max(steps // 5, 1)
    t0 = time.perf_counter()
    res = train(method, state, sampler, jax.random.PRNGKey(seed + 1), chunk, chunk_size=chunk,
                progress=False)  # fmt: skip
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    res = train(method, res.state, sampler, jax.random.PRNGKey(seed + 2), steps - chunk,
                chunk_size=chunk, progress=False)  # fmt: skip
    timed = time.perf_counter() - t1
    loss = np.asarray(res.history["loss"])
    out = {
        "first_chunk_seconds": first,
        "timed_steps": steps - chunk,
        "timed_seconds": timed,
        "groups_per_second": meta_batch * (steps - chunk) / timed,
        "final_loss": float(loss[-max(len(loss) // 10, 1) :].mean()),
        **{k.lower(): v for k, v in memory_status().items()},
    }
    print("RESULT " + json.dumps(out), flush=True)
    return out


def run_child(cmd: list[str]) -> tuple[dict, float, int]:
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read().decode(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if rc != 0 or not lines:
        raise RuntimeError(f"child {cmd} failed (exit {rc}):\n{text[-3000:]}")
    scale = 1 if sys.platform == "darwin" else 1024
    return json.loads(lines[-1][7:]), usage.ru_maxrss * scale / 1e6, rc


def markdown(result: dict) -> str:
    p = result["provenance"]
    lines = [
        "# Amortized training streamed from a memory-mapped pool of groups (issue 43)",
        "",
        f"Commit `{p['commit']}`, `{p['command']}`, {p['machine']}, {p['seconds']:.0f} s in "
        f"all. `amortized` on a NumPyro random-slopes model (2 features), meta-batch "
        f"{p['meta_batch']}, {p['steps']} meta-steps per run (groups/s timed over the last "
        f"{p['timed_steps']}, after the compiling first chunk); groups of 4-10 rows; seed "
        f"{p['seed']}. One child process per row; peak RSS is its own `ru_maxrss`, anon/file "
        "its resident anonymous and file-backed memory at the end (MB = 10⁶ bytes).",
        "",
        "| groups | pool MB | mode | groups/s | peak RSS MB | anon MB | file MB | first chunk s |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['groups']:,} | {r['pool_mb']:.0f} | {r['mode']} | "
            f"{r['groups_per_second']:,.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r.get('rssanon', float('nan')):.0f} | {r.get('rssfile', float('nan')):.0f} | "
            f"{r['first_chunk_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, target) -> None:
    """The figure, as PNG, to ``target`` (a path or a binary file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for mode, style in zip(MODES, ("o-", "s--"), strict=True):
        rows = [r for r in result["rows"] if r["mode"] == mode]
        g = [r["groups"] for r in rows]
        axes[0].plot(g, [r["peak_rss_mb"] for r in rows], style, label=f"{mode}: peak RSS")
        axes[0].plot(g, [r.get("rssanon", np.nan) for r in rows], style, alpha=0.5,
                     label=f"{mode}: anonymous")  # fmt: skip
        axes[1].plot(g, [r["groups_per_second"] for r in rows], style, label=mode)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("groups in the pool")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("MB")
    axes[1].set_ylabel("groups / s")
    axes[1].set_ylim(bottom=0)
    fig.suptitle("amortized training streamed from a pool file", fontsize=9)
    fig.tight_layout()
    fig.savefig(target, dpi=110, format="png")
    plt.close(fig)


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--meta-batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--work", type=Path, default=None, help="where the pools go (default: temp)")
    p.add_argument("--child", nargs=2, metavar=("POOL", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child[0], args.child[1], args.steps, args.meta_batch, args.seed)

    from bayesmeta.bench import provenance, script_command, write_report
    from bayesmeta.tasks.pool import write_pool

    t_start = time.perf_counter()
    rows, result = [], {}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for groups in args.sizes:
            t0 = time.perf_counter()
            path = write_pool(work / f"pool{groups}", pool_chunks(groups, args.seed), groups,
                              overwrite=True)  # fmt: skip
            write_s = time.perf_counter() - t0
            pool_mb = sum(f.stat().st_size for f in path.iterdir()) / 1e6
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--child", str(path), mode, "--steps",
                       str(args.steps), "--meta-batch", str(args.meta_batch), "--seed",
                       str(args.seed)]  # fmt: skip
                out, peak, _ = run_child(cmd)
                rows.append({"groups": groups, "mode": mode, "pool_mb": pool_mb,
                             "write_seconds": write_s, "peak_rss_mb": peak, **out})  # fmt: skip
                rate, anon = out["groups_per_second"], out.get("rssanon", 0)
                print(f"{groups:>9,} {mode:6s} {rate:8.0f} groups/s peak {peak:6.0f} MB "
                      f"anon {anon:6.0f} MB", flush=True)  # fmt: skip
            result = {
                "provenance": provenance(
                    script_command(__file__, argv),
                    steps=args.steps,
                    timed_steps=args.steps - max(args.steps // 5, 1),
                    meta_batch=args.meta_batch,
                    seed=args.seed,
                    method="amortized",
                    seconds=round(time.perf_counter() - t_start, 1),
                ),
                "rows": rows,
            }
            write_report(args.out, "scaling_groups", result, markdown)
    write_report(args.out, "scaling_groups", result, markdown, plot)
    return result


if __name__ == "__main__":
    run()
