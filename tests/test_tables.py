"""Generated result tables: the committed ones match their JSON, and a hand edit is caught."""

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent  # the checkout (the package may be installed)


def _load_tables():
    """benchmarks/tables.py, a tool of the checkout (not in the installed package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tables", REPO / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _load_tables()
RESULTS = REPO / "benchmarks" / "results"
#: what a table says of a results file written before the benchmarks recorded their commit
NO_COMMIT = "commit and command not recorded (written before files carried them), "


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
    cell = row + len("| maml | 1 | ")
    nll = readme[cell : readme.index(" |", cell)]
    edited = readme[:cell] + readme[cell:].replace(nll, "9.9999", 1)
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
    same = {**base, "max_abs_difference": 0.0, "passed": True, "host": {"boot_id": "12345678ab"},
            "comparison": [{"k": 1, "fields": {"nll": {}, "cov90": {}}}, {"k": 5}]}  # fmt: skip
    off = {**base, "max_abs_difference": 0.5, "passed": False}
    text = tables.reruns(same, off)
    assert "| def, p | abc, m, d, boot 12345678 | 1, 5 | 2 fields | 0.0e+00 | 0.01 | yes |" in text
    assert "boot not recorded | 1, 5 | NLL only | 5.0e-01 | 0.01 | NO |" in text


def _k_row(method, k, gap, **extra):
    return {"method": method, "k": k, "nll": 1.0 + gap, "gap": gap, "mse": 0.5,
            "coverage": {"0.5": 0.5, "0.9": 0.9}, "calibration_error": 0.01, **extra}  # fmt: skip


def test_ensembles_table_bolds_the_smallest_learned_gap_and_names_where_rows_came_from():
    rows = [_k_row("reference", 1, 0.0), _k_row("maml", 1, 0.3), _k_row("bmaml", 1, 0.1)]
    text = tables.ensembles_table({"rows": rows, "n_tasks": 3, "steps": {"bmaml": 9},
                                   "maml_rows_from": "core.json", "date": "d"})  # fmt: skip
    assert "| bmaml | 1 | 1.1000 | **+0.1000** | 0.5 | 0.500 | 0.900 | 0.0100 |" in text
    assert "| reference | 1 | 1.0000 | +0.0000 |" in text  # the reference is never bold
    assert "reference, maml rows from `core.json`" in text and "made: " + NO_COMMIT + "d." in text


def test_ensembles_wide_has_one_row_per_method_and_a_dash_for_a_missing_k():
    rows = [_k_row(m, k, g) for m, k, g in (("maml", 1, 1.0), ("maml", 5, 0.8),
                                            ("bmaml", 1, 0.3), ("bmaml", 10, 0.2))]  # fmt: skip
    text = tables.ensembles_wide({"rows": rows, "note": "n"})
    assert "| method | gap K=1 | gap K=5 | gap K=10 | cov90 K=1 |" in text
    assert "| bmaml | **0.300** | – | **0.200** | 0.900 | – | 0.900 | – | – |" in text
    assert "commit and command not recorded (written before files carried them). Note: n." in text


def test_ambiguity_table_names_the_ambiguous_tasks_and_bolds_nothing():
    rows = [_k_row(m, k, g, hyp_cov=h, n_ambiguous=n)
            for m, h in (("maml", 0.0), ("platipus", 1.0))
            for k, n, g in ((1, 112, 0.3), (5, 3, 0.2))]  # fmt: skip
    text = tables.ambiguity_table({"rows": rows, "n_tasks": 4, "samples": 10, "cpu_count": 2})
    assert "| hypothesis coverage K=1 (n=112) |" in text
    assert "| platipus | 0.300 | 0.200 | 0.900 | 0.900 | 0.50 | 1.00 |" in text
    assert "**" not in text


def test_bmaml_setting_puts_each_method_in_its_own_columns():
    rows = [{"method": m, "pool": 100, "k": 5, "mse": mse, "nll": -0.5, "steps": s}
            for m, mse, s in (("emaml", 1.77491, 19), ("bmaml", 2.5, 6))]  # fmt: skip
    text = tables.bmaml_setting({"rows": rows, "seconds_per_model": 240.0, "commit": "abc"})
    assert "| pool | K | EMAML MSE | BMAML MSE | EMAML NLL | BMAML NLL |" in text
    assert "| 100 | 5 | 1.7749 | 2.5000 | −0.500 | −0.500 |" in text
    assert "At most 240 s of training per model; steps (pool 100): emaml 19; bmaml 6;" in text


def test_active_table_takes_its_metric_and_query_counts_from_the_file():
    acq = {"method": "maml", "acquisition": "bald", "step_ms": 25.4, "accuracy@5": 0.9361,
           "d_accuracy@5": 0.0146, "se_accuracy@5": 0.0056, "nll@5": 0.15, "d_nll@5": -0.04,
           "se_nll@5": 0.01}  # fmt: skip
    rand = {"method": "maml", "acquisition": "random", "step_ms": 18.0, "accuracy@5": 0.9214,
            "nll@5": 0.19}  # fmt: skip
    text = tables.active_table({"model": "circles", "queries": 5, "seed": None, "rows": [acq, rand],
                                "methods": {"maml": {"source": "runs/m"}}})  # fmt: skip
    assert "| method | acquisition | accuracy@5 | Δ@5 | step (ms) |" in text
    assert "| maml | BALD | 0.936 | +0.015 ± 0.006 | 25 |" in text
    assert "| maml | random | 0.921 | – | 18 |" in text
    assert "Model `circles`; 5 queries;" in text and "models: maml: runs/m;" in text
    mse = {**{k.replace("accuracy", "mse"): v for k, v in acq.items()}, "d_mse@5": -0.1}
    assert "| maml | BALD | 0.936 | −0.100 ± 0.006 | 25 |" in tables.active_table({"rows": [mse]})


def test_speed_methods_and_sharding_tables_read_the_speed_files():
    machine = {"device": "cpu", "platform": "p", "cpu_count": 2, "jax": "0.1", "date": "d"}
    methods = {"work": "w", "machine": machine,
               "maml": {"steps_per_s": 1948.3, "ratio_vs_maml": 1.0},
               "bmaml": {"steps_per_s": 66.2, "ratio_vs_maml": 0.034}}  # fmt: skip
    text = tables.speed_methods(methods)
    assert "| bmaml | 66 | 0.03 |" in text and "| maml | 1948 | 1.00 |" in text
    assert "Setting: w; made: " + NO_COMMIT + "cpu on p (2 CPUs), jax 0.1, d." in text
    sharding = {f"devices_{n}": {"steps_per_s": s, "tasks_per_s": 64 * s, "speedup": s / 695.0}
                for n, s in ((2, 604.0), (1, 695.0))}  # fmt: skip
    text = tables.speed_sharding(sharding)
    assert "| forced host devices | meta-steps/s (64 tasks) | relative |" in text
    assert text.index("| 1 | 695 | 1.00 |") < text.index("| 2 | 604 | 0.87 |")
    assert "made: commit and command not recorded" in text


def test_core_bar_computes_whether_each_criterion_is_met():
    rows = [_k_row("abml", 1, 0.127), _k_row("abml", 5, 0.45), _k_row("maml", 1, 1.116)]
    rows[0]["coverage"]["0.9"] = 0.80
    result = {"rows": rows, "n_tasks": 3, "steps": {"abml": 10}, "date": "d"}
    text = tables.core_bar(result, gaps={1: 0.35, 5: 0.40}, cov90=(0.85, 0.95))
    assert "| ABML gap, K=1 ≤ 0.35 | 0.127 | yes |" in text
    assert "| ABML gap, K=5 ≤ 0.40 | 0.450 | no |" in text
    assert "| ABML cov90, K=1 in [0.85, 0.95] | 0.800 | no |" in text
    assert "| ABML cov90, K=5 in [0.85, 0.95] | 0.900 | yes |" in text
    assert "| MAML gap at K=1 > ABML's | 1.12 > 0.13 | yes |" in text
    assert "3 held-out tasks; abml trained 10 steps; made: " + NO_COMMIT + "d." in text
    assert "| ABML gap, K=10 ≤ 0.30 | – | no |" in tables.core_bar(result, {10: 0.3}, (0.8, 1.0))


def test_classification_summary_bolds_the_most_accurate_and_counts_seeds():
    rows = [{"family": "glyphs", "method": m, "k": k, "seed": s, "nll": 0.1,
             "accuracy": a + s * 0.01, "ece": 0.01}
            for m, a in (("maml", 0.8), ("protonet", 0.9))
            for k in (1, 5) for s in (0, 1)]  # fmt: skip
    text = tables.classification_summary(rows)
    assert (
        "| glyphs 1-shot accuracy | ECE | glyphs 5-shot accuracy | ECE | seeds (glyphs) |" in text
    )
    assert "| protonet | **0.905 ± 0.005** | 0.010 ± 0.000 |" in text
    assert "| maml | 0.805 ± 0.005 |" in text and text.count("| 2 |") == 2


def test_still_falling_reads_the_validation_curve_at_half_and_all_of_the_rows_steps():
    curve = {"step": [100, 200, 300, 400], "gap_k5": [0.9, 0.5, 0.45, 0.4]}
    # half of 400 steps is step 200 (gap 0.5); all of them, step 400 (gap 0.4)
    assert tables.still_falling(curve, 400) == pytest.approx(0.1)
    assert tables.still_falling(curve, 800) is None  # the run stopped short of the row's steps
    assert tables.still_falling(curve, 150) is None  # no validation by half of the steps
    rows = [
        {"family": "sinusoid", "method": m, "k": 5, "seed": 0, "nll": 1.0, "gap": 0.5,
         "cov90": 0.9, "calibration_error": 0.01, "steps": 400, "train_seconds": 1.0}
        for m in ("maml", "abml")
    ]  # fmt: skip
    ttq = {"curves": [dict(curve, family="sinusoid", method="maml")], "provenance": {}}
    text = tables.standard_family(rows, "sinusoid", ttq)
    assert "still falling K=5 |" in text
    assert "| 400 | 1 | +0.100 |" in text  # maml: from its curve
    assert "| abml |" in text and text.split("| abml |")[1].split("\n")[0].endswith("| – |")
    assert "still falling" not in tables.standard_family(rows, "sinusoid")
