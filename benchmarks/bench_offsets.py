"""Cost of a calibration's per-row offsets in the exact engine (issue 12: at most 10%).

Times ``opis_cli.evaluate`` (default FAR range, retrieval included) without
and with a calibration on the same data, in the same run (best of
``--repeat``), and prints the ratio, wall-clock and CPU. The calibration is
fitted once beforehand (``cluster:16`` by default: offsets on both sides, the
most general case). Read the ratios, not the seconds: the machine is shared.

    python benchmarks/bench_offsets.py                          # 25000x384, cosine
    python benchmarks/bench_offsets.py --shapes 20000x128 --metric l2 --method per-class
"""

from __future__ import annotations

import argparse

import opis_cli
from _common import best_of, synthetic  # benchmarks/_common.py: the data every benchmark uses
from opis_cli.calibration import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="25000x384", help="NxD[,NxD...]")
    ap.add_argument("--metric", default="cosine", choices=("cosine", "l2"))
    ap.add_argument("--method", default="cluster:16")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    x, y = synthetic(600, 16)  # compile the kernels outside the timings
    opis_cli.evaluate(x, y, metric=args.metric,
                      calibration=fit(x, y, method=args.method, metric=args.metric))
    print(f"{'shape':>12} {'plain s':>9} {'offsets s':>10} {'ratio wall':>11} {'ratio cpu':>10}")
    for shape in args.shapes.split(","):
        n, d = (int(v) for v in shape.lower().split("x"))
        x, y = synthetic(n, d)
        cal = fit(x, y, method=args.method, metric=args.metric)
        pw, pc = best_of(lambda: opis_cli.evaluate(x, y, metric=args.metric), args.repeat)
        ow, oc = best_of(lambda: opis_cli.evaluate(x, y, metric=args.metric, calibration=cal),
                         args.repeat)
        print(f"{shape:>12} {pw:9.2f} {ow:10.2f} {ow / pw:11.2f} {oc / pc:10.2f}", flush=True)


if __name__ == "__main__":
    main()
