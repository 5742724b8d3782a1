"""The counts pass over the upper triangle against the full-row counts pass.

When every row is a query and a gallery item, the exact engine's counts pass
reads each inner product once and counts it for both its queries
(``engines/symmetric.py``). This script captures the counts pass of one
``opis_cli.evaluate`` (FAR-defined range, retrieval included) on the shared
synthetic embeddings (unit vectors, 20 rows per class), then runs that same
pass alternately over the upper triangle and over full rows
(``exact.run_chunk`` with the route off), ``--repeat`` times each, in this
process, and prints the best wall and CPU time of each and their ratio. Both
give the same part (the tests hold the JSON bytes equal).

    python benchmarks/bench_symmetric.py                         # 26700 x 384
    python benchmarks/bench_symmetric.py --shape 100000x128 --repeat 1
    python benchmarks/bench_symmetric.py --split       # every second row a query

With ``--split`` every second row is a query (``is_query``) and every row a
gallery item: the pass reads the upper triangle of the queries and their
products with the other rows once (``tiles.Layout``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

os.environ.setdefault("_OPIS_SMALL_TERMS", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, synthetic  # noqa: E402

import numpy as np  # noqa: E402

import opis_cli  # noqa: E402
from opis_cli.engines import exact, symmetric  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="26700x384")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--split", action="store_true", help="every second row a query")
    args = ap.parse_args()
    n, d = (int(v) for v in args.shape.lower().split("x"))
    x, y = synthetic(n, d)
    caught = []
    real = symmetric.run_sym_counts

    def capture(prep, row_eval, row_sample, cfg, progress=None):
        caught.append((prep, row_eval, row_sample, cfg))
        return real(prep, row_eval, row_sample, cfg, progress)

    symmetric.run_sym_counts = capture
    is_query = (np.arange(n) % 2 == 0) if args.split else None
    opis_cli.evaluate(x, y, is_query=is_query)  # also compiles or loads the kernels
    symmetric.run_sym_counts = real
    prep, row_eval, row_sample, cfg = caught[-1]
    runs = {
        "upper triangle": lambda: real(prep, row_eval, row_sample, cfg),
        "full rows": lambda: exact.run_chunk(prep, row_eval, row_sample,
                                             replace(cfg, sym=False), 0, len(prep.q_rows)),
    }
    best = {k: (float("inf"), float("inf")) for k in runs}
    for _ in range(args.repeat):
        for k, fn in runs.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w, time.process_time() - c
            best[k] = (min(best[k][0], w), min(best[k][1], c))
    print(machine())
    what = ", every second row a query" if args.split else ""
    print(f"{args.shape}{what}: the counts pass of a FAR-defined range, best of {args.repeat}")
    for k, (w, c) in best.items():
        print(f"  {k:15s} wall {w:7.2f} s   cpu {c:7.2f} s")
    (w1, c1), (w0, c0) = best["upper triangle"], best["full rows"]
    print(f"  ratio (upper triangle / full rows): wall {w1 / w0:.2f}, cpu {c1 / c0:.2f}")


if __name__ == "__main__":
    main()
