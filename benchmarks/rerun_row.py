"""Rerun one published benchmark row and compare: is the result the same on this machine?

A row of ``calibration.json`` records its budget, steps, seed and command. This script trains
that row's (family, method, seed) again with the same budget — on whatever machine it runs —
and compares every metric of every K with the published row: each number the row carries
(NLL, its gap to the oracle, MSE, coverage, calibration error; accuracy, ECE, MCE, Brier and
the temperature-scaled ones for a classifier; the temperature; their standard errors) within
``--tol``, and each count (steps, tasks) exactly. Only the provenance and the seconds are not
compared. The budgets are defined by steps, so on the same platform the numbers should agree
to far better than the 0.01 the benchmark promises (on one machine they are bit-identical;
another CPU or an accelerator may differ in the last digits of its floating-point reductions).

    python benchmarks/rerun_row.py --family sinusoid --method maml --seed 0 \
        [--results benchmarks/results/calibration.json] [--tol 0.01]

Writes ``benchmarks/results/rerun_<family>_<method>_seed<seed>.json`` (both rows' metrics,
the differences, and both provenances) and exits 1 when a difference exceeds ``--tol`` or a
count differs.
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
#: Fields of a row that say where and how long, not what: never compared.
NOT_COMPARED = frozenset(
    {"commit", "command", "machine", "budget", "max_seconds", "train_seconds",
     "compile_seconds", "family", "method", "seed"}
)  # fmt: skip


def compare_rows(old: dict, new: dict, tol: float) -> dict:
    """Every field of ``old`` (the published row) against ``new``: numbers within ``tol``,
    counts and strings exactly. Returns ``{field: {published, rerun, difference, passed}}``
    and a missing field in ``new`` fails."""
    out = {}
    for field, want in sorted(old.items()):
        if field in NOT_COMPARED:
            continue
        got = new.get(field)
        if isinstance(want, bool) or not isinstance(want, int | float) or isinstance(want, int):
            ok = got == want  # counts (steps, tasks, k), strings, None: exactly
            diff = None
        elif got is None or not isinstance(got, int | float):
            ok, diff = False, None
        else:
            diff = float(got) - float(want)
            ok = abs(diff) <= tol or (want != want and got != got)  # NaN on both sides agrees
        out[field] = {"published": want, "rerun": got, "difference": diff, "passed": bool(ok)}
    return out


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
        fields = compare_rows(old, new, args.tol)
        comparison.append({
            "k": old["k"],
            "fields": fields,
            "passed": all(f["passed"] for f in fields.values()),
            "published_train_seconds": old.get("train_seconds"),
            "rerun_train_seconds": new.get("train_seconds"),
        })  # fmt: skip
        bad = [name for name, f in fields.items() if not f["passed"]]
        print(f"K={old['k']:>2d}: published NLL {old['nll']:.6f} ({old.get('machine')}, "
              f"{old.get('commit')}), rerun {new['nll']:.6f}; {len(fields)} fields compared"
              + (f", differing: {bad}" if bad else ", all agree"))  # fmt: skip
    diffs = [abs(f["difference"]) for c in comparison for f in c["fields"].values()
             if f["difference"] is not None and f["difference"] == f["difference"]]  # fmt: skip
    worst = max(diffs, default=0.0)
    keys = ("commit", "command", "machine", "budget", "samples")
    out = {
        **provenance(script_command(__file__)),
        "host": host(),
        "row": {"family": args.family, "method": args.method, "seed": args.seed},
        "published": {k: published[0].get(k) for k in keys},
        "comparison": comparison,
        "max_abs_difference": worst,
        "tolerance": args.tol,
        "passed": all(c["passed"] for c in comparison),
    }
    path = args.out or RESULTS / f"rerun_{args.family}_{args.method}_seed{args.seed}.json"
    write_text(path, json.dumps(out, indent=1) + "\n")
    print(f"largest |difference| {worst:.2e} (tolerance {args.tol}); wrote {path}")
    return 0 if out["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
