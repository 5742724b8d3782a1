"""The verdict and the gate outcome as plain text parts, shared by every output.

Pure Python (no rich, no matplotlib): the terminal, Markdown and HTML
renderers escape the user text (rule text) their own way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .format import interval, num

if TYPE_CHECKING:  # pragma: no cover
    from ..gate.rules import GateOutcome

#: the answer as a headline word
ANSWER_WORD = {"yes": "Yes", "partly": "Partly", "no": "No", "candidate": "Candidate",
               "baseline": "Baseline", "neither": "Neither"}


def gate_headline(outcome: "GateOutcome") -> str:
    """``Gate passed: all 2 rules hold`` / ``Gate FAILED: 1 of 2 rules broken``."""
    n, f = len(outcome.results), outcome.failures
    if outcome.passed:
        return f"Gate passed: all {n} rule{'s' if n != 1 else ''} hold{'s' if n == 1 else ''}"
    return f"Gate FAILED: {f} of {n} rule{'s' if n != 1 else ''} broken"


def gate_rows(outcome: "GateOutcome") -> list[tuple[str, str, str, bool]]:
    """``(rule text, value, limit, passed)`` per rule, in the outcome's order
    (the rule text is user text: escape it where it is shown)."""
    rows = []
    for r in outcome.results:
        if r.interval is not None:
            limit = interval(r.interval.lower, r.interval.upper, "+.3g")
            value = num(r.value, "+.4g")
        else:
            limit, value = num(r.limit), num(r.value)
        rows.append((r.rule.text, value, limit, bool(r.passed)))
    return rows
