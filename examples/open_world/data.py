"""The many-class sample and its open-world class split (numpy and opis_cli only).

The data are ``sample_data/wordnet_hyponyms.parquet``: 8,047 definitions of
WordNet concepts in 1,300 classes (the parent concept), embedded by a real
pretrained sentence-embedding model (WordLlama ``l2_supercat``, 256
dimensions, float16); see ``sample_data/README.md``. The split holds whole
classes apart, with the fold assignment of ``opis calibrate`` (SPEC 12): the
classes of one fold are never seen in training, the others are trained on.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opis_cli.transfer import fold_of

#: The shipped many-class sample (relative to the repository root).
WORDNET = Path(__file__).resolve().parents[2] / "sample_data" / "wordnet_hyponyms.parquet"


@dataclass(frozen=True)
class Split:
    """Training and unseen test rows: float32 ``(N, 256)`` embeddings and string labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def train_classes(self) -> int:
        return len(set(self.y_train.tolist()))

    @property
    def test_classes(self) -> int:
        return len(set(self.y_test.tolist()))


def load_wordnet(path: str | os.PathLike = WORDNET) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (float32, as stored: L2-normalised float16) and labels of the sample."""
    from opis_cli.io import read_dataset

    ds = read_dataset(path)
    return np.asarray(ds.embeddings, dtype=np.float32), np.asarray(ds.labels).astype(str)


def open_world_split(x: np.ndarray, y: np.ndarray, *, folds: int = 5, test_fold: int = 0,
                     seed: int = 0, max_train_classes: int | None = None,
                     max_test_classes: int | None = None) -> Split:
    """Class-disjoint split: the classes of fold ``test_fold`` (SPEC 12's
    ``fold_of(labels, folds, seed)``) are the unseen test classes, the others
    the training classes.

    ``max_train_classes`` / ``max_test_classes`` keep only the first classes
    of each side in SPEC 12's seeded order (for a quick run); rows keep their
    file order.
    """
    if folds < 2 or not 0 <= test_fold < folds:
        raise ValueError(f"need folds >= 2 and 0 <= test_fold < folds, got {folds}, {test_fold}")
    fold = fold_of(y.tolist(), folds, seed)
    ranked = _seeded_order(list(fold), seed)
    test_names = [n for n in ranked if fold[n] == test_fold][:max_test_classes]
    train_names = [n for n in ranked if fold[n] != test_fold][:max_train_classes]
    tr, te = np.isin(y, train_names), np.isin(y, test_names)
    return Split(x[tr], y[tr], x[te], y[te])


def _seeded_order(names: list[str], seed: int) -> list[str]:
    """SPEC 12's class order: by ``(crc32(utf8(f"{seed}:{name}")), name)``."""
    return sorted(names, key=lambda n: (zlib.crc32(f"{seed}:{n}".encode("utf-8")), n))
