"""Measure OPIS, 10%-OPIS and R@1 of a validation set from any PyTorch training loop.

The model embeds the validation set (in eval mode, without gradients, in
batches), :func:`opis_cli.evaluate` measures the embeddings, and the
numbers go wherever you log. torch is imported inside the functions, so this
module imports without it; the model's own framework is all it needs
(``pip install 'opis-cli[train]'`` or any torch)::

    from opis_cli.integrations.training import log_opis

    for epoch in range(epochs):
        train_one_epoch(model, loader, loss_fn, optimizer)
        result = log_opis(model, val_x, val_labels, epoch)   # one line, and the result

The PyTorch Lightning callback (:mod:`opis_cli.integrations.lightning`) uses
the same functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..results import EvaluationResult

#: The numbers a training loop logs, by tracker-safe name (see
#: :func:`opis_cli.integrations.mlflow.evaluation_metrics` for all of them).
EPOCH_METRICS = ("opis", "epsilon_opis", "recall_at_1")

#: Rows per forward pass when ``batch_size`` is not given.
BATCH_SIZE = 1024


def _device(model) -> Any:
    device = getattr(model, "device", None)
    if device is not None:
        return device
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return None


def _batches(inputs, labels, batch_size: int):
    """``(x, y or None)`` per batch: a tensor is cut in slices, an iterable is read as it is
    (a batch is a tensor, or a tuple/list whose first two items are inputs and labels)."""
    import torch

    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(inputs)
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size], None
        return
    for batch in inputs:
        if isinstance(batch, (tuple, list)):
            if labels is None and len(batch) < 2:
                raise ValueError("a batch of one item has no labels: pass labels=")
            yield batch[0], (batch[1] if labels is None else None)
        else:
            if labels is None:
                raise ValueError("batches of bare tensors carry no labels: pass labels=")
            yield batch, None


def embed_validation_set(
    model,
    inputs,
    labels: Sequence | None = None,
    *,
    embed: Callable[[Any, Any], Any] | None = None,
    batch_size: int = BATCH_SIZE,
) -> tuple[np.ndarray, list]:
    """Embed a validation set with ``model``: (N, D) float32 embeddings and N labels.

    Parameters
    ----------
    model : torch.nn.Module
        Set to eval mode while embedding, then back to the mode it was in.
    inputs : tensor, array, or iterable of batches
        A tensor (cut into ``batch_size`` rows) or batches such as a
        ``DataLoader`` yields: tensors, or ``(x, y, ...)`` tuples whose ``y``
        are the labels when ``labels`` is not given. Moved to the model's
        device.
    labels : sequence, optional
        N labels (any hashable; a tensor is fine); required unless the
        batches carry them.
    embed : callable ``embed(model, x) -> (B, D) tensor``, optional
        How to embed one batch (default ``model(x)``), e.g. a projection
        head, or ``lambda m, x: m.encode(x)``.
    batch_size : int
        Rows per forward pass for a tensor input.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if labels is None and isinstance(inputs, (torch.Tensor, np.ndarray)):
        raise ValueError("labels are required with a tensor of inputs")
    device = _device(model)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    chunks, seen = [], []
    try:
        with torch.no_grad():
            for x, y in _batches(inputs, labels, batch_size):
                if device is not None and isinstance(x, torch.Tensor):
                    x = x.to(device)
                out = embed(model, x) if embed is not None else model(x)
                chunks.append(out.detach().float().cpu().numpy())
                if y is not None:
                    seen.extend(y.tolist() if isinstance(y, torch.Tensor) else list(y))
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    embeddings = (np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32))
    if labels is None:
        out_labels = seen
    else:
        out_labels = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    if len(out_labels) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(out_labels)} labels")
    return embeddings, out_labels


def evaluate_model(
    model,
    inputs,
    labels: Sequence | None = None,
    *,
    embed: Callable[[Any, Any], Any] | None = None,
    batch_size: int = BATCH_SIZE,
    **options: Any,
) -> EvaluationResult:
    """Embed a validation set (:func:`embed_validation_set`) and evaluate it.

    ``options`` go to :func:`opis_cli.evaluate` (``metric``, ``far_range``,
    ``threshold_policy``...); ``timestamp`` defaults to False so that two
    epochs with the same embeddings give equal results.

    Returns
    -------
    EvaluationResult
        ``result.opis``, ``result.epsilon_opis``,
        ``result.retrieval.recall_at_k["1"]`` and everything else, for your
        own history, early stopping or tracker (:func:`epoch_metrics`).
    """
    from ..api import evaluate

    embeddings, labs = embed_validation_set(model, inputs, labels, embed=embed,
                                            batch_size=batch_size)
    options.setdefault("timestamp", False)
    return evaluate(embeddings, labs, **options)


def epoch_metrics(result: EvaluationResult, prefix: str = "") -> dict[str, float]:
    """OPIS, 10%-OPIS and R@1 under tracker-safe names (``opis``, ``epsilon_opis``,
    ``recall_at_1``), each with ``prefix`` in front."""
    return {prefix + "opis": float(result.opis),
            prefix + "epsilon_opis": float(result.epsilon_opis),
            prefix + "recall_at_1": float(result.headline()["recall_at_1"])}


def summary_line(result: EvaluationResult, epoch: int) -> str:
    """``epoch   7  R@1 0.9200  OPIS 0.01600  10%-OPIS 0.03717``."""
    return (f"epoch {epoch:3d}  R@1 {result.headline()['recall_at_1']:.4f}  "
            f"OPIS {result.opis:.5f}  10%-OPIS {result.epsilon_opis:.5f}")


def log_opis(
    model,
    inputs,
    labels: Sequence | None,
    epoch: int,
    log: Callable[[str], None] = print,
    **options: Any,
) -> EvaluationResult:
    """Evaluate a validation set (:func:`evaluate_model`), log one line, return the result.

    ``log`` receives :func:`summary_line` (``print``, ``logger.info``, a
    list's ``append``...); ``options`` go to :func:`evaluate_model`.
    """
    result = evaluate_model(model, inputs, labels, **options)
    log(summary_line(result, epoch))
    return result


__all__ = [
    "EPOCH_METRICS",
    "embed_validation_set",
    "epoch_metrics",
    "evaluate_model",
    "log_opis",
    "summary_line",
]
