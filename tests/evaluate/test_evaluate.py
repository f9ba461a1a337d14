"""evaluate / predictive_arrays / compare / tables on posteriors with known predictives."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.evaluate import (
    compare,
    evaluate,
    format_table,
    markdown_table,
    metrics,
    predictive_arrays,
)
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks import make_task_set, sinusoid

NOISE = 0.3
N_TASKS, N_QUERY = 200, 50


@pytest.fixture(scope="module")
def sinusoid_tasks():
    family = sinusoid(noise=NOISE)
    tasks = make_task_set(family, jax.random.PRNGKey(42), N_TASKS, k=5, num_query=N_QUERY)
    return family, tasks


def _true_posterior(family, tasks, noise=NOISE, num_samples=2):
    """All samples at the true task parameters: the data-generating predictive."""
    phi = jnp.repeat(tasks["task_params"][:, None, :], num_samples, axis=1)
    return TaskPosterior.from_samples(phi, noise, family.mean_fn, method="truth")


def _coverage_failures(report: dict, n: int) -> list[str]:
    """Levels whose coverage is more than 4 binomial standard errors from nominal.

    Under a calibrated predictive the n PIT values are iid U(0, 1), so coverage(p) ~ Bin(n, p)/n.
    A 4-SE two-sided band has false-failure rate 6.3e-5 per level, < 2.6e-4 for all four.
    """
    out = []
    for key, got in report["coverage"].items():
        p = float(key)
        se = math.sqrt(p * (1 - p) / n)
        if abs(got - p) > 4 * se:
            out.append(f"coverage {key}: {got:.4f} vs {p} (4 SE = {4 * se:.4f})")
    return out


def _calibration_tolerance(n: int) -> float:
    # Each |F̂(p) − p| < 4 SE(p) except with probability 6.3e-5; by the union bound over the 19
    # levels, the mean of the gaps is below the mean of 4 SE(p) except with probability < 1.2e-3.
    levels = np.arange(1, 20) / 20
    return float(np.mean(4 * np.sqrt(levels * (1 - levels) / n)))


def test_true_predictive_is_calibrated(sinusoid_tasks):
    family, tasks = sinusoid_tasks
    post = _true_posterior(family, tasks)
    report = evaluate(post, tasks["x_query"], tasks["y_query"])
    n = N_TASKS * N_QUERY
    assert report["n_tasks"] == N_TASKS and report["n_points"] == N_TASKS * N_QUERY
    assert report["method"] == "truth"
    assert _coverage_failures(report, n) == []
    assert report["calibration_error"] < _calibration_tolerance(n)
    # The PIT histogram is flat: each of the 10 bins holds 1000 ± 4·sqrt(1000·0.9) points.
    density = np.asarray(report["pit_histogram"])
    assert density.shape == (10,)
    assert np.all(np.abs(density - 1.0) < 4 * math.sqrt(0.1 * 0.9 / n) / 0.1)
    # MSE of the true function is the noise variance (SE of the mean of n χ²₁·σ²: σ² sqrt(2/n)).
    assert abs(report["mse"] - NOISE**2) < 4 * NOISE**2 * math.sqrt(2 / n)


def test_overconfident_predictive_fails_coverage(sinusoid_tasks):
    family, tasks = sinusoid_tasks
    post = _true_posterior(family, tasks, noise=NOISE / 2)
    report = evaluate(post, tasks["x_query"], tasks["y_query"])
    n = N_TASKS * N_QUERY
    # The interval ±1.645·σ/2 covers 2Φ(0.82) − 1 ≈ 0.59 of the data.
    assert report["coverage"]["0.9"] < 0.7
    assert len(_coverage_failures(report, n)) == 4
    # Expected error: mean over p of |Φ(2Φ⁻¹(p)) − p| ≈ 0.1, five times the tolerance.
    assert report["calibration_error"] > 5 * _calibration_tolerance(n)
    # PIT piles up at the ends (∪ shape).
    h = report["pit_histogram"]
    assert h[0] > 1.5 and h[-1] > 1.5 and h[5] < 0.8


def test_report_nll_matches_analytic_and_is_json(sinusoid_tasks):
    family, tasks = sinusoid_tasks
    post = _true_posterior(family, tasks)
    report = evaluate(post, tasks["x_query"], tasks["y_query"])
    x = np.asarray(tasks["x_query"], np.float64)
    a = np.asarray(tasks["task_params"], np.float64)
    f = a[:, 0, None, None] * np.sin(x + a[:, 1, None, None])  # (T, Q, 1)
    r = np.asarray(tasks["y_query"], np.float64) - f
    expected = np.mean(0.5 * (r / NOISE) ** 2 + math.log(NOISE) + 0.5 * math.log(2 * math.pi))
    assert report["nll"] == pytest.approx(expected, abs=1e-5)
    assert json.loads(json.dumps(report)) == report
    assert set(report) == {
        "method",
        "n_tasks",
        "n_points",
        "nll",
        "nll_per_task",
        "nll_se",
        "mse",
        "calibration_error",
        "coverage",
        "pit_histogram",
    }
    # per-task means of the same densities, and their standard error over tasks
    per_task = np.mean(0.5 * (r / NOISE) ** 2 + math.log(NOISE) + 0.5 * math.log(2 * math.pi),
                       axis=(1, 2))  # fmt: skip
    np.testing.assert_allclose(report["nll_per_task"], per_task, atol=1e-5)
    se = per_task.std(ddof=1) / np.sqrt(per_task.size)
    assert report["nll_se"] == pytest.approx(se, rel=1e-4)
    assert list(report["coverage"]) == ["0.5", "0.8", "0.9", "0.95"]
    with_pit = evaluate(post, tasks["x_query"], tasks["y_query"], return_pit=True)
    pit = with_pit.pop("pit")
    np.testing.assert_array_equal(pit, np.asarray(post.cdf(tasks["x_query"], tasks["y_query"])))
    assert with_pit == report


def test_predictive_arrays_regression(sinusoid_tasks):
    family, tasks = sinusoid_tasks
    post = _true_posterior(family, tasks)
    x, y = tasks["x_query"][:10], tasks["y_query"][:10]
    post10 = TaskPosterior.from_samples(post.phi[:10], NOISE, family.mean_fn)
    out = predictive_arrays(post10, jax.random.PRNGKey(0), x, y, num_samples=400)
    assert set(out) == {"log_predictive", "mean", "samples"}
    assert all(isinstance(v, np.ndarray) for v in out.values())
    assert out["samples"].shape == (10, 400, N_QUERY, 1)
    np.testing.assert_allclose(out["log_predictive"], np.asarray(post10.log_predictive(x, y)))
    np.testing.assert_allclose(out["mean"], np.asarray(post10.mean(x)))
    # Draws include the noise: (draw − mean)/σ is standard normal (n = 200000 values).
    z = (out["samples"] - out["mean"][:, None]) / NOISE
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01


# -- classification -------------------------------------------------------------------------------


def _linear_classifier(num_tasks=3, num_samples=5, num_classes=3, seed=0):
    """Logits x @ W with per-task, per-sample W (Dx=2, C=3)."""
    k = jax.random.PRNGKey(seed)
    w = jax.random.normal(k, (num_tasks, num_samples, 2 * num_classes))

    def apply(p, x):
        return x @ p.reshape(2, num_classes)

    return TaskPosterior.from_samples(w, 1.0, apply, likelihood="categorical", method="clf")


def test_evaluate_classification_matches_metrics():
    post = _linear_classifier()
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(k1, (3, 40, 2))
    labels = jax.random.randint(k2, (3, 40), 0, 3)
    report = evaluate(post, x, labels)
    # Mixture probabilities computed by hand in NumPy.
    w = np.asarray(post.phi, np.float64).reshape(3, 5, 2, 3)
    logits = np.einsum("tqd,tsdc->tsqc", np.asarray(x, np.float64), w)
    sm = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (sm / sm.sum(-1, keepdims=True)).mean(1)
    lab = np.asarray(labels)
    assert report["accuracy"] == pytest.approx(np.mean(probs.argmax(-1) == lab))
    assert report["brier"] == pytest.approx(metrics.brier(probs, lab), rel=1e-5)
    assert report["ece"] == pytest.approx(metrics.ece(probs, lab), abs=1e-5)
    assert report["mce"] == pytest.approx(metrics.mce(probs, lab), abs=1e-5)
    p_label = np.take_along_axis(probs, lab[..., None], -1)[..., 0]
    assert report["nll"] == pytest.approx(-np.mean(np.log(p_label)), rel=1e-5)
    assert "coverage" not in report and "mse" not in report
    assert json.loads(json.dumps(report)) == report

    out = predictive_arrays(post, jax.random.PRNGKey(0), x, labels, num_samples=10)
    assert set(out) == {"log_predictive", "probs"}
    np.testing.assert_allclose(out["probs"], probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["log_predictive"], np.log(p_label), rtol=1e-5)


# -- input errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda x, y: (x, y[..., 0]), r"y_query: expected shape \(T, Q, Dy\)=\(4, 6, 1\)"),
        (lambda x, y: (x[:3], y[:3]), r"x_query: expected T=4 tasks"),
        (lambda x, y: (x[..., 0], y), r"x_query: expected 3-D \(T, Q, Dx\)"),
        (
            lambda x, y: (x, y.at[0, 0, 0].set(jnp.nan)),
            r"y_query: expected finite values, got 1 NaN",
        ),
        (
            lambda x, y: (x.at[1, 2, 0].set(jnp.inf), y),
            r"x_query: expected finite values, got 0 NaN and 1 inf",
        ),
        (
            lambda x, y: (x, jnp.concatenate([y, y], -1)),
            r"y_query: expected shape \(T, Q, Dy\)=\(4, 6, 1\)",
        ),
    ],
)
def test_evaluate_rejects_bad_regression_query(sinusoid_tasks, mutate, match):
    family, tasks = sinusoid_tasks
    post = TaskPosterior.from_samples(
        jnp.repeat(tasks["task_params"][:4, None], 2, 1), NOISE, family.mean_fn
    )
    x, y = mutate(tasks["x_query"][:4, :6], tasks["y_query"][:4, :6])
    with pytest.raises(ValueError, match=match):
        evaluate(post, x, y)
    with pytest.raises(ValueError, match=match):
        predictive_arrays(post, jax.random.PRNGKey(0), x, y, 3)


@pytest.mark.parametrize(
    "labels, match",
    [
        (
            np.zeros((3, 4), np.float32),
            r"y_query: expected integer class labels, got dtype float32",
        ),
        (np.zeros((3, 4, 1), np.int32), r"y_query: expected shape \(T, Q\)=\(3, 4\)"),
        (np.full((3, 4), 3), r"y_query: expected class labels in \[0, 2\]"),
    ],
)
def test_evaluate_rejects_bad_labels(labels, match):
    post = _linear_classifier()
    with pytest.raises(ValueError, match=match):
        evaluate(post, jnp.ones((3, 4, 2)), labels)


# -- comparison tables ----------------------------------------------------------------------------

REPORTS = {
    "reference": {
        "method": "reference",
        "n_tasks": 5,
        "nll": 0.5,
        "mse": 0.1,
        "calibration_error": 0.01,
        "coverage": {"0.5": 0.51, "0.8": 0.8, "0.9": 0.9, "0.95": 0.95},
    },
    "maml": {
        "method": "maml",
        "n_tasks": 5,
        "nll": 1.25,
        "mse": 0.3,
        "calibration_error": 0.2,
        "coverage": {"0.5": 0.2, "0.8": 0.4, "0.9": 0.45, "0.95": 0.5},
        "train_s": 12.34,
    },
}


def test_compare_adds_gap_to_oracle():
    rows = compare(REPORTS)
    assert [r["method"] for r in rows] == ["reference", "maml"]
    assert rows[0]["gap"] == 0.0 and rows[0]["oracle_nll"] == 0.5
    assert rows[1]["gap"] == pytest.approx(0.75) and rows[1]["oracle_nll"] == 0.5
    assert "gap" not in REPORTS["maml"]  # inputs not modified
    no_oracle = compare({"maml": REPORTS["maml"]})
    assert "gap" not in no_oracle[0] and "oracle_nll" not in no_oracle[0]
    custom = compare(REPORTS, oracle="maml")
    assert custom[0]["gap"] == pytest.approx(-0.75)


def test_compare_rejects_different_task_sets_and_missing_nll():
    bad = {**REPORTS, "other": {**REPORTS["maml"], "n_tasks": 7}}
    with pytest.raises(ValueError, match=r"reports\['other'\]: n_tasks=7 differs"):
        compare(bad)
    with pytest.raises(ValueError, match=r"reports\['x'\]: expected a report dict with 'nll'"):
        compare({"x": {"mse": 1.0}})


def test_format_table_values_and_columns():
    text = format_table(compare(REPORTS))
    lines = text.splitlines()
    assert lines[0].split() == [
        "method",
        "nll",
        "oracle_nll",
        "gap",
        "mse",
        "cov50",
        "cov90",
        "cal_err",
        "train_s",
    ]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == [
        "reference",
        "0.5000",
        "0.5000",
        "+0.0000",
        "0.1",
        "0.510",
        "0.900",
        "0.0100",
        "-",
    ]
    assert lines[3].split() == [
        "maml",
        "1.2500",
        "0.5000",
        "+0.7500",
        "0.3",
        "0.200",
        "0.450",
        "0.2000",
        "12.3",
    ]
    # Fixed width: every column starts at the same offset on every line.
    assert len({line.index("nll") for line in lines[:1]}) == 1
    assert lines[2].index("0.5000") == lines[3].index("1.2500")

    with_k = format_table(compare({"a": {"nll": 1.0, "K": 5}, "b": {"nll": 2.0}}))
    head, _, a, b = with_k.splitlines()
    assert head.split()[:3] == ["method", "K", "nll"]
    assert a.split()[:3] == ["a", "5", "1.0000"] and b.split()[:3] == ["b", "-", "2.0000"]
    assert "train_s" not in with_k
    lower_k = format_table([{"method": "a", "nll": 1.0, "k": 10}]).splitlines()
    assert lower_k[0].split()[:2] == ["method", "K"] and lower_k[2].split()[:2] == ["a", "10"]


def test_markdown_table():
    md = markdown_table(compare(REPORTS)).splitlines()
    assert md[0] == "| method | nll | oracle_nll | gap | mse | cov50 | cov90 | cal_err | train_s |"
    assert md[1].startswith("| --- | ---: |")
    assert md[3] == "| maml | 1.2500 | 0.5000 | +0.7500 | 0.3 | 0.200 | 0.450 | 0.2000 | 12.3 |"


def test_mask_query_scores_only_the_real_points():
    # Two tasks with 3 and 1 real query points (padded to 3): the masked report equals the
    # report of the real points alone, whatever the padding holds.
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(2, 50, 2)), jnp.float32)
    post = TaskPosterior(
        phi=w,
        log_weights=jnp.full((2, 50), -jnp.log(50.0)),
        noise_std=jnp.full((2, 50), 0.5),
        apply=lambda phi, x: x * phi[0] + phi[1],
        method="test",
    )
    x = rng.uniform(-1, 1, (2, 3, 1)).astype(np.float32)
    y = rng.normal(size=(2, 3, 1)).astype(np.float32)
    mask = np.array([[1, 1, 1], [1, 0, 0]], np.float32)
    y_pad = y.copy()
    y_pad[1, 1:] = 1e6  # padding that would dominate every metric if it were scored
    masked = evaluate(post, x, y_pad, mask_query=mask)
    full = evaluate(post, x, y)
    assert masked["n_points"] == 4 and full["n_points"] == 6
    lp = np.asarray(post.log_predictive(jnp.asarray(x), jnp.asarray(y)))
    assert masked["nll"] == pytest.approx(-(lp[0].sum() + lp[1, 0]) / 4, rel=1e-5)
    assert masked["mse"] < 10 and 0 <= masked["coverage"]["0.9"] <= 1
    with pytest.raises(ValueError, match="mask_query: expected at least one real query point"):
        evaluate(post, x, y, mask_query=np.array([[1, 1, 1], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"mask_query: expected shape \(T, Q\)=\(2, 3\)"):
        evaluate(post, x, y, mask_query=np.ones((2, 2)))
