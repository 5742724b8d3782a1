"""The training-loop integrations: ``opis_cli.integrations.training`` and the Lightning callback.

Real (tiny) two-epoch fits on the CPU. Needs torch (``train`` extra) and
the ``lightning`` extra (the MLFlowLogger test also ``mlflow``), so ``slow``
in conftest.py; the frameworks are
imported inside the tests so that collecting this module never needs them.
Expected numbers come from ``opis_cli.evaluate`` on the model's own
embeddings, computed here.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

import opis_cli


def _data(n=96, dim=8, classes=6, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centers = torch.randn(classes, dim, generator=g) * 2
    x = centers[y] + torch.randn(n, dim, generator=g)
    return x, y


def _module():
    import lightning.pytorch as L
    import torch

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                           torch.nn.Dropout(0.3), torch.nn.Linear(16, 4))

        def forward(self, x):
            return torch.nn.functional.normalize(self.net(x), dim=1)

        def training_step(self, batch, _):
            x, y = batch
            z = self(x)
            same = (y[:, None] == y[None, :]).float()
            return ((z @ z.T - same) ** 2).mean()  # pull classes together, push apart

        def validation_step(self, batch, _):
            self.log("val_loss", self.training_step(batch, 0))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    return Tiny()


def _trainer(tmp_path, callback, *, validation: bool):
    import lightning.pytorch as L
    from lightning.pytorch.loggers import CSVLogger

    return L.Trainer(max_epochs=2, accelerator="cpu", devices=1, callbacks=[callback],
                     logger=CSVLogger(tmp_path, name="run", version=0),
                     limit_val_batches=None if validation else 0,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, deterministic=True, log_every_n_steps=1)


def _loader(x, y, shuffle=False):
    import torch

    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32,
                                       shuffle=shuffle)


def test_callback_logs_opis_through_the_trainers_logger_every_epoch(tmp_path):
    import lightning.pytorch as L

    from opis_cli.integrations.lightning import OpisCallback

    L.seed_everything(0, workers=True)
    x, y = _data()
    vx, vy = _data(seed=1)
    labels = [f"c{int(v)}" for v in vy]
    cb = OpisCallback(vx, labels, batch_size=40, prefix="val_")
    model = _module()
    trainer = _trainer(tmp_path, cb, validation=True)
    trainer.fit(model, _loader(x, y, shuffle=True), _loader(vx, vy))

    assert [h["epoch"] for h in cb.history] == [0, 1]
    model.eval()
    import torch

    with torch.no_grad():
        expected = opis_cli.evaluate(model(vx).numpy(), labels, timestamp=False)
    last = cb.history[-1]
    assert last["opis"] == pytest.approx(expected.opis, rel=1e-6)
    assert last["epsilon_opis"] == pytest.approx(expected.epsilon_opis, rel=1e-6)
    assert last["recall_at_1"] == expected.retrieval.recall_at_k["1"]
    assert cb.last_result.opis == last["opis"]
    assert trainer.callback_metrics["val_opis"].item() == pytest.approx(last["opis"])
    # what the logger wrote: one row per epoch with each name
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_opis")]
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert float(rows[1]["val_opis"]) == pytest.approx(last["opis"], rel=1e-6)
    assert float(rows[0]["val_epsilon_opis"]) == pytest.approx(cb.history[0]["epsilon_opis"],
                                                               rel=1e-6)
    assert float(rows[1]["val_recall_at_1"]) == pytest.approx(last["recall_at_1"])


def test_callback_without_validation_loop_reads_labels_from_batches(tmp_path):
    import lightning.pytorch as L

    from opis_cli.integrations.lightning import OpisCallback

    L.seed_everything(0, workers=True)
    x, y = _data()
    vx, vy = _data(seed=1)
    seen = []
    cb = OpisCallback(_loader(vx, vy), every_n_epochs=2,
                      embed=lambda m, b: (seen.append(len(b)), m(b))[1], metric="l2")
    trainer = _trainer(tmp_path, cb, validation=False)
    trainer.fit(_module(), _loader(x, y))
    assert [h["epoch"] for h in cb.history] == [1]  # every 2nd epoch only
    assert seen == [32, 32, 32]  # one forward per batch of the loader
    assert cb.last_result.metric == "l2"
    assert set(trainer.callback_metrics) >= {"opis", "epsilon_opis", "recall_at_1"}


def test_evaluate_model_batches_keep_the_mode_and_equal_one_pass():
    import torch

    from opis_cli.integrations.training import (
        embed_validation_set,
        evaluate_model,
        log_opis,
    )

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Dropout(0.5))
    model.train()
    x, y = _data()
    emb, labels = embed_validation_set(model, x, y, batch_size=7)
    assert model.training and labels == y.tolist()
    model.eval()
    with torch.no_grad():
        full = model(x).numpy()
    np.testing.assert_allclose(emb, full, rtol=1e-6, atol=1e-6)
    result = evaluate_model(model, x, y, batch_size=10)
    assert result.opis == pytest.approx(opis_cli.evaluate(full, y.tolist(),
                                                          timestamp=False).opis, rel=1e-6)
    lines = []
    log_opis(model, x, y, 3, log=lines.append)
    assert lines[0].startswith("epoch   3  R@1 ")
    with pytest.raises(ValueError, match="labels are required"):
        embed_validation_set(model, x)
    with pytest.raises(ValueError, match="96 embeddings but 95 labels"):
        embed_validation_set(model, x, y[:95])


def test_callback_metrics_reach_mlflow_through_lightnings_mlflow_logger(tmp_path, monkeypatch):
    """The tracker path of a training run: OpisCallback -> pl_module.log -> MLFlowLogger
    (needs the mlflow extra too)."""
    import lightning.pytorch as L
    import mlflow.tracking._tracking_service.utils as tracking
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow import MlflowClient

    # MLFlowLogger sets MLflow's process-wide tracking URI: put it back afterwards,
    # so that later tests choose theirs with MLFLOW_TRACKING_URI
    monkeypatch.setattr(tracking, "_tracking_uri", tracking._tracking_uri)

    from opis_cli.integrations.lightning import OpisCallback

    L.seed_everything(0, workers=True)
    x, y = _data()
    vx, vy = _data(seed=1)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logger = MLFlowLogger(experiment_name="train", tracking_uri=uri,
                          artifact_location=(tmp_path / "artifacts").as_uri())
    cb = OpisCallback(vx, vy.tolist())
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, callbacks=[cb],
                        logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, deterministic=True, log_every_n_steps=1)
    trainer.fit(_module(), _loader(x, y))
    client = MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(logger.run_id, "opis")
    assert [h.value for h in history] == pytest.approx([h["opis"] for h in cb.history])
    rec = client.get_metric_history(logger.run_id, "recall_at_1")
    assert [h.value for h in rec] == pytest.approx([h["recall_at_1"] for h in cb.history])
