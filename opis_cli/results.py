"""Typed, frozen results and the versioned JSON schema (SPEC 8).

The result object is the single thing reports and gates read: they never
recompute. ``EvaluationResult.to_dict()`` gives the JSON document;
``EvaluationResult.from_dict()`` reads one back (without the curves, which
live in their own table, see ``Curves``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .diagnosis import Diagnosis
from .verdict import Verdict, verdict_of

SCHEMA_VERSION = 1
#: columns of the per-class curves table (``--curves``; ``EvaluationResult.curves_table``)
CURVES_COLUMNS = ("level", "label", "threshold_index", "threshold", "utility", "tp", "fp",
                  "positives", "negatives", "tpr", "far", "fdr", "garbe")
#: ``level`` of the block-level rows of the curves table (one per threshold, label ``""``):
#: the block's mean utility, summed counts, global rates and SPEC 13 ``fdr``/``garbe``
FAIRNESS_LEVELS = {"class": "class-fairness", "group": "group-fairness"}


def _clean(v: Any) -> Any:
    """JSON-safe value: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_clean(x) for x in v]
    return v


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


@dataclass(frozen=True)
class Spread:
    """min, 5th, 50th, 95th percentile and max of a per-class rate."""

    min: float
    p5: float
    p50: float
    p95: float
    max: float

    def to_dict(self) -> dict:
        return _clean({"min": self.min, "p5": self.p5, "p50": self.p50, "p95": self.p95,
                       "max": self.max})

    @classmethod
    def from_dict(cls, d: dict) -> "Spread":
        return cls(*(_num(d.get(k)) for k in ("min", "p5", "p50", "p95", "max")))


@dataclass(frozen=True)
class CalibrationRange:
    """The calibration range (SPEC 5) as distances and as global FARs.

    ``far_lower``/``far_upper`` are the global FARs actually achieved at the
    bounds; ``far_requested`` the ``--far-range`` bounds when ``source`` is
    ``"far"``.
    """

    lower: float
    upper: float
    source: str
    far_lower: float
    far_upper: float
    far_requested: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        d = {"lower": self.lower, "upper": self.upper, "source": self.source,
             "far_lower": self.far_lower, "far_upper": self.far_upper}
        if self.far_requested is not None:
            d["far_requested"] = list(self.far_requested)
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict) -> "CalibrationRange":
        fr = d.get("far_requested")
        return cls(float(d["lower"]), float(d["upper"]), d["source"], _num(d.get("far_lower")),
                   _num(d.get("far_upper")), tuple(fr) if fr else None)


