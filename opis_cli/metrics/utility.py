"""Utility curves from pair counts (SPEC 4). Pure numpy, no I/O."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

UTILITIES = ("tpr-tnr", "precision-recall")


def utility(tp: np.ndarray, pp: np.ndarray, P: np.ndarray, M: np.ndarray, *,
            kind: str = "tpr-tnr", beta: float = 1.0) -> np.ndarray:
    """Utility ``U(t)`` of every row (class or group) at every threshold.

    Parameters
    ----------
    tp : (C, K) int, positive pairs with ``d <= t_k``
    pp : (C, K) int, all pairs with ``d <= t_k`` (so ``FP = pp - tp``)
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
    if kind not in UTILITIES:
        raise ConfigError(f"unknown utility {kind!r}; expected one of {', '.join(UTILITIES)}")
    if not (np.isfinite(beta) and beta > 0):
        raise ConfigError(f"--beta must be a positive number, got {beta}")
    b2 = float(beta) ** 2
    tp = tp.astype(np.float64)
    fp = pp.astype(np.float64) - tp
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
