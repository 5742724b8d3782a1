"""Time and memory of ``--engine dask`` with workers that read their own Parquet shards.

Synthetic clustered embeddings (``_common.synthetic``: unit vectors around
random class centres, 20 rows per class), written as a folder of Parquet
files (``--files``, 64k-row row groups). Two runs on the same folder, each a
fresh child process, default options (FAR range 0.01:0.1, 101 thresholds,
retrieval included):

* local: ``read_dataset`` + ``opis_cli.evaluate`` with the exact engine
  (all cores);
* dask shards: ``open_parquet`` + ``evaluate`` with a ``LocalCluster`` of
  ``--workers`` processes (one thread each) whose tasks read their own
  blocks, ``--block-rows`` rows per block (default: half the rows, so that
  the 2-D split really has 2 x 2 blocks per pass).

Each child first runs a small evaluation (3,000 rows) so that compiling or
loading the kernels is not timed. Printed: seconds, the peak resident
memory of the client and of every worker process (``ru_maxrss`` read on
each worker at the end), the memory formula's prediction for a worker,
pairs per second and core, whether the two JSON documents agree
(provenance aside), and the ratios dask / local measured in the same run.

    python benchmarks/bench_dask_shards.py                  # 60k x 128
    python benchmarks/bench_dask_shards.py --rows 20000 --dim 64
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
from _common import machine, peak_mib, run_child, synthetic


def _doc(result) -> str:
    d = result.to_dict()
    d.pop("provenance")
    return json.dumps(d, sort_keys=True)


def write_folder(folder: str, n: int, d: int, files: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = synthetic(n, d, seed=seed)
    os.makedirs(folder, exist_ok=True)
    cuts = np.linspace(0, n, files + 1).astype(int)
    for i in range(files):
        s, e = cuts[i], cuts[i + 1]
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x[s:e].ravel()), d)
        pq.write_table(pa.table({"embedding": emb, "label": pa.array(y[s:e])}),
                       os.path.join(folder, f"part-{i:03d}.parquet"), row_group_size=65536)


def _warm_up(engine=None) -> None:
    """One small evaluation first, so that compiling (or loading) the
    kernels is not timed, in the client and in every worker."""
    import opis_cli

    if engine is None:
        x, y = synthetic(3000, 16, seed=1)
        opis_cli.evaluate(x, y)
        return
    from opis_cli.io.shards import open_parquet

    with tempfile.TemporaryDirectory() as tmp:
        write_folder(tmp, 3000, 16, 2, 1)
        ds = open_parquet(tmp)
        opis_cli.evaluate(ds.embeddings, ds.labels, engine=engine)


def child_local(folder: str, out: str) -> None:
    import opis_cli
    from opis_cli.io import read_dataset

    _warm_up()
    t0 = time.perf_counter()
    ds = read_dataset(folder)
    t1 = time.perf_counter()
    res = opis_cli.evaluate(ds.embeddings, ds.labels)
    t2 = time.perf_counter()
    with open(out, "w") as fh:
        fh.write(_doc(res))
    print(json.dumps({"read_s": t1 - t0, "evaluate_s": t2 - t1, "total_s": t2 - t0,
                      "peak_mib": peak_mib(), "opis": res.opis}))


def _worker_peak() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_dask(folder: str, out: str, workers: int, block_rows: int) -> None:
    import logging

    import distributed

    import opis_cli
    from opis_cli.engines.dask import DaskEngine
    from opis_cli.io.shards import open_parquet

    one = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", env=one,
                                       silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    _warm_up(DaskEngine(client=client, block_rows=1000))  # every worker runs a task
    t0 = time.perf_counter()
    ds = open_parquet(folder)
    t1 = time.perf_counter()
    res = opis_cli.evaluate(ds.embeddings, ds.labels,
                            engine=DaskEngine(client=client, block_rows=block_rows))
    t2 = time.perf_counter()
    peaks = sorted(client.run(_worker_peak).values())
    with open(out, "w") as fh:
        fh.write(_doc(res))
    notes = res.provenance["engine_notes"]
    print(json.dumps({"read_s": t1 - t0, "evaluate_s": t2 - t1, "total_s": t2 - t0,
                      "peak_mib": peak_mib(), "worker_peak_mib": peaks, "opis": res.opis,
                      "tasks": notes["tasks"], "blocks": notes["blocks"]}))
    client.close()
    cluster.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-rows", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, folder, out, *rest = a.child
        if kind == "local":
            child_local(folder, out)
        else:
            child_dask(folder, out, int(rest[0]), int(rest[1]))
        return
    from opis_cli.engines.base import tile_rows
    from opis_cli.engines.dask import CACHE_BLOCKS, WORKER_BASE_BYTES

    block_rows = a.block_rows or -(-a.rows // 2)
    print(machine())
    print(f"{a.rows} x {a.dim} float32 in {a.files} Parquet files, {a.workers} Dask workers "
          f"(1 thread each), blocks of {block_rows} rows")
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "ds")
        t = time.perf_counter()
        write_folder(folder, a.rows, a.dim, a.files, a.seed)
        print(f"  wrote the folder in {time.perf_counter() - t:.1f} s")
        me = os.path.abspath(__file__)
        local = run_child(me, ["--child", "local", folder, os.path.join(tmp, "local.json")])
        dask = run_child(me, ["--child", "dask", folder, os.path.join(tmp, "dask.json"),
                              str(a.workers), str(block_rows)])
        docs = []
        for name in ("local.json", "dask.json"):
            with open(os.path.join(tmp, name)) as fh:
                docs.append(fh.read())
        same = docs[0] == docs[1]
    emb_mib = a.rows * a.dim * 4 / 2**20
    tile = tile_rows(a.rows)
    model = (WORKER_BASE_BYTES + block_rows * ((CACHE_BLOCKS + 2) * a.dim * 4 + 21 * tile + 136
                                               + 32 * 101 + 2 * 8 * 25)) / 2**20
    print(f"  embeddings: {emb_mib:.0f} MiB")
    print(f"  local exact: {local['total_s']:.1f} s (read {local['read_s']:.1f} s), "
          f"peak {local['peak_mib']:.0f} MiB")
    print(f"  dask shards: {dask['total_s']:.1f} s (open {dask['read_s']:.1f} s), "
          f"{dask['blocks']} blocks, {dask['tasks']} tasks; client peak "
          f"{dask['peak_mib']:.0f} MiB, worker peaks "
          f"{', '.join(f'{p:.0f}' for p in dask['worker_peak_mib'])} MiB "
          f"(formula: {model:.0f} MiB)")
    pairs = float(a.rows) ** 2
    print(f"  pairs per second and core (all passes): local "
          f"{pairs / (local['total_s'] * (os.cpu_count() or 1)):.3g}, dask "
          f"{pairs / (dask['total_s'] * a.workers):.3g}")
    print(f"  ratios dask / local: time {dask['total_s'] / local['total_s']:.2f}, "
          f"client peak {dask['peak_mib'] / local['peak_mib']:.2f}, largest worker peak "
          f"{max(dask['worker_peak_mib']) / local['peak_mib']:.2f}")
    print(f"  same JSON (provenance aside): {same}")


if __name__ == "__main__":
    main()
