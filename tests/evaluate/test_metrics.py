"""Metrics on hand-constructed arrays with known answers."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.evaluate import metrics as M

# -- regression -----------------------------------------------------------------------------------


def test_nll_is_minus_mean_log_density():
    lp = np.array([[-1.0, -2.0, -0.5], [0.25, -3.0, -1.75]])
    assert M.nll(lp) == pytest.approx(8.0 / 6)
    assert M.nll(jnp.asarray(lp)) == pytest.approx(8.0 / 6, rel=1e-6)  # jax input
    assert isinstance(M.nll(lp), float)


def test_nll_zero_density_is_inf():
    assert M.nll(np.array([[0.0, -np.inf]])) == math.inf


def test_mse_hand():
    mean = np.array([[[1.0], [2.0]], [[0.0], [-1.0]]])
    y = np.array([[[1.5], [2.0]], [[2.0], [-1.0]]])
    assert M.mse(mean, y) == pytest.approx((0.25 + 0 + 4 + 0) / 4)


def test_coverage_counts_central_interval_inclusive():
    # Central 50% interval is [0.25, 0.75]; 90% is [0.05, 0.95].
    pit = np.array([0.25, 0.75, 0.5, 0.2, 0.8, 0.04, 0.96, 0.06, 0.94, 0.5])
    cov = M.coverage_from_pit(pit)
    assert list(cov) == ["0.5", "0.8", "0.9", "0.95"]
    assert cov["0.5"] == pytest.approx(4 / 10)  # 0.25, 0.75, 0.5, 0.5
    assert cov["0.8"] == pytest.approx(6 / 10)  # [0.1, 0.9]: + 0.2, 0.8
    assert cov["0.9"] == pytest.approx(8 / 10)  # [0.05, 0.95]: + 0.06, 0.94
    assert cov["0.95"] == pytest.approx(10 / 10)  # [0.025, 0.975]


def test_coverage_custom_levels_keys():
    cov = M.coverage_from_pit(np.array([0.5, 0.01]), levels=[0.2, 0.99])
    assert cov == {"0.2": 0.5, "0.99": 1.0}


def test_calibration_curve_and_error_hand():
    pit = np.array([0.1, 0.2, 0.3, 0.9])
    levels, observed = M.calibration_curve(pit, levels=[0.15, 0.5, 0.95])
    np.testing.assert_allclose(levels, [0.15, 0.5, 0.95])
    np.testing.assert_allclose(observed, [0.25, 0.75, 1.0])
    err = M.regression_calibration_error(pit, levels=[0.15, 0.5, 0.95])
    assert err == pytest.approx((0.10 + 0.25 + 0.05) / 3)


def test_calibration_error_default_levels():
    # All PIT at 0: observed = 1 at every level p = 0.05..0.95, error = mean(1 - p) = 0.5.
    assert M.regression_calibration_error(np.zeros(7)) == pytest.approx(0.5)
    levels, _ = M.calibration_curve(np.zeros(7))
    np.testing.assert_allclose(levels, np.arange(1, 20) / 20)
    # An exactly uniform grid of PIT values is calibrated up to discretisation (1/(2n)).
    n = 1000
    assert M.regression_calibration_error((np.arange(n) + 0.5) / n) < 1 / n


def test_pit_histogram_density():
    pit = np.array([0.05, 0.15, 0.15, 0.95])
    edges, density = M.pit_histogram(pit, bins=10)
    np.testing.assert_allclose(edges, np.linspace(0, 1, 11))
    np.testing.assert_allclose(density, [2.5, 5.0, 0, 0, 0, 0, 0, 0, 0, 2.5])
    assert np.sum(density * np.diff(edges)) == pytest.approx(1.0)


def test_pit_slightly_out_of_range_from_float32_is_clipped():
    cov = M.coverage_from_pit(np.array([1.0 + 1e-7, -1e-7]), levels=[0.999])
    assert cov["0.999"] == 0.0


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: M.coverage_from_pit(np.array([0.1, -0.2])),
            r"pit: expected values in \[0, 1\], got min -0.2",
        ),
        (
            lambda: M.calibration_curve(np.array([0.5, 1.3])),
            r"pit: expected values in \[0, 1\], got max 1.3",
        ),
        (
            lambda: M.pit_histogram(np.array([0.5, np.nan])),
            r"pit: expected no NaN values, got 1 NaN",
        ),
        (lambda: M.pit_histogram(np.array([0.5]), bins=0), r"bins: expected a positive integer"),
        (
            lambda: M.coverage_from_pit(np.array([0.5]), levels=[1.5]),
            r"levels: expected values in \(0, 1\)",
        ),
        (
            lambda: M.nll(np.zeros((2, 3, 1))),
            r"log_predictive: expected 2-D \(T, Q\), got shape \(2, 3, 1\)",
        ),
        (lambda: M.nll(np.array([[np.nan]])), r"log_predictive: expected no NaN"),
        (
            lambda: M.mse(np.zeros((2, 3, 1)), np.zeros((2, 3))),
            r"y: expected shape \(2, 3, 1\) matching mean, got \(2, 3\)",
        ),
        (
            lambda: M.mse(np.full((1, 1, 1), np.inf), np.zeros((1, 1, 1))),
            r"mean: expected finite values, got 0 NaN and 1 inf",
        ),
    ],
)
def test_regression_metrics_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- classification -------------------------------------------------------------------------------

# Six binary predictions; confidence / correct:
#   0.55 ✓, 0.58 ✗ (predicts 1, label 0), 0.75 ✓, 0.75 ✓, 0.95 ✗, 0.92 ✓
HAND_PROBS = np.array(
    [[0.55, 0.45], [0.42, 0.58], [0.75, 0.25], [0.25, 0.75], [0.05, 0.95], [0.92, 0.08]]
)
HAND_LABELS = np.array([0, 0, 0, 1, 0, 0])


def test_accuracy_and_brier_hand():
    assert M.accuracy(HAND_PROBS, HAND_LABELS) == pytest.approx(4 / 6)
    per_point = [
        2 * 0.45**2,
        (0.42 - 1) ** 2 + 0.58**2,
        2 * 0.25**2,
        2 * 0.25**2,
        2 * 0.95**2,
        2 * 0.08**2,
    ]
    assert M.brier(HAND_PROBS, HAND_LABELS) == pytest.approx(sum(per_point) / 6)


def test_brier_extremes():
    labels = np.array([0, 2])
    perfect = np.eye(3)[labels]
    assert M.brier(perfect, labels) == 0.0
    assert M.brier(np.eye(3)[[1, 0]], labels) == pytest.approx(2.0)


def test_reliability_curve_ece_mce_hand():
    # 10 bins: (0.5, 0.6] holds 0.55, 0.58 (acc 1/2); (0.7, 0.8] holds 0.75, 0.75 (acc 1);
    # (0.9, 1.0] holds 0.95, 0.92 (acc 1/2).
    r = M.reliability_curve(HAND_PROBS, HAND_LABELS, n_bins=10)
    np.testing.assert_allclose(r["bin_edges"], np.linspace(0, 1, 11))
    np.testing.assert_array_equal(r["count"], [0, 0, 0, 0, 0, 2, 0, 2, 0, 2])
    np.testing.assert_allclose(r["confidence"][[5, 7, 9]], [0.565, 0.75, 0.935])
    np.testing.assert_allclose(r["accuracy"][[5, 7, 9]], [0.5, 1.0, 0.5])
    assert np.isnan(r["confidence"][0]) and np.isnan(r["accuracy"][6])
    gaps = [0.065, 0.25, 0.435]
    assert M.ece(HAND_PROBS, HAND_LABELS, n_bins=10) == pytest.approx(sum(gaps) * 2 / 6)
    assert M.mce(HAND_PROBS, HAND_LABELS, n_bins=10) == pytest.approx(0.435)


def test_ece_default_fifteen_bins_and_tq_shapes():
    # Same points as (T=2, Q=3); 15 bins: (8/15, 9/15] holds 0.55, 0.58; (11/15, 12/15] 0.75s;
    # (13/15, 14/15] 0.92; (14/15, 1] 0.95.
    probs = HAND_PROBS.reshape(2, 3, 2)
    labels = HAND_LABELS.reshape(2, 3)
    r = M.reliability_curve(probs, labels)
    assert r["count"].tolist() == [0] * 8 + [2, 0, 0, 2, 0, 1, 1]
    expected = (2 * 0.065 + 2 * 0.25 + 1 * 0.08 + 1 * 0.95) / 6
    assert M.ece(probs, labels) == pytest.approx(expected)
    assert M.mce(probs, labels) == pytest.approx(0.95)
    assert M.accuracy(jnp.asarray(probs), jnp.asarray(labels)) == pytest.approx(4 / 6)


def test_bin_edge_goes_to_lower_bin():
    # Bins are (lo, hi]: confidence exactly 0.5 (an exact edge) lies in (0.4, 0.5], 0.75 in
    # (0.5, 0.75] with 4 bins.
    r = M.reliability_curve(np.array([[0.5, 0.5]]), np.array([0]), n_bins=10)
    assert r["count"].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    r = M.reliability_curve(np.array([[0.25, 0.75]]), np.array([1]), n_bins=4)
    assert r["count"].tolist() == [0, 0, 1, 0]


def _ece_bound(n_points: int, n_bins: int = 15) -> float:
    # For a calibrated classifier E[ECE] <= Σ_b (n_b/N) sqrt(1/(4 n_b)) <= sqrt(B/N)/2, and
    # changing one label moves ECE by at most 1/N, so by McDiarmid
    # P(ECE > E[ECE] + t) <= exp(-2 N t²); t = 0.03 with N = 20000 gives ~2e-16.
    return math.sqrt(n_bins / n_points) / 2 + 0.03


def test_calibrated_classifier_has_small_ece_and_overconfident_does_not():
    rng = np.random.default_rng(0)
    n, c = 20_000, 4
    probs = rng.dirichlet(np.full(c, 0.7), size=n)
    labels = np.minimum((rng.random((n, 1)) > np.cumsum(probs, -1)).sum(-1), c - 1)  # ~ Cat(probs)
    bound = _ece_bound(n)
    assert M.ece(probs, labels) < bound
    assert M.accuracy(probs, labels) == pytest.approx(np.mean(probs.max(-1)), abs=0.02)
    # Sharpening the probabilities (temperature 1/3) makes the same labels over-confident.
    sharp = probs**3 / np.sum(probs**3, -1, keepdims=True)
    assert M.ece(sharp, labels) > bound
    assert M.mce(sharp, labels) > M.mce(probs, labels)


@pytest.mark.parametrize(
    "probs, labels, match",
    [
        (
            np.full((4, 5, 3), 1 / 3),
            np.zeros((4, 6), int),
            r"labels: expected shape \(T, Q\) matching probs \(T, Q, C\)=\(4, 5, 3\), got \(4, 6\)",
        ),
        (
            np.full((5, 3), 1 / 3),
            np.zeros(4, int),
            r"labels: expected shape \(N,\) matching probs \(N, C\)=\(5, 3\), got \(4,\)",
        ),
        (
            np.full((2, 3), 1 / 3),
            np.zeros(2),
            r"labels: expected integer class labels, got dtype float64",
        ),
        (np.full((2, 3), 1 / 3), np.array([0, 3]), r"labels: expected class labels in \[0, 2\]"),
        (np.full((2, 3), 0.5), np.array([0, 1]), r"probs: expected each row to sum to 1"),
        (np.array([[1.2, -0.2]]), np.array([0]), r"probs: expected probabilities in \[0, 1\]"),
        (np.array([0.5, 0.5]), np.array(0), r"probs: expected shape \(N, C\) or \(T, Q, C\)"),
        (np.array([[np.nan, 1.0]]), np.array([0]), r"probs: expected finite values, got 1 NaN"),
    ],
)
def test_classification_metrics_reject_bad_input(probs, labels, match):
    for fn in (M.accuracy, M.brier, M.ece, M.mce, M.reliability_curve):
        with pytest.raises(ValueError, match=match):
            fn(probs, labels)


def test_n_bins_validated():
    with pytest.raises(ValueError, match="n_bins: expected a positive integer"):
        M.ece(HAND_PROBS, HAND_LABELS, n_bins=0)


# -- classifier calibration: standard errors and temperature scaling -------------------------------


def test_classification_metrics_by_hand_with_task_standard_errors():
    # two tasks of two points, two classes
    probs = np.array([[[0.9, 0.1], [0.3, 0.7]], [[0.6, 0.4], [0.2, 0.8]]])
    labels = np.array([[0, 0], [0, 1]])
    out = M.classification_metrics(probs, labels, n_bins=2)
    acc_t = np.array([0.5, 1.0])
    brier_t = np.array([(0.02 + 0.98) / 2, (0.32 + 0.08) / 2])  # Σ_c (p_c − 1[y = c])²
    nll_t = -np.array([np.log(0.9) + np.log(0.3), np.log(0.6) + np.log(0.8)]) / 2
    assert out["accuracy"] == pytest.approx(0.75) and out["brier"] == pytest.approx(brier_t.mean())
    assert out["nll"] == pytest.approx(nll_t.mean())
    for k, v in (("accuracy", acc_t), ("brier", brier_t), ("nll", nll_t)):
        assert out[f"{k}_se"] == pytest.approx(v.std(ddof=1) / np.sqrt(2))
    # confidences 0.9, 0.7, 0.6, 0.8 all in bin (0.5, 1]: accuracy 3/4, mean confidence 0.75
    assert out["ece"] == pytest.approx(0.0, abs=1e-12) and out["mce"] == pytest.approx(0.0)
    assert out["ece_se"] >= 0 and "ece_se" not in M.classification_metrics(probs[0], labels[0])


def test_temperature_scaling_keeps_the_argmax_and_fit_recovers_the_temperature():
    rng = np.random.default_rng(0)
    logits = 3.0 * rng.normal(size=(20000, 4))
    true_t = 2.5  # labels come from softmax(logits / 2.5): the given probs are overconfident
    p_true = np.exp(logits / true_t)
    p_true /= p_true.sum(-1, keepdims=True)
    labels = (p_true.cumsum(-1) > rng.uniform(size=(20000, 1))).argmax(-1)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    t = M.fit_temperature(probs, labels)
    assert t == pytest.approx(true_t, rel=0.05)
    scaled = M.scale_temperature(probs, t)
    np.testing.assert_array_equal(scaled.argmax(-1), probs.argmax(-1))
    np.testing.assert_allclose(scaled.sum(-1), 1.0, rtol=1e-12)
    assert M.ece(scaled, labels) < M.ece(probs, labels) / 3
    np.testing.assert_allclose(M.scale_temperature(probs, 1.0), probs, rtol=1e-9, atol=1e-15)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature: expected a positive number"):
            M.scale_temperature(probs, bad)
