"""``metrics.utility``: utility curves from pair counts (SPEC 4), worked by hand.

Every case gives the counts ``tp`` (accepted positives), ``pp`` (all accepted
pairs, so ``FP = pp - tp``), ``P`` and ``M`` of one class at one or more
thresholds, and the utility written out from the formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference as ref
from data_gen import random_counts
from opis_cli.errors import ConfigError
from opis_cli.metrics.utility import utility
from opis_cli.options import UTILITIES


def u1(tp, fp, P, M, **kw) -> float:
    """Utility of a single class at a single threshold."""
    out = utility(np.array([[tp]]), np.array([[fp]]), np.array([P]), np.array([M]), **kw)
    assert out.shape == (1, 1) and out.dtype == np.float64
    return float(out[0, 0])


# -- tpr-tnr: U = (1 + b^2) TPR TNR / (b^2 TNR + TPR) ------------------------------------
# TP = 3 of P = 4 -> TPR = 0.75; FP = 1 of M = 5 -> TNR = 0.8
@pytest.mark.parametrize("beta,expected", [
    (1.0, 2 * 0.75 * 0.8 / (0.8 + 0.75)),         # 1.2 / 1.55 = 0.7741935...
    (2.0, 5 * 0.75 * 0.8 / (4 * 0.8 + 0.75)),     # 3.0 / 3.95 = 0.7594936...
    (0.5, 1.25 * 0.75 * 0.8 / (0.25 * 0.8 + 0.75)),  # 0.75 / 0.95 = 0.7894736...
])
def test_tpr_tnr_by_hand(beta, expected):
    assert u1(3, 1, 4, 5, beta=beta) == pytest.approx(expected, rel=1e-15)


def test_tpr_tnr_beta_above_one_weights_false_rejects_more():
    # TPR = 0.75 < TNR = 0.8: the more weight on TPR (b > 1), the lower U
    b2, b1, b05 = (u1(3, 1, 4, 5, beta=b) for b in (2.0, 1.0, 0.5))
    assert 0.75 < b2 < b1 < b05 < 0.8


def test_tpr_tnr_is_zero_where_its_denominator_is():
    # TP = 0 -> TPR = 0, and FP = M -> TNR = 0: 0 / 0 is defined as 0 (no NaN, no warning)
    with np.errstate(all="raise"):
        assert u1(0, 5, 4, 5) == 0.0
    # TPR = 0, TNR = 1: 0 / b^2 = 0 by the formula itself
    assert u1(0, 0, 4, 5) == 0.0
    # TPR = 1, TNR = 1: (1 + b^2) / (b^2 + 1) = 1 for any beta
    assert u1(4, 0, 4, 5, beta=3.0) == pytest.approx(1.0, rel=1e-15)


# -- precision-recall: U = (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP) --------------------
# TP = 2 of P = 4 -> FN = 2; FP = 1: precision 2/3, recall 1/2
@pytest.mark.parametrize("beta,expected", [
    (1.0, 4 / 7),                         # 2*2 / (2*2 + 1*2 + 1)
    (2.0, 10 / 19),                       # 5*2 / (5*2 + 4*2 + 1)
    (0.5, 2.5 / 4),                       # 1.25*2 / (1.25*2 + 0.25*2 + 1)
])
def test_precision_recall_by_hand(beta, expected):
    assert u1(2, 1, 4, 9, kind="precision-recall", beta=beta) == pytest.approx(expected, rel=1e-15)


def test_precision_recall_beta_weights_recall_above_one_and_precision_below():
    recall, precision = 0.5, 2 / 3
    hi, mid, lo = (u1(2, 1, 4, 9, kind="precision-recall", beta=b) for b in (2.0, 1.0, 0.5))
    assert recall < hi < mid < lo < precision


def test_precision_recall_is_zero_without_true_positives():
    # TP = 0: U = 0 even where the denominator b^2 FN + FP is positive, and where it is 0
    # would only need P = 0 and FP = 0, which an evaluated class never has
    with np.errstate(all="raise"):
        assert u1(0, 3, 4, 9, kind="precision-recall") == 0.0
        assert u1(0, 0, 4, 9, kind="precision-recall", beta=0.5) == 0.0


def test_precision_recall_does_not_depend_on_M():
    assert u1(2, 1, 4, 9, kind="precision-recall") == u1(2, 1, 4, 1000, kind="precision-recall")


# -- curves: one row per class, one column per threshold ------------------------------------
def test_curves_of_several_classes_and_thresholds():
    # class 0: P = 2, M = 4; class 1: P = 1, M = 2
    tp = np.array([[0, 1, 2], [0, 1, 1]])
    fp = np.array([[0, 0, 2], [1, 1, 2]])
    U = utility(tp, fp, np.array([2, 1]), np.array([4, 2]))
    # class 0: (TPR, TNR) = (0, 1), (.5, 1), (1, .5) -> 0, 2*.5/1.5, 2*.5/1.5
    # class 1: (0, .5), (1, .5), (1, 0) -> 0, 2*.5/1.5, 0
    np.testing.assert_allclose(U, [[0, 2 / 3, 2 / 3], [0, 2 / 3, 0]], rtol=1e-15, atol=0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", UTILITIES)
def test_against_the_reference_on_random_counts(seed, kind):
    labels, P, M, TP, FP, _ = random_counts(seed)
    beta = (1.0, 0.5, 2.0)[seed % 3]
    U = utility(TP, FP, P, M, kind=kind, beta=beta)
    for c in range(len(labels)):
        for k in range(TP.shape[1]):
            want = ref.UTILITY[kind](TP[c, k], FP[c, k], P[c], M[c], beta)
            assert math.isclose(U[c, k], want, rel_tol=1e-12, abs_tol=1e-15), (c, k)


# -- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,needle", [
    (dict(kind="f1"), "--utility 'f1': expected one of tpr-tnr, precision-recall"),
    (dict(beta=0.0), "--beta must be a positive number"),
    (dict(beta=-1.0), "--beta must be a positive number"),
    (dict(beta=float("nan")), "--beta must be a positive number"),
    (dict(beta=float("inf")), "--beta must be a positive number"),
])
def test_bad_options_are_config_errors(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        u1(1, 1, 2, 2, **kwargs)
