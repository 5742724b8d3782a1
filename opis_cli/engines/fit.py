"""Exact order statistics of the negatives of many row sets at once (SPEC 11 fits).

A calibration needs, for each class (or group, or centroid) ``i``, the
``r_i``-th smallest distance among the negative pairs whose query belongs to
``i``, and the global one over the evaluated classes. Each query row names
the ids it counts for (``ids[q, l]``, one column per kind: global, class,
group, centroid); two passes over all pairs give every order statistic
exactly:

1. a histogram of the negative keys of each id (``F`` even bins over the key
   span, ``F`` chosen so that all ids' histograms take about 64 MiB), which
   locates the bin of each id's rank;
2. a pass that gathers, for each id, the float64 keys (``base.exact_keys``)
   of the negatives in that bin's bracket (``base.bracket_bins``: the bins
   within two float32 margins of it); the rank is then selected among them
   (``base.select_in_bracket``). Both passes compute the same float32 keys
   from the same products in the same tiles, so a key's bin is the same in
   both, and the order statistic is the one of the float64 keys: the same
   on every machine (SPEC 2).

Peak memory: that of the exact engine's tiles, plus ``w * n_ids * F * 8``
bytes of histograms (about 64 MiB per worker) and 16 bytes per gathered key
(each id's negatives in the bracket of one bin of its histogram).
"""

from __future__ import annotations

import threading

import numpy as np

from ..prepare import Prepared
from .base import DEFAULT_BLOCK_BYTES, Progress, bracket_bins, key_margins, key_span, key_to_dist
from .select import KeyBins, bracket, gather_rows, padded_span
from .workers import n_workers, run_tiles

#: bytes of the id histograms per worker (the bins shrink as the ids grow)
HIST_BYTES = 64 * 2**20


def _bins(n_ids: int) -> int:
    F = 2**16
    while F > 256 and n_ids * F * 8 > HIST_BYTES:
        F //= 2
    return F


def order_stats(prep: Prepared, ids: np.ndarray, ranks: np.ndarray,
                block_bytes: int = DEFAULT_BLOCK_BYTES,
                progress: Progress | None = None) -> np.ndarray:
    """The ``ranks[i]``-th smallest negative distance of every id ``i``.

    ``ids`` (nq, L) int64: the ids each prepared query row counts for (-1:
    none); ``ranks`` (n_ids,) int64, 0 where no order statistic is wanted
    (NaN is returned there). A rank must lie within the id's negatives.
    """
    from . import _transfer_kernels as kern

    ids = np.ascontiguousarray(ids, np.int64)
    ranks = np.asarray(ranks, np.int64)
    n_ids = len(ranks)
    l2 = prep.metric == "l2"
    kb = KeyBins.over(*padded_span(key_span(prep)), _bins(n_ids))
    bins = kern.Bins(kb.lo, kb.scale, kb.n)
    hist = np.zeros((n_workers(prep, block_bytes), n_ids, kb.n), np.int64)

    def hist_body(slot, S, s, e):
        kern.id_histograms(S, kern.rows_of(prep, s, e), bins, ids[s:e], hist[slot])

    run_tiles(prep, (ids >= 0).any(axis=1), block_bytes, "histograms", progress, hist_body)
    h = hist.sum(axis=0)
    # the bracket of each rank's bin: its float64 key lies inside (SPEC 2)
    pad = bracket_bins(float(key_margins(prep).max()) if len(prep.q_rows) else 0.0, kb.scale)
    wlo = np.full(n_ids, -1, np.int64)
    whi = np.full(n_ids, -1, np.int64)
    brackets = {}
    for i in np.nonzero(ranks > 0)[0]:
        br = bracket(h[i], int(ranks[i]), pad)
        if br is None:
            raise ValueError(f"rank {ranks[i]} outside the negatives of id {i}")
        brackets[i], wlo[i], whi[i] = br, br.lo, br.hi
    live = ((ids >= 0) & (wlo[np.maximum(ids, 0)] >= 0)).any(axis=1)
    gathered: list[list[np.ndarray]] = []
    lock = threading.Lock()
    caps = {}

    def gather_body(slot, S, s, e):
        def call(g_key, g_id, g_n):
            kern.id_gather(S, kern.rows_of(prep, s, e), bins, ids[s:e], wlo, whi, g_key, g_id, g_n)

        caps[slot], got, _ = gather_rows(e - s, caps.get(slot, 64), (np.float64, np.int64), call)
        with lock:
            gathered.append(got)

    run_tiles(prep, live, block_bytes, "thresholds", progress, gather_body)
    gkey = np.concatenate([g[0] for g in gathered]) if gathered else np.zeros(0)
    gid = np.concatenate([g[1] for g in gathered]) if gathered else np.zeros(0, np.int64)
    order = np.lexsort((gkey, gid))
    gid, gkey = gid[order], gkey[order]
    start = np.searchsorted(gid, np.arange(n_ids + 1), side="left")
    out = np.full(n_ids, np.nan)
    for i, br in brackets.items():
        out[i] = key_to_dist(br.select(gkey[start[i]:start[i + 1]]), l2)
    return out
