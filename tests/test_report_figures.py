"""The figures of the three pages (evaluate, compare, calibrate), read as objects.

* no empty panel in the compare page's per-class curves figure, whether a side
  is a result JSON with or without its ``--curves`` table;
* every legend outside the plotting area (matplotlib's renderer: the legend's
  window extent against the axes'), so no point or curve is hidden;
* no shared threshold axis between two models on different thresholds (each
  model's own range fills its panel).
"""

from __future__ import annotations

import numpy as np
import pytest

from gating_samples import STRONG, WEAK, run
from opis_cli import evaluate
from opis_cli.gate.compare import compare_results
from opis_cli.app import load_result
from opis_cli.io import read_result
from report_helpers import many_result, nasty_result

pytest.importorskip("matplotlib")


def _read(path, groups: bool = False):
    import pyarrow.parquet as pq

    t = pq.read_table(path).to_pydict()
    X = np.asarray(t["embedding"], dtype=np.float32)
    return X, t["label"], (t["group"] if groups else None)


@pytest.fixture(scope="module")
def sides(samples):
    """Both sample models read back from their result JSONs, with and without curves."""
    return {"weak": load_result(samples.weak_json, samples.weak_curves),
            "strong": load_result(samples.strong_json, samples.strong_curves)}


def _cmp(b, c, **kw):
    return compare_results(b, c, baseline_name="base.json", candidate_name="cand.json", **kw)


def _data_lines(ax, suffix: str) -> list:
    return [ln for ln in ax.get_lines() if (ln.get_gid() or "").endswith(suffix)
            and len(ln.get_xdata()) > 1]


# ------------------------------------------------- 1. the per-class curves of compare


def test_json_baseline_with_its_curves_draws_both_panels(sides):
    from opis_cli.render.report.compare import class_curves_figure

    b, c = sides["weak"], sides["strong"]
    fig = class_curves_figure(_cmp(b.result, c.result), b.result, c.result, b.curves, c.curves)
    axes = fig.axes
    assert len(axes) == 2
    for ax, key, res in zip(axes, ("baseline", "candidate"), (b.result, c.result)):
        # one line per class (10 digits), all of this side's, none empty
        lines = _data_lines(ax, f"{key}-class-curve")
        assert len(lines) == res.classes.evaluated
        assert _data_lines(ax, f"{key}-mean-curve")
        assert "curves" not in ax.get_title(loc="left")      # no note: nothing is missing


def test_json_baseline_without_curves_has_no_empty_panel(sides):
    """The how-to's command (a baseline JSON, no --baseline-curves): one panel, the
    candidate's, and a one-line note saying why and how to get the baseline's."""
    from opis_cli.render.report.compare import all_figures, class_curves_figure, curves_note

    b, c = sides["weak"], sides["strong"]
    cmp = _cmp(b.result, c.result)
    fig = class_curves_figure(cmp, b.result, c.result, None, c.curves)
    (ax,) = fig.axes
    assert _data_lines(ax, "candidate-class-curve")
    assert not [ln for ln in ax.get_lines() if "baseline" in (ln.get_gid() or "")]
    title = ax.get_title(loc="left")
    note = curves_note(["baseline"])
    assert note.replace(": ", ":\n", 1) in title and "--baseline-curves" in note and "opis evaluate --curves" in note
    assert "embeddings file" in note
    assert "\n" not in note
    # neither side has curves: no figure at all (the page says why)
    assert class_curves_figure(cmp, b.result, c.result) is None
    assert "class_curves" not in all_figures(cmp, b.result, c.result)
    # every axes of every compare figure draws data
    for name, f in all_figures(cmp, b.result, c.result, None, c.curves).items():
        for a in f.axes:
            assert a.get_lines() or a.collections, name


def test_compare_page_says_why_the_curves_are_missing(sides, tmp_path):
    from opis_cli.render.report.compare import curves_note, write_comparison_report

    b, c = sides["weak"], sides["strong"]
    cmp = _cmp(b.result, c.result)
    page = write_comparison_report(cmp, b.result, c.result, tmp_path / "a").read_text()
    assert 'id="curves-note"' in page and "--baseline-curves / --candidate-curves" in page
    assert "fig-class_curves" not in page and not (tmp_path / "a" / "class_curves.png").exists()
    page = write_comparison_report(cmp, b.result, c.result, tmp_path / "b",
                                   base_curves=b.curves, cand_curves=c.curves).read_text()
    assert 'id="curves-note"' not in page and "fig-class_curves" in page
    page = write_comparison_report(cmp, b.result, c.result, tmp_path / "c",
                                   cand_curves=c.curves).read_text()
    assert curves_note(["baseline"]).split(":")[0] in page and "fig-class_curves" in page


