"""Every bad input to the Python API gets one clear error (issue 8).

Tables of (call, exception type, needle): the call must raise exactly that type (a
``ValueError`` or ``TypeError``) with a one-line message naming the argument (the needle).
Covered: the metrics, :func:`bayesmeta.evaluate.evaluate` / ``predictive_arrays``,
:class:`TaskPosterior` construction, the task-file reader/writer and ``validate_support``, and
a method's ``adapt`` with a bad ``Support`` (which does not validate yet: those cases are
``xfail(strict=True)``).
"""

from __future__ import annotations

import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta import evaluate as ev
from bayesmeta.posterior import TaskPosterior
from bayesmeta.tasks.base import Support
from bayesmeta.tasks.io import (
    TaskFileError,
    load_tasks,
    save_tasks,
    validate_support,
    validate_tasks,
)

T, S, Q = 2, 3, 4
NAN = float("nan")


def _linear(p, x):
    """Location p[0] + p[1] x (Dx = 1): a Dx other than 1 cannot be applied."""
    return p[0] + x @ p[1:2, None]


def _logits(p, x):
    """Two-class logits from a linear function of x (Dx = 1)."""
    z = x @ p[None, :1]
    return jnp.concatenate([z, -z], axis=-1)


def _raises(call, exc, needle):
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc or issubclass(type(info.value), exc)
    msg = str(info.value)
    assert needle in msg, msg
    assert "\n" not in msg, msg


@pytest.fixture(scope="module")
def posts():
    phi = jax.random.normal(jax.random.PRNGKey(0), (T, S, 2))
    reg = TaskPosterior.from_samples(phi, 0.5, _linear, method="test")
    cat = TaskPosterior.from_samples(phi, 1.0, _logits, likelihood="categorical", method="test")
    x = jnp.linspace(-1, 1, T * Q).reshape(T, Q, 1)
    return reg, cat, x


# -- metrics ----------------------------------------------------------------------------------
P2 = np.array([[0.3, 0.7], [0.9, 0.1], [0.5, 0.5]])
L2 = np.array([1, 0, 1])
METRIC_CASES = [
    ("nll-nan", lambda: ev.nll(np.full((2, 3), NAN)), ValueError, "log_predictive"),
    ("nll-rank", lambda: ev.nll(np.zeros(3)), ValueError, "log_predictive"),
    ("nll-empty", lambda: ev.nll(np.zeros((0, 3))), ValueError, "log_predictive"),
    ("nll-strings", lambda: ev.nll(np.array([["a"]])), ValueError, "log_predictive"),
    ("mse-shape", lambda: ev.mse(np.zeros((2, 3, 1)), np.zeros((2, 3))), ValueError, "y"),
    ("mse-inf-mean", lambda: ev.mse(np.full((2, 1), np.inf), np.zeros((2, 1))), ValueError, "mean"),
    ("mse-nan-y", lambda: ev.mse(np.zeros((2, 1)), np.full((2, 1), NAN)), ValueError, "y"),
    ("mse-empty", lambda: ev.mse(np.zeros((0, 1)), np.zeros((0, 1))), ValueError, "mean"),
    ("coverage-pit-high", lambda: ev.coverage_from_pit([0.2, 1.5]), ValueError, "pit"),
    ("coverage-pit-low", lambda: ev.coverage_from_pit([-0.2, 0.5]), ValueError, "pit"),
    ("coverage-pit-nan", lambda: ev.coverage_from_pit([NAN, 0.5]), ValueError, "pit"),
    ("coverage-pit-empty", lambda: ev.coverage_from_pit([]), ValueError, "pit"),
    (
        "coverage-levels",
        lambda: ev.coverage_from_pit([0.5], levels=[0.0, 0.5]),
        ValueError,
        "levels",
    ),
    ("calibration-levels", lambda: ev.calibration_curve([0.5], levels=[1.2]), ValueError, "levels"),
    ("calibration-error-pit", lambda: ev.regression_calibration_error([2.0]), ValueError, "pit"),
    ("pit-histogram-bins-0", lambda: ev.pit_histogram([0.5], bins=0), ValueError, "bins"),
    ("pit-histogram-bins-float", lambda: ev.pit_histogram([0.5], bins=2.5), ValueError, "bins"),
    ("accuracy-sum", lambda: ev.accuracy(P2 * 0.5, L2), ValueError, "probs"),
    ("accuracy-label-high", lambda: ev.accuracy(P2, np.array([0, 2, 1])), ValueError, "labels"),
    ("accuracy-label-float", lambda: ev.accuracy(P2, L2.astype(float)), ValueError, "labels"),
    ("accuracy-label-shape", lambda: ev.accuracy(P2, L2[:2]), ValueError, "labels"),
    ("accuracy-probs-rank", lambda: ev.accuracy(P2[0], L2[:1]), ValueError, "probs"),
    ("brier-nan", lambda: ev.brier(np.where(P2 > 0.8, NAN, P2), L2), ValueError, "probs"),
    ("brier-negative", lambda: ev.brier(P2 - 0.5, L2), ValueError, "probs"),
    ("brier-empty", lambda: ev.brier(np.zeros((0, 2)), np.zeros(0, int)), ValueError, "probs"),
    ("ece-bins-0", lambda: ev.ece(P2, L2, n_bins=0), ValueError, "n_bins"),
    ("ece-label-negative", lambda: ev.ece(P2, -L2), ValueError, "labels"),
    ("mce-bins-bool", lambda: ev.mce(P2, L2, n_bins=True), ValueError, "n_bins"),
    ("reliability-labels", lambda: ev.reliability_curve(P2, L2 + 5), ValueError, "labels"),
]


