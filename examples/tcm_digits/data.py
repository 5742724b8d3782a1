"""scikit-learn's handwritten digits and an open-world class split (numpy only).

Open-world means the test classes are never seen in training: a model is
trained on the images of ``train_classes`` and evaluated on the images of
``test_classes``, two disjoint sets of digits. A held-out fraction of the
training classes' images is the validation set (seen classes, unseen images),
which the per-epoch hook scores; the test set is never looked at during
training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Digits the models are trained on, and the digits they are tested on.
#: Five and five: OPIS is a variance across classes, so the test side needs
#: as many classes as we can spare, and the training side needs enough
#: classes for the embedding to learn features that carry over.
TRAIN_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4)
TEST_CLASSES: tuple[int, ...] = (5, 6, 7, 8, 9)
VAL_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class Split:
    """An open-world split of labelled images.

    Attributes
    ----------
    x_train, x_val, x_test : numpy.ndarray, shape (n, 64), float32
        Pixel intensities scaled to [0, 1].
    y_train, y_val, y_test : numpy.ndarray, shape (n,), int64
        The digit of each image.
    train_classes, test_classes : tuple of int
        Disjoint class sets; validation images come from the training classes.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_classes: tuple[int, ...]
    test_classes: tuple[int, ...]


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8x8 digit images as ``(x float32 (1797, 64) in [0, 1], y int64)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def open_world_split(
    x: np.ndarray,
    y: np.ndarray,
    *,
    train_classes: Sequence[int] = TRAIN_CLASSES,
    test_classes: Sequence[int] = TEST_CLASSES,
    val_fraction: float = VAL_FRACTION,
    seed: int = SPLIT_SEED,
) -> Split:
    """Split images by class: train/validation on ``train_classes``, test on ``test_classes``.

    The validation set is a per-class random ``val_fraction`` of the training
    classes' images (at least one image per class), drawn with ``seed``.
    Images of classes in neither set are dropped.

    Raises
    ------
    ValueError
        If the class sets overlap, either is empty, a class has no images, or
        ``val_fraction`` is not in [0, 1).
    """
    train_classes, test_classes = tuple(train_classes), tuple(test_classes)
    overlap = sorted(set(train_classes) & set(test_classes))
    if overlap:
        raise ValueError(f"train and test classes overlap: {overlap}")
    if not train_classes or not test_classes:
        raise ValueError("need at least one training class and one test class")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    y = np.asarray(y)
    missing = [c for c in train_classes + test_classes if not np.any(y == c)]
    if missing:
        raise ValueError(f"no images of class(es) {missing}")
    rng = np.random.default_rng(seed)
    train_rows, val_rows = [], []
    for c in train_classes:
        rows = rng.permutation(np.flatnonzero(y == c))
        n_val = max(1, int(round(val_fraction * len(rows)))) if val_fraction > 0 else 0
        val_rows.append(rows[:n_val])
        train_rows.append(rows[n_val:])
    train = np.sort(np.concatenate(train_rows))
    val = np.sort(np.concatenate(val_rows))
    test = np.flatnonzero(np.isin(y, test_classes))
    return Split(
        x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val],
        x_test=x[test], y_test=y[test],
        train_classes=train_classes, test_classes=test_classes,
    )


def label_strings(y: np.ndarray) -> list[str]:
    """Digits as the label strings written to Parquet: ``digit_<d>``."""
    return [f"digit_{int(d)}" for d in y]
