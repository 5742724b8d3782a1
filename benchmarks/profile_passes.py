"""Where the exact engine's time goes, as fractions of one FAISS search.

Runs ``opis_cli.evaluate`` (FAR-defined range, then the explicit range it
found) on the shared synthetic embeddings with the engine's pieces wrapped
in timers, and prints each piece's wall-clock time divided by the time of one
``faiss.IndexFlatIP`` k=10 search over the same rows, measured in this run
(best of two, before and after):

* ``pilot``         the sampled products that bracket the order statistics;
* ``pass 1``        the order-statistic pass (upper triangle when every row is
                    both query and gallery), split into BLAS products and the
                    compiled kernel;
* ``pass 2``        counts, retrieval and the report histogram, split likewise
                    (also over the upper triangle when every row is a query:
                    ``engines/symmetric.py``);
* ``rest``          preparing the input and building the result.

Workers run tiles in parallel, so a piece's share of a pass is its share of
the workers' summed time; the wall time of the pass is split in that ratio.

With ``--decisions LO:HI`` it prints instead what the float64 decisions
cost at that explicit range: the process CPU time of ``opis_cli.evaluate``
with float32 decisions (every margin 0, the private switch of
``base.key_margins``) and with float64 decisions, alternating, twice each,
with the kernel's and ``decide_deferred``'s thread CPU time, the number of
kernel calls (a tile whose deferred keys overflow their buffer runs again)
and of deferred elements.

    python benchmarks/profile_passes.py                    # 50000 x 128
    python benchmarks/profile_passes.py --shape 20000x512
    python benchmarks/profile_passes.py --shape 26700x384 --split   # every second row a query
    python benchmarks/profile_passes.py --shape 25000x384 --decisions 0.88:0.93
"""

from __future__ import annotations

import argparse
import collections
import threading
import time

import faiss
import numpy as np

import opis_cli
from _common import synthetic  # benchmarks/_common.py
from opis_cli.engines import _kernels, _sym_kernels, base as engine_base, exact as engine, tiles


def decisions(x, y, rng: tuple[float, float]) -> None:
    """CPU time of float32 against float64 decisions (``--decisions``)."""
    sec = collections.defaultdict(float)
    cnt = collections.defaultdict(int)
    lock = threading.Lock()

    def wrap(owner, name, as_name):
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            t = time.thread_time()
            try:
                return real(*args, **kwargs)
            finally:
                with lock:
                    sec[as_name] += time.thread_time() - t
                    cnt[as_name] += 1
                    if name == "decide_deferred":
                        cnt["deferred"] += len(args[0])

        setattr(owner, name, timed)

    # the kernel: full rows, or the upper triangle's strips (engines/symmetric.py)
    wrap(_kernels, "process_block", "process_block")
    wrap(_sym_kernels, "count_strip", "process_block")
    wrap(_kernels, "decide_deferred", "decide_deferred")
    print(f"explicit range {rng[0]:g}:{rng[1]:g}, process CPU seconds (all threads); "
          f"kernel and decide: thread CPU seconds")
    rows = {True: [], False: []}
    for f32 in (True, False, True, False):
        engine_base._FLOAT32_DECISIONS = f32
        sec.clear()
        cnt.clear()
        c = time.process_time()
        opis_cli.evaluate(x, y, calibration_range=rng)
        c = time.process_time() - c
        rows[f32].append(c)
        print(f"  {'float32' if f32 else 'float64'} decisions: CPU {c:6.2f}  kernel "
              f"{sec['process_block']:5.2f} ({cnt['process_block']} calls)  decide "
              f"{sec['decide_deferred']:5.2f} ({cnt['deferred']} deferred elements)",
              flush=True)
    print(f"  ratio of the best CPU times: {min(rows[False]) / min(rows[True]):.3f}")


class Timers:
    """Summed seconds per (stage, piece), from any thread."""

    def __init__(self):
        self.sec = collections.defaultdict(float)
        self.stage = "?"
        self.lock = threading.Lock()

    def wrap(self, owner, name: str, piece: str) -> None:
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                with self.lock:
                    self.sec[(self.stage, piece)] += time.perf_counter() - t

        setattr(owner, name, timed)

    def wrap_stage(self) -> None:
        real = engine.map_local
        timers = self

        def timed(prep, row_eval, row_sample, cfg, progress, stage):
            timers.stage = stage
            t = time.perf_counter()
            try:
                return real(prep, row_eval, row_sample, cfg, progress, stage)
            finally:
                timers.sec[(stage, "wall")] += time.perf_counter() - t

        engine.map_local = timed


def faiss_seconds(x, q) -> float:
    t = time.perf_counter()
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    index.search(q, 10)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="50000x128")
    ap.add_argument("--decisions", default=None, metavar="LO:HI",
                    help="time float32 against float64 decisions at this explicit range")
    ap.add_argument("--split", action="store_true",
                    help="every second row a query (is_query), all rows the gallery; FAISS "
                         "searches the queries")
    args = ap.parse_args()
    n, d = (int(v) for v in args.shape.lower().split("x"))
    x, y = synthetic(n, d)
    opis_cli.evaluate(x[:300], y[:300])  # compile / load the kernels first
    if args.decisions:
        decisions(x, y, tuple(float(v) for v in args.decisions.split(":")))
        return
    timers = Timers()
    timers.wrap(engine, "inner_products", "products")
    timers.wrap(tiles, "_strip_products", "products")  # the strips of both passes
    timers.wrap(_kernels, "process_block", "kernel")
    timers.wrap(_kernels, "process_strip", "kernel")
    timers.wrap(_sym_kernels, "count_strip", "kernel")
    timers.wrap(engine, "_pilot_windows", "wall")
    timers.wrap_stage()
    is_query = (np.arange(n) % 2 == 0) if args.split else None
    q = x[is_query] if args.split else x
    base = faiss_seconds(x, q)
    rows = []

    def timed(label: str, **kwargs):
        timers.sec.clear()
        timers.stage = "pilot"
        t = time.perf_counter()
        result = opis_cli.evaluate(x, y, is_query=is_query, **kwargs)
        rows.append((label, time.perf_counter() - t, dict(timers.sec)))
        return result

    cr = timed("FAR range").calibration_range
    timed("explicit range", calibration_range=(cr.lower, cr.upper))
    base = min(base, faiss_seconds(x, q))
    print(f"{args.shape}: one FAISS IndexFlatIP k=10 search {base:.2f} s "
          f"(best of two); each piece as a fraction of it")
    for label, total, sec in rows:
        print(f"\n{label}: {total:.2f} s = {total / base:.2f}")
        accounted = 0.0
        for stage in ("pilot", "order statistic", "counts", "distances"):
            wall = sec.get((stage, "wall"))
            if wall is None:
                continue
            accounted += wall
            work = sec.get((stage, "products"), 0.0) + sec.get((stage, "kernel"), 0.0)
            parts = ""
            if work > 0:
                share = {p: sec.get((stage, p), 0.0) / work for p in ("products", "kernel")}
                parts = "  (" + ", ".join(f"{p} {wall * f / base:.2f}"
                                          for p, f in share.items()) + ")"
            print(f"  {stage:16s} {wall / base:5.2f}{parts}")
        print(f"  {'rest':16s} {(total - accounted) / base:5.2f}")


if __name__ == "__main__":
    main()
