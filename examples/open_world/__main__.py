"""Which fix makes one threshold hold on classes never seen? Train, fix, measure, tabulate.

Run from the repository root (needs the ``train`` extra)::

    python -m examples.open_world

Prints the Markdown tables of the README and of
``docs/how-to/open-world-training.md`` on stdout (progress on stderr);
``--scores PATH`` also writes every (arm, seed) row as JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from . import data, experiment, table
from .training import TrainConfig


def header(split: data.Split, cfg: experiment.Config) -> str:
    """The line above the tables: what was trained, what was measured."""
    far = float(cfg.target.split(":", 1)[1])
    return (f"Unseen classes: {split.test_classes} WordNet concepts ({len(split.y_test)} rows) "
            f"never seen in training; heads trained on {split.train_classes} other classes "
            f"({len(split.y_train)} rows), {_n(cfg.train.epochs, 'epoch')}; cluster "
            f"normalisation `cluster:{cfg.clusters}` and the threshold (target FAR "
            f"{100 * far:g}%) fitted on the training classes. {_n(len(cfg.seeds), 'seed')}; "
            "mean ± std (ddof=1) over seeds.\n")


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def report(split: data.Split, cfg: experiment.Config, scores) -> str:
    """Header, results table and paired table: what the command prints."""
    far = float(cfg.target.split(":", 1)[1])
    return (header(split, cfg) + "\n" + table.results_table(scores, far) + "\n"
            "Paired, same seed:\n\n" + table.paired_table(scores, far))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.open_world",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs,
                        help=f"training epochs of every head (default {TrainConfig.epochs})")
    parser.add_argument("--clusters", type=int, default=experiment.scoring.CLUSTERS,
                        help="K of the cluster normalisation (default %(default)s)")
    parser.add_argument("--train-classes", type=int, default=None,
                        help="keep only this many training classes (a quick run)")
    parser.add_argument("--test-classes", type=int, default=None,
                        help="keep only this many unseen classes (a quick run)")
    parser.add_argument("--data", default=str(data.WORDNET),
                        help="the many-class sample (default: the shipped one)")
    parser.add_argument("--scores", default=None, help="also write every row as JSON here")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1 or args.clusters < 1:
        parser.error("--seeds, --epochs and --clusters must be at least 1")

    started = time.perf_counter()
    x, y = data.load_wordnet(args.data)
    split = data.open_world_split(x, y, max_train_classes=args.train_classes,
                                  max_test_classes=args.test_classes)
    cfg = experiment.Config(seeds=tuple(range(args.seeds)),
                            train=replace(TrainConfig(), epochs=args.epochs),
                            clusters=args.clusters)
    scores = experiment.run(split, cfg, log=experiment.stderr_log)
    print(report(split, cfg, scores), end="")
    if args.scores:
        from opis_cli.io.output import write_text

        write_text(args.scores, table.scores_json(scores))
    experiment.stderr_log(f"wall time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