def _opt_num(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class Fairness:
    """Fairness of one threshold across classes or groups (SPEC 13).

    ``None`` where SPEC 13 says null: ``far_ratio``/``frr_ratio`` when the
    global rate is 0, ``inequity_rate`` when a minimum per-row rate is 0,
    ``garbe`` when only one row (a single group) is evaluated.
    """

    alpha: float
    far_ratio: float | None
    frr_ratio: float | None
    fdr: float
    garbe: float | None
    inequity_rate: float | None

    def to_dict(self) -> dict:
        return _clean({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_dict(cls, d: dict) -> "Fairness":
        return cls(float(d["alpha"]), _opt_num(d.get("far_ratio")), _opt_num(d.get("frr_ratio")),
                   _num(d.get("fdr")), _opt_num(d.get("garbe")),
                   _opt_num(d.get("inequity_rate")))


@dataclass(frozen=True)
class FairnessCurve:
    """FDR and GARBE (SPEC 13) at every grid threshold and their range averages.

    ``garbe``/``garbe_mean`` are ``None`` when only one row is evaluated.
    """

    alpha: float
    fdr_mean: float
    garbe_mean: float | None
    fdr: tuple[float, ...]
    garbe: tuple[float, ...] | None

    def to_dict(self) -> dict:
        return _clean({"alpha": self.alpha, "fdr_mean": self.fdr_mean,
                       "garbe_mean": self.garbe_mean, "fdr": list(self.fdr),
                       "garbe": None if self.garbe is None else list(self.garbe)})

    @classmethod
    def from_dict(cls, d: dict) -> "FairnessCurve":
        g = d.get("garbe")
        return cls(float(d["alpha"]), _num(d.get("fdr_mean")), _opt_num(d.get("garbe_mean")),
                   tuple(_num(v) for v in d.get("fdr", [])),
                   None if g is None else tuple(_num(v) for v in g))


@dataclass(frozen=True)
class RecommendedThreshold:
    """The global threshold a policy recommends, and what it does there."""

    policy: str
    value: float
    index: int
    mean_utility: float
    worst_mean_utility: float
    tpr: float
    far: float
    far_spread: Spread
    frr_spread: Spread
    fraction_far_above_2x: float
    requested_far: float | None = None
    #: SPEC 13 at this threshold (None for results written before it existed)
    fairness: Fairness | None = None

    @property
    def frr(self) -> float:
        return 1.0 - self.tpr

    def to_dict(self) -> dict:
        d = {"policy": self.policy, "value": self.value, "index": self.index,
             "mean_utility": self.mean_utility, "worst_mean_utility": self.worst_mean_utility,
             "tpr": self.tpr, "frr": self.frr, "far": self.far,
             "far_spread": self.far_spread.to_dict(), "frr_spread": self.frr_spread.to_dict(),
             "fraction_far_above_2x": self.fraction_far_above_2x}
        if self.requested_far is not None:
            d["requested_far"] = self.requested_far
        if self.fairness is not None:
            d["fairness"] = self.fairness.to_dict()
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict) -> "RecommendedThreshold":
        fair = d.get("fairness")
        return cls(d["policy"], float(d["value"]), int(d["index"]), _num(d["mean_utility"]),
                   _num(d.get("worst_mean_utility")), _num(d["tpr"]), _num(d["far"]),
                   Spread.from_dict(d["far_spread"]), Spread.from_dict(d["frr_spread"]),
                   _num(d.get("fraction_far_above_2x")), d.get("requested_far"),
                   Fairness.from_dict(fair) if fair else None)


@dataclass(frozen=True)
class OperatingPoint:
    """What one global threshold does (SPEC 6, at any threshold, not only the grid's).

    ``tpr``/``far`` are global rates over the evaluated classes; the spreads
    and ``fraction_far_above_2x`` describe the per-class FAR and FRR there;
    ``mean_utility`` is ``Ubar`` at the threshold (None when not known).
    """

    threshold: float
    tpr: float
    far: float
    far_spread: Spread
    frr_spread: Spread
    fraction_far_above_2x: float
    mean_utility: float | None = None

    @property
    def frr(self) -> float:
        return 1.0 - self.tpr

    def to_dict(self) -> dict:
        return _clean({"threshold": self.threshold, "tpr": self.tpr, "frr": self.frr,
                       "far": self.far, "far_spread": self.far_spread.to_dict(),
                       "frr_spread": self.frr_spread.to_dict(),
                       "fraction_far_above_2x": self.fraction_far_above_2x,
                       "mean_utility": self.mean_utility})

    @classmethod
    def of_recommended(cls, rt: "RecommendedThreshold") -> "OperatingPoint":
        """A result's own recommended threshold as an operating point."""
        return cls(rt.value, rt.tpr, rt.far, rt.far_spread, rt.frr_spread,
                   rt.fraction_far_above_2x, rt.mean_utility)


@dataclass(frozen=True)
class ClassSummary:
    """One evaluated class (or group) at a glance.

    ``best_threshold`` is the grid threshold maximising this class's own
    utility (ties to the smallest); ``opis_contribution`` its share of OPIS
    (the shares sum to OPIS); ``worst`` whether it is in the worst-epsilon
    set W; ``recall_at_1`` over its queries that have a positive (None if
    none do); ``low_evidence`` whether it has fewer query rows or positive
    pairs than ``opis_cli.options.LOW_EVIDENCE_QUERIES`` /
    ``LOW_EVIDENCE_POSITIVES`` (its FRR can take only a few values, so its
    rank is mostly chance).
    """

    label: str
    n: int
    queries: int
    positives: int
    negatives: int
    mean_utility: float
    far_at_threshold: float
    frr_at_threshold: float
    best_threshold: float
    opis_contribution: float
    worst: bool
    recall_at_1: float | None
    #: the group's own EER (SPEC 14; group entries with the verification view only)
    eer: float | None = None
    #: too few query rows or positive pairs to rank (see the class docstring)
    low_evidence: bool = False

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.eer is None:
            del d["eer"]
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict) -> "ClassSummary":
        return cls(str(d["label"]), int(d["n"]), int(d.get("queries", 0)), int(d["positives"]),
                   int(d["negatives"]), _num(d["mean_utility"]), _num(d["far_at_threshold"]),
                   _num(d["frr_at_threshold"]), _num(d.get("best_threshold")),
                   _num(d.get("opis_contribution")), bool(d.get("worst", False)),
                   d.get("recall_at_1"), _opt_num(d.get("eer")),
                   bool(d.get("low_evidence", False)))


@dataclass(frozen=True)
class Verification:
    """The verification view over all pairs of the evaluated classes (SPEC 14).

    ``eer_threshold`` / ``min_dcf_threshold`` are the smallest minimising
    distances, None where rejecting every pair attains the minimum (the
    smallest minimiser is then below every distance). ``fnmr_at_fmr`` maps
    ``"1e-01"`` ... ``"1e-06"`` to the FNMR there, for the levels with
    ``F * M >= 1``. ``det`` holds ``(FAR, FRR)`` points of the DET curve
    over all pairs (exact operating points, thinned for drawing),
    ``group_det`` ``(label, points)`` for the worst and best groups by EER
    (at most 8, worst first).
    """

    eer: float
    eer_threshold: float | None
    min_dcf: float
    min_dcf_threshold: float | None
    p_target: float
    c_miss: float
    c_fa: float
    fnmr_at_fmr: dict[str, float]
    det: tuple[tuple[float, float], ...] = ()
    group_det: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = ()

    def to_dict(self) -> dict:
        d = {"eer": self.eer, "eer_threshold": self.eer_threshold,
             "min_dcf": self.min_dcf, "min_dcf_threshold": self.min_dcf_threshold,
             "dcf": {"p_target": self.p_target, "c_miss": self.c_miss, "c_fa": self.c_fa},
             "fnmr_at_fmr": dict(self.fnmr_at_fmr)}
        if self.det:
            d["det"] = {"far_frr": [list(p) for p in self.det],
                        "groups": [{"label": lab, "far_frr": [list(p) for p in pts]}
                                   for lab, pts in self.group_det]}
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict) -> "Verification":
        c = d.get("dcf", {})
        det = d.get("det") or {}

        def points(v):
            return tuple((float(a), float(b)) for a, b in v)

        return cls(_num(d["eer"]), _opt_num(d.get("eer_threshold")), _num(d["min_dcf"]),
                   _opt_num(d.get("min_dcf_threshold")), _num(c.get("p_target")),
                   _num(c.get("c_miss")), _num(c.get("c_fa")),
                   {str(k): _num(v) for k, v in d.get("fnmr_at_fmr", {}).items()},
                   points(det.get("far_frr", [])),
                   tuple((str(g["label"]), points(g["far_frr"])) for g in det.get("groups", [])))


