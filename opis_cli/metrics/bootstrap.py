"""Bootstrap over classes: how much OPIS and epsilon-OPIS depend on which
classes happen to be in the test set. Pure numpy, no I/O.

Method (stated in the README's "Release gating" section):

1. Take the evaluated classes, sorted by label (string order), with their
   utility curves ``U`` (C, K) on the result's threshold grid.
2. Draw ``B`` resamples of ``C`` class indices with replacement from
   ``np.random.default_rng(seed)`` (one ``(B, C)`` integer draw).
3. For every resample recompute OPIS and epsilon-OPIS with
   :func:`opis_cli.metrics.consistency` on the resampled curves (no new
   distance work: the curves are reused, the grid is unchanged).
4. The interval at confidence ``c`` is the percentile interval: the
   ``(1 - c) / 2`` and ``(1 + c) / 2`` quantiles of the ``B`` replicates
   (``numpy.quantile``, linear interpolation).

Because the draw depends only on ``seed``, ``B`` and ``C``, two results
with the same set of class labels bootstrapped with the same ``seed`` and
``B`` are resampled identically, class for class: their replicates are
*paired*, and ``candidate - baseline`` per replicate is a paired bootstrap
of the difference (:func:`difference_interval`). That is why the replicates
are stored with a result: a saved baseline can be paired with a later
candidate without its curves.

Reference: Zhang et al., "Threshold-Consistent Margin Loss for Open-World
Deep Metric Learning", ICLR 2024 (arXiv 2307.04047), for OPIS itself.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ConfigError, InputError
from ..options import CONFIDENCE as DEFAULT_CONFIDENCE, RESAMPLES as DEFAULT_RESAMPLES
from ..options import check_confidence
from .consistency import consistency

#: Metrics the bootstrap resamples (keys of ``EvaluationResult.headline()``).
BOOTSTRAP_METRICS = ("opis", "epsilon_opis")
METHOD = "percentile bootstrap over evaluated classes (resampled with replacement)"


def labels_digest(labels: Sequence[str]) -> str:
    """sha256 of the sorted class labels, one per line: equal sets, equal digest."""
    text = "\n".join(sorted(str(v) for v in labels))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """``(1 - c) / 2`` and ``(1 + c) / 2`` quantiles of ``replicates`` (linear)."""
    c = check_confidence(confidence)
    lo, hi = np.quantile(np.asarray(replicates, np.float64), [(1 - c) / 2, (1 + c) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap replicates of OPIS and epsilon-OPIS for one result.

    Attributes
    ----------
    resamples, seed : ``B`` and the seed of ``np.random.default_rng``
    confidence : the level of the stored intervals (any other level can be
        computed from the replicates with :meth:`interval`)
    classes : ``C``, the number of evaluated classes resampled
    labels_sha256 : :func:`labels_digest` of those classes (pairing check)
    estimate : the metrics on the full set of classes
    replicates : metric -> (B,) float64 replicates
    """

    resamples: int
    seed: int
    confidence: float
    classes: int
    labels_sha256: str
    estimate: dict[str, float]
    replicates: dict[str, np.ndarray]

    def interval(self, metric: str, confidence: float | None = None) -> tuple[float, float]:
        return percentile_interval(self.replicates[metric],
                                   self.confidence if confidence is None else confidence)

    def pairs_with(self, other: "Bootstrap") -> bool:
        """Whether the replicates of ``self`` and ``other`` used the same class draws."""
        return (self.resamples == other.resamples and self.seed == other.seed
                and self.labels_sha256 == other.labels_sha256)

    def to_dict(self) -> dict:
        out: dict = {"method": METHOD, "resamples": self.resamples, "seed": self.seed,
                     "confidence": self.confidence, "classes": self.classes,
                     "labels_sha256": self.labels_sha256}
        for m in BOOTSTRAP_METRICS:
            lo, hi = self.interval(m)
            reps = self.replicates[m]
            out[m] = {"estimate": float(self.estimate[m]), "lower": lo, "upper": hi,
                      "std": float(np.std(reps, ddof=1)) if len(reps) > 1 else 0.0}
        out["replicates"] = {m: [float(v) for v in self.replicates[m]]
                             for m in BOOTSTRAP_METRICS}
        return out

    @classmethod
    def from_dict(cls, d: dict, where: str = "bootstrap") -> "Bootstrap":
        try:
            reps = {m: np.asarray(d["replicates"][m], np.float64) for m in BOOTSTRAP_METRICS}
            b = cls(resamples=int(d["resamples"]), seed=int(d["seed"]),
                    confidence=float(d["confidence"]), classes=int(d["classes"]),
                    labels_sha256=str(d["labels_sha256"]),
                    estimate={m: float(d[m]["estimate"]) for m in BOOTSTRAP_METRICS},
                    replicates=reps)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: not a valid bootstrap block ({type(e).__name__}: {e}); "
                             "expected the 'bootstrap' key written by opis evaluate --bootstrap N"
                             ) from None
        if any(len(r) != b.resamples for r in reps.values()):
            raise InputError(f"{where}: expected {b.resamples} replicates per metric")
        return b


