"""``metrics.threshold``: policies, the recommended threshold and the per-class
spread at it (SPEC 6), on a case worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference as ref
from data_gen import random_counts
from opis_cli.errors import ConfigError
from opis_cli.metrics.consistency import consistency
from opis_cli.metrics.threshold import Policy, class_rates, global_far, recommend, spread_of
from opis_cli.metrics.utility import utility
from opis_cli.results import RecommendedThreshold, Spread

# Three classes on a grid t = 1, 2, 3.
#   P = 2, 4, 5 (sum 11); M = 10, 10, 20 (sum 40)
#   TP per class and threshold; FP likewise:
T = np.array([1.0, 2.0, 3.0])
P = np.array([2, 4, 5])
M = np.array([10, 10, 20])
TP = np.array([[1, 2, 2], [1, 2, 4], [0, 3, 5]])
FP = np.array([[1, 1, 2], [0, 0, 9], [0, 1, 2]])
# global FP = 1, 2, 13 -> global FAR = 1/40, 2/40, 13/40 = .025, .05, .325
# global TP = 2, 7, 11 -> TPR = 2/11, 7/11, 1
# the curves are inputs of recommend(): ties at index 1 and 2 of the mean curve
MEAN = np.array([0.3, 0.6, 0.6])
WORST = np.array([0.1, 0.2, 0.4])


def pick(policy: str) -> RecommendedThreshold:
    return recommend(Policy.parse(policy), T, MEAN, WORST, TP, FP, P, M)


def test_global_far():
    np.testing.assert_array_equal(global_far(FP, M), [0.025, 0.05, 0.325])


def test_max_mean_utility_ties_go_to_the_smallest_threshold():
    # MEAN = .3, .6, .6: the maximum is at index 1 and 2 -> 1 (t = 2)
    rt = pick("max-mean-utility")
    # at index 1: per-class FAR = 1/10, 0/10, 1/20 = .1, 0, .05 (sorted 0, .05, .1)
    #             per-class FRR = 1 - 2/2, 1 - 2/4, 1 - 3/5 = 0, .5, .4 (sorted 0, .4, .5)
    # linear percentiles of 3 values: position p/100 * 2, so p5 -> 0.1, p95 -> 1.9
    #   FAR: p5 = 0 + .1 * .05 = .005, p50 = .05, p95 = .05 + .9 * .05 = .095
    #   FRR: p5 = 0 + .1 * .4 = .04, p50 = .4, p95 = .4 + .9 * .1 = .49
    # global FAR .05: no class is above 2 * .05 = .1 (class 0 is at exactly .1: not above)
    want = RecommendedThreshold(
        policy="max-mean-utility", value=2.0, index=1, mean_utility=0.6,
        worst_mean_utility=0.2, tpr=7 / 11, far=0.05,
        far_spread=Spread(0.0, 0.005, 0.05, 0.095, 0.1),
        frr_spread=Spread(0.0, 0.04, 0.4, 0.49, 0.5),
        fraction_far_above_2x=0.0, requested_far=None)
    assert_same(rt, want)
    assert rt.frr == pytest.approx(4 / 11, rel=1e-15)


def test_max_worst_utility():
    # WORST = .1, .2, .4 -> index 2 (t = 3)
    rt = pick("max-worst-utility")
    assert (rt.policy, rt.index, rt.value) == ("max-worst-utility", 2, 3.0)
    assert (rt.mean_utility, rt.worst_mean_utility, rt.tpr, rt.far) == (0.6, 0.4, 1.0, 0.325)
    # per-class FAR at index 2 = .2, .9, .1; 2 * .325 = .65: one class of three above it
    assert rt.fraction_far_above_2x == pytest.approx(1 / 3, rel=1e-15)


def test_max_worst_utility_ties_go_to_the_smallest_threshold():
    rt = recommend(Policy.parse("max-worst-utility"), T, MEAN, np.array([0.5, 0.5, 0.2]),
                   TP, FP, P, M)
    assert rt.index == 0


@pytest.mark.parametrize("policy,index", [
    ("far:0.05", 1),     # FAR .025, .05, .325: the largest <= .05 is index 1 (equality counts)
    ("far:0.3", 1),
    ("far:0.325", 2),
    ("far:1", 2),
    ("far:0.025", 0),
])
def test_far_policy_takes_the_largest_threshold_within_the_bound(policy, index):
    rt = pick(policy)
    assert rt.index == index and rt.value == T[index]
    assert rt.far == global_far(FP, M)[index]
    assert rt.requested_far == float(policy[4:])


def test_far_policy_without_a_qualifying_threshold_takes_the_smallest():
    # no grid threshold has FAR <= .01: the smallest, reporting the FAR achieved there
    rt = pick("far:0.01")
    assert (rt.index, rt.value, rt.far, rt.requested_far) == (0, 1.0, 0.025, 0.01)
    assert rt.policy == "far:0.01"


def test_class_rates():
    far, frr = class_rates(TP, FP, P, M, 1)
    np.testing.assert_array_equal(far, [0.1, 0.0, 0.05])
    np.testing.assert_array_equal(frr, [0.0, 0.5, 0.4])


# -- spread: min, p5, p50, p95, max with linear interpolation -------------------------------
def test_spread_interpolates_linearly_between_order_statistics():
    # 5 values: position p/100 * 4; p5 -> 0.2: 0 + .2 * .1 = .02; p95 -> 3.8: .3 + .8 * .7 = .86
    s = spread_of(np.array([0.3, 0.0, 1.0, 0.1, 0.2]))
    assert s.min == 0.0 and s.p50 == 0.2 and s.max == 1.0
    assert s.p5 == pytest.approx(0.02, rel=1e-14)
    assert s.p95 == pytest.approx(0.86, rel=1e-14)


def test_spread_of_one_value_and_of_none():
    assert spread_of(np.array([0.25])) == Spread(0.25, 0.25, 0.25, 0.25, 0.25)
    none = spread_of(np.array([]))
    assert all(math.isnan(v) for v in (none.min, none.p5, none.p50, none.p95, none.max))


# -- policies ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text,name,far,shown", [
    ("max-mean-utility", "max-mean-utility", None, "max-mean-utility"),
    (" max-worst-utility ", "max-worst-utility", None, "max-worst-utility"),
    ("far:0.05", "far", 0.05, "far:0.05"),
    ("far:0", "far", 0.0, "far:0"),
    ("far:1", "far", 1.0, "far:1"),
])
def test_policy_parse(text, name, far, shown):
    p = Policy.parse(text)
    assert (p.name, p.far, str(p)) == (name, far, shown)


@pytest.mark.parametrize("text,needle", [
    ("far:1.5", "F must be a number in \\[0, 1\\]"),
    ("far:-0.1", "F must be a number in \\[0, 1\\]"),
    ("far:x", "F must be a number in \\[0, 1\\]"),
    ("far:nan", "F must be a number in \\[0, 1\\]"),
    ("best", "expected max-mean-utility, max-worst-utility or far:F"),
])
def test_bad_policies_are_config_errors(text, needle):
    with pytest.raises(ConfigError, match=needle):
        Policy.parse(text)


# -- seeded: against the reference ----------------------------------------------------------
@pytest.mark.parametrize("seed", range(9))
def test_against_the_reference_on_random_counts(seed):
    labels, P_, M_, TP_, FP_, t = random_counts(seed)
    policy = ("max-mean-utility", "max-worst-utility", "far:0.3")[seed % 3]
    epsilon = (0.1, 0.5, 1.0)[seed % 3]
    cons = consistency(utility(TP_, FP_, P_, M_), t, labels, epsilon)
    rt = recommend(Policy.parse(policy), t, cons.mean_curve, cons.worst_curve, TP_, FP_, P_, M_)
    r = ref.block_from_counts(
        labels, dict(zip(labels, P_)), dict(zip(labels, M_)), dict(zip(labels, TP_)),
        dict(zip(labels, FP_)), t, utility="tpr-tnr", beta=1.0, epsilon=epsilon,
        policy=policy, n_rows={}, n_queries={}).rec
    assert rt.index == r["index"] and rt.value == r["value"]
    for key in ("mean_utility", "worst_mean_utility", "tpr", "far", "frr",
                "fraction_far_above_2x"):
        assert getattr(rt, key) == pytest.approx(r[key], rel=1e-12, abs=1e-15), key
    assert rt.far_spread.to_dict() == pytest.approx(r["far_spread"], rel=1e-12, abs=1e-15)
    assert rt.frr_spread.to_dict() == pytest.approx(r["frr_spread"], rel=1e-12, abs=1e-15)
    assert rt.requested_far == r["requested_far"]


def assert_same(rt: RecommendedThreshold, want: RecommendedThreshold) -> None:
    """Field by field, floats to 1e-15 relative (the hand values are decimal)."""
    for key, value in want.to_dict().items():
        got = rt.to_dict()[key]
        assert got == (pytest.approx(value, rel=1e-15, abs=1e-18) if not isinstance(value, str)
                       else value), key