@pytest.mark.parametrize(
    "call, exc, needle", [c[1:] for c in METRIC_CASES], ids=[c[0] for c in METRIC_CASES]
)
def test_metric_rejects(call, exc, needle):
    _raises(call, exc, needle)


# -- evaluate / predictive_arrays -------------------------------------------------------------
def _y(x, dy=1):
    return jnp.zeros((*x.shape[:2], dy))


EVALUATE_CASES = [
    ("x-rank", lambda reg, cat, x: ev.evaluate(reg, x[..., 0], _y(x)), ValueError, "x_query"),
    ("x-tasks", lambda reg, cat, x: ev.evaluate(reg, x[:1], _y(x[:1])), ValueError, "x_query"),
    (
        "x-empty",
        lambda reg, cat, x: ev.evaluate(reg, x[:, :0], _y(x[:, :0])),
        ValueError,
        "x_query",
    ),
    (
        "x-nan",
        lambda reg, cat, x: ev.evaluate(reg, x.at[0, 0].set(NAN), _y(x)),
        ValueError,
        "x_query",
    ),
    (
        "x-inf",
        lambda reg, cat, x: ev.evaluate(reg, x.at[1, 2].set(jnp.inf), _y(x)),
        ValueError,
        "x_query",
    ),
    (
        "x-dx",
        lambda reg, cat, x: ev.evaluate(reg, jnp.concatenate([x, x], -1), _y(x)),
        ValueError,
        "x_query",
    ),
    (
        "x-strings",
        lambda reg, cat, x: ev.evaluate(reg, np.full(x.shape, "a"), _y(x)),
        ValueError,
        "x_query",
    ),
    ("y-rank", lambda reg, cat, x: ev.evaluate(reg, x, _y(x)[..., 0]), ValueError, "y_query"),
    ("y-dy", lambda reg, cat, x: ev.evaluate(reg, x, _y(x, 2)), ValueError, "y_query"),
    ("y-points", lambda reg, cat, x: ev.evaluate(reg, x, _y(x)[:, :2]), ValueError, "y_query"),
    (
        "y-nan",
        lambda reg, cat, x: ev.evaluate(reg, x, _y(x).at[0, 1, 0].set(NAN)),
        ValueError,
        "y_query",
    ),
    (
        "labels-high",
        lambda reg, cat, x: ev.evaluate(cat, x, jnp.full(x.shape[:2], 2)),
        ValueError,
        "y_query",
    ),
    (
        "labels-negative",
        lambda reg, cat, x: ev.evaluate(cat, x, jnp.full(x.shape[:2], -1)),
        ValueError,
        "y_query",
    ),
    (
        "labels-float",
        lambda reg, cat, x: ev.evaluate(cat, x, jnp.zeros(x.shape[:2])),
        ValueError,
        "y_query",
    ),
    (
        "labels-rank",
        lambda reg, cat, x: ev.evaluate(cat, x, jnp.zeros((*x.shape[:2], 1), int)),
        ValueError,
        "y_query",
    ),
    (
        "not-a-posterior",
        lambda reg, cat, x: ev.evaluate({"phi": 1}, x, _y(x)),
        TypeError,
        "posterior",
    ),
    (
        "predictive-samples-0",
        lambda reg, cat, x: ev.predictive_arrays(reg, jax.random.PRNGKey(0), x, _y(x), 0),
        ValueError,
        "num_samples",
    ),
    (
        "predictive-samples-float",
        lambda reg, cat, x: ev.predictive_arrays(
            cat, jax.random.PRNGKey(0), x, jnp.zeros(x.shape[:2], int), 2.5
        ),
        ValueError,
        "num_samples",
    ),
    (
        "predictive-x-nan",
        lambda reg, cat, x: ev.predictive_arrays(reg, jax.random.PRNGKey(0), x * NAN, _y(x), 3),
        ValueError,
        "x_query",
    ),
]


