"""The report of ``opis calibrate --report DIR``: does the threshold hold on unseen classes?

Three figures, read from the :class:`~opis_cli.transfer.TransferResult` only
(nothing is recomputed): target against achieved FAR per fold (calibration
side and unseen side), the distribution of per-class FAR on the unseen
classes against the target, and the TPR each fold loses against the
threshold its unseen side alone would have needed. The page is one
self-contained HTML file (PNG figures inlined as base64, every label and
path escaped), the PNGs are written next to it; all files appear together
or none do. matplotlib is imported lazily, on the Agg canvas, with the
colours and PNG writer of ``plots.py``.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np

from ...transfer import SPLIT_FOLDS, TransferResult
from ..escape import visible
from ..format import num, pct
from ..transfer_text import headline
from .html import card, page, verdict_html
from .plots import C_CLASS, C_GOOD, C_NEG, C_THRESHOLD, C_WORST, _legend, _new_figure, \
    _percent_axis, _style, _titles, to_png

CALIBRATE_FILE = "calibrate.html"
#: figure names, in the order the page shows them
FIGURES = ("far_per_fold", "class_far", "tpr_lost")


def _target_far(res: TransferResult, fold) -> float:
    return res.target.far if res.target.name == "far" else fold.calibration.far


def far_per_fold_figure(res: TransferResult):
    """Target FAR against the FAR achieved on each fold's two sides."""
    fig = _new_figure(9.0, 4.2)
    ax = fig.subplots()
    _style(ax)
    k = np.arange(len(res.folds))
    cal = [f.calibration.far for f in res.folds]
    test = [f.test.far for f in res.folds]
    ax.bar(k - 0.2, cal, 0.38, color=C_CLASS, label="calibration side (seen)")
    ax.bar(k + 0.2, test, 0.38, color=C_GOOD, label="test side (unseen)")
    for i, f in enumerate(res.folds):
        ax.hlines(_target_far(res, f), i - 0.45, i + 0.45, color=C_THRESHOLD, linewidth=2,
                  label="target" if i == 0 else None)
    ax.set_xticks(k, [str(f.fold) for f in res.folds])
    ax.set_xlabel("fold")
    ax.set_ylabel("global FAR at the calibration threshold")
    _percent_axis(ax.yaxis)
    _legend(ax, ncol=3)
    _titles(fig, ax, "Target and achieved false accept rate",
            f"target {res.target}; bars: FAR of the threshold chosen on the calibration side")
    return fig


def class_far_figure(res: TransferResult):
    """Per-class FAR on the unseen classes of every fold, against the target."""
    fig = _new_figure(9.0, 4.6)
    ax = fig.subplots()
    _style(ax)
    data = [np.array([c.far for c in f.test.per_class]) for f in res.folds]
    top = max([float(d.max()) for d in data if len(d)] + [2.5 * _target_far(res, res.folds[0])])
    bins = np.linspace(0.0, top if top > 0 else 1.0, 41)
    for i, (f, d) in enumerate(zip(res.folds, data)):
        ax.hist(np.clip(d, 0, bins[-1]), bins=bins, histtype="step", linewidth=1.4,
                label=f"fold {f.fold} ({len(d)} classes)")
    tf = _target_far(res, res.folds[0])
    ax.axvline(tf, color=C_THRESHOLD, linewidth=2, label="target")
    ax.axvline(2 * tf, color=C_WORST, linestyle="--", linewidth=1.4, label="2 x target")
    ax.set_xlabel("per-class FAR on the unseen side")
    ax.set_ylabel("classes")
    _percent_axis(ax.xaxis)
    _legend(ax, ncol=4)
    above = np.mean([f.test.fraction_far_above_2x for f in res.folds])
    _titles(fig, ax, "False accept rate of each unseen class",
            f"mean share of classes above twice the target: {pct(above, '.1f')}")
    return fig


