"""SPEC 16 from the knn engine's candidates: what the K nearest determine, and what not.

The knn engine (``engines/knn.py``) keeps, per query, the K gallery columns a
FAISS search returned (self excluded) and computes every within-class pair.
From these, at the threshold ``t`` (every pair decided on its float64 key,
``base.exact_keys``, as the exact engine decides it):

* **Positives are exact**: ``rejected_q``, the accepted positives and the
  nearest positive's distance come from every within-class pair, so the
  rejected rows and the "no accepted positive" half of a suspect are exact.
* **Accepted negatives are counted over the candidate pairs only**:
  ``A(c, c')`` is a lower bound. A query is *complete* when the search
  returned K columns and its K-th candidate lies beyond ``t`` by more than
  the engine's rounding allowance ``delta`` (``knn._Context.delta``): an
  exact search (``flat``) then returned every pair with ``d <= t``, so its
  accepted negatives are all counted. A query with every gallery column
  among its candidates is complete too. ``A(c, c')`` equals the exact value
  for a class whose queries are all complete.
* **The 3 nearest are known** when the third nearest candidate (by float64
  key, ties by original row; the positives all known) is nearer than the
  K-th candidate minus ``delta``: no unseen column can come before it. A
  row whose 3 nearest are not known is never reported as a suspect, so the
  suspects are a subset of the exact ones.
* Consequences: impostor ``accepts`` and ``far`` are lower bounds (``share``
  is of the seen false accepts); an overlap computed from lower bounds is a
  lower bound, so every reported overlapping pair truly overlaps and the
  count is a lower bound. The duplicate groups are threshold-free and exact.

With ``hnsw`` or ``ivf`` the search is approximate: "complete" assumes it
found the true K nearest (the engine's sampled check says how far that
holds). When K covers the gallery there is nothing to search (every pair is
a candidate) and the knn engine runs the exact pass (``diagnose._pass``).

Memory (bytes) above the engine's stored candidates (``nq*K*8``): one block
of ``b = PAIRS_PER_BLOCK / K`` queries holds ``b*K*41`` (keys, columns,
masks and their sort), plus the class pairs ``E*24`` and ``nq*48`` per-query
results, and one class's positives (``n_c^2 * 20``, in pieces of
``block_bytes``).
"""

from __future__ import annotations

import numpy as np

from ..prepare import Prepared
from .base import class_pair_keys, exact_keys, key_to_dist, quiet
from .diagnose import sparse_entries

#: candidate pairs per block
PAIRS_PER_BLOCK = 2**21


def _three_smallest(keys: np.ndarray, orig: np.ndarray, cols: np.ndarray):
    """Per row, the 3 smallest entries by (key, original row): their keys,
    original rows and columns ((B, 3), +inf / -1 where fewer)."""
    B, m = keys.shape
    order = np.lexsort((orig, keys), axis=1)[:, :3]
    k3 = np.take_along_axis(keys, order, axis=1)
    o3 = np.take_along_axis(orig, order, axis=1)
    c3 = np.take_along_axis(cols, order, axis=1)
    if m < 3:
        pad = 3 - m
        k3 = np.concatenate([k3, np.full((B, pad), np.inf)], axis=1)
        o3 = np.concatenate([o3, np.full((B, pad), -1, np.int64)], axis=1)
        c3 = np.concatenate([c3, np.full((B, pad), -1, np.int64)], axis=1)
    bad = ~np.isfinite(k3)
    c3[bad] = -1
    o3[bad] = np.iinfo(np.int64).max
    return k3, o3, c3


def _positives(prep: Prepared, t: float, block_bytes: int):
    """Every within-class pair: per query ``rej``, ``accpos``, the nearest
    positive's distance, and its 3 nearest positives (keys, original rows,
    columns)."""
    nq = len(prep.q_rows)
    l2 = prep.metric == "l2"
    rej = np.zeros(nq, np.int64)
    accpos = np.zeros(nq, np.int64)
    npos = np.full(nq, np.nan)
    pk = np.full((nq, 3), np.inf)
    po = np.full((nq, 3), np.iinfo(np.int64).max, np.int64)
    pc = np.full((nq, 3), -1, np.int64)
    for s, e, ps, pe, k in class_pair_keys(prep, 0, nq, block_bytes):
        d = key_to_dist(k, l2)
        valid = np.isfinite(k)
        acc = valid & (d <= t)
        accpos[s:e] = acc.sum(axis=1)
        rej[s:e] = (valid & ~acc).sum(axis=1)
        with np.errstate(invalid="ignore"):
            mn = np.where(valid, d, np.inf).min(axis=1)
        npos[s:e] = np.where(np.isfinite(mn), mn, np.nan)
        cols = np.arange(ps, pe)
        pk[s:e], po[s:e], pc[s:e] = _three_smallest(
            k, np.broadcast_to(prep.g_rows[cols], k.shape), np.broadcast_to(cols, k.shape))
    return rej, accpos, npos, pk, po, pc


