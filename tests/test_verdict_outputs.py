"""The verdict comes first in every output (terminal, Markdown, HTML, JSON), the gate
outcome sits beside it (on the page too), and the notebook face of a result:
a short repr, an escaped ``_repr_html_``, figures drawn into the caller's axes,
``opis_cli.write_report``."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

import opis_cli
from opis_cli import evaluate
from opis_cli.gate.rules import Side, evaluate_rules, parse_rule
from opis_cli.render.escape import visible
from opis_cli.render.markdown import summary
from opis_cli.render.report.html import render_report
from opis_cli.results import EvaluationResult

from report_helpers import NASTY, clustered, nasty_result


@pytest.fixture(scope="module")
def result():
    X, y = clustered([f"c{i}" for i in range(8)], rows=6, seed=3)
    groups = [f"g{i % 3}" for i in range(len(y))]
    return evaluate(X, y, groups=groups, num_thresholds=21, timestamp=False, verification=True)


def outcome_of(result, *texts):
    side = Side("cand.json", result.gate_metrics())
    return evaluate_rules([parse_rule(k, t) for k, t in texts], side)


def test_terminal_starts_with_the_verdict_and_shows_the_gate(result):
    from opis_cli.render import terminal

    out = outcome_of(result, ("max", "opis=0"), ("min", "recall_at_1=0"))
    with terminal.console.capture() as cap:
        terminal.print_result(result, "x.npy", outcome=out)
    text = cap.get()
    assert text.startswith("Verdict: " + result.verdict.answer.capitalize() + ": at global FAR")
    flat = " ".join(text.split())
    assert "Gate FAILED: 1 of 2 rules broken: max opis=0 FAIL" in flat
    assert flat.index("Gate FAILED") < flat.index("Threshold consistency")
    for note in result.verdict.notes:
        assert " ".join(note.split()) in flat


def test_markdown_starts_with_the_verdict_then_the_gate(result):
    md = summary(None, verdict=result.verdict)
    assert md.startswith("### Can one threshold serve every class?\n\n")
    assert result.verdict.sentence[len(result.verdict.answer):] in md
    out = outcome_of(result, ("max", "opis=0"))
    md = summary(out, result.headline(), verdict=result.verdict)
    assert md.index("Can one threshold") < md.index("### opis gate: FAILED")


def test_json_verdict_first_and_complete(result):
    doc = json.loads(result.to_json())
    assert list(doc)[1] == "verdict"
    v = doc["verdict"]
    assert v["question"] == "Can one threshold serve every class?"
    assert v["answer"] in ("yes", "partly", "no") and v["sentence"] == result.verdict.sentence
    assert v["level"] == "class" and v["threshold"] == result.recommended_threshold.value
    assert v["group_threshold"] == result.groups.recommended_threshold.value
    assert set(v["rule"]) == {"far_factor", "frr_level", "yes_share", "no_share"}


def _text_of(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_html_verdict_first_and_the_gate_beside_it(result):
    page = render_report(result, {})
    body = page[page.index("<body>"):]
    assert body.index('id="verdict"') < body.index("<nav>") < body.index('id="summary"')
    assert f'data-answer="{result.verdict.answer}"' in page
    assert 'id="gate"' not in page                       # no rules, no gate box
    out = outcome_of(result, ("max", "opis=0"), ("min", "recall_at_1=0"))
    page = render_report(result, {}, gate=out)
    body = page[page.index("<body>"):]
    assert body.index('id="verdict"') < body.index('data-gate="failed"') < body.index("<nav>")
    text = _text_of(body[:body.index("<nav>")])
    assert "Gate FAILED: 1 of 2 rules broken" in text
    assert "max opis=0" in text and "FAIL" in text and "pass" in text
    passed = render_report(result, {}, gate=outcome_of(result, ("min", "recall_at_1=0")))
    assert 'data-gate="passed"' in passed and "Gate passed: all 1 rule holds" in passed


def test_html_range_edge_and_strict_point_on_the_page():
    # SPEC 9's hand case: the mean utility peaks at the upper end (3) of the range 1:3
    x = np.array([[0.0], [1.0], [10.0], [13.0]], np.float32)
    r = evaluate(x, ["a", "a", "b", "b"], metric="l2", calibration_range=(1, 3),
                 num_thresholds=3, timestamp=False)
    v = r.verdict
    assert v.range_edge == "upper" and v.widen == "--calibration-range 1:5"
    text = _text_of(render_report(r, {}))
    assert "upper end of the calibration range" in text
    assert "widen it with --calibration-range 1:5" in text
    assert "max-mean-utility picks a permissive point" in text
    assert "--calibration-range 1:5" in summary(None, verdict=v)
    # a permissive threshold with a strict point elsewhere on the grid: both side by side
    X, y = clustered([f"c{i}" for i in range(6)], rows=8, seed=5)
    r = evaluate(X, y, far_range=(0.005, 0.3), num_thresholds=31, timestamp=False)
    s = r.verdict.strict
    assert s is not None and s.index != r.verdict.index
    page = render_report(r, {})
    assert '<table class="points">' in page
    text = _text_of(page)
    assert f"strict (far:0.01)" in text and f"recommended ({r.verdict.policy})" in text
    assert "At a strict point (far:0.01: threshold" in text


def test_evaluate_cli_failing_gate_leaves_a_trace_on_the_page(tmp_path, capsys):
    from opis_cli.cli.root import main

    X, y = clustered([f"c{i}" for i in range(5)], rows=5, seed=2)
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "labels.txt").write_text("\n".join(y) + "\n")
    rc = main(["evaluate", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "labels.txt"),
               "--max", "opis=0", "--report", str(tmp_path / "rep"), "--markdown",
               str(tmp_path / "s.md"), "--num-thresholds", "11"])
    assert rc == 1
    page = (tmp_path / "rep" / "report.html").read_text()
    assert 'data-gate="failed"' in page and "Gate FAILED: 1 of 1 rule broken" in page
    md = (tmp_path / "s.md").read_text()
    assert md.startswith("### Can one threshold serve every class?")
    assert md.index("Can one threshold") < md.index("### opis gate: FAILED")
    out, err = capsys.readouterr()
    assert out.startswith("Verdict: ")  # the result on stdout, the verdict first
    assert "wrote " in err


# -- notebook -----------------------------------------------------------------------
def test_repr_is_short_and_says_the_verdict(result):
    text = repr(result)
    assert len(text) < 1000 and len(text.splitlines()) <= 8
    assert text.startswith("EvaluationResult(")
    assert result.verdict.sentence in text
    assert f"OPIS {result.opis:.5g}" in text and "classes: 8 evaluated, 0 excluded" in text
    assert "c0" not in text.replace("verdict", "")   # no per-class data


def test_repr_html_escapes_a_hostile_label():
    r = nasty_result()
    page = r._repr_html_()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert "a&amp;b &quot;double&quot; &#x27;single&#x27;" in page
    assert 'class="opis-verdict"' in page and r.verdict.sentence in page.replace("&#x27;", "'")
    # every evaluated class of this small result is among the worst rows shown
    # (shown by the rule of render/escape.py: a backslash doubled, then HTML-escaped)
    assert sum(html.escape(visible(lab), quote=True) in page for lab in NASTY) == len(NASTY)


def _axes():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _gids(ax) -> set[str]:
    return {a.get_gid() for a in ax.get_children() if a.get_gid()}


def test_plots_draw_into_the_given_axes(result):
    fig, ax = _axes()
    assert result.plot_utility(ax=ax) is ax
    assert {"mean-curve", "worst-curve", "recommended-threshold", "class-curve"} <= _gids(ax)
    mean = next(a for a in ax.lines if a.get_gid() == "mean-curve")
    assert np.allclose(mean.get_ydata(), result.classes.mean_utility)
    assert len(fig.axes) == 1 and ax.get_title(loc="left")
    fig, ax = _axes()
    assert result.plot_far_frr(ax=ax) is ax
    assert {"class-points", "global-point", "far-2x"} <= _gids(ax)
    star = next(a for a in ax.lines if a.get_gid() == "global-point")
    assert star.get_xdata()[0] == result.recommended_threshold.far
    fig, ax = _axes()
    assert result.plot_det(ax=ax) is ax
    assert {"det-global", "eer-point", "recommended-threshold"} <= _gids(ax)
    fig, ax = _axes()
    result.plot_utility(ax=ax, level="group")
    assert "group" in next(a for a in ax.lines if a.get_gid() == "mean-curve").get_label()


def test_plot_det_needs_the_verification_view_and_json_results_still_draw(result):
    back = EvaluationResult.from_json(result.to_json())
    fig, ax = _axes()
    back.plot_utility(ax=ax)                 # no curves: the mean curves only
    assert "class-curve" not in _gids(ax) and "mean-curve" in _gids(ax)
    plain = evaluate(*clustered(["a", "b", "c"], rows=4), num_thresholds=5, timestamp=False)
    with pytest.raises(ValueError, match="verification"):
        plain.plot_det(ax=_axes()[1])


def test_plot_without_axes_makes_a_figure(result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = result.plot_far_frr()
    assert ax.figure is not None and "global-point" in _gids(ax)
    plt.close(ax.figure)


def test_write_report_from_python(result, tmp_path):
    path = opis_cli.write_report(result, tmp_path / "rep")
    assert path == tmp_path / "rep" / "report.html" and path.is_file()
    page = path.read_text()
    assert page.index('id="verdict"') < page.index('id="summary"')
    assert (tmp_path / "rep" / "utility.png").stat().st_size > 1000


# -- report defects of issue 25 (item 4) ------------------------------------------------
def test_density_colorbar_says_100_percent_not_1e02():
    from report_helpers import many_result

    from opis_cli.render.report.plots import share_tick, utility_figure

    assert [share_tick(v) for v in (1.0, 0.1, 0.0995, 0.01, 0.001)] == \
        ["100%", "10%", "10%", "1%", "0.1%"]
    r = many_result(80)
    fig = utility_figure(r, r.curves)
    assert len(fig.axes) == 2                     # the density mode has a colorbar
    cbar = fig.axes[1]
    fmt = cbar.yaxis.get_major_formatter()
    labels = [fmt(v, i) for i, v in enumerate(cbar.get_yticks())]
    assert "100%" in labels and not any("e+" in t or "e-" in t for t in labels)


def test_no_spec_numbers_internal_fields_or_repeated_options_on_the_page(result):
    from opis_cli.render.report import plots

    page = render_report(result, {})
    text = _text_of(page[:page.index("<script>")])   # what a reader sees, not the data blob
    assert "SPEC " not in text
    assert "report_histogram_rows" not in page
    assert "options.metric" not in text              # options once, under Options
    from opis_cli.render.report.html import FIGURE_TEXT

    for name, (heading, caption) in FIGURE_TEXT.items():
        assert "SPEC " not in caption and "SPEC " not in heading, name
    fig = plots.fairness_figure(result)
    assert "SPEC" not in fig.axes[0].get_title(loc="left")


def test_det_subtitle_is_not_cut(result):
    from opis_cli.render.report.plots import det_figure

    fig = det_figure(result)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    sub = ax.title if ax.get_title() else ax._left_title
    box = sub.get_window_extent(renderer)
    assert sub.get_text() and box.x0 >= 0 and box.x1 <= fig.bbox.x1 + 0.5


def test_compare_page_has_the_evaluate_look_the_verdict_and_the_gate(result):
    from opis_cli.gate.compare import compare_results
    from opis_cli.render.report.compare import render_page

    X, y = clustered([f"c{i}" for i in range(8)], rows=6, seed=4)
    other = evaluate(X, y, num_thresholds=21, timestamp=False)
    cmp = compare_results(result, other, baseline_name="<b>base</b>", candidate_name="cand")
    out = outcome_of(other, ("max", "opis=0"))
    page = render_page(cmp, {}, out)
    body = page[page.index("<body>"):]
    assert "Content-Security-Policy" in page and "<b>base</b>" not in page
    assert body.index("<h1>Which model is more consistent?</h1>") < body.index('id="verdict"') \
        < body.index('data-gate="failed"') < body.index("<nav>") < body.index('id="summary"')
    assert f'data-answer="{cmp.verdict.answer}"' in page
    assert page.count('class="card"') == 4
    text = _text_of(body)
    assert "OPIS (lower is better)" in text and "R@1 (higher is better)" in text
    assert "epsilon_opis" not in text                    # raw keys only as tooltips
    assert "SPEC " not in text



def test_calibrate_page_with_a_group_split_shows_the_groups_rates():
    """The page's per-fold share above 2x and FAR spread are the unseen groups' (as in
    the terminal), not the classes'."""
    from opis_cli.render.report.transfer import render_page
    from test_verdict import _transfer

    res = _transfer([0.01, 0.012], [0.25, 0.0], by="group")   # groups: 25% and 0% above 2x
    text = _text_of(render_page(res, {}, "x.npy"))
    assert "groups > 2x target" in text and "group FAR p5" in text
    assert "25.0%" in text and "99.0%" not in text            # 99%: the classes' share
    assert "Does the threshold transfer to unseen groups?" in text
