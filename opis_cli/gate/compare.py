"""Comparison of two results: headline deltas and per-class changes. Pure, no I/O.

Reads two ``EvaluationResult`` objects (the single source of every number;
nothing is recomputed here) and, optionally, their bootstraps for intervals
of the OPIS and epsilon-OPIS changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from ..metrics.bootstrap import BOOTSTRAP_METRICS, Bootstrap, DifferenceInterval, difference_interval
from ..render.format import interval, num, pct
from ..results import OperatingPoint
from ..verdict import QuestionVerdict, share_text
from .rules import DIRECTION, json_number

#: the question the verdict of a comparison answers
COMPARE_QUESTION = "Which model is more consistent?"

#: How the embeddings sides were measured: each on its own FAR-defined
#: calibration range (default), or the candidate on the baseline's thresholds.
MODES = ("own-range", "same-thresholds")

_SAME = 1e-12
#: headline rates that trade off along the threshold: between two results whose
#: recommended thresholds differ, better/worse only when one (FAR, FRR) point dominates
AT_OWN_THRESHOLD = ("tpr", "far", "frr")


@dataclass(frozen=True)
class MetricChange:
    """One headline metric on both sides.

    ``relative`` is ``change / |baseline|`` (None when the baseline is 0 or
    missing); ``verdict`` is ``"better"``, ``"worse"``, ``"same"`` or ``""``
    (no direction, e.g. the threshold itself, or a missing value).
    """

    name: str
    baseline: float
    candidate: float
    change: float
    relative: float | None
    verdict: str

    def to_dict(self) -> dict:
        return {"metric": self.name, "baseline": json_number(self.baseline),
                "candidate": json_number(self.candidate), "change": json_number(self.change),
                "relative_change": json_number(self.relative), "verdict": self.verdict}


@dataclass(frozen=True)
class ClassChange:
    """One class present on both sides (matched by label).

    Mean utility is the class's range-average utility; FAR and FRR are at
    each side's own recommended threshold.
    """

    label: str
    baseline_mean_utility: float
    candidate_mean_utility: float
    baseline_far: float
    candidate_far: float
    baseline_frr: float
    candidate_frr: float

    @property
    def change(self) -> float:
        return self.candidate_mean_utility - self.baseline_mean_utility

    def to_dict(self) -> dict:
        return {"label": self.label,
                "baseline_mean_utility": json_number(self.baseline_mean_utility),
                "candidate_mean_utility": json_number(self.candidate_mean_utility),
                "mean_utility_change": json_number(self.change),
                "baseline_far_at_threshold": json_number(self.baseline_far),
                "candidate_far_at_threshold": json_number(self.candidate_far),
                "baseline_frr_at_threshold": json_number(self.baseline_frr),
                "candidate_frr_at_threshold": json_number(self.candidate_frr)}


@dataclass(frozen=True)
class Deployment:
    """Both models at one deployed distance threshold (the deployment view).

    ``source`` says where ``threshold`` came from (``"baseline recommended"``
    or ``"--threshold"``); ``baseline`` / ``candidate`` are the operating
    points there, None when a side cannot be measured at that threshold
    (``missing`` then says why, in one line).
    """

    threshold: float
    source: str
    baseline: OperatingPoint | None
    candidate: OperatingPoint | None
    missing: str | None = None

    @property
    def available(self) -> bool:
        return self.baseline is not None and self.candidate is not None

    @property
    def far_ratio(self) -> float:
        """Candidate FAR / baseline FAR at the threshold (inf when only the baseline's is 0)."""
        if not self.available:
            return math.nan
        b, c = self.baseline.far, self.candidate.far
        if b == 0:
            return 1.0 if c == 0 else math.inf
        return c / b

    def metrics(self, side: str) -> dict[str, float]:
        """The gate metrics of one side (``"baseline"`` or ``"candidate"``):
        ``deployed_far``, ``deployed_tpr``, ``deployed_frr``, ``deployed_far_ratio``
        (the baseline's ratio is 1)."""
        op = getattr(self, side)
        if op is None or not self.available:
            return {}
        return {"deployed_far": op.far, "deployed_tpr": op.tpr, "deployed_frr": op.frr,
                "deployed_far_ratio": 1.0 if side == "baseline" else self.far_ratio}

    def sentence(self) -> str | None:
        """One line when the candidate's FAR at the threshold differs from the
        baseline's by more than 2x (either way)."""
        if not self.available:
            return None
        b, c = self.baseline.far, self.candidate.far
        lo, hi = sorted((b, c))
        if not hi > 2 * lo:
            return None
        verb = "raises" if c > b else "lowers"
        return (f"keeping threshold {num(self.threshold, '.4g')} with the candidate {verb} the "
                f"global FAR from {pct(b, '.3g')} to {pct(c, '.3g')} (TPR {pct(self.baseline.tpr, '.3g')}"
                f" -> {pct(self.candidate.tpr, '.3g')}); re-tune the threshold when swapping "
                "the model")

    def to_dict(self) -> dict:
        return {"threshold": json_number(self.threshold), "source": self.source,
                "baseline": self.baseline.to_dict() if self.baseline else None,
                "candidate": self.candidate.to_dict() if self.candidate else None,
                "far_ratio": json_number(self.far_ratio), "missing": self.missing}


@dataclass(frozen=True)
class DiagnosisChange:
    """SPEC 16 on both sides (both results evaluated with ``--diagnose``).

    Overlapping pairs ``(a, b)`` (labels in string order) that appear in the
    candidate's listed pairs and not in the baseline's (``overlap_new``), and
    the reverse (``overlap_gone``); the lists hold the (at most) 20 most
    overlapping pairs, so ``overlap_complete`` says whether both lists were
    whole (each side's count <= 20). Suspect rows (input row numbers, whole
    lists) that appear or disappear.
    """

    baseline_threshold: float
    candidate_threshold: float
    baseline_overlapping: int
    candidate_overlapping: int
    overlap_new: tuple[tuple[str, str], ...]
    overlap_gone: tuple[tuple[str, str], ...]
    overlap_complete: bool
    baseline_suspects: int
    candidate_suspects: int
    suspects_new: tuple[int, ...]
    suspects_gone: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"baseline_threshold": json_number(self.baseline_threshold),
                "candidate_threshold": json_number(self.candidate_threshold),
                "overlapping_pairs": {"baseline": self.baseline_overlapping,
                                      "candidate": self.candidate_overlapping,
                                      "new": [list(p) for p in self.overlap_new],
                                      "gone": [list(p) for p in self.overlap_gone],
                                      "complete": self.overlap_complete},
                "suspects": {"baseline": self.baseline_suspects,
                             "candidate": self.candidate_suspects,
                             "new": list(self.suspects_new), "gone": list(self.suspects_gone)}}


