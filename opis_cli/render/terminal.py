"""People-facing terminal output (rich): results on stdout, the rest on stderr.

:data:`console` prints what the user asked for (the tables, the verdict) on
standard output, so that ``opis evaluate x > out.txt`` or ``| less`` keeps it;
:data:`err_console` prints progress bars, warnings, errors and "wrote ..."
lines on standard error. In a pipe or a file, lines of text are not broken
(the reader's pager or terminal wraps them) and tables are laid out for
``COLUMNS`` columns, else :data:`PIPE_WIDTH`.

Reads finished objects (``EvaluationResult``, ``Bootstrap``, ``Comparison``,
``GateOutcome``); computes nothing. Text that comes from users (file names,
labels, messages quoting them) goes through :mod:`opis_cli.render.escape`
(control and bidi characters shown as escapes) and is printed as
:class:`rich.text.Text`, never parsed as markup.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ..options import LOW_EVIDENCE_POSITIVES, LOW_EVIDENCE_QUERIES
from ..results import ConsistencyBlock, EvaluationResult
from .escape import one_line, terminal_message, terminal_text, visible
from .format import (change_word, deployment_rows, deployment_title, interval, metric_label,
                     mode_text, num, pct)
from .verdict_text import gate_headline, gate_rows

if TYPE_CHECKING:  # pragma: no cover
    from ..gate.compare import Comparison
    from ..gate.rules import GateOutcome
    from ..metrics.bootstrap import Bootstrap
    from ..verdict import Verdict

#: table width when the output is not a terminal and COLUMNS is unset
PIPE_WIDTH = 100


def _make_console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        return Console(stderr=stderr, highlight=False)
    # a pipe or a file: tables laid out for COLUMNS (else PIPE_WIDTH) columns, and
    # lines of text never broken (the pager or terminal that shows them wraps them)
    columns = os.environ.get("COLUMNS", "").strip()
    width = int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, width=width, soft_wrap=True)


#: results (tables, verdicts): standard output
console = _make_console(stderr=False)
#: progress, warnings, errors, "wrote ..." lines: standard error
err_console = _make_console(stderr=True)


@contextmanager
def results_on_stderr(enabled: bool = True) -> Iterator[None]:
    """Print results on stderr while standard output carries data (``--json -``)."""
    if not enabled:
        yield
        return
    saved = console._file
    console.file = sys.stderr
    try:
        yield
    finally:
        console._file = saved


def print_wrote(path: str | Path, what: str = "") -> None:
    """One ``wrote PATH`` line on stderr (``what`` says what it holds, if given)."""
    line = Text.assemble("wrote ", terminal_text(str(path)))
    if what:
        line.append(f" ({what})")
    err_console.print(line, soft_wrap=True)

WORST_SHOWN = 10
EXCLUDED_SHOWN = 20


def print_error(message: str) -> None:
    """One ``Error: ...`` line (control characters in ``message``, newlines included,
    shown as escapes: see :func:`~opis_cli.render.escape.one_line`)."""
    err_console.print(Text.assemble(("Error:", "bold red"), " ", one_line(message)),
                  highlight=False, soft_wrap=True)


def print_warnings(messages: Iterable[str]) -> None:
    """One ``Warning: ...`` line each (the engines' warnings, e.g. knn truncation)."""
    for msg in messages:
        err_console.print(Text.assemble(("Warning:", "bold yellow"), " ", one_line(msg)),
                      soft_wrap=True)


@contextmanager
def progress_bar(enabled: bool) -> Iterator:
    """A ``progress(stage, done, total)`` callback drawing a rich bar on stderr."""
    if not enabled:
        yield None
        return
    bar = Progress(TextColumn("{task.description:>16}"), BarColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=err_console,
                   transient=True)
    tasks: dict[str, int] = {}

    def callback(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    with bar:
        yield callback


def _fairness_table(block: ConsistencyBlock, noun: str) -> Table | None:
    """SPEC 13 at the recommended threshold (and FDR, GARBE over the range)."""
    f, c = block.recommended_threshold.fairness, block.fairness
    if f is None:
        return None
    t = Table(title=f"Fairness at the threshold (alpha {f.alpha:g})", title_justify="left",
              show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    means = (f"  (range mean {num(c.fdr_mean, '.4f')} / {num(c.garbe_mean, '.4f')})"
             if c is not None else "")
    t.add_row("FDR / GARBE", f"{num(f.fdr, '.4f')} / {num(f.garbe, '.4f')}{means}")
    t.add_row(f"worst {noun} FAR / FRR vs global",
              f"{num(f.far_ratio, '.3g')}x / {num(f.frr_ratio, '.3g')}x")
    t.add_row("inequity rate", num(f.inequity_rate, ".4g"))
    return t


def _verification_table(result: EvaluationResult) -> Table | Text | None:
    """SPEC 14 in one short block (None when not asked for)."""
    v = result.verification
    if v is None:
        if not result.verification_asked:
            return None
        return Text.assemble(("Verification view", "bold"),
                             f": not measured by the {visible(result.provenance.get('engine'))} "
                             "engine (it does not see every pair)")

    def at(t):
        return "(rejecting every pair)" if t is None else f"at distance {t:.6g}"

    t = Table(title="Verification view (all pairs)", title_justify="left", show_header=False,
              box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("EER", f"{pct(v.eer)} {at(v.eer_threshold)}")
    t.add_row(f"minDCF (p {v.p_target:g}, c_miss {v.c_miss:g}, c_fa {v.c_fa:g})",
              f"{num(v.min_dcf, '.4f')} {at(v.min_dcf_threshold)}")
    if v.fnmr_at_fmr:
        t.add_row("FNMR at FMR", "  ".join(f"{k}: {pct(x)}" for k, x in v.fnmr_at_fmr.items()))
    g = result.groups
    eers = [(c.eer, c.label) for c in g.per_class if c.eer is not None] if g is not None else []
    if eers:
        lo, hi = min(eers), max(eers)
        t.add_row("group EER", Text.assemble(f"{pct(lo[0])} (", terminal_text(lo[1]),
                                             f") .. {pct(hi[0])} (", terminal_text(hi[1]), ")"))
    return t


def _block_tables(block: ConsistencyBlock, noun: str, thresholds_unit: str) -> list:
    rt = block.recommended_threshold
    out = []
    t = Table(title=Text(f"Recommended threshold ({visible(rt.policy)})"), title_justify="left",
              show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("threshold", f"{rt.value:.6g} {thresholds_unit}")
    t.add_row("mean utility", num(rt.mean_utility, ".4f"))
    t.add_row("global TPR / FRR", f"{pct(rt.tpr)} / {pct(rt.frr)}")
    t.add_row("global FAR", pct(rt.far) + (f"  (asked <= {pct(rt.requested_far)})"
                                            if rt.requested_far is not None else ""))
    t.add_row(f"{noun}es with FAR > 2x global" if noun == "class" else f"{noun}s with FAR > 2x global",
              pct(rt.fraction_far_above_2x))
    out.append(t)
    s = Table(title=f"Per-{noun} spread at the threshold", title_justify="left")
    s.add_column("rate")
    for name in ("min", "p5", "p50", "p95", "max"):
        s.add_column(name, justify="right")
    for name, sp in (("FAR", rt.far_spread), ("FRR", rt.frr_spread)):
        s.add_row(name, *(pct(getattr(sp, k)) for k in ("min", "p5", "p50", "p95", "max")))
    out.append(s)
    fair = _fairness_table(block, noun)
    if fair is not None:
        out.append(fair)
    worst = Table(title=f"Worst {min(WORST_SHOWN, len(block.per_class))} {noun}es by mean utility"
                  if noun == "class" else
                  f"Worst {min(WORST_SHOWN, len(block.per_class))} {noun}s by mean utility",
                  title_justify="left")
    for col in (noun, "mean utility", "FAR", "FRR", "R@1", "positives", "negatives"):
        worst.add_column(col, justify="left" if col == noun else "right")
    shown = block.per_class[:WORST_SHOWN]
    for c in shown:
        # "*": low evidence (too few query rows or positive pairs to rank the class)
        worst.add_row(Text.assemble(terminal_text(c.label), " *" if c.low_evidence else ""),
                      num(c.mean_utility, ".4f"), pct(c.far_at_threshold),
                      pct(c.frr_at_threshold), num(c.recall_at_1, ".3f"), str(c.positives),
                      str(c.negatives))
    if any(c.low_evidence for c in shown):
        worst.caption = (f"* low evidence: fewer than {LOW_EVIDENCE_QUERIES} query rows or "
                         f"{LOW_EVIDENCE_POSITIVES} positive pairs (--min-class-rows leaves "
                         "small classes out)")
        worst.caption_justify = "left"
    out.append(worst)
    return out


#: the style of each answer of the verdict
ANSWER_STYLE = {"yes": "bold green", "partly": "bold yellow", "no": "bold red"}


def verdict_renderables(verdict: "Verdict", outcome: "GateOutcome | None" = None,
                        title: str = "Verdict") -> list:
    """The verdict (one sentence, then its notes) and, with gate rules, the gate
    outcome beside it (pass/fail per rule), as rich renderables."""
    out: list = [Text.assemble((f"{title}: ", "bold"),
                               (verdict.sentence, ANSWER_STYLE.get(verdict.answer, "bold")))]
    out += [Text(f"  - {note}") for note in verdict.notes]
    if outcome is not None:
        out.append(gate_line(outcome))
    return out


def gate_line(outcome: "GateOutcome") -> Text:
    """``Gate FAILED: 1 of 2 rules broken: opis <= 0.01 FAIL (0.02493); ...`` in one line."""
    parts: list = [(gate_headline(outcome), "bold green" if outcome.passed else "bold red"), ": "]
    for i, (rule, value, limit, passed) in enumerate(gate_rows(outcome)):
        if i:
            parts.append("; ")
        parts += [terminal_text(rule), " ", ("pass", "green") if passed else ("FAIL", "bold red"),
                  f" ({value})"]
    return Text.assemble(*parts)


def print_verdict(verdict: "Verdict", outcome: "GateOutcome | None" = None) -> None:
    """:func:`verdict_renderables` on the console."""
    for r in verdict_renderables(verdict, outcome):
        console.print(r, soft_wrap=True)  # a widening option stays whole, to copy


def print_result(result: EvaluationResult, source: str = "",
                 outcome: "GateOutcome | None" = None) -> None:
    """The verdict first (with the gate outcome beside it when ``outcome`` is given),
    then headline numbers, calibration range, recommended threshold, worst classes."""
    print_verdict(result.verdict, outcome)
    cr = result.calibration_range
    r = result.retrieval
    cls = result.classes
    unit = "(cosine distance)" if result.metric == "cosine" else "(L2 distance)"
    console.print(Text.assemble(
        ("opis", "bold"), f" {visible(source)}: {result.n_samples} rows x {result.dim} dims, metric "
        f"{result.metric}, utility {result.utility} (beta {result.beta:g}); "
        f"{cls.evaluated} classes evaluated, {cls.excluded} excluded"))
    cal = result.provenance.get("calibration") if isinstance(result.provenance, dict) else None
    if cal:
        where = f" ({visible(cal['path'])})" if cal.get("path") else ""
        console.print(Text.assemble(
            ("Calibration", "bold"), f" {visible(cal.get('method'))}{where}: every number on the "
            f"adjusted distances d - a_q - b_g; its global threshold {num(cal.get('global_threshold'), '.6g')} "
            f"at FAR {num(cal.get('target_far'), 'g')}; {cal.get('uncalibrated_rows', 0)} rows "
            "uncalibrated"))
    h = Table(title="Threshold consistency", title_justify="left")
    cols = ["OPIS", f"{100 * result.epsilon:g}%-OPIS"]
    row = [num(result.opis, ".5f"), num(result.epsilon_opis, ".5f")]
    if r is not None:  # None: not computed (evaluate(include=...) without "retrieval")
        rk = r.recall_at_k
        cols += ["R@1", "R@2", "R@4", "R@8", "MAP@R"]
        row += [*(num(rk.get(k), ".4f") for k in ("1", "2", "4", "8")), num(r.map_at_r, ".4f")]
        if r.r_precision is not None:
            cols.append("R-Prec")
            row.append(num(r.r_precision, ".4f"))
        cols.append("queries")
        row.append(str(r.queries))
    for col in cols:
        h.add_column(col, justify="right")
    h.add_row(*row)
    console.print(h)
    est = result.estimate
    if est is not None:  # SPEC 15: a sampling engine's numbers are estimates
        iv = est.intervals

        def span(name: str, fmt: str) -> str:
            lo, hi = iv.get(name, (None, None))
            return f"[{num(lo, fmt)}, {num(hi, fmt)}]"

        console.print(Text.assemble(
            ("Estimates", "bold"), f" (sampled pairs, seed {est.seed}; "
            f"{100 * est.confidence:g}% intervals): OPIS {span('opis', '.5f')}, "
            f"{100 * result.epsilon:g}%-OPIS {span('epsilon_opis', '.5f')}, "
            f"R@1 {span('recall_at_k.1', '.4f')}, MAP@R {span('map_at_r', '.4f')}, "
            + (f"R-Precision {span('r_precision', '.4f')}, " if "r_precision" in iv else "") +
            f"threshold {span('recommended_threshold.value', '.4g')}"))
    src = ("global FAR " + ":".join(f"{v:g}" for v in cr.far_requested)
           if cr.source == "far" and cr.far_requested else "explicit")
    console.print(
        f"[bold]Calibration range[/bold] ({src}): distance {cr.lower:.6g} .. {cr.upper:.6g}, "
        f"global FAR {pct(cr.far_lower)} .. {pct(cr.far_upper)}, "
        f"{len(result.thresholds)} thresholds")
    for t in _block_tables(cls, "class", unit):
        console.print(t)
    ver = _verification_table(result)
    if ver is not None:
        console.print(ver)
    if cls.excluded:
        shown = ", ".join(visible(lab) for lab in cls.excluded_labels[:EXCLUDED_SHOWN])
        more = f" and {cls.excluded - EXCLUDED_SHOWN} more" if cls.excluded > EXCLUDED_SHOWN else ""
        few = (f", or fewer than {result.min_class_rows} rows (--min-class-rows)"
               if result.min_class_rows > 2 else "")
        console.print(Text.assemble(("Excluded classes", "bold"),
                                    f" ({cls.excluded}; no positive or no negative pair, e.g. "
                                    f"a single sample{few}): {shown}{more}"))
    if result.groups is not None:
        g = result.groups
        console.print(Text.assemble(
            "\n", ("Groups", "bold"),
            f" (column '{visible(result.group_column)}'): OPIS {num(g.opis, '.5f')}, "
            f"{100 * result.epsilon:g}%-OPIS {num(g.epsilon_opis, '.5f')}; "
            f"{g.evaluated} groups evaluated, {g.excluded} excluded"))
        for t in _block_tables(g, "group", unit):
            console.print(t)


def print_bootstrap(boot: "Bootstrap") -> None:
    """The bootstrap intervals of OPIS and epsilon-OPIS, one line."""
    parts = []
    for m, name in (("opis", "OPIS"), ("epsilon_opis", "epsilon-OPIS")):
        lo, hi = boot.interval(m)
        parts.append(f"{name} {num(boot.estimate[m], '.5f')} [{num(lo, '.5f')}, {num(hi, '.5f')}]")
    console.print(f"[bold]Bootstrap over classes[/bold] ({boot.resamples} resamples of "
                  f"{boot.classes} classes, seed {boot.seed}, {100 * boot.confidence:g}% "
                  "percentile intervals): " + ";  ".join(parts))


def print_gate_outcome(outcome: "GateOutcome") -> None:
    """The rule table and the verdict."""
    with_base = any(r.baseline is not None for r in outcome.results)
    with_src = any(r.rule.source != "command line" for r in outcome.results)
    t = Table(title="Gate", title_justify="left")
    t.add_column("rule", no_wrap=True)
    t.add_column("value", justify="right")
    if with_base:
        t.add_column("baseline", justify="right")
    t.add_column("limit", justify="right")
    t.add_column("verdict")
    if with_src:
        t.add_column("from")
    for r in outcome.results:
        if r.interval is not None:
            limit = interval(r.interval.lower, r.interval.upper, "+.3g")
            value = num(r.value, "+.4g")
        else:
            limit, value = num(r.limit), num(r.value)
        row = [terminal_text(r.rule.text), value] + ([num(r.baseline)] if with_base else []) + [
            limit, Text("PASS", style="green") if r.passed else Text("FAIL", style="bold red")]
        if with_src:
            row.append(Text("option") if r.rule.source == "command line"
                       else terminal_text(Path(r.rule.source).name))
        t.add_row(*row)
    console.print(t)
    if any(r.interval is not None for r in outcome.results):
        console.print("ci rules: value = candidate - baseline; limit = its bootstrap interval, "
                      "which fails an increase rule when it lies entirely above 0 (a decrease "
                      "rule: below 0).", style="dim")
    for w in outcome.warnings:
        console.print(terminal_message(f"Warning: {w}", style="yellow"))
    n, f = len(outcome.results), outcome.failures
    if outcome.passed:
        console.print(Text(f"Gate passed: all {n} rules hold.", style="bold green"))
    else:
        console.print(Text(f"Gate FAILED: {f} of {n} rules broken.", style="bold red"))
        for r in outcome.results:
            if not r.passed:
                console.print(Text.assemble("  ", terminal_text(r.rule.text), ": ",
                                            terminal_message(r.message)))


def print_comparison(cmp: "Comparison", top: int) -> None:
    """The verdict (which model is more consistent), then headline deltas, their
    bootstrap intervals and the classes that changed most."""
    if cmp.verdict is not None:
        for r in verdict_renderables(cmp.verdict):
            console.print(r, soft_wrap=True)
    console.print(Text.assemble(("opis compare", "bold"),
                                f": baseline {visible(cmp.baseline)}  vs  candidate "
                                f"{visible(cmp.candidate)}  ("
                                + mode_text(cmp) + ")"))
    for w in cmp.warnings:
        console.print(terminal_message(f"Warning: {w}", style="yellow"))
    if cmp.disagreement:
        console.print(terminal_message(f"Note: {cmp.disagreement}", style="yellow"))
    t = Table(title="Headline metrics", title_justify="left")
    t.add_column("metric", no_wrap=True)
    for col in ("baseline", "candidate", "change", "relative"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("")
    style = {"better": "green", "worse": "red", "same": "dim", "": ""}
    for m in cmp.metrics:
        t.add_row(metric_label(m.name), num(m.baseline), num(m.candidate), num(m.change, "+.3g"),
                  pct(m.relative, "+.1f"), Text(change_word(cmp, m),
                                                     style=style.get(m.verdict, "")))
    console.print(t)
    for iv in cmp.intervals:
        console.print(f"{metric_label(iv.metric)}: change {num(iv.estimate, '+.4g')}, "
                      f"{100 * iv.confidence:g}% {iv.method} bootstrap interval "
                      f"{interval(iv.lower, iv.upper)}")
    for title, rows in (("Classes that got most worse", cmp.most_worse(top)),
                        ("Classes that got most better", cmp.most_better(top))):
        if not rows:
            console.print(f"[bold]{title}[/bold]: none")
            continue
        c = Table(title=f"{title} (mean utility; FAR / FRR at each model's threshold)",
                  title_justify="left")
        for col in ("class", "mean utility", "change", "FAR", "FRR"):
            c.add_column(col, justify="left" if col == "class" else "right")
        for r in rows:
            c.add_row(terminal_text(r.label), f"{num(r.baseline_mean_utility, '.4f')} -> "
                      f"{num(r.candidate_mean_utility, '.4f')}", num(r.change, "+.4f"),
                      f"{pct(r.baseline_far)} -> {pct(r.candidate_far)}",
                      f"{pct(r.baseline_frr)} -> {pct(r.candidate_frr)}")
        console.print(c)
    if cmp.only_baseline or cmp.only_candidate:
        only_b = ", ".join(visible(lab) for lab in cmp.only_baseline) or "-"
        only_c = ", ".join(visible(lab) for lab in cmp.only_candidate) or "-"
        console.print(Text(f"Classes only in the baseline: {only_b}; only in the candidate: "
                           f"{only_c}"))
    print_diagnosis_change(cmp)
    print_deployment(cmp.deployment)


def print_deployment(dep) -> None:
    """The deployment view: both models at one deployed threshold."""
    if dep is None:
        return
    if not dep.available:
        console.print(terminal_message(f"Deployment view: not shown: {dep.missing}",
                                       style="yellow"))
        return
    t = Table(title=deployment_title(dep), title_justify="left")
    t.add_column("at this threshold", no_wrap=True)
    t.add_column("baseline", justify="right", no_wrap=True)
    t.add_column("candidate", justify="right", no_wrap=True)
    for row in deployment_rows(dep):
        t.add_row(*row)
    console.print(t)
    line = dep.sentence()
    if line:
        console.print(terminal_message(f"Deployment: {line[0].upper()}{line[1:]}.",
                                       style="bold red"))


# -- SPEC 16: where the threshold fails (--diagnose) ----------------------------------
DIAGNOSIS_CLASSES = 5
SUSPECTS_SHOWN = 10
OVERLAP_SHOWN = 10


def print_diagnosis(result: EvaluationResult) -> None:
    """For the worst classes, their top impostors (with shares) and the rows that
    take their false rejects; the most overlapping pairs; duplicates; suspects."""
    d = result.diagnosis
    if d is None:
        return
    console.print(Text.assemble(
        "\n", ("Where it fails", "bold"),
        f" at distance {d.threshold:.6g}: {d.overlap_count} overlapping class "
        f"pairs (level {d.level:g}), {len(d.suspects)} suspect rows of "
        f"{d.queries_with_positives} queries with a positive, {d.duplicate_groups} duplicate "
        f"groups across labels ({d.duplicate_rows} rows)"))
    if d.source_note:  # not counted over every pair (knn candidates, sampled estimate)
        console.print(Text(d.source_note, style="yellow"))
    worst = [c.label for c in result.classes.per_class[:DIAGNOSIS_CLASSES]]
    t = Table(title=f"Worst {len(worst)} classes: impostors and rejected rows",
              title_justify="left")
    for col in ("class", "FAR", "FRR", "impostors (accepts, share)", "rejected rows (row: FRR)"):
        t.add_column(col, justify="right" if col in ("FAR", "FRR") else "left")
    by_label = {c.label: c for c in result.classes.per_class}
    for lab in worst:
        imp = Text(", ").join(
            Text.assemble(terminal_text(i.label), f" ({i.accepts}, {pct(i.share)})")
            for i in d.impostors.get(lab, ())[:3]) or Text("-")
        rej = ", ".join(f"{r.row}: {pct(r.frr)}" for r in d.rejected_rows.get(lab, ())) or "-"
        c = by_label[lab]
        t.add_row(terminal_text(lab), pct(c.far_at_threshold), pct(c.frr_at_threshold), imp, rej)
    console.print(t)
    if d.overlap_top:
        o = Table(title=f"Most overlapping class pairs ({d.overlap_count} in all"
                        + (f"; {d.overlap_tied} tied with the last shown" if d.overlap_tied else "")
                        + ")", title_justify="left")
        for col in ("a", "b", "overlap", "a->b accepts", "b->a accepts", "pairs"):
            o.add_column(col, justify="left" if col in ("a", "b") else "right")
        for p in d.overlap_top[:OVERLAP_SHOWN]:
            o.add_row(terminal_text(p.a), terminal_text(p.b), pct(p.overlap), str(p.accepts_ab),
                      str(p.accepts_ba), str(p.pairs_ab + p.pairs_ba))
        console.print(o)
    if d.duplicate_top:
        console.print(Text.assemble(("Duplicate rows across labels", "bold"), ": ", Text("; ").join(
            Text.assemble(terminal_text(p.a), " / ", terminal_text(p.b), f" ({p.shared})")
            for p in d.duplicate_top[:OVERLAP_SHOWN])))
    if d.suspects:
        s = Table(title=f"Suspect labels ({len(d.suspects)} rows; first {min(SUSPECTS_SHOWN, len(d.suspects))})",
                  title_justify="left")
        for col in ("row", "label", "looks like", "nearest positive"):
            s.add_column(col, justify="right" if col in ("row", "nearest positive") else "left")
        for r in d.suspects[:SUSPECTS_SHOWN]:
            s.add_row(str(r.row), terminal_text(r.label), terminal_text(r.looks_like),
                      num(r.nearest_positive, ".4g"))
        console.print(s)


def print_diagnosis_change(cmp: "Comparison") -> None:
    """Overlapping pairs and suspect rows that appear or disappear (SPEC 16 on both sides)."""
    d = getattr(cmp, "diagnosis", None)
    if d is None:
        return
    listed = "" if d.overlap_complete else " (among the 20 most overlapping of each side)"

    def pairs(ps) -> Text:
        return Text(", ").join(Text.assemble(terminal_text(a), " ~ ", terminal_text(b))
                               for a, b in ps[:OVERLAP_SHOWN]) or Text("-")

    def rows(rs) -> str:
        more = f" and {len(rs) - SUSPECTS_SHOWN} more" if len(rs) > SUSPECTS_SHOWN else ""
        return (", ".join(str(r) for r in rs[:SUSPECTS_SHOWN]) or "-") + more

    console.print(Text.assemble(
        ("Where it fails", "bold"),
        f" (baseline at {d.baseline_threshold:.6g}, candidate at {d.candidate_threshold:.6g}): "
        f"overlapping class pairs {d.baseline_overlapping} -> {d.candidate_overlapping}, "
        f"suspect rows {d.baseline_suspects} -> {d.candidate_suspects}"))
    console.print(Text.assemble(f"  new overlapping pairs{listed}: ", pairs(d.overlap_new)))
    console.print(Text.assemble(f"  overlapping pairs gone{listed}: ", pairs(d.overlap_gone)))
    console.print(f"  new suspect rows: {rows(d.suspects_new)}")
    console.print(f"  suspect rows gone: {rows(d.suspects_gone)}")
