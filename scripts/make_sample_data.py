"""Build the sample datasets in ``sample_data/`` from scikit-learn's digits.

Two real embedding models of the same 1797 handwritten digits (8x8 images,
10 classes, bundled with scikit-learn, so nothing is downloaded):

- ``weak``: PCA of the raw pixels to 8 dimensions;
- ``strong``: the 32-unit penultimate hidden layer (ReLU) of an
  ``MLPClassifier(hidden_layer_sizes=(64, 32))`` trained on half of the
  images (stratified split).

For each model it writes ``digits_<model>.parquet`` (columns ``embedding``
fixed_size_list<float32>, ``label`` "digit_<d>", ``group`` a fake customer
"customer_<i mod 3>", ``is_query`` and ``is_gallery`` all true) and
``digits_<model>.npy`` (float32), plus one shared ``digits_labels.txt``.

It prints each model's R@1 (cosine nearest neighbour, self excluded) and a
quick OPIS (SPEC.md defaults: cosine, FAR range 0.01:0.1, 101 thresholds,
tpr-tnr F1), computed here with plain numpy so the script needs nothing from
opis_cli.

Usage (from the repository root)::

    python scripts/make_sample_data.py [--out sample_data]

scikit-learn is a dev/test dependency only; opis_cli never imports it.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

SEED = 0
WEAK_DIM = 8  # few enough dimensions that classes visibly overlap
N_GROUPS = 3


def weak_embeddings(x: np.ndarray) -> np.ndarray:
    """PCA of the raw pixels to WEAK_DIM dimensions."""
    return PCA(n_components=WEAK_DIM, random_state=SEED).fit_transform(x)


def strong_embeddings(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Penultimate hidden layer of an MLP trained on a stratified half of the data."""
    x_train, _, y_train, _ = train_test_split(x, y, train_size=0.5, stratify=y, random_state=SEED)
    mlp = MLPClassifier(
        hidden_layer_sizes=(64, 32), alpha=1e-3, max_iter=500, random_state=SEED
    ).fit(x_train, y_train)
    h = x
    # Forward through every layer but the output one (MLPClassifier uses ReLU).
    for w, b in zip(mlp.coefs_[:-1], mlp.intercepts_[:-1], strict=True):
        h = np.maximum(h @ w + b, 0.0)
    return h


def cosine_distances(emb: np.ndarray) -> np.ndarray:
    e = emb.astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return 1.0 - e @ e.T


def recall_at_1(dist: np.ndarray, labels: np.ndarray) -> float:
    d = dist.copy()
    np.fill_diagonal(d, np.inf)
    return float(np.mean(labels[np.argmin(d, axis=1)] == labels))


def quick_opis(dist: np.ndarray, labels: np.ndarray) -> float:
    """OPIS with SPEC.md defaults, straight from the pairwise distance matrix."""
    n = len(labels)
    off = ~np.eye(n, dtype=bool)
    same = labels[:, None] == labels[None, :]
    neg = np.sort(dist[off & ~same])
    m = len(neg)
    t_lo, t_hi = (neg[int(np.ceil(f * m)) - 1] for f in (0.01, 0.1))
    grid = np.linspace(t_lo, t_hi, 101)
    utilities = []
    for c in np.unique(labels):
        rows = labels == c
        pos = np.sort(dist[rows][(same & off)[rows]])
        negc = np.sort(dist[rows][(~same)[rows]])
        tpr = np.searchsorted(pos, grid, side="right") / len(pos)
        tnr = 1.0 - np.searchsorted(negc, grid, side="right") / len(negc)
        den = tpr + tnr
        utilities.append(np.where(den > 0, 2 * tpr * tnr / np.where(den > 0, den, 1), 0.0))
    u = np.array(utilities)
    sq = (u - u.mean(axis=0)) ** 2
    return float(np.mean(np.trapezoid(sq, grid, axis=1) / (t_hi - t_lo)))


def write_model(out: str, name: str, emb: np.ndarray, labels: list[str]) -> None:
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    n, d = emb.shape
    table = pa.table(
        {
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), d),
            "label": pa.array(labels, type=pa.string()),
            "group": pa.array([f"customer_{i % N_GROUPS}" for i in range(n)], type=pa.string()),
            "is_query": pa.array(np.ones(n, dtype=bool)),
            "is_gallery": pa.array(np.ones(n, dtype=bool)),
        }
    )
    pq.write_table(table, os.path.join(out, f"digits_{name}.parquet"), compression="zstd")
    np.save(os.path.join(out, f"digits_{name}.npy"), emb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="sample_data", help="output folder")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    digits = load_digits()
    x = digits.data / 16.0
    y = digits.target
    labels = [f"digit_{d}" for d in y]
    with open(os.path.join(args.out, "digits_labels.txt"), "w", encoding="utf-8") as fh:
        fh.write("".join(f"{label}\n" for label in labels))

    label_array = np.array(labels)
    for name, emb in (("weak", weak_embeddings(x)), ("strong", strong_embeddings(x, y))):
        write_model(args.out, name, emb, labels)
        dist = cosine_distances(emb.astype(np.float32))
        print(
            f"{name:6s}  n={emb.shape[0]}  dim={emb.shape[1]:2d}  "
            f"R@1={recall_at_1(dist, label_array):.4f}  OPIS={quick_opis(dist, label_array):.5f}"
        )


if __name__ == "__main__":
    main()
