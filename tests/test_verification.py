"""The verification view (SPEC 14): EER, minDCF, FNMR at FMR, per group EER.

The engine against the naive reference (``reference.verification``: every
pair distance in float64, the SPEC 14 formulas over every distinct distance)
on seeded inputs with ties, duplicates, singletons, groups and query/gallery
splits, both metrics, both kinds of calibration range, on 1500 rows (many
keys per histogram bin) and on inputs Hypothesis draws; hand-worked cases;
the pure metric functions on operating points; peer agreement with pyeer and
scikit-learn; the JSON, the knn engine's null, the gate metrics, ``--dcf``
checking, the terminal block and the report's DET curve.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference as ref
from data_gen import gaussian, integer_rows, sparse_signs
from gating_samples import run
from opis_cli import EvaluationResult, evaluate
from opis_cli.engines.base import OperatingPoints
from opis_cli.engines.verify import operating_points, wanted_bins
from opis_cli.errors import ConfigError, OpisError
from opis_cli.gate.rules import RULE_METRICS, VERIFICATION_METRICS, parse_rule
from opis_cli.metrics.verification import eer, fnmr_at_fmr, min_dcf

DCFS = ((0.01, 1.0, 1.0), (0.5, 1.0, 1.0), (0.1, 2.0, 1.0), (0.001, 1.0, 10.0))


def check(res: EvaluationResult, want: dict, *, exact=True, what=""):
    """The result's verification block (in process and after a JSON round trip)
    against the reference's; ``exact=False`` allows float32 rounding of the
    distances (thresholds within 1e-5, rates within two pairs)."""
    back = EvaluationResult.from_json(res.to_json())
    assert back == res
    v = res.verification
    assert v is not None
    P = sum(c.positives for c in res.classes.per_class)
    M = sum(c.negatives for c in res.classes.per_class)
    tol = 1e-12 if exact else 2.0 / min(P, M)
    assert math.isclose(v.eer, want["eer"], abs_tol=tol), (what, v.eer, want["eer"])
    assert math.isclose(v.min_dcf, want["min_dcf"], rel_tol=1e-9, abs_tol=tol / v.p_target), \
        (what, v.min_dcf, want["min_dcf"])
    for name in ("eer_threshold", "min_dcf_threshold"):
        got, exp = getattr(v, name), want[name]
        if exact:
            assert (got is None and exp is None) or math.isclose(got, exp, rel_tol=1e-12,
                                                                 abs_tol=1e-12), (what, name)
        elif got is not None and exp is not None:
            assert math.isclose(got, exp, abs_tol=1e-5), (what, name, got, exp)
    assert set(v.fnmr_at_fmr) == set(want["fnmr_at_fmr"]), what
    for k, x in v.fnmr_at_fmr.items():
        assert math.isclose(x, want["fnmr_at_fmr"][k], abs_tol=tol), (what, k)
    if "group_eer" in want:
        got = {c.label: c.eer for c in res.groups.per_class}
        assert set(got) == set(want["group_eer"]), what
        for k, x in want["group_eer"].items():
            assert math.isclose(got[k], x, abs_tol=tol), (what, "group", k, got[k], x)


def both(x, y, dcf=DCFS[0], **opts):
    res = evaluate(x, y, timestamp=False, verification=True, dcf=dcf, **opts)
    ref_opts = {k: opts[k] for k in ("groups", "is_query", "is_gallery", "metric") if k in opts}
    return res, ref.verification(x, y, dcf=dcf, **ref_opts)


# -- the engine against the reference --------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_integer_rows_with_ties_duplicates_and_singletons(seed):
    """Small integer coordinates, l2: exact distances with many ties and duplicate rows."""
    x, y = integer_rows(seed)
    if seed % 2:  # singleton classes: not part of the global pairs
        x = np.vstack([x, np.full((2, x.shape[1]), 7, np.float32) + np.arange(2)[:, None]])
        y = list(y) + ["single0", "single1"]
    opts = dict(metric="l2")
    if seed % 3 == 0:
        opts["calibration_range"] = (1.0, 3.5)
    res, want = both(x, y, DCFS[seed % 4], **opts)
    check(res, want, what=f"seed {seed}")


@pytest.mark.parametrize("seed", range(4))
def test_sparse_signs_cosine_exact_ties(seed):
    x, y = sparse_signs(seed)
    res, want = both(x, y, DCFS[seed], metric="cosine",
                     **({"calibration_range": (0.25, 1.25)} if seed % 2 else {}))
    check(res, want, what=f"seed {seed}")


@pytest.mark.parametrize("seed", range(6))
def test_groups_and_query_gallery_splits(seed):
    rng = np.random.default_rng(seed + 900)
    x, y = integer_rows(seed + 60, n=100)
    groups = [f"g{v}" for v in rng.integers(0, 2 + seed % 3, size=len(y))]
    opts = dict(metric="l2", groups=groups)
    if seed % 2:
        isq = rng.random(len(y)) < 0.6
        opts.update(is_query=isq, is_gallery=~isq | (rng.random(len(y)) < 0.5))
    res, want = both(x, y, DCFS[seed % 4], **opts)
    assert len(want["group_eer"]) >= 2  # premise
    check(res, want, what=f"seed {seed}")


@pytest.mark.parametrize("seed", range(4))
def test_gaussian_clusters_both_metrics(seed):
    """Continuous distances: the engine's float32 products may order two nearly
    equal distances differently from float64, hence the tolerance."""
    x, y = gaussian(seed + 40)
    metric = ("cosine", "l2")[seed % 2]
    groups = [f"g{i % 3}" for i in range(len(y))]
    res, want = both(x, y, DCFS[seed], metric=metric, groups=groups)
    check(res, want, exact=False, what=f"seed {seed}")


def test_many_keys_per_bin_and_long_gather_rows():
    """1500 integer rows, few distinct distances: every histogram bin that
    matters holds thousands of keys and rows gather more than their first
    buffer holds (the tile runs again with room)."""
    x, y = integer_rows(3, n=1500, dim=3, n_classes=12)
    groups = [f"g{i % 4}" for i in range(len(y))]
    res, want = both(x, y, (0.2, 1.0, 1.0), metric="l2", groups=groups)
    check(res, want)


def test_block_size_and_row_order_change_nothing():
    x, y = integer_rows(11, n=120)
    a = evaluate(x, y, metric="l2", verification=True, timestamp=False)
    perm = np.random.default_rng(0).permutation(len(y))
    b = evaluate(x[perm], [y[i] for i in perm], metric="l2", verification=True,
                 timestamp=False, block_bytes=4096)
    assert a.verification == b.verification


@st.composite
def _integer_inputs(draw, max_n=22):
    """Small integer rows (exact l2 distances), duplicated rows, singletons,
    query/gallery splits and groups, as Hypothesis draws and shrinks them."""
    n_classes = draw(st.integers(2, 5))
    n = draw(st.integers(n_classes + 1, max_n))
    y = list(range(n_classes)) + draw(st.lists(st.integers(0, n_classes - 1),
                                               min_size=n - n_classes, max_size=n - n_classes))
    rows = [draw(st.lists(st.integers(-2, 2), min_size=2, max_size=2)) for _ in range(n)]
    for _ in range(draw(st.integers(0, 4))):  # exact copies: same class or another
        rows[draw(st.integers(0, n - 1))] = rows[draw(st.integers(0, n - 1))]
    extra = {}
    if draw(st.booleans()):
        q = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        extra.update(is_query=q, is_gallery=~q | np.array(
            draw(st.lists(st.booleans(), min_size=n, max_size=n))))
    if draw(st.booleans()):
        extra["groups"] = [f"g{v % draw(st.integers(1, 3))}" for v in y]
    return np.array(rows, np.float32), [f"k{v}" for v in y], extra


@given(data=_integer_inputs(), dcf=st.sampled_from(DCFS))
def test_generated_inputs_equal_the_reference(data, dcf):
    x, y, extra = data
    try:
        res = evaluate(x, y, metric="l2", calibration_range=(0.5, 2.5), verification=True,
                       dcf=dcf, timestamp=False, **extra)
    except OpisError:
        return  # fewer than two evaluable classes: SPEC 3, tested elsewhere
    want = ref.verification(x, y, metric="l2", dcf=dcf, **extra)
    if res.groups is None:
        want.pop("group_eer", None)
    check(res, want)


# -- hand-worked cases -------------------------------------------------------------------
def test_hand_case_on_a_line():
    """Six points on a line, l2, three classes: A = {0, 2}, B = {5, 6}, C = {9, 13}.

    Positives (each ordered pair, so twice): 2, 2 (A), 1, 1 (B), 4, 4 (C): P = 6.
    Negatives, each unordered distance twice: A-B 5, 6, 3, 4; A-C 9, 13, 7, 11;
    B-C 4, 8, 3, 7: M = 24, sorted 3 3 3 3 4 4 4 4 5 5 6 6 7 7 7 7 8 8 9 9 11 11 13 13.

    t < 1: FAR 0, FRR 1. t = 1: TP 2 -> FRR 4/6. t = 2: TP 4, FP 0 -> FRR 1/3,
    FAR 0: max 1/3. t = 3: FP 4 -> FAR 1/6, FRR 1/3: max 1/3. t = 4: TP 6,
    FP 8 -> FAR 1/3, FRR 0: max 1/3; beyond, FAR grows. EER = 1/3, first at t = 2.

    minDCF (p 0.01, costs 1): cost = 0.01 FRR + 0.99 FAR: 0.01 (reject all),
    0.01 * 4/6 at 1, 0.01 / 3 at 2, 0.01 / 3 + 0.99 / 6 at 3, ...: minimum
    0.01 / 3 at t = 2, normalised by min(0.01, 0.99): 1/3.

    FNMR at FMR 1e-1: F M = 2.4, the 3rd smallest negative distance is 3;
    positives not strictly below 3: the two 4s, 2/6. F = 1e-2: F M = 0.24 < 1, no key.
    """
    x = np.array([[0.0], [2.0], [5.0], [6.0], [9.0], [13.0]], np.float32)
    y = ["A", "A", "B", "B", "C", "C"]
    res = evaluate(x, y, metric="l2", verification=True, calibration_range=(1.0, 8.0),
                   timestamp=False)
    v = res.verification
    assert v.eer == pytest.approx(1 / 3, abs=1e-15) and v.eer_threshold == 2.0
    assert v.min_dcf == pytest.approx(1 / 3, abs=1e-12) and v.min_dcf_threshold == 2.0
    assert v.fnmr_at_fmr == {"1e-01": pytest.approx(1 / 3, abs=1e-15)}
    # p = 0.5: cost = (FRR + FAR) / 2: 1/2 (reject all), 1/3 at 1, 1/6 at 2, 1/4 at 3,
    # 1/6 at 4 (FAR 8/24, FRR 0), 10/48 at 5 ...: minimum 1/6 first at 2; / 0.5 = 1/3
    res = evaluate(x, y, metric="l2", verification=True, dcf="0.5:1:1",
                   calibration_range=(1.0, 8.0), timestamp=False)
    assert res.verification.min_dcf == pytest.approx(1 / 3, abs=1e-12)
    assert res.verification.min_dcf_threshold == 2.0


def test_hand_case_reject_everything_is_best():
    """Two classes whose positives lie farther apart than every negative:
    A = {0, 10}, B = {1, 11} on a line. Positives: 10, 10, 10, 10 (P = 4);
    negatives: |0-1| = 1, |0-11| = 11, |10-1| = 9, |10-11| = 1, each twice (M = 8).
    Every t >= 1 accepts a negative before any positive: max(FAR, FRR) = 1
    until t = 10 (FAR 6/8, FRR 0: 0.75). EER = 0.75 at 10. minDCF with p = 0.01:
    rejecting everything costs 0.01; t = 10 costs 0.99 * 6/8: the minimum is
    rejecting everything, normalised 1.0, threshold null (below every pair)."""
    x = np.array([[0.0], [10.0], [1.0], [11.0]], np.float32)
    y = ["A", "A", "B", "B"]
    res = evaluate(x, y, metric="l2", verification=True, calibration_range=(1.0, 11.0),
                   timestamp=False)
    v = res.verification
    assert v.eer == 0.75 and v.eer_threshold == 10.0
    assert v.min_dcf == 1.0 and v.min_dcf_threshold is None
    assert json.loads(res.to_json())["verification"]["min_dcf_threshold"] is None
    assert v.fnmr_at_fmr == {}  # F M = 0.8 < 1


# -- the pure pieces ---------------------------------------------------------------------
def _points_of(pos, neg):
    """Operating points at every distinct distance (what the engine gives when
    every bin is wanted)."""
    d = np.unique(np.r_[pos, neg])
    tp = np.searchsorted(np.sort(pos), d, side="right")
    fp = np.searchsorted(np.sort(neg), d, side="right")
    return OperatingPoints(np.r_[-1.0, d], np.r_[0, tp], np.r_[0, fp],
                           np.r_[False, np.ones(len(d), bool)], len(pos), len(neg))


@pytest.mark.parametrize("seed", range(30))
def test_metric_functions_on_random_distances(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 20, rng.integers(1, 40)).astype(float)
    neg = rng.integers(5, 40, rng.integers(1, 3000)).astype(float)
    dcf = DCFS[seed % 4]
    pts = _points_of(pos, neg)
    want = ref.verification_of(pos, neg, dcf)
    assert eer(pts) == (want["eer"], want["eer_threshold"])
    d, dt = min_dcf(pts, *dcf)
    assert d == pytest.approx(want["min_dcf"], rel=1e-12) and dt == want["min_dcf_threshold"]
    assert fnmr_at_fmr(pts) == want["fnmr_at_fmr"]


@pytest.mark.parametrize("seed", range(20))
def test_wanted_bins_hold_every_answer(seed):
    """Keys binned coarsely: the operating points from the wanted bins alone
    give the same answers as all of them."""
    rng = np.random.default_rng(seed)
    nb = 64
    pos = rng.integers(0, 300, rng.integers(1, 500)).astype(float)
    neg = rng.integers(50, 400, rng.integers(20, 5000)).astype(float)
    scale = nb / 400.0
    hp = np.bincount((pos * scale).astype(int), minlength=nb)
    hn = np.bincount((neg * scale).astype(int), minlength=nb)
    dcf = DCFS[seed % 4]
    want = wanted_bins(hp, hn, dcf, fmr=True)
    assert 0 < want.sum() < nb
    keys = np.r_[pos, neg]
    isp = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    pts = operating_points(hp, hn, want, keys, isp, 0.0, scale, False)
    w = ref.verification_of(pos, neg, dcf)
    assert eer(pts) == (w["eer"], w["eer_threshold"])
    d, dt = min_dcf(pts, *dcf)
    assert d == pytest.approx(w["min_dcf"], rel=1e-12) and dt == w["min_dcf_threshold"]
    assert fnmr_at_fmr(pts) == w["fnmr_at_fmr"]
    # a gathered set that misses a key of a wanted bin is detected
    drop = np.nonzero(want[(keys * scale).astype(int)])[0][0]
    with pytest.raises(RuntimeError, match="disagree"):
        operating_points(hp, hn, want, np.delete(keys, drop), np.delete(isp, drop), 0.0, scale,
                         False)


# -- peer agreement ----------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_pyeer(seed):
    """pyeer (Cuadros' biometric toolkit) on the same pair distances (as
    dissimilarity scores). Its ROC points are the counts at every distinct
    distance, as ours; its EER is the FVC2000 midpoint of ``[eer_low,
    eer_high]`` at the crossing, which brackets SPEC 14's min-max EER, and
    its FNMR-at-FMR operating points take the nearest FMR rather than the
    largest one <= F: from its ROC we rebuild SPEC's FNMR at FMR and minDCF."""
    # pyeer's statistics module (its eer_info imports pkg_resources for reports)
    from pyeer.eer_stats import calculate_roc, get_eer_values

    exact = seed % 2 == 1  # integer rows, l2: the same distances in float32 and float64
    x, y = integer_rows(seed + 200, n=140) if exact else gaussian(seed + 200, n=140)
    metric = "l2" if exact else "cosine"
    res = evaluate(x, y, metric=metric, verification=True, timestamp=False)
    d = ref.distance_matrix(x, metric)
    lab = np.array([str(v) for v in y], dtype=object)
    same = lab[:, None] == lab[None, :]
    off = ~np.eye(len(y), dtype=bool)
    pos, neg = d[same & off], d[~same & off]
    _, fmr, fnmr = calculate_roc(pos, neg, ds_scores=True, rates=True)
    _, eer_low, eer_high, _ = get_eer_values(fmr, fnmr)
    v = res.verification
    tol = 1e-12 if exact else 2.0 / min(len(pos), len(neg))
    assert eer_low - tol <= v.eer <= eer_high + tol
    # SPEC's quantities from pyeer's ROC (fmr, fnmr at every distinct distance)
    p, cm, cfa = 0.01, 1.0, 1.0
    cost = min(cm * p, float((cm * p * fnmr + cfa * (1 - p) * fmr).min()))
    assert v.min_dcf == pytest.approx(cost / min(cm * p, cfa * (1 - p)), abs=tol / p)
    assert v.eer == pytest.approx(min(1.0, float(np.maximum(fmr, fnmr).min())), abs=tol)
    for key, x_ in v.fnmr_at_fmr.items():
        F = float(key)
        ok = fmr <= F + 1e-15
        assert x_ == pytest.approx(float(fnmr[ok].min()) if ok.any() else 1.0, abs=tol), key


