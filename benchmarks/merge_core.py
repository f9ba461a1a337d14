"""Merge per-method core-table runs (run in parallel processes) into one JSON + markdown."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bayesmeta.bench import provenance, script_command
from bayesmeta.evaluate import markdown_table

ORDER = {"reference": 0, "maml": 1, "meta-sgd": 2, "abml": 3}


def main(out: str, *inputs: str) -> None:
    runs = [json.loads(Path(p).read_text()) for p in inputs]
    rows, seen = [], set()
    for run in runs:
        for r in run["rows"]:
            if (r["method"], r["k"]) not in seen:
                seen.add((r["method"], r["k"]))
                rows.append(r)
    rows.sort(key=lambda r: (r["k"], ORDER.get(r["method"], 9)))
    merged = {k: v for k, v in runs[0].items() if k != "rows"}
    for key in ("steps", "train_seconds"):
        # the first run holding a method wins, as for its rows
        merged[key] = {m: v for run in reversed(runs) for m, v in run[key].items()}
    merged["note"] = "methods trained in parallel processes, one CPU core each"
    # each input keeps its own run's provenance; this records the merge itself
    merged["provenance"] = provenance(
        script_command(__file__, [out, *inputs]),
        merged_from=[run.get("provenance") for run in runs],
    )
    merged["rows"] = rows
    Path(out).write_text(json.dumps(merged, indent=2))
    title = f"# {merged['model']}, budget {merged['budget']}: {merged['n_tasks']} held-out tasks"
    Path(out).with_suffix(".md").write_text(
        f"{title}, 50 query points, {merged['samples']} posterior samples\n\n"
        + markdown_table(rows)
        + f"\n\nTraining steps: {merged['steps']}; seconds: {merged['train_seconds']}\n"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
