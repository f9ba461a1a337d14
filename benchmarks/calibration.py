"""The calibration benchmark (issue 6): every method × every family × seeds.

Writes ``benchmarks/results/calibration.json`` (one row per family, method, K and seed),
``calibration.md`` (mean ± standard error over seeds), figures under
``benchmarks/results/calibration/`` (reliability diagrams per method for glyphs and circles,
calibration curves and predictive bands beside the exact reference for regression) and ArviZ
netCDF files of the seed-0 posteriors under ``benchmarks/results/posteriors/`` (not
committed). The same as ``bayesmeta bench calibration``; the code is
:mod:`bayesmeta.bench`.

    python benchmarks/calibration.py [--budget small|full] [--families ...] [--methods ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bayesmeta.bench import BUDGETS, FAMILIES, METHODS, run_calibration

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", choices=list(BUDGETS), default="small")
    p.add_argument("--families", nargs="*", choices=list(FAMILIES))
    p.add_argument("--methods", nargs="*", choices=list(METHODS))
    p.add_argument("--seeds", nargs="*", type=int)
    p.add_argument("--seconds", type=float, help="training seconds per run (overrides budget)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    run_calibration(
        args.budget,
        out=args.out,
        families=args.families,
        methods=args.methods,
        seeds=args.seeds,
        seconds=args.seconds,
    )


if __name__ == "__main__":
    main()