@pytest.mark.parametrize(
    "call, exc, needle", [c[1:] for c in EVALUATE_CASES], ids=[c[0] for c in EVALUATE_CASES]
)
def test_evaluate_rejects(call, exc, needle, posts):
    _raises(lambda: call(*posts), exc, needle)


# -- TaskPosterior ----------------------------------------------------------------------------
PHI = jnp.zeros((T, S, 2))
POSTERIOR_CASES = [
    ("phi-rank", lambda: TaskPosterior.from_samples(PHI[0], 0.5, _linear), ValueError, "phi"),
    ("phi-rank-4", lambda: TaskPosterior.from_samples(PHI[None], 0.5, _linear), ValueError, "phi"),
    ("phi-empty", lambda: TaskPosterior.from_samples(PHI[:, :0], 0.5, _linear), ValueError, "phi"),
    (
        "phi-int",
        lambda: TaskPosterior.from_samples(PHI.astype(int), 0.5, _linear),
        TypeError,
        "phi",
    ),
    (
        "noise-tasks",
        lambda: TaskPosterior.from_samples(PHI, jnp.ones(T + 1), _linear),
        ValueError,
        "noise_std",
    ),
    (
        "noise-samples",
        lambda: TaskPosterior.from_samples(PHI, jnp.ones((T, S + 1)), _linear),
        ValueError,
        "noise_std",
    ),
    (
        "noise-rank",
        lambda: TaskPosterior.from_samples(PHI, jnp.ones((T, S, 1)), _linear),
        ValueError,
        "noise_std",
    ),
    (
        "likelihood",
        lambda: TaskPosterior.from_samples(PHI, 0.5, _linear, likelihood="poisson"),
        ValueError,
        "likelihood",
    ),
    ("apply", lambda: TaskPosterior.from_samples(PHI, 0.5, "linear"), TypeError, "apply"),
    (
        "log-weights-shape",
        lambda: TaskPosterior(PHI, jnp.zeros((T, S + 1)), jnp.ones((T, S)), _linear),
        ValueError,
        "log_weights",
    ),
    (
        "noise-shape",
        lambda: TaskPosterior(PHI, jnp.zeros((T, S)), jnp.ones((T,)), _linear),
        ValueError,
        "noise_std",
    ),
    (
        "phi-rank-direct",
        lambda: TaskPosterior(PHI[0], jnp.zeros((T, S)), jnp.ones((T, S)), _linear),
        ValueError,
        "phi",
    ),
]


@pytest.mark.parametrize(
    "call, exc, needle", [c[1:] for c in POSTERIOR_CASES], ids=[c[0] for c in POSTERIOR_CASES]
)
def test_task_posterior_rejects(call, exc, needle):
    _raises(call, exc, needle)


def test_task_posterior_validation_allows_jit_and_tree_maps(posts):
    reg, _, x = posts
    assert reg.resample(jax.random.PRNGKey(0), 5).phi.shape == (T, 5, 2)  # through jit
    assert jax.tree_util.tree_map(lambda a: a[:1], reg).num_tasks == 1
    assert jax.tree_util.tree_map(lambda a: None, reg).phi is None  # placeholders are allowed


