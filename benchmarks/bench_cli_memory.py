"""Peak memory of ``opis evaluate`` run from the shell, with and without the hand-over.

Writes synthetic clustered float32 embeddings (``_common.synthetic``, 20 rows
per class) as ``.npy`` (+ labels ``.npy``) and/or as one Parquet file of a
single row group (what ``pyarrow.parquet.write_table`` writes up to 1M rows,
the worst case for a reader), then runs the real command in a fresh child
process per case and prints the child's peak resident memory (``ru_maxrss``
from ``wait4``), the embeddings' size and the peak above them (the target:
under 2 GiB at 1M x 384 with ``--engine sampled``).

``handed over`` is the CLI as it is: the reader fills one owned float32 array
that ``opis_cli.evaluate(..., copy=False)`` normalises and sorts in place.
``copied`` (``--copy``) runs the same command with ``copy=True`` forced (a
second float32 copy of the rows, as before the hand-over). Both JSON
documents are compared: apart from the provenance's time they must be the
same bytes.

    python benchmarks/bench_cli_memory.py --rows 1000000 --dim 384 --engine sampled
    python benchmarks/bench_cli_memory.py --rows 300000 --dim 384 --engine sampled --copy
    python benchmarks/bench_cli_memory.py --rows 100000 --dim 128 --engine exact --formats npy
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, synthetic

#: Runs the CLI with copy=True forced (the path before the hand-over).
_COPYING = (
    "import sys, opis_cli.api as api\n"
    "real = api.evaluate\n"
    "def copying(*a, **kw):\n"
    "    kw['copy'] = True\n"
    "    return real(*a, **kw)\n"
    "api.evaluate = copying\n"
    "from opis_cli.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _run(args: list[str], copy: bool) -> tuple[float, float, int]:
    """(peak RSS GiB, wall seconds, exit code) of one fresh child."""
    if copy:
        cmd = [sys.executable, "-c", _COPYING, *args]
    else:
        cmd = [sys.executable, "-m", "opis_cli.cli", *args]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 2**20, wall, proc.returncode


def _doc(path: str) -> str:
    with open(path) as fh:
        d = json.load(fh)
    d["provenance"].pop("time", None)
    return json.dumps(d, sort_keys=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--engine", default="sampled", choices=("sampled", "exact", "knn"))
    ap.add_argument("--formats", default="npy,parquet",
                    help="comma-separated: npy, parquet (default both)")
    ap.add_argument("--copy", action="store_true",
                    help="also run with copy=True forced (the rows copied once more)")
    ap.add_argument("--tmp", default=None, help="folder for the generated files")
    ap.add_argument("--keep", metavar="DIR", default=None,
                    help="write the inputs into DIR and keep them; reuse them when there "
                         "(several runs on one generated input; delete DIR afterwards)")
    ap.add_argument("extra", nargs="*", help="more options for opis evaluate")
    args = ap.parse_args()
    n, d = args.rows, args.dim
    emb_gib = n * d * 4 / 2**30
    print(machine())
    print(f"opis evaluate --engine {args.engine}, {n} x {d} float32 "
          f"(embeddings {emb_gib:.2f} GiB)")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    with (contextlib.nullcontext(args.keep) if args.keep else
          tempfile.TemporaryDirectory(dir=args.tmp)) as tmp:
        files: dict[str, list[str]] = {}
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        stem = os.path.join(tmp, f"{n}x{d}")
        np_path, lab, pq_path = stem + "-emb.npy", stem + "-labels.npy", stem + ".parquet"
        missing = (("npy" in formats and not (os.path.exists(np_path) and os.path.exists(lab)))
                   or ("parquet" in formats and not os.path.exists(pq_path)))
        x, y = synthetic(n, d, spread=(0.8, 2.5)) if missing else (None, None)
        if "npy" in formats:
            if not (os.path.exists(np_path) and os.path.exists(lab)):
                import numpy as np

                np.save(np_path, x)
                np.save(lab, y)
            files["npy"] = [np_path, "--labels", lab]
        if "parquet" in formats:
            if not os.path.exists(pq_path):
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.table({"embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(x.reshape(-1)), d), "label": pa.array(y)})
                pq.write_table(table, pq_path, row_group_size=max(n, 1))
                del table
            files["parquet"] = [pq_path]
        del x, y
        for fmt, inputs in files.items():
            docs = {}
            for copy in ([False, True] if args.copy else [False]):
                out = os.path.join(tmp, f"{fmt}-{copy}.json")
                cli = ["evaluate", *inputs, "--engine", args.engine, "-q", "--json", out,
                       *args.extra]
                peak, wall, rc = _run(cli, copy)
                if rc != 0:
                    raise SystemExit(f"{fmt}: opis evaluate exited {rc}")
                docs[copy] = _doc(out)
                how = "copied     " if copy else "handed over"
                print(f"{fmt:8s} {how}: peak RSS {peak:.2f} GiB, above the embeddings "
                      f"{peak - emb_gib:.2f} GiB, wall {wall:.0f} s")
            if len(docs) == 2:
                same = docs[False] == docs[True]
                print(f"{fmt:8s} JSON handed over == copied (provenance time aside): {same}")
                if not same:
                    raise SystemExit(1)


if __name__ == "__main__":
    main()
