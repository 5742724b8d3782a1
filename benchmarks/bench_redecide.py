"""Cost of the float64 re-decision (machine-independent results, issues 16, 27).

Times ``opis_cli.evaluate`` of this source tree with float64 decisions
against a baseline, each run in a fresh child process with the same data,
alternating baseline and candidate, best of ``--repeat``; prints the
candidate / baseline ratio of wall and CPU time. The baseline is, by
default, this same tree with float32 decisions (every margin 0, through the
private variable ``_OPIS_BENCH_FLOAT32_DECISIONS=1`` of ``base.key_margins``),
so that both sides share every other change; with ``--baseline TREE`` it is
another source tree (e.g. a checkout of the commit before the re-decision,
``git worktree add /tmp/base f78e648``, which lacks later features). The
machine is shared and noisy: read the ratios, not the seconds.

    python benchmarks/bench_redecide.py                                  # both shapes, FAR range
    python benchmarks/bench_redecide.py --shapes 25000x384 --range 0.88:0.93
    python benchmarks/bench_redecide.py --baseline /tmp/base --shapes 100000x128 --range 0.3:0.6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import synthetic

HERE = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
import numpy as np
import opis_cli
x = np.load(sys.argv[1]); y = np.load(sys.argv[2])
rng = None if sys.argv[3] == "far" else tuple(float(v) for v in sys.argv[3].split(":"))
opis_cli.evaluate(x[:600], y[:600])  # warm the kernels
t0 = time.perf_counter(); c0 = time.process_time()
r = opis_cli.evaluate(x, y, calibration_range=rng)
t1 = time.perf_counter(); c1 = time.process_time()
print(json.dumps({"wall": t1 - t0, "cpu": c1 - c0, "opis": r.opis}))
"""


def run(src: Path, xs: str, ys: str, rng: str, float32: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("_OPIS_BENCH_FLOAT32_DECISIONS", None)
    if float32:
        env["_OPIS_BENCH_FLOAT32_DECISIONS"] = "1"
    out = subprocess.run([sys.executable, "-c", CHILD, xs, ys, rng], env=env, check=True,
                         capture_output=True, text=True, cwd=tempfile.gettempdir())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="source tree of the baseline (default: this tree, float32 decisions)")
    ap.add_argument("--shapes", default="25000x384,100000x128")
    ap.add_argument("--range", default="far",
                    help="'far' (the default FAR-defined range) or an explicit LO:HI")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    print("baseline: " + ("this tree, float32 decisions" if args.baseline is None
                          else str(args.baseline)))
    print(f"{'shape':>12} {'range':>8} {'base s':>8} {'new s':>8} {'ratio':>6} {'cpu ratio':>9}")
    for shape in args.shapes.split(","):
        n, d = (int(v) for v in shape.lower().split("x"))
        x, y = synthetic(n, d)
        with tempfile.TemporaryDirectory() as tmp:
            xs, ys = f"{tmp}/x.npy", f"{tmp}/y.npy"
            np.save(xs, x)
            np.save(ys, y)
            base, new = [], []
            for _ in range(args.repeat):
                if args.baseline is None:
                    base.append(run(HERE, xs, ys, args.range, float32=True))
                else:
                    base.append(run(args.baseline, xs, ys, args.range))
                new.append(run(HERE, xs, ys, args.range))
        bw, nw = min(r["wall"] for r in base), min(r["wall"] for r in new)
        bc, nc = min(r["cpu"] for r in base), min(r["cpu"] for r in new)
        print(f"{shape:>12} {args.range:>8} {bw:8.2f} {nw:8.2f} {nw / bw:6.3f} {nc / bc:9.3f}"
              f"   OPIS {base[0]['opis']:.12g} -> {new[0]['opis']:.12g}")


if __name__ == "__main__":
    main()