def diagnosis_change(base, cand) -> DiagnosisChange | None:
    """:class:`DiagnosisChange` of two results, None unless both have a diagnosis."""
    bd, cd = getattr(base, "diagnosis", None), getattr(cand, "diagnosis", None)
    if bd is None or cd is None:
        return None
    bo = [(p.a, p.b) for p in bd.overlap_top]
    co = [(p.a, p.b) for p in cd.overlap_top]
    bs = {s.row for s in bd.suspects}
    cs = {s.row for s in cd.suspects}
    return DiagnosisChange(
        bd.threshold, cd.threshold, bd.overlap_count, cd.overlap_count,
        tuple(p for p in co if p not in set(bo)), tuple(p for p in bo if p not in set(co)),
        bd.overlap_count <= len(bo) and cd.overlap_count <= len(co), len(bs), len(cs),
        tuple(sorted(cs - bs)), tuple(sorted(bs - cs)))


@dataclass(frozen=True)
class Comparison:
    """Everything ``opis compare`` reports.

    ``classes`` holds the common classes sorted by mean-utility change
    ascending (the most worsened first; ties by label).
    """

    baseline: str
    candidate: str
    metrics: tuple[MetricChange, ...]
    classes: tuple[ClassChange, ...]
    only_baseline: tuple[str, ...]
    only_candidate: tuple[str, ...]
    same_thresholds: bool
    warnings: tuple[str, ...]
    intervals: tuple[DifferenceInterval, ...] = ()
    mode: str = "own-range"
    deployment: Deployment | None = None
    disagreement: str | None = None
    #: SPEC 16 on both sides (None unless both were evaluated with --diagnose)
    diagnosis: DiagnosisChange | None = None
    #: which model is more consistent, in words (:func:`comparison_verdict`)
    verdict: QuestionVerdict | None = None

    def metric(self, name: str) -> MetricChange:
        return next(m for m in self.metrics if m.name == name)

    def most_worse(self, n: int) -> list[ClassChange]:
        return [c for c in self.classes if c.change < 0][:n]

    def most_better(self, n: int) -> list[ClassChange]:
        return [c for c in reversed(self.classes) if c.change > 0][:n]

    def interval(self, name: str) -> DifferenceInterval | None:
        return next((i for i in self.intervals if i.metric == name), None)

    def to_dict(self) -> dict:
        d = self._to_dict()
        if self.diagnosis is not None:
            d["diagnosis"] = self.diagnosis.to_dict()
        return d

    def _to_dict(self) -> dict:
        return {**({"verdict": self.verdict.to_dict()} if self.verdict is not None else {}),
                "baseline": self.baseline, "candidate": self.candidate, "mode": self.mode,
                "same_thresholds": self.same_thresholds, "warnings": list(self.warnings),
                "headline_vs_classes": self.disagreement,
                "deployment": self.deployment.to_dict() if self.deployment else None,
                "metrics": [m.to_dict() for m in self.metrics],
                "intervals": [i.to_dict() for i in self.intervals],
                "classes": {"common": len(self.classes),
                            "only_baseline": list(self.only_baseline),
                            "only_candidate": list(self.only_candidate),
                            "changes": [c.to_dict() for c in self.classes]}}


