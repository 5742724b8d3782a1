"""Seeded random inputs shared by the reference tests (not a test module).

Each generator returns ``(rows, labels)``: rows of float32 (unless asked
otherwise) and string labels, deterministic in ``seed``.
"""

from __future__ import annotations

import numpy as np


def gaussian(seed, *, n=None, dim=None, n_classes=None, singletons=0, dtype=np.float32):
    """Gaussian clusters, one spread per class; returns rows of ``dtype`` and string labels."""
    rng = np.random.default_rng(seed)
    n = int(n or rng.integers(30, 161))
    dim = int(dim or rng.integers(2, 17))
    C = int(n_classes or rng.integers(3, 10))
    centers = rng.normal(size=(C, dim)) * 1.5
    spread = rng.uniform(0.3, 2.0, size=C)
    y = np.concatenate([np.arange(C), rng.integers(0, C, size=n - C - singletons)])
    x = centers[y] + rng.normal(size=(len(y), dim)) * spread[y, None]
    labels = [f"c{v}" for v in y]
    # singleton classes: one row each, excluded from every average
    for s in range(singletons):
        x = np.vstack([x, rng.normal(size=(1, dim)) * 2])
        labels.append(f"single{s}")
    order = rng.permutation(len(labels))
    return x[order].astype(dtype), [labels[i] for i in order]


def integer_rows(seed, *, n=None, dim=None, n_classes=None, lo=-2, hi=3, duplicates=True):
    """Small-integer coordinates: exact distances, many ties, duplicate rows."""
    rng = np.random.default_rng(seed)
    n = int(n or rng.integers(30, 121))
    dim = int(dim or rng.integers(2, 5))
    C = int(n_classes or rng.integers(3, 7))
    y = np.concatenate([np.arange(C), rng.integers(0, C, size=n - C)])
    centers = rng.integers(-3, 4, size=(C, dim))
    x = centers[y] + rng.integers(lo, hi, size=(n, dim))
    if duplicates:  # a few exact copies of other rows (same or other class)
        k = max(2, n // 10)
        src, dst = rng.choice(n, size=k, replace=False), rng.choice(n, size=k, replace=False)
        x[dst] = x[src]
    # cosine needs non-zero rows
    x[np.all(x == 0, axis=1), 0] = 1
    order = rng.permutation(n)
    return x[order].astype(np.float32), [f"k{v}" for v in y[order]]


def sparse_signs(seed, *, n=None, dim=16, n_classes=None):
    """Rows with exactly 4 entries of +-1: unit norm 2, cosines multiples of 1/4 (exact)."""
    rng = np.random.default_rng(seed)
    n = int(n or rng.integers(40, 121))
    C = int(n_classes or rng.integers(3, 7))
    protos = np.zeros((C, dim))
    for c in range(C):
        protos[c, rng.choice(dim, 4, replace=False)] = rng.choice([-1, 1], 4)
    y = np.concatenate([np.arange(C), rng.integers(0, C, size=n - C)])
    x = protos[y].copy()
    for i in range(n):  # move 0-2 of the 4 non-zero entries elsewhere
        for _ in range(rng.integers(0, 3)):
            nz, z = np.flatnonzero(x[i]), np.flatnonzero(x[i] == 0)
            j, k = rng.choice(nz), rng.choice(z)
            x[i, k], x[i, j] = rng.choice([-1, 1]), 0
    return x.astype(np.float32), [f"s{v}" for v in y]


def random_counts(seed, *, n_classes=None, n_thresholds=None):
    """Per-class pair counts as an engine would give them, for the pure metric stages.

    Returns ``(labels, P, M, TP, FP, thresholds)``: ``P``/``M`` (C,) int64 with
    every class evaluated (both > 0), ``TP``/``FP`` (C, K) int64 non-decreasing
    along the grid and bounded by ``P``/``M``, ``thresholds`` (K,) increasing.
    """
    rng = np.random.default_rng(seed)
    C = int(n_classes or rng.integers(2, 12))
    K = int(n_thresholds or rng.integers(2, 30))
    P = rng.integers(1, 30, size=C)
    M = rng.integers(1, 60, size=C)
    TP = np.sort(rng.integers(0, P[:, None] + 1, size=(C, K)), axis=1)
    FP = np.sort(rng.integers(0, M[:, None] + 1, size=(C, K)), axis=1)
    thresholds = np.cumsum(rng.uniform(0.01, 1.0, size=K))
    labels = [f"c{i}" for i in rng.permutation(C)]
    return labels, P.astype(np.int64), M.astype(np.int64), TP.astype(np.int64), \
        FP.astype(np.int64), thresholds
