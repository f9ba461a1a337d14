"""Every results file under benchmarks/results says where it came from (issue 46 item 3): the
commit, the command, the machine and the seed, found at the top of the file or in its
``provenance``/``machine`` record. Files written before provenance was required are listed
by name in LEGACY, each with what it lacks, so that the list can only shrink: a new file
without provenance, or a legacy file that lacks more than is listed, fails."""

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).parent.parent / "benchmarks" / "results"
FIELDS = ("commit", "command", "machine", "seed")
#: Files from before provenance was required, with the fields they lack (to be rerun).
LEGACY = {
    "active_circles.json": {"commit", "command"},
    "ambiguity_circles.json": {"commit", "command", "seed"},
    "ambiguity_sine_line.json": {"seed"},
    "choose_cigar_slopes_abml.json": {"machine"},
    "choose_cigar_slopes_bmaml.json": {"machine"},
    "ensembles_bmaml_setting.json": {"commit", "command", "seed"},
    "ensembles_sine_line.json": {"seed"},
    "ensembles_sinusoid.json": {"seed"},
    "ensembles_sinusoid_bmaml_idle.json": {"commit", "command", "seed"},
    "ensembles_speed.json": {"commit", "command", "seed"},
    "glyph_step.json": {"seed"},
    "scaling.json": {"seed"},
    "speed.json": {"commit", "command", "seed"},
    "speed_methods.json": {"commit", "command", "seed"},
    "speed_scaling.json": {"commit", "command", "seed"},
    "speed_sharding.json": {"commit", "command", "seed"},
    "speed_svgd.json": {"commit", "command", "seed"},
}
#: Files that time the machine or the build, not a seeded computation: no seed to record.
NO_SEED = {"ci_timings.json", "first_run.json"}


def _find(record, key: str, depth: int = 0):
    """``key`` at the top of ``record`` or in a record nested up to two levels below (a
    ``provenance`` dict, a merged file's first part, a row list's first row)."""
    if isinstance(record, dict):
        if key in record and record[key] is not None:
            return record[key]
        children = record.values()
    elif isinstance(record, list):
        children = record[:1]
    else:
        return None
    if depth < 2:
        for child in children:
            found = _find(child, key, depth + 1)
            if found is not None:
                return found
    return None


FILES = sorted(RESULTS.rglob("*.json"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_results_file_records_where_it_came_from(path):
    record = json.loads(path.read_text())
    missing = {k for k in FIELDS if _find(record, k) is None}
    if path.name in NO_SEED:
        missing.discard("seed")
    allowed = LEGACY.get(path.name, set()) if path.parent == RESULTS else set()
    assert missing <= allowed, f"{path.name}: no {sorted(missing - allowed)} in its provenance"


def test_the_legacy_list_names_only_files_that_still_lack_something():
    for name, lacks in LEGACY.items():
        path = RESULTS / name
        if not path.exists():
            continue  # rerun and renamed, or removed: the entry goes too (next test)
        record = json.loads(path.read_text())
        still = {k for k in lacks if _find(record, k) is None}
        assert still == lacks, f"{name} now records {sorted(lacks - still)}: shrink LEGACY"
    gone = [n for n in LEGACY if not (RESULTS / n).exists()]
    assert not gone, f"LEGACY names files that are no longer there: {gone}"
