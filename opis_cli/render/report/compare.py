"""The before/after report of ``opis compare --report DIR``.

Figures overlay the two models (baseline grey and dashed, candidate blue and
solid) and only read the two results and the :class:`~opis_cli.gate.compare.Comparison`
(nothing is recomputed). matplotlib is imported lazily, inside the functions,
on the Agg canvas (no ``pyplot``), like ``plots.py``, whose colours, units
and PNG writer are reused. The page is one self-contained HTML file (PNG
figures inlined as base64, every label escaped); the PNGs are also written
next to it.

Distances: smaller = more similar, a pair is accepted at ``t`` when ``d <= t``.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...gate.rules import DIRECTION
from ..escape import visible
from ..format import (change_word, deployment_rows, deployment_title, interval, mode_text,
                      num, pct)
from .html import card, gate_html, page, verdict_html
from .plots import _legend as below
from .plots import (C_CLASS, C_GOOD, C_MEAN, C_THRESHOLD, C_WORST, DPI, UTILITY_NAMES,
                    distance_unit, short_label, to_png)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ...gate.compare import Comparison
    from ...gate.rules import GateOutcome
    from ...results import Curves, EvaluationResult

COMPARE_FILE = "compare.html"
#: figure names, in the order the page shows them
FIGURES = ("mean_utility", "class_curves", "class_changes", "far_frr_changes")
#: at most this many classes in the per-class change chart (the most changed)
MAX_CHANGES = 40
#: at most this many per-class curves drawn per panel
MAX_LINES = 60
#: at most this many classes drawn as arrows in the FAR/FRR figure
MAX_ARROWS = 200

C_BASE = "#6b7280"  # baseline: grey, dashed
C_CAND = C_GOOD     # candidate: blue, solid


def _figure(width: float, height: float, ncols: int = 1, sharey: bool = False):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, sharey=sharey, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def _legend(ax, ncol: int = 2) -> None:
    """The legend under the axes (as in the evaluate report), so it never hides a point."""
    leg = below(ax, ncol=ncol, fontsize=7.5)
    for t in leg.get_texts():
        t.set_parse_math(False)  # file names and labels are drawn literally


def _titles(fig, ax, title: str, subtitle: str = "") -> None:
    fig.suptitle(title, x=0.01, ha="left", fontsize=13, fontweight="bold")
    if subtitle:
        ax.set_title(subtitle, loc="left", fontsize=9, color="#4b5563")


def _names(cmp: "Comparison") -> tuple[str, str]:
    return (f"baseline ({short_label(Path(cmp.baseline).name, 28)})",
            f"candidate ({short_label(Path(cmp.candidate).name, 28)})")


def _unit(base: "EvaluationResult", cand: "EvaluationResult") -> str:
    u = distance_unit(cand.metric)
    return u if base.metric == cand.metric else f"{distance_unit(base.metric)} / {u}"


# -- 1. mean and worst-class utility ----------------------------------------------
def mean_utility_figure(cmp: "Comparison", base: "EvaluationResult",
                        cand: "EvaluationResult") -> "Figure":
    """Mean utility ``Ubar(t)`` and the worst-epsilon mean of both models.

    On the same thresholds (``--same-thresholds``) the two models share one
    axis; otherwise each model has its own panel with its own threshold axis
    (two models' distances live on different scales: one shared axis would
    squeeze the model with the narrower range), the utility axis shared.
    """
    nb, nc = _names(cmp)
    sides = ((base, nb, C_BASE, "--", "baseline"), (cand, nc, C_CAND, "-", "candidate"))
    together = cmp.same_thresholds
    if together:
        fig, axes = _figure(9.0, 5.6)
        panels = [(axes[0], sides)]
    else:
        fig, axes = _figure(11.0, 5.6, ncols=2, sharey=True)
        panels = [(axes[0], sides[:1]), (axes[1], sides[1:])]
    for ax, group in panels:
        for res, name, color, ls, key in group:
            th = np.asarray(res.thresholds, dtype=np.float64)
            who = f"{name}: " if together else ""
            ax.plot(th, res.classes.mean_utility, color=color, lw=2.2, ls=ls, zorder=4,
                    gid=f"{key}-mean-curve", label=f"{who}mean over classes")
            if res.classes.worst_mean_utility:
                ax.plot(th, res.classes.worst_mean_utility, color=color, lw=1.4, ls=ls,
                        alpha=0.7, marker="v", markevery=max(1, len(th) // 10), ms=4, zorder=3,
                        gid=f"{key}-worst-curve",
                        label=f"{who}worst {100 * res.epsilon:g}% of classes")
            rt = res.recommended_threshold
            ax.axvline(rt.value, color=color, lw=1.2, ls=":", zorder=2,
                       gid=f"{key}-threshold",
                       label=f"{who}recommended threshold {rt.value:.4g}")
            if not together:
                ax.set_xlim(*_own_range(res))
                t = ax.set_title(f"{name}: OPIS {res.opis:.4g}, {100 * res.epsilon:g}%-OPIS "
                                 f"{res.epsilon_opis:.4g}", loc="left", fontsize=9,
                                 color=color if key == "candidate" else "#374151")
                t.set_parse_math(False)
                ax.set_xlabel(f"threshold ({distance_unit(res.metric)})")
        ax.set_ylim(-0.01, 1.03)
        if together:
            ax.set_xlabel(f"threshold ({_unit(base, cand)}; pairs at or below it are "
                          "accepted)")
        _legend(ax, ncol=1 if together else 2)
    axes[0].set_ylabel(f"utility ({UTILITY_NAMES.get(cand.utility, cand.utility)}, "
                       f"beta {cand.beta:g})")
    if together:
        o = cmp.metric("opis")
        e = cmp.metric("epsilon_opis")
        _titles(fig, axes[0], "Mean utility before and after, on the same thresholds",
                f"OPIS {o.baseline:.4g} -> {o.candidate:.4g},  {100 * cand.epsilon:g}%-OPIS "
                f"{e.baseline:.4g} -> {e.candidate:.4g}.  The closer the worst-class curve "
                "to the mean, the better one threshold serves every class.")
    else:
        fig.suptitle("Mean utility before (left) and after (right), each model on its own "
                     "thresholds", x=0.01, ha="left", fontsize=13, fontweight="bold")
    return fig


def _own_range(res: "EvaluationResult") -> tuple[float, float]:
    """The x limits of one model's panel: its own grid, a little padded."""
    lo, hi = float(res.thresholds[0]), float(res.thresholds[-1])
    pad = 0.02 * ((hi - lo) or abs(hi) or 1.0)
    return lo - pad, hi + pad