def test_sklearn_det_curve_brackets_the_eer():
    """scikit-learn's ``det_curve`` (scores = -distance) lists the same
    (FPR, FNR) points; its EER is usually read off by interpolation, which lies
    between the two sides of the crossing, like pyeer's, while SPEC 14's
    min-max EER is the larger rate at the better side."""
    from sklearn.metrics import det_curve

    x, y = integer_rows(4, n=120)
    res = evaluate(x, y, metric="l2", verification=True, timestamp=False)
    r = ref.evaluate(x, y, metric="l2")
    lab = np.array(y, dtype=object)
    same = lab[:, None] == lab[None, :]
    off = ~np.eye(len(y), dtype=bool)
    scores = -np.r_[r.distances[same & off], r.distances[~same & off]]
    truth = np.r_[np.ones((same & off).sum()), np.zeros((~same & off).sum())]
    fpr, fnr, _ = det_curve(truth, scores)
    assert res.verification.eer == pytest.approx(float(np.maximum(fpr, fnr).min()), abs=1e-12)


# -- JSON, knn, gate, options, terminal ---------------------------------------------------
def test_json_keys_and_off_by_default():
    x, y = integer_rows(2, n=80)
    off = json.loads(evaluate(x, y, metric="l2", timestamp=False).to_json())
    assert "verification" not in off and "verification" not in off["options"]
    on = json.loads(evaluate(x, y, metric="l2", verification=True, dcf="0.1:1:2",
                             timestamp=False).to_json())
    v = on["verification"]
    assert set(v) == {"eer", "eer_threshold", "min_dcf", "min_dcf_threshold", "dcf",
                      "fnmr_at_fmr", "det"}
    assert set(v["det"]) == {"far_frr", "groups"} and v["det"]["groups"] == []
    assert v["dcf"] == {"p_target": 0.1, "c_miss": 1.0, "c_fa": 2.0}
    M = sum(c["negatives"] for c in on["per_class"])
    assert list(v["fnmr_at_fmr"]) == [k for k in ("1e-01", "1e-02", "1e-03", "1e-04",
                                                  "1e-05", "1e-06")
                                      if Fraction(k) * M >= 1]
    assert on["options"]["verification"] is True and on["options"]["dcf"] == [0.1, 1.0, 2.0]


