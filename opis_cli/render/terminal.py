"""People-facing terminal output (rich), always on standard error.

Reads a finished ``EvaluationResult``; computes nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..results import ConsistencyBlock, EvaluationResult

console = Console(stderr=True, highlight=False)

WORST_SHOWN = 10
EXCLUDED_SHOWN = 20


def _f(v: float | None, fmt: str = ".4f") -> str:
    if v is None or v != v:
        return "-"
    return format(v, fmt)


def _pct(v: float | None) -> str:
    if v is None or v != v:
        return "-"
    return f"{100 * v:.2f}%"


@contextmanager
def progress_bar(enabled: bool) -> Iterator:
    """A ``progress(stage, done, total)`` callback drawing a rich bar on stderr."""
    if not enabled:
        yield None
        return
    bar = Progress(TextColumn("{task.description:>16}"), BarColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
    tasks: dict[str, int] = {}

    def callback(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    with bar:
        yield callback


def _block_tables(block: ConsistencyBlock, noun: str, thresholds_unit: str) -> list:
    rt = block.recommended_threshold
    out = []
    t = Table(title=f"Recommended threshold ({rt.policy})", title_justify="left",
              show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("threshold", f"{rt.value:.6g} {thresholds_unit}")
    t.add_row("mean utility", _f(rt.mean_utility))
    t.add_row("global TPR / FRR", f"{_pct(rt.tpr)} / {_pct(rt.frr)}")
    t.add_row("global FAR", _pct(rt.far) + (f"  (asked <= {_pct(rt.requested_far)})"
                                            if rt.requested_far is not None else ""))
    t.add_row(f"{noun}es with FAR > 2x global" if noun == "class" else f"{noun}s with FAR > 2x global",
              _pct(rt.fraction_far_above_2x))
    out.append(t)
    s = Table(title=f"Per-{noun} spread at the threshold", title_justify="left")
    s.add_column("rate")
    for name in ("min", "p5", "p50", "p95", "max"):
        s.add_column(name, justify="right")
    for name, sp in (("FAR", rt.far_spread), ("FRR", rt.frr_spread)):
        s.add_row(name, *(_pct(getattr(sp, k)) for k in ("min", "p5", "p50", "p95", "max")))
    out.append(s)
    worst = Table(title=f"Worst {min(WORST_SHOWN, len(block.per_class))} {noun}es by mean utility"
                  if noun == "class" else
                  f"Worst {min(WORST_SHOWN, len(block.per_class))} {noun}s by mean utility",
                  title_justify="left")
    for col in (noun, "mean utility", "FAR", "FRR", "R@1", "positives", "negatives"):
        worst.add_column(col, justify="left" if col == noun else "right")
    for c in block.per_class[:WORST_SHOWN]:
        worst.add_row(c.label, _f(c.mean_utility), _pct(c.far_at_threshold),
                      _pct(c.frr_at_threshold), _f(c.recall_at_1, ".3f"), str(c.positives),
                      str(c.negatives))
    out.append(worst)
    return out


def print_result(result: EvaluationResult, source: str = "") -> None:
    """Headline numbers, calibration range, recommended threshold, worst classes."""
    cr = result.calibration_range
    r = result.retrieval
    cls = result.classes
    unit = "(cosine distance)" if result.metric == "cosine" else "(L2 distance)"
    console.print(
        f"[bold]opis[/bold] {source}: {result.n_samples} rows x {result.dim} dims, metric "
        f"{result.metric}, utility {result.utility} (beta {result.beta:g}); "
        f"{cls.evaluated} classes evaluated, {cls.excluded} excluded")
    h = Table(title="Threshold consistency", title_justify="left")
    for col in ("OPIS", f"{100 * result.epsilon:g}%-OPIS", "R@1", "R@2", "R@4", "R@8", "MAP@R",
                "queries"):
        h.add_column(col, justify="right")
    rk = r.recall_at_k
    h.add_row(_f(result.opis, ".5f"), _f(result.epsilon_opis, ".5f"), _f(rk.get("1")),
              _f(rk.get("2")), _f(rk.get("4")), _f(rk.get("8")), _f(r.map_at_r), str(r.queries))
    console.print(h)
    src = ("global FAR " + ":".join(f"{v:g}" for v in cr.far_requested)
           if cr.source == "far" and cr.far_requested else "explicit")
    console.print(
        f"[bold]Calibration range[/bold] ({src}): distance {cr.lower:.6g} .. {cr.upper:.6g}, "
        f"global FAR {_pct(cr.far_lower)} .. {_pct(cr.far_upper)}, "
        f"{len(result.thresholds)} thresholds")
    for t in _block_tables(cls, "class", unit):
        console.print(t)
    if cls.excluded:
        shown = ", ".join(cls.excluded_labels[:EXCLUDED_SHOWN])
        more = f" and {cls.excluded - EXCLUDED_SHOWN} more" if cls.excluded > EXCLUDED_SHOWN else ""
        console.print(f"[bold]Excluded classes[/bold] ({cls.excluded}; no positive or no negative "
                      f"pair, e.g. a single sample): {shown}{more}")
    if result.groups is not None:
        g = result.groups
        console.print(
            f"\n[bold]Groups[/bold] (column {result.group_column!r}): OPIS {_f(g.opis, '.5f')}, "
            f"{100 * result.epsilon:g}%-OPIS {_f(g.epsilon_opis, '.5f')}; "
            f"{g.evaluated} groups evaluated, {g.excluded} excluded")
        for t in _block_tables(g, "group", unit):
            console.print(t)
