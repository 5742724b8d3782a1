"""R@1 and MAP@R agree with pytorch-metric-learning's AccuracyCalculator.

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


def pml_accuracy(x: np.ndarray, labels: np.ndarray, metric: str) -> dict:
    import torch
    from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    dist = CosineSimilarity() if metric == "cosine" else LpDistance(normalize_embeddings=False)
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                              k="max_bin_count", knn_func=CustomKNN(dist), device=torch.device("cpu"))
    codes = np.unique(labels, return_inverse=True)[1]
    emb = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    lab = torch.from_numpy(codes)
    return calc.get_accuracy(emb, lab, emb, lab, ref_includes_query=True)


@pytest.mark.parametrize("model", ["weak", "strong"])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_retrieval_agrees_with_pytorch_metric_learning(model, metric):
    ds = read_dataset(str(ROOT / "sample_data" / f"digits_{model}.parquet"))
    ours = opis_cli.evaluate(ds.embeddings, ds.labels, metric=metric).retrieval
    theirs = pml_accuracy(np.asarray(ds.embeddings), ds.labels, metric)
    assert ours.recall_at_k["1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours.map_at_r == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)


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
