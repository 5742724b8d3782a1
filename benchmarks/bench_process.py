"""The whole ``opis evaluate`` process against a bare FAISS search process.

What a user waits for from the shell: ``opis evaluate FILE --json OUT`` (the
FAR-defined range, retrieval included: start-up, imports, the numba cache,
reading the Parquet file, preparing, the passes and writing the JSON),
against a fresh Python process that reads the same Parquet file with pyarrow
and runs one ``faiss.IndexFlatIP`` k=10 search of the queries over every row
(add + search). Both are timed as child processes in this run, alternating,
best of ``--repeat`` after one warm-up each (the first ``opis`` run of a new
install compiles its kernels; that is not counted); the ratio of wall times
and of CPU times (user + system of the child, from ``wait4``) is printed.

Two cases on the same synthetic rows (``_common.synthetic``: unit vectors,
20 rows per class), written once as Parquet (``embedding`` fixed-size list,
``label``):

* ``all rows``: every row is a query and a gallery item;
* ``split``: an ``is_query`` column marks every second row a query
  (``--query-fraction 0.5``), every row stays in the gallery; FAISS then
  searches the queries only.

``opis`` is the console script installed beside this Python (``--entry
module``: ``python -m opis_cli.cli``, which keeps the interpreter's normal
exit; the script ends with ``os._exit`` once everything is written and the
``atexit`` handlers have run, ``cli.root.run``).

A third line times the fixed start-up: a process that imports ``opis_cli``
and evaluates 300 rows (the imports and the load of the cached kernels,
most of it numba's) against one that imports faiss and pyarrow.parquet.

``--without-warmup`` adds a third process per case, alternating with the
other two: ``opis`` with numba's one-time start-up not begun on a background
thread while the input is read (``_OPIS_NO_WARMUP=1``,
``opis_cli/engines/warmup.py``), the baseline of that overlap.

The machine may be shared: read the ratios, not the seconds (the CPU ratio
is the steadier one when other processes compete for the cores).

    python benchmarks/bench_process.py                      # 26700 x 384, both cases
    python benchmarks/bench_process.py --rows 100000 --dim 128 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, synthetic, timed_child  # noqa: E402

#: the bare FAISS process: read the Parquet file, add every row, search the queries
FAISS_CHILD = r"""
import sys
import numpy as np
import pyarrow.parquet as pq
import faiss
t = pq.read_table(sys.argv[1])
col = t.column("embedding").combine_chunks()
d = col.type.list_size
x = np.ascontiguousarray(col.values.to_numpy(zero_copy_only=False).reshape(-1, d), np.float32)
q = x[t.column("is_query").to_numpy(zero_copy_only=False)] if "is_query" in t.column_names else x
index = faiss.IndexFlatIP(d)
index.add(x)
index.search(q, 10)
"""


#: the fixed start-up of opis: imports, and the cached kernels loaded by a tiny run
#: (on the kernels' route, as the large runs above are: a run this small would
#: otherwise take the small-input route, which loads no numba)
STARTUP = ("import os; os.environ['_OPIS_SMALL_TERMS'] = '0'\n"
           "import numpy as np, opis_cli\n"
           "x = np.random.default_rng(0).standard_normal((300, 32)).astype(np.float32)\n"
           "opis_cli.evaluate(x, np.arange(300) % 10)\n")


#: a command line, or (command line, extra environment variables)
Cmd = "list[str] | tuple[list[str], dict[str, str]]"


def _child(cmd) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process, which must succeed."""
    if isinstance(cmd, tuple):
        return timed_child(cmd[0], env={**os.environ, **cmd[1]})
    return timed_child(cmd)


def _best(cmds: dict[str, Cmd], repeat: int) -> dict[str, tuple[float, float]]:
    """Best wall and best CPU of each command, run alternately after a warm-up."""
    for cmd in cmds.values():
        _child(cmd)
    best = {k: (float("inf"), float("inf")) for k in cmds}
    for _ in range(repeat):
        for k, cmd in cmds.items():
            w, c = _child(cmd)
            best[k] = (min(best[k][0], w), min(best[k][1], c))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=26_700)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cases", default="all,split,startup",
                    help="comma-separated: all, split, startup")
    ap.add_argument("--entry", choices=("script", "module"), default="script",
                    help="the `opis` console script beside this Python (what a user types; "
                         "it skips the interpreter's teardown), or `python -m opis_cli.cli` "
                         "(the interpreter's normal exit)")
    ap.add_argument("--without-warmup", action="store_true",
                    help="also time opis with numba's start-up not begun while the input "
                         "is read (_OPIS_NO_WARMUP=1, engines/warmup.py), alternating with "
                         "the others: the last two columns")
    args = ap.parse_args()
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    print(machine())
    print(f"{args.rows} x {args.dim} float32, Parquet; best of {args.repeat} after a warm-up")
    extra = f" {'no-warmup s':>11} {'ratio':>6}" if args.without_warmup else ""
    print(f"{'case':>10} {'faiss s':>8} {'opis s':>8} {'ratio':>6} {'cpu ratio':>9}{extra}")
    py = sys.executable
    script = os.path.join(os.path.dirname(py), "opis")
    if args.entry == "script" and not os.path.exists(script):
        ap.error(f"no console script {script} (pip install -e .), or use --entry module")
    entry = [script] if args.entry == "script" else [py, "-m", "opis_cli.cli"]
    print(f"opis: {' '.join(entry)}")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        x, y = synthetic(args.rows, args.dim)
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), args.dim)
        paths = {}
        for case in ("all", "split"):
            if case not in cases:
                continue
            cols = {"embedding": emb, "label": pa.array(y)}
            if case == "split":
                cols["is_query"] = pa.array(np.arange(args.rows) % 2 == 0)
            paths[case] = os.path.join(tmp, f"{case}.parquet")
            pq.write_table(pa.table(cols), paths[case])
        del x, y, emb
        out = os.path.join(tmp, "out.json")
        for case in cases:
            if case == "startup":
                cmds = {"faiss": [py, "-c", "import faiss, pyarrow.parquet"],
                        "opis": [py, "-c", STARTUP]}
            else:
                run = [*entry, "evaluate", paths[case], "-q", "--json", out]
                cmds = {"faiss": [py, "-c", FAISS_CHILD, paths[case]], "opis": run}
                if args.without_warmup:
                    cmds["cold"] = (run, {"_OPIS_NO_WARMUP": "1"})
            best = _best(cmds, args.repeat)
            (fw, fc), (ow, oc) = best["faiss"], best["opis"]
            line = f"{case:>10} {fw:8.2f} {ow:8.2f} {ow / fw:6.2f} {oc / fc:9.2f}"
            if "cold" in best:
                line += f" {best['cold'][0]:11.2f} {best['cold'][0] / fw:6.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
