"""Approximate engine: counts from each query's K nearest neighbours (FAISS).

The exact engine pays for every (query, gallery) pair. This engine looks only
at the pairs a nearest-neighbour search returns, plus every within-class
pair, and says how much it may have missed.

What is counted (SPEC 3 notation; distances, smaller = closer):

* **Positives are exact.** For every class, all within-class pairs are
  computed (classes are contiguous in the prepared arrays, so this is one
  small matrix product per class), so ``TP_c(t)`` and ``P_c`` are exact.
  The cost is ``sum_c n_c^2 D``: cheap with many classes, heavy with a few
  huge ones.
* **Negatives are counted among the K nearest neighbours** of each query
  (self excluded) returned by a FAISS index: ``flat`` (exact search,
  ``IndexFlatIP``/``IndexFlatL2``), ``hnsw`` (``IndexHNSWFlat``) or ``ivf``
  (``IndexIVFFlat``). Cosine uses inner products of the L2-normalised rows.
  The search's float32 distances are kept with the neighbour ids (they are
  within ``delta`` of the exact engine's, see below).
* **Unseen negatives.** A query's negatives beyond its K-th neighbour are not
  seen. With an exact search every one of them is at least as far as the K-th
  neighbour (distance ``tau_q``), so at a threshold ``t < tau_q`` the query's
  count is exact, and at ``t >= tau_q`` the query is *truncated*: between 0
  and ``u_q = M_q - seen_q`` of its negatives may be missing (a query for
  which the index returned fewer than K neighbours is truncated everywhere).
  Hence, per class and threshold::

      FP_lower(t) <= FP_exact(t) <= FP_upper(t),
      FP_upper(t) = FP_seen(t) + sum of u_q over truncated queries of the class

  and the global FAR is bounded the same way (``far_lower``/``far_upper``
  in the notes). The reported counts are the seen ones, so **the reported
  FAR is a lower bound** (and TNR an upper bound), up to float32 rounding:
  the search's distances and the exact engine's may differ by ``delta``
  (in the notes), so a pair within ``delta`` of a threshold can fall on
  either side. The bounds allow for that: the lower bound counts a seen pair
  only when it is ``delta`` inside the threshold, the upper bound when it is
  within ``delta`` outside.
  With ``hnsw`` and ``ivf`` the search is approximate and may also miss
  neighbours nearer than ``tau_q``; the upper bound then assumes the search
  found the true K nearest. The engine measures how far that holds on
  256 sampled queries searched exhaustively (``sample`` in the notes:
  recall of the index, missed pairs nearer than ``tau_q``, and the exact vs
  reported FAR of those queries, whose ratio gives ``far_estimate_at_*``: a
  statistical estimate of the global FAR, not a bound).
* **FAR-defined range** (SPEC 5): ``t(F)`` is the ``ceil(F * M)``-th
  smallest distance among the negative pairs *the search saw*, with ``M``
  the exact number of negative pairs. Seen pairs are a subset of all pairs,
  so this is an upper bound of the exact ``t(F)``; it equals it when no
  query is truncated below it (``far_range.exact_lower/exact_upper`` in the
  notes). If the search sees (or, known before searching, can see: K per
  query) fewer than ``ceil(F * M)`` negatives, the range is out of reach and
  a ``ConfigError`` suggests a ``--far-range`` that is not.
* **Retrieval** comes from the K nearest, sorted by (distance, gallery row)
  like the exact engine: R@k is exact for ``k <= K`` with an exact search,
  and AP@R is a lower bound for queries with positives beyond the K-th
  neighbour (both up to the order of pairs that rounding separates).

When K covers the whole gallery there is nothing to search: every pair is a
candidate, no query is truncated and the results equal the exact engine's
(the inner products then come from the same block products, so even the
rounding agrees).

When the unseen negatives could move the global FAR by more than 1% (or the
sampled check finds the search missing pairs), ``run`` issues an
:class:`ApproximationWarning` saying how far, and how to tighten it.

Memory (bytes), besides the prepared arrays: the index (``flat``/``ivf``:
``ng*D*4``; ``hnsw``: ``ng*(D*4 + 2*M*4)``; freed after the search),
``nq*K*8`` for the neighbour ids and distances, and one block.

The index build is deterministic: IVF trains on an evenly spaced subsample
with FAISS's fixed k-means seed, and HNSW is built with one thread (its
multi-threaded build depends on thread timing). Searching is parallel.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import faiss
import numpy as np

from .. import options
from ..errors import ConfigError
from ..prepare import Prepared
from .base import (DEFAULT_BLOCK_BYTES, FAR_BINS, REPORT_BINS, EngineOutput, GridSpec, Progress,
                   RunContext, check_block_bytes, class_pair_keys, quiet, check_range, drop_self, exact_keys,
                   explicit_range, far_fractions, inner_products, key_to_dist, order_rank,
                   pair_keys, report_edges, report_scale, tile_rows, value_bins)
from .partial import Retrieval
from .ranking import hits_at_r, rank_order, retrieval_at_r
from .select import KeyBins, bracket, padded_span
from .workers import faiss_threads

#: relative gap between the upper and the reported global FAR that triggers a warning
WARN_GAP = 0.01
#: queries per search call (bounds FAISS's output buffers)
SEARCH_ROWS = 16384
#: candidate pairs per block when streaming the stored neighbours
PAIRS_PER_BLOCK = 2**21
#: memory for the rows of the exhaustive check at a time
CHECK_BYTES = 64 * 2**20


class ApproximationWarning(UserWarning):
    """The knn engine's counts may be noticeably off (see its notes)."""


