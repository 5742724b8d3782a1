"""The embedding network, the losses and the training loop (PyTorch + pytorch-metric-learning).

Base losses come from pytorch-metric-learning: ``ArcFaceLoss`` (a proxy /
classification loss with an additive angular margin) and
``MultiSimilarityLoss`` with its ``MultiSimilarityMiner`` (a pair loss). The
TCM regulariser is pml's ``ThresholdConsistentMarginLoss`` with its defaults
(positive cosine margin 0.9, negative 0.5, both weights 1) over all pairs of
each batch, added to the base loss: ``loss = base + tcm``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners

from .data import Split, label_strings
from .hook import log_opis

BASE_LOSSES = ("arcface", "ms")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (the same for every loss and seed)."""

    dim: int = 32
    hidden: int = 128
    epochs: int = 20  # validation R@1 and OPIS plateau by then
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    shift: int = 1  # random translation of the 8x8 image by up to this many pixels
    arcface_margin: float = 28.6  # degrees, pml's default
    arcface_scale: float = 64.0
    threads: int = 2


class EmbeddingNet(torch.nn.Module):
    """A small MLP from the 64 pixels to an L2-normalised ``dim``-vector."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


def seed_everything(seed: int, threads: int = 2) -> torch.Generator:
    """Seed python, numpy and torch; fix the thread count; return a torch generator.

    Also turns on ``torch.use_deterministic_algorithms`` (process-wide): the
    backward pass of TCM's pair indexing accumulates gradients with
    ``index_put_(accumulate=True)``, whose multi-threaded CPU version adds in
    a scheduling-dependent order, so without it two runs with the same seed
    drift apart.
    """
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    return torch.Generator().manual_seed(seed)


def make_loss(base: str, tcm: bool, num_classes: int, cfg: TrainConfig):
    """Return ``(loss_fn(embeddings, labels) -> tensor, extra parameters to optimise)``."""
    if base == "arcface":
        base_loss = losses.ArcFaceLoss(num_classes=num_classes, embedding_size=cfg.dim,
                                       margin=cfg.arcface_margin, scale=cfg.arcface_scale)
        extra = list(base_loss.parameters())

        def base_fn(emb, y):
            return base_loss(emb, y)
    elif base == "ms":
        ms_loss, miner = losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()
        extra = []

        def base_fn(emb, y):
            return ms_loss(emb, y, miner(emb, y))
    else:
        raise ValueError(f"unknown base loss {base!r}; expected one of {BASE_LOSSES}")
    if not tcm:
        return base_fn, extra
    tcm_loss = losses.ThresholdConsistentMarginLoss()

    def with_tcm(emb, y):
        return base_fn(emb, y) + tcm_loss(emb, y)

    return with_tcm, extra


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each 8x8 image by a random (dy, dx) in [-max_shift, max_shift], zero fill."""
    if max_shift <= 0:
        return x
    n = x.shape[0]
    img = F.pad(x.view(n, 1, 8, 8), (max_shift,) * 4)
    off = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    rows = off[:, 0, None] + torch.arange(8)  # (n, 8)
    cols = off[:, 1, None] + torch.arange(8)
    out = img[torch.arange(n)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    return out.reshape(n, 64)


def train(
    split: Split,
    base: str,
    tcm: bool,
    seed: int,
    cfg: TrainConfig = TrainConfig(),
    log: Callable[[str], None] | None = None,
) -> tuple[EmbeddingNet, list[dict]]:
    """Train one model on ``split``'s training classes.

    Every epoch the hook (:func:`~tcm_digits.hook.log_opis`) scores the
    validation images (seen classes, unseen images); their R@1 / OPIS /
    10%-OPIS are returned as the history, one dict per epoch, and logged with
    ``log`` when given. Nothing here looks at the test classes.
    """
    gen = seed_everything(seed, cfg.threads)
    classes = sorted(set(int(c) for c in split.y_train))
    index = {c: i for i, c in enumerate(classes)}
    x = torch.from_numpy(split.x_train)
    y = torch.tensor([index[int(c)] for c in split.y_train])
    val_x = torch.from_numpy(split.x_val)
    val_labels = label_strings(split.y_val)
    model = EmbeddingNet(cfg.dim, cfg.hidden)
    loss_fn, extra = make_loss(base, tcm, len(classes), cfg)
    opt = torch.optim.Adam(list(model.parameters()) + extra, lr=cfg.lr,
                           weight_decay=cfg.weight_decay)
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2:
                continue
            loss = loss_fn(model(_shift(x[idx], cfg.shift, gen)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        result = log_opis(model, val_x, val_labels, epoch, log=log or (lambda _line: None))
        history.append({"epoch": epoch, "recall_at_1": result.retrieval.recall_at_k["1"],
                        "opis": result.opis, "epsilon_opis": result.epsilon_opis})
    model.eval()
    return model, history


@torch.no_grad()
def embed(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Embeddings of ``x`` as a float32 numpy array (eval mode, no augmentation)."""
    model.eval()
    return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()