def _verdict(name: str, base: float, cand: float) -> str:
    d = DIRECTION.get(name, 0)
    if not (math.isfinite(base) and math.isfinite(cand)) or d == 0:
        return ""
    diff = cand - base
    if abs(diff) <= _SAME * max(1.0, abs(base)):
        return "same"
    return "better" if diff * d > 0 else "worse"


def _dominance(bfar, bfrr, cfar, cfrr) -> str:
    """``"better"`` when the candidate's (FAR, FRR) is nowhere higher and somewhere lower
    than the baseline's, ``"worse"`` in the reverse case, ``"same"`` when equal, else
    ``""`` (a trade-off: one rate up, the other down)."""
    vals = [bfar, bfrr, cfar, cfrr]
    if any(v is None or not math.isfinite(v) for v in vals):
        return ""
    d = [_verdict("far", bfar, cfar), _verdict("frr", bfrr, cfrr)]
    if all(x == "same" for x in d):
        return "same"
    if "worse" not in d:
        return "better"
    if "better" not in d:
        return "worse"
    return ""


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def _far_differs(br, cr, factor: float = 2.0) -> bool:
    """Whether the global FAR at either end of the range differs by more than ``factor``."""
    for b, c in ((br.far_lower, cr.far_lower), (br.far_upper, cr.far_upper)):
        if not (math.isfinite(b) and math.isfinite(c)):
            continue
        lo, hi = sorted((b, c))
        if hi > factor * lo:
            return True
    return False


def comparability_warnings(base, cand, mode: str = "same-thresholds") -> list[str]:
    """Differences in how the two results were measured (they make deltas less meaningful).

    In ``"own-range"`` mode different distance ranges are expected (each
    model on its own range from the same FAR bounds) and not reported.
    """
    out = []
    for attr in ("metric", "utility"):
        if getattr(base, attr) != getattr(cand, attr):
            out.append(f"different {attr}: baseline {getattr(base, attr)}, "
                       f"candidate {getattr(cand, attr)}")
    for attr in ("beta", "epsilon"):
        if not _close(getattr(base, attr), getattr(cand, attr)):
            out.append(f"different {attr}: baseline {getattr(base, attr):g}, "
                       f"candidate {getattr(cand, attr):g}")
    bp, cp = base.recommended_threshold.policy, cand.recommended_threshold.policy
    if bp != cp:
        out.append(f"different threshold policy: baseline {bp}, candidate {cp}")
    br, cr = base.calibration_range, cand.calibration_range
    same_far = (br.source == cr.source == "far" and br.far_requested is not None
                and cr.far_requested is not None
                and all(_close(a, b) for a, b in zip(br.far_requested, cr.far_requested)))
    if mode == "own-range" and same_far:
        pass  # each on its own FAR range, as meant: the distances may differ
    elif not (_close(br.lower, cr.lower) and _close(br.upper, cr.upper)):
        out.append(f"different calibration ranges: baseline {br.lower:.6g}..{br.upper:.6g}, "
                   f"candidate {cr.lower:.6g}..{cr.upper:.6g} (distances); OPIS is measured "
                   "on different thresholds")
    elif _far_differs(br, cr):
        out.append(f"same thresholds, but the global FAR over them is "
                   f"{pct(cr.far_lower, '.3g')}..{pct(cr.far_upper, '.3g')} for the candidate "
                   f"and {pct(br.far_lower, '.3g')}..{pct(br.far_upper, '.3g')} for the "
                   "baseline: the models accept very different shares of negative pairs at the "
                   "same distance (drop --same-thresholds to measure each on its own FAR range)")
    if len(base.thresholds) != len(cand.thresholds):
        out.append(f"different numbers of thresholds: baseline {len(base.thresholds)}, "
                   f"candidate {len(cand.thresholds)}")
    return out