@dataclass(frozen=True)
class Curves:
    """Full per-row curves on the grid (not in the JSON; see ``--curves``).

    ``utility``, ``tp``, ``fp`` are (C, K) for the evaluated rows ``labels``;
    ``positives``/``negatives`` are (C,).
    """

    labels: tuple[str, ...]
    utility: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray


@dataclass(frozen=True)
class ConsistencyBlock:
    """OPIS and friends over classes (or, with ``--group-column``, groups)."""

    opis: float
    epsilon_opis: float
    mean_utility: tuple[float, ...]
    worst_mean_utility: tuple[float, ...]
    recommended_threshold: RecommendedThreshold
    evaluated: int
    excluded: int
    excluded_labels: tuple[str, ...]
    per_class: tuple[ClassSummary, ...]
    curves: Curves | None = field(default=None, compare=False, repr=False)
    #: FDR and GARBE over the grid (SPEC 13; None for results written before it existed)
    fairness: FairnessCurve | None = None

    def counts_dict(self) -> dict:
        return {"evaluated": self.evaluated, "excluded": self.excluded,
                "excluded_labels": list(self.excluded_labels)}

    def to_dict(self) -> dict:
        d = {
            "opis": self.opis, "epsilon_opis": self.epsilon_opis,
            "mean_utility": list(self.mean_utility),
            "worst_mean_utility": list(self.worst_mean_utility),
            "recommended_threshold": self.recommended_threshold.to_dict(),
            "classes": self.counts_dict(),
            "per_class": [c.to_dict() for c in self.per_class]}
        if self.fairness is not None:
            d["fairness"] = self.fairness.to_dict()
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict) -> "ConsistencyBlock":
        c = d["classes"]
        fair = d.get("fairness")
        return cls(_num(d["opis"]), _num(d["epsilon_opis"]),
                   tuple(_num(v) for v in d["mean_utility"]),
                   tuple(_num(v) for v in d.get("worst_mean_utility", [])),
                   RecommendedThreshold.from_dict(d["recommended_threshold"]),
                   int(c["evaluated"]), int(c["excluded"]), tuple(c.get("excluded_labels", [])),
                   tuple(ClassSummary.from_dict(x) for x in d["per_class"]),
                   fairness=FairnessCurve.from_dict(fair) if fair else None)