@pytest.mark.filterwarnings("ignore::opis_cli.engines.knn.ApproximationWarning")
def test_knn_engine_reports_null_with_a_note():
    from opis_cli.engines.knn import KnnEngine

    x, y = integer_rows(2, n=80)
    res = evaluate(x.astype(np.float32), y, metric="l2", verification=True,
                   engine=KnnEngine(k=20), timestamp=False)
    d = json.loads(res.to_json())
    assert d["verification"] is None
    assert "every pair" in d["provenance"]["engine_notes"]["verification"]
    assert math.isnan(res.gate_metrics()["eer"])
    assert EvaluationResult.from_json(res.to_json()).verification_asked


@pytest.mark.parametrize("bad, msg", [
    ("0.01:1", "expected P_TARGET:C_MISS:C_FA"),
    ("a:1:1", "must be numbers"),
    ("1:1:1", "--dcf P_TARGET must be in (0, 1), got 1"),
    ("0.5:0:1", "--dcf C_MISS must be a positive number, got 0"),
    ("0.5:1:-2", "--dcf C_FA must be a positive number, got -2"),
])
def test_dcf_option_errors(bad, msg, capsys, tmp_path):
    x, y = integer_rows(2, n=40)
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        evaluate(x, y, verification=True, dcf=bad)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.txt").write_text("\n".join(y) + "\n")
    code, out, err = run(capsys, "evaluate", tmp_path / "x.npy", "--labels", tmp_path / "y.txt",
                         "--verification", "--dcf", bad)
    assert code == 2 and out == ""
    assert err.strip().startswith("Error:") and msg in err and len(err.strip().splitlines()) == 1