def shown_metrics(result) -> dict[str, float]:
    """The metrics a comparison and a gate summary show: the headline, then the
    fairness metrics of SPEC 13 (``far_ratio`` ... ``garbe_mean``) when the result
    has them (results written before they existed do not; NaN where null)."""
    out = dict(result.headline())
    if result.recommended_threshold.fairness is not None:
        out.update(result.fairness_metrics())
    return out


def compare_results(base, cand, *, baseline_name: str = "baseline",
                    candidate_name: str = "candidate", base_bootstrap: Bootstrap | None = None,
                    cand_bootstrap: Bootstrap | None = None,
                    confidence: float | None = None,
                    extra_warnings: Sequence[str] = (), mode: str = "own-range",
                    deployment: Deployment | None = None) -> Comparison:
    """Compare two ``EvaluationResult`` objects (baseline first).

    ``mode`` records how the sides were measured (:data:`MODES`);
    ``deployment`` is the deployment view (:class:`Deployment`), computed by
    the caller since it may need the embeddings.
    """
    bh, ch = shown_metrics(base), shown_metrics(cand)
    # rates read at each model's own threshold trade off against each other: at two
    # different thresholds a lower FAR is "better" only when the FRR is not higher
    # (the candidate's operating point dominates), "worse" in the reverse case
    apart = not _close(base.recommended_threshold.value, cand.recommended_threshold.value)
    point = _dominance(bh.get("far"), bh.get("frr"), ch.get("far"), ch.get("frr"))
    metrics = []
    for name, bv in bh.items():
        if name not in ch:
            continue
        bv, cv = float(bv), float(ch[name])
        change = cv - bv
        rel = change / abs(bv) if math.isfinite(change) and bv != 0 else None
        way = point if apart and name in AT_OWN_THRESHOLD else _verdict(name, bv, cv)
        metrics.append(MetricChange(name, bv, cv, change, rel, way))
    bpc = {c.label: c for c in base.classes.per_class}
    cpc = {c.label: c for c in cand.classes.per_class}
    common = [lab for lab in bpc if lab in cpc]
    changes = sorted(
        (ClassChange(lab, bpc[lab].mean_utility, cpc[lab].mean_utility,
                     bpc[lab].far_at_threshold, cpc[lab].far_at_threshold,
                     bpc[lab].frr_at_threshold, cpc[lab].frr_at_threshold) for lab in common),
        key=lambda c: (c.change, c.label))
    only_b = tuple(sorted(set(bpc) - set(cpc)))
    only_c = tuple(sorted(set(cpc) - set(bpc)))
    warnings = comparability_warnings(base, cand, mode)
    if only_b or only_c:
        warnings.append(f"evaluated classes differ: {len(only_b)} only in the baseline, "
                        f"{len(only_c)} only in the candidate; per-class changes cover the "
                        f"{len(common)} common classes")
    warnings.extend(extra_warnings)
    same = (len(base.thresholds) == len(cand.thresholds)
            and all(_close(a, b) for a, b in zip(base.thresholds, cand.thresholds)))
    intervals = ()
    if base_bootstrap is not None and cand_bootstrap is not None:
        intervals = tuple(difference_interval(base_bootstrap, cand_bootstrap, m, confidence)
                          for m in BOOTSTRAP_METRICS)
    cmp = Comparison(baseline_name, candidate_name, tuple(metrics), tuple(changes), only_b,
                     only_c, same, tuple(warnings), intervals, mode, deployment)
    cmp = replace(cmp, disagreement=disagreement(cmp, base, cand),
                  diagnosis=diagnosis_change(base, cand))
    return replace(cmp, verdict=comparison_verdict(cmp, base, cand))