# -- task files -------------------------------------------------------------------------------
def _good(classification=False):
    rng = np.random.default_rng(0)
    out = {
        "x_support": rng.normal(size=(3, 2, 1)).astype(np.float32),
        "x_query": rng.normal(size=(3, 4, 1)).astype(np.float32),
    }
    if classification:
        out["y_support"] = rng.integers(0, 2, (3, 2)).astype(np.int32)
        out["y_query"] = rng.integers(0, 2, (3, 4)).astype(np.int32)
    else:
        out["y_support"] = rng.normal(size=(3, 2, 1)).astype(np.float32)
        out["y_query"] = rng.normal(size=(3, 4, 1)).astype(np.float32)
    return out


def _with(classification=False, **changes):
    d = _good(classification)
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v(d[k]) if callable(v) else v
    return d


def _nan(a):
    a = a.astype(np.float32)
    a.flat[0] = np.nan
    return a


TASK_CASES = [
    ("not-a-dict", [1, 2], {}, "tasks"),
    ("missing-x_support", _with(x_support=None), {}, "x_support"),
    ("missing-y_query", _with(y_query=None), {}, "y_query"),
    ("pool-half", {**_good(), "x_pool": np.zeros((3, 5, 1))}, {}, "y_pool"),
    ("nan-x_support", _with(x_support=_nan), {}, "x_support"),
    ("nan-y_query", _with(y_query=_nan), {}, "y_query"),
    ("inf-x_query", _with(x_query=lambda a: a * np.inf), {}, "x_query"),
    ("huge-x_query", _with(x_query=lambda a: a.astype(float) * 1e300), {}, "x_query"),
    ("rank-x_support", _with(x_support=lambda a: a[..., 0]), {}, "x_support"),
    ("rank-y_query", _with(y_query=lambda a: a[None]), {}, "y_query"),
    ("tasks-y_support", _with(y_support=lambda a: a[:2]), {}, "y_support"),
    ("tasks-x_query", _with(x_query=lambda a: a[:1]), {}, "x_query"),
    ("points-y_query", _with(y_query=lambda a: a[:, :3]), {}, "y_query"),
    (
        "empty-support",
        _with(x_support=lambda a: a[:, :0], y_support=lambda a: a[:, :0]),
        {},
        "x_support",
    ),
    ("empty-tasks", {k: v[:0] for k, v in _good().items()}, {}, "x_support"),
    ("dx-arg", _good(), {"dx": 2}, "Dx=2"),
    ("dy-arg", _good(), {"dy": 3}, "Dy=3"),
    ("dx-query", _with(x_query=lambda a: np.concatenate([a, a], -1)), {}, "x_query"),
    ("strings", _with(x_support=lambda a: a.astype(str)), {}, "x_support"),
    ("bools", _with(x_query=lambda a: a > 0), {}, "x_query"),
    (
        "labels-float",
        _with(True, y_support=lambda a: a.astype(np.float32)),
        {"classification": True},
        "y_support",
    ),
    ("labels-negative", _with(True, y_query=lambda a: a - 2), {}, "y_query"),
    ("labels-range", _with(True, y_query=lambda a: a + 2), {"num_classes": 2}, "y_query"),
    ("labels-for-regression", _good(True), {"classification": False}, "y_support"),
    ("bad-dx-arg", _good(), {"dx": 0}, "dx"),
    ("bad-num-classes-arg", _good(True), {"num_classes": 1.5}, "num_classes"),
    ("bad-classification-arg", _good(), {"classification": "yes"}, "classification"),
    ("non-string-key", {**_good(), 3: np.zeros(1)}, {}, "keys"),
    ("ragged", _with(x_support=[[[0.0], [1.0]], [[0.0]], [[1.0], [2.0]]]), {}, "x_support"),
]


@pytest.mark.parametrize(
    "tasks, kwargs, needle", [c[1:] for c in TASK_CASES], ids=[c[0] for c in TASK_CASES]
)
def test_validate_tasks_rejects(tasks, kwargs, needle):
    _raises(lambda: validate_tasks(tasks, **kwargs), TaskFileError, needle)
    assert issubclass(TaskFileError, ValueError)