# -- 2. per-class curves, side by side ---------------------------------------------
def curves_note(missing: list[str]) -> str:
    """Why a side's per-class curves are not drawn, and how to get them (one line)."""
    if not missing:
        return ""
    who = " and ".join(missing)
    opts = " / ".join(f"--{m}-curves" for m in missing)
    files = "file" if len(missing) == 1 else "files"
    return (f"No {who} per-class curves (a result JSON holds none): compare the embeddings "
            f"{files}, or pass {opts} FILE written by opis evaluate --curves.")


def class_curves_figure(cmp: "Comparison", base: "EvaluationResult",
                        cand: "EvaluationResult", base_curves: "Curves | None" = None,
                        cand_curves: "Curves | None" = None) -> "Figure | None":
    """Per-class utility curves of each model in its own panel (own threshold axis,
    shared utility axis).

    A side's curves are its in-process ones or the ``--curves`` table given for it
    (``base_curves`` / ``cand_curves``). A side without curves gets no panel (the
    title says why and how to get them); with neither side's curves there is no
    figure (``None``).
    """
    sides = [(res, cv if cv is not None else res.curves, name, color, key)
             for res, cv, name, color, key in (
                 (base, base_curves, _names(cmp)[0], C_BASE, "baseline"),
                 (cand, cand_curves, _names(cmp)[1], C_CAND, "candidate"))]
    drawn = [s for s in sides if s[1] is not None]
    missing = [s[4] for s in sides if s[1] is None]
    if not drawn:
        return None
    fig, axes = _figure(11.0 if len(drawn) == 2 else 9.0, 5.2, ncols=len(drawn), sharey=True)
    for ax, (res, cv, name, color, key) in zip(axes, drawn):
        th = np.asarray(res.thresholds, dtype=np.float64)
        worst = {c.label for c in res.classes.per_class if c.worst}
        rows = np.unique(np.round(np.linspace(0, len(cv.labels) - 1,
                                              min(MAX_LINES, len(cv.labels)))).astype(int))
        for i in rows:
            w = cv.labels[i] in worst
            ax.plot(th, cv.utility[i], color=C_WORST if w else C_CLASS, lw=0.9,
                    alpha=0.7 if w else 0.45, zorder=2, gid=f"{key}-class-curve")
        ax.plot(th, res.classes.mean_utility, color=C_MEAN, lw=2.2, zorder=4,
                gid=f"{key}-mean-curve", label="mean over classes")
        ax.axvline(res.recommended_threshold.value, color=C_THRESHOLD, lw=1.6, ls="-.",
                   zorder=5, gid=f"{key}-threshold",
                   label=f"recommended threshold {res.recommended_threshold.value:.4g}")
        ax.set_xlim(*_own_range(res))
        ax.set_ylim(-0.01, 1.03)
        ax.set_xlabel(f"threshold ({distance_unit(res.metric)})")
        title = f"{name}: OPIS {res.opis:.4g}"
        if missing:  # the note on two lines: the panel is narrower than the sentence
            title += "\n" + curves_note(missing).replace(": ", ":\n", 1)
        t = ax.set_title(title, loc="left", fontsize=9, wrap=False,
                         color=color if key == "candidate" else "#374151")
        t.set_parse_math(False)
        _legend(ax)
    axes[0].set_ylabel(f"utility ({UTILITY_NAMES.get(cand.utility, cand.utility)})")
    what = ("before (left) and after (right)" if len(drawn) == 2 else
            "after" if drawn[0][4] == "candidate" else "before")
    fig.suptitle(f"Per-class utility curves {what}; red: worst {100 * cand.epsilon:g}%",
                 x=0.01, ha="left", fontsize=13, fontweight="bold")
    return fig


