"""The handwritten-digits family: scikit-learn's bundled images, split by class."""

from __future__ import annotations

import jax
import numpy as np
import pytest

pytest.importorskip("sklearn")

from bayesmeta.tasks import sample_batch  # noqa: E402
from bayesmeta.tasks.digits import SPLIT_DIGITS, digits, load_digits  # noqa: E402


def test_splits_share_no_class():
    train, val, test = (load_digits(s) for s in ("train", "validation", "test"))
    assert tuple(train.class_id[:4]) == SPLIT_DIGITS["train"] and train.num_classes == 32
    assert set(train.class_id % 10) == set(SPLIT_DIGITS["train"])
    # the variants are transformed copies: digit 0 rotated twice is its 180° turn
    np.testing.assert_array_equal(train.images[8], np.rot90(train.images[0], 2, axes=(1, 2)))
    for split, data in (("validation", val), ("test", test)):
        assert tuple(data.class_id) == SPLIT_DIGITS[split]
        assert data.images.shape[2:] == (8, 8) and data.images.dtype == np.uint8
        assert data.num_instances >= 170  # the smallest digit's count in the UCI test set
    assert len({*(train.class_id % 10), *val.class_id, *test.class_id}) == 10


def test_episodes_are_three_way_images_in_unit_range(key):
    fam = digits(3, "test")
    assert fam.dx == 64 and fam.num_classes == 3 and fam.likelihood == "categorical"
    batch, ids = jax.jit(lambda k: sample_batch(fam, k, 16, (1, 5), 9))(key)
    assert batch.x_support.shape == (16, 15, 64) and batch.y_query.shape == (16, 9)
    assert 0.0 <= float(batch.x_support.min()) and float(batch.x_support.max()) <= 1.0
    assert set(np.unique(np.asarray(ids))) == {7, 8, 9}
    with pytest.raises(ValueError, match="n_way"):
        digits(4)
    with pytest.raises(ValueError, match="split"):
        load_digits("all")
