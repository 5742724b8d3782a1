"""Distributed exact engine on Dask (the only module that imports dask).

The exact engine's passes are maps over chunks of query rows
(``exact.run_chunk``: one chunk against the whole gallery -> per-class count
histograms, a few histograms and per-query retrieval results) followed by a
sum (``exact.merge``), and its algorithm (``exact.run_exact``) takes the
mapper that runs them. This engine composes that algorithm with a mapper
that submits the chunks to Dask workers (:class:`_DaskChunks`); everything
else, including the order-statistic bookkeeping between passes, stays in
the client process, unchanged. Only small arrays travel back (``C x K``
counts, histograms, ``chunk`` per-query results).

Where the data lives: the client (the process running ``opis`` or
``evaluate()``) reads the input files and prepares the float32 arrays, then
sends them to every worker once (``Client.scatter(..., broadcast=True)``).
Workers never open files: they need the ``opis-cli`` package (same version)
and ``ng*D*4 + nq*D*4`` bytes of memory for the arrays, plus one block.

Results are identical to the local engine's: the engine computes every
inner product with BLAS calls of one fixed shape (``base.tile_rows``),
whatever the chunk, and all partial results are exact integers (or
per-query values) whose sum does not depend on the order they arrive in.

On one machine a local cluster does not make ``opis`` faster (the local
engine already uses every core) and holds one copy of the arrays per
worker; it is there to try the engine and to test it. The gain comes from
workers on other machines.

Usage::

    DaskEngine(workers=4)                      # LocalCluster of 4 processes
    DaskEngine(scheduler="tcp://host:8786")    # an existing cluster
    DaskEngine(client=client)                  # a Client you already hold
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import replace

from .base import DEFAULT_BLOCK_BYTES, EngineOutput, GridSpec, Progress, check_block_bytes
from .exact import PassConfig, merge, run_chunk, run_exact
from .. import options
from ..errors import ConfigError
from ..prepare import Prepared

try:
    import distributed
except ImportError:  # pragma: no cover - exercised only without the extra
    distributed = None

INSTALL_HINT = "pip install 'opis-cli[dask]'"
#: chunks per worker (more chunks balance the load; each costs one task)
CHUNKS_PER_WORKER = 4

# One chunk at a time per worker process: a chunk already keeps one engine
# worker per numba thread busy (``exact._workers``), and BLAS's thread limit
# is set per process while a chunk runs.
_TASK_LOCK = threading.Lock()


def _run_chunk_task(prep: Prepared, row_eval, row_sample, cfg: PassConfig, start: int,
                    stop: int) -> tuple[int, int, dict]:
    with _TASK_LOCK:
        return start, stop, run_chunk(prep, row_eval, row_sample, cfg, start, stop)


def _worker_version() -> str:
    from .._version import __version__

    return __version__


class _DaskChunks:
    """The chunk mapper of one run (see ``exact.ChunkMapper``): submits the
    chunks of every pass to the cluster of ``client``, on which ``prep``
    was scattered once; per-run arrays are scattered on first use and
    reused by later passes. ``tasks`` counts the tasks submitted."""

    def __init__(self, client, prep: Prepared, chunk_rows: int | None):
        self.client = client
        self.prep = client.scatter(prep, broadcast=True, hash=False)
        self.chunk_rows = chunk_rows
        self.arrays: dict = {}
        self.tasks = 0

    def _scattered(self, name: str, value):
        """Scatter a per-run array once; later passes reuse it."""
        key = (name, id(value))
        if key not in self.arrays:
            self.arrays[key] = self.client.scatter(value, broadcast=True, hash=False)
        return self.arrays[key]

    def __call__(self, prep: Prepared, row_eval, row_sample, cfg: PassConfig,
                 progress: Progress | None, stage: str) -> dict:
        client = self.client
        nq = len(prep.q_rows)
        # whole tiles, as in a local run: BLAS may round a row's products
        # differently at another position in its tile (OpenBLAS 0.3.31 does)
        b = cfg.tile
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        rows = self.chunk_rows or -(-nq // (CHUNKS_PER_WORKER * n_workers))
        rows = -(-max(1, rows) // b) * b
        bounds = [(s, min(nq, s + rows)) for s in range(0, nq, rows)]
        ef = self._scattered("row_eval", row_eval)
        sf = self._scattered("row_sample", row_sample)
        futures = [client.submit(_run_chunk_task, self.prep, ef, sf, cfg, s, e, pure=False)
                   for s, e in bounds]
        self.tasks += len(futures)
        if progress:
            progress(stage, 0, nq)
        parts = []
        done = 0
        try:
            for fut in distributed.as_completed(futures):
                s, e, part = fut.result()
                parts.append((s, e, part))
                done += e - s
                if progress:
                    progress(stage, done, nq)
        finally:
            for fut in futures:
                fut.release()
        parts.sort(key=lambda p: p[0])
        return merge(parts, nq)


class DaskEngine:
    """Exact counts with the map step on a Dask cluster.

    Parameters
    ----------
    block_bytes : as for the exact engine (results do not depend on it).
    scheduler : address of a running scheduler (``tcp://host:8786``).
    workers : start a ``distributed.LocalCluster`` of this many worker
        processes, one thread and one numba thread each (default when no
        scheduler is given: one per CPU).
    client : an existing ``distributed.Client`` (the caller keeps it open).
    chunk_rows : query rows per task (rounded up to whole tiles; default:
        about ``CHUNKS_PER_WORKER`` tasks per worker).
    """

    name = "dask"

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES, *, scheduler: str | None = None,
                 workers: int | None = None, client=None, chunk_rows: int | None = None):
        self.block_bytes = check_block_bytes(block_bytes)
        if distributed is None:
            raise ConfigError(f"--engine dask needs Dask distributed: {INSTALL_HINT}")
        if scheduler is not None and workers is not None:
            raise ConfigError("--scheduler and --workers exclude each other: --workers starts a "
                              "local cluster, --scheduler uses a running one")
        options.check("workers", workers)
        if chunk_rows is not None and int(chunk_rows) < 1:
            raise ConfigError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self.scheduler = scheduler
        self.workers = int(workers) if workers is not None else None
        self.client = client
        self.chunk_rows = chunk_rows

    # -- cluster --------------------------------------------------------------
    @contextmanager
    def _session(self):
        if self.client is not None:
            yield self.client
            return
        if self.scheduler is not None:
            try:
                client = distributed.Client(self.scheduler, timeout="30s")
            except (OSError, TimeoutError, ValueError) as e:
                raise ConfigError(f"--scheduler {self.scheduler}: cannot connect ({e})") from None
            try:
                yield client
            finally:
                client.close()
            return
        n = self.workers or os.cpu_count() or 1
        one = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", env=one,
                                           silence_logs=logging.ERROR)
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()

    def _check_workers(self, client) -> None:
        from .._version import __version__

        try:
            versions = client.run(_worker_version)
        except Exception as e:  # an import error on a worker arrives as itself
            raise ConfigError(f"--engine dask: the workers cannot run opis ({type(e).__name__}: "
                              f"{e}); install opis-cli {__version__} on every worker") from None
        if not versions:
            raise ConfigError("--engine dask: the cluster has no workers")
        bad = {w: v for w, v in versions.items() if v != __version__}
        if bad:
            w, v = next(iter(bad.items()))
            raise ConfigError(f"--engine dask: worker {w} runs opis-cli {v}, this client "
                              f"{__version__}; install the same version everywhere")

    # -- the engine -------------------------------------------------------------
    def run(self, prep: Prepared, spec: GridSpec,
            progress: Progress | None = None) -> EngineOutput:
        with self._session() as client:
            self._check_workers(client)
            n_workers = len(client.scheduler_info().get("workers", {}))
            chunks = _DaskChunks(client, prep, self.chunk_rows)
            out = run_exact(prep, spec, chunks, self.block_bytes, progress)
            tasks = chunks.tasks
            del chunks  # releases the scattered arrays before the session closes
        return replace(out, notes={**out.notes, "workers": n_workers, "tasks": tasks})