def bootstrap_curves(U: np.ndarray, thresholds: Sequence[float], labels: Sequence[str],
                     epsilon: float, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     confidence: float = DEFAULT_CONFIDENCE) -> Bootstrap:
    """Bootstrap OPIS and epsilon-OPIS over the rows (classes) of ``U``.

    Parameters
    ----------
    U : (C, K) utility curves of the evaluated classes on ``thresholds``
    thresholds : (K,) the grid (distances)
    labels : (C,) class labels (strings) of the rows of ``U``
    epsilon : fraction of worst classes for epsilon-OPIS
    resamples : ``B``; seed : seed of ``np.random.default_rng``
    confidence : level of the stored percentile intervals

    Returns
    -------
    Bootstrap
    """
    if int(resamples) < 2:
        raise ConfigError(f"--bootstrap must be at least 2 resamples, got {resamples}")
    check_confidence(confidence)
    U = np.asarray(U, np.float64)
    th = np.asarray(thresholds, np.float64)
    labs = [str(v) for v in labels]
    if U.ndim != 2 or U.shape[0] != len(labs) or U.shape[1] != len(th):
        raise ValueError(f"U must be (C={len(labs)}, K={len(th)}), got {U.shape}")
    # Rows in label order so that the draw means the same classes for any
    # result with the same label set (pairing, see the module docstring).
    order = sorted(range(len(labs)), key=lambda i: labs[i])
    U = U[order]
    labs = [labs[i] for i in order]
    C = len(labs)
    full = consistency(U, th, labs, epsilon)
    draws = np.random.default_rng(int(seed)).integers(0, C, size=(int(resamples), C))
    reps = {m: np.empty(int(resamples)) for m in BOOTSTRAP_METRICS}
    lab_arr = np.array(labs, dtype=object)
    for b, idx in enumerate(draws):
        cons = consistency(U[idx], th, lab_arr[idx].tolist(), epsilon)
        reps["opis"][b] = cons.opis
        reps["epsilon_opis"][b] = cons.epsilon_opis
    return Bootstrap(resamples=int(resamples), seed=int(seed), confidence=float(confidence),
                     classes=C, labels_sha256=labels_digest(labs),
                     estimate={"opis": full.opis, "epsilon_opis": full.epsilon_opis},
                     replicates=reps)


def bootstrap_result(result, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     confidence: float = DEFAULT_CONFIDENCE) -> Bootstrap:
    """:func:`bootstrap_curves` on the class curves of an in-process ``EvaluationResult``."""
    curves = result.curves
    if curves is None:
        raise InputError("this result has no per-class curves (it was read from JSON); "
                         "evaluate the embeddings with --bootstrap N to store the bootstrap")
    return bootstrap_curves(curves.utility, result.thresholds, curves.labels, result.epsilon,
                            resamples=resamples, seed=seed, confidence=confidence)


def result_document(result, boot: Bootstrap | None) -> dict:
    """The result JSON document with the optional ``"bootstrap"`` key added."""
    d = result.to_dict()
    if boot is not None:
        d["bootstrap"] = boot.to_dict()
    return d


@dataclass(frozen=True)
class DifferenceInterval:
    """Interval of ``candidate - baseline`` for one metric.

    ``method`` is ``"paired"`` (same class draws on both sides: quantiles of
    the per-replicate differences) or ``"unpaired"`` (different class sets:
    ``lower = cand.lower - base.upper``, ``upper = cand.upper - base.lower``,
    the difference of the two percentile intervals, which excludes 0 exactly
    when the two intervals do not overlap).
    """

    metric: str
    method: str
    estimate: float
    lower: float
    upper: float
    confidence: float

    def to_dict(self) -> dict:
        return {"metric": self.metric, "method": self.method, "estimate": _finite(self.estimate),
                "lower": _finite(self.lower), "upper": _finite(self.upper),
                "confidence": self.confidence}


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def difference_interval(base: Bootstrap, cand: Bootstrap, metric: str,
                        confidence: float | None = None) -> DifferenceInterval:
    """Bootstrap interval of ``cand - base`` for ``metric`` (see :class:`DifferenceInterval`)."""
    if metric not in BOOTSTRAP_METRICS:
        raise ConfigError(f"no bootstrap for {metric!r}; available: "
                          f"{', '.join(BOOTSTRAP_METRICS)}")
    c = check_confidence(base.confidence if confidence is None else confidence)
    est = cand.estimate[metric] - base.estimate[metric]
    if base.pairs_with(cand):
        lo, hi = percentile_interval(cand.replicates[metric] - base.replicates[metric], c)
        return DifferenceInterval(metric, "paired", est, lo, hi, c)
    blo, bhi = base.interval(metric, c)
    clo, chi = cand.interval(metric, c)
    return DifferenceInterval(metric, "unpaired", est, clo - bhi, chi - blo, c)
