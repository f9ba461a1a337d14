"""bayesmeta.summaries: the lines the command line prints, from the library's own reports."""

from types import SimpleNamespace

from bayesmeta import summaries


def test_fit_summary_says_what_auto_chose_and_why():
    info = {"method": "reference", "model": "mixed", "steps": 0, "train_seconds": 1.25,
            "auto": {"reason": "best on validation groups"}}  # fmt: skip
    text = summaries.fit(SimpleNamespace(info=info), "runs/a")
    assert text.splitlines() == [
        "auto chose mixed / reference: best on validation groups",
        "fitted reference on mixed: 0 steps in 1.2s -> runs/a",
    ]
    del info["auto"]
    assert summaries.fit(SimpleNamespace(info=info)) == "fitted reference on mixed: 0 steps in 1.2s"


def test_evaluation_summary_lists_scores_baselines_and_conformal_coverage():
    report = {
        "nll": 1.23456,
        "mse": 0.5,
        "calibration_error": 0.01,
        "baselines": {"pooled_linear": {"nll": 2.0}, "mixed_model": {"nll": 1.5}},
        "recalibrated": {"nll": 1.2},
        "conformal": {"coverage": {"0.5": 0.49, "0.9": 0.91}},
    }
    assert summaries.evaluation(report, "r.json").splitlines() == [
        "nll=1.2346 mse=0.5000 calibration_error=0.0100 -> r.json",
        "baselines: pooled_linear nll=2.0000 mixed_model nll=1.5000",
        "recalibrated nll=1.2000; conformal cov50=0.49 cov90=0.91",
    ]
    assert summaries.evaluation({"accuracy": 0.75}) == "accuracy=0.7500"


def test_active_summary_gives_each_curves_ends_and_a_missing_value_as_nan():
    curve = {"mse": [1.0, 0.25], "nll": [2.0, None]}
    report = {"acquisition": "all", "queries": 3, "curves": {"bald": curve, "random": curve}}
    assert summaries.active(report, "c.json").splitlines() == [
        "bald: mse 1.0000 -> 0.2500, nll 2.0000 -> nan after 3 queries",
        "random: mse 1.0000 -> 0.2500, nll 2.0000 -> nan after 3 queries",
        "-> c.json",
    ]
    one = {"acquisition": "bald", "queries": 1, "accuracy": [0.5, 0.75], "nll": [0.7, 0.6]}
    assert (
        summaries.active(one)
        == "bald: accuracy 0.5000 -> 0.7500, nll 0.7000 -> 0.6000 after 1 queries"
    )


def test_suggestions_are_a_right_aligned_table_best_first():
    report = {
        "suggestions": [
            {"rank": 1, "line": 12, "x": {"age": 30.0, "dose": 0.125}, "score": 1.5},
            {"rank": 2, "line": 7, "x": {"age": 4.0, "dose": 10.0}, "score": 0.25},
        ],
        "x_columns": ["age", "dose"],
        "candidates": 9,
        "group_id": "g1",
        "acquisition": "bald",
        "support_size": 3,
        "y_column": "y",
        "data": "rows.csv",
    }
    assert summaries.active(report).splitlines() == [
        "group 'g1': 2 of 9 candidate rows by bald (support K=3), best first:",
        "rank  line  age   dose   score",
        "   1    12   30  0.125  1.5000",
        "   2     7    4     10  0.2500",
        "fill in 'y' on these lines of rows.csv and run again",
    ]


def test_suggestions_with_a_cost_column_say_so_and_show_each_cost():
    report = {
        "suggestions": [{"rank": 1, "line": 3, "x": {"dose": 2.0}, "score": 0.5, "cost": 1.5}],
        "x_columns": ["dose"],
        "candidates": 4,
        "group_id": "s7",
        "acquisition": "bald",
        "support_size": 1,
        "y_column": "response",
        "data": "doses.csv",
        "cost_column": "price",
    }
    lines = summaries.suggestions(report, "next.csv").splitlines()
    assert lines[0].endswith("best first per unit of 'price':")
    assert lines[1].split() == ["rank", "line", "dose", "score", "cost"]
    assert lines[2].split() == ["1", "3", "2", "0.5000", "1.5"]
    assert lines[-1].endswith("run again -> next.csv")
