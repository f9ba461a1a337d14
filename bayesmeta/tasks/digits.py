"""Few-shot classification of handwritten digits: a second image family that is not glyphs.

The images are scikit-learn's copy of the UCI optical-digits test set (1,797 greyscale 8×8
images of the digits 0–9 written by 43 people, ``sklearn.datasets.load_digits``), which ships
inside the scikit-learn package: nothing is downloaded. Grey levels 0–16 are scaled to [0, 1].

Classes are split three ways, as the glyphs' are (:data:`SPLIT_DIGITS`): meta-training sees
four digits, the validation stream (recipe choices, fitted temperatures) three others and the
test stream the last three, so no two streams share a class and the tasks are 3-way. (A split
of five digits each way leaves every training task the same five classes relabelled, and the
embedding learns those five instead of how to tell digits apart.) Four training classes are
still few, so the training split adds, as Omniglot's training does with rotated characters,
each digit's three rotations by 90° and the four mirror images of the rotations as classes of
their own (32 training classes; :data:`TRAIN_VARIANTS`); validation and test images are never
transformed. Every class keeps the same number of instances (the smallest class's count), so
an episode's draws are uniform.
"""

from __future__ import annotations

import numpy as np

from bayesmeta.tasks.base import TaskFamily  # noqa: F401  (the return type)
from bayesmeta.tasks.glyphs import GlyphData, episode_sampler, image_class_family

#: The digits of each split (disjoint).
SPLIT_DIGITS: dict[str, tuple[int, ...]] = {
    "train": (0, 1, 2, 3),
    "validation": (4, 5, 6),
    "test": (7, 8, 9),
}
SPLITS = tuple(SPLIT_DIGITS)
#: Rotations (quarter turns) and mirror images of each training digit that are new classes.
TRAIN_VARIANTS: tuple[tuple[int, bool], ...] = tuple((r, m) for m in (False, True)
                                                     for r in range(4))  # fmt: skip


def load_digits(split: str = "train", seed: int = 0) -> GlyphData:
    """The digits of one split as :class:`~bayesmeta.tasks.glyphs.GlyphData`.

    Parameters
    ----------
    split : {"train", "validation", "test"}
    seed : int
        Which images a class keeps when it has more than the smallest class.

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
    stacks = [images[np.sort(rng.permutation(np.flatnonzero(target == digit))[:per_class])]
              for digit in SPLIT_DIGITS[split]]  # fmt: skip
    grey = np.round(np.stack(stacks) * (255.0 / 16.0)).astype(np.uint8)  # (C, I, 8, 8)
    ids = np.array(SPLIT_DIGITS[split], np.int32)
    if split == "train":
        variants = [np.rot90(grey[..., ::-1] if mirror else grey, r, axes=(2, 3))
                    for r, mirror in TRAIN_VARIANTS]  # fmt: skip
        grey = np.ascontiguousarray(np.concatenate(variants, 0))
        ids = np.concatenate([ids + 10 * v for v in range(len(TRAIN_VARIANTS))]).astype(np.int32)
    return GlyphData(
        images=grey,
        script=np.zeros(len(ids), np.int32),
        codepoint=ord("0") + ids % 10,
        class_id=ids,
        script_names=("digits",),
        test_scripts=(),
        split=split,
    )


def digits(n_way: int = 3, split: str = "train", seed: int = 0) -> TaskFamily:
    """N-way few-shot classification of handwritten digits from one split.

    Episodes are drawn as the glyphs' are (:func:`~bayesmeta.tasks.glyphs.episode_sampler`:
    ``n_way`` distinct classes in random label order, ``k`` shots each, shot-major support
    sets padded to ``k_max`` with masks); ``dx = 64`` (flattened 8×8 images in [0, 1]).
    """
    most = min(len(d) for d in SPLIT_DIGITS.values())
    if isinstance(n_way, bool) or not isinstance(n_way, int | np.integer) or not 2 <= n_way <= most:
        raise ValueError(f"n_way: expected an integer in [2, {most}] (digits a split), got {n_way}")
    data = load_digits(split, seed)
    sample = episode_sampler(data, int(n_way))
    return image_class_family(f"digits{n_way}-{split}", 8, int(n_way), sample,
                              lambda: data.class_id)  # fmt: skip


__all__ = ["SPLITS", "SPLIT_DIGITS", "TRAIN_VARIANTS", "digits", "load_digits"]
