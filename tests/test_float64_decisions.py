"""One decision rule (SPEC 2, issue 23): the calibration fit, ``opis calibrate``,
the verification view and the sampled engine decide as the float64 keys do.

Every number here is compared with a naive reference run on the N x N matrix
of the float64 distances of SPEC 2 ("Which arithmetic decides": the float32
rows, normalised in float64 for cosine, products summed in float64;
``base.exact_keys``). The inputs are continuous and full of near-ties (rows
a few float32 roundings apart), where the float32 BLAS distances order many
pairs differently: each test also checks that the same reference run on
float32 BLAS distances gives a different answer somewhere, so that it could
fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from opis_cli.calibration import fit_many
from opis_cli.engines.base import exact_keys, key_to_dist, pair_keys
from opis_cli.prepare import prepare
from transfer_reference import fitted_thresholds


def near_ties(seed: int, n: int = 240, dim: int = 96, C: int = 8, spread: float = 3e-3):
    """Rows scattered a little around one anchor (distances 1e-7 to 1e-4):
    every distance has many rivals within float32 rounding."""
    rng = np.random.default_rng(seed)
    anchor = rng.normal(size=dim)
    x = anchor + rng.normal(size=(n, dim)) * spread * rng.uniform(0.3, 1.0, size=(n, 1))
    y = np.array([f"c{v}" for v in rng.integers(0, C, n)])
    return x.astype(np.float32), y


def distances64(x, metric: str) -> np.ndarray:
    """SPEC 2's float64 distances of every ordered pair, in input row order."""
    prep = prepare(x, np.zeros(len(x), np.int64), metric=metric)
    n = prep.n_samples
    qi, gj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    k = exact_keys(prep, qi.ravel(), gj.ravel()).reshape(n, n)
    out = np.empty((n, n))
    out[np.ix_(prep.q_rows, prep.g_rows)] = key_to_dist(k, metric == "l2")
    return out


def distances32(x, metric: str) -> np.ndarray:
    """The same from float32 BLAS products (what the engines compute first)."""
    prep = prepare(x, np.zeros(len(x), np.int64), metric=metric)
    k = pair_keys(prep.xq @ prep.xg.T, prep.qn2, prep.gn2, metric == "l2")
    out = np.empty(k.shape)
    out[np.ix_(prep.q_rows, prep.g_rows)] = key_to_dist(k, metric == "l2")
    return out


# -- the calibration fit (SPEC 11) ---------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_fitted_thresholds_are_float64_order_statistics(metric):
    differs = 0
    for seed in range(4):
        x, y = near_ties(seed)
        rng = np.random.default_rng(seed)
        grp = np.array([f"g{v}" for v in rng.integers(0, 4, len(y))])
        F = (0.01, 0.05, 0.2, 0.5)[seed]
        cals = fit_many(x, y, ["global", "per-class", "per-group", "cluster:4"], target_far=F,
                        metric=metric, groups=grp, seed=seed)
        D = distances64(x, metric)
        tg, per_class = fitted_thresholds(D, y, y, F)
        _, per_group = fitted_thresholds(D, y, grp, F)
        assert all(c.global_threshold == tg for c in cals)
        assert cals[1].thresholds == per_class
        assert cals[2].thresholds == per_group
        k = cals[3].assign(x)
        _, per_cent = fitted_thresholds(D, y, k, F)
        assert cals[3].thresholds == tuple(per_cent.get(str(i)) for i in range(4))
        D32 = distances32(x, metric)
        t32, c32 = fitted_thresholds(D32, y, y, F)
        differs += (t32 != tg) + sum(c32[c] != per_class[c] for c in per_class)
    assert differs  # float32 distances would have given other thresholds


# -- opis calibrate (SPEC 12) ----------------------------------------------------------


def _transfer_both(monkeypatch, x, y, **kw):
    """The reference folds on the float64 distances and on the float32 ones."""
    import transfer_reference as tr

    out = []
    for dist in (distances64, distances32):
        monkeypatch.setattr(tr, "distances", dist)
        out.append(tr.transfer(x, y, **kw))
    return out