def test_gate_metrics_and_rules(capsys, tmp_path):
    assert set(VERIFICATION_METRICS) <= set(RULE_METRICS)
    assert parse_rule("max", "fnmr_at_fmr_1e-03=0.2").metric == "fnmr_at_fmr_1e-03"
    x, y = integer_rows(6, n=120)
    res = evaluate(x, y, metric="l2", verification=True, timestamp=False)
    gm = res.gate_metrics()
    assert gm["eer"] == res.verification.eer and gm["min_dcf"] == res.verification.min_dcf
    assert gm["fnmr_at_fmr_1e-01"] == res.verification.fnmr_at_fmr["1e-01"]
    assert math.isnan(gm["fnmr_at_fmr_1e-06"])  # F M < 1
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.txt").write_text("\n".join(y) + "\n")
    base = ["evaluate", tmp_path / "x.npy", "--labels", tmp_path / "y.txt", "--metric", "l2",
            "--verification", "-q"]
    e = res.verification.eer
    assert run(capsys, *base, "--max", f"eer={e + 0.01}")[0] == 0
    assert run(capsys, *base, "--max", f"eer={e - 0.01}")[0] == 1
    assert run(capsys, *base, "--min", "min_dcf=-1", "--max",
               f"fnmr_at_fmr_1e-01={gm['fnmr_at_fmr_1e-01']}")[0] == 0
    assert run(capsys, *base, "--max", "fnmr_at_fmr_1e-2=0.5")[0] == 2  # not a metric name
    # without --verification the metric is not available: the rule fails
    code, out, err = run(capsys, *base[:-2], "-q", "--max", "eer=1", "--json",
                         tmp_path / "r.json")
    assert code == 1
    code, out, err = run(capsys, "gate", tmp_path / "r.json", "--max", "eer=1")
    assert code == 1 and "--verification" in out  # in the verdict, on stdout


