"""Time and memory of ``--engine sampled`` from 100k to 1M rows, and its error at 100k.

Synthetic clustered embeddings (``_common.synthetic``: unit vectors around
random class centres, per-class noise 0.8-2.5, 20 rows per class: 5,000 to
50,000 classes), float32, default options (FAR range 0.01:0.1, 101
thresholds, ``--negatives-per-query`` and ``--retrieval-queries`` at their
defaults, retrieval included). Each run is a fresh child process that loads
the embeddings from ``.npy`` into memory and calls ``opis_cli.evaluate``, so
its peak resident memory (``ru_maxrss``) is its own. Printed per size:

* seconds in all (prepare included) and by stage, and seconds per 100k rows
  (near-constant = linear growth);
* peak memory, the embeddings' size, and peak minus embeddings (the target:
  under 2 GiB at 1M x 384); also the peak of ``prepare()`` alone (the
  normalised, class-sorted float32 copy every engine works on), so the
  engine's own share is visible;
* the peak resident memory within each stage (``prepare``, the engine's
  passes, ``result``: building the result and its estimate block), above the
  memory held once the embeddings were loaded;
* at ``--exact-rows`` (default 100k) the exact engine once: its OPIS,
  10%-OPIS and range ends, and whether each lies in the sampled interval.

``--owned`` hands the loaded array over (``opis_cli.evaluate(...,
copy=False)``: it is normalised and put in class order in its own buffer),
so the prepared rows are not a second copy of the embeddings.

Run it on an otherwise idle machine; it takes several minutes (the exact
engine at 100k x 384 alone a few).

    python benchmarks/bench_sampled_scale.py
    python benchmarks/bench_sampled_scale.py --rows 100000 --exact-rows 0
    python benchmarks/bench_sampled_scale.py --rows 1000000 --exact-rows 0 --owned
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_mib, run_child, synthetic

CLUSTERED = (0.8, 2.5)
NAMES = ("opis", "epsilon_opis", "calibration_range.lower", "calibration_range.upper")


def _values(r) -> dict:
    cr = r.calibration_range
    return {"opis": r.opis, "epsilon_opis": r.epsilon_opis,
            "calibration_range.lower": cr.lower, "calibration_range.upper": cr.upper}


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _StagePeaks:
    """Peak resident memory within each stage, sampled every 5 ms (Linux)."""

    def __init__(self):
        self.stage, self.peaks, self.stop = "prepare", {}, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            r = _rss_mib()
            if r > self.peaks.get(self.stage, 0.0):
                self.peaks[self.stage] = r
            time.sleep(0.005)

    def close(self) -> dict:
        self.stop = True
        self.thread.join()
        return self.peaks


def child(args) -> dict:

    import opis_cli
    import opis_cli.api
    from opis_cli.prepare import prepare

    x, y = np.load(args.x), np.load(args.y)
    loaded = peak_mib()
    base = _rss_mib()
    if args.child == "prepare":
        t = time.perf_counter()
        prepare(x, y, consume=True) if args.owned else prepare(x, y)
        return {"seconds": time.perf_counter() - t, "loaded_mib": loaded}
    stages: dict = {}
    state = {"stage": None, "t": 0.0}
    peaks = _StagePeaks() if os.path.exists("/proc/self/statm") else None

    def progress(stage, done, total):
        if peaks is not None:
            peaks.stage = stage
        now = time.perf_counter()
        if stage != state["stage"]:
            if state["stage"] is not None:
                stages[state["stage"]] = stages.get(state["stage"], 0.0) + now - state["t"]
            state.update(stage=stage, t=now)

    engine = None
    if args.child == "sampled":
        from opis_cli.engines.sampled import SampledEngine

        engine = SampledEngine(seed=args.seed)
    t0 = time.perf_counter()
    build = opis_cli.api.build_result

    def build_result(*a, **k):  # the result and its estimate block: a stage of its own
        if peaks is not None:
            peaks.stage = "result"
        return build(*a, **k)

    opis_cli.api.build_result = build_result
    r = opis_cli.evaluate(x, y, engine=engine, progress=progress, timestamp=False,
                         copy=not args.owned)
    end = time.perf_counter()
    if peaks is not None:
        out_peaks = {k: round(v - base) for k, v in peaks.close().items()}
    if state["stage"] is not None:
        stages[state["stage"]] = stages.get(state["stage"], 0.0) + end - state["t"]
    out = {"seconds": end - t0, "stages": {k: round(v, 1) for k, v in stages.items()},
           "values": _values(r), "loaded_mib": loaded}
    if peaks is not None:
        out["stage_peaks_mib"] = out_peaks
    if r.estimate is not None:
        out["intervals"] = {k: list(r.estimate.intervals[k]) for k in NAMES}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="100000,300000,1000000")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--exact-rows", type=int, default=100000,
                    help="also run the exact engine at this size (0: never)")
    ap.add_argument("--seed", type=int, default=0, help="--seed of the sampled engine")
    ap.add_argument("--owned", action="store_true",
                    help="hand the loaded array over to prepare (consume=True)")
    ap.add_argument("--child", choices=("sampled", "exact", "prepare"), help=argparse.SUPPRESS)
    ap.add_argument("--x", help=argparse.SUPPRESS)
    ap.add_argument("--y", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        out = child(args)
        out["peak_mib"] = peak_mib()
        print(json.dumps(out))
        return

    print(machine())
    me = os.path.abspath(__file__)
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in args.rows.split(",")):
            x, y = synthetic(n, args.dim, spread=CLUSTERED)
            xp, yp = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
            np.save(xp, x)
            np.save(yp, y)
            emb = x.nbytes / 2**20
            del x, y
            files = ["--x", xp, "--y", yp, "--seed", str(args.seed)]
            if args.owned:
                files.append("--owned")
            prep = run_child(me, ["--child", "prepare", *files])
            res = run_child(me, ["--child", "sampled", *files])
            per = res["seconds"] / (n / 1e5)
            base = base or per
            print(f"\n{n} x {args.dim} ({n // 20} classes): sampled {res['seconds']:.1f} s "
                  f"({per:.1f} s per 100k rows, {per / base:.2f} x the first size), stages "
                  f"{res['stages']}")
            print(f"  peak {res['peak_mib']:.0f} MiB = embeddings {emb:.0f} MiB + "
                  f"{res['peak_mib'] - emb:.0f} MiB; prepare() alone peaks at "
                  f"{prep['peak_mib']:.0f} MiB ({prep['seconds']:.1f} s)"
                  + ("; the array handed over to prepare (--owned)" if args.owned else ""))
            if "stage_peaks_mib" in res:
                print("  peak by stage, MiB above the loaded embeddings: "
                      + ", ".join(f"{k} {v}" for k, v in res["stage_peaks_mib"].items()))
            v = res["values"]
            print("  " + ", ".join(f"{k} {v[k]:.6g} [{res['intervals'][k][0]:.6g}, "
                                   f"{res['intervals'][k][1]:.6g}]" for k in NAMES))
            if n == args.exact_rows:
                ex = run_child(me, ["--child", "exact", *files])
                inside = {k: res["intervals"][k][0] <= ex["values"][k] <= res["intervals"][k][1]
                          for k in NAMES}
                print(f"  exact engine: {ex['seconds']:.1f} s, peak {ex['peak_mib']:.0f} MiB; "
                      + ", ".join(f"{k} {ex['values'][k]:.6g} "
                                  f"({'inside' if inside[k] else 'OUTSIDE'})" for k in NAMES))


if __name__ == "__main__":
    main()
