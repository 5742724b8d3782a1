"""Reference engine: SPEC 2-6 and 11 in plain float64 numpy, written to be read.

The oracle of the conformance suite (``tests/test_conformance.py``): every
engine that counts every pair must give its bytes. It is also the exact
engine's route for small inputs (``exact.small_route``): numpy arithmetic
with nothing to compile. Everything is the SPEC's sentence:

* distances (SPEC 2): the float32 rows of ``Prepared`` (cosine: normalised
  in float64, rounded to float32 once), products or squared differences in
  float64, summed in the one fixed order that makes a float64 sum the same
  on every machine (:func:`_sum16`); ``d = 1 - s`` (cosine) or
  ``d = sqrt(s)`` (l2); with a calibration ``d' = d - a_q - b_g`` (SPEC 11);
* pairs (SPEC 3): query row ``q``, gallery row ``g``, ``q != g``; positive
  when the labels are equal; counts ``TP_c(t)``, ``FP_c(t)`` of ``d <= t``;
* the range (SPEC 5): ``t(F)``, the ``ceil(F M)``-th smallest negative
  distance of the evaluated classes, by counting and bisection
  (:func:`_order_statistic`); the grid ``linspace(t_lo, t_hi, K)``;
* retrieval (SPEC 6): gallery rows sorted by (distance, original row).

Memory: blocks of query rows, each at most ``block_bytes`` of float64
working arrays (:meth:`ReferenceEngine._rows`); never a matrix of all pairs,
except that the distances of at most ``hold_pairs`` pairs are computed once
and held (``16 * nq * ng`` bytes: the distance and the histogram's key)
instead of once per pass. Peak: ``16 * nq * ng`` (held, when
``nq * ng <= hold_pairs``) ``+ block_bytes + 8 * (nq + ng) * D``.
"""

from __future__ import annotations

import numpy as np

from .. import counts, options
from ..errors import ConfigError
from ..prepare import Prepared
from .base import (DEFAULT_BLOCK_BYTES, REPORT_BINS, REPORT_ROWS, EngineOutput, GridSpec,
                   Progress, check_block_bytes, check_range, key_span, order_rank,
                   report_edges, report_scale, value_bins)
from .ranking import list_length

#: values the order-statistic search holds at once (its last step sorts them)
_HELD = 2**22
#: pairs whose distances a run computes once and holds (16 bytes each)
HOLD_PAIRS = 2**22
#: bytes of working arrays per pair of a block: counting and ranking use about
#: eight float64/int64 arrays of the block's shape
_PAIR_BYTES = 64


def _fixed_order_sum(term, D: int, shape: tuple[int, ...]) -> np.ndarray:
    """The sum of ``term(0), ..., term(D - 1)`` (float64 arrays of ``shape``) in
    the project's fixed order: 16 running sums (sum ``j`` takes the terms
    ``k = j mod 16`` in increasing ``k``) over the first ``D - D % 16`` terms,
    added pairwise ``((s0 + s1) + (s2 + s3)) + ...``, then the last ``D % 16``
    terms one by one (``_kernels._make_sum16``). Each term is made when it is
    added: no array of all ``D`` terms."""
    n16 = D - D % 16
    lanes = [np.zeros(shape) for _ in range(16)] if n16 else [np.zeros(shape)]
    for k in range(n16):
        lanes[k % 16] += term(k)
    while len(lanes) > 1:
        lanes = [lanes[i] + lanes[i + 1] for i in range(0, len(lanes), 2)]
    s = lanes[0]
    for k in range(n16, D):
        s = s + term(k)
    return s


def _sum16(terms: np.ndarray) -> np.ndarray:
    """:func:`_fixed_order_sum` over the last axis of ``terms``."""
    return _fixed_order_sum(lambda k: terms[..., k], terms.shape[-1], terms.shape[:-1])