# -- 3. per-class mean utility, before -> after -------------------------------------
def class_changes_figure(cmp: "Comparison") -> "Figure":
    """Each common class's mean utility, baseline (grey) to candidate (red if worse, blue if better)."""
    rows = list(cmp.classes)
    if len(rows) > MAX_CHANGES:
        rows = sorted(rows, key=lambda c: (-abs(c.change), c.label))[:MAX_CHANGES]
        rows.sort(key=lambda c: (c.change, c.label))
    n = len(rows)
    fig, (ax,) = _figure(9.0, max(3.4, 1.9 + 0.28 * n))
    ax.grid(False, axis="y")
    y = np.arange(n)[::-1]
    b = np.array([c.baseline_mean_utility for c in rows], dtype=np.float64)
    a = np.array([c.candidate_mean_utility for c in rows], dtype=np.float64)
    worse = a < b
    ax.hlines(y, b, a, color=np.where(worse, C_WORST, C_CAND).tolist(), lw=2, zorder=2,
              gid="change-segments")
    ax.scatter(b, y, s=36, color=C_BASE, zorder=3, gid="baseline-points",
               label=_names(cmp)[0])
    ax.scatter(a[worse], y[worse], s=40, color=C_WORST, zorder=4, gid="worse-points",
               label="candidate, worse")
    ax.scatter(a[~worse], y[~worse], s=40, color=C_CAND, zorder=4, gid="better-points",
               label="candidate, better or same")
    ax.set_yticks(y, [short_label(c.label) for c in rows], fontsize=8)
    for t in ax.get_yticklabels():
        t.set_parse_math(False)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("mean utility of the class (range average over the calibration range)")
    _legend(ax, ncol=3)
    nw = int(sum(c.change < 0 for c in cmp.classes))
    nb = int(sum(c.change > 0 for c in cmp.classes))
    shown = f"the {n} most changed of {len(cmp.classes)}" if n < len(cmp.classes) else \
        f"all {n}"
    _titles(fig, ax, "Per-class mean utility before and after",
            f"{nw} classes got worse, {nb} better ({shown} common classes shown, most worsened "
            "at the top).")
    return fig


