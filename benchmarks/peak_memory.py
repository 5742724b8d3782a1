"""Peak memory of ``opis evaluate`` (or ``opis calibrate``) at a given size (default 200k x 128).

Writes synthetic clustered embeddings to a temporary .npy, runs the real
command in a child process and prints its peak resident memory (ru_maxrss of
the child) next to the size of the embeddings themselves.

    python benchmarks/peak_memory.py --rows 200000 --dim 128
    python benchmarks/peak_memory.py --rows 50000 --dim 128 --command calibrate
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--rows-per-class", type=int, default=20)
    ap.add_argument("--command", default="evaluate", choices=("evaluate", "calibrate"))
    ap.add_argument("extra", nargs="*", help="extra options for the command")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, d = args.rows, args.dim
    k = max(2, n // args.rows_per_class)
    centres = rng.standard_normal((k, d)).astype(np.float32)
    y = rng.integers(0, k, n)
    with tempfile.TemporaryDirectory() as tmp:
        emb = os.path.join(tmp, "emb.npy")
        lab = os.path.join(tmp, "labels.npy")
        x = np.empty((n, d), np.float32)
        for s in range(0, n, 50_000):
            e = min(n, s + 50_000)
            x[s:e] = centres[y[s:e]] + rng.standard_normal((e - s, d)).astype(np.float32)
        np.save(emb, x)
        np.save(lab, y)
        del x
        cmd = [sys.executable, "-m", "opis_cli.cli", args.command, emb, "--labels", lab, "-q",
               "--json", os.path.join(tmp, "r.json"), *args.extra]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"{args.command} {n} x {d}: peak RSS {peak:.2f} GiB (embeddings {n * d * 4 / 2**30:.2f} GiB), "
          f"wall {wall:.0f} s")


if __name__ == "__main__":
    main()
