"""One pass of BLAS tiles over the query rows, spread over the exact engine's workers.

The passes of ``opis calibrate`` (``transfer.py``) and of the calibration
fits (``fit.py``) walk the same tiles as the exact engine (``tile_rows``,
``inner_products``: the same products, so a key is the same bits in every
pass) on the same worker threads (``exact._in_workers``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..prepare import Prepared
from .base import Progress, inner_products, tile_rows
from .exact import _in_workers, _Tiles, _workers


def n_workers(prep: Prepared, block_bytes: int) -> int:
    """Worker threads (and output slots) of a pass, as the exact engine counts them."""
    nq, ng = len(prep.q_rows), len(prep.g_rows)
    tile = tile_rows(ng)
    return _workers(tile, max(1, block_bytes // (4 * ng)), len(range(0, nq, tile)))


def run_tiles(prep: Prepared, live: np.ndarray, block_bytes: int, stage: str,
              progress: Progress | None, body: Callable[[int, np.ndarray, int, int], None]) -> None:
    """Run ``body(slot, S, start, stop)`` on the product tile of every tile of
    query rows that holds a live row, spread over :func:`n_workers` workers."""
    nq, ng = len(prep.q_rows), len(prep.g_rows)
    tile = tile_rows(ng)
    starts = list(range(0, nq, tile))
    queue = _Tiles(starts)
    done = [0]
    xgT = prep.xg.T

    def work(slot: int) -> None:
        S = np.empty((tile, ng), np.float32)
        pad_q = np.zeros((tile, prep.xq.shape[1]), np.float32)
        for s in queue:
            e = min(nq, s + tile)
            if live[s:e].any():
                inner_products(prep.xq, s, e, xgT, S, pad_q)
                body(slot, S[:e - s], s, e)
            if progress:
                with queue.lock:
                    done[0] += e - s
                    progress(stage, done[0], nq)

    if progress:
        progress(stage, 0, nq)
    _in_workers(n_workers(prep, block_bytes), work, queue)
