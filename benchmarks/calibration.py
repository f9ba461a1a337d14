"""The calibration benchmark (issues 6 and 26): every method × every family × seeds.

The published grid is the ``standard`` budget's: it writes ``benchmarks/results/calibration.json``
(one row per family, method, K and seed, each with its provenance), ``calibration.md`` (mean ±
standard error over seeds), figures under ``benchmarks/results/calibration/`` (reliability
diagrams per method for glyphs and circles, calibration curves and predictive bands beside the
exact reference for regression) and ArviZ netCDF files of the seed-0 posteriors under
``benchmarks/results/posteriors/`` (not committed). The other budgets write into their own
folders (``benchmarks/results/classification/``, ``benchmarks/results/calibration_<budget>/``),
so a quick ``small`` run never mixes into the published rows. The same as ``bayesmeta bench
calibration``; the code is :mod:`bayesmeta.bench`.

    python benchmarks/calibration.py [--budget standard|small|classification|full] [--families ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bayesmeta.cli import main as cli_main

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    """``bayesmeta bench calibration ARGS``: the ``standard`` budget into benchmarks/results by
    default, other budgets into their own folders there."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--budget", default="standard")
    p.add_argument("--out", default=None)
    known, rest = p.parse_known_args(argv)
    out = known.out
    if out is None:
        sub = {"standard": "", "classification": "classification"}
        out = str(RESULTS / sub.get(known.budget, f"calibration_{known.budget}"))
    return cli_main(["bench", "calibration", "--budget", known.budget, "--out", out, *rest])


if __name__ == "__main__":
    sys.exit(main())