def test_terminal_block_with_groups(capsys, tmp_path):
    x, y = integer_rows(8, n=90)
    groups = ["g\x1b[31mred" if i % 2 else "plain" for i in range(len(y))]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"embedding": list(x), "label": y, "group": groups}),
                   tmp_path / "e.parquet")
    code, out, err = run(capsys, "evaluate", tmp_path / "e.parquet", "--metric", "l2",
                         "--group-column", "group", "--verification")
    assert code == 0
    assert "Verification view" in out and "EER" in out and "minDCF" in out
    assert "group EER" in out and "\x1b[31m" not in out and "\\x1b[31mred" in out


# -- the DET curve of the report ---------------------------------------------------------
def test_det_points_are_exact_operating_points():
    """Every DET point is (FAR, FRR) at some threshold: the reference's counts agree."""
    x, y = integer_rows(9, n=150)
    res = evaluate(x, y, metric="l2", verification=True, timestamp=False)
    d = ref.distance_matrix(x, "l2")
    lab = np.array(y, dtype=object)
    same = lab[:, None] == lab[None, :]
    off = ~np.eye(len(y), dtype=bool)
    pos, neg = np.sort(d[same & off]), np.sort(d[~same & off])
    t = np.unique(np.r_[pos, neg])
    roc = {(float(np.searchsorted(neg, v, "right") / len(neg)),
            float(1 - np.searchsorted(pos, v, "right") / len(pos))) for v in t}
    roc.add((0.0, 1.0))
    det = res.verification.det
    assert det[0] == (0.0, 1.0) and det[-1] == (1.0, 0.0)
    for far, frr in det:
        assert any(abs(far - a) < 1e-12 and abs(frr - b) < 1e-12 for a, b in roc)


