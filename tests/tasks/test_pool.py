"""bayesmeta.tasks.pool: a memory-mapped pool of groups streamed into jitted training."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmeta.inference import train
from bayesmeta.inference.registry import METHODS
from bayesmeta.model import HierarchicalModel
from bayesmeta.nn import mlp
from bayesmeta.tasks.base import sample_batch
from bayesmeta.tasks.pool import iter_chunks, open_pool, write_pool


def groups(g: int, n: int = 8, seed: int = 0):
    """Group i's rows are (x, 1000 i + row): y names its group and row."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, n + 1, g).astype(np.int32)
    x = rng.normal(size=(g, n, 2)).astype(np.float32)
    y = (1000.0 * np.arange(g)[:, None] + np.arange(n)[None, :]).astype(np.float32)
    pad = np.arange(n)[None, :] >= lengths[:, None]
    x[pad], y[pad] = 0.0, 0.0
    return x, y, lengths


def test_write_in_chunks_and_open_read_back(tmp_path):
    x, y, lengths = groups(50)
    path = write_pool(tmp_path / "p", iter_chunks(x, y, lengths, 7), num_groups=50)
    pool = open_pool(path)
    assert isinstance(pool.x, np.memmap) and pool.num_groups == 50 and pool.dy == 1
    assert json.loads((path / "pool.json").read_text())["rows"] == int(lengths.sum())
    np.testing.assert_array_equal(np.asarray(pool.x), x)
    np.testing.assert_array_equal(np.asarray(pool.y)[..., 0], y)
    g = np.array([9, 2, 9, 40])
    xs, ys, ls = pool.read(g)  # read in file order, returned in the asked order
    np.testing.assert_array_equal(xs, x[g])
    np.testing.assert_array_equal(ls, lengths[g])
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temporary folder left


def test_episodes_are_rows_of_one_group_without_replacement_and_keyed(tmp_path):
    x, y, lengths = groups(30)
    fam = open_pool(write_pool(tmp_path / "p", (x, y, lengths))).family()
    step = jax.jit(lambda k: sample_batch(fam, k, 16, (1, 3), 2))
    batch, ids = step(jax.random.PRNGKey(0))
    again, _ = step(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(batch.y_support), np.asarray(again.y_support))
    ys = np.concatenate([np.asarray(batch.y_support), np.asarray(batch.y_query)], 1)[..., 0]
    for t in range(16):
        g = int(ids[t, 0])
        assert lengths[g] >= 3 + 2  # only groups with k_max + Q rows are drawn
        assert np.all(ys[t] // 1000 == g)  # every row from the task's own group
        rows = ys[t] % 1000
        assert len(set(rows.tolist())) == rows.size and rows.max() < lengths[g]
    other, _ = step(jax.random.PRNGKey(1))
    assert not np.array_equal(np.asarray(other.y_support), np.asarray(batch.y_support))


def test_training_from_a_pool_runs_jitted_with_one_compile(tmp_path):
    x, y, lengths = groups(40)
    y = np.where(np.arange(8)[None] < lengths[:, None], x[..., 0] * 0.5, 0.0).astype(np.float32)
    fam = open_pool(write_pool(tmp_path / "p", (x, y, lengths))).family()
    model = HierarchicalModel(mlp((2, 8, 1)), dx=2)
    method = METHODS["amortized"].factory(model, encoder_sizes=(16,), decoder_sizes=())
    state = method.init(jax.random.PRNGKey(0))
    traces = []

    def sampler(key):
        traces.append(1)
        return sample_batch(fam, key, 4, (1, 3), 2)[0]

    res = train(method, state, sampler, jax.random.PRNGKey(1), 20, chunk_size=10, progress=False)
    assert len(traces) == 1  # one trace of the sampler for every chunk
    assert np.all(np.isfinite(np.asarray(res.history["loss"])))


@pytest.mark.parametrize(
    "chunk, match",
    [
        ((np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2, int)), "x \\(G, N, Dx\\)"),
        ((np.zeros((2, 3, 1)), np.zeros((2, 3)), np.full(2, 4)), "lengths: expected integers"),
        ((np.full((2, 3, 1), np.nan), np.zeros((2, 3)), np.full(2, 3)), "x: expected finite"),
    ],
)
def test_bad_chunks_are_named_and_leave_nothing(tmp_path, chunk, match):
    with pytest.raises(ValueError, match=match):
        write_pool(tmp_path / "p", chunk)
    assert list(tmp_path.iterdir()) == []


def test_existing_pool_is_kept_unless_overwrite_and_bad_folders_are_named(tmp_path):
    x, y, lengths = groups(5)
    path = write_pool(tmp_path / "p", (x, y, lengths))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_pool(path, (x, y, lengths))
    write_pool(path, groups(6), overwrite=True)
    assert open_pool(path).num_groups == 6
    with pytest.raises(FileNotFoundError, match="pool.json"):
        open_pool(tmp_path)
    fam = open_pool(path).family()
    with pytest.raises(ValueError, match="at most 8"):
        sample_batch(fam, jax.random.PRNGKey(0), 2, (1, 5), 5)
    assert jnp.shape(sample_batch(fam, jax.random.PRNGKey(0), 2, (1, 2), 1)[0].x_query) == (2, 1, 2)
