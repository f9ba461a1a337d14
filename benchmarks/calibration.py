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

import sys
from pathlib import Path

from bayesmeta.cli import main as cli_main

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    """``bayesmeta bench calibration ARGS``, writing into benchmarks/results by default."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in argv:
        argv += ["--out", str(RESULTS)]
    return cli_main(["bench", "calibration", *argv])


if __name__ == "__main__":
    sys.exit(main())
