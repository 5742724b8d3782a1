"""Log OPIS next to R@1 once per epoch, from any plain PyTorch training loop.

The hook is the package's own :func:`opis_cli.integrations.training.log_opis`
(``opis_cli``'s core never imports torch; that module imports it when
called): it embeds the validation set with the model in eval mode, hands
numpy arrays to ``opis_cli.evaluate`` and logs one line. Use it in your own
loop::

    from opis_cli.integrations.training import log_opis

    for epoch in range(epochs):
        train_one_epoch(model, loader, loss_fn, optimizer)
        log_opis(model, val_x, val_labels, epoch)
"""

from __future__ import annotations

from opis_cli.integrations.training import log_opis

__all__ = ["log_opis"]
