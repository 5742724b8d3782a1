"""The verification view's passes (SPEC 14), engine side: which keys to look at.

EER, minDCF and FNMR at FMR are functions of the global FAR(t) and FRR(t)
over *every* real threshold, so, unlike the calibration range, they can
depend on any pair. They are found exactly without sorting the pairs:

1. the counts pass (or the only pass, with an explicit range) also
   histograms every key of the evaluated rows, positives and negatives
   apart, into ``VER_BINS`` bins even in key space over the whole key span
   (``base.key_span``); with groups, each row's keys also go to its group's
   histogram of ``group_bins(G)`` bins. A key goes to the bin of its float64
   key (SPEC 2): a float32 key within its margin (``base.key_margins``) of a
   bin edge is recomputed in float64 (``_kernels._verify_hist``);
2. :func:`wanted_bins` keeps the bins where a minimiser can lie: in bin
   ``b`` every threshold has ``FP`` between the negatives below the bin and
   those up to its top, ``TP`` likewise, which bounds the EER and the cost
   from below; the largest key of a bin attains the values at its top
   counts, the best of which bounds the minimum from above. Bins whose lower
   bound exceeds that upper bound cannot hold a minimiser. The bins of the
   FNMR-at-FMR order statistics are kept as well;
3. one more pass gathers the float64 key of every pair whose float64 key
   lies in a kept bin (``_kernels.Verify``, ``_verify_gather``);
   :func:`operating_points` turns them, with the counts below each bin from
   the histograms, into exact counts at each of their distances.

Both passes bin float64 keys (each recomputed where its float32 key is
within its margin of an edge), so a kept bin's gathered keys are exactly
its histogram count (:func:`operating_points` checks it), and every number
(EER, minDCF, their thresholds, FNMR at FMR, the DET points) is that of the
float64 keys: the same on every machine. Cost: a histogram increment per pair in
the counts pass and one pass of products and key scans (no counts, no
retrieval): see docs/concepts/verification.md for the measured share.

Pure numpy: the metrics themselves are in ``metrics/verification.py``.
"""

from __future__ import annotations

import numpy as np

from ..counts import FMR_LEVELS, fmr_rank
from .base import OperatingPoints, key_to_dist, value_bins

#: bins of the global verification histogram (key space, whole key span). The
#: bins are those of the float64 keys: a float32 key within its margin
#: (``base.key_margins``, about ``D * 6e-8`` for cosine) of a bin edge is
#: recomputed in float64, so a bin must be many margins wide for that to be
#: rare (2**11 bins: 3% of the keys at D = 256 cosine)
VER_BINS = 2**11
#: bins of each group's verification histogram (at most VER_BINS, whose edges
#: they share), fewer with many groups (see group_bins)
VER_GROUP_BINS = 2**11
#: slack of the bound comparisons (float rounding of the bounds themselves)
_SLACK = 1e-9


def group_bins(n_groups: int) -> int:
    """Bins of each group's histogram: ``VER_GROUP_BINS``, halved until all
    groups' histograms hold at most 2**20 bins (8 MiB per worker and sign),
    at least 64."""
    bins = VER_GROUP_BINS
    while bins > 64 and bins * max(n_groups, 1) > 2**20:
        bins //= 2
    return bins


def wanted_bins(hpos: np.ndarray, hneg: np.ndarray,
                dcf: tuple[float, float, float] | None = None,
                fmr: bool = False) -> np.ndarray:
    """Bins that can hold the EER's (and, with ``dcf``, the detection cost's)
    smallest minimiser, and, with ``fmr``, the FNMR-at-FMR order statistics.

    ``hpos``/``hneg`` (bins,) int64 are the keys per bin of one set of pairs;
    returns (bins,) bool (all False when the set has no positive or no
    negative pair).
    """
    hpos = np.asarray(hpos, np.int64)
    hneg = np.asarray(hneg, np.int64)
    P, M = int(hpos.sum()), int(hneg.sum())
    want = np.zeros(len(hpos), bool)
    if P == 0 or M == 0:
        return want
    cp, cn = np.cumsum(hpos), np.cumsum(hneg)
    cn_below = cn - hneg
    busy = (hpos + hneg) > 0
    frr_top = (P - cp) / P           # FRR at the bin's largest key (and its lower bound)
    far_top, far_low = cn / M, cn_below / M
    # EER: max(FAR, FRR); rejecting everything gives 1
    upper = min(1.0, float(np.max([far_top, frr_top], axis=0)[busy].min()))
    lower = np.maximum(far_low, frr_top)
    want |= busy & (lower <= upper * (1 + _SLACK))
    if dcf is not None:
        p, c_miss, c_fa = dcf
        a, b = c_miss * p, c_fa * (1 - p)
        upper = min(a, float((a * frr_top + b * far_top)[busy].min()))
        lower = a * frr_top + b * far_low
        want |= busy & (lower <= upper * (1 + _SLACK))
    if fmr:
        for level in FMR_LEVELS:
            r = fmr_rank(level, M)
            if r is not None:
                want[int(np.searchsorted(cn, r, side="left"))] = True
    return want