# -- 4. FAR and FRR per class at each model's threshold ------------------------------
def far_frr_figure(cmp: "Comparison", base: "EvaluationResult",
                   cand: "EvaluationResult") -> "Figure":
    """Arrows from each class's (FAR, FRR) under the baseline to the candidate's."""
    from matplotlib.ticker import PercentFormatter

    rows = list(cmp.classes)
    if len(rows) > MAX_ARROWS:
        rows = sorted(rows, key=lambda c: (-abs(c.change), c.label))[:MAX_ARROWS]
    fig, (ax,) = _figure(9.0, 5.4)
    bx = np.array([c.baseline_far for c in rows]); by = np.array([c.baseline_frr for c in rows])
    cx = np.array([c.candidate_far for c in rows]); cy = np.array([c.candidate_frr for c in rows])
    for i in range(len(rows)):
        ax.annotate("", (cx[i], cy[i]), (bx[i], by[i]), zorder=2,
                    arrowprops=dict(arrowstyle="->", color="#9ca3af", lw=0.8))
    ax.scatter(bx, by, s=26, color=C_BASE, zorder=3, gid="baseline-points",
               label=_names(cmp)[0])
    ax.scatter(cx, cy, s=30, color=C_CAND, zorder=4, gid="candidate-points",
               label=_names(cmp)[1])
    for res, color, key, name in ((base, C_BASE, "baseline", "baseline"),
                                  (cand, C_CAND, "candidate", "candidate")):
        rt = res.recommended_threshold
        ax.plot([rt.far], [rt.frr], marker="*", ms=15, color=color, mec="white", mew=1,
                ls="none", zorder=6, gid=f"{key}-global-point",
                label=f"{name} global: FAR {100 * rt.far:.2f}%, FRR {100 * rt.frr:.2f}%")
    if len(rows) <= 30:
        for c in rows:
            t = ax.annotate(short_label(c.label, 20), (c.candidate_far, c.candidate_frr),
                            xytext=(4, 3), textcoords="offset points", fontsize=7,
                            color="#1f2937", zorder=5)
            t.set_parse_math(False)
    vals = np.r_[bx, cx, base.recommended_threshold.far, cand.recommended_threshold.far]
    ax.set_xlim(0, float(np.nanmax(vals)) * 1.1 or 1.0)
    vals = np.r_[by, cy, base.recommended_threshold.frr, cand.recommended_threshold.frr]
    ax.set_ylim(0, min(1.0, float(np.nanmax(vals)) * 1.1) or 1.0)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("false accept rate of the class (FAR) at the model's recommended threshold")
    ax.set_ylabel("false reject rate of the class (FRR)")
    _legend(ax)
    _titles(fig, ax, "Per-class FAR and FRR, before -> after",
            "Each arrow goes from a class's operating point under the baseline to the "
            "candidate's (each at its own recommended threshold).\nA tighter cloud means one "
            "threshold treats the classes more alike.")
    return fig


def all_figures(cmp: "Comparison", base: "EvaluationResult", cand: "EvaluationResult",
                base_curves: "Curves | None" = None,
                cand_curves: "Curves | None" = None) -> dict[str, "Figure"]:
    """Every figure of the comparison page, by file stem, in display order (the
    per-class curves only when at least one side has them)."""
    figs = {"mean_utility": mean_utility_figure(cmp, base, cand),
            "class_curves": class_curves_figure(cmp, base, cand, base_curves, cand_curves),
            "class_changes": class_changes_figure(cmp),
            "far_frr_changes": far_frr_figure(cmp, base, cand)}
    return {k: v for k, v in figs.items() if v is not None}


# -- the page ---------------------------------------------------------------------------


def _verdict(cmp: "Comparison", outcome: "GateOutcome | None") -> str:
    """Which model is more consistent, first; the gate outcome beside it."""
    if cmp.verdict is None:
        return gate_html(outcome) if outcome is not None else ""
    return verdict_html(cmp.verdict, outcome)  # the page's heading asks the question


