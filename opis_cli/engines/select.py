"""The order-statistic stages every engine shares: pilot, histogram, bracket, select.

An order statistic (the ``r``-th smallest negative key of a set of pairs) is
found in two passes over the keys, whatever produces them (BLAS tiles, FAISS
candidates, sampled pairs, Dask blocks):

1. a histogram of the keys in even bins (:class:`KeyBins`);
2. the bins that bracket the wanted rank (:func:`bracket`: the bin holding
   the rank, widened by ``base.bracket_bins`` bins on each side where the
   keys are float32 and the decision float64, SPEC 2), then the keys of the
   pairs in those bins are gathered in float64 and the rank selected among
   them (:meth:`Bracket.select`, ``base.select_in_bracket``).

A *pilot* (:func:`pilot_negative_keys`) estimates where the ranks lie from a
small, evenly spaced sample of negative pairs, so that pass 1 can histogram
only the keys that matter. Every caller checks the pilot's guess against the
full pass and falls back to every key when it misses: results never depend
on the pilot, only the speed does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..prepare import Prepared
from .base import pair_keys, rank_bin, select_in_bracket, value_bins


@dataclass(frozen=True)
class KeyBins:
    """``n`` even bins over key space from ``lo``, ``scale`` bins per key unit:
    the bin of a key is ``int((key - lo) * scale)`` clipped to ``[0, n - 1]``
    (``base.value_bins``, the kernels' ``_bin``)."""

    lo: float
    scale: float
    n: int

    @classmethod
    def over(cls, lo: float, hi: float, n: int) -> "KeyBins":
        return cls(float(lo), n / (hi - lo), int(n))

    def of(self, keys: np.ndarray) -> np.ndarray:
        """The bin of each key."""
        return value_bins(keys, self.lo, self.scale, self.n)

    def histogram(self, keys: np.ndarray) -> np.ndarray:
        """(n,) int64 counts of ``keys``."""
        return np.bincount(self.of(keys), minlength=self.n).astype(np.int64)

    def edge(self, b: int) -> float:
        """The key at the lower edge of bin ``b``."""
        return self.lo + b / self.scale


def padded_span(span: tuple[float, float]) -> tuple[float, float]:
    """``span`` (``base.key_span``) widened by a thousandth (and a little more):
    the keys' rounding never puts a key outside the histogram."""
    w = span[1] - span[0]
    return span[0] - 1e-3 * w - 1e-9, span[1] + 1e-3 * w + 1e-9


@dataclass(frozen=True)
class Bracket:
    """The histogram bins ``[lo, hi]`` around bin ``bin`` that hold the
    ``rank``-th smallest key (1-based; 0 for a threshold whose key lies in
    ``bin``), with the ``below`` keys in the bins under ``lo``."""

    rank: int
    bin: int
    lo: int
    hi: int
    below: int

    def holds(self, bins: np.ndarray) -> np.ndarray:
        """Whether each bin lies in the bracket."""
        return (bins >= self.lo) & (bins <= self.hi)

    def select(self, keys64: np.ndarray) -> float:
        """The rank's key, from the float64 keys of every pair in the bracket."""
        return select_in_bracket(keys64, self.rank, self.below)


def bracket(hist: np.ndarray, rank: int, pad: int = 0) -> Bracket | None:
    """The bracket of ``rank`` in ``hist``: its bin, ``pad`` bins each side
    (``base.bracket_bins``; 0 where keys are decided as they are binned).
    None when the histogram holds fewer than ``rank`` keys."""
    found = rank_bin(hist, int(rank))
    if found is None:
        return None
    return bracket_at(hist, found[0], pad, int(rank))


def bracket_at(hist: np.ndarray, centre: int, pad: int, rank: int = 0) -> Bracket:
    """The bracket of ``pad`` bins each side of bin ``centre`` (a threshold
    whose key lies in that bin, or a rank's bin)."""
    lo = max(int(centre) - pad, 0)
    return Bracket(int(rank), int(centre), lo, min(int(centre) + pad, len(hist) - 1), int(hist[:lo].sum()))


def select_or_none(keys64: np.ndarray, rank: int, below: int) -> float | None:
    """``select_in_bracket``, or None when the keys do not hold the rank (a
    pass whose products rounded differently moved it: the caller recounts)."""
    if not below < rank <= below + len(keys64):
        return None
    return select_in_bracket(keys64, rank, below)


def gather_rows(B: int, cap: int, dtypes: Sequence, call: Callable[..., None]
                ) -> tuple[int, list[np.ndarray], np.ndarray]:
    """Run a gathering kernel over ``B`` rows with per-row buffers that grow.

    ``call(*buffers, n)`` fills ``buffers[j][i, :n[i]]`` (one (B, cap) buffer
    per dtype) and sets ``n[i]`` to the elements row ``i`` wants (more than
    ``cap`` when it overflowed: the kernel then runs again with room, rarely).
    Returns the capacity used, the gathered elements of each buffer (row-major
    order) and their rows.
    """
    while True:
        bufs = [np.empty((B, cap), dt) for dt in dtypes]
        n = np.zeros(B, np.int64)
        call(*bufs, n)
        need = int(n.max()) if B else 0
        if need <= cap:
            break
        cap = 2 * need
    mask = np.arange(cap)[None, :] < n[:, None]
    return cap, [b[mask] for b in bufs], np.nonzero(mask)[0]


def pilot_rows(rows: np.ndarray, n: int) -> np.ndarray:
    """``n`` evenly spaced entries of ``rows`` (all of them if fewer)."""
    return rows[np.unique(np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(np.int64))]


def pilot_columns(n_rows: int, ng: int, max_values: int) -> np.ndarray:
    """Evenly spaced gallery columns: at most about ``max_values`` pairs with
    ``n_rows`` query rows."""
    return np.arange(0, ng, max(1, math.ceil(n_rows * ng / max_values)))


def pilot_negative_keys(prep: Prepared, pick: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The negative keys of query rows ``pick`` against gallery columns
    ``cols`` (any order): the sample from which a pilot estimates the order
    statistics. Products of 256 rows at a time with BLAS on one thread (idle
    BLAS threads would spin into the pass that follows)."""
    from .workers import one_blas_thread

    xg_cols, gn2_cols = prep.xg[cols], prep.gn2[cols]
    off = prep.q_off is not None
    vals = []
    with one_blas_thread():
        for s in range(0, len(pick), 256):
            sub = pick[s:s + 256]
            keys = pair_keys(prep.xq[sub] @ xg_cols.T, prep.qn2[sub], gn2_cols,
                             prep.metric == "l2", prep.q_off[sub] if off else None,
                             prep.g_off[cols] if off else None)
            cls = prep.q_class[sub]
            neg = ~((cols[None, :] >= prep.class_start[cls][:, None])
                    & (cols[None, :] < prep.class_end[cls][:, None]))
            vals.append(keys[neg])
    return np.concatenate(vals) if vals else np.zeros(0)
