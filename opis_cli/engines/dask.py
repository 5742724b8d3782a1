"""Distributed exact engine on Dask (the only module that imports dask).

The exact engine's passes are maps over pieces of the pairs (``exact.run_chunk``)
followed by a sum (``partial.merge``), and its algorithm (``exact.run_exact``)
takes the mapper that runs them. This engine composes that algorithm with a
mapper that submits the pieces to Dask workers; everything else, including
the order-statistic bookkeeping between passes, stays in the client process,
unchanged. Only small arrays travel back (``C x K`` counts, histograms,
per-query results or retrieval candidates).

Two ways to get the rows to the workers:

**Workers read their own shards** (Parquet input: one file, or a folder of
``*.parquet`` files at a path every worker can read; ``opis_cli.io.shards``).
The client reads only the label, group and query/gallery columns and the row
counts of every row group, arranges the rows as ``prepare()`` does, and never
reads the embedding column (the few rows it needs come from the workers,
see below). The rows (in storage order) are cut into ``nb`` blocks
of ``b`` rows; a task is one (query block, gallery block) pair: it loads the
query rows and the gallery rows of its two blocks from the row groups that
hold them (cached per worker process), turns them into float32 exactly as
``prepare()`` does (``prepare._float32_rows``; l2: the same 8-bit centre),
and runs ``exact.run_chunk`` on a ``Prepared`` that describes just that
pair of blocks (``_sub_prepared``: the gallery columns of the block in class
order, each query's positives the ones inside the block, its own row -1
when outside). Every count, histogram, gathered and deferred list is a sum
over gallery blocks; retrieval is not (a ranking needs the whole gallery),
so tasks keep, per query, the candidates that can be among its
``max(R, 8)`` nearest in their block, decided on float64 keys
(``base.exact_keys``, float32 keys within ``2 base.key_margins`` of the
cut-off re-decided); the workers merge them per query block by (key,
original row), one gallery block after the other, and compute the first
relevant rank and AP@R as ``_kernels._exact_topk`` does. The symmetric
strip mode of the order-statistic pass is off (every task reads full
blocks).

Per-worker memory (bytes) with blocks of ``b`` rows, D dimensions, tile ``t``
query rows per product (``base.tile_rows`` of the whole gallery: 64 for
galleries above a million rows), K thresholds, ``h`` the mean retrieval list
length (``max(R, 8)``, R the positives of a query)::

    c*b*D*4          cached float32 blocks (c = CACHE_BLOCKS = 2: the query
                     and the gallery block of the current task)
    + 2*b*D*4        the task's query and gallery rows in class order
    + t*b*21         one tile of products: float32 products (4), float64
                     keys (8), their partition (8) and a mask (1) in the
                     retrieval step (the counting kernel needs t*b*4)
    + b*136          two rows of float64 keys in the kernel, the blocks'
                     per-row metadata
    + b*K*32         the task's count histograms: the classes of its query
                     block only (at most b), renumbered
    + 2*b*h*25       retrieval candidates of a query block (the merge)
    + ~400 MiB       Python, numpy, numba and the Dask worker

``--worker-mib`` (``worker_bytes``) is that budget: ``b`` is the largest
number of rows whose terms fit in it with ``h = 8`` (``block_rows_for``), or
``block_rows`` when given. The client holds about 100 bytes per row (the
arrangement, norms and per-query results) and the ``C x K`` class counts;
of the embeddings, only the rows it asks the workers for: the pilot's
sample, in arrays whose other rows take no memory (``_sparse_rows``). The
pairs whose grid cell is decided after the FAR pass come back with their
float64 keys, computed where the rows are (``exact._resolve_deferred``).
Each pass runs ``nb**2`` pair tasks (``nb = ceil(N / b)``), plus ``nb**2`` merges and ``nb`` rankings in the pass with
retrieval; only ranks and AP@R come back. The retrieval step computes the
products of its two blocks a second time (``run_chunk`` does not hand its
tiles out): the pass with retrieval costs about twice a counting pass.

**Client scatters** (every other input, and arrays given to ``evaluate()``):
the client prepares the float32 arrays and sends them to every worker once
(``Client.scatter(..., broadcast=True)``); tasks are chunks of query rows
against the whole gallery (``_DaskChunks``). Workers then need ``ng*D*4 +
nq*D*4`` bytes for the arrays, plus one block.

Results are identical to the local engine's: every partial result is an
exact integer (or a per-query value, or a candidate list decided on float64
keys) whose sum does not depend on the order tasks finish in, on the block
size or on the number of workers.

On one machine a local cluster does not make ``opis`` faster (the local
engine already uses every core); it is there to try the engine and to test
it. The gain comes from workers on other machines.

Usage::

    DaskEngine(workers=4)                      # LocalCluster of 4 processes
    DaskEngine(scheduler="tcp://host:8786")    # an existing cluster
    DaskEngine(client=client)                  # a Client you already hold
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

import numpy as np

from .base import (DEFAULT_BLOCK_BYTES, EngineOutput, GridSpec, Progress, check_block_bytes,
                   exact_keys, key_margins, pair_keys, query_positives, quiet, tile_rows)
from .exact import PassConfig, pilot_sample, run_chunk, run_exact
from .partial import Part, Retrieval, merge
from .ranking import list_length, rank_lists
from .. import counts, options
from ..errors import ConfigError, InputError, OpisError
from ..prepare import Prepared, _float32_rows

try:
    import distributed
except ImportError:  # pragma: no cover - exercised only without the extra
    distributed = None

INSTALL_HINT = "pip install 'opis-cli[dask]'"
#: chunks per worker (more chunks balance the load; each costs one task)
CHUNKS_PER_WORKER = 4

# One chunk at a time per worker process: a chunk already keeps one engine
# worker per numba thread busy (``workers.workers_for``), and BLAS's thread limit
# is set per process while a chunk runs.
_TASK_LOCK = threading.Lock()


def _run_chunk_task(prep: Prepared, row_eval, row_sample, cfg: PassConfig, start: int,
                    stop: int) -> tuple[int, int, Part]:
    with _TASK_LOCK:
        return start, stop, run_chunk(prep, row_eval, row_sample, cfg, start, stop)


def _diagnosis_task(prep: Prepared, t: float, start: int, stop: int, block_bytes: int):
    """The diagnosis pass over query rows ``[start, stop)`` (``diagnose.PassPart``)."""
    from .diagnose import pass_range

    with _TASK_LOCK:
        return pass_range(prep, t, start, stop, block_bytes)


def _worker_version() -> str:
    from .._version import __version__

    return __version__


class _DaskChunks:
    """The chunk mapper of one run (see ``exact.ChunkMapper``): submits the
    chunks of every pass to the cluster of ``client``, on which ``prep``
    was scattered once; per-run arrays are scattered on first use and
    reused by later passes. ``tasks`` counts the tasks of the passes (a pass
    run again counts once)."""

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
                 progress: Progress | None, stage: str) -> Part:
        """One pass (run once more, its inputs scattered again, when the
        scheduler forgot its data: ``_once_more``)."""
        tasks = self.tasks

        def run(again: bool) -> Part:
            if again:
                self.prep = self.client.scatter(prep, broadcast=True, hash=False)
                self.arrays.clear()
                self.tasks = tasks  # the JSON's task count is the plan's
            return self._pass(prep, row_eval, row_sample, cfg, progress, stage)

        return _once_more(self.client, run)

    def _pass(self, prep: Prepared, row_eval, row_sample, cfg: PassConfig,
              progress: Progress | None, stage: str) -> Part:
        # whole tiles, as in a local run: BLAS may round a row's products
        # differently at another position in its tile (OpenBLAS 0.3.31 does)
        nq = len(prep.q_rows)
        ef = self._scattered("row_eval", row_eval)
        sf = self._scattered("row_sample", row_sample)
        futures = [self.client.submit(_run_chunk_task, self.prep, ef, sf, cfg, s, e, pure=False)
                   for s, e in _row_ranges(self.client, nq, cfg.tile, self.chunk_rows)]
        self.tasks += len(futures)
        parts = _gather(futures, progress, stage, nq, lambda p: p[1] - p[0])
        parts.sort(key=lambda p: p[0])
        return merge([p[2] for p in parts], nq, prep.n_classes)


def _once_more(client, run):
    """``run(False)``; when that raises ``FutureCancelledError`` while a
    worker the work started with is still alive, ``run(True)`` (which sends
    its inputs again): under load, a worker killed mid-pass can take a
    task's future with it ("already forgotten") although every input is on
    every worker. The result is the same bytes. With no worker of the work
    left, the error stands (``DaskEngine._session`` makes it one line)."""
    before = set(client.scheduler_info().get("workers", {}))
    try:
        return run(False)
    except distributed.client.FutureCancelledError:
        # the scheduler's list, not the workers: asking a dead worker would
        # wait out the connect timeout (a restarted one has a new address)
        if not before & set(client.scheduler_info().get("workers", {})):
            raise
    return run(True)


def _n_workers(client) -> int:
    return len(client.scheduler_info().get("workers", {}))


def _row_ranges(client, nq: int, tile: int, chunk_rows: int | None) -> list[tuple[int, int]]:
    """Query rows ``[s, e)`` of each task: ``chunk_rows`` (default: about
    ``CHUNKS_PER_WORKER`` tasks per worker), rounded up to whole tiles."""
    rows = chunk_rows or -(-nq // (CHUNKS_PER_WORKER * max(1, _n_workers(client))))
    rows = -(-max(1, rows) // tile) * tile
    return [(s, min(nq, s + rows)) for s in range(0, nq, rows)]


def _gather(futures: list, progress: Progress | None, stage: str, nq: int, rows_of) -> list:
    """The results of ``futures`` as they complete (each future released once
    read, every one on the way out), with progress: ``rows_of(result)`` query
    rows done (a float for a share of them)."""
    progress = progress or quiet
    progress(stage, 0, nq)
    out = []
    done = 0.0
    try:
        for fut in distributed.as_completed(futures):
            out.append(fut.result())
            fut.release()
            done += rows_of(out[-1])
            progress(stage, min(nq, int(done)), nq)
    finally:
        for fut in futures:
            fut.release()
    return out


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
        about ``CHUNKS_PER_WORKER`` tasks per worker), when the client
        scatters the arrays.
    worker_bytes : memory budget of one worker when workers read their own
        shards (module docstring): sets the block size.
    block_rows : rows per block when workers read their own shards
        (overrides ``worker_bytes``; results do not depend on it).
    """

    name = "dask"

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES, *, scheduler: str | None = None,
                 workers: int | None = None, client=None, chunk_rows: int | None = None,
                 worker_bytes: int = options.WORKER_MIB * 2**20, block_rows: int | None = None):
        self.block_bytes = check_block_bytes(block_bytes)
        if distributed is None:
            raise ConfigError(f"--engine dask needs Dask distributed: {INSTALL_HINT}")
        if scheduler is not None and workers is not None:
            raise ConfigError("--scheduler and --workers exclude each other: --workers starts a "
                              "local cluster, --scheduler uses a running one")
        options.validate(workers=workers, worker_mib=int(worker_bytes) // 2**20)
        for name, rows in (("chunk_rows", chunk_rows), ("block_rows", block_rows)):
            if rows is not None and int(rows) < 1:
                raise ConfigError(f"{name} must be at least 1, got {rows}")
        self.scheduler = scheduler
        self.workers = int(workers) if workers is not None else None
        self.client = client
        self.chunk_rows = chunk_rows
        self.worker_bytes = int(worker_bytes)
        self.block_rows = int(block_rows) if block_rows is not None else None
        #: the client of the open ``session`` (None outside one)
        self._session_client = None

    # -- cluster --------------------------------------------------------------
    @contextmanager
    def session(self):
        """One client for every pass inside the ``with`` (``evaluate()``'s run
        and its diagnosis pass): the local cluster this engine starts (no
        ``scheduler`` or ``client`` given) is started once, on entry, and
        closed on exit, whether the block returns or raises; a ``scheduler``
        is connected to once, and only that connection is closed. A
        ``client`` given to the engine is used as it is and never closed.
        Re-entering an open session uses it. Without a session, ``run`` and
        ``diagnosis_pass`` each start (and close) their own cluster."""
        if self.client is not None or self._session_client is not None:
            yield
            return
        with ExitStack() as stack:
            self._session_client = self._connect(stack)
            try:
                yield
            finally:
                self._session_client = None

    def _connect(self, stack: ExitStack):
        """A new client of a running scheduler, or of a new local cluster,
        closed (with the cluster) by ``stack``."""
        if self.scheduler is not None:
            try:
                client = distributed.Client(self.scheduler, timeout="30s")
            except (OSError, TimeoutError, ValueError) as e:
                raise ConfigError(f"--scheduler {self.scheduler}: cannot connect ({e})"
                                  ) from None
            stack.callback(client.close)
            return client
        one = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        cluster = distributed.LocalCluster(
            n_workers=self.workers or os.cpu_count() or 1, threads_per_worker=1,
            processes=True, dashboard_address=":0", env=one, silence_logs=logging.ERROR)
        stack.callback(cluster.close)
        return stack.enter_context(distributed.Client(cluster))

    @contextmanager
    def _session(self, during: str):
        """A client of the cluster (this engine's, the open ``session``'s, a
        running scheduler's, or a new local cluster's), its workers checked
        (``_check_workers``). Workers lost ``during`` the work with data the
        remaining tasks need (every worker lost) end it with one
        ``OpisError``; a worker whose data is still held by another (the rows
        given to ``evaluate()`` are on every worker) is survived by Dask: its
        tasks are computed again elsewhere, with the same result."""
        with ExitStack() as stack:
            client = self.client if self.client is not None else self._session_client
            if client is None:
                client = self._connect(stack)
            self._check_workers(client)
            try:
                yield client
            except distributed.scheduler.NoWorkerError as e:
                raise OpisError(
                    f"--engine dask: the cluster lost its workers during {during}, and none "
                    "came back within distributed.scheduler.no-workers-timeout "
                    f"({e.timeout:g} s); run again once the workers are back") from e
            except (distributed.client.FutureCancelledError, distributed.KilledWorker) as e:
                raise OpisError(
                    f"--engine dask: the cluster lost its workers during {during}, and with them "
                    f"data the remaining tasks need ({type(e).__name__}: "
                    f"{' '.join(str(e).split())}); run again once the workers are back") from e

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
        """The exact counts on the cluster. A worker lost in the middle of a
        pass is survived when the data its tasks need is still held by
        another (the rows given to ``evaluate()`` are on every worker: the
        tasks are computed again there, the result is the same); when it is
        not (every worker lost), one ``OpisError`` says so (``_session``). On
        a Parquet input every task can be computed again from the files, so
        workers that come back (a nanny restarts them) are enough; a run
        whose workers are gone for good waits for them, or, with Dask's
        ``distributed.scheduler.no-workers-timeout`` set, stops with one
        ``OpisError``."""
        with self._session("the run") as client:
            notes = {"workers": _n_workers(client)}
            if hasattr(prep.xq, "shards"):  # workers read their own shards
                run = _ShardRun(client, prep, self._rows_per_block(prep, spec.num_thresholds),
                                spec.min_class_rows)
                try:
                    out = run_exact(run.prepared(), spec, run, self.block_bytes, progress)
                finally:
                    run.release()
                notes.update(tasks=run.tasks, blocks=run.n_blocks, block_rows=run.rows)
            else:
                chunks = _DaskChunks(client, prep, self.chunk_rows)
                out = run_exact(prep, spec, chunks, self.block_bytes, progress)
                notes["tasks"] = chunks.tasks
                del chunks  # releases the scattered arrays before the session closes
        return replace(out, notes={**out.notes, **notes})

    # -- the diagnosis pass (SPEC 16) -----------------------------------------------
    def diagnosis_pass(self, prep: Prepared, t: float, block_bytes: int,
                       progress: Progress | None = None) -> dict:
        """The diagnosis pass (``engines.diagnose.pass_range``) on the workers:
        the query rows cut into ranges of whole tiles (not aligned to the
        classes: a class cut in two is flushed by both ranges and its
        entries summed), one task per range against the whole gallery;
        the client merges the typed parts (``diagnose.merge_parts``: rows
        placed by index, integer sums of equal ``(c, c')`` keys), so the
        result is that of one local pass, whatever the split and the
        number of workers. The rows are scattered to every worker once."""
        from .diagnose import merge_parts

        if hasattr(prep.xq, "shards"):  # refused before any work (api.evaluate)
            raise ConfigError("--diagnose: the Dask workers reading Parquet shards do not "
                              "diagnose yet")
        nq = len(prep.q_rows)
        with self._session("the diagnosis") as client:
            def run(again: bool) -> list:
                scattered = client.scatter(prep, broadcast=True, hash=False)
                futures = [client.submit(_diagnosis_task, scattered, float(t), s, e,
                                         int(block_bytes), pure=False)
                           for s, e in _row_ranges(client, nq, tile_rows(len(prep.g_rows)),
                                                   self.chunk_rows)]
                return _gather(futures, progress, "diagnosis", nq, lambda p: p.stop - p.start)

            parts = _once_more(client, run)
        return merge_parts(parts, nq, prep.n_classes)

    def _rows_per_block(self, prep: Prepared, K: int) -> int:
        if self.block_rows is not None:
            return self.block_rows
        return block_rows_for(self.worker_bytes, prep.dim, tile_rows(len(prep.g_rows)), int(K))


# -- workers read their own shards -----------------------------------------------

#: float32 blocks kept per worker process (the query and gallery block of a task)
CACHE_BLOCKS = 2
#: Python, numpy, numba and the Dask worker itself (the formula's constant)
WORKER_BASE_BYTES = 400 * 2**20


def block_rows_for(worker_bytes: int, dim: int, tile: int, K: int) -> int:
    """Rows per block that keep one worker within ``worker_bytes`` (the
    formula of the module docstring, with 8 retrieval candidates per
    query), at least 256."""
    per_row = (CACHE_BLOCKS + 2) * dim * 4 + 21 * tile + 136 + 32 * K + 2 * 8 * 25
    return max(256, (int(worker_bytes) - WORKER_BASE_BYTES) // per_row)


@dataclass
class _Block:
    """One block of rows (storage rows ``[a, b)``) as the tasks see it.

    ``qi`` / ``gi`` are the prepared (class-sorted) query / gallery indices
    of the block's rows, ascending; ``q_loc`` / ``g_loc`` their rows within
    the block. The other arrays are the per-row fields of ``Prepared`` at
    those indices (``self_col`` still a column of the whole gallery);
    ``R`` the positives of each query, ``hsize`` its retrieval list length
    (0: no retrieval).
    """

    index: int
    a: int
    b: int
    qi: np.ndarray
    q_loc: np.ndarray
    q_rows: np.ndarray
    q_class: np.ndarray
    q_group: np.ndarray | None
    self_col: np.ndarray
    qn2: np.ndarray
    q_off: np.ndarray | None
    hsize: np.ndarray
    R: np.ndarray
    row_eval: np.ndarray
    row_sample: np.ndarray
    gi: np.ndarray
    g_loc: np.ndarray
    g_rows: np.ndarray
    g_class: np.ndarray
    gn2: np.ndarray
    g_off: np.ndarray | None


@dataclass(frozen=True)
class _Layout:
    """What every task of a run shares (small; a task's result, ``_held``)."""

    shards: object          # opis_cli.io.shards.ParquetShards: read_rows(rows)
    metric: str
    centre: np.ndarray | None
    n_groups: int
    n_samples: int
    dim: int


# The worker process's cache of float32 blocks: (token, metric, a, b) -> rows [a, b)
_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: blocks loaded by this worker process (tests read it with _worker_loads)
_LOADS: list = []


def _float32_block(shards, metric: str, a: int, b: int) -> np.ndarray:
    """Storage rows ``[a, b)`` as ``prepare()`` turns them into float32
    (normalised for cosine; not yet centred), cached per worker process."""
    key = (shards.token, metric, a, b)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    x = _float32_checked(shards.read_rows(np.arange(a, b)), metric, a)
    _LOADS.append((a, b))
    del _LOADS[:-1000]  # the last ones are enough
    with _CACHE_LOCK:
        _CACHE[key] = x
        while len(_CACHE) > CACHE_BLOCKS:
            _CACHE.popitem(last=False)
    return x


def _float32_checked(raw: np.ndarray, metric: str, first_row) -> np.ndarray:
    """``prepare._float32_rows`` with its messages naming the original row
    (``first_row``: the row of ``raw[0]``, or an array of every row)."""
    try:
        return _float32_rows(raw, metric)
    except InputError as e:
        import re

        m = re.match(r"embeddings: row (\d+) (.*)", str(e))
        if m is None:
            raise
        i = int(m.group(1))
        row = int(first_row[i]) if isinstance(first_row, np.ndarray) else first_row + i
        raise InputError(f"embeddings: row {row} {m.group(2)}") from None


def _centred(x: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    """``x`` (a fresh copy) moved by the l2 centre, as ``prepare()`` does."""
    if centre is not None:
        x -= centre
    return np.ascontiguousarray(x)


def _sub_prepared(lay: _Layout, qb: _Block, gb: _Block) -> Prepared:
    """The ``Prepared`` of the pairs (queries of ``qb``) x (gallery rows of
    ``gb``): rows loaded from the worker's cache, gallery columns in class
    order, each query's positives and own column as columns of the block,
    classes numbered among the block's queries' (``np.unique(qb.q_class)``)."""
    xq_all = _float32_block(lay.shards, lay.metric, qb.a, qb.b)
    xq = _centred(xq_all[qb.q_loc], lay.centre)
    if qb.index == gb.index and np.array_equal(qb.q_loc, gb.g_loc):
        xg = xq
    else:
        xg_all = _float32_block(lay.shards, lay.metric, gb.a, gb.b)
        xg = _centred(xg_all[gb.g_loc], lay.centre)
    # the classes of the block's queries only, renumbered 0..Cq-1: the task's
    # count histograms are Cq x K whatever the number of classes
    cls = np.unique(qb.q_class)
    C = len(cls)
    class_start = np.searchsorted(gb.g_class, cls, side="left").astype(np.int64)
    class_end = np.searchsorted(gb.g_class, cls, side="right").astype(np.int64)
    pos = np.searchsorted(gb.gi, qb.self_col)
    inside = (qb.self_col >= 0) & (pos < len(gb.gi))
    inside &= gb.gi[np.minimum(pos, max(len(gb.gi) - 1, 0))] == qb.self_col if len(gb.gi) \
        else False
    self_col = np.where(inside, pos, -1).astype(np.int64)
    return Prepared(
        metric=lay.metric, xq=xq, xg=xg, qn2=qb.qn2, gn2=gb.gn2, q_rows=qb.q_rows,
        g_rows=gb.g_rows, q_class=np.searchsorted(cls, qb.q_class), g_class=gb.g_class,
        q_group=qb.q_group, self_col=self_col, class_start=class_start, class_end=class_end,
        class_labels=range(C), class_rows=np.zeros(C, np.int64),
        group_labels=range(lay.n_groups) if lay.n_groups else None, group_rows=None,
        n_samples=lay.n_samples, dim=lay.dim, q_off=qb.q_off, g_off=gb.g_off)


_NO_CANDIDATES = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool))


def _candidates(sub: Prepared, hsize: np.ndarray, tile: int) -> tuple:
    """Per query of ``sub``, the gallery items of this block that can be
    among its ``hsize`` nearest over the whole gallery, by (float64 key,
    original row): the first ``min(hsize, available)`` of the block.

    The keys of the float32 products (``base.pair_keys``) choose a cut-off
    ``T`` (the ``k``-th smallest of the row, ``_cut_candidates``);
    every column within ``T + 2 M`` (``M = base.key_margins``) gets its
    float64 key (``base.exact_keys``), and the first ``k`` by (float64 key,
    original row) are kept: a column among them has a float32 key of at
    most its float64 key + M <= (the k-th float64 key) + M <= T + 2 M.
    Returns ``(q, key, orig, is_pos)`` arrays (``q``: query index within
    ``sub``), in (q, key, orig) order.
    """
    nq, ng = len(sub.q_rows), len(sub.g_rows)
    out_q, out_k, out_o, out_p = [], [], [], []
    if ng == 0 or not (hsize > 0).any():
        return _NO_CANDIDATES
    margins = key_margins(sub)
    ps = sub.class_start[sub.q_class]
    pe = sub.class_end[sub.q_class]
    xgT = sub.xg.T
    for s in range(0, nq, tile):
        e = min(nq, s + tile)
        h = np.ascontiguousarray(hsize[s:e])
        if not (h > 0).any():
            continue
        S = sub.xq[s:e] @ xgT
        r, c = _cut_candidates(S, sub, s, h, 2.0 * margins[s:e])
        del S
        r = r + s
        k = np.minimum(h, ng - (sub.self_col[s:e] >= 0))
        ek = exact_keys(sub, r, c)
        orig = sub.g_rows[c]
        order = np.lexsort((orig, ek, r))
        r, c, ek, orig = r[order], c[order], ek[order], orig[order]
        first = np.searchsorted(r, r, side="left")
        keep = (np.arange(len(r)) - first) < k[r - s]
        r, c, ek, orig = r[keep], c[keep], ek[keep], orig[keep]
        out_q.append(r)
        out_k.append(ek)
        out_o.append(orig)
        out_p.append((c >= ps[r]) & (c < pe[r]))
    if not out_q:
        return _NO_CANDIDATES
    return (np.concatenate(out_q), np.concatenate(out_k), np.concatenate(out_o),
            np.concatenate(out_p))


def _cut_candidates(S, sub: Prepared, s: int, h: np.ndarray, slack: np.ndarray):
    """(row, column) of a superset of the products of ``S`` (query rows
    ``s...`` of ``sub``) whose key is at most the row's ``k``-th smallest
    key plus ``slack[row]`` (``k = min(h, columns other than the row's
    own)``; its own column never).

    The keys are ranked through a float32 stand-in ``f`` that differs from
    ``key - c_row`` by at most ``eps`` (cosine: ``-s``, exact; l2: ``gn2 -
    2 s`` in float32), so the k-th smallest ``f`` plus ``slack + 2 eps``
    keeps every column the float64 keys keep; with offsets (a calibration)
    the float64 keys themselves (``base.pair_keys``).
    """
    B, ng = S.shape
    sc = sub.self_col[s:s + B]
    has = sc >= 0
    k = np.minimum(h, ng - has)
    live = k > 0
    if sub.q_off is None and sub.metric == "cosine":
        f = np.negative(S)
        eps = 2.0 ** -40
    elif sub.q_off is None:
        gmax = float(sub.gn2.max())
        smax = math.sqrt(float(sub.qn2[s:s + B].max()) * gmax) + 1e-30
        f = sub.gn2.astype(np.float32)[None, :] - 2 * S
        eps = 2.0 ** -21 * (gmax + 2 * smax) + 1e-30
    else:
        f = pair_keys(S, sub.qn2[s:s + B], sub.gn2, sub.metric == "l2", sub.q_off[s:s + B],
                      sub.g_off)
        eps = 0.0
    f[np.nonzero(has)[0], sc[has]] = np.inf
    kmax = int(k.max())  # one selection, then the kmax smallest of each row sorted
    part = np.partition(f, kmax - 1, axis=1)[:, :kmax]
    part.sort(axis=1)
    lim = np.full(B, -np.inf)
    rows = np.nonzero(live)[0]
    lim[rows] = part[rows, k[live] - 1].astype(np.float64) + slack[live] + 2 * eps
    del part
    if f.dtype == np.float32:  # rounded up: the float32 comparison keeps a superset
        lim = np.nextafter(lim.astype(np.float32), np.float32(np.inf))
    r, c = np.nonzero(f <= lim[:, None])
    return r, c


def _pair_task(lay: _Layout, qb: _Block, gb: _Block, cfg: PassConfig, ret: bool):
    """One (query block, gallery block) of one pass: ``exact.run_chunk`` on
    the pair's ``Prepared`` (retrieval off), and the retrieval candidates
    when ``ret``. Returns ``((qb, gb, counts), candidates)``: the client
    gathers the counts; the candidates stay on the workers for the merge
    chain of the query block. Class ids and query indices in the counts are
    the global (prepared) ones."""
    with _TASK_LOCK:
        sub = _sub_prepared(lay, qb, gb)
        part = run_chunk(sub, qb.row_eval, qb.row_sample, cfg, 0, len(qb.qi))
        # the sub-Prepared's classes, globally; deferred elements: global query /
        # gallery indices, and their float64 keys computed here, where the rows
        # are: the client places them by those keys (exact._resolve_deferred)
        part = replace(
            part, class_ids=np.unique(qb.q_class), ret=None,
            deferred_keys=tuple(exact_keys(sub, d[2], d[3]) for d in part.deferred),
            deferred=tuple((d[0], d[1], qb.qi[d[2]], gb.gi[d[3]]) for d in part.deferred),
            ver_gathered=tuple((v, p, qb.qi[rows]) for v, p, rows in part.ver_gathered))
        cand = _candidates(sub, qb.hsize, cfg.tile) if ret else None
        return (qb.index, gb.index, part), cand


def _part_of(result):
    """The counts of a pair task's result (what the client gathers)."""
    return result[0]


def _merge_candidates(qb: _Block, state, result):
    """The retrieval candidates of query block ``qb`` so far (``state``, None
    at first) merged with a pair task's: per query the first ``hsize`` by
    (float64 key, original row), a strict order, so the outcome does not
    depend on the order the gallery blocks come in."""
    with _TASK_LOCK:
        cand = result[1]
        if state is not None:
            cand = tuple(np.concatenate([a, b]) for a, b in zip(state, cand))
        q, key, orig, isp = cand
        order = np.lexsort((orig, key, q))
        q, key, orig, isp = q[order], key[order], orig[order], isp[order]
        first = np.searchsorted(q, q, side="left")
        keep = (np.arange(len(q)) - first) < qb.hsize[q]
        return q[keep], key[keep], orig[keep], isp[keep]


def _ranking_task(qb: _Block, state):
    """First relevant rank and AP@R of the queries of ``qb`` from their
    merged candidates, as ``_kernels._exact_topk`` computes them."""
    with _TASK_LOCK:
        q, _, _, isp = state if state is not None else _NO_CANDIDATES
        first, ap, hits = rank_lists(q, isp, qb.hsize, qb.R, len(qb.qi))
        return qb.index, first, ap, hits


def _sums_task(lay: _Layout, gb: _Block):
    """The gallery rows' float64 column sums and sum of squares (the l2 centre)."""
    with _TASK_LOCK:
        x = _float32_block(lay.shards, lay.metric, gb.a, gb.b)[gb.g_loc]
        return (x.sum(axis=0, dtype=np.float64),
                float(np.einsum("ij,ij->", x, x, dtype=np.float64)), len(x))


def _norms_task(lay: _Layout, blk: _Block):
    """Squared norms of the block's queries and gallery rows, centred, as
    ``prepare()`` computes them."""
    with _TASK_LOCK:
        x = _float32_block(lay.shards, lay.metric, blk.a, blk.b)
        out = []
        for loc in (blk.q_loc, blk.g_loc):
            y = _centred(x[loc], lay.centre).astype(np.float64)
            out.append(np.einsum("ij,ij->i", y, y))
        return blk.index, out[0], out[1]


def _rows_task(lay: _Layout, rows: np.ndarray) -> np.ndarray:
    """Original rows ``rows`` as float32 rows of ``Prepared`` (the pilot's)."""
    with _TASK_LOCK:
        return _centred(_float32_checked(lay.shards.read_rows(rows), lay.metric, rows),
                        lay.centre)


def _worker_loads() -> list:
    """The blocks this worker process loaded (for tests), and forget them."""
    out = list(_LOADS)
    _LOADS.clear()
    return out


def _l2_centre_from_sums(total: np.ndarray, sq: float, n: int) -> np.ndarray | None:
    """``prepare._l2_centre`` from the gallery's column sums and sum of squares.

    The sums arrive per block, so they are added in another order than
    numpy's one pass over the class-sorted rows; the centre is rounded to 8
    significant bits, so it is the same unless a coordinate of the mean lies
    within a few float64 ulps of a rounding boundary of that grid, or the
    spread test ``mean.mean <= spread`` is that close to equality (integer
    data: the sums are exact in any order, always the same).
    """
    mean = total / n
    sq = sq / n
    spread = max(sq - float(mean @ mean), 0.0)
    if float(mean @ mean) <= spread:
        return None
    mant, expo = np.frexp(mean)
    return np.ldexp(np.round(mant * 256) / 256, expo).astype(np.float32)


def _sparse_rows(n: int, d: int) -> np.ndarray:
    """A zero ``(n, d)`` float32 array whose pages take memory only once
    written (an anonymous mapping without swap reservation): the client's
    ``Prepared.xq`` / ``xg``, of which it fills only the rows it needs."""
    import mmap
    import sys

    size = max(1, n * d * 4)
    if sys.platform.startswith("linux"):
        flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_NORESERVE", 0x4000)
        buf = mmap.mmap(-1, size, flags=flags)
        return np.frombuffer(buf, np.float32, count=n * d).reshape(n, d)
    return np.zeros((n, d), np.float32)  # pragma: no cover - calloc: lazily zeroed too


def _value(x):
    """A task that returns its argument (``_held``)."""
    return x


def _held(client, value):
    """A future of ``value`` that survives the loss of any worker: a task
    returning ``value``, whose argument the scheduler keeps in the task's
    spec and computes again on another worker when the one holding the
    result is lost. Scattered data (``Client.scatter``) has no spec: it is
    gone with the last worker holding it. The scheduler holds one copy of
    ``value`` for as long as the future lives."""
    import warnings

    with warnings.catch_warnings():  # a block is one large argument, by design
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        return client.submit(_value, value, pure=False)


class _ShardRun:
    """The chunk mapper of one shard run (see ``exact.ChunkMapper``): blocks
    of storage rows, one task per (query block, gallery block) and pass."""

    def __init__(self, client, prep: Prepared, rows: int, min_class_rows: int = 2):
        self.client = client
        self.min_class_rows = int(min_class_rows)
        shards = prep.xq.shards
        self.shards = shards
        self.n = shards.n_rows
        self.rows = int(max(1, rows))
        self.n_blocks = -(-self.n // self.rows)
        self.tasks = 0
        self.key = None
        self.blocks: list = []
        self.futures: list = []
        G = len(prep.group_labels) if prep.group_labels is not None else 0
        self.layout = _Layout(shards=shards, metric=prep.metric, centre=None, n_groups=G,
                              n_samples=prep.n_samples, dim=prep.dim)
        # R and the retrieval list length of every query (as _kernels.process_block)
        self.R = R = query_positives(prep)
        listable = len(prep.g_rows) - (prep.self_col >= 0)
        self.hsize = np.where(R > 0, list_length(R, listable), 0)
        self.q_parts = _split_by(prep.q_rows // self.rows, self.n_blocks)
        self.g_parts = _split_by(prep.g_rows // self.rows, self.n_blocks)
        self.prep = prep
        if prep.metric == "l2":
            self._l2_norms()

    # -- the arrangement the client works on ------------------------------------
    def _block(self, b: int, row_eval, row_sample) -> _Block:
        p = self.prep
        qi, gi = self.q_parts[b], self.g_parts[b]
        a = b * self.rows

        def pick(arr, idx):
            return None if arr is None else np.ascontiguousarray(arr[idx])

        return _Block(index=b, a=a, b=min(self.n, a + self.rows), qi=qi,
                      q_loc=p.q_rows[qi] - a, q_rows=p.q_rows[qi], q_class=p.q_class[qi],
                      q_group=pick(p.q_group, qi), self_col=p.self_col[qi], qn2=p.qn2[qi],
                      q_off=pick(p.q_off, qi), hsize=self.hsize[qi], R=self.R[qi],
                      row_eval=np.ascontiguousarray(row_eval[qi]),
                      row_sample=np.ascontiguousarray(row_sample[qi]), gi=gi,
                      g_loc=p.g_rows[gi] - a, g_rows=p.g_rows[gi], g_class=p.g_class[gi],
                      gn2=p.gn2[gi], g_off=pick(p.g_off, gi))

    def _l2_norms(self) -> None:
        """The l2 centre (from the gallery's sums) and every row's squared
        norm, computed by the workers."""
        ev = np.zeros(len(self.prep.q_rows), bool)
        blocks = [self._block(b, ev, ev) for b in range(self.n_blocks)]
        lay = _held(self.client, self.layout)
        futs = [self.client.submit(_sums_task, lay, blk, pure=False) for blk in blocks
                if len(blk.gi)]
        total = np.zeros(self.prep.dim)
        sq = 0.0
        for f in futs:  # in block order: a fixed order of the additions
            s, q, _ = f.result()
            total = total + s
            sq += q
        self.tasks += len(futs)
        centre = _l2_centre_from_sums(total, sq, len(self.prep.g_rows))
        self.layout = replace(self.layout, centre=centre)
        lay = _held(self.client, self.layout)
        futs = [self.client.submit(_norms_task, lay, blk, pure=False) for blk in blocks]
        qn2 = np.zeros(len(self.prep.q_rows))
        gn2 = np.zeros(len(self.prep.g_rows))
        for f in distributed.as_completed(futs):
            b, qn, gn = f.result()
            qn2[self.q_parts[b]] = qn
            gn2[self.g_parts[b]] = gn
        self.tasks += len(futs)
        self.prep = replace(self.prep, qn2=qn2, gn2=gn2)

    def prepared(self) -> Prepared:
        """The arrangement ``run_exact`` works on: norms from the workers;
        ``xq`` / ``xg`` zero except the rows the client needs (the pilot's,
        ``_fill``), read by the workers. A row never filled is never read by the client."""
        p = self.prep
        nq, ng = len(p.q_rows), len(p.g_rows)
        self.xq = _sparse_rows(nq, p.dim)
        self.xg = self.xq if p.symmetric else _sparse_rows(ng, p.dim)
        self.q_have = np.zeros(nq, bool)
        self.g_have = self.q_have if p.symmetric else np.zeros(ng, bool)
        self._fill(*self._pilot_rows())
        return replace(p, xq=self.xq, xg=self.xg)

    def _pilot_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The query and gallery indices the pilot (``exact._pilot_windows``)
        reads: the same selection, computed here (only speed depends on the
        pilot, so a row it reads unfilled costs nothing but speed)."""
        p = self.prep
        P, M = p.class_pair_counts()
        row_eval = counts.evaluated(P, M, p.class_rows, self.min_class_rows)[p.q_class]
        if not row_eval.any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return pilot_sample(row_eval, len(p.g_rows))

    def _fill(self, q: np.ndarray, g: np.ndarray) -> None:
        """Fill query rows ``q`` and gallery columns ``g`` of the client's
        ``xq`` / ``xg`` from the workers (one task per block)."""
        p = self.prep
        q = np.unique(q[~self.q_have[q]])
        g = np.unique(g[~self.g_have[g]])
        rows = np.unique(np.concatenate([p.q_rows[q], p.g_rows[g]]))
        if not len(rows):
            return
        lay = _held(self.client, self.layout)
        blk = rows // self.rows
        ids = np.unique(blk)
        futs = [self.client.submit(_rows_task, lay, rows[blk == b], pure=False) for b in ids]
        self.tasks += len(futs)
        got = np.empty((len(rows), p.dim), np.float32)
        for b, f in zip(ids, futs):
            got[blk == b] = f.result()
        at = np.searchsorted(rows, p.q_rows[q])
        self.xq[q] = got[at]
        self.q_have[q] = True
        at = np.searchsorted(rows, p.g_rows[g])
        self.xg[g] = got[at]
        self.g_have[g] = True

    # -- one pass ----------------------------------------------------------------
    def _scatter_blocks(self, row_eval, row_sample) -> None:
        key = (id(row_eval), id(row_sample))
        if key == self.key:
            return
        self.release()
        self.blocks = [self._block(b, row_eval, row_sample) for b in range(self.n_blocks)]
        self.key = key
        self._keep = (row_eval, row_sample)  # their ids stay valid while held
        # tasks, not scattered data: a lost worker's blocks are computed again
        self.futures = [_held(self.client, blk) for blk in self.blocks]
        self.lay_future = _held(self.client, self.layout)

    def release(self) -> None:
        for f in self.futures:
            f.release()
        self.futures = []
        self.key = None

    def __call__(self, prep: Prepared, row_eval, row_sample, cfg: PassConfig,
                 progress: Progress | None, stage: str) -> Part:
        self._scatter_blocks(row_eval, row_sample)
        ret = cfg.do_ret
        task_cfg = replace(cfg, sym=False, do_ret=False)
        nq = len(prep.q_rows)
        ng = max(1, len(prep.g_rows))
        submit = self.client.submit
        qbs = [i for i in range(self.n_blocks) if len(self.blocks[i].qi)]
        gbs = [j for j in range(self.n_blocks) if len(self.blocks[j].gi)]
        pairs = [(i, j) for i in qbs for j in gbs]
        tasks = {p: submit(_pair_task, self.lay_future, self.futures[p[0]], self.futures[p[1]],
                           task_cfg, ret, pure=False) for p in pairs}
        parts = {p: submit(_part_of, f, pure=False) for p, f in tasks.items()}
        ranked = []
        if ret:  # per query block, a chain of merges over the gallery blocks
            for i in qbs:
                state = None
                for j in gbs:
                    state = submit(_merge_candidates, self.futures[i], state, tasks[(i, j)],
                                   pure=False)
                ranked.append(submit(_ranking_task, self.futures[i], state, pure=False))
        del tasks  # the pair tasks' results go once merged and gathered
        self.tasks += len(pairs) * (2 if ret else 1) + len(ranked)
        try:
            got = _gather(list(parts.values()), progress, stage, nq, lambda r: len(
                self.blocks[r[0]].qi) * len(self.blocks[r[1]].gi) / ng)
            results = {(i, j): part for i, j, part in got}
            total = merge([results[p] for p in pairs], nq, prep.n_classes)
            for b, first, ap, hits in (fut.result() for fut in ranked):
                qi = self.blocks[b].qi
                total.ret.put(qi, Retrieval(first, ap, self.R[qi], hits))
        finally:
            for fut in ranked:
                fut.release()
        return total


def _split_by(block_of: np.ndarray, n_blocks: int) -> list[np.ndarray]:
    """The indices of ``block_of`` in each block, ascending."""
    order = np.argsort(block_of, kind="stable")
    cuts = np.searchsorted(block_of[order], np.arange(1, n_blocks))
    return [np.ascontiguousarray(p, dtype=np.int64) for p in np.split(order, cuts)]