def test_compare_command_draws_the_baseline_curves_it_is_given(samples, capsys, tmp_path):
    """The how-to's command from the CLI: a baseline JSON gets its panel when
    --baseline-curves is given, and the page says why it is missing otherwise."""
    code, _, _ = run(capsys, "compare", samples.weak_json, STRONG, "-q",
                     "--baseline-curves", samples.weak_curves, "--report", tmp_path / "with")
    assert code == 0
    page = (tmp_path / "with" / "compare.html").read_text()
    assert 'id="curves-note"' not in page and "fig-class_curves" in page
    code, _, _ = run(capsys, "compare", samples.weak_json, STRONG, "-q",
                     "--report", tmp_path / "without")
    assert code == 0
    page = (tmp_path / "without" / "compare.html").read_text()
    assert 'id="curves-note"' in page and "--baseline-curves" in page


# ------------------------------------------------- 3. no axis squeezing one model


def test_models_on_different_thresholds_get_their_own_axis(sides):
    """Own-range compare: each model's grid fills (most of) its own panel's x axis;
    on the same thresholds one shared axis is right (it is the same grid)."""
    from opis_cli.render.report.compare import class_curves_figure, mean_utility_figure

    b, c = sides["weak"], sides["strong"]
    cmp = _cmp(b.result, c.result)
    for fig in (mean_utility_figure(cmp, b.result, c.result),
                class_curves_figure(cmp, b.result, c.result, b.curves, c.curves)):
        assert len(fig.axes) == 2
        for ax, res in zip(fig.axes, (b.result, c.result)):
            lo, hi = ax.get_xlim()
            span = res.thresholds[-1] - res.thresholds[0]
            assert span / (hi - lo) > 0.9
    # the two ranges really are far apart (else the test would prove nothing)
    assert b.result.thresholds[0] > 1.5 * c.result.thresholds[-1]
    same = _cmp(b.result, b.result, mode="same-thresholds")
    assert same.same_thresholds
    (ax,) = mean_utility_figure(same, b.result, b.result).axes
    assert {"baseline-mean-curve", "candidate-mean-curve"} <= {ln.get_gid() for ln in
                                                               ax.get_lines()}


# ------------------------------------------------- 2. legends off the data


