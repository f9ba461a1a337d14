"""Peak memory of a ``--data`` fit as the number of groups grows (issue 44: 20,000 groups must
fit in under 1 GB).

A synthetic grouped CSV per size (each group 2-5 rows, 2-3 features, seeded numpy) is fitted
through the command line in a child process per (size, model, method), as a user would run it:
``bayesmeta fit linear --method abml --data FILE ...`` and ``bayesmeta fit mlp --method
neural-process ...``. The child's peak resident set size comes from ``os.wait4`` (the child's
own ``ru_maxrss``, not the maximum over every child so far).

    python benchmarks/memory_groups.py [--sizes 5000 10000 20000] [--steps N] [--seed S]

Writes ``memory_groups.json`` and ``memory_groups.md`` under ``--out`` (default
benchmarks/results).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import bayesmeta
from bayesmeta.bench import git_commit

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent.parent
#: The issue's bound on a fit's peak memory at 20,000 groups, in MB.
LIMIT_MB = 1000
CONFIGS = (("linear", "abml"), ("mlp", "neural-process"))


def write_csv(path: Path, groups: int, seed: int) -> tuple[list[str], int]:
    """A grouped CSV: ``groups`` groups of 2-5 rows, 2-3 features (``x0``, ...), target ``y``
    linear in the features with a per-group intercept and slope. Returns the CLI's column
    flags and the number of rows."""
    rng = np.random.default_rng(seed)
    dx = int(rng.integers(2, 4))
    sizes = rng.integers(2, 6, size=groups)
    n = int(sizes.sum())
    g = np.repeat(np.arange(groups), sizes)
    x = rng.normal(size=(n, dx))
    w = rng.normal(0.5, 0.3, size=(groups, dx))
    b = rng.normal(0, 1, size=groups)
    y = np.einsum("nd,nd->n", x, w[g]) + b[g] + rng.normal(0, 0.3, size=n)
    feats = [f"x{j}" for j in range(dx)]
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["g", *feats, "y"])
        for i in range(n):
            out.writerow([f"g{g[i]}", *(f"{v:.5f}" for v in x[i]), f"{y[i]:.5f}"])
    return ["--group", "g", "--x", ",".join(feats), "--y", "y"], n


def peak_rss_mb(cmd: list[str], cwd: Path) -> tuple[int, float, float, str]:
    """Run ``cmd`` in ``cwd``; its exit status, peak RSS in MB (``ru_maxrss`` of this child
    alone, via ``os.wait4``), wall seconds and the tail of its output."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
    # ru_maxrss is in kilobytes on Linux (bytes on macOS)
    scale = 1 if sys.platform == "darwin" else 1024
    return proc.returncode, usage.ru_maxrss * scale / 1e6, time.perf_counter() - t0, tail


def markdown(report: dict) -> str:
    lines = [
        f"Peak RSS of `bayesmeta fit ... --data` ({report['steps']} steps, seed "
        f"{report['seed']}; commit {report['commit']}; {report['machine']}). Bound: "
        f"{LIMIT_MB} MB at 20,000 groups.",
        "",
        *([f"Note: {report['note']}", ""] if report.get("note") else []),
        f"bayesmeta imported from `{report.get('bayesmeta_source')}`.",
        "",
        "| groups | rows | features | model | method | peak RSS MB | seconds | exit |",
        "|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['groups']} | {r['rows']} | {r['features']} | {r['model']} | {r['method']} | "
            f"{r['peak_rss_mb']:.0f} | {r['seconds']:.1f} | {r['exit']} |"
        )
    return "\n".join(lines) + "\n"


def dirty(where: Path) -> bool:
    """Whether tracked files differ from the commit (``git status --porcelain``)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, check=True, cwd=where)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return False
    return bool(out.stdout.strip())


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--work", type=Path, default=None, help="where the CSVs and runs go")
    p.add_argument("--note", default=None, help="recorded as is (e.g. a patch the run used)")
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="JSON",
        help="only rewrite the .md beside JSON (a results file of this script)",
    )
    args = p.parse_args(argv)
    if args.markdown is not None:
        report = json.loads(args.markdown.read_text())
        args.markdown.with_suffix(".md").write_text(markdown(report))
        return report
    t_start = time.perf_counter()
    commit = git_commit(Path(__file__).parent)
    if commit is not None and not commit.endswith("+dirty") and dirty(ROOT):
        commit += "+dirty"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for groups in args.sizes:
            data = work / f"groups{groups}.csv"
            cols, n = write_csv(data, groups, args.seed)
            for model, method in CONFIGS:
                out = work / f"run_{groups}_{model}"
                cmd = [sys.executable, "-m", "bayesmeta.cli", "fit", model, "--method", method,
                       "--data", str(data), *cols, "--steps", str(args.steps), "--seed",
                       str(args.seed), "--quiet", "--force", "--out", str(out)]  # fmt: skip
                rc, mb, secs, tail = peak_rss_mb(cmd, work)
                if rc != 0:
                    print(tail, file=sys.stderr)
                shown = [Path(c).name if c in (str(data), str(out)) else c for c in cmd[1:]]
                rows.append({"groups": groups, "rows": n, "features": len(cols[3].split(",")),
                             "model": model, "method": method, "peak_rss_mb": mb,
                             "seconds": secs, "exit": rc,
                             "command": " ".join(["python", *shown])})  # fmt: skip
                print(f"{groups:6d} groups {model:6s} {method:15s} peak {mb:7.0f} MB "
                      f"({secs:.0f} s, exit {rc})", flush=True)  # fmt: skip
    report = {
        "benchmark": "memory_groups",
        "commit": commit,
        "command": " ".join(
            ["benchmarks/memory_groups.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": time.strftime("%Y-%m-%d"),
        "steps": args.steps,
        "seed": args.seed,
        "limit_mb": LIMIT_MB,
        # the children import bayesmeta as this process does (the same PYTHONPATH)
        "bayesmeta_source": str(Path(bayesmeta.__file__).parent),
        "pythonpath": os.environ.get("PYTHONPATH"),
        "note": args.note,
        "measure": "ru_maxrss of each fit's own child process (os.wait4), 1 MB = 10**6 bytes",
        "machine": f"{platform.machine()} {platform.system()} ({platform.platform()}), "
        f"{os.cpu_count()} cores",
        "total_seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory_groups.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "memory_groups.md").write_text(markdown(report))
    print(f"wrote {args.out / 'memory_groups.json'} and memory_groups.md")
    return report


if __name__ == "__main__":
    run()
