"""Optional integrations with experiment trackers and training frameworks.

Each module imports its framework lazily (inside its functions, or when the
module itself is imported) and behind an extra, so the core install does not
grow:

- :mod:`opis_cli.integrations.mlflow`: log a result to an MLflow run
  (``pip install 'opis-cli[mlflow]'``);
- :mod:`opis_cli.integrations.lightning`: a PyTorch Lightning callback
  (``pip install 'opis-cli[lightning]'``);
- :mod:`opis_cli.integrations.training`: evaluate a validation set from a
  plain PyTorch loop (needs only torch, no extra framework).
"""
