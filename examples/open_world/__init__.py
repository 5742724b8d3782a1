"""Which fix makes one threshold hold on classes never seen? TCM, cluster normalisation, both.

The many-class open-world example (``python -m examples.open_world`` from the
repository root; needs the ``train`` extra): a small head on the frozen
sentence embeddings of ``sample_data/wordnet_hyponyms.parquet`` is trained on
four fifths of the classes and measured on the fifth it never saw, over
several seeds, in four arms: the base loss (Multi-Similarity), base + TCM
(pytorch-metric-learning's ``ThresholdConsistentMarginLoss``), base + cluster
normalisation (SPEC 11 ``cluster:K``, fitted on the training classes), and
base + TCM + cluster normalisation. Page: ``docs/how-to/open-world-training.md``.

Modules:

- ``data``: the sample and the class-disjoint split (numpy, opis_cli);
- ``scoring``: one model's numbers on the unseen classes, without and with
  cluster normalisation (opis_cli);
- ``table``: the Markdown tables (mean ± std over seeds, paired effects);
- ``training``: the head, the batches, the losses, the loop (PyTorch, pml);
- ``experiment``: every (arm, seed) run.

Only ``training`` and ``experiment`` import torch.
"""
