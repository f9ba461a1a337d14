"""Few-shot classification of handwritten digits: a second image family that is not glyphs.

The images are scikit-learn's copy of the UCI optical-digits test set (1,797 greyscale 8×8
images of the digits 0–9 written by 43 people, ``sklearn.datasets.load_digits``), which ships
inside the scikit-learn package: nothing is downloaded. Grey levels 0–16 are scaled to [0, 1].

Classes are split, as glyph scripts are: meta-training sees the digits in ``TRAIN_DIGITS`` and
the test tasks are drawn from the other five, which no training step saw. The validation
stream uses the training digits' held-out instances (:data:`VALIDATION_FRACTION` of each
class's images, never drawn in training): with ten classes there are not enough for a third
disjoint set of five, so validation measures generalisation to new writers of known classes
and only the test stream measures it to new classes. Every class keeps the same number of
instances (the smallest class's count), so an episode's draws are uniform.
"""

from __future__ import annotations

import numpy as np

from bayesmeta.tasks.base import TaskFamily
from bayesmeta.tasks.glyphs import GlyphData, episode_sampler

#: Digits that meta-training and validation draw from; the test tasks use the others.
TRAIN_DIGITS = (0, 2, 4, 6, 8)
#: Fraction of each training digit's images kept for the validation stream.
VALIDATION_FRACTION = 0.25
SPLITS = ("train", "validation", "test")


def load_digits(split: str = "train", seed: int = 0) -> GlyphData:
    """The digits of one split as :class:`~bayesmeta.tasks.glyphs.GlyphData`.

    Parameters
    ----------
    split : {"train", "validation", "test"}
    seed : int
        Shuffles each class's instances before the train / validation cut.

    Raises
    ------
    ImportError
        When scikit-learn (the ``data`` extra) is not installed.
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as err:  # pragma: no cover - the data extra installs it
        raise ImportError(
            "the digits family reads scikit-learn's bundled copy of the UCI digits: "
            "pip install 'bayesmeta[data]' (or scikit-learn)"
        ) from err
    d = sk_load_digits()
    images, target = np.asarray(d.images), np.asarray(d.target)
    per_class = int(np.bincount(target).min())
    rng = np.random.default_rng(seed)
    digits = TRAIN_DIGITS if split != "test" else tuple(sorted(set(range(10)) - set(TRAIN_DIGITS)))
    cut = int(round(per_class * (1 - VALIDATION_FRACTION)))
    stacks = []
    for digit in digits:
        idx = rng.permutation(np.flatnonzero(target == digit))[:per_class]
        if split == "train":
            idx = idx[:cut]
        elif split == "validation":
            idx = idx[cut:]
        stacks.append(images[idx])
    grey = np.round(np.stack(stacks) * (255.0 / 16.0)).astype(np.uint8)  # (C, I, 8, 8)
    return GlyphData(
        images=grey,
        script=np.zeros(len(digits), np.int32),
        codepoint=np.array([ord("0") + c for c in digits], np.int32),
        class_id=np.array(digits, np.int32),
        script_names=("digits",),
        test_scripts=(),
        split=split,
    )


def digits(n_way: int = 5, split: str = "train", seed: int = 0) -> TaskFamily:
    """N-way few-shot classification of handwritten digits from one split.

    Episodes are drawn as the glyphs' are (:func:`~bayesmeta.tasks.glyphs.episode_sampler`:
    ``n_way`` distinct classes in random label order, ``k`` shots each, shot-major support
    sets padded to ``k_max`` with masks); ``dx = 64`` (flattened 8×8 images in [0, 1]).
    """
    if isinstance(n_way, bool) or not isinstance(n_way, int | np.integer) or not 2 <= n_way <= 5:
        raise ValueError(
            f"n_way: expected an integer in [2, 5] (five digits a split), got {n_way!r}"
        )
    data = load_digits(split, seed)
    sample = episode_sampler(data, int(n_way))
    ids = data.class_id

    def sample_params(key, n):
        import jax

        pick = jax.lax.top_k(jax.random.uniform(key, (n, ids.shape[0])), int(n_way))[1]
        return jax.numpy.asarray(ids)[pick]

    return TaskFamily(
        name=f"digits{n_way}-{split}",
        dx=64,
        dy=1,
        sample_params=sample_params,
        mean_fn=None,
        noise_fn=None,
        x_range=(0.0, 1.0),
        likelihood="categorical",
        num_classes=int(n_way),
        sample_episode=sample,
    )


__all__ = ["SPLITS", "TRAIN_DIGITS", "VALIDATION_FRACTION", "digits", "load_digits"]
