"""Speed of the exact engine relative to one FAISS IndexFlatIP k=10 search.

Prints, for each shape, the time of ``opis_cli.evaluate`` (FAR-defined range,
retrieval included; and with an explicit range) divided by the time of one
``faiss.IndexFlatIP`` search with k=10 over the same embeddings, both timed in
this run (best of ``--repeat``), as wall-clock and as CPU-time ratios. The
machine is shared and noisy: read the ratios, not the seconds; when another
process competes for the cores the CPU ratio is the steadier one.

    python benchmarks/bench_evaluate.py                 # 25k x 384 and 100k x 128
    python benchmarks/bench_evaluate.py --shapes 10000x128 --repeat 3
    python benchmarks/bench_evaluate.py --shapes 50000x128 --query-fraction 0.5   # a split
    python benchmarks/bench_evaluate.py --shapes 100000x128 --far-range 1e-5:1e-3  # low FAR
"""

from __future__ import annotations

import argparse
import resource

import faiss
import numpy as np

import opis_cli
from _common import best_of, synthetic  # benchmarks/_common.py: the data every benchmark uses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="25000x384,100000x128")
    ap.add_argument("--rows-per-class", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--query-fraction", type=float, default=1.0,
                    help="every k-th row a query (k = 1/fraction), all rows the gallery; "
                         "FAISS then searches the queries only")
    ap.add_argument("--far-range", default="0.01:0.1",
                    help="the FAR-defined calibration range, e.g. 1e-5:1e-3 for the low "
                         "false-accept regimes of verification systems")
    args = ap.parse_args()
    step = max(1, round(1 / args.query_fraction))
    # warm the numba kernels (compiled once, cached on disk)
    xw, lw = synthetic(500, 16)
    opis_cli.evaluate(xw, lw)
    print(f"faiss {faiss.__version__}, threads: faiss {faiss.omp_get_max_threads()}")
    print(f"{'shape':>12} {'faiss k=10 s':>13} {'far-range s':>12} {'ratio':>6} {'cpu ratio':>9} "
          f"{'explicit s':>11} {'ratio':>6} {'cpu ratio':>9}")
    for shape in args.shapes.split(","):
        n, d = (int(v) for v in shape.lower().split("x"))
        x, labels = synthetic(n, d, args.rows_per_class)
        is_query = np.arange(n) % step == 0
        opts = {"is_query": is_query} if step > 1 else {}
        opts["far_range"] = args.far_range

        def faiss_search():
            index = faiss.IndexFlatIP(d)
            index.add(x)
            index.search(x[is_query] if step > 1 else x, 10)

        t_faiss = best_of(faiss_search, args.repeat)
        res = {}

        def far():
            res["far"] = opis_cli.evaluate(x, labels, **opts)

        t_far = best_of(far, args.repeat)
        cr = res["far"].calibration_range

        def explicit():
            opis_cli.evaluate(x, labels, calibration_range=(cr.lower, cr.upper),
                              **{k: v for k, v in opts.items() if k != "far_range"})

        t_exp = best_of(explicit, args.repeat)
        print(f"{shape:>12} {t_faiss[0]:13.2f} {t_far[0]:12.2f} {t_far[0] / t_faiss[0]:6.2f} "
              f"{t_far[1] / t_faiss[1]:9.2f} {t_exp[0]:11.2f} {t_exp[0] / t_faiss[0]:6.2f} "
              f"{t_exp[1] / t_faiss[1]:9.2f}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of this process: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