def _differs(a: dict, b: dict) -> bool:
    return any(a[s][k] != b[s][k] for s, keys in
               (("calibration", ("threshold", "far", "tpr")),
                ("test", ("far", "tpr", "oracle_threshold", "oracle_tpr", "per_class")))
               for k in keys)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("split", ["classes", "groups", "rows"])
def test_calibrate_folds_decide_as_float64(monkeypatch, metric, split):
    from opis_cli.transfer import Data, calibrate
    from test_calibrate import check_exact

    differs = 0
    for seed in range(3):
        x, y = near_ties(10 + seed, n=200, C=12)
        rng = np.random.default_rng(seed)
        grp = np.array([f"g{v}" for v in rng.integers(0, 7, len(y))])
        F = (0.01, 0.05, 0.3)[seed]
        K = (5, 3, 4)[seed]
        data = Data(x, y, groups=grp if split == "groups" else None)
        got = calibrate(data, folds=K, seed=seed, target=f"far:{F}", split=split, metric=metric,
                        timestamp=False).to_dict()["transfer"]["folds"]
        ref64, ref32 = _transfer_both(monkeypatch, x, y, K=K, seed=seed, F=F, metric=metric,
                                      groups=grp if split == "groups" else None,
                                      rows=split == "rows")
        for g, r, r32 in zip(got, ref64, ref32):
            check_exact(g, r)
            differs += _differs(r, r32)
    assert differs  # float32 distances would have given other folds


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_calibrate_with_a_test_file_decides_as_float64(metric):
    from opis_cli.transfer import Data, calibrate
    from test_calibrate import check_exact
    from transfer_reference import transfer_sides

    x, y = near_ties(21, n=220, C=10)
    a = np.arange(len(y)) < 130
    got = calibrate(Data(x[a], y[a]), test=Data(x[~a], y[~a]), target="far:0.02", metric=metric,
                    timestamp=False).to_dict()["transfer"]["folds"][0]
    ones = np.ones(len(y), bool)
    # pairs lie within each side; the float64 distance of a pair is its own
    ref = transfer_sides(distances64(x, metric), y, np.nonzero(a)[0], np.nonzero(~a)[0], 0.02,
                         ones, ones)
    check_exact(got, ref)


# -- the verification view (SPEC 14) ---------------------------------------------------


def _det_of_float64_keys(x, y, metric, groups=None):
    """The DET points from a naive histogram of the evaluated classes' float64
    keys (SPEC 14's FAR/FRR at every busy bin edge of the engine's bins)."""
    from types import SimpleNamespace

    from opis_cli.engines.base import dist_to_key, key_span, value_bins
    from opis_cli.engines.verify import VER_BINS
    from opis_cli.metrics.verification import det_points

    prep = prepare(x, y, metric=metric)
    lo, hi = key_span(prep)
    D = distances64(x, metric)
    lab = np.asarray(y)
    n = len(lab)
    same = lab[:, None] == lab[None, :]
    off = ~np.eye(n, dtype=bool)
    P = (same & off).sum(axis=1)
    M = (~same).sum(axis=1)
    ev_cls = {c for c in set(lab) if P[lab == c].sum() > 0 and M[lab == c].sum() > 0}
    ev = np.array([c in ev_cls for c in lab])[:, None] & off
    keys = dist_to_key(D, metric == "l2")
    b = value_bins(keys, lo, VER_BINS / (hi - lo), VER_BINS)
    hp = np.bincount(b[ev & same], minlength=VER_BINS)
    hn = np.bincount(b[ev & ~same], minlength=VER_BINS)
    return det_points(SimpleNamespace(hist_pos=hp, hist_neg=hn, P=int(hp.sum()),
                                      M=int(hn.sum())))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("seed", range(4))
