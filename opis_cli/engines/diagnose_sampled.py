"""SPEC 16 estimated from the sampled engine's draws, and said to be an estimate.

The sampled engine (``engines/sampled.py``) deals the queries at random into
blocks and draws ``S`` gallery columns per block (seeded, the same draws as
its counting pass: ``sampled._Context.draws``), so every (query, gallery)
pair is drawn with probability ``S / ng``. From these, at the threshold
``t`` (every pair decided on its float64 key near ``t``, as the exact
engine decides it):

* **Estimated**: ``A(c, c')`` is the Horvitz-Thompson estimate ``(ng / S) *
  (drawn negatives of (c, c') with d <= t)``, rounded to whole pairs; so the
  impostors (``accepts``, ``far``, ``share``), the overlap and the
  class-pair table are estimates (unbiased before rounding; a class pair
  with no drawn accept is not listed, so rare impostors are missed).
* **Exact**: every within-class pair is computed (``diagnose_knn._positives``),
  so the rejected rows and "accepts none of its genuine pairs" are exact; the
  rows that can be suspects (a positive, none accepted) get their 3 nearest
  from the whole gallery (float32 products, every column within two margins
  of the third smallest re-ranked by its float64 key), so the suspects are
  exact; the duplicate groups have no threshold.

With ``S >= ng`` every pair is drawn and every answer is exact.

Memory (bytes) above the prepared rows: one block of ``B x S`` float32
products per worker (``sampled.BLOCK_KEYS``), the accepted drawn pairs of a
block (``~40`` bytes each), ``E*24`` for the class pairs, ``nq*48`` per-query
results, one class's positives in pieces of ``block_bytes``, and for the
possible suspects a tile of ``block_bytes / (8 ng)`` rows of products and keys.
"""

from __future__ import annotations

import numpy as np

from ..prepare import Prepared
from .base import (drop_self, key_margins, key_to_dist, nearest_exact, pair_keys,
                   query_positives, quiet)
from .diagnose import sparse_entries, threshold_keys
from .diagnose_knn import _positives


def _nearest3(prep: Prepared, rows: np.ndarray, block_bytes: int) -> np.ndarray:
    """The 3 nearest gallery columns of query ``rows`` by (float64 key,
    original row), self excluded; (len(rows), 3), -1 where fewer."""
    ng = len(prep.g_rows)
    out = np.full((len(rows), 3), -1, np.int64)
    if ng == 0 or len(rows) == 0:
        return out
    l2 = prep.metric == "l2"
    margins = key_margins(prep, rows)
    step = max(1, block_bytes // (12 * ng))
    xgT = prep.xg.T
    for s in range(0, len(rows), step):
        r = rows[s:s + step]
        keys = drop_self(pair_keys(prep.xq[r] @ xgT, prep.qn2[r], prep.gn2, l2), prep.self_col[r])
        kk = min(3, keys.shape[1])
        k3 = np.partition(keys, kk - 1, axis=1)[:, kk - 1]
        for i in np.flatnonzero(np.isfinite(k3)):  # fewer than 3 other columns: none
            top = nearest_exact(prep, r[i], keys[i], kk, margins[s + i])
            out[s + i, :len(top)] = top
    return out


def sampled_pass(prep: Prepared, t: float, ctx, block_bytes: int, progress=None) -> dict:
    """The diagnosis pass from the sampled engine's draws (``ctx``: its
    ``sampled._Context`` of ``prep``, ``S`` and seed, whose ``_block`` and
    ``refine`` give the drawn negative pairs): the fields of
    ``diagnose.merge_parts`` (``a`` the rounded estimates) plus ``estimate``
    (the numbers of the draws)."""
    nq, ng = ctx.nq, ctx.ng
    progress = progress or quiet
    C = prep.n_classes
    l2 = prep.metric == "l2"
    M = ctx.margin
    tk_lo, tk_hi = threshold_keys(t, l2)
    rej, accpos, npos, _, _, _ = _positives(prep, t, block_bytes)
    ent_key: list = []
    ent_n: list = []
    used = 0
    progress("diagnosis", 0, nq)
    for b in range(ctx.n_blocks):
        rows, _, keys, qc, _, gc = ctx._block(b, tk_hi)
        near = keys > tk_lo - M  # within the margin: decided by the float64 key
        keys = ctx.refine(rows, gc, keys, near)
        acc = ~near | (key_to_dist(keys, l2) <= t)
        if acc.any():
            u, n = np.unique(qc[acc].astype(np.int64) * C + prep.g_class[gc[acc]], return_counts=True)
            ent_key.append(u)
            ent_n.append(n.astype(np.int64))
            used += int(acc.sum())
        progress("diagnosis", min(nq, (b + 1) * ctx.B), nq)
    if ent_key:
        key, n = sparse_entries(np.concatenate(ent_key), np.concatenate(ent_n))
    else:
        key = n = np.zeros(0, np.int64)
    scale = 1.0 if ctx.exhaustive else ng / ctx.S
    # Horvitz-Thompson estimates, rounded half to even to whole pairs (at least 1:
    # a drawn accept means the pair accepts)
    a = np.maximum(np.rint(n * scale), 1).astype(np.int64) if len(n) else n
    # suspects are exact: the 3 nearest of every row that can be one
    maybe = np.nonzero((query_positives(prep) > 0) & (accpos == 0))[0]
    top = np.full((nq, 3), -1, np.int64)
    top[maybe] = _nearest3(prep, maybe, block_bytes)
    return {"rej": rej, "accpos": accpos, "top": top, "npos": npos, "key": key, "a": a,
            "estimate": {"negatives_per_query": ctx.S, "every_pair": bool(ctx.exhaustive),
                         "pairs_drawn": int(nq) * ctx.S, "accepted_pairs_drawn": used,
                         "scale": scale, "suspect_candidates": int(len(maybe))}}
