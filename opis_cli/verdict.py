"""The verdict: can one threshold serve every class? (pure; no rendering, no I/O)

One sentence that answers the question a report asks, with the evidence in
rates people know, e.g.::

    No: at global FAR 10% (threshold 0.6053), 8.3% of classes see more than
    twice the global false accept rate and 14% reject more than half of their
    genuine pairs.

The rule (constants in :mod:`opis_cli.options`, stated in
``docs/concepts/verdict.md``): at the class block's recommended threshold,
let ``far_share`` be the fraction of evaluated classes whose FAR exceeds
``VERDICT_FAR_FACTOR`` (2) times the global FAR (SPEC 6's
``fraction_far_above_2x``) and ``frr_share`` the fraction whose FRR exceeds
``VERDICT_FRR_LEVEL`` (50%). The answer is

- ``"yes"`` when both shares are at most ``VERDICT_YES_SHARE`` (5%),
- ``"no"`` when either exceeds ``VERDICT_NO_SHARE`` (10%),
- ``"partly"`` otherwise.

Beside the answer the verdict says when the recommended threshold sits at an
end of the calibration range (with the option that widens it), that
``max-mean-utility`` picks a permissive point and what a strict one
(``far:0.01`` on the same grid) does, and, with groups, which threshold it is
about (the class block's). Everything is read from the result; the strict
point is read from the per-class curves when the result has them (a result
read back from JSON keeps the one it was written with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from . import options as opt

# The annotations name opis_cli.results' EvaluationResult, ConsistencyBlock and
# Curves as strings without importing them: results imports this module.

__all__ = ["Verdict", "StrictPoint", "QuestionVerdict", "verdict_of", "answer_of",
           "transfer_verdict", "share_text", "rate_text", "widen_option", "strict_point",
           "QUESTION"]

#: the question the verdict of an evaluation answers
QUESTION = "Can one threshold serve every class?"

ANSWERS = ("yes", "partly", "no")


def _f(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def share_text(x: float) -> str:
    """A share of classes in words: ``8.3%``, ``14%``, ``100%``, ``0.44%`` (never ``1e+02%``)."""
    if not (isinstance(x, (int, float)) and math.isfinite(x)):
        return "n/a"
    p = 100.0 * x
    if p == 0:
        return "0%"
    if p >= 9.95:
        return f"{p:.0f}%"
    return f"{p:.2g}%"


def rate_text(x: float) -> str:
    """A global rate in words: ``10%``, ``9.99%``, ``0.5%`` (three significant digits)."""
    if not (isinstance(x, (int, float)) and math.isfinite(x)):
        return "n/a"
    p = 100.0 * x
    if p == 0:
        return "0%"
    if p >= 99.95:
        return "100%"
    return f"{p:.3g}%"


def answer_of(far_share: float, frr_share: float) -> str:
    """The rule: ``"yes"``, ``"partly"`` or ``"no"`` from the two shares of classes
    (NaN counts as over every bound: a missing number never reads as "yes")."""
    shares = [s if math.isfinite(s) else math.inf for s in (far_share, frr_share)]
    if any(s > opt.VERDICT_NO_SHARE for s in shares):
        return "no"
    if all(s <= opt.VERDICT_YES_SHARE for s in shares):
        return "yes"
    return "partly"


@dataclass(frozen=True)
class StrictPoint:
    """The rates at a strict grid point (policy ``far:F``, SPEC 6), shown beside a
    permissive recommended threshold: the largest grid threshold whose global
    FAR is at most ``F`` (the smallest grid threshold when none is)."""

    policy: str
    threshold: float
    index: int
    far: float
    frr: float
    fraction_far_above_2x: float
    fraction_frr_above_half: float

    def to_dict(self) -> dict:
        return {f.name: _clean(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "StrictPoint":
        return cls(str(d["policy"]), _f(d["threshold"]), int(d["index"]), _f(d["far"]),
                   _f(d["frr"]), _f(d["fraction_far_above_2x"]),
                   _f(d["fraction_frr_above_half"]))


@dataclass(frozen=True)
class Verdict:
    """Can one threshold serve every class? The answer and its evidence.

    Attributes
    ----------
    answer : ``"yes"``, ``"partly"`` or ``"no"`` (the rule of this module).
    sentence : the answer in one sentence with the evidence.
    level : the block the verdict is about: always ``"class"``.
    policy, threshold, index : the class block's recommended threshold.
    far, frr : global FAR and FRR there.
    fraction_far_above_2x : share of evaluated classes with FAR > 2x the global FAR.
    fraction_frr_above_half : share of evaluated classes with FRR > 50%.
    classes : evaluated classes.
    range_edge : ``"lower"`` / ``"upper"`` when the threshold is at that end of
        the calibration range, else None.
    widen : the option that widens the range at that end (``"--far-range 0.01:0.3"``),
        None when not at an end or when the range cannot be widened there.
    permissive : whether the policy is ``max-mean-utility``.
    strict : the strict point (``far:0.01``) beside it, None without curves.
    group_threshold : the group block's own recommended threshold (with groups).
    notes : the range edge, operating point and groups remarks as sentences.
    """

    answer: str
    sentence: str
    level: str
    policy: str
    threshold: float
    index: int
    far: float
    frr: float
    fraction_far_above_2x: float
    fraction_frr_above_half: float
    classes: int
    range_edge: str | None
    widen: str | None
    permissive: bool
    strict: StrictPoint | None
    group_threshold: float | None
    notes: tuple[str, ...]

    @property
    def question(self) -> str:
        return QUESTION

    def lines(self) -> tuple[str, ...]:
        """The sentence, then the notes."""
        return (self.sentence, *self.notes)

    def __str__(self) -> str:
        return " ".join(self.lines())

    def to_dict(self) -> dict:
        d = {"question": QUESTION}
        d.update({f.name: _clean(getattr(self, f.name)) for f in fields(self)})
        d["strict"] = self.strict.to_dict() if self.strict is not None else None
        d["notes"] = list(self.notes)
        d["rule"] = {"far_factor": opt.VERDICT_FAR_FACTOR, "frr_level": opt.VERDICT_FRR_LEVEL,
                     "yes_share": opt.VERDICT_YES_SHARE, "no_share": opt.VERDICT_NO_SHARE}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Verdict":
        s = d.get("strict")
        g = d.get("group_threshold")
        return cls(str(d["answer"]), str(d["sentence"]), str(d.get("level", "class")),
                   str(d["policy"]), _f(d["threshold"]), int(d["index"]), _f(d["far"]),
                   _f(d["frr"]), _f(d["fraction_far_above_2x"]),
                   _f(d["fraction_frr_above_half"]), int(d["classes"]), d.get("range_edge"),
                   d.get("widen"), bool(d.get("permissive", False)),
                   StrictPoint.from_dict(s) if s else None, None if g is None else float(g),
                   tuple(str(n) for n in d.get("notes", ())))


def _frr_share(block: "ConsistencyBlock") -> float:
    per = block.per_class
    if not per:
        return float("nan")
    return sum(c.frr_at_threshold > opt.VERDICT_FRR_LEVEL for c in per) / len(per)


def strict_point(curves: "Curves", thresholds, far: float = opt.VERDICT_STRICT_FAR) -> StrictPoint:
    """The ``far:F`` grid point (SPEC 6) from the per-class curves already computed.

    ``curves.tp``/``curves.fp`` are (C, K) counts on the grid ``thresholds``;
    the per-class rates there are ``FP_c / M_c`` and ``1 - TP_c / P_c``.
    """
    tp = np.asarray(curves.tp, np.float64)
    fp = np.asarray(curves.fp, np.float64)
    P = np.asarray(curves.positives, np.float64)
    M = np.asarray(curves.negatives, np.float64)
    gfar = fp.sum(axis=0) / M.sum()
    ok = np.nonzero(gfar <= far)[0]
    k = int(ok[-1]) if len(ok) else 0
    per_far, per_frr = fp[:, k] / M, 1.0 - tp[:, k] / P
    g = float(gfar[k])
    return StrictPoint(policy=f"far:{far:g}", threshold=float(thresholds[k]), index=k, far=g,
                       frr=float(1.0 - tp[:, k].sum() / P.sum()),
                       fraction_far_above_2x=float(np.mean(per_far > opt.VERDICT_FAR_FACTOR * g)),
                       fraction_frr_above_half=float(np.mean(per_frr > opt.VERDICT_FRR_LEVEL)))


def widen_option(result: "EvaluationResult", edge: str | None) -> str | None:
    """The option that widens the calibration range at ``edge`` (``"lower"``/``"upper"``).

    A FAR range ``A:B`` becomes ``A:min(1, 3B)`` at the upper end and ``A/10:B``
    at the lower end; an explicit range ``LO:HI`` is extended by its width
    (not below 0 at the lower end when ``LO >= 0``). None when ``edge`` is None
    or the FAR range already reaches 1 at the upper end.
    """
    if edge is None:
        return None
    cr = result.calibration_range
    if cr.source == "far" and cr.far_requested:
        a, b = (float(v) for v in cr.far_requested)
        if edge == "upper":
            if b >= 1.0:
                return None
            return f"--far-range {a:g}:{min(1.0, b * opt.VERDICT_WIDEN_UPPER):g}"
        return f"--far-range {a / opt.VERDICT_WIDEN_LOWER:g}:{b:g}"
    lo, hi = cr.lower, cr.upper
    w = hi - lo
    if edge == "upper":
        return f"--calibration-range {lo:.6g}:{hi + w:.6g}"
    new_lo = max(0.0, lo - w) if lo >= 0 else lo - w
    if new_lo >= lo:
        return None
    return f"--calibration-range {new_lo:.6g}:{hi:.6g}"


def _evidence(far: float, far_share: float, frr_share: float) -> str:
    fa = ("no class sees more than twice the global false accept rate" if far_share == 0 else
          f"{share_text(far_share)} of classes see more than twice the global false accept rate")
    fr = ("none rejects more than half of its genuine pairs" if frr_share == 0 else
          f"{share_text(frr_share)} reject more than half of their genuine pairs")
    return f"{fa} and {fr}"


def verdict_of(result: "EvaluationResult", stored: Verdict | None = None) -> Verdict:
    """The verdict of a result (about its class block's recommended threshold).

    ``stored`` is a verdict read back from JSON: its strict point is kept when
    the result has no curves to recompute it from.
    """
    block = result.classes
    rt = block.recommended_threshold
    far_share = float(rt.fraction_far_above_2x)
    frr_share = _frr_share(block)
    answer = answer_of(far_share, frr_share)
    K = len(result.thresholds)
    edge = None
    if K >= 2 and rt.index == 0:
        edge = "lower"
    elif K >= 2 and rt.index == K - 1:
        edge = "upper"
    widen = widen_option(result, edge)
    strict = None
    if block.curves is not None and K:
        strict = strict_point(block.curves, result.thresholds)
    elif stored is not None:
        strict = stored.strict
    permissive = rt.policy == "max-mean-utility"
    sentence = (f"{answer.capitalize()}: at global FAR {rate_text(rt.far)} (threshold "
                f"{rt.value:.4g}), {_evidence(rt.far, far_share, frr_share)}.")
    notes = []
    if edge is not None:
        end = "upper" if edge == "upper" else "lower"
        tail = (f"; widen it with {widen} to see whether a better one lies outside"
                if widen else "")
        notes.append(f"The recommended threshold sits at the {end} end of the calibration range "
                     f"(global FAR {rate_text(rt.far)}){tail}.")
    if permissive:
        notes.append("max-mean-utility picks a permissive point: the threshold where the mean "
                     f"utility peaks, here at global FAR {rate_text(rt.far)}.")
    if strict is not None and strict.index != rt.index:
        notes.append(f"At a strict point ({strict.policy}: threshold {strict.threshold:.4g}, "
                     f"global FAR {rate_text(strict.far)}) the global FRR is "
                     f"{rate_text(strict.frr)}; "
                     f"{_evidence(strict.far, strict.fraction_far_above_2x, strict.fraction_frr_above_half)}.")
    gthr = None
    if result.groups is not None:
        gthr = float(result.groups.recommended_threshold.value)
        notes.append(f"This verdict is about the class block's threshold {rt.value:.4g}; the "
                     f"group block recommends {gthr:.4g} for consistency across groups.")
    return Verdict(answer=answer, sentence=sentence, level="class", policy=rt.policy,
                   threshold=float(rt.value), index=int(rt.index), far=float(rt.far),
                   frr=float(rt.frr), fraction_far_above_2x=far_share,
                   fraction_frr_above_half=frr_share, classes=int(block.evaluated),
                   range_edge=edge, widen=widen, permissive=permissive, strict=strict,
                   group_threshold=gthr, notes=tuple(notes))


@dataclass(frozen=True)
class QuestionVerdict:
    """The verdict of a comparison or a calibration: the question, its answer
    (a word such as ``"yes"`` or ``"candidate"``), one sentence that starts with
    that word, notes, and the evidence numbers by name."""

    question: str
    answer: str
    sentence: str
    notes: tuple[str, ...] = ()
    evidence: tuple[tuple[str, float | str | None], ...] = ()

    def lines(self) -> tuple[str, ...]:
        return (self.sentence, *self.notes)

    def __str__(self) -> str:
        return " ".join(self.lines())

    def to_dict(self) -> dict:
        return {"question": self.question, "answer": self.answer, "sentence": self.sentence,
                "notes": list(self.notes),
                "evidence": {k: _clean(v) for k, v in self.evidence}}


#: the question the verdict of ``opis calibrate`` answers
TRANSFER_QUESTION = "Does the threshold transfer to unseen classes?"


def transfer_verdict(res) -> QuestionVerdict:
    """Does a threshold chosen on the calibration side hold on unseen classes?

    ``res`` is a :class:`~opis_cli.transfer.TransferResult`. Per fold the
    reference FAR is the target (``far:F``) or, for a policy target, the FAR
    the threshold gave on the calibration side. The answer is ``"yes"`` when
    every fold's test FAR is within a factor ``VERDICT_FAR_FACTOR`` (2) of it
    either way and the mean share of unseen classes (groups, with a group
    split) whose FAR exceeds twice it is at most ``VERDICT_YES_SHARE``;
    ``"no"`` when a fold misses by more than that factor or that share exceeds
    ``VERDICT_NO_SHARE``; ``"partly"`` otherwise.
    """
    by = res.split.get("by")
    unseen = {"group": "unseen groups", "row": "held-out rows"}.get(by, "unseen classes")
    noun = "groups" if by == "group" else "classes"
    question = TRANSFER_QUESTION.replace("unseen classes", unseen)
    fac = opt.VERDICT_FAR_FACTOR
    ratios, shares, fars = [], [], []
    for f in res.folds:
        ref = res.target.far if res.target.name == "far" else f.calibration.far
        b = f.test
        fars.append(b.far)
        ratios.append(b.far / ref if ref and ref > 0 else (1.0 if b.far == 0 else math.inf))
        share = (b.groups.fraction_far_above_2x if by == "group" and b.groups is not None
                 else b.fraction_far_above_2x)
        shares.append(share)
    off = [r for r in ratios if not (1.0 / fac <= r <= fac)]
    share = float(np.mean(shares)) if shares else float("nan")
    if off or not math.isfinite(share) or share > opt.VERDICT_NO_SHARE:
        answer = "no"
    elif share <= opt.VERDICT_YES_SHARE:
        answer = "yes"
    else:
        answer = "partly"
    target = (f"a threshold for global FAR {rate_text(res.target.far)}"
              if res.target.name == "far" else f"the {res.target.name} threshold")
    if len(fars) == 1:
        got = f"gives FAR {rate_text(fars[0])} on {unseen}"
    else:
        got = (f"gives FAR {rate_text(min(fars))} to {rate_text(max(fars))} on {unseen} "
               f"(mean {rate_text(float(np.mean(fars)))}) over {len(fars)} folds")
    sentence = (f"{answer.capitalize()}: {target}, chosen on the calibration side, {got}; "
                f"{share_text(share)} of the unseen {noun} see more than twice "
                f"{'the target' if res.target.name == 'far' else 'the calibration FAR'}.")
    notes = []
    if off:
        notes.append(f"{len(off)} of {len(ratios)} fold(s) miss the "
                     f"{'target' if res.target.name == 'far' else 'calibration FAR'} by more "
                     f"than {fac:g}x: re-tune the threshold on data like the deployment's, or "
                     "fit a calibration (--method).")
    evidence = (("far_min", min(fars) if fars else None), ("far_max", max(fars) if fars else None),
                ("far_mean", float(np.mean(fars)) if fars else None),
                ("folds_off_by_more_than_2x", float(len(off))),
                ("fraction_far_above_2x_mean", share))
    return QuestionVerdict(question, answer, sentence, tuple(notes), evidence)
