"""A PyTorch Lightning callback that logs OPIS, 10%-OPIS and R@1 of a validation set.

::

    from opis_cli.integrations.lightning import OpisCallback

    trainer = L.Trainer(callbacks=[OpisCallback(val_x, val_labels, every_n_epochs=1)],
                        logger=...)        # MLFlowLogger, CSVLogger, TensorBoardLogger...
    trainer.fit(model, train_loader)

Every ``every_n_epochs`` epochs the callback embeds the validation set with
the LightningModule's ``forward`` (or ``embed``), measures it with
:func:`opis_cli.evaluate` and logs ``opis``, ``epsilon_opis`` (10%-OPIS) and
``recall_at_1`` with ``pl_module.log``, so they reach the trainer's logger
and can be monitored by ``EarlyStopping`` or ``ModelCheckpoint``. It runs at
the end of the validation epoch, or at the end of the training epoch when
the trainer runs no validation.

Needs ``pip install 'opis-cli[lightning]'`` (the ``lightning`` package;
``pytorch_lightning`` is used when only it is installed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .training import BATCH_SIZE, epoch_metrics, evaluate_model

try:
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - the older package name
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError("opis_cli.integrations.lightning needs PyTorch Lightning: "
                          "pip install 'opis-cli[lightning]'") from None


class OpisCallback(Callback):
    """Log OPIS, 10%-OPIS and R@1 of a validation set every ``every_n_epochs`` epochs.

    Parameters
    ----------
    inputs : tensor, array, or iterable of batches
        The validation set: a tensor of inputs (with ``labels``), or batches
        such as a ``DataLoader`` yields (tensors, or ``(x, y, ...)`` tuples
        whose ``y`` are the labels). See
        :func:`opis_cli.integrations.training.embed_validation_set`.
    labels : sequence, optional
        N labels, unless the batches carry them.
    every_n_epochs : int
        Evaluate after epochs ``n - 1``, ``2n - 1``, ... (1: every epoch).
    embed : callable ``embed(pl_module, x) -> (B, D) tensor``, optional
        Default: ``pl_module(x)`` (its ``forward``).
    batch_size : int
        Rows per forward pass for a tensor input.
    prefix : str
        Put before the logged names (``"val_"`` gives ``val_opis``...).
    **options
        Passed to :func:`opis_cli.evaluate` (``metric``, ``far_range``...).

    Attributes
    ----------
    history : list of dict
        ``{"epoch": e, "opis": ..., "epsilon_opis": ..., "recall_at_1": ...}``
        per evaluated epoch (names without the prefix).
    last_result : EvaluationResult or None
        The full result of the last evaluation.
    """

    def __init__(self, inputs, labels: Sequence | None = None, *, every_n_epochs: int = 1,
                 embed: Callable[[Any, Any], Any] | None = None, batch_size: int = BATCH_SIZE,
                 prefix: str = "", **options: Any) -> None:
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}")
        self.inputs = inputs
        self.labels = labels
        self.every_n_epochs = every_n_epochs
        self.embed = embed
        self.batch_size = batch_size
        self.prefix = prefix
        self.options = options
        self.history: list[dict[str, float]] = []
        self.last_result = None
        self._done_epoch: int | None = None

    def _due(self, trainer) -> bool:
        epoch = trainer.current_epoch
        return (epoch + 1) % self.every_n_epochs == 0 and self._done_epoch != epoch

    def _measure(self, trainer, pl_module) -> None:
        if not self._due(trainer):
            return
        epoch = trainer.current_epoch
        result = evaluate_model(pl_module, self.inputs, self.labels, embed=self.embed,
                                batch_size=self.batch_size, **self.options)
        self._done_epoch = epoch
        self.last_result = result
        self.history.append({"epoch": epoch, **epoch_metrics(result)})
        for name, value in epoch_metrics(result, self.prefix).items():
            pl_module.log(name, value, on_step=False, on_epoch=True)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._measure(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.enable_validation:  # no validation loop: measure here
            self._measure(trainer, pl_module)


__all__ = ["OpisCallback"]
