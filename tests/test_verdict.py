"""The verdict (opis_cli.verdict): the rule on hand-made results, and its evidence
against a naive pair-by-pair count written from SPEC 3 and 6."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from opis_cli import evaluate, options as opt
from opis_cli.results import (CalibrationRange, ClassSummary, ConsistencyBlock, EvaluationResult,
                              RecommendedThreshold, Retrieval, Spread)
from opis_cli.verdict import answer_of, rate_text, share_text

from data_gen import integer_rows, sparse_signs
from reference import distance_matrix


# -- hand-made results ----------------------------------------------------------------
def made(far, frr, *, global_far=0.1, index=5, K=11, policy="max-mean-utility",
         source="far", far_requested=(0.01, 0.1), lo=0.2, hi=0.6, groups=False):
    """A result built by hand: per-class FAR/FRR at the threshold, nothing computed
    but the share of classes above twice the global FAR (SPEC 6, by a loop)."""
    n = len(far)
    above = sum(1 for f in far if f > 2 * global_far) / n
    nan = float("nan")
    sp = Spread(nan, nan, nan, nan, nan)
    th = tuple(lo + (hi - lo) * i / (K - 1) for i in range(K))
    rt = RecommendedThreshold(policy=policy, value=th[index], index=index, mean_utility=0.5,
                              worst_mean_utility=0.3, tpr=0.8, far=global_far, far_spread=sp,
                              frr_spread=sp, fraction_far_above_2x=above)
    per = tuple(ClassSummary(f"c{i}", 4, 4, 12, 100, 0.5, far[i], frr[i], th[0], 0.0, False, 1.0)
                for i in range(n))
    block = ConsistencyBlock(0.01, 0.05, (0.5,) * K, (0.3,) * K, rt, n, 0, (), per)
    gblock = None
    if groups:
        gblock = replace(block, recommended_threshold=replace(rt, value=th[1], index=1))
    cr = CalibrationRange(lo, hi, source, 0.01, 0.1, far_requested if source == "far" else None)
    return EvaluationResult(
        n_samples=4 * n, dim=3, metric="cosine", utility="tpr-tnr", beta=1.0, epsilon=0.1,
        calibration_range=cr, thresholds=th, classes=block,
        retrieval=Retrieval({"1": 1.0}, 1.0, 4 * n), distance_histogram=None, options={},
        provenance={}, groups=gblock, group_column="g" if groups else None)


def test_answer_rule_bounds():
    y, n = opt.VERDICT_YES_SHARE, opt.VERDICT_NO_SHARE
    assert answer_of(0.0, 0.0) == "yes"
    assert answer_of(y, y) == "yes"                 # at the bound: still yes
    assert answer_of(0.0, 0.06) == "partly"
    assert answer_of(0.06, 0.0) == "partly"
    assert answer_of(n, n) == "partly"              # at the no bound: not yet no
    assert answer_of(0.11, 0.0) == "no"
    assert answer_of(0.0, 0.11) == "no"
    assert answer_of(float("nan"), 0.0) == "no"     # missing never reads as yes


def test_yes_no_classes_over():
    r = made([0.1] * 20, [0.1] * 20)
    v = r.verdict
    assert v.answer == "yes" and v.fraction_far_above_2x == 0 and v.fraction_frr_above_half == 0
    assert v.sentence == ("Yes: at global FAR 10% (threshold 0.4), no class sees more than twice "
                          "the global false accept rate and none rejects more than half of its "
                          "genuine pairs.")
    assert v.range_edge is None and v.widen is None


def test_no_all_over():
    # every class above 2x can only happen when the global FAR is 0 (a class at 0 is not above)
    r = made([0.3] * 10, [0.9] * 10, global_far=0.0)
    v = r.verdict
    assert v.answer == "no" and v.fraction_far_above_2x == 1 and v.fraction_frr_above_half == 1
    assert "100% of classes see more than twice" in v.sentence
    assert "100% reject more than half of their genuine pairs" in v.sentence
    assert "1e+02" not in v.sentence


def test_partly_and_the_example_of_the_issue():
    # 50 classes: 4 (8%) above 2x FAR, 7 (14%) with FRR > 50% -> no
    far = [0.5] * 4 + [0.05] * 46
    frr = [0.6] * 7 + [0.5] * 43                    # exactly 50% is not "more than half"
    v = made(far, frr).verdict
    assert v.answer == "no"
    assert v.sentence.startswith("No: at global FAR 10% (threshold 0.4), 8% of classes see more "
                                 "than twice the global false accept rate and 14% reject more "
                                 "than half of their genuine pairs.")
    # 3 of 50 (6%) above 2x, no FRR over: partly
    v = made([0.5] * 3 + [0.05] * 47, [0.1] * 50).verdict
    assert v.answer == "partly" and v.sentence.startswith("Partly: ")
    assert v.fraction_far_above_2x == pytest.approx(0.06)


def test_range_edges_and_widening():
    up = made([0.1] * 5, [0.1] * 5, index=10).verdict
    assert up.range_edge == "upper" and up.widen == "--far-range 0.01:0.3"
    assert any("upper end of the calibration range" in n and "--far-range 0.01:0.3" in n
               for n in up.notes)
    low = made([0.1] * 5, [0.1] * 5, index=0).verdict
    assert low.range_edge == "lower" and low.widen == "--far-range 0.001:0.1"
    full = made([0.1] * 5, [0.1] * 5, index=10, far_requested=(0.01, 1.0)).verdict
    assert full.range_edge == "upper" and full.widen is None
    ex = made([0.1] * 5, [0.1] * 5, index=10, source="explicit", lo=0.2, hi=0.6).verdict
    assert ex.widen == "--calibration-range 0.2:1"
    ex = made([0.1] * 5, [0.1] * 5, index=0, source="explicit", lo=0.2, hi=0.6).verdict
    assert ex.widen == "--calibration-range 0:0.6"
    mid = made([0.1] * 5, [0.1] * 5, index=3).verdict
    assert mid.range_edge is None and not any("end of the calibration" in n for n in mid.notes)


def test_permissive_note_and_groups_note():
    v = made([0.1] * 5, [0.1] * 5).verdict
    assert v.permissive and any("max-mean-utility picks a permissive point" in n for n in v.notes)
    v = made([0.1] * 5, [0.1] * 5, policy="far:0.05").verdict
    assert not v.permissive and not any("permissive" in n for n in v.notes)
    g = made([0.1] * 5, [0.1] * 5, groups=True)
    v = g.verdict
    assert v.level == "class" and v.group_threshold == pytest.approx(g.thresholds[1])
    assert any("class block's threshold 0.4" in n and "group block recommends 0.24" in n
               for n in v.notes)
    # no curves in a hand-made result: no strict point
    assert v.strict is None


def test_share_and_rate_text():
    assert [share_text(x) for x in (0, 0.0044, 0.083, 0.14, 0.0995, 1.0)] == \
        ["0%", "0.44%", "8.3%", "14%", "10%", "100%"]
    assert [rate_text(x) for x in (0.1, 0.0999, 0.005, 1.0, 0.0)] == \
        ["10%", "9.99%", "0.5%", "100%", "0%"]


# -- against a naive count ---------------------------------------------------------------
def naive(x, labels, t, thresholds, metric, is_query=None, is_gallery=None):
    """SPEC 3 and 6 by loops over ordered pairs: shares at ``t`` and the far:0.01 point."""
    n = len(labels)
    d = distance_matrix(x, metric)
    q = [True] * n if is_query is None else list(is_query)
    g = [True] * n if is_gallery is None else list(is_gallery)
    lab = [str(v) for v in labels]
    classes = sorted(set(lab[i] for i in range(n) if q[i]))
    pairs = {c: ([], []) for c in classes}          # positive, negative distances
    for i in range(n):
        if not q[i]:
            continue
        for j in range(n):
            if i == j or not g[j]:
                continue
            pairs[lab[i]][0 if lab[j] == lab[i] else 1].append(d[i, j])
    ev = [c for c in classes if pairs[c][0] and pairs[c][1]]

    def at(thr):
        far = {c: sum(v <= thr for v in pairs[c][1]) / len(pairs[c][1]) for c in ev}
        frr = {c: sum(v > thr for v in pairs[c][0]) / len(pairs[c][0]) for c in ev}
        neg = sum(len(pairs[c][1]) for c in ev)
        gfar = sum(sum(v <= thr for v in pairs[c][1]) for c in ev) / neg
        pos = sum(len(pairs[c][0]) for c in ev)
        gfrr = sum(sum(v > thr for v in pairs[c][0]) for c in ev) / pos
        return (gfar, gfrr, sum(far[c] > 2 * gfar for c in ev) / len(ev),
                sum(frr[c] > 0.5 for c in ev) / len(ev))

    here = at(t)
    gfars = [at(thr)[0] for thr in thresholds]
    ok = [k for k, f in enumerate(gfars) if f <= 0.01]
    k = ok[-1] if ok else 0
    return here, k, at(thresholds[k])


CASES = [("int", s) for s in range(4)] + [("signs", s) for s in range(4)]


@pytest.mark.parametrize("kind,seed", CASES)
def test_verdict_matches_naive_count(kind, seed):
    rng = np.random.default_rng(100 + seed)
    # exact distances (ties at grid points decide alike in both counts)
    if kind == "int":
        x, y = integer_rows(seed, n=50)
        metric = "l2"
    else:
        x, y = sparse_signs(seed, n=60)
        metric = "cosine"
    # two singleton classes: excluded, but their rows stay negatives of the others
    x = np.vstack([x, x[:2] + np.float32(1) if kind == "int" else -x[:2]])
    y = list(y) + ["lone-a", "lone-b"]
    n = len(y)
    is_query = rng.random(n) < 0.85
    is_gallery = ~is_query | (rng.random(n) < 0.8)
    groups = [f"g{v}" for v in rng.integers(0, 3, size=n)]
    policy = ["max-mean-utility", "far:0.05"][seed % 2]
    r = evaluate(x, y, metric=metric, is_query=is_query, is_gallery=is_gallery, groups=groups,
                 num_thresholds=15, threshold_policy=policy, timestamp=False)
    v = r.verdict
    (gfar, gfrr, far_share, frr_share), k, strict = naive(
        x, y, v.threshold, r.thresholds, metric, is_query, is_gallery)
    assert v.threshold == r.recommended_threshold.value
    assert v.far == pytest.approx(gfar, abs=1e-12)
    assert v.frr == pytest.approx(gfrr, abs=1e-12)
    assert v.fraction_far_above_2x == pytest.approx(far_share, abs=1e-12)
    assert v.fraction_frr_above_half == pytest.approx(frr_share, abs=1e-12)
    assert v.answer == ("no" if max(far_share, frr_share) > 0.1 else
                        "yes" if max(far_share, frr_share) <= 0.05 else "partly")
    assert v.strict is not None and v.strict.index == k
    assert v.strict.far == pytest.approx(strict[0], abs=1e-12)
    assert v.strict.frr == pytest.approx(strict[1], abs=1e-12)
    assert v.strict.fraction_far_above_2x == pytest.approx(strict[2], abs=1e-12)
    assert v.strict.fraction_frr_above_half == pytest.approx(strict[3], abs=1e-12)
    assert v.group_threshold == r.groups.recommended_threshold.value
    # JSON: the verdict comes first, reads back equal (the strict point without curves too)
    doc = json.loads(r.to_json())
    assert list(doc)[:2] == ["schema_version", "verdict"]
    back = EvaluationResult.from_dict(doc)
    assert back.curves is None and back.verdict == v


def test_hand_case_of_spec_9():
    """SPEC 9: U_a = 1,1,1, U_b = 0,0,1; threshold 3 (upper end of the explicit range 1:3).
    At 3 class a accepts 0 of 4 negatives and rejects none; b accepts its negatives
    {9, 10, 12, 13} - none <= 3 - and rejects none (its positives are at 3)."""
    x = np.array([[0.0], [1.0], [10.0], [13.0]], np.float32)
    r = evaluate(x, ["a", "a", "b", "b"], metric="l2", calibration_range=(1, 3), num_thresholds=3,
                 timestamp=False)
    v = r.verdict
    assert v.answer == "yes" and v.threshold == 3 and v.range_edge == "upper"
    assert v.widen == "--calibration-range 1:5"
    # strict point: global FAR is 0 everywhere, so far:0.01 is the largest grid threshold
    assert v.strict.index == 2 and v.strict.threshold == 3


# -- compare: which model is more consistent ------------------------------------------
def test_comparison_verdict_follows_opis_and_its_interval():
    from opis_cli.gate.compare import compare_results
    from opis_cli.metrics.bootstrap import DifferenceInterval

    def with_opis(r, v):
        return replace(r, classes=replace(r.classes, opis=v))

    base = with_opis(made([0.5] * 4 + [0.05] * 46, [0.6] * 7 + [0.1] * 43), 0.02)   # no
    cand = with_opis(made([0.05] * 50, [0.1] * 50), 0.01)                            # yes
    v = compare_results(base, cand).verdict
    assert v.question == "Which model is more consistent?" and v.answer == "candidate"
    assert v.sentence.startswith("Candidate: the candidate is more consistent than the baseline "
                                 "(OPIS 0.02 -> 0.01, -50%); at each model's own threshold, "
                                 "classes with FAR above twice the global 8% -> 0% and with "
                                 "FRR above 50% 14% -> 0%.")
    assert v.notes[0].startswith("Baseline alone: No: ") and v.notes[1].startswith(
        "Candidate alone: Yes: ")
    assert compare_results(cand, base).verdict.answer == "baseline"
    assert compare_results(base, base).verdict.answer == "neither"
    # a bootstrap interval of the change that holds 0: neither, whatever the point estimate
    cmp = compare_results(base, cand)
    noisy = replace(cmp, intervals=(DifferenceInterval("opis", "paired", -0.01, -0.02, 0.001,
                                                       0.95),))
    from opis_cli.gate.compare import comparison_verdict

    nv = comparison_verdict(noisy, base, cand)
    assert nv.answer == "neither" and "within its bootstrap interval" in nv.sentence
    sure = replace(cmp, intervals=(DifferenceInterval("opis", "paired", -0.01, -0.02, -0.001,
                                                      0.95),))
    assert comparison_verdict(sure, base, cand).answer == "candidate"
    assert cmp.to_dict()["verdict"]["answer"] == "candidate"


# -- calibrate: does the threshold transfer ---------------------------------------------
def _transfer(test_fars, shares, target=0.01, by="class", cal_far=0.01):
    from opis_cli.transfer import (CalibrationSide, FoldTransfer, GroupRates, Target,
                                   TestSide, TransferResult)

    nan = float("nan")
    sp = Spread(nan, nan, nan, nan, nan)
    folds = []
    for k, (far, share) in enumerate(zip(test_fars, shares)):
        groups = GroupRates(sp, sp, share, ()) if by == "group" else None
        test = TestSide(10, 10, 100, far, 0.9, sp, sp, 0.99 if by == "group" else share,
                        0.5, 0.9, far, (), groups)
        folds.append(FoldTransfer(k, CalibrationSide(40, 40, 400, 0.5, cal_far, 0.9), test))
    tg = Target("far", target) if target is not None else Target("max-mean-utility")
    return TransferResult(tg, {"kind": "folds", "folds": len(folds), "seed": 0, "by": by},
                          tuple(folds), 500, 8, "cosine", {})


def test_transfer_verdict_rule():
    v = _transfer([0.01, 0.012, 0.008], [0.0, 0.05, 0.05]).verdict
    assert v.answer == "yes" and v.question == "Does the threshold transfer to unseen classes?"
    assert v.sentence == ("Yes: a threshold for global FAR 1%, chosen on the calibration side, "
                          "gives FAR 0.8% to 1.2% on unseen classes (mean 1%) over 3 folds; "
                          "3.3% of the unseen classes see more than twice the target.")
    # at exactly 2x and 1/2 of the target: still within
    assert _transfer([0.02, 0.005], [0.0, 0.0]).verdict.answer == "yes"
    # one fold more than 2x off: no, with a note
    v = _transfer([0.01, 0.0201], [0.0, 0.0]).verdict
    assert v.answer == "no" and v.notes and v.notes[0].startswith("1 of 2 fold(s) miss")
    assert _transfer([0.01, 0.0049], [0.0, 0.0]).verdict.answer == "no"
    # the mean share decides between yes, partly and no
    assert _transfer([0.01, 0.01], [0.06, 0.08]).verdict.answer == "partly"
    assert _transfer([0.01, 0.01], [0.1, 0.1]).verdict.answer == "partly"
    assert _transfer([0.01, 0.01], [0.1, 0.14]).verdict.answer == "no"
    # a group split reads the groups' share, not the classes' (0.99 in this fake)
    g = _transfer([0.01], [0.0], by="group").verdict
    assert g.answer == "yes" and "unseen groups" in g.sentence and "unseen groups" in g.question
    # a policy target: the reference is the calibration side's FAR
    p = _transfer([0.05, 0.06], [0.0, 0.0], target=None, cal_far=0.05).verdict
    assert p.answer == "yes" and "the max-mean-utility threshold" in p.sentence
    assert _transfer([0.05, 0.2], [0.0, 0.0], target=None, cal_far=0.05).verdict.answer == "no"
    doc = _transfer([0.01], [0.0]).to_dict()
    assert list(doc)[:3] == ["schema_version", "kind", "verdict"]
    assert doc["verdict"]["answer"] == "yes"


def test_comparison_verdict_names_a_side_at_its_range_edge():
    from opis_cli.gate.compare import compare_results

    base = made([0.05] * 10, [0.1] * 10, index=10)          # at the upper end
    cand = made([0.05] * 10, [0.1] * 10, index=4)
    notes = compare_results(base, cand).verdict.notes
    assert ("The baseline's recommended threshold sits at the upper end of its calibration "
            "range; widen it with --far-range 0.01:0.3.") in notes
    assert not any("candidate's recommended threshold" in n for n in notes)


def test_far_is_not_better_between_models_at_different_thresholds():
    """Issue 25: at two different thresholds a lower FAR alone is a trade-off, not
    "better"; only a (FAR, FRR) point that dominates is better (or worse) on all three."""
    from opis_cli.gate.compare import compare_results

    def at(index, far, tpr):
        r = made([0.05] * 10, [0.1] * 10, index=index, global_far=far)
        rt = replace(r.classes.recommended_threshold, tpr=tpr)
        return replace(r, classes=replace(r.classes, recommended_threshold=rt))

    def verdicts(b, c):
        return {m.name: m.verdict for m in compare_results(b, c).metrics
                if m.name in ("far", "tpr", "frr")}

    base = at(5, 0.10, 0.80)
    trade = at(3, 0.05, 0.70)            # stricter: fewer false accepts, more false rejects
    assert verdicts(base, trade) == {"far": "", "tpr": "", "frr": ""}
    dominates = at(3, 0.05, 0.90)        # fewer of both
    assert verdicts(base, dominates) == {"far": "better", "tpr": "better", "frr": "better"}
    assert verdicts(dominates, base) == {"far": "worse", "tpr": "worse", "frr": "worse"}
    same_t = at(5, 0.05, 0.70)           # the same threshold: each rate on its own
    assert verdicts(base, same_t) == {"far": "better", "tpr": "worse", "frr": "worse"}
