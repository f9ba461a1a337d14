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
from bayesmeta.tasks import from_csv, from_dataframe, from_groups, from_pool, sample_batch


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


# -- the data mistakes users make: one line naming the file, column and line ---------------


def _csv_text(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def _good_lines(num_groups: int = 6, per_group: int = 4) -> list[str]:
    """Data lines ``site,a,b,target`` (no header) with a varying target."""
    rng = np.random.default_rng(0)
    return [
        f"s{g},{rng.normal():.6f},{rng.normal():.6f},{rng.normal():.6f}"
        for g in range(num_groups)
        for _ in range(per_group)
    ]


def _one_line_error(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "raw",
    [
        "site,a,b,target\ns0,1,2,caf\u00e9\n".encode("latin-1"),  # Latin-1, not UTF-8
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00\x01",  # binary garbage
        b"site,a,b,target\n" + b"\x00" * 64 + b"\n",  # NUL bytes decode, but are not text
    ],
    ids=["latin-1", "binary", "nul"],
)
def test_csv_that_is_not_utf8_text_is_one_value_error_naming_the_file(tmp_path, raw):
    from bayesmeta.tasks.data import load_rows

    path = tmp_path / "bad.csv"
    path.write_bytes(raw)
    msg = _one_line_error(lambda: load_rows(path, x=["a", "b"], y="target", group="site"))
    assert str(path) in msg and "--data: expected UTF-8 text" in msg and "line " in msg


def test_csv_line_numbers_of_bad_values_are_the_files_lines(tmp_path):
    # A blank line and a quoted two-line cell before the bad value: line numbers are the
    # file's (header = line 1), for NaN/inf and for non-numeric values alike.
    lines = _good_lines()
    lines[1] = 's0,1.0,2.0,"3.0"'
    head = ["site,a,b,target", lines[0], "", 's0,1.0,"2.0\n",0.5', *lines[1:]]
    # the 7th physical line of the file holds data line lines[2]
    for bad, needle in (("nan", "--y: expected finite values"), ("oops", "is not numeric")):
        rows = list(head)
        rows[5] = rows[5].rsplit(",", 1)[0] + f",{bad}"
        path = _csv_text(tmp_path / f"{bad}.csv", "\n".join(rows) + "\n")
        msg = _one_line_error(lambda p=path: from_csv(p, x=["a"], y="target", group="site"))
        assert needle in msg and "'target'" in msg, msg
        assert f"line 7 of {str(path)!r}" in msg, msg


@pytest.mark.parametrize(
    ("x", "group", "needle"),
    [
        (["a", "target"], "site", "--x: column 'target' is also --y"),
        (["a", "site"], "site", "--x: column 'site' is also --group"),
        (["a", "a"], "site", "--x: column 'a' is listed twice"),
    ],
)
def test_a_column_in_two_roles_is_refused(tmp_path, x, group, needle):
    path = _csv_text(tmp_path / "d.csv", "\n".join(["site,a,b,target", *_good_lines()]) + "\n")
    assert needle in _one_line_error(lambda: from_csv(path, x=x, y="target", group=group))


def test_duplicate_header_names_and_empty_group_ids_are_refused(tmp_path):
    lines = _good_lines()
    dup = _csv_text(tmp_path / "dup.csv", "\n".join(["site,a,a,target", *lines]) + "\n")
    msg = _one_line_error(lambda: from_csv(dup, x=["a"], y="target", group="site"))
    assert "column 'a' appears twice in the header" in msg and str(dup) in msg
    lines[4] = "  " + lines[4][lines[4].index(",") :]
    empty = _csv_text(tmp_path / "empty.csv", "\n".join(["site,a,b,target", *lines]) + "\n")
    msg = _one_line_error(lambda: from_csv(empty, x=["a"], y="target", group="site"))
    assert "--group: expected a group id in column 'site', got an empty one on line 6 of " in msg
    with pytest.raises(ValueError, match="groups: expected a group id on every row, got an empty"):
        from_groups(np.zeros((3, 1)), np.arange(3.0), np.array(["a", "", "b"], dtype=object))


def test_a_byte_order_mark_is_stripped(tmp_path):
    text = "\n".join(["site,a,b,target", *_good_lines()]) + "\n"
    path = _csv_text(tmp_path / "bom.csv", text, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    rows = from_csv(path, x=["a", "b"], y="target", group="site")
    assert len(rows.group_labels) == 6 and rows.group_labels[0] == "s0"


def test_absurd_numbers_are_refused_naming_the_column(tmp_path):
    lines = _good_lines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",1e300"
    path = _csv_text(tmp_path / "huge.csv", "\n".join(["site,a,b,target", *lines]) + "\n")
    msg = _one_line_error(lambda: from_csv(path, x=["a"], y="target", group="site"))
    assert "--y: expected values within float32 range" in msg and "'target'" in msg
    assert "1e+300" in msg and "line 5 of" in msg
    x, y, g = _ragged(6)
    x[4, 1] = -1e300
    msg = _one_line_error(lambda: from_groups(x, y, g, features=["code", "dose"]))
    assert "x: expected values within float32 range" in msg and "column 'dose'" in msg


def test_a_constant_target_is_refused_at_split_time():
    x, _, g = _ragged(8)
    y = np.full(x.shape[0], 0.1)  # its std is rounding noise, not zero
    rows = from_groups(x, y, g, target="score")
    msg = _one_line_error(lambda: rows.split(seed=0))
    assert "y: column 'score' has zero spread" in msg


def test_a_constant_feature_standardises_to_zero_not_to_rounding_noise():
    x, y, g = _ragged(8)
    x[:, 1] = 0.1
    s = from_groups(x, y, g).split(seed=0)
    assert s.scaler.x_scale[1] == 1.0
    for split in (s.train, s.test):
        np.testing.assert_allclose(split.x[..., 1], 0.0, atol=1e-12)


def test_dataframe_nan_names_the_column():
    pd = pytest.importorskip("pandas")
    x, y, g = _ragged(6)
    df = pd.DataFrame({"code": x[:, 0], "dose": x[:, 1], "resp": y[:, 0], "site": g})
    df.loc[5, "dose"] = np.nan
    msg = _one_line_error(lambda: from_dataframe(df, x=["code", "dose"], y="resp", group="site"))
    assert "x: expected finite values in column 'dose'" in msg and "row 5" in msg
    df = pd.DataFrame({"code": x[:, 0], "dose": x[:, 1], "resp": y[:, 0], "site": g})
    df.loc[2, "resp"] = np.inf
    msg = _one_line_error(lambda: from_dataframe(df, x=["code", "dose"], y="resp", group="site"))
    assert "y: expected finite values in column 'resp'" in msg
    df = pd.DataFrame({"code": x[:, 0], "dose": x[:, 1], "resp": y[:, 0], "site": g * 1.0})
    df.loc[3, "site"] = np.nan
    msg = _one_line_error(lambda: from_dataframe(df, x=["code", "dose"], y="resp", group="site"))
    assert "group: expected a group id in column 'site'" in msg
    with pytest.raises(ValueError, match="x: column 'resp' is also y"):
        from_dataframe(df, x=["code", "resp"], y="resp", group="site")


def test_a_value_that_standardises_beyond_float32_is_refused():
    # The training groups' feature barely varies; a test group's value lies far away: its
    # standardised value would be inf in float32 on the device.
    x, y, g = _ragged(8)
    test_group = from_groups(x, y, g).split(seed=0).test.groups[0]
    rng = np.random.default_rng(1)
    x[:, 1] = 1e-300 * rng.uniform(1.0, 2.0, x.shape[0])
    x[g == test_group, 1] = 1.0
    rows = from_groups(x, y, g, features=["code", "dose"])
    msg = _one_line_error(lambda: rows.split(seed=0))
    assert "x: expected values that standardise within float32 range" in msg
    assert "column 'dose'" in msg and f"(group {test_group.item()!r})" in msg
