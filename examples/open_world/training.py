"""The head, the batches, the losses and the training loop (PyTorch + pytorch-metric-learning).

The head is a small MLP on the *frozen* 256-d sentence embeddings (256 ->
256 -> 128, ReLU, L2-normalised output). The base loss is pml's
``MultiSimilarityLoss`` with its ``MultiSimilarityMiner`` (defaults); the
TCM arm adds pml's ``ThresholdConsistentMarginLoss`` (Zhang et al., ICLR
2024) with its defaults (cosine margins 0.9 for positives, 0.5 for
negatives, both weights 1) over all pairs of the batch: ``loss = base + tcm``.

Most classes have 3-6 rows, so random batches would hold almost no positive
pairs: a batch is made of whole classes instead (up to ``per_class`` rows of
each, see :func:`class_batches`), and an epoch shows every training row once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (the same for every arm and seed)."""

    hidden: int = 256
    dim: int = 128
    epochs: int = 6
    per_class: int = 4  # rows of one class that go into a batch together
    batch_size: int = 128  # rows per batch (whole class chunks, so about this many)
    lr: float = 3e-4
    weight_decay: float = 1e-4
    threads: int = 1


class Head(torch.nn.Module):
    """A 2-layer MLP from the frozen embedding to an L2-normalised ``dim``-vector."""

    def __init__(self, in_dim: int = 256, hidden: int = 256, dim: int = 128):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(in_dim, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


def seed_everything(seed: int, threads: int = 1) -> torch.Generator:
    """Seed python, numpy and torch, fix the thread count, turn on deterministic
    algorithms (TCM's pair indexing accumulates gradients with
    ``index_put_(accumulate=True)``, whose multi-threaded CPU order varies);
    return a seeded generator for the batches."""
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    return torch.Generator().manual_seed(seed)


def make_loss(tcm: bool):
    """``loss_fn(embeddings, labels) -> tensor``: Multi-Similarity, plus TCM when asked."""
    ms_loss, miner = losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()
    tcm_loss = losses.ThresholdConsistentMarginLoss() if tcm else None

    def loss_fn(emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = ms_loss(emb, y, miner(emb, y))
        return loss + tcm_loss(emb, y) if tcm_loss is not None else loss

    return loss_fn


def class_batches(y: np.ndarray, per_class: int, batch_size: int,
                  gen: torch.Generator) -> list[np.ndarray]:
    """One epoch of batches made of class chunks.

    Each class's rows are shuffled and cut into chunks of at most
    ``per_class`` rows (a last chunk of one row joins the chunk before it,
    so that every chunk holds a positive pair); the chunks are shuffled and
    packed, in order, into batches of about ``batch_size`` rows. Every row
    appears exactly once per epoch.
    """
    chunks = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rows = rows[torch.randperm(len(rows), generator=gen).numpy()]
        parts = [rows[i:i + per_class] for i in range(0, len(rows), per_class)]
        if len(parts) > 1 and len(parts[-1]) == 1:
            parts[-2:] = [np.concatenate(parts[-2:])]
        chunks += parts
    batches, cur, n = [], [], 0
    for i in torch.randperm(len(chunks), generator=gen).tolist():
        cur.append(chunks[i])
        n += len(chunks[i])
        if n >= batch_size:
            batches.append(np.concatenate(cur))
            cur, n = [], 0
    if cur:
        batches.append(np.concatenate(cur))
    return batches


def train(x: np.ndarray, y: np.ndarray, tcm: bool, seed: int,
          cfg: TrainConfig = TrainConfig()) -> Head:
    """Train one head on the training rows ``x`` (float32) with labels ``y``."""
    gen = seed_everything(seed, cfg.threads)
    _, y_idx = np.unique(y, return_inverse=True)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(y_idx)
    model = Head(x.shape[1], cfg.hidden, cfg.dim)
    loss_fn = make_loss(tcm)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    for _ in range(cfg.epochs):
        for idx in class_batches(y_idx, cfg.per_class, cfg.batch_size, gen):
            i = torch.from_numpy(idx)
            loss = loss_fn(model(xt[i]), yt[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def embed(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """The head's output for ``x`` as a float32 numpy array (eval mode)."""
    model.eval()
    return model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
