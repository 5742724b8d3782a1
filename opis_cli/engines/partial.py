"""Typed partial results of a pass over the pairs, and their merge.

A pass (``exact.run_chunk``: the exact engine's map step, run in this
process or as Dask tasks) returns one :class:`Part` per chunk of query rows;
:func:`merge` sums them (the reduce step). Every count is an integer sum and
every gathered list a concatenation that later steps sort or select from,
so the order of the parts never changes a result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np


@dataclass(frozen=True)
class Retrieval:
    """Per-query retrieval results (SPEC 6), in the prepared query order:
    ``first_rank`` (1-based, 0 without a relevant item), ``ap`` (AP@R),
    ``n_rel`` (R) and ``hits`` (relevant items among the R nearest)."""

    first_rank: np.ndarray
    ap: np.ndarray
    n_rel: np.ndarray
    hits: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> "Retrieval":
        return cls(np.zeros(n, np.int64), np.zeros(n), np.zeros(n, np.int64),
                   np.zeros(n, np.int64))

    def put(self, at, other: "Retrieval") -> None:
        """Write ``other``'s queries at positions ``at`` (a slice or indices)."""
        for f in fields(self):
            getattr(self, f.name)[at] = getattr(other, f.name)


#: the histograms a pass may fill (None where it did not), summed by merge
HISTOGRAMS = ("win_below", "win_hist", "rep_pos", "rep_neg", "ver_pos", "ver_neg",
              "ver_gpos", "ver_gneg")


@dataclass(frozen=True)
class Part:
    """What one pass measured over some query rows.

    ``class_all`` / ``class_pos`` (C, K) int64: pairs / positive pairs of each
    class in each grid cell (``class_ids`` names the classes of the rows when
    they are a subset, as in a Dask task; None: all classes); likewise
    ``group_all`` / ``group_pos`` (G, K). ``deferred``: per tile, the pairs
    whose cell the pass could not decide (key, positive, query row, gallery
    column), with their float64 keys in ``deferred_keys`` where the pass
    computed them (Dask). ``gathered`` / ``gather_below``: the negatives'
    float64 keys inside the order statistics' brackets and the counts below
    them; ``ver_gathered``: the verification view's (key, positive, query
    row). ``win_*`` the order-statistic histograms, ``rep_*`` the report
    histogram, ``ver_*`` the verification histograms. ``ret``: the retrieval
    results of query rows ``[start, start + len)``.
    """

    class_all: np.ndarray
    class_pos: np.ndarray
    group_all: np.ndarray
    group_pos: np.ndarray
    deferred: tuple = ()
    deferred_keys: tuple | None = None
    gathered: tuple = ()
    gather_below: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    ver_gathered: tuple = ()
    win_below: np.ndarray | None = None
    win_hist: np.ndarray | None = None
    rep_pos: np.ndarray | None = None
    rep_neg: np.ndarray | None = None
    ver_pos: np.ndarray | None = None
    ver_neg: np.ndarray | None = None
    ver_gpos: np.ndarray | None = None
    ver_gneg: np.ndarray | None = None
    ret: Retrieval | None = None
    start: int = 0
    class_ids: np.ndarray | None = None

    @classmethod
    def empty(cls, C: int, G: int, K: int, nq: int | None = None) -> "Part":
        """A part before any tile: ``C`` classes and ``G`` groups on ``K``
        thresholds, with the retrieval of ``nq`` queries (None: none)."""
        return cls(np.zeros((C, K), np.int64), np.zeros((C, K), np.int64),
                   np.zeros((G, K), np.int64), np.zeros((G, K), np.int64),
                   ret=None if nq is None else Retrieval.zeros(nq))


def _sum(arrays: list):
    arrays = [a for a in arrays if a is not None]
    return sum(arrays[1:], arrays[0].copy()) if arrays else None


def merge(parts: list[Part], nq: int, C: int) -> Part:
    """Sum the parts of one pass over ``nq`` query rows of ``C`` classes; the
    merged part holds the retrieval of every query (zeros where no part
    measured it)."""
    K = parts[0].class_all.shape[1]
    class_all = np.zeros((C, K), np.int64)
    class_pos = np.zeros((C, K), np.int64)
    ret = Retrieval.zeros(nq)
    for p in parts:
        ids = slice(None) if p.class_ids is None else p.class_ids
        class_all[ids] += p.class_all
        class_pos[ids] += p.class_pos
        if p.ret is not None:
            ret.put(slice(p.start, p.start + len(p.ret.ap)), p.ret)
    keys = [p.deferred_keys for p in parts]
    return Part(
        class_all, class_pos, _sum([p.group_all for p in parts]),
        _sum([p.group_pos for p in parts]),
        deferred=tuple(d for p in parts for d in p.deferred),
        deferred_keys=None if any(k is None for k in keys) else tuple(k for ks in keys for k in ks),
        gathered=tuple(g for p in parts for g in p.gathered),
        gather_below=_sum([p.gather_below for p in parts]),
        ver_gathered=tuple(v for p in parts for v in p.ver_gathered),
        **{h: _sum([getattr(p, h) for p in parts]) for h in HISTOGRAMS}, ret=ret)
