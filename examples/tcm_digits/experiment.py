"""The whole example: train, export, evaluate, tabulate, draw (needs the ``train`` extra).

:func:`run_grid` trains every (base loss, TCM or not, seed) model on the
training digits, writes each model's embeddings of the *unseen* test digits
to ``OUT/embeddings/<run>.parquet``, reads the file back and evaluates it
with ``opis_cli`` (SPEC defaults: cosine, FAR range 0.01:0.1, F1 of TPR and
TNR). :func:`run_toy` trains the 2-D model of the digits picture.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import opis_cli

from . import figure, results
from .data import Split, label_strings
from .training import BASE_LOSSES, TrainConfig, embed, train

#: The 2-D model of the picture: Multi-Similarity (a pair loss like TCM
#: itself; pml's ArcFace gives NaN gradients in 2-D when an embedding lands
#: exactly on a class weight), longer training, no augmentation.
TOY_CONFIG = TrainConfig(dim=2, epochs=40, shift=0)
TOY_LOSS = "ms"
TOY_SEED = 0


@dataclass(frozen=True)
class GridOutput:
    """What :func:`run_grid` produced."""

    scores: tuple[results.RunScore, ...]
    histories: dict  # run name -> per-epoch validation history
    paths: dict  # run name -> Parquet path


def run_grid(
    split: Split,
    out_dir: str | os.PathLike,
    *,
    seeds: Sequence[int],
    losses: Sequence[str] = BASE_LOSSES,
    cfg: TrainConfig = TrainConfig(),
    log: Callable[[str], None] | None = None,
) -> GridOutput:
    """Train, export and score every (loss, TCM, seed) run; see the module docstring."""
    emb_dir = os.path.join(out_dir, "embeddings")
    os.makedirs(emb_dir, exist_ok=True)
    test_labels = label_strings(split.y_test)
    scores, histories, paths = [], {}, {}
    for loss in losses:
        for tcm in (False, True):
            for seed in seeds:
                name = results.run_name(loss, tcm, seed)
                started = time.perf_counter()
                model, history = train(split, loss, tcm, seed, cfg,
                                       log=(lambda line, n=name: log(f"{n}  {line}")) if log
                                       else None)
                path = os.path.join(emb_dir, f"{name}.parquet")
                results.write_embeddings(path, embed(model, split.x_test), test_labels)
                score = results.score_file(path, loss, tcm, seed)
                scores.append(score)
                histories[name], paths[name] = history, path
                if log:
                    log(f"{name}: test R@1 {score.recall_at_1:.4f}  OPIS {score.opis:.5f}  "
                        f"10%-OPIS {score.epsilon_opis:.5f}  ({time.perf_counter() - started:.1f} s)")
    return GridOutput(tuple(scores), histories, paths)


def run_toy(split: Split, path: str | os.PathLike, *, cfg: TrainConfig = TOY_CONFIG,
            loss: str = TOY_LOSS, seed: int = TOY_SEED,
            log: Callable[[str], None] | None = None) -> dict:
    """Train the 2-D model without and with TCM and save the unit-circle picture.

    Top row: held-out images of the training digits; bottom row: the unseen
    test digits. Returns ``{"seen"|"unseen": {"without"|"with": (R@1, OPIS)}}``.
    """
    sets = {"seen": (split.x_val, split.y_val), "unseen": (split.x_test, split.y_test)}
    rows = {"seen": [], "unseen": []}
    numbers: dict = {"seen": {}, "unseen": {}}
    for tcm in (False, True):
        model, _ = train(split, loss, tcm, seed, cfg)
        for key, (x, y) in sets.items():
            e = embed(model, x)
            labels = np.array(label_strings(y), dtype=object)
            r = opis_cli.evaluate(e, labels, timestamp=False)
            r1 = r.retrieval.recall_at_k["1"]
            numbers[key]["with" if tcm else "without"] = (r1, r.opis)
            a = figure.angles_of(e)
            title = (f"{results.LOSS_NAMES[loss]} {'+ TCM' if tcm else 'alone'}\n"
                     f"R@1 {r1:.3f}   OPIS {r.opis:.4f}")
            rows[key].append(figure.Panel(title, {lab: a[labels == lab]
                                                  for lab in sorted(set(labels))}))
        if log:
            log(f"toy 2-D {'with' if tcm else 'without'} TCM: "
                + "  ".join(f"{k} R@1 {v['with' if tcm else 'without'][0]:.3f} "
                            f"OPIS {v['with' if tcm else 'without'][1]:.4f}"
                            for k, v in numbers.items()))
    seen = ", ".join(str(c) for c in split.train_classes)
    unseen = ", ".join(str(c) for c in split.test_classes)
    figure.save_density_figure(
        path, [rows["seen"], rows["unseen"]],
        row_titles=[f"seen digits\n({seen};\nheld-out images)", f"unseen digits\n({unseen})"],
        suptitle=f"2-D embedding on the unit circle: density of each digit (seed {seed})")
    return numbers


def write_summary(out_dir: str | os.PathLike, grid: GridOutput, header: str) -> str:
    """Write ``results.md`` and ``scores.json`` (plus ``history.json``) to ``out_dir``."""
    from opis_cli.io.output import write_text

    text = (header + "\n" + results.results_table(grid.scores) + "\n"
            "Paired effect of TCM (with minus without, same seed):\n\n"
            + results.paired_table(grid.scores))
    write_text(os.path.join(out_dir, "results.md"), text)
    write_text(os.path.join(out_dir, "scores.json"), results.scores_json(grid.scores))
    write_text(os.path.join(out_dir, "history.json"),
               json.dumps(grid.histories, indent=1, sort_keys=True) + "\n")
    return text


def stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["GridOutput", "TOY_CONFIG", "run_grid", "run_toy", "stderr_log", "write_summary"]