class RecallAtK(dict):
    """``recall_at_k``: a dict keyed ``"1"``, ``"2"``, ``"4"``, ``"8"`` (the JSON
    keys) that also answers integer keys, ``recall_at_k[1]`` (PML users' habit)."""

    @staticmethod
    def _key(k):
        return str(k) if isinstance(k, int) and not isinstance(k, bool) else k

    def __getitem__(self, k):
        return super().__getitem__(self._key(k))

    def __contains__(self, k):
        return super().__contains__(self._key(k))

    def get(self, k, default=None):
        return super().get(self._key(k), default)


@dataclass(frozen=True)
class Retrieval:
    """R@k (k = 1, 2, 4, 8), MAP@R and R-Precision over ``queries`` queries
    with a positive (SPEC 6).

    ``recall_at_k`` takes ``"1"`` or ``1`` as key; :meth:`recall_at` is the
    same as a method. ``r_precision`` is None for results written before it
    existed. PML's names: ``precision_at_1`` = ``recall_at(1)``,
    ``mean_average_precision_at_r`` = ``map_at_r``, ``r_precision``.
    """

    recall_at_k: dict[str, float]
    map_at_r: float
    queries: int
    r_precision: float | None = None

    def __post_init__(self):
        if not isinstance(self.recall_at_k, RecallAtK):
            object.__setattr__(self, "recall_at_k", RecallAtK(self.recall_at_k))

    def recall_at(self, k: int) -> float:
        """R@k for k in 1, 2, 4, 8 (``KeyError`` for another k)."""
        return self.recall_at_k[int(k)]

    def to_dict(self) -> dict:
        d = {"recall_at_k": dict(self.recall_at_k), "map_at_r": self.map_at_r}
        if self.r_precision is not None:
            d["r_precision"] = self.r_precision
        d["queries"] = self.queries
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict) -> "Retrieval":
        rp = d.get("r_precision")
        return cls({k: _num(v) for k, v in d["recall_at_k"].items()}, _num(d["map_at_r"]),
                   int(d["queries"]), None if "r_precision" not in d else _num(rp))


@dataclass(frozen=True)
class DistanceHistogram:
    """Counts of positive and negative pairs per distance bin.

    The pairs are those of ``queries`` evenly spaced queries of evaluated
    classes (all of them up to 1024): a picture of the distributions, not a
    quantity that enters any metric.
    """

    edges: tuple[float, ...]
    positive: tuple[int, ...]
    negative: tuple[int, ...]
    queries: int | None = None

    def to_dict(self) -> dict:
        return _clean({"edges": list(self.edges), "positive": list(self.positive),
                       "negative": list(self.negative), "queries": self.queries})

    @classmethod
    def from_dict(cls, d: dict) -> "DistanceHistogram":
        return cls(tuple(float(v) for v in d["edges"]), tuple(int(v) for v in d["positive"]),
                   tuple(int(v) for v in d["negative"]), d.get("queries"))


