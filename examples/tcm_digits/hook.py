"""Log OPIS next to R@1 once per epoch, from any plain PyTorch training loop.

``opis_cli`` itself never imports torch: the hook embeds the validation set
with the model, hands numpy arrays to ``opis_cli.evaluate`` and logs the
numbers. Copy it into your own loop::

    for epoch in range(epochs):
        train_one_epoch(model, loader, loss_fn, optimizer)
        log_opis(model, val_x, val_labels, epoch)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

import opis_cli


@torch.no_grad()
def log_opis(
    model: torch.nn.Module,
    val_x: torch.Tensor,
    val_labels: Sequence,
    epoch: int,
    log: Callable[[str], None] = print,
) -> opis_cli.EvaluationResult:
    """Embed a validation set, measure OPIS and R@1, log one line, return the result.

    Parameters
    ----------
    model : torch.nn.Module
        Maps a batch of inputs to (N, D) embeddings. Left in the train/eval
        mode it was in.
    val_x : torch.Tensor
        The validation inputs, on the model's device (small enough for one
        forward pass; batch it for larger sets).
    val_labels : sequence of N labels
        Any hashable values; compared as strings.
    epoch : int
        Only used in the log line.
    log : callable
        Where the line goes (``print``, ``logger.info``, a list's ``append``...).

    Returns
    -------
    opis_cli.EvaluationResult
        ``result.opis``, ``result.epsilon_opis``,
        ``result.retrieval.recall_at_k["1"]`` and everything else, for your
        own history, early stopping or experiment tracker.
    """
    was_training = model.training
    model.eval()
    embeddings = model(val_x).float().cpu().numpy()
    model.train(was_training)
    result = opis_cli.evaluate(embeddings, val_labels, timestamp=False)
    log(f"epoch {epoch:3d}  R@1 {result.retrieval.recall_at_k['1']:.4f}  "
        f"OPIS {result.opis:.5f}  10%-OPIS {result.epsilon_opis:.5f}")
    return result
