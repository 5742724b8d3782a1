"""The whole experiment: train every (arm, seed) head, score it on the unseen classes.

Per seed: the base head (Multi-Similarity) and the TCM head (Multi-Similarity
+ TCM) are trained on the training classes; each is scored as it is and with
cluster normalisation fitted on its own training-side embeddings
(:func:`~.scoring.score_model`): the four arms of the comparison. The frozen
sentence embeddings (no head) are scored the same way as a reference; they
need no training, so only their cluster normalisation (k-means seeded with
the seed) changes from seed to seed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from . import scoring
from .data import Split
from .scoring import ArmScore
from .training import TrainConfig, embed, train


@dataclass(frozen=True)
class Config:
    """What one run of the example does (the defaults make the README table)."""

    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    train: TrainConfig = field(default_factory=TrainConfig)
    clusters: int = scoring.CLUSTERS
    target: str = scoring.TARGET


def run(split: Split, cfg: Config = Config(),
        log: Callable[[str], None] | None = None) -> list[ArmScore]:
    """Every arm's :class:`ArmScore`, seed by seed (``frozen``, ``frozen+cluster``,
    ``base``, ``base+cluster``, ``base+tcm``, ``base+tcm+cluster`` for each)."""
    log = log or (lambda _line: None)
    kw = dict(clusters=cfg.clusters, target=cfg.target)
    scores: list[ArmScore] = []
    frozen = None
    for seed in cfg.seeds:
        started = time.perf_counter()
        if frozen is None:  # no training: the same numbers for every seed
            frozen = scoring.score_plain("frozen", seed, split.x_train, split.y_train,
                                         split.x_test, split.y_test, target=cfg.target)
        plain = replace(frozen, seed=seed)
        clustered = scoring.score_cluster("frozen+cluster", seed, split.x_train, split.y_train,
                                          split.x_test, split.y_test, **kw)
        scores += [plain, clustered]
        _log_scores(log, (plain, clustered), started)
        for tcm in (False, True):
            started = time.perf_counter()
            model = train(split.x_train, split.y_train, tcm, seed, cfg.train)
            trained = time.perf_counter() - started
            pair = scoring.score_model("base+tcm" if tcm else "base", seed,
                                       embed(model, split.x_train), split.y_train,
                                       embed(model, split.x_test), split.y_test, **kw)
            scores += pair
            _log_scores(log, pair, started, f"trained in {trained:.1f} s")
    return scores


def _log_scores(log, pair, started, extra: str = "") -> None:
    for s in pair:
        log(f"seed {s.seed} {s.arm:<16} OPIS {s.opis:.5f}  10%-OPIS {s.epsilon_opis:.4f}  "
            f"R@1 {s.recall_at_1:.4f}  FAR {100 * s.far:.2f}%  TPR {100 * s.tpr:.1f}%")
    log(f"  ({time.perf_counter() - started:.1f} s{'; ' + extra if extra else ''})")


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
