"""The notebook face of a result: a short HTML summary and figures drawn into
the caller's matplotlib axes (scikit-learn's Display style).

``EvaluationResult._repr_html_``, ``plot_utility``, ``plot_far_frr`` and
``plot_det`` delegate here. The figures are those of the HTML report (the
``draw_*`` functions of :mod:`opis_cli.render.report.plots`); matplotlib is
imported only when a figure is drawn, and ``pyplot`` only when no ``ax`` is
given. Every label is escaped (:mod:`opis_cli.render.escape`, then HTML).

The result types are named as strings, not imported (the result imports
this module lazily; an import back would close a cycle).
"""

from __future__ import annotations

import html
from typing import Any

from .escape import visible
from .format import num, pct

__all__ = ["plot_utility", "plot_far_frr", "plot_det", "repr_html", "short_repr"]

#: rows of the worst-classes table of ``_repr_html_``
WORST_SHOWN = 10

_ANSWER_COLOR = {"yes": "#059669", "partly": "#d97706", "no": "#dc2626"}


def _esc(v: Any) -> str:
    return html.escape(visible(v), quote=True)


def _axes(ax, size=(8.0, 4.8)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def _title(ax, title: str, subtitle: str) -> None:
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")


def plot_utility(result: "EvaluationResult", ax=None, *, level: str = "class",
                 curves: "Curves | None" = None):
    """Per-class (``level="group"``: per-group) utility across the calibration range
    into ``ax`` (a new figure when None); returns ``ax``. ``curves`` defaults to the
    in-process result's own (a result read from JSON has none: then only the mean
    curves are drawn)."""
    from .report.plots import draw_utility

    if curves is None:
        block = result.classes if level == "class" else result.groups
        curves = block.curves if block is not None else None
    ax = _axes(ax)
    _title(ax, *draw_utility(ax, result, curves, level=level))
    return ax


def plot_far_frr(result: "EvaluationResult", ax=None, *, level: str = "class"):
    """Per-class FAR and FRR at the recommended threshold into ``ax``; returns ``ax``."""
    from .report.plots import draw_far_frr

    ax = _axes(ax)
    _title(ax, *draw_far_frr(ax, result, level=level))
    return ax


def plot_det(result: "EvaluationResult", ax=None):
    """The DET curve of the verification view into ``ax``; returns ``ax``.

    Raises ValueError when the result has no verification view (evaluate with
    ``verification=True``)."""
    from .report.plots import draw_det

    if result.verification is None or not result.verification.det:
        raise ValueError("this result has no verification view: evaluate with "
                         "verification=True (--verification) to draw the DET curve")
    ax = _axes(ax, (6.4, 5.6))
    _title(ax, *draw_det(ax, result))
    return ax


def short_repr(result: "EvaluationResult") -> str:
    """A few lines: verdict, OPIS, threshold, classes (no per-class data)."""
    cls, rt, r = result.classes, result.recommended_threshold, result.retrieval
    eps = f"{100 * result.epsilon:g}%"
    lines = [f"EvaluationResult({result.n_samples:,} rows x {result.dim} dims, metric "
             f"{result.metric}, utility {result.utility})",
             f"  verdict: {result.verdict.sentence}",
             f"  OPIS {num(result.opis, '.5g')}, {eps}-OPIS {num(result.epsilon_opis, '.5g')}, "
             f"R@1 {num(r.recall_at_k.get('1'), '.4f')}, MAP@R {num(r.map_at_r, '.4f')}",
             f"  threshold {num(rt.value, '.6g')} ({rt.policy}): global FAR {pct(rt.far)}, "
             f"FRR {pct(rt.frr)}",
             f"  classes: {cls.evaluated:,} evaluated, {cls.excluded:,} excluded"]
    if result.groups is not None:
        g = result.groups
        lines.append(f"  groups: {g.evaluated:,} evaluated, OPIS {num(g.opis, '.5g')}")
    return "\n".join(visible(line) for line in lines)


def repr_html(result: "EvaluationResult") -> str:
    """The verdict, the headline cards and the worst classes, as one HTML fragment."""
    v = result.verdict
    rt, r, cls = result.recommended_threshold, result.retrieval, result.classes
    color = _ANSWER_COLOR.get(v.answer, "#4b5563")
    notes = "".join(f"<li>{_esc(n)}</li>" for n in v.notes)
    cards = [("OPIS", num(result.opis, ".4g")),
             (f"{100 * result.epsilon:g}%-OPIS", num(result.epsilon_opis, ".4g")),
             ("R@1", pct(r.recall_at_k.get("1"))), ("MAP@R", num(r.map_at_r, ".4f")),
             ("threshold", f"{num(rt.value, '.4g')} ({rt.policy})"),
             ("global FAR / FRR", f"{pct(rt.far)} / {pct(rt.frr)}"),
             ("classes", f"{cls.evaluated:,} evaluated, {cls.excluded:,} excluded")]
    card_html = "".join(
        '<div style="border:1px solid #e5e7eb;border-radius:8px;padding:6px 10px">'
        f'<div style="font-size:11px;color:#4b5563;text-transform:uppercase">{_esc(k)}</div>'
        f'<div style="font-size:17px;font-weight:700">{_esc(val)}</div></div>'
        for k, val in cards)
    rows = "".join(
        f"<tr><td style=\"text-align:left\">{_esc(c.label)}</td>"
        f"<td>{_esc(num(c.mean_utility, '.4f'))}</td><td>{_esc(pct(c.far_at_threshold))}</td>"
        f"<td>{_esc(pct(c.frr_at_threshold))}</td><td>{c.positives:,}</td></tr>"
        for c in cls.per_class[:WORST_SHOWN])
    shown = min(WORST_SHOWN, len(cls.per_class))
    return (
        '<div class="opis-result" style="font-family:system-ui,sans-serif;max-width:900px">'
        f'<div class="opis-verdict" data-answer="{_esc(v.answer)}" style="border-left:5px solid '
        f'{color};padding:6px 12px;margin:4px 0 10px">'
        f'<div style="color:#4b5563;font-size:12px">{_esc(v.question)}</div>'
        f'<div style="font-size:15px"><b style="color:{color}">{_esc(v.sentence)}</b></div>'
        + (f'<ul style="margin:4px 0 0;font-size:13px;color:#4b5563">{notes}</ul>'
           if notes else "")
        + "</div>"
        '<div style="display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));'
        f'gap:8px;margin-bottom:10px">{card_html}</div>'
        f"<div style=\"font-weight:600\">Worst {shown} classes by mean utility</div>"
        '<table class="opis-worst"><thead><tr><th style="text-align:left">class</th>'
        "<th>mean utility</th><th>FAR</th><th>FRR</th><th>positives</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>")
