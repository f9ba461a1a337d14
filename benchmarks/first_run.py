"""Time to a first result: the main job (``bayesmeta run``) in a fresh process, first with an
empty persistent compilation cache and then again with the cache the first run filled, beside a
run with the cache off, all in this invocation on this machine.

    python benchmarks/first_run.py [--seconds 5] [--num-tasks 20]

Every run is a child process (``bayesmeta run --seconds S --num-tasks N --quiet``) with its own
cache folder setting (``BAYESMETA_COMPILATION_CACHE``), timed by its wall clock. Writes
``first_run.json`` and ``first_run.md`` under ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bayesmeta.atomic import write_text
from bayesmeta.bench import report_head

RESULTS = Path(__file__).parent / "results"


def _run(seconds: int, num_tasks: int, cache: str, out: Path) -> float:
    env = {**os.environ, "BAYESMETA_COMPILATION_CACHE": cache}
    cmd = [sys.executable, "-m", "bayesmeta.cli", "run", "--seconds", str(seconds),
           "--num-tasks", str(num_tasks), "--out", str(out), "--quiet"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=5, help="the main job's training budget")
    p.add_argument("--num-tasks", type=int, default=20)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = tmp / "cache"
        rows = [
            ("cache off", _run(args.seconds, args.num_tasks, "0", tmp / "a")),
            ("first run, empty cache", _run(args.seconds, args.num_tasks, str(cache), tmp / "b")),
            (
                "second run, cache filled",
                _run(args.seconds, args.num_tasks, str(cache), tmp / "c"),
            ),  # fmt: skip
        ]
        cache_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
    report = {
        **report_head("first_run", __file__, argv),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores",
        "main_job": {"seconds": args.seconds, "num_tasks": args.num_tasks},
        "rows": [{"run": name, "wall_seconds": s} for name, s in rows],
        "cache_mb": cache_mb,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "first_run.json", json.dumps(report, indent=2) + "\n")
    lines = ["| run | wall s |", "|---|---:|"]
    lines += [f"| {name} | {s:.1f} |" for name, s in rows]
    lines.append(
        f"\n`bayesmeta run --seconds {args.seconds:g} --num-tasks {args.num_tasks}` in a fresh "
        f"process each time, commit {report['commit']}, {report['machine']}; the cache held "
        f"{cache_mb:.0f} MB after the first run. Written by benchmarks/first_run.py.\n"
    )
    write_text(args.out / "first_run.md", "\n".join(lines))
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    run()
