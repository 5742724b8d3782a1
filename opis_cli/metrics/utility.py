"""Utility curves from pair counts (SPEC 4). Pure numpy, no I/O."""

from __future__ import annotations

import numpy as np

from .. import options


def utility(tp: np.ndarray, fp: np.ndarray, P: np.ndarray, M: np.ndarray, *,
            kind: str = "tpr-tnr", beta: float = 1.0) -> np.ndarray:
    """Utility ``U(t)`` of every row (class or group) at every threshold.

    Parameters
    ----------
    tp : (C, K) int, positive pairs with ``d <= t_k``
    fp : (C, K) int, negative pairs with ``d <= t_k``
    P, M : (C,) int, numbers of positive and negative pairs (both > 0)
    kind : ``"tpr-tnr"``: F-beta mean of TPR and TNR,
        ``U = (1 + b^2) TPR TNR / (b^2 TNR + TPR)``;
        ``"precision-recall"``: retrieval F-beta,
        ``U = (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP)``.
        Both are 0 where their denominator (resp. TP) is 0.
    beta : ``b`` above; ``b > 1`` weights false rejects more.

    Returns
    -------
    (C, K) float64
    """
    options.validate(utility=kind, beta=beta)
    b2 = float(beta) ** 2
    tp = tp.astype(np.float64)
    fp = fp.astype(np.float64)
    P = np.asarray(P, np.float64)[:, None]
    M = np.asarray(M, np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "tpr-tnr":
            tpr = tp / P
            tnr = 1.0 - fp / M
            den = b2 * tnr + tpr
            u = np.where(den > 0, (1 + b2) * tpr * tnr / den, 0.0)
        else:
            fn = P - tp
            den = (1 + b2) * tp + b2 * fn + fp
            u = np.where(tp > 0, (1 + b2) * tp / den, 0.0)
    return u
