"""The exact engine's memory model: bytes needed for an input's shape.

Pure arithmetic (no numba, no BLAS), so that a reader can check an input
before loading it (``opis_cli.io.read_dataset``) without importing the
engines: only the tile shape (``engines.base.tile_rows``, numpy only) is
asked of them, when an estimate is computed. The formula is in
:func:`memory_needed`; the README quotes it.
"""

from __future__ import annotations

import os

from .errors import InputError

#: bytes per label held as a Python ``str`` in an object array (pointer + object)
LABEL_BYTES = 72
#: int64/float64 per-row arrays of the prepared data and the exact engine
ROW_BYTES = 200
#: the interpreter and libraries at work (numpy, numba, faiss, pyarrow, BLAS buffers)
BASE_BYTES = 400 * 2**20
#: the FAR pilot's keys (PILOT_VALUES float64, twice)
PILOT_BYTES = 64 * 2**20


def memory_needed(
    rows: int,
    dim: int,
    *,
    stored_itemsize: int = 4,
    parquet: bool = False,
    queries: int | None = None,
    gallery: int | None = None,
    groups: bool = False,
    block_bytes: int | None = None,
    threads: int | None = None,
) -> dict[str, int]:
    """Bytes the exact engine needs for ``rows x dim`` embeddings, by term.

    ``total`` is::

        rows*dim*stored_itemsize                    the embeddings as read
        + rows*dim*stored_itemsize (Parquet only)   row-group buffers the allocators keep
        + rows*LABEL_BYTES (x2 with groups)         labels (and groups) as str
        + rows*ROW_BYTES                            row indices, norms, per-query results
        + (queries + gallery)*dim*4                 float32 query and gallery arrays
        + max(rows*dim*4,                           float32 working copy (while preparing)
              w*tile*gallery*4                      one tile of inner products per worker
              + PILOT_BYTES                         the pilot of the FAR pass
              + w*gallery*24)                       three rows of float64 keys per worker
        + BASE_BYTES                                the interpreter and libraries at work

    with ``tile = tile_rows(gallery)`` query rows (``tile*gallery*4``
    is at most 256 MiB unless the tile is at its minimum of 64 rows) and
    ``w`` workers: one per thread, as many tiles as ``block_bytes`` holds
    (at least one). ``queries`` and ``gallery`` default to ``rows`` (every
    row is both); ``block_bytes`` to the engine's default.
    ``stored_itemsize`` is 0 for a memory-mapped ``.npy`` (its pages are
    cache). Other engines add to this: knn ``gallery*dim*4`` (the index;
    HNSW ``+ gallery*2*M*4``) and ``queries*K*8`` (neighbours); dask holds
    the same on the client, and every worker ``(queries + gallery)*dim*4``
    plus one block.
    """
    # the engines' tile shape (a numpy-only module; loaded when an estimate is made)
    from .engines.base import DEFAULT_BLOCK_BYTES, tile_rows

    nq = rows if queries is None else int(queries)
    ng = max(1, rows if gallery is None else int(gallery))
    t = threads if threads is not None else (os.cpu_count() or 1)
    tile = tile_rows(ng)
    w = max(1, min(t, (block_bytes or DEFAULT_BLOCK_BYTES) // (4 * ng * tile), -(-nq // tile)))
    terms = {
        "stored": rows * dim * stored_itemsize,
        "reading": rows * dim * stored_itemsize if parquet else 0,
        "labels": rows * LABEL_BYTES * (2 if groups else 1),
        "rows": rows * ROW_BYTES,
        "float32": (nq + ng) * dim * 4,
        "working": max(rows * dim * 4, w * (tile * ng * 4 + ng * 24) + PILOT_BYTES),
        "base": BASE_BYTES,
    }
    terms["total"] = sum(terms.values())
    return terms


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable from
    /proc/meminfo (or free pages), capped by a cgroup v2 memory limit.
    None when unknown."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
            used = int(fh.read().strip())
        if limit != "max":
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(path: str, rows: int, dim: int, *, available: int, **options) -> None:
    """Raise ``InputError`` when :func:`memory_needed` exceeds ``available``.

    Pure: the caller passes the available bytes (see :func:`available_memory`).
    ``options`` go to :func:`memory_needed`.
    """
    need = memory_needed(rows, dim, **options)
    if need["total"] <= available:
        return
    as_read = need["stored"] + need["reading"]
    other = need["labels"] + need["rows"] + need["base"]
    raise InputError(
        f"{path}: {rows} x {dim} embeddings need about {_gib(need['total'])} of memory "
        f"({_gib(as_read)} as read + {_gib(need['float32'])} float32 queries and gallery + "
        f"{_gib(need['working'])} working copy or blocks + {_gib(other)} labels, indices "
        f"and libraries) but {_gib(available)} is available; free memory, use a machine "
        "with more, or evaluate a sample of the rows"
    )
