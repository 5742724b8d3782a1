"""Plumbing of the TCM-on-digits example (``examples/train_tcm_digits.py``).

Modules:

- ``data``: scikit-learn's handwritten digits and the open-world class split
  (numpy only);
- ``results``: Parquet export of embeddings, per-run scores and the Markdown
  results tables (numpy, pyarrow, opis_cli);
- ``figure``: the unit-circle class-density picture (matplotlib);
- ``training``: the embedding network, the losses and the training loop
  (PyTorch, pytorch-metric-learning);
- ``hook``: the per-epoch OPIS hook for any plain PyTorch loop (the package's
  ``opis_cli.integrations.training.log_opis``).

Only ``training`` and ``hook`` import torch, so the rest can be tested
without the ``train`` extra.
"""
