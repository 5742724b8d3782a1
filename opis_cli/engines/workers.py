"""The one owner of the engines' worker threads and of BLAS's thread limit.

Each worker computes its own tiles' products (BLAS limited to one thread
meanwhile) and runs the compiled kernel on them, which releases the GIL: a
core does both its tile's matrix product and its kernel. (With BLAS threads
beside numba threads, BLAS's idle threads spin after each product and took
30-40% from the kernels, measured.) A single worker also calls BLAS with one
thread: OpenBLAS 0.3.31 rounds some products differently with more threads,
and a Dask worker (one thread) must give the same bytes.

:func:`run_tiles` is the pass of ``opis calibrate`` (``transfer.py``) and of
the calibration fits (``fit.py``): the exact engine's tiles (``tile_rows``,
``inner_products``: the same products, so a key is the same bits in every
pass) on the same workers.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable

import numpy as np

from ..prepare import Prepared
from .base import Progress, inner_products, quiet, tile_rows

#: the engines' worker threads and BLAS controller, made once per process
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_BLAS = None
_LOCK = threading.Lock()


def numba_threads() -> int:
    from . import _kernels

    return _kernels.num_threads()


def cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def one_blas_thread():
    """Context in which BLAS uses one thread (its idle threads would spin)."""
    global _BLAS
    with _LOCK:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


@contextmanager
def faiss_threads(n: int):
    """Context in which FAISS uses ``n`` OpenMP threads (one: its result does
    not depend on thread timing)."""
    import faiss

    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


def workers_for(tile: int, block_rows: int, n_tiles: int) -> int:
    """Tiles processed at once: one per numba thread, as many as the block
    holds (at least one), no more than there are tiles."""
    return max(1, min(numba_threads(), block_rows // tile, n_tiles))


class TileQueue:
    """The workers' shared queue of tiles (first rows); ``lock`` also guards
    the outputs they merge. ``cancel`` empties it, so that workers stop after
    their current tile when the caller gives up (an error, Ctrl-C)."""

    def __init__(self, starts):
        self._it = iter(starts)
        self.lock = threading.Lock()

    def __iter__(self):
        while True:
            with self.lock:
                item = next(self._it, None)
            if item is None:
                return
            yield item

    def cancel(self) -> None:
        with self.lock:
            self._it = iter(())


def in_workers(n_workers: int, work: Callable[[int], None], tiles: TileQueue) -> None:
    """Run ``work(slot)`` for ``slot in range(n_workers)`` concurrently on the
    process's pool, BLAS on one thread (module docstring)."""
    if n_workers == 1:
        with one_blas_thread():
            work(0)
        return
    global _POOL, _POOL_SIZE
    with _LOCK:
        if _POOL is None or _POOL_SIZE < n_workers:
            _POOL_SIZE = max(n_workers, numba_threads())
            _POOL = ThreadPoolExecutor(_POOL_SIZE, thread_name_prefix="opis-engine")
        pool = _POOL
    with one_blas_thread():
        futures = [pool.submit(work, slot) for slot in range(n_workers)]
        try:
            for f in futures:
                f.result()
        except BaseException:
            tiles.cancel()  # the other workers finish their tile and stop
            raise


def parallel_map(fn, items):
    """``fn`` over ``items`` on one thread per core, results in order (at most
    two per worker waiting), BLAS on one thread each: the sampled engine's
    blocks (whose products are small), the exact engine's deferred keys."""
    items = list(items)
    n = cores()
    with one_blas_thread():
        if n == 1 or len(items) < 2:
            for it in items:
                yield fn(it)
            return
        with ThreadPoolExecutor(n, thread_name_prefix="opis-map") as ex:
            waiting: deque = deque()
            for it in items:
                waiting.append(ex.submit(fn, it))
                if len(waiting) >= 2 * n:
                    yield waiting.popleft().result()
            while waiting:
                yield waiting.popleft().result()


def n_workers(prep: Prepared, block_bytes: int, rows: int | None = None) -> int:
    """Worker threads (and output slots) of a :func:`run_tiles` pass over
    ``rows`` query rows (default: all)."""
    ng = len(prep.g_rows)
    tile = tile_rows(ng)
    nq = len(prep.q_rows) if rows is None else rows
    return workers_for(tile, max(1, block_bytes // (4 * max(ng, 1))), len(range(0, nq, tile)))


def run_tiles(prep: Prepared, live: np.ndarray | None, block_bytes: int, stage: str,
              progress: Progress | None, body: Callable[[int, np.ndarray, int, int], None],
              rows: tuple[int, int] | None = None, max_workers: int | None = None) -> None:
    """Run ``body(slot, S, start, stop)`` on the product tile of every tile of
    query rows that holds a live row (``live`` (nq,) bool; None: every row),
    tiles cut from ``rows[0]`` to ``rows[1]`` (default: all rows), spread
    over :func:`n_workers` workers (at most ``max_workers``)."""
    ng = len(prep.g_rows)
    progress = progress or quiet
    start, stop = (0, len(prep.q_rows)) if rows is None else rows
    tile = tile_rows(ng)
    queue = TileQueue(range(start, stop, tile))
    done = [0]
    xgT = prep.xg.T
    workers = n_workers(prep, block_bytes, stop - start)
    if max_workers is not None:
        workers = max(1, min(workers, int(max_workers)))

    def work(slot: int) -> None:
        S = np.empty((tile, ng), np.float32)
        pad_q = np.zeros((tile, prep.xq.shape[1]), np.float32)
        for s in queue:
            e = min(stop, s + tile)
            if live is None or live[s:e].any():
                inner_products(prep.xq, s, e, xgT, S, pad_q)
                body(slot, S[:e - s], s, e)
            with queue.lock:
                done[0] += e - s
                progress(stage, done[0], stop - start)

    progress(stage, 0, stop - start)
    in_workers(workers, work, queue)