def _legend_overlaps(fig) -> list[str]:
    """Titles of the axes whose legend box intersects the axes' data area."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    bad = []
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None:
            continue
        lb = leg.get_window_extent(r)
        # the data area, the x label and the visible tick labels: none under the legend
        # (strictly inside each other's interior: a shared edge pixel covers nothing)
        lo, hi = ax.get_xlim()
        others = [("data", ax.get_window_extent(r))]
        if ax.xaxis.label.get_text().strip():
            others.append(("x label", ax.xaxis.label.get_window_extent(r)))
        others += [("tick " + t.get_text(), t.get_window_extent(r))
                   for t in ax.get_xticklabels()
                   if t.get_text() and min(lo, hi) <= t.get_position()[0] <= max(lo, hi)]
        for what, ob in others:
            if lb.x0 < ob.x1 - 1 and lb.x1 > ob.x0 + 1 and lb.y0 < ob.y1 - 1 and \
                    lb.y1 > ob.y0 + 1:
                bad.append(f"{fig._suptitle.get_text() if fig._suptitle else ''} / "
                           f"{ax.get_title(loc='left')[:40]}: {what}")
    return bad


def _evaluate_figures():
    from opis_cli.render.report.plots import all_figures

    X, y, g = _read(WEAK, groups=True)
    res = evaluate(X, y, groups=g, verification=True, timestamp=False)
    assert res.verification is not None and res.groups is not None
    figs = dict(all_figures(res, res.curves, res.groups.curves))
    assert {"det", "group_utility"} <= set(figs)
    for extra in (nasty_result(), many_result()):
        for name, f in all_figures(extra, extra.curves).items():
            figs[f"{name}-{extra.classes.evaluated}"] = f
    return figs


def _calibrate_figures():
    from opis_cli.render.report.transfer import all_figures
    from opis_cli.transfer import Data, calibrate

    X, y, _ = _read(STRONG)
    res = calibrate(Data(X, y), folds=3, seed=0, timestamp=False)
    return all_figures(res)


@pytest.fixture(scope="module")
def page_figures(sides):
    """Every figure of the three pages, on the samples (and small hostile inputs)."""
    b, c = sides["weak"], sides["strong"]
    from opis_cli.render.report.compare import all_figures as compare_figures

    figs = {f"evaluate {k}": f for k, f in _evaluate_figures().items()}
    for tag, (bc, cc) in (("curves", (b.curves, c.curves)), ("json", (None, c.curves))):
        for k, f in compare_figures(_cmp(b.result, c.result), b.result, c.result,
                                    bc, cc).items():
            figs[f"compare {tag} {k}"] = f
    figs.update({f"calibrate {k}": f for k, f in _calibrate_figures().items()})
    return figs


def _cut_texts(fig) -> list[str]:
    """Texts (titles, subtitles, labels, notes) that reach past the figure's edges."""
    from matplotlib.text import Text

    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    box = fig.bbox
    out = []
    texts = [fig._suptitle, *fig.texts]
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label,
                  *ax.texts]
    for t in texts:
        if t is None or not isinstance(t, Text) or not t.get_visible() or \
                not t.get_text().strip():
            continue
        e = t.get_window_extent(r)
        if e.x0 < box.x0 - 1 or e.x1 > box.x1 + 1 or e.y0 < box.y0 - 1 or e.y1 > box.y1 + 1:
            out.append(t.get_text()[:60])
    return out


def test_no_title_subtitle_or_label_is_cut(page_figures):
    bad = {k: _cut_texts(f) for k, f in page_figures.items()}
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_tick_reads_in_exponents(page_figures):
    """Shares are ticked 100%, 10%, 0.1% (never 1e+02%), the colorbars included."""
    import re

    seen = 0
    for k, f in page_figures.items():
        f.canvas.draw()
        for ax in f.axes:
            for t in ax.get_xticklabels() + ax.get_yticklabels():
                text = t.get_text()
                seen += bool(text)
                assert not re.search(r"\de[+\u2212-]?\d|10\^", text), (k, text)
    assert seen > 200


def test_the_cut_check_sees_a_cut_subtitle():
    from opis_cli.render.report.plots import _new_figure

    fig = _new_figure(4, 3)
    ax = fig.add_subplot()
    ax.set_title("a subtitle far too long for a figure four inches wide, so it runs off "
                 "the right edge", loc="left")
    assert _cut_texts(fig)


def test_every_legend_is_outside_the_plotting_area(page_figures):
    figs = page_figures
    with_legend = [k for k, f in figs.items() if any(a.get_legend() for a in f.axes)]
    assert len(with_legend) >= 15                     # the test looks at real legends
    bad = {k: _legend_overlaps(f) for k, f in figs.items()}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_overlap_check_catches_a_legend_on_the_data():
    """The check above fails on a legend drawn inside the axes (it can fail)."""
    from opis_cli.render.report.plots import _new_figure

    fig = _new_figure(6, 4)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], label="data")
    ax.legend(loc="lower right")
    assert _legend_overlaps(fig)


def test_compare_markers_of_the_most_improved_class_are_not_under_a_legend(sides):
    """The most improved class's before/after points lie inside the axes, away
    from every legend (the issue's case: legends hid them)."""
    from opis_cli.render.report.compare import class_changes_figure, far_frr_figure

    b, c = sides["weak"], sides["strong"]
    cmp = _cmp(b.result, c.result)
    best = max(cmp.classes, key=lambda x: (x.change, x.label))
    for fig, pt in ((far_frr_figure(cmp, b.result, c.result),
                     (best.candidate_far, best.candidate_frr)),
                    (class_changes_figure(cmp), None)):
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        (ax,) = fig.axes
        leg = ax.get_legend().get_window_extent(r)
        if pt is not None:
            x, y = ax.transData.transform(pt)
            assert not leg.contains(x, y)
            assert ax.get_window_extent(r).contains(x, y)
        assert not _legend_overlaps(fig)