@dataclass(frozen=True)
class Estimate:
    """How an engine that samples pairs estimated the numbers (SPEC 15).

    ``intervals`` maps a quantity (``opis``, ``epsilon_opis``,
    ``calibration_range.lower`` / ``.upper``, ``recommended_threshold.value``,
    ``recall_at_k.1``, ``map_at_r``, ``r_precision``) to its ``confidence``
    interval ``(lo, hi)``.
    ``plug_in`` holds OPIS and epsilon-OPIS computed from the estimated
    curves as they are; the result's own ``opis`` and ``epsilon_opis`` are
    ``corrected`` for the bias that sampling noise adds (see
    ``opis_cli.metrics.estimate``). ``sampling_fraction`` is the share of the
    gallery drawn per query, ``retrieval_fraction`` that of the queries with
    a positive whose retrieval was computed.
    """

    method: str
    parameters: dict
    seed: int
    confidence: float
    intervals: dict[str, tuple[float, float]]
    plug_in: dict[str, float]
    corrected: dict[str, float]
    sampling_fraction: float
    retrieval_fraction: float

    def to_dict(self) -> dict:
        return _clean({"method": self.method, "parameters": self.parameters, "seed": self.seed,
                       "confidence": self.confidence,
                       "intervals": {k: list(v) for k, v in self.intervals.items()},
                       "plug_in": self.plug_in, "corrected": self.corrected,
                       "sampling_fraction": self.sampling_fraction,
                       "retrieval_fraction": self.retrieval_fraction})

    @classmethod
    def from_dict(cls, d: dict) -> "Estimate":
        return cls(d["method"], dict(d.get("parameters", {})), int(d["seed"]),
                   float(d["confidence"]),
                   {k: (_num(v[0]), _num(v[1])) for k, v in d["intervals"].items()},
                   {k: _num(v) for k, v in d.get("plug_in", {}).items()},
                   {k: _num(v) for k, v in d.get("corrected", {}).items()},
                   float(d.get("sampling_fraction", float("nan"))),
                   float(d.get("retrieval_fraction", float("nan"))))