def candidate_pass(prep: Prepared, t: float, ids: np.ndarray, vals, delta: float,
                   block_bytes: int, progress=None) -> dict:
    """The diagnosis pass from the candidates ``ids`` (nq, K) (gallery columns,
    -1 where absent or self; the search's values ``vals`` are not needed: the
    float64 keys are recomputed, every decision as the exact engine's): the
    fields of ``diagnose.merge_parts`` plus ``complete`` and ``nearest_known``
    (nq,) bool (module docstring)."""
    nq, K = ids.shape
    progress = progress or quiet
    ng = len(prep.g_rows)
    C = prep.n_classes
    l2 = prep.metric == "l2"
    rej, accpos, npos, pk, po, pc = _positives(prep, t, block_bytes)
    top = np.full((nq, 3), -1, np.int64)
    complete = np.zeros(nq, bool)
    known = np.zeros(nq, bool)
    avail = ng - (prep.self_col >= 0)
    ent_key: list = []
    ent_a: list = []
    b = max(1, PAIRS_PER_BLOCK // max(K, 1))
    progress("diagnosis", 0, nq)
    for s in range(0, nq, b):
        e = min(nq, s + b)
        got = ids[s:e].astype(np.int64)
        gv = got >= 0
        gc = np.where(gv, got, 0)
        q = np.broadcast_to(np.arange(s, e)[:, None], got.shape)
        k = np.full(got.shape, np.inf)
        k[gv] = exact_keys(prep, q[gv], got[gv])
        ps = prep.class_start[prep.q_class[s:e]]
        pe = prep.class_end[prep.q_class[s:e]]
        inside = (got >= ps[:, None]) & (got < pe[:, None])
        neg = gv & ~inside
        # accepted negatives, by (query class, gallery class)
        acc = neg & (key_to_dist(k, l2) <= t)
        if acc.any():
            cq = np.broadcast_to(prep.q_class[s:e, None], got.shape)[acc].astype(np.int64)
            cg = prep.g_class[got[acc]].astype(np.int64)
            u, n = np.unique(cq * C + cg, return_counts=True)
            ent_key.append(u)
            ent_a.append(n.astype(np.int64))
        # coverage: every column seen, or the K-th candidate beyond t by delta
        n_seen = gv.sum(axis=1)
        full = gv.all(axis=1)
        tau = np.where(full, np.where(gv, k, -np.inf).max(axis=1), -np.inf)
        bound = tau - delta  # no unseen column has a smaller float64 key
        all_seen = n_seen >= avail[s:e]
        with np.errstate(invalid="ignore"):
            complete[s:e] = all_seen | (full & (key_to_dist(bound, l2) > t))
        # the 3 nearest: the seen negatives' 3 smallest and the 3 nearest positives
        nk = np.where(neg, k, np.inf)
        no = np.where(neg, prep.g_rows[gc], np.iinfo(np.int64).max)
        k3, o3, c3 = _three_smallest(nk, no, np.where(neg, got, -1))
        kk = np.concatenate([k3, pk[s:e]], axis=1)
        oo = np.concatenate([o3, po[s:e]], axis=1)
        cc = np.concatenate([c3, pc[s:e]], axis=1)
        kt, _, ct = _three_smallest(kk, oo, cc)
        known[s:e] = all_seen | (full & (kt[:, 2] < bound))
        top[s:e] = np.where(known[s:e, None], ct, -1)
        progress("diagnosis", e, nq)
    if ent_key:
        key, a = sparse_entries(np.concatenate(ent_key), np.concatenate(ent_a))
    else:
        key = a = np.zeros(0, np.int64)
    return {"rej": rej, "accpos": accpos, "top": top, "npos": npos, "key": key, "a": a,
            "complete": complete, "nearest_known": known}
