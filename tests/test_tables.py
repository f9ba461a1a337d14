"""Generated result tables: the committed ones match their JSON, and a hand edit is caught."""

import shutil
from pathlib import Path

import pytest

from bayesmeta import tables

REPO = Path(__file__).resolve().parent.parent  # the checkout (the package may be installed)
RESULTS = REPO / "benchmarks" / "results"


def test_every_committed_table_matches_what_the_generator_makes_of_its_json(capsys):
    assert tables.main(["--check", "--root", str(REPO)]) == 0, capsys.readouterr().out
    assert tables.main(["--check", "--root", str(REPO / "tests")]) == 2  # not a checkout


def test_a_hand_edited_table_or_a_rerun_without_regenerating_fails_the_check(tmp_path):
    (tmp_path / "docs").mkdir()
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    for name in {s for t in tables.TABLES.values() for s in t.sources}:
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(RESULTS / name, results / name)
    readme = (REPO / "README.md").read_text()
    marked = readme.index("<!-- table: core_sinusoid -->")
    row = readme.index("| maml | 1 |", marked)
    edited = readme[:row] + readme[row:].replace("| maml | 1 | 2.4525", "| maml | 1 | 2.0000", 1)
    assert edited != readme
    (tmp_path / "README.md").write_text(edited)
    assert tables.main(["--check", "--root", str(tmp_path)]) == 1
    assert (tmp_path / "README.md").read_text() == edited  # --check changes nothing
    assert tables.main(["--root", str(tmp_path)]) == 0  # regenerating restores it
    assert tables.main(["--check", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "README.md").read_text() == readme


def test_renderers_read_the_rows_they_are_given():
    row = {"method": "maml", "k": 5, "nll": 1.0, "oracle_nll": 0.5, "gap": 0.5, "mse": 0.25,
           "coverage": {"0.5": 0.5, "0.9": 0.9}, "calibration_error": 0.01}  # fmt: skip
    text = tables.core_table({"rows": [row], "n_tasks": 3, "samples": 7, "train_seconds":
                              {"maml": 12.0}, "steps": {"maml": 10}})  # fmt: skip
    assert "| maml | 5 | 1.0000 | 0.5000 | +0.5000 | 0.25 | 0.500 | 0.900 | 0.0100 | 12.0 |" in text
    cal = [{"family": "sinusoid", "method": "maml", "k": 5, "gap": g} for g in (0.2, 0.4)]
    assert "| maml | 0.30 |" in tables.calibration_summary(cal, [], [])
    with pytest.raises(ValueError, match="table: expected one of"):
        tables.render("no_such_table")


def test_standard_tables_rank_by_paired_margins_and_name_missing_runs():
    rows = [
        {"family": "sinusoid", "method": m, "k": 5, "seed": s, "nll": 1.0 + g, "gap": g,
         "cov90": 0.9, "calibration_error": 0.01, "steps": 10, "train_seconds": 1.0}
        for m, gaps in (("maml", (0.5, 0.7)), ("neural-process", (0.1, 0.2)))
        for s, g in enumerate(gaps)
    ]  # fmt: skip
    best = tables.standard_best(rows)
    # the runner-up's per-seed differences: 0.4 and 0.5 -> 0.45 ± 0.05
    want = "| sinusoid | 5 | gap | neural-process | 0.150 ± 0.050 | maml | 0.450 ± 0.050 | 2 |"
    assert want in best
    summary = tables.standard_summary(rows)
    assert "| neural-process | **0.150 ± 0.050** |" in summary
    assert "| maml | 0.600 ± 0.100 |" in summary
    assert "Not run yet" in summary and "glyphs/maml seeds 0, 1, 2" in summary
    nll_only = [dict(r, family="cigar", gap=None) for r in rows]
    assert "| cigar | 5 | nll | neural-process | 1.150 ± 0.050 |" in tables.standard_best(nll_only)
    assert "nll K=5" in tables.standard_family(nll_only, "cigar")


def test_reruns_table_names_both_machines_and_flags_a_failed_rerun():
    base = {"row": {"family": "sinusoid", "method": "maml", "seed": 0}, "commit": "abc",
            "machine": "m", "date": "d", "tolerance": 0.01,
            "published": {"commit": "def", "machine": "p"},
            "comparison": [{"k": 1}, {"k": 5}]}  # fmt: skip
    same = {**base, "max_abs_difference": 0.0, "passed": True, "host": {"boot_id": "12345678ab"}}
    off = {**base, "max_abs_difference": 0.5, "passed": False}
    text = tables.reruns(same, off)
    assert "| def, p | abc, m, d, boot 12345678 | 1, 5 | 0.0e+00 | 0.01 | yes |" in text
    assert "boot not recorded | 1, 5 | 5.0e-01 | 0.01 | NO |" in text