@dataclass(frozen=True)
class EvaluationResult:
    """Everything ``opis evaluate`` measured (SPEC 8, ``schema_version`` 1).

    ``classes`` is the class-level block (its numbers are also exposed at the
    top level, e.g. ``result.opis``); ``groups`` the group-level block when
    groups were given.
    """

    n_samples: int
    dim: int
    metric: str
    utility: str
    beta: float
    epsilon: float
    calibration_range: CalibrationRange
    thresholds: tuple[float, ...]
    classes: ConsistencyBlock
    #: SPEC 6's retrieval numbers; None when not computed (``include=`` without
    #: "retrieval")
    retrieval: Retrieval | None
    distance_histogram: DistanceHistogram | None
    options: dict
    provenance: dict
    groups: ConsistencyBlock | None = None
    group_column: str | None = None
    schema_version: int = SCHEMA_VERSION
    #: SPEC 14; None when not asked for, or (``verification_asked``) when the
    #: engine cannot measure it (the knn engine: JSON ``null``)
    verification: Verification | None = None
    verification_asked: bool = False
    #: SPEC 15: how a sampling engine estimated the numbers (None: counted exactly)
    estimate: Estimate | None = None
    #: SPEC 16: where the threshold fails (``evaluate(..., diagnose=True)``); None: not asked
    diagnosis: Diagnosis | None = None
    #: can one threshold serve every class? (:mod:`opis_cli.verdict`; derived from the
    #: fields above when the result is made: a value passed in only lends its strict
    #: point to a result without curves, e.g. one read back from JSON)
    verdict: Verdict | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", verdict_of(self, stored=self.verdict))

    # -- notebook ----------------------------------------------------------
    def __repr__(self) -> str:
        """A few lines: the verdict, OPIS, the threshold and the classes."""
        from .render.notebook import short_repr

        return short_repr(self)

    def _repr_html_(self) -> str:
        """The verdict, the headline numbers and the worst classes (Jupyter)."""
        from .render.notebook import repr_html

        return repr_html(self)

    def plot_utility(self, ax=None, *, level: str = "class", curves: Curves | None = None):
        """Draw the per-class utility curves across the calibration range into ``ax``.

        The report's figure (the mean curve, the worst-epsilon mean, the
        recommended threshold, every class's curve or their density), drawn
        into the caller's matplotlib axes; matplotlib is imported only here.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Where to draw; a new figure (``pyplot``) when None.
        level : ``"class"`` or ``"group"`` (with a group column).
        curves : the per-row curves; default: the result's own (a result read
            back from JSON has none: only the mean curves are drawn).

        Returns
        -------
        matplotlib Axes

        Examples
        --------
        >>> import matplotlib.pyplot as plt
        >>> fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
        >>> result.plot_utility(ax=left)          # doctest: +SKIP
        >>> result.plot_far_frr(ax=right)         # doctest: +SKIP
        """
        from .render.notebook import plot_utility

        return plot_utility(self, ax, level=level, curves=curves)

    def plot_far_frr(self, ax=None, *, level: str = "class"):
        """Draw every class's FAR and FRR at the recommended threshold into ``ax``.

        One point per class (a density above 2,000), the global operating
        point as a star and twice the global FAR as a dotted line.

        Parameters
        ----------
        ax : matplotlib Axes, optional (a new figure when None)
        level : ``"class"`` or ``"group"``

        Returns
        -------
        matplotlib Axes

        Examples
        --------
        >>> ax = result.plot_far_frr()            # doctest: +SKIP
        >>> ax.figure.savefig("far_frr.png")      # doctest: +SKIP
        """
        from .render.notebook import plot_far_frr

        return plot_far_frr(self, ax, level=level)

    def plot_det(self, ax=None):
        """Draw the DET curve of the verification view (SPEC 14) into ``ax``.

        Needs a result evaluated with ``verification=True`` (raises ValueError
        otherwise).

        Parameters
        ----------
        ax : matplotlib Axes, optional (a new figure when None)

        Returns
        -------
        matplotlib Axes

        Examples
        --------
        >>> r = opis_cli.evaluate(X, y, verification=True)   # doctest: +SKIP
        >>> r.plot_det()                                      # doctest: +SKIP
        """
        from .render.notebook import plot_det

        return plot_det(self, ax)

    # -- headline numbers ------------------------------------------------
    @property
    def opis(self) -> float:
        return self.classes.opis

    @property
    def epsilon_opis(self) -> float:
        return self.classes.epsilon_opis

    @property
    def recommended_threshold(self) -> RecommendedThreshold:
        return self.classes.recommended_threshold

    @property
    def curves(self) -> Curves | None:
        return self.classes.curves

    @property
    def min_class_rows(self) -> int:
        """SPEC 3's ``--min-class-rows`` of this result (2 unless set)."""
        return int(self.options.get("min_class_rows", 2)) if isinstance(self.options, dict) \
            else 2

    def headline(self) -> dict[str, float]:
        """The flat metrics gates and comparisons use, by JSON key name."""
        rt = self.recommended_threshold
        ret = self.retrieval or Retrieval({}, float("nan"), 0)
        return {
            "opis": self.opis, "epsilon_opis": self.epsilon_opis,
            "recall_at_1": ret.recall_at_k.get("1", float("nan")),
            "recall_at_2": ret.recall_at_k.get("2", float("nan")),
            "recall_at_4": ret.recall_at_k.get("4", float("nan")),
            "recall_at_8": ret.recall_at_k.get("8", float("nan")),
            "map_at_r": ret.map_at_r,
            "r_precision": _num(ret.r_precision),
            "threshold": rt.value, "mean_utility": rt.mean_utility,
            "worst_mean_utility": rt.worst_mean_utility, "tpr": rt.tpr, "far": rt.far,
            "frr": rt.frr, "fraction_far_above_2x": rt.fraction_far_above_2x,
        }

    def fairness_metrics(self) -> dict[str, float]:
        """SPEC 13 of the class block as flat gate metrics (NaN where null or absent):
        at the recommended threshold ``far_ratio``, ``frr_ratio``, ``fdr``, ``garbe``,
        ``inequity_rate``; over the range ``fdr_mean``, ``garbe_mean``."""
        f = self.recommended_threshold.fairness
        c = self.classes.fairness
        nan = float("nan")

        def v(x):
            return nan if x is None else float(x)

        return {
            "far_ratio": v(f and f.far_ratio), "frr_ratio": v(f and f.frr_ratio),
            "fdr": v(f and f.fdr), "garbe": v(f and f.garbe),
            "inequity_rate": v(f and f.inequity_rate),
            "fdr_mean": v(c and c.fdr_mean), "garbe_mean": v(c and c.garbe_mean),
        }

    def verification_metrics(self) -> dict[str, float]:
        """SPEC 14 as flat gate metrics (NaN where absent): ``eer``, ``min_dcf``
        and ``fnmr_at_fmr_1e-03``-style names for the levels present."""
        v = self.verification
        nan = float("nan")
        out = {"eer": nan if v is None else v.eer, "min_dcf": nan if v is None else v.min_dcf}
        for key in ("1e-01", "1e-02", "1e-03", "1e-04", "1e-05", "1e-06"):
            out[f"fnmr_at_fmr_{key}"] = nan if v is None else v.fnmr_at_fmr.get(key, nan)
        return out

    def diagnosis_metrics(self) -> dict[str, float]:
        """SPEC 16 as flat gate metrics (NaN without ``--diagnose``):
        ``overlapping_pairs``, ``suspect_rows``, ``suspect_fraction``,
        ``conflicting_duplicate_groups``."""
        if self.diagnosis is None:
            return dict.fromkeys(("overlapping_pairs", "suspect_rows", "suspect_fraction",
                                  "conflicting_duplicate_groups"), float("nan"))
        return self.diagnosis.gate_metrics()

    def gate_metrics(self) -> dict[str, float]:
        """What ``--max/--min`` rules read: :meth:`headline`, :meth:`fairness_metrics`,
        :meth:`verification_metrics` and :meth:`diagnosis_metrics`."""
        return {**self.headline(), **self.fairness_metrics(), **self.verification_metrics(),
                **self.diagnosis_metrics()}

    # -- JSON ----------------------------------------------------------------
    def to_dict(self) -> dict:
        cb = self.classes.to_dict()
        d = {
            "schema_version": self.schema_version,
            "verdict": self.verdict.to_dict(),
            "n_samples": self.n_samples, "dim": self.dim, "metric": self.metric,
            "utility": self.utility, "beta": self.beta, "epsilon": self.epsilon,
            "opis": cb["opis"], "epsilon_opis": cb["epsilon_opis"],
            "calibration_range": self.calibration_range.to_dict(),
            "thresholds": list(self.thresholds),
            "mean_utility": cb["mean_utility"],
            "worst_mean_utility": cb["worst_mean_utility"],
            "recommended_threshold": cb["recommended_threshold"],
            **({"fairness": cb["fairness"]} if "fairness" in cb else {}),
            **({"verification": self.verification.to_dict() if self.verification else None}
               if self.verification is not None or self.verification_asked else {}),
            "retrieval": None if self.retrieval is None else self.retrieval.to_dict(),
            "classes": cb["classes"],
            "per_class": cb["per_class"],
        }
        if self.groups is not None:
            g = self.groups.to_dict()
            g["column"] = self.group_column
            d["groups"] = g
        if self.distance_histogram is not None:
            d["distance_histogram"] = self.distance_histogram.to_dict()
        if self.estimate is not None:
            d["estimate"] = self.estimate.to_dict()
        if self.diagnosis is not None:
            d["diagnosis"] = self.diagnosis.to_dict()
        d["options"] = self.options
        d["provenance"] = self.provenance
        return _clean(d)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "EvaluationResult":
        """Read a result document back (curves are not part of it)."""
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {d.get('schema_version')!r} is not supported "
                f"(this opis reads {SCHEMA_VERSION})")
        block = ConsistencyBlock.from_dict(d)
        groups = ConsistencyBlock.from_dict(d["groups"]) if d.get("groups") else None
        hist = d.get("distance_histogram")
        return cls(
            n_samples=int(d["n_samples"]), dim=int(d["dim"]), metric=d["metric"],
            utility=d["utility"], beta=float(d["beta"]), epsilon=float(d["epsilon"]),
            calibration_range=CalibrationRange.from_dict(d["calibration_range"]),
            thresholds=tuple(float(v) for v in d["thresholds"]), classes=block,
            retrieval=Retrieval.from_dict(d["retrieval"]) if d.get("retrieval") else None,
            distance_histogram=DistanceHistogram.from_dict(hist) if hist else None,
            options=d.get("options", {}), provenance=d.get("provenance", {}),
            groups=groups, group_column=(d.get("groups") or {}).get("column"),
            verification=Verification.from_dict(d["verification"]) if d.get("verification")
            else None, verification_asked="verification" in d,
            estimate=Estimate.from_dict(d["estimate"]) if d.get("estimate") else None,
            diagnosis=Diagnosis.from_dict(d["diagnosis"]) if d.get("diagnosis") else None,
            verdict=Verdict.from_dict(d["verdict"]) if d.get("verdict") else None)

    @classmethod
    def from_json(cls, text: str) -> "EvaluationResult":
        return cls.from_dict(json.loads(text))

    def per_class_frame(self, level: str = "class"):
        """The per-class (or per-group, ``level="group"``) summaries as a pandas
        DataFrame, worst first: handy in notebooks and training loops."""
        import pandas as pd

        block = self.classes if level == "class" else self.groups
        if block is None:
            raise ValueError(f"this result has no {level} block")
        return pd.DataFrame([c.to_dict() for c in block.per_class])

    def curves_frame(self):
        """``curves_table()`` as a pandas DataFrame (needs in-process curves)."""
        import pandas as pd

        return pd.DataFrame(self.curves_table())

    def curves_table(self) -> dict[str, np.ndarray]:
        """The per-row curves as columns, one row per (level, label, threshold).

        The layout of the ``--curves`` table (:data:`CURVES_COLUMNS`, documented
        in :mod:`opis_cli.io.curves`, which writes, reads and checks it):
        class rows first, then group rows, each label's K thresholds together;
        each block is followed by its K block-level rows (level
        ``class-fairness``/``group-fairness``, label ``""``: the mean utility,
        the counts summed over the block, the global TPR and FAR, and FDR and
        GARBE of SPEC 13), the only rows whose ``fdr``/``garbe`` are not NaN.
        Blocks without curves (a result read from JSON) contribute no rows.
        """
        cols: dict[str, list] = {k: [] for k in CURVES_COLUMNS}
        th = np.asarray(self.thresholds)
        K = len(th)
        for level, blk in (("class", self.classes), ("group", self.groups)):
            if blk is None or blk.curves is None:
                continue
            cv = blk.curves
            C = len(cv.labels)
            cols["fdr"].append(np.full(C * K, np.nan))
            cols["garbe"].append(np.full(C * K, np.nan))
            cols["level"].append(np.full(C * K, level, dtype=object))
            cols["label"].append(np.repeat(np.array(cv.labels, dtype=object), K))
            cols["threshold_index"].append(np.tile(np.arange(K), C))
            cols["threshold"].append(np.tile(th, C))
            cols["utility"].append(cv.utility.ravel())
            cols["tp"].append(cv.tp.ravel())
            cols["fp"].append(cv.fp.ravel())
            cols["positives"].append(np.repeat(cv.positives, K))
            cols["negatives"].append(np.repeat(cv.negatives, K))
            cols["tpr"].append((cv.tp / cv.positives[:, None]).ravel())
            cols["far"].append((cv.fp / cv.negatives[:, None]).ravel())
            if blk.fairness is not None:
                self._fairness_rows(cols, FAIRNESS_LEVELS[level], blk, th)
        return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}

    @staticmethod
    def _fairness_rows(cols: dict[str, list], level: str, blk: "ConsistencyBlock",
                       th: np.ndarray) -> None:
        """Append the K block-level rows of ``blk`` (see :meth:`curves_table`)."""
        cv, fc, K = blk.curves, blk.fairness, len(th)
        tp, fp = cv.tp.sum(axis=0), cv.fp.sum(axis=0)
        pos, neg = cv.positives.sum(), cv.negatives.sum()
        cols["level"].append(np.full(K, level, dtype=object))
        cols["label"].append(np.full(K, "", dtype=object))
        cols["threshold_index"].append(np.arange(K))
        cols["threshold"].append(th)
        cols["utility"].append(np.asarray(blk.mean_utility, np.float64))
        cols["tp"].append(tp)
        cols["fp"].append(fp)
        cols["positives"].append(np.full(K, pos))
        cols["negatives"].append(np.full(K, neg))
        cols["tpr"].append(tp / pos)
        cols["far"].append(fp / neg)
        cols["fdr"].append(np.asarray(fc.fdr, np.float64))
        cols["garbe"].append(np.full(K, np.nan) if fc.garbe is None
                             else np.asarray(fc.garbe, np.float64))