def test_verification_decides_as_float64(monkeypatch, metric, seed):
    import reference as ref
    from opis_cli import evaluate
    from test_verification import DCFS, check

    x, y = near_ties(30 + seed, n=260, C=10, spread=(3e-3, 1e-2, 3e-4, 3e-3)[seed])
    rng = np.random.default_rng(seed)
    opts = dict(metric=metric)
    if seed % 2:
        opts["groups"] = [f"g{v}" for v in rng.integers(0, 3, len(y))]
    if seed == 3:
        isq = rng.random(len(y)) < 0.6
        opts.update(is_query=isq, is_gallery=~isq | (rng.random(len(y)) < 0.5))
    if seed == 2:
        D = distances64(x, metric)
        opts["calibration_range"] = (float(np.quantile(D, 0.2)), float(np.quantile(D, 0.6)))
    dcf = DCFS[seed]
    res = evaluate(x, y, timestamp=False, verification=True, dcf=dcf, **opts)
    ref_opts = {k: opts[k] for k in ("groups", "is_query", "is_gallery", "metric") if k in opts}
    wants = []
    for dist in (distances64, distances32):
        monkeypatch.setattr(ref, "distance_matrix", dist)
        wants.append(ref.verification(x, y, dcf=dcf, **ref_opts))
    check(res, wants[0], what=f"seed {seed}")
    v = res.verification
    assert v.fnmr_at_fmr == wants[0]["fnmr_at_fmr"]  # counts: exactly
    if "is_query" not in opts:
        assert v.det == _det_of_float64_keys(x, y, metric)
    w32 = wants[1]
    assert (w32["eer"], w32["eer_threshold"], w32["min_dcf"], w32["fnmr_at_fmr"]) != \
        (wants[0]["eer"], wants[0]["eer_threshold"], wants[0]["min_dcf"],
         wants[0]["fnmr_at_fmr"])  # float32 distances would have decided otherwise


