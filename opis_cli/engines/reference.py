"""Reference engine: SPEC 2-6 and 11 in plain float64 numpy, written to be read.

The oracle of the conformance suite (``tests/test_conformance.py``): every
engine that counts every pair must give its bytes. Nothing here is fast;
everything is the SPEC's sentence:

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

Memory: one block of queries at a time (``block_bytes`` of float64 terms);
never a matrix of all pairs.
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


def _sum16(terms: np.ndarray) -> np.ndarray:
    """Sum over the last axis in float64, in the project's fixed order: 16 running
    sums (sum ``j`` takes the terms ``k = j mod 16`` in increasing ``k``) over the
    first ``D - D % 16`` terms, added pairwise ``((s0 + s1) + (s2 + s3)) + ...``,
    then the last ``D % 16`` terms one by one (``_kernels._make_sum16``)."""
    D = terms.shape[-1]
    n16 = D - D % 16
    acc = np.zeros(terms.shape[:-1] + (16,))
    for k in range(0, n16, 16):
        acc += terms[..., k:k + 16]
    while acc.shape[-1] > 1:
        acc = acc[..., 0::2] + acc[..., 1::2]
    s = acc[..., 0]
    for k in range(n16, D):
        s = s + terms[..., k]
    return s


def distances(prep: Prepared, q0: int, q1: int) -> tuple[np.ndarray, np.ndarray]:
    """``(d, key)`` (q1 - q0, ng) of query rows ``[q0, q1)`` against the gallery:
    the (adjusted) distance, and the key the report histogram bins (the squared
    distance for l2 without offsets, else ``d``)."""
    xq = prep.xq[q0:q1, None, :].astype(np.float64)
    xg = prep.xg[None, :, :].astype(np.float64)
    if prep.metric == "cosine":
        d = 1.0 - _sum16(xq * xg)
        key = d
    else:
        key = _sum16((xq - xg) ** 2)
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
    """All pairs in float64 numpy; registered as ``reference`` (the oracle)."""

    name = "reference"

    def __init__(self, block_bytes: int = DEFAULT_BLOCK_BYTES):
        self.block_bytes = check_block_bytes(block_bytes)

    def _blocks(self, prep: Prepared):
        """``(q0, q1, d, key)`` for every block of query rows."""
        nq, ng = len(prep.q_rows), len(prep.g_rows)
        rows = max(1, self.block_bytes // (16 * max(ng, 1) * max(prep.dim, 1)))
        for q0 in range(0, nq, rows):
            q1 = min(nq, q0 + rows)
            yield (q0, q1, *distances(prep, q0, q1))

    def _order_statistic(self, prep: Prepared, row_eval: np.ndarray,
                         rank: int) -> tuple[float, int]:
        """The ``rank``-th smallest negative distance of the query rows in
        ``row_eval``, and the passes it took: count the negatives ``<= lo``,
        hold those in ``(lo, hi]`` when few enough to sort, else halve
        ``(lo, hi]`` (one more pass counts below the middle) and repeat."""
        lo, hi, passes = -np.inf, np.inf, 0
        while True:
            below, held, n_in, vmin, vmax = 0, [], 0, np.inf, -np.inf
            for q0, q1, d, _ in self._blocks(prep):
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
                return float(np.sort(np.concatenate(held))[rank - below - 1]), passes
            if vmin == vmax:
                return vmin, passes
            mid = vmin + (vmax - vmin) / 2
            if mid == vmax:  # two neighbouring floats: split between them
                mid = vmin
            n_mid = sum(int((_negatives(prep, row_eval, q0, q1, d) <= mid).sum())
                        for q0, q1, d, _ in self._blocks(prep))
            passes += 1
            lo, hi = (lo, mid) if n_mid >= rank else (mid, hi)

    def run(self, prep: Prepared, spec: GridSpec, progress: Progress | None = None) -> EngineOutput:
        K = int(options.check("num_thresholds", spec.num_thresholds))
        P, M = prep.class_pair_counts()
        evaluated = counts.evaluated(P, M, prep.class_rows, spec.min_class_rows)
        row_eval = evaluated[prep.q_class]
        nq = len(prep.q_rows)
        passes = 1  # the counts pass; the order statistics add theirs
        if spec.calibration_range is not None:
            lo, hi = (float(v) for v in spec.calibration_range)
            check_range(lo, hi, "--calibration-range", f"{lo:g}:{hi:g}")
            source = "explicit"
        else:
            a, b = (float(v) for v in spec.far_range)
            if not (0.0 < a < b <= 1.0):
                raise ConfigError(f"--far-range {a:g}:{b:g} is degenerate: need 0 < A < B <= 1")
            m_total = int(M[evaluated].sum())
            (lo, p_lo), (hi, p_hi) = (self._order_statistic(prep, row_eval, order_rank(f, m_total))
                                      for f in (a, b))
            passes += p_lo + p_hi
            check_range(lo, hi, "--far-range",
                        f"{a:g}:{b:g} (it selects distances {lo:.6g} and {hi:.6g}; "
                        "many negative pairs share one distance)")
            source = "far"
        grid = np.linspace(lo, hi, K)

        C = prep.n_classes
        G = len(prep.group_labels) if prep.q_group is not None else 0
        # cells[q, g]: the first grid threshold t_k with d <= t_k (K: none)
        cls_all, cls_pos = np.zeros((C, K + 1), np.int64), np.zeros((C, K + 1), np.int64)
        grp_all, grp_pos = np.zeros((G, K + 1), np.int64), np.zeros((G, K + 1), np.int64)
        first = np.zeros(nq, np.int64)
        ap = np.zeros(nq)
        n_rel = np.zeros(nq, np.int64)
        hits = np.zeros(nq, np.int64)
        span = key_span(prep)
        sample = np.zeros(nq, bool)
        sample[::max(1, -(-nq // REPORT_ROWS))] = True  # the exact engine's report rows
        sample &= row_eval
        h_pos, h_neg = np.zeros(REPORT_BINS, np.int64), np.zeros(REPORT_BINS, np.int64)
        for q0, q1, d, key in self._blocks(prep):
            for i in range(q1 - q0):
                q = q0 + i
                real = np.ones(d.shape[1], bool)  # the pairs: never a row with itself
                if prep.self_col[q] >= 0:
                    real[prep.self_col[q]] = False
                pos = (prep.g_class == prep.q_class[q]) & real
                cells = np.searchsorted(grid, d[i][real], side="left")
                is_pos = pos[real]
                cls_all[prep.q_class[q]] += np.bincount(cells, minlength=K + 1)
                cls_pos[prep.q_class[q]] += np.bincount(cells[is_pos], minlength=K + 1)
                if G and prep.q_group[q] >= 0:
                    grp_all[prep.q_group[q]] += np.bincount(cells, minlength=K + 1)
                    grp_pos[prep.q_group[q]] += np.bincount(cells[is_pos], minlength=K + 1)
                if sample[q]:
                    b = value_bins(key[i][real], span[0], report_scale(span), REPORT_BINS)
                    h_pos += np.bincount(b[is_pos], minlength=REPORT_BINS)
                    h_neg += np.bincount(b[~is_pos], minlength=REPORT_BINS)
                first[q], ap[q], n_rel[q], hits[q] = _retrieval(
                    d[i][real], prep.g_rows[real], is_pos)
            if progress is not None:
                progress("distances", q1, nq)

        def cumulative(all_, pos_):
            return np.cumsum(pos_[:, :K], axis=1), np.cumsum((all_ - pos_)[:, :K], axis=1)

        class_tp, class_fp = cumulative(cls_all, cls_pos)
        group_tp, group_fp = cumulative(grp_all, grp_pos) if G else (None, None)
        return EngineOutput(
            thresholds=grid, range_source=source, class_tp=class_tp, class_fp=class_fp,
            group_tp=group_tp, group_fp=group_fp, first_rank=first, ap_at_r=ap,
            n_relevant=n_rel, hits_at_r=hits,
            hist_edges=report_edges(span, prep.squared_keys), hist_pos=h_pos, hist_neg=h_neg,
            passes=passes,
            notes={"report_histogram_rows": int(sample.sum())})


def _retrieval(d: np.ndarray, rows: np.ndarray, is_pos: np.ndarray) -> tuple[int, float, int, int]:
    """One query's ``(first relevant rank, AP@R, R, positives among the R nearest)``
    (SPEC 6) from the distances ``d`` to its gallery rows (original ``rows``):
    ranked by (distance, row); the first rank looks at the ``list_length``
    nearest (one more than that when none of them is relevant; 0 when R = 0)."""
    R = int(is_pos.sum())
    if R == 0:
        return 0, 0.0, 0, 0
    ranked = is_pos[np.lexsort((rows, d))]
    L = int(list_length(R, len(ranked)))
    listed = np.nonzero(ranked[:L])[0]
    first = int(listed[0]) + 1 if len(listed) else L + 1
    total, found = 0.0, 0
    for i in range(R):  # in rank order, as a running float64 sum
        if ranked[i]:
            found += 1
            total += found / (i + 1)
    return first, total / R, R, int(ranked[:R].sum())
