"""Score one trained head on the unseen classes, without and with cluster normalisation.

No torch here: this is the part of the example that turns embeddings into
numbers (``opis_cli`` only), tested without training.

For one model (its embeddings of the training rows and of the unseen test
rows) :func:`score_model` gives two :class:`ArmScore` rows:

- ``plain``: the test embeddings evaluated as they are (``opis_cli.evaluate``,
  SPEC defaults: cosine, FAR range 0.01:0.1); the threshold is chosen on the
  *training* classes at the target global FAR (``far:0.01``) and applied to
  the unseen classes (``opis_cli.transfer.calibrate``, SPEC 12);
- ``cluster``: the cluster normalisation of SPEC 11 (``cluster:K``, after
  Terhoerst et al.'s fair score normalisation) fitted on the training rows
  (``opis_cli.calibration.fit``) and applied to the unseen rows; every number
  is computed on the adjusted distances ``d' = d - a_q - b_g`` and the
  threshold is the calibration's ``global_threshold``.

Lower OPIS and 10%-OPIS are better; the achieved FAR should be close to the
target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import opis_cli
from opis_cli.calibration import Calibration, fit
from opis_cli.transfer import Data, calibrate

TARGET = "far:0.01"
CLUSTERS = 16


@dataclass(frozen=True)
class ArmScore:
    """The numbers of one (arm, seed) on the unseen classes.

    ``far`` / ``tpr``: global FAR and TPR on the unseen classes at the
    threshold chosen on the training classes; ``threshold``: that threshold
    (a cosine distance; for a calibrated arm, on adjusted distances).
    """

    arm: str
    seed: int
    opis: float
    epsilon_opis: float
    recall_at_1: float
    far: float
    tpr: float
    threshold: float

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in d.items()}


def score_plain(arm: str, seed: int, train_emb: np.ndarray, train_labels: Sequence,
                test_emb: np.ndarray, test_labels: Sequence, *, target: str = TARGET) -> ArmScore:
    """Evaluate the test embeddings as they are; transfer the training-side threshold."""
    r = opis_cli.evaluate(test_emb, test_labels, timestamp=False)
    fold = calibrate(Data(train_emb, train_labels), test=Data(test_emb, test_labels),
                     target=target, timestamp=False).folds[0]
    return ArmScore(arm, seed, float(r.opis), float(r.epsilon_opis),
                    float(r.retrieval.recall_at_k["1"]), float(fold.test.far),
                    float(fold.test.tpr), float(fold.calibration.threshold))


def score_cluster(arm: str, seed: int, train_emb: np.ndarray, train_labels: Sequence,
                  test_emb: np.ndarray, test_labels: Sequence, *, clusters: int = CLUSTERS,
                  target: str = TARGET) -> ArmScore:
    """Fit ``cluster:K`` on the training rows (k-means seeded with ``seed``);
    apply it to the test rows."""
    cal = fit(train_emb, train_labels, method=f"cluster:{clusters}", target=target,
              metric="cosine", seed=seed)
    r, point = evaluate_calibrated(test_emb, test_labels, cal)
    return ArmScore(arm, seed, float(r.opis), float(r.epsilon_opis),
                    float(r.retrieval.recall_at_k["1"]), float(point.far), float(point.tpr),
                    float(cal.global_threshold))


def evaluate_calibrated(test_emb: np.ndarray, test_labels: Sequence, cal: Calibration):
    """The one place that evaluates with adjusted distances (SPEC 11).

    Returns ``(EvaluationResult, OperatingPoint)``: every number of the
    evaluation on ``d'``, and the global FAR / TPR at the calibration's
    ``global_threshold`` on ``d'``.
    """
    from opis_cli.api import operating_point

    r = opis_cli.evaluate(test_emb, test_labels, calibration=cal, timestamp=False)
    point = operating_point(test_emb, test_labels, cal.global_threshold, calibration=cal)
    return r, point


def score_model(name: str, seed: int, train_emb: np.ndarray, train_labels: Sequence,
                test_emb: np.ndarray, test_labels: Sequence, *, clusters: int = CLUSTERS,
                target: str = TARGET) -> tuple[ArmScore, ArmScore]:
    """Both arms of one model: arm ``name`` (as it is) and ``name+cluster``."""
    return (score_plain(name, seed, train_emb, train_labels, test_emb, test_labels,
                        target=target),
            score_cluster(f"{name}+cluster", seed, train_emb, train_labels, test_emb,
                          test_labels, clusters=clusters, target=target))
