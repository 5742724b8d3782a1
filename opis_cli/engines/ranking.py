"""Retrieval ranking, defined once (SPEC 6): list length, tie order, first
relevant rank, AP@R and R-Precision's numerator.

A query's gallery rows are ranked by distance, nearest first, ties broken by
the original row number of the gallery row (:func:`rank_order`); its own row
is never listed. The list holds the :func:`list_length` nearest: ``max(R,
LIST_MIN)`` (``R`` the query's relevant rows), never more than the gallery
rows it may list. On a ranked list of relevance flags :func:`retrieval_at_r`
gives the first relevant rank and AP@R, and :func:`hits_at_r` the relevant
rows among the ``R`` nearest (``base.nearest_exact`` picks a query's
nearest from float32 keys as their float64 keys rank them, SPEC 2).

Every engine ranks through these: the knn and sampled engines call them on
their lists, the Dask engine on the merged candidates of its blocks
(:func:`rank_lists`, the same sums on ragged lists), and the exact engine's
compiled kernel (``_kernels._exact_topk``) keeps a twin that
tests/test_engines_base.py holds bit-equal to :func:`retrieval_at_r`.
"""

from __future__ import annotations

import numpy as np

#: the shortest ranked list kept per query: R@k up to k = 8 is exact even
#: for queries with fewer relevant rows
LIST_MIN = 8


def list_length(R, listable):
    """Items ranked for a query with ``R`` relevant rows among ``listable``
    gallery rows (the gallery less the query's own row): ``min(max(R,
    LIST_MIN), listable)``; elementwise for arrays."""
    return np.minimum(np.maximum(R, LIST_MIN), listable)


def rank_order(keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The order of items by ``(key, original gallery row)`` (along the last
    axis): nearest first, ties by row number."""
    return np.lexsort((rows, keys), axis=-1)


def retrieval_at_r(hits: np.ndarray, n_rel: np.ndarray,
                   beyond: int) -> tuple[np.ndarray, np.ndarray]:
    """First relevant rank and AP@R of ranked lists (SPEC 6).

    Parameters
    ----------
    hits : (B, L) bool, whether the item at each rank (nearest first) is
        relevant to the query
    n_rel : (B,) int, ``R``: the number of relevant items of each query
    beyond : the rank reported when no listed item is relevant

    Returns
    -------
    first : (B,) int64, the 1-based rank of the first relevant item, or ``beyond``
    ap : (B,) float64, ``AP@R = (1/R) sum_{i <= R, item i relevant} found_i / i``
        (``found_i``: relevant items at ranks ``<= i``), summed in rank order
        as the exact engine's kernel does (``_kernels._exact_topk``); 0
        where ``R == 0``
    """
    B, L = hits.shape
    idx = np.arange(1, L + 1)
    found = np.cumsum(hits, axis=1)
    contrib = np.where(hits & (idx[None, :] <= n_rel[:, None]), found / idx[None, :], 0.0)
    total = np.cumsum(contrib, axis=1)[:, -1] if L else np.zeros(B)
    first = np.where(hits.any(axis=1), np.argmax(hits, axis=1) + 1, beyond) if L \
        else np.full(B, beyond, np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(n_rel > 0, total / np.maximum(n_rel, 1), 0.0)
    return first, ap


def hits_at_r(hits: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """Positives among the ``R`` nearest of ranked lists: the numerator of
    R-Precision (SPEC 6), ``sum_{i <= R} hits[:, i]``.

    ``hits`` (B, L) bool as in :func:`retrieval_at_r`, ``n_rel`` (B,) the
    ``R`` of each query; a list shorter than ``R`` (an approximate engine's
    candidates) counts the positives it holds. Returns (B,) int64.
    """
    L = hits.shape[1]
    within = np.arange(1, L + 1)[None, :] <= np.asarray(n_rel)[:, None]
    return np.count_nonzero(hits & within, axis=1).astype(np.int64)




def rank_lists(q: np.ndarray, isp: np.ndarray, h: np.ndarray, R: np.ndarray,
                n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`retrieval_at_r` and :func:`hits_at_r` of ``n`` ragged lists,
    one rank at a time (no ``n x max(h)`` matrix): query ``i``'s list (nearest
    first, ``h[i]`` items) is ``isp`` where ``q == i`` (``q`` sorted). Returns
    the rank of the first positive (``h + 1`` when none; 0 without positives,
    ``h == 0``), ``AP@R = (1/R) sum_{i < R, item i positive} found_i / (i +
    1)`` summed in rank order, and the positives among the first R."""
    start = np.searchsorted(q, np.arange(n), side="left")
    have = np.searchsorted(q, np.arange(n), side="right") - start
    if (have < h).any():  # pragma: no cover - every block sends min(h, its columns)
        raise RuntimeError("retrieval candidates missing; please report this")
    first = np.zeros(n, np.int64)
    ap = np.zeros(n)
    on = h > 0
    first[on] = h[on] + 1
    found = np.zeros(n, np.int64)
    total = np.zeros(n)
    seen = np.zeros(n, bool)
    hits = np.zeros(n, np.int64)
    for i in range(int(h.max()) if n else 0):
        act = np.nonzero(h > i)[0]
        qa = act[isp[start[act] + i]]
        found[qa] += 1
        new = qa[~seen[qa]]
        first[new] = i + 1
        seen[new] = True
        add = qa[i < R[qa]]
        total[add] = total[add] + found[add] / (i + 1)
        hits[add] += 1
    ap[on] = total[on] / R[on]
    return first, ap, hits
