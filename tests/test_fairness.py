"""Fairness of one threshold across classes or groups (SPEC 13).

The package against the naive reference (``reference.fairness_block``: loops
over classes, Python floats, the SPEC 13 formulas literally) on seeded random
inputs with ties, singletons, groups and query/gallery splits; hand-worked
cases; the gate metrics; ``--fairness-alpha`` checking.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import reference as ref
from data_gen import integer_rows, random_counts, sparse_signs
from gating_samples import run
from opis_cli import EvaluationResult, evaluate
from opis_cli.metrics.fairness import fairness, fairness_curves

KEYS = ("far_ratio", "frr_ratio", "fdr", "garbe", "inequity_rate")


def close(a, b, rel=1e-9, abs_=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def check_block(blk, rb, thresholds, alpha, what):
    """One block's fairness (at the threshold and over the grid) against the reference."""
    want = ref.fairness_block(rb, thresholds, alpha)
    got = blk.recommended_threshold.fairness
    assert got is not None and got.alpha == alpha, what
    for k in KEYS:
        assert close(getattr(got, k), want["at"][k]), (
            f"{what} {k}: {getattr(got, k)!r} != reference {want['at'][k]!r}")
    fc = blk.fairness
    assert close(fc.fdr_mean, want["fdr_mean"]), f"{what} fdr_mean"
    assert close(fc.garbe_mean, want["garbe_mean"]), f"{what} garbe_mean"
    assert len(fc.fdr) == len(thresholds)
    for i, (a, b) in enumerate(zip(fc.fdr, want["fdr"])):
        assert close(a, b), f"{what} fdr[{i}]"
    if want["garbe"] is None:
        assert fc.garbe is None, f"{what}: garbe must be null"
    else:
        for i, (a, b) in enumerate(zip(fc.garbe, want["garbe"])):
            assert close(a, b), f"{what} garbe[{i}]"


def check(res: EvaluationResult, r: ref.RefResult, alpha: float):
    th = np.asarray(r.thresholds)
    # in process and after a JSON round trip
    back = EvaluationResult.from_json(res.to_json())
    assert back == res
    for obj in (res, back):
        check_block(obj.classes, r.classes, th, alpha, "classes")
        if r.groups is not None:
            check_block(obj.groups, r.groups, th, alpha, "groups")
    d = json.loads(res.to_json())
    assert set(d["recommended_threshold"]["fairness"]) == {"alpha", *KEYS}
    assert {"fdr_mean", "garbe_mean", "fdr", "garbe"} <= set(d["fairness"])
    if r.groups is not None:
        assert "fairness" in d["groups"]["recommended_threshold"]
        assert "fdr_mean" in d["groups"]["fairness"]


def both(x, y, alpha, **opts):
    res = evaluate(x, y, timestamp=False, fairness_alpha=alpha, **opts)
    r = ref.evaluate(x, y, **opts)
    return res, r


ALPHAS = (0.5, 0.0, 1.0, 0.3)
POLICIES = ("max-mean-utility", "max-worst-utility", "far:0.05", "far:0.0001")


@pytest.mark.parametrize("seed", range(8))
def test_integer_rows_with_ties_and_singletons(seed):
    x, y = integer_rows(seed)
    if seed % 2:  # singleton classes: excluded, never part of the fairness numbers
        x = np.vstack([x, np.full((2, x.shape[1]), 7, np.float32) + np.arange(2)[:, None]])
        y = list(y) + ["single0", "single1"]
    opts = dict(metric="l2", threshold_policy=POLICIES[seed % 4],
                num_thresholds=(11, 5, 101, 2)[seed % 4])
    if seed % 3 == 0:
        opts["calibration_range"] = (1.0, 3.5)
    res, r = both(x, y, ALPHAS[seed % 4], **opts)
    if seed % 2:
        assert {"single0", "single1"} <= set(r.classes.excluded_labels)  # premise
    check(res, r, ALPHAS[seed % 4])


@pytest.mark.parametrize("seed", range(4))
def test_sparse_signs_exact_ties_at_the_grid(seed):
    x, y = sparse_signs(seed)
    res, r = both(x, y, ALPHAS[seed], metric="cosine", calibration_range=(0.25, 1.25),
                  num_thresholds=5, threshold_policy=POLICIES[seed])
    check(res, r, ALPHAS[seed])


