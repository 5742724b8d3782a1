"""Memory held by the labels read from a separate labels file (``--labels``).

1M rows of 50,000 classes (``class-<k>``, or the integer k) written as
``.npy`` (int64 and str), ``.txt`` and ``.csv``; each read with
``opis_cli.io.labels.read_labels`` in a fresh child process that has already
imported the reader: the child's resident memory after the read minus
before (the labels held), and, in another child, the peak of the read's Python and NumPy
allocations (tracemalloc: not Arrow's buffers). No embeddings.

``--before DIR`` runs the same children on another copy of ``opis_cli``
(e.g. ``git archive <commit> opis_cli | tar -x -C DIR``) and prints the
ratio of the labels held, this tree over that one, measured in the same run.

    python benchmarks/bench_label_strings.py [--rows 1000000] [--classes 50000] [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r"""
import gc, json, sys, tracemalloc
import numpy as np
from opis_cli.io.labels import read_labels

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096

trace = sys.argv[2] == "peak"  # tracemalloc's own records would count in the RSS
gc.collect()
before = rss()
if trace:
    tracemalloc.start()
labels = read_labels(sys.argv[1], "label")
gc.collect()
out = {"held": rss() - before, "distinct_objects": len({id(v) for v in labels}),
       "rows": len(labels)}
if trace:
    out = {"peak": tracemalloc.get_traced_memory()[1]}
print(json.dumps(out))
"""


def _write(folder: str, rows: int, classes: int) -> dict[str, str]:
    y = np.random.default_rng(0).integers(0, classes, rows)
    words = np.array([f"class-{k}" for k in range(classes)])[y]
    paths = {name: os.path.join(folder, name) for name in
             ("int.npy", "str.npy", "labels.txt", "labels.csv")}
    np.save(paths["int.npy"], y.astype(np.int64))
    np.save(paths["str.npy"], words)
    with open(paths["labels.txt"], "w", encoding="utf-8") as fh:
        fh.write("\n".join(words.tolist()) + "\n")
    with open(paths["labels.csv"], "w", encoding="utf-8") as fh:
        fh.write("label\n" + "\n".join(words.tolist()) + "\n")
    return paths


def _child(path: str, code_dir: str) -> dict:
    """Two fresh children: the memory held (no tracing), then the traced peak."""
    env = {**os.environ, "PYTHONPATH": code_dir}
    got: dict = {}
    for mode in ("held", "peak"):
        # cwd: ``python -c`` puts the working folder first on sys.path
        out = subprocess.run([sys.executable, "-c", CHILD, path, mode], env=env, check=True,
                             cwd=code_dir, capture_output=True, text=True).stdout
        got.update(json.loads(out.strip().splitlines()[-1]))
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--classes", type=int, default=50_000)
    ap.add_argument("--before", help="another copy of opis_cli's parent folder to compare")
    args = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    mib = 2**20
    with tempfile.TemporaryDirectory() as folder:
        paths = _write(folder, args.rows, args.classes)
        print(f"{args.rows} labels of {args.classes} classes, read by read_labels "
              "(MiB held after the read; tracemalloc peak of the read in brackets)")
        for name, path in paths.items():
            now = _child(path, here)
            line = (f"{name:11} this tree {now['held'] / mib:7.1f} "
                    f"({now['peak'] / mib:6.1f}) {now['distinct_objects']:>8} objects")
            if args.before:
                old = _child(path, args.before)
                line += (f" | before {old['held'] / mib:7.1f} ({old['peak'] / mib:6.1f})"
                         f" {old['distinct_objects']:>8} objects | held ratio "
                         f"{now['held'] / old['held']:.3f}")
            print(line, flush=True)


if __name__ == "__main__":
    main()