def tpr_lost_figure(res: TransferResult):
    """TPR at the calibration threshold against the test side's own threshold."""
    fig = _new_figure(9.0, 4.2)
    ax = fig.subplots()
    _style(ax)
    k = np.arange(len(res.folds))
    got = [f.test.tpr for f in res.folds]
    own = [f.test.oracle_tpr for f in res.folds]
    ax.bar(k - 0.2, got, 0.38, color=C_GOOD, label="at the calibration threshold")
    ax.bar(k + 0.2, own, 0.38, color=C_NEG, label="at the test side's own threshold")
    ax.set_xticks(k, [str(f.fold) for f in res.folds])
    ax.set_xlabel("fold")
    ax.set_ylabel("TPR on the unseen side")
    _percent_axis(ax.yaxis)
    _legend(ax, ncol=2)
    lost = res.summary()["tpr_lost"]["mean"]
    _titles(fig, ax, "True accept rate: transferred against own threshold",
            f"mean difference (own - transferred): {pct(lost, '+.2f')}.\nA negative difference "
            "means the transferred threshold accepts more, at a higher FAR.")
    return fig


def all_figures(res: TransferResult) -> dict:
    return {"far_per_fold": far_per_fold_figure(res), "class_far": class_far_figure(res),
            "tpr_lost": tpr_lost_figure(res)}




def _methods_section(methods: dict, e) -> list[str]:
    """The Calibrations section: each fitted method's means over the folds
    (``e`` escapes a method's name)."""
    parts = ['<section id="methods"><h2>Calibrations on the test side</h2>',
             "<p class=\"muted\">Each fitted on the calibration side at the target FAR and "
             "applied to the test side; mean over folds. OPIS on each test "
             "side's own FAR range; FAR, TPR and the share above twice the target at the "
             "fitted global threshold.</p>",
             '<div class="box"><table><tr><th>method</th><th>OPIS</th><th>epsilon-OPIS</th>'
             "<th>FAR</th>"
             "<th>FAR min..max</th><th>TPR</th><th>&gt; 2x target</th></tr>"]
    for name, v in methods.items():
        parts.append(
            f"<tr><td>{e(name)}</td><td>{num(v['opis']['mean'], '.5f')}</td>"
            f"<td>{num(v['epsilon_opis']['mean'], '.5f')}</td><td>{pct(v['far']['mean'])}</td>"
            f"<td>{pct(v['far']['min'])} .. {pct(v['far']['max'])}</td>"
            f"<td>{pct(v['tpr']['mean'])}</td>"
            f"<td>{pct(v['fraction_far_above_2x']['mean'], '.1f')}</td></tr>")
    parts.append("</table></div></section>")
    return parts