@pytest.mark.parametrize(
    "tasks, needle",
    [
        (c[1], c[3])
        for c in TASK_CASES
        if not c[2] and c[0] not in ("not-a-dict", "non-string-key", "ragged")
    ],
    ids=[
        c[0]
        for c in TASK_CASES
        if not c[2] and c[0] not in ("not-a-dict", "non-string-key", "ragged")
    ],
)
def test_save_then_load_rejects_and_writes_nothing(tasks, needle, tmp_path):
    path = tmp_path / "t.npz"
    _raises(lambda: save_tasks(path, tasks), TaskFileError, needle)
    assert list(tmp_path.iterdir()) == []
    np.savez(path, **tasks)  # written without validation, read back: the same error
    _raises(lambda: load_tasks(path), TaskFileError, needle)


def _write(tmp_path, kind):
    path = tmp_path / "f.npz"
    if kind == "text":
        path.write_text("not an archive")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy":
        np.save(tmp_path / "a.npy", np.zeros(3))
        (tmp_path / "a.npy").rename(path)
    elif kind == "truncated":
        np.savez(path, **_good())
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "zip-of-text":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("x_support.npy", "not an array")
    elif kind == "object":
        np.savez(path, **{**_good(), "x_support": np.array([None, 1], dtype=object)})
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("text", "npz"),
        ("empty", "npz"),
        ("npy", "npz"),
        ("truncated", "npz"),
        ("zip-of-text", "x_support"),
        ("object", "x_support"),
        ("directory", "directory"),
        ("missing", "no such file"),
    ],
)
def test_load_tasks_rejects_files(kind, needle, tmp_path):
    path = _write(tmp_path, kind)
    _raises(lambda: load_tasks(path), TaskFileError, needle)


# -- support sets and a method's adapt --------------------------------------------------------
def _support(**changes):
    x = jnp.linspace(-1, 1, 6).reshape(2, 3, 1)
    parts = {"x": x, "y": jnp.sin(x), "mask": jnp.ones((2, 3))}
    for k, v in changes.items():
        parts[k] = v(parts[k])
    return Support(parts["x"], parts["y"], parts["mask"])


SUPPORT_CASES = [
    ("x-rank", _support(x=lambda a: a[..., 0]), "support.x"),
    ("y-rank", _support(y=lambda a: a[..., 0]), "support.y"),
    ("y-tasks", _support(y=lambda a: a[:1]), "support.y"),
    ("mask-shape", _support(mask=lambda a: a[:, :2]), "support.mask"),
    ("dx", _support(x=lambda a: jnp.concatenate([a, a], -1)), "support.x"),
    ("nan-x", _support(x=lambda a: a.at[0, 0, 0].set(NAN)), "support.x"),
    ("nan-y", _support(y=lambda a: a.at[1, 2, 0].set(NAN)), "support.y"),
    (
        "empty",
        _support(x=lambda a: a[:, :0], y=lambda a: a[:, :0], mask=lambda a: a[:, :0]),
        "support.x",
    ),
]
_SUPPORT_IDS = [c[0] for c in SUPPORT_CASES]
_SUPPORT_ARGS = [c[1:] for c in SUPPORT_CASES]


@pytest.mark.parametrize("support, needle", _SUPPORT_ARGS, ids=_SUPPORT_IDS)
def test_validate_support_rejects(support, needle):
    _raises(
        lambda: validate_support(support, dx=1, dy=1, classification=False), TaskFileError, needle
    )


def test_validate_support_accepts_good_and_traced():
    validate_support(_support(), dx=1, dy=1)
    jax.jit(lambda s: validate_support(s, dx=1) or s.x.sum())(_support())


@pytest.fixture(scope="module")
def maml_sinusoid():
    from bayesmeta.modelfiles import load_model_spec

    method, _ = load_model_spec("sinusoid").build("maml", steps=5)
    return method, method.init(jax.random.PRNGKey(0))


@pytest.mark.parametrize("support, needle", _SUPPORT_ARGS, ids=_SUPPORT_IDS)
def test_adapt_rejects_bad_support(support, needle, maml_sinusoid):
    method, state = maml_sinusoid
    call = lambda: method.adapt(jax.random.PRNGKey(0), state, support, 2)  # noqa: E731
    _raises(call, ValueError, needle)
