"""Markdown summaries (``--markdown``, e.g. for ``$GITHUB_STEP_SUMMARY``).

Reads a :class:`~opis_cli.gate.rules.GateOutcome` and a
:class:`~opis_cli.gate.compare.Comparison`; computes nothing. User text
(paths, labels, rule text) and messages go through
:mod:`opis_cli.render.escape` (``md_code``, ``md_text``, ``md_message``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from ..gate.compare import Comparison
from ..gate.rules import GateOutcome
from .escape import md_code, md_message, md_text
from .format import (change_word, deployment_rows, deployment_title, interval, metric_row_label,
                     mode_text, num, pct)
from .verdict_text import ANSWER_WORD

if TYPE_CHECKING:  # pragma: no cover
    from ..verdict import Verdict

_ANSWER_ICON = {"yes": ":white_check_mark:", "partly": ":warning:", "no": ":x:"}


def verdict_markdown(verdict: "Verdict", title: str = "Can one threshold serve every class?",
                     question: str = "") -> str:
    """The verdict: a heading, the answer in bold with its evidence, the notes as a list."""
    word = ANSWER_WORD.get(verdict.answer, verdict.answer)
    rest = verdict.sentence[len(word):] if verdict.sentence.startswith(word) else \
        ": " + verdict.sentence
    icon = _ANSWER_ICON.get(verdict.answer, "")
    lines = [f"### {md_message(title)}", ""]
    if question:
        lines += [md_message(question), ""]
    lines.append(f"{icon} **{word}**{md_message(rest)}".strip())
    if verdict.notes:
        lines.append("")
        lines += [f"- {md_message(n)}" for n in verdict.notes]
    return "\n".join(lines) + "\n"


def gate_markdown(outcome: GateOutcome, headline: Mapping[str, float] | None = None,
                  title: str = "opis gate") -> str:
    """The verdict, the rule table, the broken rules, warnings and (optionally) the metrics."""
    n, f = len(outcome.results), outcome.failures
    verdict = (f":white_check_mark: **passed**: all {n} rules hold" if outcome.passed
               else f":x: **failed**: {f} of {n} rules broken")
    lines = [f"### {title}: {'passed' if outcome.passed else 'FAILED'}", "",
             f"{verdict} for {md_code(outcome.candidate, table=False)}"
             + (f" against baseline {md_code(outcome.baseline, table=False)}"
                if outcome.baseline else "") + ".",
             "", "| rule | value | baseline | limit | verdict |", "|---|---:|---:|---:|---|"]
    for r in outcome.results:
        limit = (interval(r.interval.lower, r.interval.upper) if r.interval is not None
                 else num(r.limit, ".6g"))
        lines.append(f"| {md_code(r.rule.text)} | {num(r.value, '.6g')} | "
                     f"{num(r.baseline, '.6g')} | {limit} | "
                     f"{'pass' if r.passed else '**FAIL**'} |")
    failed = [r for r in outcome.results if not r.passed]
    if failed:
        lines += ["", "Broken rules:", ""]
        lines += [f"- {md_code(r.rule.text, table=False)}: {md_message(r.message)}"
                  for r in failed]
    for w in outcome.warnings:
        lines += ["", f"> :warning: {md_message(w)}"]
    if headline:
        lines += ["", "<details><summary>Headline metrics</summary>", "",
                  "| metric | value |", "|---|---:|"]
        lines += [f"| {md_text(k)} | {num(v, '.6g')} |" for k, v in headline.items()]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def compare_markdown(cmp: Comparison, top: int = 5) -> str:
    """The headline deltas and the most changed classes."""
    lines = ["### opis compare", "",
             f"Baseline {md_code(cmp.baseline, table=False)}, candidate "
             f"{md_code(cmp.candidate, table=False)} "
             f"({mode_text(cmp)}).",
             "", "| metric | baseline | candidate | change | relative | |",
             "|---|---:|---:|---:|---:|---|"]
    for m in cmp.metrics:
        iv = cmp.interval(m.name)
        ci = f" {interval(iv.lower, iv.upper, '+.3g')}" if iv is not None else ""
        lines.append(f"| {md_text(metric_row_label(m.name))} | {num(m.baseline)} | "
                     f"{num(m.candidate)} | "
                     f"{num(m.change, '+.4g')}{ci} | {pct(m.relative, '+.1f')} | "
                     f"{change_word(cmp, m)} |")
    for title, rows in (("Classes that got most worse", cmp.most_worse(top)),
                        ("Classes that got most better", cmp.most_better(top))):
        if not rows:
            continue
        lines += ["", f"**{title}** (mean utility; FAR / FRR at each model's threshold)", "",
                  "| class | mean utility | change | FAR | FRR |", "|---|---:|---:|---:|---:|"]
        for c in rows:
            lines.append(
                f"| {md_text(c.label)} | {num(c.baseline_mean_utility)} -> "
                f"{num(c.candidate_mean_utility)} | {num(c.change, '+.4g')} | "
                f"{pct(c.baseline_far)} -> {pct(c.candidate_far)} | "
                f"{pct(c.baseline_frr)} -> {pct(c.candidate_frr)} |")
    if cmp.disagreement:
        lines += ["", f"> :information_source: {md_message(cmp.disagreement)}"]
    dep = cmp.deployment
    if dep is not None and dep.available:
        lines += ["", f"**{md_message(deployment_title(dep))}**", "",
                  "| at this threshold | baseline | candidate |", "|---|---:|---:|"]
        lines += [f"| {q} | {b} | {c} |" for q, b, c in deployment_rows(dep)]
        if dep.sentence():
            lines += ["", f"> :rotating_light: {md_message(dep.sentence())}"]
    elif dep is not None:
        lines += ["", f"> Deployment view not shown: {md_message(dep.missing)}"]
    for w in cmp.warnings:
        lines += ["", f"> :warning: {md_message(w)}"]
    return "\n".join(lines) + "\n"


def summary(outcome: GateOutcome | None, headline: Mapping[str, float] | None = None,
            comparison: Comparison | None = None, top: int = 5,
            verdict: "Verdict | None" = None) -> str:
    """What ``--markdown`` writes: the verdict first (if any; a comparison's own
    verdict otherwise), the gate's part (if any), then the comparison's (if any)."""
    if verdict is None and comparison is not None and comparison.verdict is not None:
        verdict = comparison.verdict
    first = []
    if verdict is not None:
        first = [verdict_markdown(verdict, title=verdict.question)]
    parts = first + ([gate_markdown(outcome, headline)] if outcome is not None else []) + (
        [compare_markdown(comparison, top)] if comparison is not None else [])
    return "\n".join(parts)
