"""The exact engine against the limit: FAISS, plain numpy and pytorch-metric-learning.

For each shape (rows x dims, default 10k/50k/200k x 128/512) the same
synthetic embeddings (unit vectors, 20 rows per class) are written once and
every method runs in its own child process, so that each gets its own peak
memory (``ru_maxrss``). Printed per shape, with ratios to the FAISS search
measured in the same run:

* ``faiss``    one ``faiss.IndexFlatIP`` k=10 search of every row (add + search),
               run first and last: the faster of the two;
* ``blas``     the exact engine's inner products alone: one pass of the same
               BLAS tiles with no kernel (where the time of a pass goes);
* ``explicit`` ``opis_cli.evaluate`` with an explicit calibration range (one
               pass over the pairs; retrieval included);
* ``far``      ``opis_cli.evaluate`` with the default FAR-defined range
               (order statistic first: two passes and a pilot);
* ``numpy``    plain numpy for the same per-class counts on the same grid:
               blocked ``x @ x.T``, ``np.searchsorted`` and ``np.bincount`` per
               block (counts only: no retrieval, no order statistic);
* ``pml``      pytorch-metric-learning's ``AccuracyCalculator`` for
               precision@1 (= R@1) and MAP@R, where it is installed.

``far``'s peak is printed next to ``opis_cli.memory.memory_needed`` for the shape.
Read the ratios, not the seconds: a shared machine is noisy.

    python benchmarks/bench_scale.py
    python benchmarks/bench_scale.py --shapes 10000x128,50000x512 --methods faiss,far,explicit
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_mib, run_child, synthetic  # noqa: E402

METHODS = ("faiss", "blas", "explicit", "far", "numpy", "pml")
NUM_THRESHOLDS = 101


# ------------------------------------------------------------------ children


def _load(args):
    return np.load(args.x), np.load(args.y)


def child_faiss(args) -> dict:
    import faiss

    x, _ = _load(args)
    t = time.perf_counter()
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    index.search(x, 10)
    return {"seconds": time.perf_counter() - t}


def child_blas(args) -> dict:
    """One pass of the exact engine's BLAS tiles with no kernel, run the way
    the engine runs them (one worker per thread, BLAS single-threaded)."""
    from opis_cli.engines.base import DEFAULT_BLOCK_BYTES, inner_products, tile_rows
    from opis_cli.engines.workers import TileQueue, in_workers, workers_for

    x, _ = _load(args)
    n = len(x)
    tile = tile_rows(n)
    tiles = TileQueue(range(0, n, tile))
    xT = x.T

    def work(slot):
        S = np.empty((tile, n), np.float32)
        pad = np.zeros((tile, x.shape[1]), np.float32)
        for s in tiles:
            inner_products(x, s, min(n, s + tile), xT, S, pad)

    t = time.perf_counter()
    in_workers(workers_for(tile, DEFAULT_BLOCK_BYTES // (4 * n), -(-n // tile)), work, tiles)
    return {"seconds": time.perf_counter() - t}


def child_evaluate(args) -> dict:
    import opis_cli

    x, y = _load(args)
    opis_cli.evaluate(x[:300], y[:300])  # compile / load the kernels outside the timing
    kw = {}
    if args.range:
        lo, hi = (float(v) for v in args.range.split(":"))
        kw["calibration_range"] = (lo, hi)
    t = time.perf_counter()
    r = opis_cli.evaluate(x, y, num_thresholds=NUM_THRESHOLDS, **kw)
    sec = time.perf_counter() - t
    cur = r.classes.curves
    return {"seconds": sec, "range": [r.calibration_range.lower, r.calibration_range.upper],
            "tp": int(cur.tp.sum()), "fp": int(cur.fp.sum())}


def numpy_counts(x, y, lo, hi, K=NUM_THRESHOLDS, block_bytes=32 * 2**20):
    """Per-class cumulative TP and FP on ``linspace(lo, hi, K)`` (cosine, every
    row query and gallery), the straightforward numpy way."""
    _, yi = np.unique(y, return_inverse=True)
    C, n = int(yi.max()) + 1, len(x)
    grid = np.linspace(lo, hi, K)
    b = max(1, block_bytes // (4 * n))
    acc_all = np.zeros(C * (K + 1), np.int64)
    acc_pos = np.zeros(C * (K + 1), np.int64)
    for s in range(0, n, b):
        e = min(n, s + b)
        d = 1.0 - (x[s:e] @ x.T).astype(np.float64)
        d[np.arange(e - s), np.arange(s, e)] = np.inf  # never paired with itself
        r, c = np.nonzero(d <= hi)                     # pairs inside the range
        cell = np.searchsorted(grid, d[r, c], side="left")
        key = yi[s + r] * (K + 1) + cell
        acc_all += np.bincount(key, minlength=C * (K + 1))
        acc_pos += np.bincount(key[yi[s + r] == yi[c]], minlength=C * (K + 1))
    pp = np.cumsum(acc_all.reshape(C, K + 1)[:, :K], axis=1)
    tp = np.cumsum(acc_pos.reshape(C, K + 1)[:, :K], axis=1)
    return tp, pp - tp


def child_numpy(args) -> dict:
    x, y = _load(args)
    lo, hi = (float(v) for v in args.range.split(":"))
    t = time.perf_counter()
    tp, fp = numpy_counts(x, y, lo, hi)
    sec = time.perf_counter() - t
    # classes with one row have no positives: the engine leaves them out
    _, counts = np.unique(y, return_counts=True)
    ev = counts > 1
    return {"seconds": sec, "tp": int(tp[ev].sum()), "fp": int(fp[ev].sum())}


def child_pml(args) -> dict:
    try:
        import torch
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    except ImportError as e:
        return {"seconds": None, "error": f"not installed ({e})"}
    torch.set_num_threads(os.cpu_count() or 1)
    x, y = _load(args)
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                              k="max_bin_count", device=torch.device("cpu"))
    t = time.perf_counter()
    acc = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
    return {"seconds": time.perf_counter() - t, "r_at_1": acc["precision_at_1"],
            "map_at_r": acc["mean_average_precision_at_r"]}


CHILDREN = {"faiss": child_faiss, "blas": child_blas, "explicit": child_evaluate,
            "far": child_evaluate, "numpy": child_numpy, "pml": child_pml}


# ------------------------------------------------------------------ parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="10000x128,10000x512,50000x128,50000x512,"
                                        "200000x128,200000x512")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--x", help=argparse.SUPPRESS)
    ap.add_argument("--y", help=argparse.SUPPRESS)
    ap.add_argument("--range", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        out = CHILDREN[args.child](args)
        out["peak_mib"] = peak_mib()
        print(json.dumps(out))
        return

    from opis_cli.memory import memory_needed

    methods = [m for m in args.methods.split(",") if m]
    print(machine())
    print(f"{'shape':>11} {'method':>8} {'seconds':>9} {'/faiss':>7} {'peak MiB':>9}  notes")
    me = os.path.abspath(__file__)
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            n, d = (int(v) for v in shape.lower().split("x"))
            x, y = synthetic(n, d)
            xp, yp = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
            np.save(xp, x)
            np.save(yp, y)
            data_mib = x.nbytes / 2**20
            del x, y
            base = ["--x", xp, "--y", yp]
            res: dict[str, dict] = {}
            # the FAR run picks the range that explicit and numpy then use
            order = ["far"] + [m for m in methods if m != "far"] if "far" in methods or \
                "explicit" in methods or "numpy" in methods else methods
            for m in order:
                extra = []
                if m in ("explicit", "numpy"):
                    if "far" not in res:
                        res["far"] = run_child(me, ["--child", "far", *base])
                    lo, hi = res["far"]["range"]
                    extra = ["--range", f"{lo!r}:{hi!r}"]
                if m not in res:
                    res[m] = run_child(me, ["--child", m, *base, *extra])
            if "faiss" in res:  # the baseline once more, last: the best of two
                again = run_child(me, ["--child", "faiss", *base])
                res["faiss"]["seconds"] = min(res["faiss"]["seconds"], again["seconds"])
                res["faiss"]["peak_mib"] = max(res["faiss"]["peak_mib"], again["peak_mib"])
            t_faiss = res.get("faiss", {}).get("seconds")
            for m in methods:
                r = res[m]
                sec = r.get("seconds")
                ratio = f"{sec / t_faiss:7.2f}" if sec and t_faiss else f"{'-':>7}"
                note = ""
                if m == "far":
                    need = memory_needed(n, d, threads=os.cpu_count())["total"] / 2**20
                    note = f"memory_needed {need:.0f} MiB; data {data_mib:.0f} MiB"
                elif m == "numpy" and "explicit" in res:
                    # float32 products of other shapes round differently: pairs
                    # within an ulp of a threshold may land on the other side
                    e = res["explicit"]
                    note = (f"counts vs engine: tp {r['tp'] - e['tp']:+d} of {e['tp']}, "
                            f"fp {r['fp'] - e['fp']:+d} of {e['fp']}")
                elif m == "pml":
                    note = r.get("error") or f"R@1 {r['r_at_1']:.4f}, MAP@R {r['map_at_r']:.4f}"
                secs = f"{sec:9.2f}" if sec is not None else f"{'-':>9}"
                print(f"{shape:>11} {m:>8} {secs} {ratio} {r['peak_mib']:9.0f}  {note}",
                      flush=True)


if __name__ == "__main__":
    main()
