"""Every option's choices, default and constraint, declared once.

The Python API (:func:`opis_cli.evaluate`), the gate and the ``opis``
command line read their choice lists and defaults from here, and check a
value with :func:`check` (or :func:`validate` for several), so that one
constraint gives one message wherever it is checked::

    --beta must be a positive number, got 0
    --index 'annoy': expected one of hnsw, ivf, flat

Messages name the command-line option (the API's parameters carry the same
names with ``_`` for ``-``): a number out of range reads
``OPTION must be CONSTRAINT, got VALUE``, a value outside a choice list
``OPTION 'VALUE': expected one of A, B``. Modelled on scikit-learn's
``utils/_param_validation.py``, reduced to what opis needs.

This module imports nothing heavy (no numpy), so that the engines, the
metrics and the CLI can all import it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

from .errors import ConfigError, InputError

# ---------------------------------------------------------------- choices

#: ``--metric``: cosine distance ``1 - cos(a, b)`` or Euclidean distance.
METRICS = ("cosine", "l2")
#: ``--utility``: F-beta of TPR and TNR, or retrieval F-beta of precision and recall.
UTILITIES = ("tpr-tnr", "precision-recall")
#: ``--threshold-policy`` names; ``far:F`` (a FAR bound) is the third form.
POLICIES = ("max-mean-utility", "max-worst-utility")
POLICY_FORMS = POLICIES + ("far:F",)
#: ``--engine``: the names of ``opis_cli.engines.registry.ENGINES`` (declared
#: there with their help, options and capabilities; a test keeps the two equal).
ENGINES = ("exact", "knn", "dask", "sampled", "reference")
#: ``--index`` of the knn engine (FAISS).
INDEXES = ("hnsw", "ivf", "flat")

# ---------------------------------------------------------------- defaults

EMBEDDING_COLUMN = "embedding"
LABEL_COLUMN = "label"
METRIC = "cosine"
UTILITY = "tpr-tnr"
BETA = 1.0
EPSILON = 0.1
FAR_RANGE = (0.01, 0.1)
NUM_THRESHOLDS = 101
THRESHOLD_POLICY = "max-mean-utility"
#: ``--fairness-alpha``: weight of FAR (against FRR) in FDR, GARBE, inequity rate (SPEC 13)
FAIRNESS_ALPHA = 0.5
#: ``--dcf P_TARGET:C_MISS:C_FA``: the detection cost of minDCF (SPEC 14)
DCF = (0.01, 1.0, 1.0)
#: ``--verification``: the verification view (SPEC 14) costs a pass; off unless asked
VERIFICATION = False
ENGINE = "exact"
K = 100
INDEX = "hnsw"
#: ``--negatives-per-query`` and ``--retrieval-queries`` of ``--engine sampled``
#: (chosen by measurement: docs/concepts/estimates.md)
NEGATIVES_PER_QUERY = 1000
RETRIEVAL_QUERIES = 1000
#: ``--block-mib``: memory for the inner-product tiles held at once.
BLOCK_MIB = 512
#: ``--worker-mib``: memory budget of one Dask worker that reads its own shards
WORKER_MIB = 2048
BLOCK_BYTES = BLOCK_MIB * 2**20
#: bootstrap resamples when none are given (gate rules computed from curves)
RESAMPLES = 1000
CONFIDENCE = 0.95

# ---------------------------------------------------------------- the verdict
# (opis_cli.verdict; the rule is stated in docs/concepts/verdict.md)

#: a class "sees too many false accepts" when its FAR exceeds this many times
#: the global FAR (SPEC 6's ``fraction_far_above_2x``)
VERDICT_FAR_FACTOR = 2.0
#: a class "rejects too many genuine pairs" when its FRR exceeds this
VERDICT_FRR_LEVEL = 0.5
#: "yes" when both shares of classes (FAR above the factor, FRR above the level)
#: are at most this
VERDICT_YES_SHARE = 0.05
#: "no" when either share exceeds this; "partly" in between
VERDICT_NO_SHARE = 0.10
#: the strict operating point shown beside a permissive policy (``far:F``)
VERDICT_STRICT_FAR = 0.01
#: how the verdict's widening hint extends a FAR range ``A:B``: ``A:min(1, B * UPPER)``
#: at the upper end, ``A / LOWER:B`` at the lower end (an explicit distance range
#: is extended by its own width)
VERDICT_WIDEN_UPPER = 3.0
VERDICT_WIDEN_LOWER = 10.0
SEED = 0
#: ``opis compare --top``: classes shown as most worse / most better
TOP = 5
#: ``opis calibrate``: class-disjoint folds, and the rule that picks the threshold on
#: the calibration side (SPEC 12)
FOLDS = 5
TARGET = "far:0.01"
#: ``evaluate(include=...)``: the parts of a result to compute. The consistency
#: numbers (OPIS, the threshold, per class) are always computed; "retrieval"
#: ranks every query's neighbours (R@k, MAP@R, R-Precision), "verification" is
#: SPEC 14's view (one more pass). Without ``include``: consistency and retrieval,
#: verification as ``verification=`` says.
INCLUDE = ("consistency", "retrieval", "verification")
#: ``--min-class-rows``: a class (or group) with fewer rows is excluded (SPEC 3);
#: 2 adds nothing to "at least one positive and one negative pair"
MIN_CLASS_ROWS = 2
#: the low-evidence flag of a per-class (or per-group) summary: fewer query rows
#: than LOW_EVIDENCE_QUERIES, or fewer positive pairs than LOW_EVIDENCE_POSITIVES.
#: Below them FRR moves in steps of more than 10% (a 3-row class: 0, 1/6, ... of
#: 6 pairs, mirrored pairs moving together) and FAR rests on a handful of rows,
#: so the class's rank says more about chance than about the model.
LOW_EVIDENCE_QUERIES = 5
LOW_EVIDENCE_POSITIVES = 10


def low_evidence(queries: int, positives: int) -> bool:
    """Whether a class (or group) with ``queries`` query rows and ``positives``
    positive pairs is flagged low-evidence (see :data:`LOW_EVIDENCE_QUERIES`)."""
    return queries < LOW_EVIDENCE_QUERIES or positives < LOW_EVIDENCE_POSITIVES


def range_text(pair: tuple[float, float]) -> str:
    """``(0.01, 0.1)`` -> ``"0.01:0.1"`` (how ranges are written on the command line)."""
    return f"{pair[0]:g}:{pair[1]:g}"


# ---------------------------------------------------------------- constraints


@dataclass(frozen=True)
class Interval:
    """A finite real number between ``low`` and ``high`` (``None``: unbounded).

    ``closed`` says which ends belong to the interval: ``"left"``,
    ``"right"``, ``"both"`` or ``"neither"``; ``text`` completes the message
    ``OPTION must be TEXT``; ``integer`` asks for a whole number.
    """

    low: float | None
    high: float | None
    closed: str
    text: str
    integer: bool = False

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, Real):
            return False
        v = float(value)
        if not math.isfinite(v):
            return False
        if self.integer and not v.is_integer():
            return False
        if self.low is not None and (v < self.low or (v == self.low and self.closed
                                                      not in ("left", "both"))):
            return False
        if self.high is not None and (v > self.high or (v == self.high and self.closed
                                                        not in ("right", "both"))):
            return False
        return True


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def holds(self, value: Any) -> bool:
        return value in self.values


@dataclass(frozen=True)
class Param:
    """One option: its command-line name, default and constraint.

    ``optional``: ``None`` is accepted (the option was not given; the
    default then applies where it is used).
    """

    option: str
    default: Any
    constraint: Interval | Choice
    optional: bool = False


#: Every checked option, by its Python parameter name.
PARAMS: Mapping[str, Param] = {
    "metric": Param("--metric", METRIC, Choice(METRICS)),
    "utility": Param("--utility", UTILITY, Choice(UTILITIES)),
    "engine": Param("--engine", ENGINE, Choice(ENGINES)),
    "index": Param("--index", INDEX, Choice(INDEXES)),
    "beta": Param("--beta", BETA, Interval(0, None, "neither", "a positive number")),
    "epsilon": Param("--epsilon", EPSILON, Interval(0, 1, "right", "in (0, 1]")),
    "num_thresholds": Param("--num-thresholds", NUM_THRESHOLDS,
                            Interval(2, None, "left", "at least 2")),
    "block_mib": Param("--block-mib", BLOCK_MIB,
                       Interval(1, None, "left", "a positive number of MiB")),
    "k": Param("--k", K, Interval(1, None, "left", "at least 1")),
    "negatives_per_query": Param("--negatives-per-query", NEGATIVES_PER_QUERY,
                                 Interval(10, None, "left", "at least 10 (ten groups of draws)")),
    "retrieval_queries": Param("--retrieval-queries", RETRIEVAL_QUERIES,
                               Interval(2, None, "left", "at least 2")),
    "seed": Param("--seed", SEED, Interval(0, None, "left", "a non-negative integer")),
    "worker_mib": Param("--worker-mib", WORKER_MIB,
                        Interval(64, None, "left", "at least 64 (MiB)")),
    "workers": Param("--workers", None, Interval(1, None, "left", "at least 1"), optional=True),
    "bootstrap": Param("--bootstrap", None, Interval(2, None, "left", "at least 2 resamples"),
                       optional=True),
    "confidence": Param("--confidence", CONFIDENCE,
                        Interval(0, 1, "neither", "between 0 and 1 (exclusive)"), optional=True),
    "top": Param("--top", TOP, Interval(0, None, "left", ">= 0")),
    "fairness_alpha": Param("--fairness-alpha", FAIRNESS_ALPHA,
                            Interval(0, 1, "both", "in [0, 1]")),
    "dcf_p_target": Param("--dcf P_TARGET", DCF[0], Interval(0, 1, "neither", "in (0, 1)")),
    "dcf_c_miss": Param("--dcf C_MISS", DCF[1], Interval(0, None, "neither",
                                                          "a positive number")),
    "dcf_c_fa": Param("--dcf C_FA", DCF[2], Interval(0, None, "neither", "a positive number")),
    "folds": Param("--folds", FOLDS, Interval(2, None, "left", "at least 2")),
    "min_class_rows": Param("--min-class-rows", MIN_CLASS_ROWS,
                            Interval(2, None, "left", "an integer >= 2", integer=True)),
}


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (int, Real)) and not isinstance(value, bool):
        return str(value)
    return repr(value)


def check(name: str, value: Any, *, where: str | None = None, optional: bool | None = None
          ) -> Any:
    """``value`` if it satisfies the constraint of option ``name``, else ``ConfigError``.

    ``where`` replaces the option name at the start of the message (e.g.
    ``"opis.toml: confidence"`` for a value read from a config file).
    ``None`` passes for optional options (``--bootstrap``, ``--confidence``)
    unless ``optional=False``.
    """
    p = PARAMS[name]
    if value is None and (p.optional if optional is None else optional):
        return value
    if p.constraint.holds(value):
        return value
    who = where or p.option
    if isinstance(p.constraint, Choice):
        raise ConfigError(f"{who} {value!r}: expected one of {', '.join(p.constraint.values)}")
    raise ConfigError(f"{who} must be {p.constraint.text}, got {_shown(value)}")


def validate(**values: Any) -> None:
    """:func:`check` every ``name=value`` pair, in the order given."""
    for name, value in values.items():
        check(name, value)


def check_confidence(confidence: Any, *, where: str | None = None) -> float:
    """The interval level as a float in (0, 1)."""
    return float(check("confidence", confidence, where=where, optional=False))


def parse_range(value: Any, option: str) -> tuple[float, float] | None:
    """``"LO:HI"`` (or a pair) -> ``(lo, hi)`` floats; ``None`` stays ``None``.

    Only the form is checked here; the engine checks the bounds once it
    knows the distances (``--far-range`` needs ``0 < A < B <= 1``, a
    calibration range finite bounds with ``LO < HI``).
    """
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 2:
            raise ConfigError(f"{option} {value!r}: expected LO:HI, e.g. 0.01:0.1")
        try:
            return float(parts[0]), float(parts[1])
        except ValueError:
            raise ConfigError(f"{option} {value!r}: LO and HI must be numbers") from None
    lo, hi = value
    return float(lo), float(hi)


def parse_dcf(value: Any) -> tuple[float, float, float]:
    """``"P_TARGET:C_MISS:C_FA"`` (or a triple) -> three floats, each checked::

        --dcf '0.01:1': expected P_TARGET:C_MISS:C_FA, e.g. 0.01:1:1
        --dcf P_TARGET must be in (0, 1), got 1.5
    """
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 3:
            raise ConfigError(f"--dcf {value!r}: expected P_TARGET:C_MISS:C_FA, e.g. 0.01:1:1")
        try:
            value = tuple(float(v) for v in parts)
        except ValueError:
            raise ConfigError(f"--dcf {value!r}: P_TARGET, C_MISS and C_FA must be numbers"
                              ) from None
    try:
        p, c_miss, c_fa = value
    except (TypeError, ValueError):
        raise ConfigError(f"--dcf {value!r}: expected P_TARGET:C_MISS:C_FA, e.g. 0.01:1:1"
                          ) from None
    validate(dcf_p_target=p, dcf_c_miss=c_miss, dcf_c_fa=c_fa)
    return float(p), float(c_miss), float(c_fa)


def check_far_range(far: tuple[float, float] | None) -> tuple[float, float] | None:
    """``--far-range A:B`` must have ``0 < A < B <= 1``, also when an explicit
    ``--calibration-range`` makes it unused (a typo should not pass silently)."""
    if far is not None:
        a, b = far
        if 0.0 < b < a <= 1.0:
            raise ConfigError(f"--far-range {a:g}:{b:g}: the lower bound must be below the upper "
                              f"(did you mean {b:g}:{a:g}?)")
        if not (0.0 < a < b <= 1.0):
            raise ConfigError(f"--far-range {a:g}:{b:g} is degenerate: need 0 < A < B <= 1 "
                              "(global false accept rates)")
    return far


def check_report_folder(path: str | os.PathLike, option: str | None = None) -> None:
    """Fail when ``path`` exists but is not a folder (reports are folders).

    ``option`` (``"--report"``) starts the message when the path came from
    the command line.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        lead = f"{option} {path}" if option else f"{path}"
        raise InputError(f"{lead}: exists and is not a folder; the report needs a folder to "
                         "write its page and PNG figures into")
