"""R@1, MAP@R and R-Precision agree with pytorch-metric-learning's AccuracyCalculator,
with one set of rows and with PML's own call shape (query and reference sets).

The ``train`` extra (installed by ``.ci/run``) provides torch and
pytorch-metric-learning; this test fails, rather than skips, without them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import opis_cli
from opis_cli.io import read_dataset

ROOT = Path(__file__).resolve().parent.parent


def pml_accuracy(x: np.ndarray, labels: np.ndarray, metric: str, reference=None,
                 reference_labels=None) -> dict:
    import torch
    from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    dist = CosineSimilarity() if metric == "cosine" else LpDistance(normalize_embeddings=False)
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r",
                                       "r_precision"),
                              k="max_bin_count", knn_func=CustomKNN(dist), device=torch.device("cpu"))
    def tensor(v):
        return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))

    if reference is None:
        codes = np.unique(labels, return_inverse=True)[1]
        emb, lab = tensor(x), torch.from_numpy(codes)
        return calc.get_accuracy(emb, lab, emb, lab, ref_includes_query=True)
    both = np.concatenate([np.asarray(labels), np.asarray(reference_labels)])
    codes = torch.from_numpy(np.unique(both, return_inverse=True)[1])
    return calc.get_accuracy(tensor(x), codes[:len(x)], tensor(reference), codes[len(x):],
                             ref_includes_query=False)


@pytest.mark.parametrize("model", ["weak", "strong"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_retrieval_agrees_with_pytorch_metric_learning(model, metric):
    ds = read_dataset(str(ROOT / "sample_data" / f"digits_{model}.parquet"))
    ours = opis_cli.evaluate(ds.embeddings, ds.labels, metric=metric).retrieval
    theirs = pml_accuracy(np.asarray(ds.embeddings), ds.labels, metric)
    assert ours.recall_at_k["1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours.map_at_r == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
    assert ours.r_precision == pytest.approx(theirs["r_precision"], abs=1e-6)


def test_retrieval_agrees_on_random_clusters():
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(30, 16))
    y = rng.integers(0, 30, 900)
    x = (centres[y] + 0.8 * rng.normal(size=(900, 16))).astype(np.float32)
    labels = np.array([f"c{v}" for v in y])
    ours = opis_cli.evaluate(x, labels).retrieval
    theirs = pml_accuracy(x, labels, "cosine")
    assert ours.recall_at_k["1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours.map_at_r == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
    assert ours.r_precision == pytest.approx(theirs["r_precision"], abs=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_query_and_reference_sets_agree_with_pml(metric):
    """PML's call shape: separate query and reference sets (ref_includes_query=False),
    some classes with queries only, some reference rows duplicating queries."""
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(25, 12))
    yq = rng.integers(0, 25, 400)
    yr = rng.integers(0, 22, 700)  # classes 22..24: queries without a positive, left out
    q = (centres[yq] + 0.9 * rng.normal(size=(400, 12))).astype(np.float32)
    r = (centres[yr] + 0.9 * rng.normal(size=(700, 12))).astype(np.float32)
    r[:30], yr[:30] = q[:30], yq[:30]  # the same items in both sets: pairs at distance 0
    ql, rl = np.array([f"c{v}" for v in yq]), np.array([f"c{v}" for v in yr])
    ours = opis_cli.evaluate(q, ql, r, rl, metric=metric).retrieval
    theirs = pml_accuracy(q, ql, metric, r, rl)
    assert ours.recall_at(1) == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours.map_at_r == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
    assert ours.r_precision == pytest.approx(theirs["r_precision"], abs=1e-6)


def test_torch_tensors_in_pml_call_shape_equal_numpy():
    """PML users hold tensors: CPU tensors of rows and of integer labels work as arrays
    (labels read as their numbers, not ``tensor(3)``)."""
    import torch

    rng = np.random.default_rng(5)
    centres = rng.normal(size=(8, 6))
    yq, yr = rng.integers(0, 8, 60), rng.integers(0, 8, 120)
    q = (centres[yq] + rng.normal(size=(60, 6))).astype(np.float32)
    r = (centres[yr] + rng.normal(size=(120, 6))).astype(np.float32)
    a = opis_cli.evaluate(torch.from_numpy(q), torch.from_numpy(yq), torch.from_numpy(r),
                          torch.from_numpy(yr), timestamp=False)
    b = opis_cli.evaluate(q, yq, r, yr, timestamp=False)
    assert a.to_json() == b.to_json()
    assert {c.label for c in a.classes.per_class} <= {str(v) for v in range(8)}
    t = torch.from_numpy(q)
    same = opis_cli.evaluate(t, torch.from_numpy(yq), t, torch.from_numpy(yq), timestamp=False)
    assert same.to_json() == opis_cli.evaluate(q, yq, timestamp=False).to_json()
