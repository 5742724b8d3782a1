"""Cost of ``--diagnose`` (SPEC 16): time ratio with / without, and peak memory.

Time: ``opis_cli.evaluate`` on the same synthetic embeddings without and with
``diagnose=True`` (the recommended threshold; FAR-defined range), best of
``--repeat``, in one process; prints both and their wall-clock and CPU
ratios. The machine is shared and noisy: read the ratios.

Memory: each ``--memory`` shape runs in a fresh child process (its
``ru_maxrss`` belongs to that run alone) and prints the peak above the
float32 embeddings it generated.

    python benchmarks/bench_diagnose.py                          # 26700 x 384, 5600 classes
    python benchmarks/bench_diagnose.py --shape 8000x384:1700 --repeat 2
    python benchmarks/bench_diagnose.py --shape none --memory 75000x384:20000
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import opis_cli
from _common import best_of, machine, peak_mib, run_child


def data(n: int, d: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``classes`` random centres, per-class spread 0.5..2 (as
    ``_common.synthetic``, with the number of classes given)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d)).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, classes).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        b = centres[y[s:e]] + scale[y[s:e], None] * rng.standard_normal((e - s, d),
                                                                       dtype=np.float32)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        x[s:e] = b
    return x, y


def parse(shape: str) -> tuple[int, int, int]:
    nd, c = shape.split(":")
    n, d = (int(v) for v in nd.lower().split("x"))
    return n, d, int(c)


def child(shape: str) -> None:
    n, d, c = parse(shape)
    x, y = data(n, d, c)
    before = peak_mib()
    t = time.perf_counter()
    r = opis_cli.evaluate(x, y, diagnose=True)
    print(json.dumps({"shape": shape, "seconds": time.perf_counter() - t,
                      "embeddings_mib": x.nbytes / 2**20, "peak_before_mib": before,
                      "peak_mib": peak_mib(), "overlapping_pairs": r.diagnosis.overlap_count,
                      "class_pairs": len(r.diagnosis.pairs)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="26700x384:5600", help="NxD:CLASSES, or none")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--memory", default="", help="NxD:CLASSES shapes (comma-separated) whose "
                                                 "peak memory is measured in a child process")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    print(machine())
    xw, yw = data(600, 16, 60)
    opis_cli.evaluate(xw, yw, diagnose=True)  # compile the kernels (cached on disk)
    if args.shape != "none":
        n, d, c = parse(args.shape)
        x, y = data(n, d, c)
        plain = best_of(lambda: opis_cli.evaluate(x, y), args.repeat)
        diag = best_of(lambda: opis_cli.evaluate(x, y, diagnose=True), args.repeat)
        print(f"{args.shape}: evaluate {plain[0]:.1f} s (cpu {plain[1]:.1f} s), with --diagnose "
              f"{diag[0]:.1f} s (cpu {diag[1]:.1f} s): ratio {diag[0] / plain[0]:.2f} "
              f"(cpu ratio {diag[1] / plain[1]:.2f})")
    for shape in filter(None, args.memory.split(",")):
        out = run_child(__file__, ["--child", shape])
        print(f"{shape}: evaluate --diagnose {out['seconds']:.1f} s, peak "
              f"{out['peak_mib']:.0f} MiB, embeddings {out['embeddings_mib']:.0f} MiB, "
              f"{out['peak_mib'] - out['embeddings_mib']:.0f} MiB above them "
              f"(process before evaluate: {out['peak_before_mib']:.0f} MiB); "
              f"{out['class_pairs']:,} class pairs accept, "
              f"{out['overlapping_pairs']:,} overlap")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
