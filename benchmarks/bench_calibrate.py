"""Speed of ``opis calibrate`` relative to ``opis evaluate`` on the same data.

Issue 11's target: ``calibrate --folds 5`` (target far:0.01) takes at most
2.5x the time of ``evaluate`` (default FAR range, retrieval included) on the
same 25k x 384 embeddings, both timed in this run (best of ``--repeat``),
printed as wall-clock and CPU-time ratios. The machine is shared and noisy:
read the ratios, not the seconds.

    python benchmarks/bench_calibrate.py                       # 25000x384, 5 folds
    python benchmarks/bench_calibrate.py --shapes 10000x128 --folds 10 --repeat 1
"""

from __future__ import annotations

import argparse

import opis_cli
from _common import best_of, synthetic  # benchmarks/_common.py: the data every benchmark uses
from opis_cli.transfer import Data, calibrate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="25000x384", help="NxD[,NxD...]")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--target", default="far:0.01")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    # compile the kernels outside the timings
    x, y = synthetic(600, 16)
    opis_cli.evaluate(x, y)
    calibrate(Data(x, y), folds=args.folds)
    print(f"{'shape':>12} {'evaluate s':>11} {'calibrate s':>12} {'ratio wall':>11} {'ratio cpu':>10}")
    for shape in args.shapes.split(","):
        n, d = (int(v) for v in shape.lower().split("x"))
        x, y = synthetic(n, d)
        ev_w, ev_c = best_of(lambda: opis_cli.evaluate(x, y), args.repeat)
        ca_w, ca_c = best_of(lambda: calibrate(Data(x, y), folds=args.folds, target=args.target),
                             args.repeat)
        print(f"{shape:>12} {ev_w:11.2f} {ca_w:12.2f} {ca_w / ev_w:11.2f} {ca_c / ev_c:10.2f}",
              flush=True)


if __name__ == "__main__":
    main()