def render_page(res: TransferResult, images: dict[str, bytes], source: str = "") -> str:
    """The page: the summary sentence, the per-fold table, the worst unseen classes, figures."""
    def e(value) -> str:
        return html.escape(visible(value))

    split = res.split
    how = ("an explicit calibration and test file" if split["kind"] != SPLIT_FOLDS else
           f"{split['folds']} {split['by']}-disjoint folds, seed {split['seed']}"
           if split["by"] != "row" else
           f"{split['folds']} folds of every class's rows, seed {split['seed']}")
    unit = "groups" if split.get("by") == "group" else "classes"
    noun = "group" if unit == "groups" else "class"
    summ = res.summary()
    far, tpr = summ["far"], summ["tpr"]
    cards = ('<section id="summary" class="cards">'
             + card("target", str(res.target), "How the calibration side picks its threshold.")
             + card("FAR on unseen", f"{pct(far['min'])} .. {pct(far['max'])}",
                    f"Test-side global FAR over the folds (mean {pct(far['mean'])}).")
             + card("TPR on unseen", pct(tpr["mean"]), "Mean test-side global TPR.")
             + card("TPR lost", pct(summ["tpr_lost"]["mean"], "+.2f"),
                    "Against the threshold the test side alone would have needed.")
             + "</section>")
    parts = [cards,
             f"<p class=\"lead\">{e(headline(res))}.</p>",
             '<section id="folds"><h2>Per fold</h2>',
             '<div class="box"><table><tr><th>fold</th><th>calibration classes</th><th>threshold</th>'
             f"<th>calibration FAR</th><th>test {unit}</th><th>test FAR</th><th>test TPR</th>"
             f"<th>{noun} FAR p5 / p50 / p95 / max</th><th>{unit} &gt; 2x target</th>"
             "<th>own threshold</th><th>its TPR</th></tr>"]
    for f in res.folds:
        c, b = f.calibration, f.test
        # a group split: the unseen groups' own rates (as the terminal shows them)
        g = b.groups if unit == "groups" else None
        n, s, above = ((len(g.per_group), g.far_spread, g.fraction_far_above_2x) if g
                       else (b.classes, b.far_spread, b.fraction_far_above_2x))
        parts.append(
            f"<tr><td>{f.fold}</td><td>{c.classes}</td><td>{num(c.threshold, '.6g')}</td>"
            f"<td>{pct(c.far)}</td><td>{n}</td><td>{pct(b.far)}</td><td>{pct(b.tpr)}</td>"
            f"<td>{pct(s.p5)} / {pct(s.p50)} / {pct(s.p95)} / {pct(s.max)}</td>"
            f"<td>{pct(above, '.1f')}</td><td>{num(b.oracle_threshold, '.6g')}"
            f"</td><td>{pct(b.oracle_tpr)}</td></tr>")
    parts.append("</table></div></section>")
    nav = [("summary", "Summary"), ("folds", "Per fold")]
    methods = summ.get("methods")
    if methods:
        nav.append(("methods", "Calibrations"))
        parts += _methods_section(methods, e)
    worst = sorted(((c.far, f.fold, c) for f in res.folds for c in f.test.per_class),
                   key=lambda x: (-x[0], x[1], x[2].label))[:15]
    nav += [("unseen", "Unseen classes"), ("figures", "Figures")]
    parts += ['<section id="unseen"><h2>Unseen classes with the highest FAR</h2>',
              "<p class=\"muted\">At the threshold chosen without them.</p>",
              '<div class="box"><table><tr><th>class</th><th>fold</th><th>FAR</th><th>FRR</th>'
              "<th>negatives</th></tr>"]
    parts += [f"<tr><td class=\"label\">{e(c.label)}</td><td>{fold}</td><td>{pct(c.far)}</td>"
              f"<td>{pct(c.frr)}</td><td>{c.negatives}</td></tr>" for _, fold, c in worst]
    parts.append('</table></div></section><section id="figures"><h2>Figures</h2>')
    for name in FIGURES:
        if name in images:
            b64 = base64.b64encode(images[name]).decode("ascii")
            parts.append(f"<figure id=\"fig-{name}\"><img alt=\"{e(name.replace('_', ' '))}\" "
                         f"src=\"data:image/png;base64,{b64}\"></figure>")
    parts.append("</section>")
    sub = (f"opis calibrate {source}: {res.n_samples:,} rows x {res.dim} dims, metric "
           f"{res.metric}; {how}; target {res.target}")
    return page(f"opis calibrate: {source}", res.verdict.question, sub, nav,
                verdict_html(res.verdict), "\n".join(parts),
                footer="Made by opis calibrate from the transfer result.")


def write_transfer_report(res: TransferResult, out_dir: str | os.PathLike,
                          source: str = "") -> Path:
    """Write ``calibrate.html`` and one PNG per figure into ``out_dir`` (created if missing)."""
    from ...errors import InputError
    from ...io.output import staged
    from ...options import check_report_folder

    out = Path(out_dir)
    check_report_folder(out)
    images = {name: to_png(fig) for name, fig in all_figures(res).items()}
    page = render_page(res, images, source)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create the report folder ({e.strerror or e})") from None
    target = out / CALIBRATE_FILE
    with staged() as stage:
        for name, png in images.items():
            stage.temp_for(out / f"{name}.png").write_bytes(png)
        stage.text(target, page)
    return target
