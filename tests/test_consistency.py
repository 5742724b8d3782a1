"""``metrics.consistency``: range average, worst set, OPIS, epsilon-OPIS and
retrieval aggregation (SPEC 5-6), on cases worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference as ref
from data_gen import random_counts
from opis_cli import evaluate
from opis_cli.metrics.consistency import consistency, range_average, retrieval, worst_count
from opis_cli.metrics.utility import utility
from opis_cli.results import Retrieval


# -- range_average: trapezoid over the grid / (t_hi - t_lo) ---------------------------------
def test_range_average_is_the_trapezoid_over_the_width():
    # uneven grid t = 0, 1, 3; v = 0, 1, 1:
    # (1 - 0) * (0 + 1) / 2 + (3 - 1) * (1 + 1) / 2 = 0.5 + 2 = 2.5, over width 3
    assert range_average(np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 3.0])) == 2.5 / 3


def test_range_average_of_a_constant_is_the_constant_and_works_on_the_last_axis():
    t = np.array([0.2, 0.3, 0.7, 1.1])
    v = np.array([[0.25] * 4, [0.0, 0.0, 1.0, 1.0]])
    # row 1: only the last two segments are non-zero: (0.4 * 0.5 + 0.4 * 1) / 0.9 = 0.6 / 0.9
    np.testing.assert_allclose(range_average(v, t), [0.25, 0.6 / 0.9], rtol=1e-15)


def test_range_average_agrees_with_the_reference_loop():
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(0.01, 1.0, 37))
    v = rng.uniform(size=37)
    assert range_average(v, t) == pytest.approx(ref.range_average(v, t), rel=1e-13)


# -- worst_count = ceil(epsilon * C) on the decimal epsilon, at least 1 --------------------
@pytest.mark.parametrize("epsilon,C,expected", [
    (0.1, 30, 3),     # 0.1 * 30 is 3.0000000000000004 in binary; the user meant 3
    (0.1, 70, 7),     # likewise 7.000000000000001
    (0.1, 31, 4),     # 3.1 -> 4
    (0.25, 10, 3),    # 2.5 -> 3
    (0.5, 2, 1),
    (1.0, 4, 4),      # every class is worst
    (0.001, 5, 1),    # 0.005 -> at least one class
])
def test_worst_count_is_the_exact_decimal_ceiling(epsilon, C, expected):
    assert worst_count(epsilon, C) == expected == max(1, ref.exact_ceil(epsilon, C))


# -- OPIS / epsilon-OPIS: the hand case of SPEC 9 -------------------------------------------
def test_spec_9_hand_case():
    # grid t = 1, 2, 3; U_a = 1, 1, 1; U_b = 0, 0, 1; Ubar = .5, .5, 1
    t = np.array([1.0, 2.0, 3.0])
    U = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    c = consistency(U, t, ["a", "b"], epsilon=0.1)
    np.testing.assert_array_equal(c.mean_curve, [0.5, 0.5, 1.0])
    # (U_c - Ubar)^2 = .25, .25, 0 for both classes: trapezoid (.25 + .125) / width 2 = .1875
    np.testing.assert_array_equal(c.contribution, [0.1875 / 2, 0.1875 / 2])
    assert c.opis == 0.1875
    # mean utilities: a = 1; b = (0 + 0.5) / 2 = 0.25 -> b is worst (W = {b}, 1 = ceil(.1 * 2))
    np.testing.assert_array_equal(c.mean_utility, [1.0, 0.25])
    np.testing.assert_array_equal(c.order, [1, 0])
    np.testing.assert_array_equal(c.worst, [False, True])
    np.testing.assert_array_equal(c.worst_curve, [0.0, 0.0, 1.0])
    # (mean_R - mean_W)^2 = 1, 1, 0: (1 + 0.5) / 2 = 0.75
    assert c.epsilon_opis == 0.75


def test_spec_9_hand_case_end_to_end():
    x = np.array([[0.0], [1.0], [10.0], [13.0]])
    res = evaluate(x, ["a", "a", "b", "b"], metric="l2", calibration_range=(1, 3),
                   num_thresholds=3, timestamp=False)
    assert (res.opis, res.epsilon_opis) == (0.1875, 0.75)
    assert res.recommended_threshold.value == 3.0


def test_ties_in_mean_utility_are_ordered_by_label_string():
    t = np.array([0.0, 1.0])
    # rows "b" and "a" have the same curve; "10" < "9" as strings
    U = np.array([[0.2, 0.4], [0.2, 0.4], [0.9, 0.9], [0.9, 0.9]])
    c = consistency(U, t, ["b", "a", "9", "10"], epsilon=0.25)  # W: ceil(.25 * 4) = 1 row
    assert [["b", "a", "9", "10"][i] for i in c.order] == ["a", "b", "10", "9"]
    np.testing.assert_array_equal(c.worst, [False, True, False, False])


def test_epsilon_one_puts_every_class_in_w_and_gives_zero():
    t = np.array([1.0, 2.0, 3.0])
    U = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    c = consistency(U, t, ["a", "b"], epsilon=1.0)
    assert c.worst.all() and c.epsilon_opis == 0.0
    np.testing.assert_array_equal(c.worst_curve, c.mean_curve)


def test_identical_classes_have_zero_opis():
    t = np.linspace(0.0, 1.0, 5)
    U = np.tile([0.1, 0.5, 0.7, 0.6, 0.2], (4, 1))
    c = consistency(U, t, list("abcd"), epsilon=0.5)
    assert c.opis == 0.0 and c.epsilon_opis == 0.0


@pytest.mark.parametrize("seed", range(8))
def test_against_the_reference_on_random_counts(seed):
    labels, P, M, TP, FP, t = random_counts(seed)
    epsilon = (0.1, 0.25, 0.5, 1.0)[seed % 4]
    U = utility(TP, FP, P, M)
    c = consistency(U, t, labels, epsilon)
    r = ref.block_from_counts(
        labels, dict(zip(labels, P)), dict(zip(labels, M)), dict(zip(labels, TP)),
        dict(zip(labels, FP)), t, utility="tpr-tnr", beta=1.0, epsilon=epsilon,
        policy="max-mean-utility", n_rows={}, n_queries={})
    assert c.opis == pytest.approx(r.opis, rel=1e-12, abs=1e-15)
    assert c.epsilon_opis == pytest.approx(r.epsilon_opis, rel=1e-12, abs=1e-15)
    assert [labels[i] for i in c.order] == r.order
    assert sorted(labels[i] for i in np.nonzero(c.worst)[0]) == sorted(r.worst)
    for i, k in enumerate(labels):
        assert c.mean_utility[i] == pytest.approx(r.mean_utility[k], rel=1e-12, abs=1e-15)
        assert c.contribution[i] == pytest.approx(r.opis_contribution[k], rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(c.mean_curve, r.ubar, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(c.worst_curve, r.worst_curve, rtol=1e-12, atol=1e-15)


# -- retrieval: R@k and MAP@R ---------------------------------------------------------------
# 1-D l2 hand case: rows x = 0, 1, 3 (class a) and 2, 10 (class b). Neighbours of each
# query by (distance, gallery row), self excluded; R = positives in the gallery:
#   row 0 (a, R=2): 1a(1) 3b(2) 2a(3) 4b(10)  first hit 1; AP@R = (1/1 + 0) / 2 = 0.5
#   row 1 (a, R=2): 0a(1) 3b(1) 2a(2) 4b(9)   (tie at 1: row 0 first) 1; (1 + 0) / 2 = 0.5
#   row 2 (a, R=2): 3b(1) 1a(2) 0a(3) 4b(7)   first hit 2; (0 + 1/2) / 2 = 0.25
#   row 3 (b, R=1): 1a(1) 2a(1) 0a(2) 4b(8)   first hit 4; 0
#   row 4 (b, R=1): 2a(7) 3b(8) 1a(9) 0a(10)  first hit 2; 0
# R@1 = 2/5, R@2 = 4/5, R@4 = R@8 = 1, MAP@R = (0.5 + 0.5 + 0.25) / 5 = 0.25
# positives among the R nearest: 1, 1, 1, 0, 0 -> R-Precision = (3 * 1/2) / 5 = 0.3
HAND_FIRST = np.array([1, 1, 2, 4, 2])
HAND_AP = np.array([0.5, 0.5, 0.25, 0.0, 0.0])
HAND_R = np.array([2, 2, 2, 1, 1])
HAND_RETRIEVAL = Retrieval({"1": 0.4, "2": 0.8, "4": 1.0, "8": 1.0}, 0.25, 5)


def test_retrieval_aggregates_the_hand_case():
    assert retrieval(HAND_FIRST, HAND_AP, HAND_R) == HAND_RETRIEVAL


def test_r_precision_of_the_hand_case():
    got = retrieval(HAND_FIRST, HAND_AP, HAND_R, np.array([1, 1, 1, 0, 0]))
    assert got.r_precision == pytest.approx(0.3, rel=1e-15)
    assert got.recall_at(1) == got.recall_at_k[1] == got.recall_at_k["1"] == 0.4
    # a query without positives is left out of R-Precision too
    got = retrieval(np.append(HAND_FIRST, 1), np.append(HAND_AP, 1.0), np.append(HAND_R, 0),
                    np.array([1, 1, 1, 0, 0, 5]))
    assert got.r_precision == pytest.approx(0.3, rel=1e-15)


def test_queries_without_positives_are_left_out():
    got = retrieval(np.append(HAND_FIRST, 1), np.append(HAND_AP, 1.0), np.append(HAND_R, 0))
    assert got == HAND_RETRIEVAL


def test_no_query_with_a_positive_gives_nan():
    got = retrieval(np.array([1, 2]), np.array([1.0, 0.0]), np.array([0, 0]))
    assert got.queries == 0 and math.isnan(got.map_at_r)
    assert sorted(got.recall_at_k) == ["1", "2", "4", "8"]
    assert all(math.isnan(v) for v in got.recall_at_k.values())


def test_retrieval_hand_case_end_to_end():
    x = np.array([[0.0], [1.0], [3.0], [2.0], [10.0]])
    labels = ["a", "a", "a", "b", "b"]
    res = evaluate(x, labels, metric="l2", calibration_range=(1, 3), num_thresholds=3,
                   timestamp=False)
    assert res.retrieval.queries == 5
    assert res.retrieval.recall_at_k == pytest.approx(HAND_RETRIEVAL.recall_at_k, rel=1e-15)
    assert res.retrieval.map_at_r == pytest.approx(0.25, rel=1e-15)
    assert res.retrieval.r_precision == pytest.approx(0.3, rel=1e-15)
    r, _ = ref.retrieval(ref.distance_matrix(x, "l2"), labels, np.ones(5, bool), np.ones(5, bool))
    assert r == {"recall_at_k": HAND_RETRIEVAL.recall_at_k, "map_at_r": 0.25,
                 "r_precision": pytest.approx(0.3, rel=1e-15), "queries": 5}