@pytest.mark.parametrize("seed", range(6))
def test_groups_and_query_gallery_splits(seed):
    rng = np.random.default_rng(seed + 900)
    x, y = integer_rows(seed + 60, n=100)
    groups = [f"g{v}" for v in rng.integers(0, 2 + seed % 3, size=len(y))]
    opts = dict(metric="l2", groups=groups, threshold_policy=POLICIES[seed % 4])
    if seed % 2:
        isq = rng.random(len(y)) < 0.6
        opts.update(is_query=isq, is_gallery=~isq | (rng.random(len(y)) < 0.5))
    res, r = both(x, y, ALPHAS[seed % 4], **opts)
    assert r.groups is not None and r.groups.evaluated >= 2  # premise
    check(res, r, ALPHAS[seed % 4])


def test_single_group_has_null_garbe():
    """One evaluated group: n / (n - 1) is undefined, GARBE is null (a SPEC 13 gap)."""
    x, y = integer_rows(5, n=60)
    res, r = both(x, y, 0.5, metric="l2", groups=["all"] * len(y))
    assert r.groups.evaluated == 1  # premise
    check(res, r, 0.5)
    g = res.groups
    assert g.recommended_threshold.fairness.garbe is None
    assert g.fairness.garbe is None and g.fairness.garbe_mean is None
    f = g.recommended_threshold.fairness
    assert f.fdr == 1.0 and f.far_ratio in (None, 1.0) and f.frr_ratio in (None, 1.0)
    d = json.loads(res.to_json())
    assert d["groups"]["recommended_threshold"]["fairness"]["garbe"] is None
    assert d["groups"]["fairness"]["garbe_mean"] is None