def distances(prep: Prepared, q0: int, q1: int) -> tuple[np.ndarray, np.ndarray]:
    """``(d, key)`` (q1 - q0, ng) of query rows ``[q0, q1)`` against the gallery:
    the (adjusted) distance, and the key the report histogram bins (the squared
    distance for l2 without offsets, else ``d``)."""
    xq = prep.xq[q0:q1].astype(np.float64)
    xg = prep.xg.astype(np.float64)
    shape = (q1 - q0, len(xg))
    if prep.metric == "cosine":
        d = 1.0 - _fixed_order_sum(lambda k: xq[:, k, None] * xg[None, :, k], prep.dim, shape)
        key = d
    else:
        key = _fixed_order_sum(lambda k: (xq[:, k, None] - xg[None, :, k]) ** 2, prep.dim, shape)
        d = np.sqrt(np.maximum(key, 0.0))
    if prep.q_off is not None:
        d = (d - prep.q_off[q0:q1, None]) - prep.g_off[None, :]
        key = d
    return d, key


def _negatives(prep: Prepared, row_eval: np.ndarray, q0: int, q1: int,
               d: np.ndarray) -> np.ndarray:
    """The distances of the negative pairs of the query rows ``[q0, q1)`` that
    ``row_eval`` keeps (a row and itself are never negatives: same label)."""
    neg = prep.g_class[None, :] != prep.q_class[q0:q1, None]
    return d[neg & row_eval[q0:q1, None]]