def comparison_verdict(cmp: Comparison, base, cand) -> QuestionVerdict:
    """Which model is more consistent, in words.

    The answer follows OPIS (lower is more consistent): ``"candidate"`` when
    the candidate's is lower, ``"baseline"`` when higher, ``"neither"`` when
    they are the same or when a bootstrap interval of the change holds 0.
    The sentence gives the evidence in rates: at each model's own recommended
    threshold, the shares of classes with FAR above twice the global FAR and
    with FRR above 50% (each side's :attr:`EvaluationResult.verdict`); the
    notes give each side's own verdict and the disagreement, if any.
    """
    bv, cv = base.verdict, cand.verdict
    try:
        m = cmp.metric("opis")
        opis_b, opis_c, direction = m.baseline, m.candidate, m.verdict
    except StopIteration:
        opis_b, opis_c, direction = base.opis, cand.opis, ""
    iv = cmp.interval("opis")
    noisy = iv is not None and math.isfinite(iv.lower) and iv.lower <= 0 <= iv.upper
    if direction == "better" and not noisy:
        answer, lead = "candidate", "the candidate is more consistent than the baseline"
    elif direction == "worse" and not noisy:
        answer, lead = "baseline", "the baseline is more consistent than the candidate"
    elif noisy:
        answer, lead = "neither", ("the change in OPIS lies within its bootstrap interval "
                                   f"{interval(iv.lower, iv.upper)}")
    else:
        answer, lead = "neither", "the two models are equally consistent"
    rel = (opis_c - opis_b) / abs(opis_b) if opis_b and math.isfinite(opis_b) else None
    sentence = (f"{answer.capitalize()}: {lead} (OPIS {num(opis_b, '.4g')} -> "
                f"{num(opis_c, '.4g')}{', ' + pct(rel, '+.0f') if rel is not None else ''}); "
                "at each model's own threshold, classes with FAR above twice the global "
                f"{share_text(bv.fraction_far_above_2x)} -> {share_text(cv.fraction_far_above_2x)}"
                f" and with FRR above 50% {share_text(bv.fraction_frr_above_half)} -> "
                f"{share_text(cv.fraction_frr_above_half)}.")
    notes = [f"Baseline alone: {bv.sentence}", f"Candidate alone: {cv.sentence}"]
    for name, v in (("baseline", bv), ("candidate", cv)):
        if v.range_edge is not None:
            notes.append(f"The {name}'s recommended threshold sits at the {v.range_edge} end of "
                         "its calibration range"
                         + (f"; widen it with {v.widen}." if v.widen else "."))
    if cmp.disagreement:
        notes.append(cmp.disagreement)
    evidence = (("opis_baseline", opis_b), ("opis_candidate", opis_c),
                ("fraction_far_above_2x_baseline", bv.fraction_far_above_2x),
                ("fraction_far_above_2x_candidate", cv.fraction_far_above_2x),
                ("fraction_frr_above_half_baseline", bv.fraction_frr_above_half),
                ("fraction_frr_above_half_candidate", cv.fraction_frr_above_half))
    return QuestionVerdict(COMPARE_QUESTION, answer, sentence, tuple(notes), evidence)


def disagreement(cmp: Comparison, base, cand) -> str | None:
    """One sentence when the headline (OPIS) and the class table point different
    ways (OPIS better while most common classes lost mean utility, or the
    reverse), saying why; None when they agree."""
    try:
        verdict = cmp.metric("opis").verdict
    except StopIteration:
        return None
    worse = sum(c.change < 0 for c in cmp.classes)
    better = sum(c.change > 0 for c in cmp.classes)
    if verdict == "better" and worse > better:
        head, cls = "OPIS got better", f"{worse} of {len(cmp.classes)} classes lost mean utility"
    elif verdict == "worse" and better > worse:
        head, cls = "OPIS got worse", f"{better} of {len(cmp.classes)} classes gained mean utility"
    else:
        return None
    br, cr = base.calibration_range, cand.calibration_range
    if cmp.same_thresholds and _far_differs(br, cr):
        why = ("both are measured on the same distance thresholds, where the models' global "
               f"FAR differs by more than 2x ({pct(br.far_lower, '.3g')}..{pct(br.far_upper, '.3g')} "
               f"vs {pct(cr.far_lower, '.3g')}..{pct(cr.far_upper, '.3g')}); drop "
               "--same-thresholds to compare each on its own FAR range")
    elif _far_differs(br, cr):
        why = "the two sides were measured on different FAR ranges"
    else:
        why = ("OPIS measures how evenly the classes fare, not how well: the candidate's "
               "classes are more alike but most fare worse" if verdict == "better" else
               "OPIS measures how evenly the classes fare, not how well: the candidate's "
               "classes fare better but less alike")
    return f"{head} but {cls}: {why}."