#: the headline metrics by name, with their direction, as people read them
METRIC_NAMES = {
    "opis": "OPIS", "epsilon_opis": "epsilon-OPIS (worst classes vs the rest)",
    "recall_at_1": "R@1", "recall_at_2": "R@2", "recall_at_4": "R@4", "recall_at_8": "R@8",
    "map_at_r": "MAP@R", "r_precision": "R-precision", "threshold": "recommended threshold",
    "mean_utility": "mean utility at the threshold",
    "worst_mean_utility": "mean utility of the worst classes at the threshold",
    "tpr": "global TPR at the threshold", "far": "global FAR at the threshold",
    "frr": "global FRR at the threshold",
    "fraction_far_above_2x": "classes with FAR > 2x global", "far_ratio": "worst FAR / global",
    "frr_ratio": "worst FRR / global", "fdr": "FDR (fairness discrepancy rate)",
    "garbe": "GARBE (Gini aggregation rate)", "inequity_rate": "inequity rate",
    "fdr_mean": "FDR, range mean", "garbe_mean": "GARBE, range mean",
}


def metric_name(key: str) -> str:
    """``OPIS (lower is better)``: a headline metric as people read it."""
    d = DIRECTION.get(key, 0)
    way = " (lower is better)" if d < 0 else " (higher is better)" if d > 0 else ""
    return METRIC_NAMES.get(key, key) + way


def _cards(cmp: "Comparison") -> str:
    """Baseline -> candidate of the numbers a reader looks at first."""
    out = []
    for key, fmt, hint in (
            ("opis", ".4g", "How much per-class utility varies; lower is more consistent."),
            ("epsilon_opis", ".4g", "Gap between the worst classes and the rest; lower is better."),
            ("recall_at_1", ".4f", "Queries whose nearest neighbour has their label."),
            ("threshold", ".4g", "Each model's own recommended threshold (distances).")):
        try:
            m = cmp.metric(key)
        except StopIteration:
            continue
        out.append(card(METRIC_NAMES.get(key, key).split(" (")[0],
                        f"{num(m.baseline, fmt)} \u2192 {num(m.candidate, fmt)}", hint))
    return '<section id="summary" class="cards pairs">' + "".join(out) + "</section>"


