"""Rerun one published benchmark row and compare: is the result the same on this machine?

A row of ``calibration.json`` records its budget, steps, seed and command. This script trains
that row's (family, method, seed) again with the same budget — on whatever machine it runs —
and compares every K's NLL with the published one. The budgets are defined by steps, so on the
same platform the NLL should agree to far better than the 0.01 nats the benchmark promises
(on one machine it is bit-identical; another CPU or an accelerator may differ in the last
digits of its floating-point reductions).

    python benchmarks/rerun_row.py --family sinusoid --method maml --seed 0 \
        [--results benchmarks/results/calibration.json] [--tol 0.01]

Writes ``benchmarks/results/rerun_<family>_<method>_seed<seed>.json`` (both rows' NLLs, the
differences, and both provenances) and exits 1 when a difference exceeds ``--tol``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bayesmeta.atomic import write_text
from bayesmeta.bench import provenance, run_calibration, script_command

RESULTS = Path(__file__).parent / "results"


def host() -> dict[str, str | None]:
    """Which machine this is, beyond ``provenance``'s architecture and core count: the host
    name, the CPU model and this boot's id (so two files can show they ran on different
    machines, or on the same one)."""
    import platform

    def first(path: str, prefix: str = "") -> str | None:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":", 1)[-1].strip() if prefix else line.strip()
        except OSError:
            pass
        return None

    return {
        "hostname": platform.node(),
        "cpu": first("/proc/cpuinfo", "model name"),
        "boot_id": first("/proc/sys/kernel/random/boot_id"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=RESULTS / "calibration.json")
    p.add_argument("--tol", type=float, default=0.01, help="largest |ΔNLL| that passes")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    published = [
        r
        for r in json.loads(args.results.read_text())
        if (r["family"], r["method"], r["seed"]) == (args.family, args.method, args.seed)
        and r.get("nll") is not None
    ]
    if not published:
        p.error(f"--family/--method/--seed: no row {args.family}/{args.method}/seed "
                f"{args.seed} in {args.results}")  # fmt: skip
    budget = published[0]["budget"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_calibration(
            budget,
            out=tmp,
            families=[args.family],
            methods=[args.method],
            seeds=[args.seed],
            figures=False,
            resume=False,
            command=" ".join(["python", "benchmarks/rerun_row.py", *sys.argv[1:]]),
        )
    fresh = {r["k"]: r for r in rows if r["method"] == args.method}
    comparison = []
    for old in sorted(published, key=lambda r: r["k"]):
        new = fresh[old["k"]]
        comparison.append({
            "k": old["k"],
            "published_nll": old["nll"],
            "rerun_nll": new["nll"],
            "difference": new["nll"] - old["nll"],
            "published_steps": old["steps"],
            "rerun_steps": new["steps"],
            "published_train_seconds": old.get("train_seconds"),
            "rerun_train_seconds": new.get("train_seconds"),
        })  # fmt: skip
        print(f"K={old['k']:>2d}: published {old['nll']:.6f} ({old.get('machine')}, "
              f"{old.get('commit')}), rerun {new['nll']:.6f}: "
              f"difference {new['nll'] - old['nll']:+.2e}")  # fmt: skip
    worst = max(abs(c["difference"]) for c in comparison)
    keys = ("commit", "command", "machine", "budget", "samples")
    out = {
        **provenance(script_command(__file__)),
        "host": host(),
        "row": {"family": args.family, "method": args.method, "seed": args.seed},
        "published": {k: published[0].get(k) for k in keys},
        "comparison": comparison,
        "max_abs_difference": worst,
        "tolerance": args.tol,
        "passed": worst <= args.tol,
    }
    path = args.out or RESULTS / f"rerun_{args.family}_{args.method}_seed{args.seed}.json"
    write_text(path, json.dumps(out, indent=1) + "\n")
    print(f"largest |difference| {worst:.2e} (tolerance {args.tol}); wrote {path}")
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