class ReferenceEngine:
    """All pairs in float64 numpy; registered as ``reference`` (the oracle).

    ``hold_pairs``: when ``nq * ng`` is at most this, the distances are
    computed once and held for every pass (16 bytes a pair), else once per
    pass, block by block. Results depend on neither it nor ``block_bytes``.
    """

    name = "reference"

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES, hold_pairs: int = HOLD_PAIRS):
        self.block_bytes = check_block_bytes(block_bytes)
        self.hold_pairs = int(hold_pairs)

    def _rows(self, prep: Prepared) -> int:
        """Query rows of a block: its working arrays within ``block_bytes``
        (the 16 running sums of the distances when D >= 16, else the
        counting and ranking arrays)."""
        lanes = 16 if prep.dim >= 16 else 1
        per_pair = max(8 * (lanes + 2), _PAIR_BYTES)
        return max(1, self.block_bytes // (per_pair * max(len(prep.g_rows), 1)))

    def _pairs(self, prep: Prepared):
        """``blocks``: ``blocks()`` yields ``(q0, q1, d, key)`` for every block
        of query rows, computed once and held when ``nq * ng <= hold_pairs``."""
        nq, ng = len(prep.q_rows), len(prep.g_rows)
        rows = self._rows(prep)

        def stream():
            for q0 in range(0, nq, rows):
                q1 = min(nq, q0 + rows)
                yield (q0, q1, *distances(prep, q0, q1))

        if nq * ng > self.hold_pairs:
            return stream
        held = list(stream())
        return lambda: iter(held)

    def _order_statistic(self, prep: Prepared, row_eval: np.ndarray, rank: int,
                         blocks) -> tuple[float, int]:
        """The ``rank``-th smallest negative distance of the query rows in
        ``row_eval``, and the passes it took: count the negatives ``<= lo``,
        hold those in ``(lo, hi]`` when few enough to sort, else halve
        ``(lo, hi]`` (one more pass counts below the middle) and repeat."""
        lo, hi, passes = -np.inf, np.inf, 0
        while True:
            below, held, n_in, vmin, vmax = 0, [], 0, np.inf, -np.inf
            for q0, q1, d, _ in blocks():
                v = _negatives(prep, row_eval, q0, q1, d)
                below += int((v <= lo).sum())
                v = v[(v > lo) & (v <= hi)]
                n_in += len(v)
                if len(v):
                    vmin, vmax = min(vmin, float(v.min())), max(vmax, float(v.max()))
                if n_in <= _HELD:
                    held.append(v)
            passes += 1
            if n_in <= _HELD:
                at = rank - below - 1
                return float(np.partition(np.concatenate(held), at)[at]), passes
            if vmin == vmax:
                return vmin, passes
            mid = vmin + (vmax - vmin) / 2
            if mid == vmax:  # two neighbouring floats: split between them
                mid = vmin
            n_mid = sum(int((_negatives(prep, row_eval, q0, q1, d) <= mid).sum())
                        for q0, q1, d, _ in blocks())
            passes += 1
            lo, hi = (lo, mid) if n_mid >= rank else (mid, hi)

    def _range(self, prep: Prepared, spec: GridSpec, m_total: int, row_eval: np.ndarray,
               blocks) -> tuple[float, float, str, int]:
        """The calibration range (SPEC 5): its two ends, its source, and the
        passes its order statistics took."""
        if spec.calibration_range is not None:
            lo, hi = (float(v) for v in spec.calibration_range)
            check_range(lo, hi, "--calibration-range", f"{lo:g}:{hi:g}")
            return lo, hi, "explicit", 0
        a, b = (float(v) for v in spec.far_range)
        if not (0.0 < a < b <= 1.0):
            raise ConfigError(f"--far-range {a:g}:{b:g} is degenerate: need 0 < A < B <= 1")
        (lo, p_lo), (hi, p_hi) = (
            self._order_statistic(prep, row_eval, order_rank(f, m_total), blocks)
            for f in (a, b))
        check_range(lo, hi, "--far-range",
                    f"{a:g}:{b:g} (it selects distances {lo:.6g} and {hi:.6g}; "
                    "many negative pairs share one distance)")
        return lo, hi, "far", p_lo + p_hi

    def run(self, prep: Prepared, spec: GridSpec, progress: Progress | None = None) -> EngineOutput:
        K = int(options.check("num_thresholds", spec.num_thresholds))
        P, M = prep.class_pair_counts()
        evaluated = counts.evaluated(P, M, prep.class_rows, spec.min_class_rows)
        row_eval = evaluated[prep.q_class]
        nq, ng = len(prep.q_rows), len(prep.g_rows)
        blocks = self._pairs(prep)
        lo, hi, source, p_range = self._range(prep, spec, int(M[evaluated].sum()), row_eval,
                                              blocks)
        passes = 1 + p_range  # the counts pass and the order statistics' (held or not)
        grid = np.linspace(lo, hi, K)

        C = prep.n_classes
        G = len(prep.group_labels) if prep.q_group is not None else 0
        q_group = prep.q_group if G else np.full(nq, -1, np.int64)
        # cells: the first grid threshold t_k with d <= t_k (K: none), counted
        # at class * (K + 1) + cell (and group * (K + 1) + cell) by one bincount
        cls_all, cls_pos = np.zeros(C * (K + 1), np.int64), np.zeros(C * (K + 1), np.int64)
        grp_all, grp_pos = np.zeros(G * (K + 1), np.int64), np.zeros(G * (K + 1), np.int64)
        first = np.zeros(nq, np.int64)
        ap = np.zeros(nq)
        n_rel = np.zeros(nq, np.int64)
        hits = np.zeros(nq, np.int64)
        span = key_span(prep)
        sample = np.zeros(nq, bool)
        sample[::max(1, -(-nq // REPORT_ROWS))] = True  # the exact engine's report rows
        sample &= row_eval
        h_pos, h_neg = np.zeros(REPORT_BINS, np.int64), np.zeros(REPORT_BINS, np.int64)
        for q0, q1, d, key in blocks():
            n = q1 - q0
            real = np.ones((n, ng), bool)  # the pairs: never a row with itself
            own = prep.self_col[q0:q1]
            real[np.nonzero(own >= 0)[0], own[own >= 0]] = False
            cls = prep.q_class[q0:q1]
            is_pos = (prep.g_class[None, :] == cls[:, None]) & real
            cells = np.searchsorted(grid, d, side="left")
            at = cls[:, None] * (K + 1) + cells
            cls_all += np.bincount(at[real], minlength=C * (K + 1))
            cls_pos += np.bincount(at[is_pos], minlength=C * (K + 1))
            grp = q_group[q0:q1]
            if G and (grp >= 0).any():
                in_grp = (grp >= 0)[:, None]
                at = grp[:, None] * (K + 1) + cells
                grp_all += np.bincount(at[real & in_grp], minlength=G * (K + 1))
                grp_pos += np.bincount(at[is_pos & in_grp], minlength=G * (K + 1))
            s = sample[q0:q1]
            if s.any():
                b = value_bins(key[s], span[0], report_scale(span), REPORT_BINS)
                h_pos += np.bincount(b[is_pos[s]], minlength=REPORT_BINS)
                h_neg += np.bincount(b[real[s] & ~is_pos[s]], minlength=REPORT_BINS)
            if spec.retrieval:  # else zeros, as the exact engine leaves them
                first[q0:q1], ap[q0:q1], n_rel[q0:q1], hits[q0:q1] = _retrieval(
                    d, prep.g_rows, is_pos, real)
            if progress is not None:
                progress("distances", q1, nq)

        def cumulative(all_, pos_, n):
            all_, pos_ = all_.reshape(n, K + 1), pos_.reshape(n, K + 1)
            return np.cumsum(pos_[:, :K], axis=1), np.cumsum((all_ - pos_)[:, :K], axis=1)

        class_tp, class_fp = cumulative(cls_all, cls_pos, C)
        group_tp, group_fp = cumulative(grp_all, grp_pos, G) if G else (None, None)
        return EngineOutput(
            thresholds=grid, range_source=source, class_tp=class_tp, class_fp=class_fp,
            group_tp=group_tp, group_fp=group_fp, first_rank=first, ap_at_r=ap,
            n_relevant=n_rel, hits_at_r=hits,
            hist_edges=report_edges(span, prep.squared_keys), hist_pos=h_pos, hist_neg=h_neg,
            passes=passes,
            notes={"report_histogram_rows": int(sample.sum())})


def _retrieval(d: np.ndarray, rows: np.ndarray, is_pos: np.ndarray,
               real: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each query's ``(first relevant rank, AP@R, R, positives among the R
    nearest)`` (SPEC 6) from the distances ``d`` (n, ng) to the gallery rows
    (original ``rows``), of which ``real`` (n, ng) are listed (not the query's
    own row): ranked by (distance, row); the first rank looks at the
    ``list_length`` nearest (one more than that when none of them is
    relevant; 0 when R = 0); AP@R sums ``found_i / i`` in rank order (a
    running float64 sum: ``cumsum``, which adds one term at a time)."""
    n, ng = d.shape
    # the query's own row last (distances are finite), and never relevant
    dd = np.where(real, d, np.inf)
    order = np.argsort(dd, axis=1)  # by distance: the order where no two are equal
    by_d = np.take_along_axis(dd, order, axis=1)
    tied = (by_d[:, 1:] == by_d[:, :-1]).any(axis=1)
    if tied.any():  # rows with equal distances: by (distance, row)
        order[tied] = np.lexsort((np.broadcast_to(rows, dd[tied].shape), dd[tied]), axis=-1)
    ranked = np.take_along_axis(is_pos, order, axis=1)
    R = ranked.sum(axis=1)
    L = list_length(R, real.sum(axis=1))
    i = np.arange(1, ng + 1)  # 1-based ranks
    first_hit = np.where(ranked.any(axis=1), np.argmax(ranked, axis=1) + 1, ng + 1)
    first = np.where(R == 0, 0, np.where(first_hit <= L, first_hit, L + 1))
    in_r = ranked & (i[None, :] <= R[:, None])
    found = np.cumsum(ranked, axis=1)
    total = np.cumsum(np.where(in_r, found / i[None, :], 0.0), axis=1)[:, -1] if ng \
        else np.zeros(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(R > 0, total / np.maximum(R, 1), 0.0)
    return first.astype(np.int64), ap, R.astype(np.int64), in_r.sum(axis=1).astype(np.int64)