def render_page(cmp: "Comparison", images: dict[str, bytes],
                outcome: "GateOutcome | None" = None, curves_missing: tuple[str, ...] = ()) -> str:
    """The comparison page in the evaluate report's look: the verdict (which model is
    more consistent) with the gate beside it, cards, headline deltas, class changes,
    the deployment view and the figures."""
    def e(value) -> str:
        return html.escape(visible(value))

    parts = [_cards(cmp),
             f"<p>Baseline <code>{e(cmp.baseline)}</code>, candidate "
             f"<code>{e(cmp.candidate)}</code>; "
             + e(mode_text(cmp)) + ".</p>"]
    for w in cmp.warnings:
        parts.append(f"<p class=\"warn\">Warning: {e(w)}</p>")
    if cmp.disagreement:
        parts.append(f"<p class=\"warn\">Note: {e(cmp.disagreement)}</p>")
    parts += ['<section id="metrics"><h2>Headline metrics</h2>',
              '<div class="box"><table><tr><th>metric</th><th>baseline</th>'
              "<th>candidate</th><th>change</th><th>relative</th><th>interval of change</th>"
              "<th></th></tr>"]
    for m in cmp.metrics:
        iv = cmp.interval(m.name)
        ivs = (f"{interval(iv.lower, iv.upper)} ({iv.method}, {100 * iv.confidence:g}%)"
               if iv else "")
        rel = pct(m.relative, "+.1f")
        parts.append(f"<tr><td title=\"{e(m.name)}\">{e(metric_name(m.name))}</td>"
                     f"<td>{num(m.baseline)}</td>"
                     f"<td>{num(m.candidate)}</td><td>{num(m.change, '+.4g')}</td><td>{rel}</td>"
                     f"<td>{e(ivs)}</td><td class=\"{e(m.verdict)}\">{e(change_word(cmp, m))}"
                     "</td></tr>")
    parts.append("</table></div></section>")
    parts += ['<section id="classes"><h2>Classes</h2>',
              '<p class="muted">Mean utility over the calibration range; FAR and FRR at each '
              "model's own recommended threshold. Most worsened first.</p>",
              '<div class="box"><table><tr><th>class</th><th>mean utility</th><th>change</th>'
              "<th>FAR</th><th>FRR</th></tr>"]
    for c in cmp.classes:
        cls = "worse" if c.change < 0 else ("better" if c.change > 0 else "")
        parts.append(
            f"<tr><td class=\"label\">{e(c.label)}</td><td>{num(c.baseline_mean_utility)} &rarr; "
            f"{num(c.candidate_mean_utility)}</td><td class=\"{cls}\">{num(c.change, '+.4f')}</td>"
            f"<td>{pct(c.baseline_far)} &rarr; {pct(c.candidate_far)}</td>"
            f"<td>{pct(c.baseline_frr)} &rarr; {pct(c.candidate_frr)}</td></tr>")
    parts.append("</table></div>")
    if cmp.only_baseline or cmp.only_candidate:
        parts.append(f"<p>Only in the baseline: {e(', '.join(cmp.only_baseline) or '-')}. "
                     f"Only in the candidate: {e(', '.join(cmp.only_candidate) or '-')}.</p>")
    parts.append("</section>")
    nav = [("summary", "Summary"), ("metrics", "Headline metrics"), ("classes", "Classes")]
    dep = cmp.deployment
    if dep is not None:
        nav.append(("deployment", "Deployment view"))
        parts.append('<section id="deployment">')
        if dep.available:
            parts += [f"<h2>{e(deployment_title(dep))}</h2>",
                      '<div class="box"><table><tr><th>at this threshold</th><th>baseline</th>'
                      "<th>candidate</th></tr>"]
            parts += [f"<tr><td>{e(q)}</td><td>{e(bv)}</td><td>{e(cv)}</td></tr>"
                      for q, bv, cv in deployment_rows(dep)]
            parts.append("</table></div>")
            if dep.sentence():
                parts.append(f"<p class=\"warn\">{e(dep.sentence())}</p>")
        else:
            parts.append(f"<h2>Deployment view</h2><p class=\"muted\">Not shown: "
                         f"{e(dep.missing)}</p>")
        parts.append("</section>")
    nav.append(("figures", "Figures"))
    parts.append('<section id="figures"><h2>Figures</h2>')
    if curves_missing:  # the per-class curves figure says it too, or is not drawn at all
        parts.append(f'<p class="muted" id="curves-note">{e(curves_note(list(curves_missing)))}'
                     "</p>")
    for name in FIGURES:
        if name in images:
            b64 = base64.b64encode(images[name]).decode("ascii")
            parts.append(f"<figure id=\"fig-{name}\"><img alt=\"{e(name.replace('_', ' '))}\" "
                         f"src=\"data:image/png;base64,{b64}\"></figure>")
    parts.append("</section>")
    return page(f"opis compare: {cmp.baseline} vs {cmp.candidate}", "Which model is more "
                "consistent?", f"opis compare: baseline {cmp.baseline}, candidate "
                f"{cmp.candidate} ({mode_text(cmp)})", nav, _verdict(cmp, outcome),
                "\n".join(parts), footer="Made by opis compare from the two results.")


def write_comparison_report(cmp: "Comparison", base: "EvaluationResult",
                            cand: "EvaluationResult", out_dir: str | os.PathLike, *,
                            outcome: "GateOutcome | None" = None,
                            base_curves: "Curves | None" = None,
                            cand_curves: "Curves | None" = None) -> Path:
    """Write ``compare.html`` and one PNG per figure into ``out_dir`` (created if missing).

    ``base_curves`` / ``cand_curves``: the per-class curves of a side read from a
    result JSON (its ``--curves`` table, :func:`opis_cli.gate.sides.load_result`);
    an in-process result carries its own.
    """
    from ...errors import InputError
    from ...io.output import staged
    from ...options import check_report_folder

    out = Path(out_dir)
    check_report_folder(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create the report folder ({e.strerror or e})") from None
    images = {name: to_png(fig) for name, fig in
              all_figures(cmp, base, cand, base_curves, cand_curves).items()}
    missing = tuple(key for key, res, cv in (("baseline", base, base_curves),
                                             ("candidate", cand, cand_curves))
                    if cv is None and res.curves is None)
    target = out / COMPARE_FILE
    with staged() as stage:  # the page and its figures appear together, or none
        for name, png in images.items():
            stage.temp_for(out / f"{name}.png").write_bytes(png)
        stage.text(target, render_page(cmp, images, outcome, missing))
    return target