def key_bracket(want: np.ndarray, lo: float, scale: float) -> tuple[float, float]:
    """``(g_lo, g_hi)``: every key in a wanted bin lies inside (a little
    wider than the bins; the kernel tests the bin exactly)."""
    idx = np.nonzero(want)[0]
    if len(idx) == 0:
        return np.inf, -np.inf
    n = len(want)
    width = 1.0 / scale
    g_lo = -np.inf if idx[0] == 0 else lo + idx[0] * width - 1e-6 * width
    g_hi = np.inf if idx[-1] == n - 1 else lo + (idx[-1] + 1) * width + 1e-6 * width
    return g_lo, g_hi


def operating_points(hpos: np.ndarray, hneg: np.ndarray, want: np.ndarray, keys: np.ndarray,
                     is_pos: np.ndarray, lo: float, scale: float,
                     l2: bool) -> OperatingPoints | None:
    """Exact counts at every distance of the wanted bins (see OperatingPoints).

    ``keys``/``is_pos`` are every key gathered from the wanted bins of this
    set of pairs (any order); the histograms give the counts below each bin.
    None when the set has no positive or no negative pair.
    """
    hpos = np.asarray(hpos, np.int64)
    hneg = np.asarray(hneg, np.int64)
    P, M = int(hpos.sum()), int(hneg.sum())
    if P == 0 or M == 0:
        return None
    nbins = len(hpos)
    keys = np.asarray(keys, np.float64)
    is_pos = np.asarray(is_pos, bool)
    bins = value_bins(keys, lo, scale, nbins)
    keep = want[bins]
    keys, is_pos, bins = keys[keep], is_pos[keep], bins[keep]
    got_pos = np.bincount(bins[is_pos], minlength=nbins)
    got_all = np.bincount(bins, minlength=nbins)
    if not (np.array_equal(got_pos[want], hpos[want])
            and np.array_equal(got_all[want], (hpos + hneg)[want])):
        raise RuntimeError("verification passes disagree; please report this")
    cp_below = np.cumsum(hpos) - hpos
    cn_below = np.cumsum(hneg) - hneg
    order = np.lexsort((keys,))
    keys, is_pos, bins = keys[order], is_pos[order], bins[order]
    cum_pos = np.cumsum(is_pos)
    cum_all = np.arange(1, len(keys) + 1)
    start = np.searchsorted(bins, bins, side="left")  # first gathered key of each one's bin
    before_pos = np.where(start > 0, cum_pos[start - 1], 0) if len(keys) else cum_pos
    before_all = np.where(start > 0, start, 0)
    tp = cp_below[bins] + (cum_pos - before_pos)
    fp = cn_below[bins] + (cum_all - before_all) - (cum_pos - before_pos)
    dist = np.asarray(key_to_dist(keys, l2), np.float64)
    # the counts at a distance are those of its last key (ties; for l2, keys
    # whose square roots round to one distance)
    last = np.r_[dist[1:] != dist[:-1], True] if len(dist) else np.zeros(0, bool)
    # one point without a threshold at the start of every stretch of wanted bins
    starts = np.nonzero(want & ~np.r_[False, want[:-1]])[0]
    e_dist = np.asarray(key_to_dist(lo + starts / scale, l2), np.float64)
    all_bins = np.r_[starts, bins[last]]
    all_real = np.r_[np.zeros(len(starts), bool), np.ones(int(last.sum()), bool)]
    order = np.lexsort((all_real, all_bins))  # by bin, the stretch's start first
    return OperatingPoints(
        dist=np.r_[e_dist, dist[last]][order],
        tp=np.r_[cp_below[starts], tp[last]][order].astype(np.int64),
        fp=np.r_[cn_below[starts], fp[last]][order].astype(np.int64),
        real=all_real[order], P=P, M=M, hist_pos=hpos, hist_neg=hneg)
