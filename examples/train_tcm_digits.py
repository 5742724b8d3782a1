"""Does the TCM loss make one distance threshold fit every class? Train and measure.

Trains small embedding networks on scikit-learn's handwritten digits in an
open-world split (train on digits 0-4, test on the never-seen digits 5-9),
with two base losses from pytorch-metric-learning (ArcFace, Multi-Similarity),
each without and with the Threshold-Consistent Margin regulariser (Zhang et
al., ICLR 2024), over several seeds, on the CPU. Writes every run's test
embeddings to Parquet, evaluates them with ``opis_cli.evaluate``, prints a
Markdown results table (mean ± std over seeds) and draws the 2-D
unit-circle picture.

Needs the ``train`` extra::

    pip install 'opis-cli[train]'
    python examples/train_tcm_digits.py --out runs/tcm_digits

Outputs under ``--out``: ``embeddings/<run>.parquet`` (columns ``embedding``,
``label``; try ``opis evaluate`` on one), ``results.md``, ``scores.json``,
``history.json`` (per-epoch validation R@1 / OPIS from the training-loop
hook) and the picture (``--figure``, default ``OUT/tcm-digits-density.png``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tcm_digits import data, experiment  # noqa: E402
from tcm_digits.training import BASE_LOSSES, TrainConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/tcm_digits", help="output folder")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per configuration")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs,
                        help="training epochs of the grid models")
    parser.add_argument("--losses", default=",".join(BASE_LOSSES),
                        help="comma-separated base losses (arcface, ms)")
    parser.add_argument("--figure", default=None,
                        help="PNG path of the unit-circle picture (default OUT/tcm-digits-density.png)")
    parser.add_argument("--toy-epochs", type=int, default=experiment.TOY_CONFIG.epochs,
                        help="training epochs of the 2-D picture models")
    parser.add_argument("--toy-seed", type=int, default=experiment.TOY_SEED,
                        help="seed of the 2-D picture models")
    parser.add_argument("--no-figure", action="store_true", help="skip the 2-D picture")
    parser.add_argument("--figure-only", action="store_true",
                        help="only train the 2-D picture models (no grid, no table)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log the per-epoch validation R@1 / OPIS of every run")
    args = parser.parse_args(argv)
    losses = tuple(s.strip() for s in args.losses.split(",") if s.strip())
    unknown = [s for s in losses if s not in BASE_LOSSES]
    if unknown or args.seeds < 1 or args.epochs < 1 or args.toy_epochs < 1:
        parser.error(f"--losses must be among {BASE_LOSSES}; --seeds and epochs at least 1")
    if args.no_figure and args.figure_only:
        parser.error("--no-figure and --figure-only exclude each other")

    started = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    x, y = data.load_digits_arrays()
    split = data.open_world_split(x, y)
    log = experiment.stderr_log
    log(f"open-world split: train digits {split.train_classes} ({len(split.y_train)} images, "
        f"{len(split.y_val)} for validation), test digits {split.test_classes} "
        f"({len(split.y_test)} images)")
    if not args.figure_only:
        grid = experiment.run_grid(split, args.out, seeds=range(args.seeds), losses=losses,
                                   cfg=replace(TrainConfig(), epochs=args.epochs),
                                   log=log if args.verbose else _brief(log))
        header = (f"Test digits {', '.join(map(str, split.test_classes))} (never seen in "
                  f"training), {len(split.y_test)} images; {args.seeds} seed(s), {args.epochs} "
                  "epochs; mean ± std (ddof=1) over seeds.\n")
        print(experiment.write_summary(args.out, grid, header), end="")
    if not args.no_figure:
        path = args.figure or os.path.join(args.out, "tcm-digits-density.png")
        experiment.run_toy(split, path, cfg=replace(experiment.TOY_CONFIG, epochs=args.toy_epochs),
                           seed=args.toy_seed, log=log)
        log(f"picture: {path}")
    log(f"wall time: {time.perf_counter() - started:.0f} s")
    return 0


def _brief(log):
    """Pass on only the one line per run (not the per-epoch hook lines)."""
    return lambda line: None if "  epoch " in line else log(line)


if __name__ == "__main__":
    sys.exit(main())