@pytest.mark.parametrize("seed", range(40))
def test_pure_function_on_random_counts(seed):
    """Random counts with zeros and full counts: every quantity at every threshold."""
    labels, P, M, TP, FP, th = random_counts(seed)
    rng = np.random.default_rng(seed)
    if seed % 3 == 0:  # classes at zero FAR / zero FRR somewhere
        FP[rng.integers(0, len(P))] = 0
        TP[0] = P[0]
    if seed % 5 == 0:  # every positive accepted: global FRR 0
        TP[:] = P[:, None]
    alpha = float(rng.uniform()) if seed % 4 else ALPHAS[seed // 4 % 4]
    got = fairness_curves(TP, FP, P, M, alpha)
    for i in range(len(th)):
        far = [FP[c, i] / M[c] for c in range(len(P))]
        frr = [1.0 - TP[c, i] / P[c] for c in range(len(P))]
        gfar = FP[:, i].sum() / M.sum()
        gfrr = 1.0 - TP[:, i].sum() / P.sum()
        want = ref.fairness_at(far, frr, gfar, gfrr, alpha)
        for k in KEYS:
            v = got[k][i]
            v = None if np.isnan(v) else float(v)
            assert close(v, want[k]), f"seed {seed} threshold {i} {k}: {v!r} != {want[k]!r}"


# ---------------------------------------------------------------- hand cases


def test_spec_hand_case():
    """SPEC 9: points 0, 1 (label a), 10, 13 (label b); l2; range 1:3, 3 thresholds.

    Class a: positives {1, 1} (P=2), negatives {10, 13, 9, 12} (M=4).
    Class b: positives {3, 3} (P=2), negatives {10, 9, 13, 12} (M=4).
    t = 1, 2: FAR_a = FAR_b = 0; FRR_a = 0, FRR_b = 1 (both positives at 3 > t).
        fdr = 1 - (.5 * 0 + .5 * (1 - 0)) = 0.5
        G(FAR) = 0 (mean 0); G(FRR) = 2/1 * (|0-1| + |1-0|) / (2 * 4 * 0.5) = 1
        garbe = .5 * 0 + .5 * 1 = 0.5
    t = 3 (recommended): every rate 0: fdr = 1, garbe = 0; global FAR = 0 and
        global FRR = 0, so far_ratio and frr_ratio are null; min FAR_i = 0, so
        inequity_rate is null.
    fdr_mean = ((.5 + .5)/2 + (.5 + 1)/2) / 2 = 0.625;
    garbe_mean = ((.5 + .5)/2 + (.5 + 0)/2) / 2 = 0.375.
    """
    x = np.array([[0.0], [1.0], [10.0], [13.0]])
    res = evaluate(x, ["a", "a", "b", "b"], metric="l2", calibration_range=(1, 3),
                   num_thresholds=3, timestamp=False)
    assert res.recommended_threshold.value == 3.0  # premise (SPEC 9)
    f = res.recommended_threshold.fairness
    assert (f.alpha, f.far_ratio, f.frr_ratio, f.fdr, f.garbe, f.inequity_rate) == (
        0.5, None, None, 1.0, 0.0, None)
    c = res.classes.fairness
    assert c.fdr == (0.5, 0.5, 1.0) and c.garbe == (0.5, 0.5, 0.0)
    assert c.fdr_mean == pytest.approx(0.625, abs=1e-12)
    assert c.garbe_mean == pytest.approx(0.375, abs=1e-12)
    d = json.loads(res.to_json())
    assert d["recommended_threshold"]["fairness"] == {
        "alpha": 0.5, "far_ratio": None, "frr_ratio": None, "fdr": 1.0, "garbe": 0.0,
        "inequity_rate": None}
    assert d["fairness"]["fdr"] == [0.5, 0.5, 1.0]


def _one(tp, fp, P, M, alpha):
    """SPEC 13 of per-class counts at one threshold, as ``recommended_threshold.fairness``."""
    tp, fp = np.array(tp)[:, None].repeat(2, 1), np.array(fp)[:, None].repeat(2, 1)
    at, _ = fairness(tp, fp, np.array(P), np.array(M), np.array([0.0, 1.0]), 0, alpha)
    return at.to_dict()


@pytest.mark.parametrize("alpha,fdr,garbe", [
    # A: P=4, M=10, TP=3, FP=0 -> FAR 0,  FRR .25
    # B: P=2, M=10, TP=1, FP=2 -> FAR .2, FRR .5
    # global FAR = 2/20 = .1, FRR = (1 + 1)/6 = 1/3
    # G(FAR) = 2 * (.2 + .2) / (2 * 4 * .1) = 1; G(FRR) = 2 * (.25 + .25) / (2 * 4 * .375) = 1/3
    (0.5, 1 - (.5 * .2 + .5 * .25), .5 * 1 + .5 / 3),
    (1.0, 1 - .2, 1.0),
    (0.0, 1 - .25, 1 / 3),
])
def test_class_at_zero_far_makes_inequity_null(alpha, fdr, garbe):
    got = _one([3, 1], [0, 2], [4, 2], [10, 10], alpha)
    assert got["far_ratio"] == pytest.approx(.2 / .1, rel=1e-12)
    assert got["frr_ratio"] == pytest.approx(.5 / (1 / 3), rel=1e-12)
    assert got["fdr"] == pytest.approx(fdr, rel=1e-12)
    assert got["garbe"] == pytest.approx(garbe, rel=1e-12)
    assert got["inequity_rate"] is None  # min FAR_i = 0, whatever alpha


@pytest.mark.parametrize("alpha,fdr,garbe,inequity", [
    # A: P=4, M=10, TP=3, FP=1 -> FAR .1, FRR .25
    # B: P=4, M=10, TP=1, FP=2 -> FAR .2, FRR .75
    # global FAR = 3/20 = .15, FRR = (1 + 3)/8 = .5
    # G(FAR) = 2 * .2 / (8 * .15) = 1/3; G(FRR) = 2 * 1 / (8 * .5) = 1/2
    # inequity = (.2/.1)^a * (.75/.25)^(1-a) = 2^a 3^(1-a)
    (0.5, 1 - (.05 + .25), 1 / 6 + 1 / 4, math.sqrt(6)),
    (1.0, 0.9, 1 / 3, 2.0),
    (0.0, 0.5, 0.5, 3.0),
])
def test_alpha_zero_half_one(alpha, fdr, garbe, inequity):
    got = _one([3, 1], [1, 2], [4, 4], [10, 10], alpha)
    assert got["far_ratio"] == pytest.approx(.2 / .15, rel=1e-12)
    assert got["frr_ratio"] == pytest.approx(.75 / .5, rel=1e-12)
    assert got["fdr"] == pytest.approx(fdr, rel=1e-12)
    assert got["garbe"] == pytest.approx(garbe, rel=1e-12)
    assert got["inequity_rate"] == pytest.approx(inequity, rel=1e-12)


def test_global_frr_zero_makes_frr_ratio_null():
    # every positive accepted: FRR_i = 0 for all, global FRR = 0 -> frr_ratio null;
    # FAR .1 and .3, global .2 -> far_ratio 1.5; G(FRR) = 0 (mean 0)
    got = _one([4, 2], [1, 3], [4, 2], [10, 10], 0.5)
    assert got["frr_ratio"] is None and got["inequity_rate"] is None
    assert got["far_ratio"] == pytest.approx(1.5, rel=1e-12)
    assert got["fdr"] == pytest.approx(1 - .5 * .2, rel=1e-12)
    # G(FAR) = 2 * .4 / (8 * .2) = .5
    assert got["garbe"] == pytest.approx(.5 * .5, rel=1e-12)


# ---------------------------------------------------------------- gate and CLI


@pytest.fixture(scope="module")
def weak_json(tmp_path_factory):
    from gating_samples import WEAK
    from opis_cli.cli import main

    p = tmp_path_factory.mktemp("fair") / "weak.json"
    assert main(["evaluate", str(WEAK), "--json", str(p), "-q"]) == 0
    return p


def test_gate_accepts_and_enforces_fairness_metrics(capsys, weak_json):
    f = json.loads(weak_json.read_text())["recommended_threshold"]["fairness"]
    # weak sample: garbe ~ 0.295, fdr ~ 0.666, far_ratio ~ 1.56
    code, _, err = run(capsys, "gate", weak_json, "--max", "garbe=0.3", "--min", "fdr=0.6",
                       "--max", "far_ratio=2", "--max", "fdr_mean=1", "--max", "garbe_mean=1",
                       "--max", "inequity_rate=100", "--max", "frr_ratio=3", "--no-config")
    assert code == 0, err
    assert f["garbe"] <= 0.3 and f["fdr"] >= 0.6
    code, out, _ = run(capsys, "gate", weak_json, "--max", "garbe=0.3", "--min", "fdr=0.9",
                       "--max", "far_ratio=2", "--no-config")
    assert code == 1 and "fdr" in out
    code, _, err = run(capsys, "gate", weak_json, "--max", "far_ratio=1.2", "--no-config")
    assert code == 1
    code, _, err = run(capsys, "gate", weak_json, "--max", "gini=0.3", "--no-config")
    assert code == 2 and "unknown metric 'gini'" in err


def test_gate_json_lists_the_fairness_values(capsys, weak_json, tmp_path):
    out = tmp_path / "gate.json"
    code, _, _ = run(capsys, "gate", weak_json, "--max", "garbe=1", "--json", out,
                     "--no-config")
    assert code == 0
    d = json.loads(out.read_text())
    f = json.loads(weak_json.read_text())["recommended_threshold"]["fairness"]
    assert d["results"][0]["value"] == f["garbe"]


def test_fairness_alpha_out_of_range_exits_2(capsys):
    from gating_samples import WEAK

    code, out, err = run(capsys, "evaluate", WEAK, "--fairness-alpha", "1.5")
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--fairness-alpha must be in [0, 1], got 1.5" in lines[0]


def test_fairness_alpha_reaches_the_result(capsys, tmp_path):
    from gating_samples import WEAK

    p = tmp_path / "a.json"
    code, _, err = run(capsys, "evaluate", WEAK, "--fairness-alpha", "1", "--json", p, "-q")
    assert code == 0, err
    d = json.loads(p.read_text())
    assert d["recommended_threshold"]["fairness"]["alpha"] == 1.0
    assert d["fairness"]["alpha"] == 1.0


def test_api_checks_alpha():
    from opis_cli.errors import ConfigError

    x, y = integer_rows(1)
    with pytest.raises(ConfigError, match="--fairness-alpha must be in"):
        evaluate(x, y, metric="l2", fairness_alpha=-0.1)


def test_null_cases_end_to_end():
    """Low thresholds (policy far:0): classes with zero FAR, often a zero global FAR."""
    nulls = {k: 0 for k in KEYS}
    for seed in range(6):
        x, y = integer_rows(seed + 300, duplicates=bool(seed % 2))
        res, r = both(x, y, 0.5, metric="l2", calibration_range=(0.5, 3.5), num_thresholds=7,
                      threshold_policy="far:0")
        check(res, r, 0.5)
        for k, v in res.recommended_threshold.fairness.to_dict().items():
            if v is None:
                nulls[k] += 1
    assert nulls["inequity_rate"] > 0 and nulls["far_ratio"] > 0, nulls  # premise


# ---------------------------------------------------------------- curves table


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_curves_table_fairness_rows_round_trip(tmp_path, suffix):
    """Block-level rows (class-fairness, group-fairness) carry FDR and GARBE per
    threshold, the global counts and rates; written and read back unchanged."""
    from opis_cli.io.curves import curves_from_table, fairness_from_table, read_curves, write_curves

    x, y = integer_rows(7, n=90)
    groups = [f"g{v % 3}" for v in range(len(y))]
    res = evaluate(x, y, metric="l2", groups=groups, num_thresholds=6, fairness_alpha=0.3)
    table = res.curves_table()
    K = len(res.thresholds)
    for level, blk in (("class", res.classes), ("group", res.groups)):
        rows = np.flatnonzero(table["level"] == f"{level}-fairness")
        assert rows.size == K and set(table["label"][rows]) == {""}
        assert np.all(table["threshold_index"][rows] == np.arange(K))
        assert np.allclose(table["fdr"][rows], blk.fairness.fdr, rtol=0, atol=0)
        assert np.allclose(table["garbe"][rows], blk.fairness.garbe, rtol=0, atol=0)
        assert np.allclose(table["utility"][rows], blk.mean_utility, rtol=0, atol=0)
        cv = blk.curves
        assert np.all(table["tp"][rows] == cv.tp.sum(axis=0))
        assert np.all(table["negatives"][rows] == cv.negatives.sum())
        assert np.allclose(table["far"][rows], cv.fp.sum(axis=0) / cv.negatives.sum())
        per_row = np.flatnonzero(table["level"] == level)
        assert np.isnan(table["fdr"][per_row]).all() and np.isnan(table["garbe"][per_row]).all()
    path = tmp_path / f"c.{suffix}"
    write_curves(path, res)
    back = read_curves(path)
    for level, blk in (("class", res.classes), ("group", res.groups)):
        got = fairness_from_table(back, res, level=level)
        assert np.allclose(got["fdr"], blk.fairness.fdr, rtol=1e-15, atol=0)
        assert np.allclose(got["garbe"], blk.fairness.garbe, rtol=1e-15, atol=0)
        cv = curves_from_table(back, res, level=level)  # per_class order
        order = [blk.curves.labels.index(lab) for lab in cv.labels]
        assert np.array_equal(cv.tp, blk.curves.tp[order])


def test_curves_table_single_group_garbe_is_empty(tmp_path):
    from opis_cli.io.curves import fairness_from_table, read_curves, write_curves

    x, y = integer_rows(5, n=60)
    res = evaluate(x, y, metric="l2", groups=["all"] * len(y), num_thresholds=4)
    path = tmp_path / "c.csv"
    write_curves(path, res)
    got = fairness_from_table(read_curves(path), res, level="group")
    assert np.isnan(got["garbe"]).all() and np.allclose(got["fdr"], res.groups.fairness.fdr)


def test_curves_table_without_fairness_rows_still_reads(tmp_path):
    """A table written before the block-level rows (no fdr/garbe, no such levels)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from opis_cli.io.curves import curves_from_table, fairness_from_table, read_curves

    x, y = integer_rows(3, n=60)
    res = evaluate(x, y, metric="l2", num_thresholds=5)
    table = res.curves_table()
    keep = table["level"] == "class"
    old = {k: v[keep] for k, v in table.items() if k not in ("fdr", "garbe")}
    path = tmp_path / "old.parquet"
    pq.write_table(pa.table({k: pa.array(v) for k, v in old.items()}), path)
    back = read_curves(path)
    assert fairness_from_table(back, res) is None
    cv = curves_from_table(back, res)
    order = [res.classes.curves.labels.index(lab) for lab in cv.labels]
    assert np.array_equal(cv.tp, res.classes.curves.tp[order])


def test_curves_table_fairness_rows_checked_against_the_result():
    from opis_cli.errors import InputError
    from opis_cli.io.curves import fairness_from_table

    x, y = integer_rows(3, n=60)
    res = evaluate(x, y, metric="l2", num_thresholds=5)
    table = res.curves_table()
    drop = np.flatnonzero(table["level"] == "class-fairness")[-1]
    cut = {k: np.delete(v, drop) for k, v in table.items()}
    with pytest.raises(InputError, match="class-fairness rows do not hold each"):
        fairness_from_table(cut, res, source="t.parquet")