def test_det_figure_globally_and_for_the_worst_and_best_groups(tmp_path):
    from opis_cli.render.report import plots, write_report

    x, y = gaussian(17, n=300)
    groups = [f"$g{i % 10}$\u202e" for i in range(len(y))]  # mathtext and bidi in labels
    res = evaluate(x, y, verification=True, groups=groups, group_column="group",
                   timestamp=False)
    v = res.verification
    assert len(v.group_det) == 8  # the 4 worst and 4 best of 10 groups, worst first
    eer_of = {c.label: c.eer for c in res.groups.per_class}
    shown = [eer_of[lab] for lab, _ in v.group_det]
    assert shown == sorted(shown, reverse=True)
    assert set(eer_of.values()) - set(shown) <= set(sorted(eer_of.values())[4:6])
    fig = plots.det_figure(res)
    ax = fig.axes[0]
    gids = {a.get_gid() for a in [*ax.lines, *ax.patches]}
    assert {"det-global", "calibration-range", "recommended-threshold", "eer-point",
            *(f"det-group-{i}" for i in range(8))} <= gids
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("\\u202e" in t for t in legend) and not any("\u202e" in t for t in legend)
    assert all(not t.get_parse_math() for t in ax.get_legend().get_texts())
    # the same figure from the saved result
    back = EvaluationResult.from_json(res.to_json())
    assert back.verification.det == v.det and back.verification.group_det == v.group_det
    write_report(back, tmp_path / "rep")
    html = (tmp_path / "rep" / "report.html").read_text()
    assert (tmp_path / "rep" / "det.png").exists() and "DET curve" in html
    assert "det" not in plots.all_figures(evaluate(x, y, timestamp=False))
    # the report's group table has each group's EER; the class table has none
    from opis_cli.render.report.html import table_data

    gt = table_data(back.groups, "group", "groups")
    assert gt["columns"][-1]["key"] == "eer"
    assert [r[-1] for r in gt["rows"]] == [pytest.approx(c.eer, rel=1e-5)
                                           for c in back.groups.per_class]
    assert "eer" not in {c["key"] for c in table_data(back.classes, "class", "classes")["columns"]}


def test_group_histograms_shrink_with_many_groups():
    from opis_cli.engines.verify import group_bins

    assert group_bins(1) == group_bins(512) == 2048
    assert group_bins(1000) == 1024 and group_bins(10**6) == 64
    # many small groups: smaller histograms, the same exact EERs
    x, y = integer_rows(21, n=160)
    groups = [f"g{i % 40}" for i in range(len(y))]
    res, want = both(x, y, metric="l2", groups=groups)
    check(res, want)
