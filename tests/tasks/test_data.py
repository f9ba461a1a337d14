"""The user's own grouped data: splits by group, standardisation on training groups only,
episodes cut inside the jit, and clear errors for bad input."""

from __future__ import annotations

import csv

import jax
import numpy as np
import pytest

from bayesmeta.inference import maml, train
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.tasks import from_csv, from_groups, from_pool, sample_batch


def _ragged(num_groups=12, seed=0):
    """Rows whose first feature encodes (group, row) uniquely; groups of 3 to 14 rows."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 15, num_groups)
    g = np.repeat(np.arange(num_groups) * 10 + 7, sizes)  # labels that are not 0..G-1
    row = np.concatenate([np.arange(s) for s in sizes])
    code = (g * 100 + row).astype(np.float64)
    x = np.stack([code, rng.normal(5.0, 2.0, code.size)], 1)
    y = 3.0 + 2.0 * x[:, 1:] + rng.normal(0, 0.5, (code.size, 1))
    return x, y, g


@pytest.fixture(scope="module")
def splits():
    x, y, g = _ragged()
    return from_groups(x, y, g).split(seed=1), (x, y, g)


def test_no_group_is_in_two_splits_and_every_group_is_somewhere(splits):
    s, (_, _, g) = splits
    parts = [set(s[n].groups.tolist()) for n in ("train", "validation", "test")]
    assert all(p for p in parts) and len(parts[0]) >= 2
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set.union(*parts) == set(np.unique(g).tolist())
    again = from_groups(*splits[1]).split(seed=1)
    np.testing.assert_array_equal(again.test.groups, s.test.groups)
    other = from_groups(*splits[1]).split(seed=2)
    assert not np.array_equal(other.train.groups, s.train.groups)


def test_standardiser_is_fitted_on_training_groups_only_and_inverts(splits):
    s, (x, y, g) = splits
    tr = np.isin(g, s.train.groups)
    np.testing.assert_allclose(s.scaler.x_mean, x[tr].mean(0))
    np.testing.assert_allclose(s.scaler.x_scale, x[tr].std(0))
    np.testing.assert_allclose(s.scaler.y_scale, y[tr].std(0))
    # the test split in the data's own units, by hand
    d = s.test
    for i, lab in enumerate(d.groups):
        rows = np.flatnonzero(g == lab)
        n = d.lengths[i]
        assert n == rows.size
        np.testing.assert_allclose(s.scaler.inverse_y(d.y[i, :n]), y[rows], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose((x[rows] - x[tr].mean(0)) / x[tr].std(0), d.x[i, :n],
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        assert not d.x[i, n:].any()  # padding
    back = type(s.scaler).from_json(s.scaler.to_json())
    np.testing.assert_array_equal(back.y_mean, s.scaler.y_mean)
    assert s.scaler.log_jacobian() == pytest.approx(np.log(y[tr].std()))


def _codes(splits, x_std):
    """(group, row) of standardised inputs."""
    code = np.rint(np.asarray(x_std)[..., 0] * splits.scaler.x_scale[0] + splits.scaler.x_mean[0])
    return (code // 100).astype(int), (code % 100).astype(int)


def test_support_and_query_are_disjoint_inside_one_group_and_masked(splits):
    s, _ = splits
    fam = s.train.family()
    batch, _ = jax.jit(lambda k: sample_batch(fam, k, 6, (1, 2), 1))(jax.random.PRNGKey(3))
    gs, rs = _codes(s, batch.x_support)
    gq, rq = _codes(s, batch.x_query)
    mask = np.asarray(batch.mask_support).astype(bool)
    for t in range(6):
        groups = set(gs[t][mask[t]].tolist()) | set(gq[t].tolist())
        assert len(groups) == 1 and groups.pop() in set(s.train.groups.tolist())
        support = set(rs[t][mask[t]].tolist())
        assert len(support) == mask[t].sum() and not support & set(rq[t].tolist())
        assert mask[t, 0]  # at least one support point, padded after k
    assert batch.x_support.shape == (6, 2, 2) and batch.y_query.shape == (6, 1, 1)


def test_training_over_ragged_groups_compiles_once(splits):
    s, _ = splits
    fam = s.train.family()
    traces = []

    def sampler(k):
        traces.append(1)
        return sample_batch(fam, k, 4, (1, 2), 1)[0]

    method = maml(HierarchicalModel(mlp((2, 8, 1)), dx=2), inner_steps=1)
    res = train(method, method.init(jax.random.PRNGKey(0)), sampler, jax.random.PRNGKey(1), 30,
                chunk_size=10, progress=False)  # fmt: skip
    assert len(traces) == 1 and int(res.state.step) == 30
    assert np.isfinite(res.history["loss"]).all()


def test_csv_reads_the_same_rows_as_arrays(tmp_path):
    x, y, g = _ragged(6)
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "a", "b", "target"])
        for i in range(x.shape[0]):
            w.writerow([f"s{g[i]}", x[i, 0], x[i, 1], y[i, 0]])
    rows = from_csv(path, x=["a", "b"], y="target", group="site")
    np.testing.assert_allclose(rows.x, x)
    np.testing.assert_allclose(rows.y, y)
    assert rows.features == ("a", "b") and rows.target == "target"
    assert len(rows.group_labels) == 6 and rows.group_labels[0].startswith("s")
    s = rows.split(seed=0)
    assert s.train.family().dy == 1  # string group ids work
    with pytest.raises(ValueError, match=r"--x: no column 'c' in .*columns: \['site'"):
        from_csv(path, x=["a", "c"], y="target", group="site")
    with pytest.raises(ValueError, match="--y: column 'site' is not numeric"):
        from_csv(path, x=["a"], y="site", group="site")


def _nan_at_3(x):
    x = x.copy()
    x.flat[3] = np.nan
    return x


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda x, y, g: (_nan_at_3(x), y, g), "x: expected finite values"),
        (lambda x, y, g: (x, y[:-1], g), "y: expected"),
        (lambda x, y, g: (x, y, g[:-1]), "groups: expected shape"),
        (lambda x, y, g: (x, y, g // 1000), "groups: expected at least 4 groups"),
    ],
)
def test_bad_rows_are_named(change, needle):
    x, y, g = _ragged(6)
    with pytest.raises(ValueError, match=needle):
        from_groups(*change(x, y, g)).split()


def test_small_groups_are_counted_and_left_out():
    x, y, g = _ragged(6)
    with pytest.raises(ValueError, match=r"groups: expected at least 4 groups with >= 20 rows"):
        from_groups(x, y, g).split(min_group_size=20)


def test_labels_make_a_categorical_family_and_must_be_integers():
    x, _, g = _ragged(8)
    labels = (x[:, 1] > 5).astype(np.int64)
    s = from_groups(x, labels, g).split()
    fam = s.train.family()
    assert fam.likelihood == "categorical" and fam.num_classes == 2
    assert s.scaler.y_mean is None and s.train.y.dtype == np.int32
    with pytest.raises(ValueError, match="y: expected non-negative integer class labels"):
        from_groups(x, labels + 0.5, g, labels=True)


def test_pool_layout_drops_padding():
    x = np.zeros((5, 4, 1))
    x[:, :, 0] = np.arange(4)
    n = np.array([2, 3, 4, 2, 3])
    rows = from_pool(x, np.ones((5, 4)), n)
    assert rows.x.shape == (n.sum(), 1) and len(rows.group_labels) == 5
    with pytest.raises(ValueError, match=r"n: expected \(5,\) integers in \[1, 4\]"):
        from_pool(x, np.ones((5, 4)), np.array([2, 3, 9, 2, 3]))