@dataclass(frozen=True)
class KnnOutput(EngineOutput):
    """``EngineOutput`` plus the bounds of the knn engine.

    ``class_fp_lower``/``class_fp_upper`` (C, K): cumulative bounds on the
    exact false-positive counts (``class_fp`` are the seen ones);
    ``far_lower``/``far_upper`` (K,): the same for the global FAR over
    evaluated classes; ``truncated`` (K,): evaluated queries whose K-th
    neighbour lies at or below each threshold with negatives unseen.
    """

    class_fp_lower: np.ndarray | None = None
    class_fp_upper: np.ndarray | None = None
    far_lower: np.ndarray | None = None
    far_upper: np.ndarray | None = None
    truncated: np.ndarray | None = None


class KnnEngine:
    """Approximate counts from a K-nearest-neighbour search (module docstring).

    Parameters
    ----------
    k : neighbours per query (self excluded), at least 1.
    index : ``"hnsw"``, ``"ivf"`` or ``"flat"``.
    block_bytes : memory of one block of inner products.
    hnsw_m, ef_construction, ef_search : HNSW graph degree and beam widths
        (``ef_search`` defaults to ``max(64, 2 K)``).
    nlist, nprobe : IVF lists (default ``4 sqrt(ng)``) and lists probed per
        query (default 16).
    sample_rows : evaluated queries searched exhaustively to check the index
        and draw the report histogram (taken from the exact engine's report
        sample of about REPORT_ROWS rows; 0 turns the check off).

    ``run`` returns a :class:`KnnOutput` (the bounds too); through
    ``evaluate()`` its notes are the result's ``provenance["engine_notes"]``.
    """

    name = "knn"

    def __init__(self, k: int = 100, index: str = "hnsw", *,
                 block_bytes: int = DEFAULT_BLOCK_BYTES, hnsw_m: int = 32,
                 ef_construction: int = 80, ef_search: int | None = None,
                 nlist: int | None = None, nprobe: int | None = None,
                 sample_rows: int = 256):
        options.validate(k=k, index=index)
        self.k = int(k)
        self.index = index
        self.block_bytes = check_block_bytes(block_bytes)
        self.hnsw_m = int(hnsw_m)
        self.ef_construction = int(ef_construction)
        self.ef_search = ef_search
        self.nlist = nlist
        self.nprobe = nprobe
        self.sample_rows = int(sample_rows)
        #: keep the search's candidates after ``run`` for ``diagnosis_pass``
        #: (``evaluate(diagnose=True)`` sets it; ``nq*K*8`` bytes held until then)
        self.keep_candidates = False
        self._diag = None

    # ------------------------------------------------------------------ public
    def run(self, prep: Prepared, spec: GridSpec, progress: Progress | None = None) -> KnnOutput:
        K = int(options.check("num_thresholds", spec.num_thresholds))
        progress = progress or quiet
        ctx = _Context(prep, self.block_bytes, spec.min_class_rows)
        dense = self.k >= int(ctx.avail.max())
        notes: dict = {"k": self.k, "index": self.index if not dense else "none (K covers the "
                       "gallery: every pair is seen)", "delta": ctx.delta}
        if spec.calibration_range is None and not dense:
            self._check_reach(ctx, spec.far_range)  # before the (long) search
        ids = vals = None
        if not dense:
            index, desc = self._build_index(prep, progress)
            notes["index"] = desc
            ids, vals = self._search(index, prep, progress)
            del index
        src = _Candidates(ctx, ids, vals)
        self._diag = (ids, ctx.delta, notes["index"], dense) if self.keep_candidates else None

        # -- the calibration range
        explicit = explicit_range(spec)
        if explicit is not None:
            (lo, hi), source, passes, ret = explicit, "explicit", 1, None
        else:
            (lo, hi), ret, notes["far_range"] = self._far_range(ctx, src, *far_fractions(spec),
                                                                progress)
            source, passes = "far", 3
        grid = np.linspace(lo, hi, K)
        res = self._count(ctx, src, grid, want_ret=ret is None, progress=progress)
        if ret is None:
            ret = res["ret"]
        sample = self._sample_pass(ctx, ids, grid, progress)
        # the global FAR over the evaluated classes: seen, and its bounds
        ev, m_total = ctx.evaluated, int(ctx.M[ctx.evaluated].sum())
        fp_hi = res["neg_hi"] + res["unseen"]
        fars = [v[ev].sum(axis=0) / m_total for v in (res["neg"], res["neg_lo"], fp_hi)]
        notes.update(self._summary(ctx, res, *fars, dense))
        if sample is not None:
            notes["sample"] = sample
            # a statistical estimate (not a bound): the sampled queries' exact /
            # reported FAR ratio applied to the reported FAR
            for end in ("lower", "upper"):
                rep_s, ex_s = sample[f"far_reported_at_{end}"], sample[f"far_exact_at_{end}"]
                notes[f"far_estimate_at_{end}"] = (notes[f"far_at_{end}"] * ex_s / rep_s
                                                   if rep_s > 0 else None)
        notes["report_histogram_rows"] = int(sample["rows"] if sample else res["hist_rows"])
        if "far_range" in notes:
            notes["far_range"]["exact_lower"] = bool(res["truncated"][0] == 0)
            notes["far_range"]["exact_upper"] = bool(res["truncated"][-1] == 0)
        hist = res if sample is None else {h: sample.pop(h) for h in ("hist_pos", "hist_neg")}
        out = KnnOutput(
            thresholds=grid, range_source=source, class_tp=res["pos"], class_fp=res["neg"],
            group_tp=res["group_pos"], group_fp=res["group_neg"], first_rank=ret.first_rank,
            ap_at_r=ret.ap, n_relevant=ret.n_rel, hits_at_r=ret.hits,
            hist_edges=report_edges(ctx.span, ctx.l2), hist_pos=hist["hist_pos"],
            hist_neg=hist["hist_neg"], passes=passes, notes=notes, class_fp_lower=res["neg_lo"],
            class_fp_upper=fp_hi, far_lower=fars[1], far_upper=fars[2],
            truncated=res["truncated"])
        self._maybe_warn(out, notes, fars[0], grid)
        return out

    # ------------------------------------------------------------- diagnosis
    def diagnosis_pass(self, prep: Prepared, t: float, block_bytes: int,
                       progress: Progress | None = None) -> dict:
        """SPEC 16's pass from the candidates of the last ``run`` (kept when
        ``keep_candidates``): ``engines/diagnose_knn.py`` (lower bounds, and
        which queries are complete); the exact pass when K covers the gallery."""
        from .diagnose import _pass
        from .diagnose_knn import candidate_pass

        if self._diag is None:
            raise ConfigError("the knn engine diagnoses from the candidates of its last run: "
                              "set keep_candidates (evaluate(..., diagnose=True) does)")
        ids, delta, desc, dense = self._diag
        self._diag = None  # the candidates go once used
        nq = len(prep.q_rows)
        if dense:
            res = _pass(prep, t, block_bytes, progress)
            res["complete"] = res["nearest_known"] = np.ones(nq, bool)
        else:
            res = candidate_pass(prep, t, ids, None, delta, block_bytes, progress)
        res["coverage"] = {"k": self.k, "index": desc, "exact_search": dense or
                           self.index == "flat"}
        return res

    # ------------------------------------------------------------- the search
    def _build_index(self, prep: Prepared, progress):
        xg = prep.xg
        ng, d = xg.shape
        l2 = prep.metric == "l2"
        metric = faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT
        progress("index", 0, ng)
        if self.index == "flat":
            index = faiss.IndexFlatL2(d) if l2 else faiss.IndexFlatIP(d)
            index.add(xg)
            desc = f"faiss IndexFlat{'L2' if l2 else 'IP'} (exact search)"
        elif self.index == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.hnsw_m, metric)
            index.hnsw.efConstruction = self.ef_construction
            with faiss_threads(1):  # the parallel build depends on thread timing
                index.add(xg)
            ef = self.ef_search or max(64, 2 * self.k)
            index.hnsw.efSearch = max(ef, self.k + 1)
            desc = (f"faiss IndexHNSWFlat (M={self.hnsw_m}, efConstruction="
                    f"{self.ef_construction}, efSearch={index.hnsw.efSearch}; approximate)")
        else:
            nlist = self.nlist or max(1, int(round(4 * math.sqrt(ng))))
            nlist = max(1, min(nlist, ng // 39 if ng >= 39 else 1))
            nprobe = min(nlist, self.nprobe or 16)
            quantizer = faiss.IndexFlatL2(d) if l2 else faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, metric)
            stride = max(1, ng // (40 * nlist))  # ~40 training points per list
            index.train(np.ascontiguousarray(xg[::stride]))
            index.add(xg)
            index.nprobe = nprobe
            desc = f"faiss IndexIVFFlat (nlist={nlist}, nprobe={nprobe}; approximate)"
        progress("index", ng, ng)
        return index, desc

    def _search(self, index, prep: Prepared, progress) -> tuple[np.ndarray, np.ndarray]:
        """ids (nq, k): each query's k nearest gallery columns, self excluded
        (-1 where the index returned fewer), and the index's float32 values
        for them (inner products, or squared L2 distances)."""
        nq, ng = len(prep.q_rows), len(prep.g_rows)
        k = self.k
        ids = np.empty((nq, k), np.int32 if ng < 2**31 else np.int64)
        vals = np.empty((nq, k), np.float32)
        progress("search", 0, nq)
        for s in range(0, nq, SEARCH_ROWS):
            e = min(nq, s + SEARCH_ROWS)
            sc = prep.self_col[s:e]
            kk = min(ng, k + 1) if (sc >= 0).any() else min(ng, k)
            dist, got = index.search(prep.xq[s:e], kk)
            is_self = (got == sc[:, None]) | (got < 0)
            # non-self first, in the index's order; rows without self lose the last
            order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
            got = np.take_along_axis(got, order, axis=1)
            dist = np.take_along_axis(dist, order, axis=1)
            got[np.take_along_axis(is_self, order, axis=1)] = -1
            pad = k - got.shape[1]
            ids[s:e, :got.shape[1]] = got
            vals[s:e, :got.shape[1]] = dist
            if pad > 0:
                ids[s:e, got.shape[1]:] = -1
                vals[s:e, got.shape[1]:] = 0
            progress("search", e, nq)
        return ids, vals

    # ------------------------------------------------------ the FAR range
    def _unreachable(self, a: float, b: float, seen: int, m_total: int, need: int,
                     at_most: bool) -> ConfigError:
        reach = seen / m_total if m_total else 0.0
        return ConfigError(
            f"--far-range {a:g}:{b:g} is out of reach of --engine knn --k {self.k}: the "
            f"search {'can see at most' if at_most else 'saw'} {seen} of {m_total} negative "
            f"pairs (FAR up to {reach:.3g}), fewer than the {need} that FAR {b:g} needs; "
            f"lower the range (e.g. --far-range {reach / 20:.2g}:{reach / 2:.2g}), raise --k, "
            "or give --calibration-range LO:HI")

    def _check_reach(self, ctx: "_Context", far_range) -> None:
        """Fail early when even K negatives per query cannot reach FAR B."""
        a, b = (float(v) for v in far_range)
        if not (0.0 < a < b <= 1.0):
            return  # run() reports the degenerate range
        m_total = int(ctx.M[ctx.evaluated].sum())
        most = int(np.minimum(self.k, ctx.neg_q)[ctx.row_eval].sum())
        need = order_rank(b, m_total)
        if most < need:
            raise self._unreachable(a, b, most, m_total, need, at_most=True)

    def _far_range(self, ctx: "_Context", src: "_Candidates", a: float, b: float, progress):
        """Order statistics of the seen negatives; returns the range, the
        retrieval results (computed on the way) and the notes."""
        m_total = int(ctx.M[ctx.evaluated].sum())
        ranks = (order_rank(a, m_total), order_rank(b, m_total))
        kb = KeyBins.over(*padded_span(ctx.span), FAR_BINS)
        hist = np.zeros(FAR_BINS, np.int64)
        ret = Retrieval.zeros(ctx.nq)
        for blk in src.blocks(progress, "order statistic"):
            _rank(ret, ctx, blk)
            hist += kb.histogram(blk.keys[blk.neg & ctx.row_eval[blk.s:blk.e, None]])
        seen = int(hist.sum())
        if seen < ranks[1]:
            raise self._unreachable(a, b, seen, m_total, ranks[1], at_most=False)
        # FAISS's keys decide as they are: brackets of one bin (1 <= rank <= seen)
        brackets = [bracket(hist, r) for r in ranks]
        gathered: list[list] = [[], []]
        for blk in src.blocks(progress, "order statistic 2"):
            kv = blk.keys[blk.neg & ctx.row_eval[blk.s:blk.e, None]]
            bins = kb.of(kv)
            for got, br in zip(gathered, brackets):
                got.append(kv[br.holds(bins)])
        values = []
        for got, br in zip(gathered, brackets):
            cand = np.concatenate(got)
            if len(cand) != int(hist[br.bin]):  # pragma: no cover - invariant
                raise RuntimeError("knn order-statistic passes disagree; please report this")
            values.append(key_to_dist(br.select(cand), ctx.l2))
        lo, hi = values
        check_range(lo, hi, "--far-range",
                     f"{a:g}:{b:g} (it selects distances {lo:.6g} and {hi:.6g}; "
                     "many negative pairs share one distance)")
        notes = {
            "definition": "ceil(F*M)-th smallest distance among the negative pairs the search "
                          "saw (M = all negative pairs); an upper bound of the exact t(F), "
                          "equal to it when no query is truncated below it",
            "negatives_total": m_total, "negatives_seen": seen,
            "rank_lower": ranks[0], "rank_upper": ranks[1],
        }
        return (lo, hi), ret, notes

    # ---------------------------------------------------------------- counts
    def _count(self, ctx: "_Context", src: "_Candidates", grid: np.ndarray, want_ret: bool,
               progress) -> dict:
        K = len(grid)
        C, G = ctx.C, ctx.G
        ret = Retrieval.zeros(ctx.nq) if want_ret else None
        acc = {n: np.zeros((C, K + 1), np.int64) for n in ("pos", "neg", "neg_lo", "neg_hi",
                                                            "unseen")}
        gacc = {n: np.zeros((max(G, 1), K + 1), np.int64) for n in ("pos", "neg")}
        trunc = np.zeros(K + 1, np.int64)
        hist_pos = np.zeros(REPORT_BINS, np.int64)
        hist_neg = np.zeros(REPORT_BINS, np.int64)
        hist_rows = 0
        tau_all = np.full(ctx.nq, np.inf)
        unseen_all = np.zeros(ctx.nq, np.int64)
        for blk in src.blocks(progress, "counts"):
            s, e = blk.s, blk.e
            cls = ctx.prep.q_class[s:e]
            grp = ctx.prep.q_group[s:e] if G else None
            if ret is not None:
                _rank(ret, ctx, blk)
            # negatives: seen ones, and the rounding-safe bounds
            ok = blk.neg
            rows = np.broadcast_to(np.arange(e - s)[:, None], ok.shape)[ok]
            kv = blk.keys[ok]
            _add(acc["neg"], cls[rows], ctx.cells(kv, grid), K)
            _add(acc["neg_lo"], cls[rows], ctx.cells(kv + ctx.delta, grid), K)
            _add(acc["neg_hi"], cls[rows], ctx.cells(kv - ctx.delta, grid), K)
            if G:
                _add(gacc["neg"], grp[rows], ctx.cells(kv, grid), K)
            # positives: exact (all within-class pairs)
            for pr, pk in src.positives(blk):
                pcls = cls[pr]
                _add(acc["pos"], pcls, ctx.cells(pk, grid), K)
                if G:
                    _add(gacc["pos"], grp[pr], ctx.cells(pk, grid), K)
            # truncation: unseen negatives may lie at or beyond the K-th neighbour
            seen = ok.sum(axis=1)
            unseen = ctx.neg_q[s:e] - seen
            tau = blk.tau
            tc = ctx.cells(tau - ctx.delta, grid)
            has = unseen > 0
            _add(acc["unseen"], cls[has], tc[has], K, weights=unseen[has])
            ev = has & ctx.row_eval[s:e]
            trunc += np.bincount(tc[ev], minlength=K + 1)
            tau_all[s:e] = tau
            unseen_all[s:e] = unseen
            # report histogram (sampled rows; dense blocks hold every pair)
            if blk.dense:
                hs = ctx.row_eval[s:e] & ctx.row_sample[s:e]
                if hs.any():
                    hist_rows += int(hs.sum())
                    b = ctx.report_bins(blk.keys[hs])
                    pos = blk.pos[hs]
                    valid = np.isfinite(blk.keys[hs])
                    hist_pos += np.bincount(b[pos & valid], minlength=REPORT_BINS)
                    hist_neg += np.bincount(b[~pos & valid], minlength=REPORT_BINS)
        out = {n: np.cumsum(v[:, :K], axis=1) for n, v in acc.items()}
        out["group_pos"] = np.cumsum(gacc["pos"][:, :K], axis=1) if G else None
        out["group_neg"] = np.cumsum(gacc["neg"][:, :K], axis=1) if G else None
        out["truncated"] = np.cumsum(trunc[:K])
        out["hist_pos"], out["hist_neg"], out["hist_rows"] = hist_pos, hist_neg, hist_rows
        out["tau_q"], out["unseen_q"] = tau_all, unseen_all
        out["ret"] = ret
        return out

    # ------------------------------------------------------ sampled check
    def _sample_pass(self, ctx: "_Context", ids, grid: np.ndarray, progress) -> dict | None:
        """Exhaustive search of the sampled queries (sparse case only).

        Gives the report histogram over all their pairs, the recall of the
        index (the share of pairs nearer than each query's K-th returned
        neighbour that the search returned: 1 for an exact search), the
        negative pairs it missed there (which the FAR upper bound assumes
        are none), and the exact vs reported FAR of these queries.
        """
        if ids is None:
            return None
        prep = ctx.prep
        rows = np.nonzero(ctx.row_eval & ctx.row_sample)[0]
        if self.sample_rows < len(rows):
            pick = np.unique(np.linspace(0, len(rows) - 1, self.sample_rows).astype(np.int64))
            rows = rows[pick] if self.sample_rows > 0 else rows[:0]
        ng = ctx.ng
        K = len(grid)
        hist_all = np.zeros(REPORT_BINS, np.int64)
        hist_pos = np.zeros(REPORT_BINS, np.int64)
        fp_exact = np.zeros(K + 1, np.int64)
        fp_seen = np.zeros(K + 1, np.int64)
        below = seen_below = missed = neg_total = 0
        top_key = grid[-1] ** 2 if ctx.l2 else grid[-1]
        top_key = top_key + 1e-9 * abs(top_key) + 1e-300  # cells() decides exactly below it
        # a float64 row of keys and its temporaries take ~32 bytes per gallery item
        step = max(1, min(len(rows), min(self.block_bytes, CHECK_BYTES) // (32 * ng)))
        progress("check", 0, len(rows))
        for s in range(0, len(rows), step):
            r = rows[s:s + step]
            n = len(r)
            keys = ctx.keys(prep.xq[r] @ prep.xg.T, r)
            sc = prep.self_col[r]
            has_self = sc >= 0
            keys[np.nonzero(has_self)[0], sc[has_self]] = np.inf
            cls = prep.q_class[r]
            ps, pe = prep.class_start[cls], prep.class_end[cls]
            pos_keys = [keys[i, ps[i]:pe[i]] for i in range(n)]
            pos_keys = np.concatenate(pos_keys) if n else np.zeros(0)
            pos_keys = pos_keys[np.isfinite(pos_keys)]
            # report histogram: all finite keys, positives subtracted for negatives
            b = ctx.report_bins(keys)
            hist_all += np.bincount(b.ravel(), minlength=REPORT_BINS)
            if has_self.any():
                np.subtract.at(hist_all, b[np.nonzero(has_self)[0], sc[has_self]], 1)
            hist_pos += np.bincount(ctx.report_bins(pos_keys), minlength=REPORT_BINS)
            neg_total += int(ctx.neg_q[r].sum())
            # exact false positives of these queries on the grid
            low = keys[keys <= top_key]
            fp_exact += np.bincount(ctx.cells(low, grid), minlength=K + 1)
            fp_exact -= np.bincount(ctx.cells(pos_keys[pos_keys <= top_key], grid),
                                    minlength=K + 1)
            # what the search returned, with these (exhaustive) keys
            got = ids[r].astype(np.int64)
            gv = got >= 0
            gk = np.where(gv, np.take_along_axis(keys, np.where(gv, got, 0), axis=1), np.inf)
            gneg = gv & ~((got >= ps[:, None]) & (got < pe[:, None]))
            fp_seen += np.bincount(ctx.cells(gk[gneg], grid), minlength=K + 1)
            tau = np.where(gv, gk, -np.inf).max(axis=1) - ctx.delta
            near = int((keys < tau[:, None]).sum())
            below += near
            seen_below += int((gv & (gk < tau[:, None])).sum())
            pos_near = sum(int((keys[i, ps[i]:pe[i]] < tau[i]).sum()) for i in range(n))
            missed += (near - pos_near) - int((gneg & (gk < tau[:, None])).sum())
            progress("check", min(len(rows), s + step), len(rows))
        fe = np.cumsum(fp_exact[:K])
        fs = np.cumsum(fp_seen[:K])
        m = max(neg_total, 1)
        return {
            "rows": int(len(rows)), "hist_pos": hist_pos, "hist_neg": hist_all - hist_pos,
            "index_recall": float(seen_below / below) if below else 1.0,
            "missed_nearer_than_kth": int(missed),
            "far_exact_at_lower": float(fe[0] / m), "far_reported_at_lower": float(fs[0] / m),
            "far_exact_at_upper": float(fe[-1] / m), "far_reported_at_upper": float(fs[-1] / m),
        }

    # ------------------------------------------------------------- output
    def _summary(self, ctx: "_Context", res: dict, far, far_lo, far_hi, dense: bool) -> dict:
        ev = ctx.evaluated
        tr = res["truncated"]
        return {
            "search": "none" if dense else ("exact" if self.index == "flat" else "approximate"),
            "queries": int(ctx.row_eval.sum()),
            "queries_truncated_at_lower": int(tr[0]),
            "queries_truncated_at_upper": int(tr[-1]),
            "unseen_negatives_at_upper": int(res["unseen"][ev, -1].sum()),
            "far_at_lower": float(far[0]), "far_at_upper": float(far[-1]),
            "far_lower_bound_at_lower": float(far_lo[0]),
            "far_upper_bound_at_lower": float(far_hi[0]),
            "far_lower_bound_at_upper": float(far_lo[-1]),
            "far_upper_bound_at_upper": float(far_hi[-1]),
            "map_at_r_lower_bound_queries": int(((ctx.pos_q > self.k) & ctx.row_eval).sum()),
        }

    def _maybe_warn(self, out: KnnOutput, notes: dict, far: np.ndarray, grid) -> None:
        """An ``ApproximationWarning`` where the reported global FAR ``far``
        may be far off (module docstring)."""
        gap = out.far_upper - far
        rel = np.where(far > 0, gap / np.maximum(far, 1e-300), np.where(gap > 0, np.inf, 0.0))
        j = int(np.argmax(rel))
        msgs = []
        if rel[j] > WARN_GAP:
            est = notes.get("far_estimate_at_upper")
            hint = (f" (the {notes['sample']['rows']} queries searched exhaustively suggest "
                    f"{est:.4g} at the upper threshold, where {far[-1]:.4g} is reported)"
                    if est is not None else "")
            msgs.append(
                f"knn engine: {int(out.truncated[j])} of {notes['queries']} queries have their "
                f"K-th neighbour (K={self.k}) at or below threshold {grid[j]:.6g}; unseen "
                f"negatives could raise the global FAR there from {far[j]:.4g} (reported, a lower "
                f"bound) to at most {out.far_upper[j]:.4g}{hint}. Raise --k or narrow the "
                "calibration range")
        smp = notes.get("sample")
        if smp and smp["missed_nearer_than_kth"] > 0:
            msgs.append(
                f"knn engine: the {self.index} index missed {smp['missed_nearer_than_kth']} "
                f"negative pairs nearer than the K-th neighbour on {smp['rows']} sampled queries "
                f"(recall {smp['index_recall']:.3f}), so the FAR upper bound is not guaranteed; "
                "use --index flat or a larger search beam for exact bounds")
        for m in msgs:
            warnings.warn(m, ApproximationWarning, stacklevel=3)


# --------------------------------------------------------------------- helpers


def _add(acc: np.ndarray, ids: np.ndarray, cells: np.ndarray, K: int, weights=None) -> None:
    """``acc[ids[i], cells[i]] += weights[i]`` (default 1) in exact integers.

    One bincount over the ids present only: a block of class-sorted queries
    touches a few classes, not all of them.
    """
    if len(ids) == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    flat = (ids.astype(np.int64) - lo) * (K + 1) + cells
    w = None if weights is None else weights.astype(np.float64)
    counts = np.bincount(flat, weights=w, minlength=(hi - lo + 1) * (K + 1))
    acc[lo:hi + 1] += counts.reshape(hi - lo + 1, K + 1).astype(np.int64, copy=False)


class _Context(RunContext):
    """Per-run constants: keys, cells, pair counts per query."""

    def __init__(self, prep: Prepared, block_bytes: int, min_class_rows: int = 2):
        super().__init__(prep, min_class_rows)
        self.block_bytes = block_bytes
        self.neg_q = self.ng - (prep.class_end - prep.class_start)[prep.q_class]
        self.avail = self.ng - (prep.self_col >= 0).astype(np.int64)
        self.block_rows = max(1, block_bytes // (4 * self.ng))  # as the exact engine
        D = prep.dim
        if self.l2:
            # the largest squared distance, without key_span's floor
            top = math.sqrt(float(prep.qn2.max())) + math.sqrt(float(prep.gn2.max()))
            scale = top * top
        else:
            scale = 1.0
        # float32 products of D terms are within ~D * 2**-24 (relative) of the
        # true value; two such computations (ours, the exact engine's, FAISS's)
        # differ by at most twice that: 8x covers both, with room to spare
        self.delta = float(8 * (D + 8) * 2.0 ** -24 * scale)
        self.r_scale = report_scale(self.span)

    def keys(self, S: np.ndarray, rows) -> np.ndarray:
        """float64 keys of float32 products ``S`` of query ``rows`` (as the kernels)."""
        return pair_keys(S, self.prep.qn2[rows], self.prep.gn2, self.l2)

    def exact(self, keys: np.ndarray, q: np.ndarray, g: np.ndarray) -> np.ndarray:
        """``keys`` with every finite entry replaced by the float64 key of its
        pair (query rows ``q``, gallery columns ``g``, arrays of ``keys``'s
        shape): the candidates found by float32 products (FAISS's or ours)
        are then counted, ranked and located as the exact engine decides
        them (``base.exact_keys``), so that the two engines agree to the bit
        where they see the same pairs."""
        ok = np.isfinite(keys)
        if ok.any():
            keys = keys.copy()
            keys[ok] = exact_keys(self.prep, q[ok], g[ok])
        return keys

    def cells(self, keys: np.ndarray, grid: np.ndarray) -> np.ndarray:
        """Grid cell of each key: the first k with ``distance <= grid[k]`` (K if none)."""
        return np.searchsorted(grid, key_to_dist(keys, self.l2), side="left")

    def report_bins(self, keys: np.ndarray) -> np.ndarray:
        return value_bins(keys, self.span[0], self.r_scale, REPORT_BINS)


@dataclass
class _Block:
    """Candidates of query rows ``[s, e)``: keys (+inf where absent or self),
    gallery columns, negative / positive masks and tau (key of the K-th)."""

    s: int
    e: int
    keys: np.ndarray
    cols: np.ndarray
    neg: np.ndarray
    pos: np.ndarray
    tau: np.ndarray
    dense: bool
    pos_keys: list | None = None


class _Candidates:
    """Streams the candidate pairs block by block (on every pass).

    Dense (``ids is None``): every gallery column, from the same block
    products as the exact engine. Sparse: the stored neighbours ``ids`` and
    the index's values for them.
    """

    def __init__(self, ctx: _Context, ids: np.ndarray | None, vals: np.ndarray | None):
        self.ctx = ctx
        self.ids = ids
        self.vals = vals

    def blocks(self, progress, stage: str):
        ctx = self.ctx
        prep = ctx.prep
        nq, ng = ctx.nq, ctx.ng
        progress(stage, 0, nq)
        if self.ids is None:
            # the exact engine's products: same tiles, so the same rounding
            tile = tile_rows(ng)
            b = min(nq, ctx.block_rows)
            buf = np.empty((-(-b // tile) * tile, ng), np.float32)
            pad_q = np.zeros((tile, prep.dim), np.float32)
            cols = np.arange(ng)
            xgT = prep.xg.T
            for s in range(0, nq, b):
                e = min(nq, s + b)
                inner_products(prep.xq, s, e, xgT, buf, pad_q)
                Sb = buf[:e - s]
                keys = drop_self(ctx.keys(Sb, slice(s, e)), prep.self_col[s:e])
                ps = prep.class_start[prep.q_class[s:e]]
                pe = prep.class_end[prep.q_class[s:e]]
                inside = (cols[None, :] >= ps[:, None]) & (cols[None, :] < pe[:, None])
                cb = np.broadcast_to(cols, keys.shape)
                keys = ctx.exact(keys, np.broadcast_to(np.arange(s, e)[:, None], keys.shape),
                                 cb)
                valid = np.isfinite(keys)
                yield _Block(s, e, keys, cb, ~inside & valid, inside & valid,
                             np.full(e - s, np.inf), True)
                progress(stage, e, nq)
            return
        k = self.ids.shape[1]
        b = max(1, min(nq, PAIRS_PER_BLOCK // k))
        for s in range(0, nq, b):
            e = min(nq, s + b)
            got = self.ids[s:e].astype(np.int64)
            gv = got >= 0
            v = self.vals[s:e].astype(np.float64)
            # inner products -> 1 - ip; FAISS's L2 values are squared distances
            keys = v if ctx.l2 else 1.0 - v
            keys[~gv] = np.inf
            keys = ctx.exact(keys, np.broadcast_to(np.arange(s, e)[:, None], keys.shape),
                             np.where(gv, got, 0))
            ps = prep.class_start[prep.q_class[s:e]]
            pe = prep.class_end[prep.q_class[s:e]]
            inside = (got >= ps[:, None]) & (got < pe[:, None])
            # a query that got fewer than K neighbours was not searched fully
            # (e.g. IVF probed too few lists): its unseen pairs could be anywhere
            tau = np.where(gv.all(axis=1), np.where(gv, keys, -np.inf).max(axis=1), -np.inf)
            yield _Block(s, e, keys, got, ~inside & gv, inside & gv, tau, False)
            progress(stage, e, nq)

    def positives(self, blk: _Block):
        """(rows within the block, keys) of every positive pair of the block's queries."""
        ctx = self.ctx
        if blk.dense:
            rows = np.broadcast_to(np.arange(blk.e - blk.s)[:, None], blk.pos.shape)[blk.pos]
            yield rows, blk.keys[blk.pos]
            return
        rows_out: list = []
        keys_out: list = []
        for a, b, _, _, keys in class_pair_keys(ctx.prep, blk.s, blk.e, ctx.block_bytes):
            ok = np.isfinite(keys)
            rows_out.append(np.broadcast_to(np.arange(a - blk.s, b - blk.s)[:, None],
                                            keys.shape)[ok])
            keys_out.append(keys[ok])
        if rows_out:
            yield np.concatenate(rows_out), np.concatenate(keys_out)


def _rank(ret: Retrieval, ctx: _Context, blk: _Block) -> None:
    """R@k and AP@R of the block's queries from their candidates, ranked by
    (distance, gallery row), into ``ret``."""
    rows_orig = ctx.prep.g_rows[np.where(blk.cols >= 0, blk.cols, 0)]
    pm = np.take_along_axis(blk.pos, rank_order(blk.keys, rows_orig), axis=1)
    R = ctx.pos_q[blk.s:blk.e]
    # no positive among the candidates: beyond every reported k
    first, ap = retrieval_at_r(pm, R, beyond=ctx.ng + 1)
    has = R > 0
    ret.put(slice(blk.s, blk.e), Retrieval(np.where(has, first, 0), ap, np.where(has, R, 0),
                                           np.where(has, hits_at_r(pm, R), 0)))