# -- the sampled engine (SPEC 15) --------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("explicit", [False, True])
def test_sampled_engine_drawing_every_row_decides_as_float64(metric, explicit):
    """Every row drawn: the sampled engine's counts, range and retrieval are
    those of the float64 reference (and so the exact engine's), exactly."""
    import reference as ref
    from opis_cli import evaluate
    from opis_cli.engines.sampled import SampledEngine
    from ref_compare import compare

    x, y = near_ties(40 + explicit, n=220, C=8)
    D = distances64(x, metric)
    opts = dict(metric=metric, num_thresholds=1001)
    if explicit:
        opts["calibration_range"] = (float(np.quantile(D, 0.05)), float(np.quantile(D, 0.5)))
    else:
        opts["far_range"] = (0.02, 0.3)
    eng = SampledEngine(negatives_per_query=len(y), retrieval_queries=len(y))
    got = evaluate(x, y, engine=eng, timestamp=False, **opts)
    want = ref.evaluate(x, y, distances=D, **opts)
    compare(got, want, rel=1e-12, dist_tol=0.0, check_json=False)
    assert got.calibration_range.lower == want.lower
    assert got.calibration_range.upper == want.upper


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("path", ["brackets", "histogram"])
def test_sampled_engine_counts_its_draws_as_float64(metric, path, monkeypatch):
    """Sampled negatives (S < ng): the range (by the pilot's brackets, or by
    the histogram passes when they miss), the FP counts on the grid and on
    every replicate's grid equal a float64 recount of the same draws."""
    from opis_cli import counts
    from opis_cli.engines.sampled import GROUPS, _Context

    x, y = near_ties(50, n=400, C=10)
    prep = prepare(x, y, metric=metric)
    S, seed = 60, 3
    ctx = _Context(prep, S, seed)
    if path == "histogram":
        monkeypatch.setattr(_Context, "_bracketed", lambda *a: None)
    # the draws and their float64 keys, written out
    rows, cols, draw = [], [], []
    for b in range(ctx.n_blocks):
        r = ctx.order[b * ctx.B:(b + 1) * ctx.B]
        c = ctx.draws(b)
        rows.append(np.repeat(r, len(c)))
        cols.append(np.tile(c, len(r)))
        draw.append(np.tile(np.arange(len(c)), len(r)))
    rows, cols, draw = map(np.concatenate, (rows, cols, draw))
    neg = prep.g_class[cols] != prep.q_class[rows]
    rows, cols, draw = rows[neg], cols[neg], draw[neg]
    d = key_to_dist(exact_keys(prep, rows, cols), metric == "l2")
    ev = ctx.evaluated[prep.q_class[rows]]
    grp = ctx.group_of_draw[draw]
    # the FAR range: the need-th smallest sampled distance of each subset
    a, b = 0.02, 0.3
    (lo, hi), reps = ctx.far_range(a, b, None)
    assert (ctx.passes == 1) == (path == "brackets")
    m_total = int(ctx.M[ctx.evaluated].sum())
    sizes = np.bincount(ctx.group_of_draw, minlength=GROUPS)
    for end, (f, got) in enumerate(((a, lo), (b, hi))):
        r = counts.ceil_rank(f, m_total)
        for sub in range(-1, GROUPS):
            s_sub = S - (0 if sub < 0 else int(sizes[sub]))
            need = max(1, -(-r * s_sub // ctx.ng))
            v = np.sort(d[ev & (grp != sub)])[need - 1]
            assert (got if sub < 0 else reps[sub, end]) == v, (sub, end)
    # the counts on the main grid and on each replicate's grid
    K = 101
    grid = np.linspace(lo, hi, K)
    rep_grids = np.stack([np.linspace(r0, r1, K) for r0, r1 in reps])
    out = ctx.count_negatives(grid, rep_grids, None)
    cls = prep.q_class[rows]
    C = prep.n_classes
    want = np.zeros((C, K), np.int64)
    np.add.at(want, (cls, np.minimum(np.searchsorted(grid, d, side="left"), K - 1)),
              np.searchsorted(grid, d, side="left") < K)
    np.testing.assert_array_equal(out["fp"], np.cumsum(want, axis=1))
    for g in range(GROUPS):
        cell = np.searchsorted(rep_grids[g], d, side="left")
        sel = (cell < K) & (grp != g)
        w = np.zeros((C, K), np.int64)
        np.add.at(w, (cls[sel], cell[sel]), 1)
        np.testing.assert_array_equal(out["fp_rep"][g], np.cumsum(w, axis=1))
    # premise: float32 keys put some of these draws in other cells
    s32 = np.einsum("ij,ij->i", prep.xq[rows], prep.xg[cols]).astype(np.float64)
    k32 = (prep.qn2[rows] + prep.gn2[cols]) - 2.0 * s32 if metric == "l2" else 1.0 - s32
    d32 = key_to_dist(k32, metric == "l2")
    assert (np.searchsorted(grid, d32) != np.searchsorted(grid, d)).any()


# -- the deferred elements of the counts pass (engines/_kernels.decide_deferred) -------


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("seed", [0, 1])
def test_deferred_elements_are_placed_by_their_float64_keys(metric, seed):
    """``decide_deferred`` (which recomputes, in gallery-row order, the keys
    within their margin of a threshold) places every element where
    ``np.searchsorted`` places its float64 key, on a grid whose thresholds
    sit among the near-tied keys; elements in any order, duplicated pairs,
    a lone gallery row, pairs of every query."""
    from opis_cli.engines import _kernels
    from opis_cli.engines.base import key_margins

    x, _ = near_ties(seed)
    prep = prepare(x, np.zeros(len(x), np.int64), metric=metric)
    l2 = metric == "l2"
    rng = np.random.default_rng(seed)
    n = 6000
    q = rng.integers(0, len(prep.q_rows), n)
    g = rng.integers(0, len(prep.g_rows), n)
    q[:50], g[:50] = q[50:100], g[50:100]  # duplicated pairs
    g[100] = len(prep.g_rows) - 1  # the last gallery row, once at least
    k32 = pair_keys(prep.xq @ prep.xg.T, prep.qn2, prep.gn2, l2)[q, g]
    k64 = exact_keys(prep, q, g)
    # thresholds at float64 distances of some pairs, and a hair off others
    d64 = np.sort(key_to_dist(k64, l2))
    grid = np.unique(np.concatenate([d64[::97], np.nextafter(d64[5::89], np.inf)]))
    grid = np.linspace(grid[0], grid[-1], 101)
    grid[::3] = d64[np.linspace(0, n - 1, len(grid[::3])).astype(int)]
    grid = np.sort(grid)
    margin = key_margins(prep)
    cells = _kernels.decide_deferred(k32, q.astype(np.int32), g.astype(np.int32), margin, grid,
                                     l2, prep.xq, prep.xg, l2, False, np.zeros(1), np.zeros(1))
    want = np.searchsorted(grid, key_to_dist(k64, l2), side="left")
    assert np.array_equal(cells, want)
    # the float32 keys alone would misplace some of them: the test can fail
    assert not np.array_equal(np.searchsorted(grid, key_to_dist(k32, l2), side="left"), want)
