"""The handwritten-digits family: scikit-learn's bundled images, split by class."""

from __future__ import annotations

import jax
import numpy as np
import pytest

pytest.importorskip("sklearn")

from bayesmeta.tasks import sample_batch  # noqa: E402
from bayesmeta.tasks.digits import TRAIN_DIGITS, digits, load_digits  # noqa: E402


def test_splits_share_no_class_or_image():
    train, val, test = (load_digits(s) for s in ("train", "validation", "test"))
    assert tuple(train.class_id) == TRAIN_DIGITS == tuple(val.class_id)
    assert not set(test.class_id) & set(train.class_id)
    assert (
        train.images.shape[1:] == (train.images.shape[1], 8, 8) and train.images.dtype == np.uint8
    )
    # validation holds other images of the training digits than training does
    a = train.images.reshape(5, train.num_instances, 64)
    b = val.images.reshape(5, val.num_instances, 64)
    for c in range(5):
        rows_a = {r.tobytes() for r in a[c]}
        assert not any(r.tobytes() in rows_a for r in b[c])
    assert 0.2 < val.num_instances / (train.num_instances + val.num_instances) < 0.3


def test_episodes_are_five_way_images_in_unit_range(key):
    fam = digits(5, "test")
    assert fam.dx == 64 and fam.num_classes == 5 and fam.likelihood == "categorical"
    batch, ids = jax.jit(lambda k: sample_batch(fam, k, 16, (1, 5), 10))(key)
    assert batch.x_support.shape == (16, 25, 64) and batch.y_query.shape == (16, 10)
    assert 0.0 <= float(batch.x_support.min()) and float(batch.x_support.max()) <= 1.0
    assert set(np.unique(np.asarray(ids))) <= {1, 3, 5, 7, 9}
    with pytest.raises(ValueError, match="n_way"):
        digits(6)
    with pytest.raises(ValueError, match="split"):
        load_digits("all")
