"""Tests of the report: figures (as matplotlib objects), the HTML page, ``opis report``.

Figures are checked on their artists (line data, points, bars, titles), never
on pixels. Expected values come from the result the figure reads (and, where
that would be circular, from an independent summary of the drawn data, e.g.
the mean of the drawn class curves against the drawn mean curve).
"""

from __future__ import annotations

import base64
import html as htmllib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from opis_cli import evaluate
from opis_cli.cli import main
from opis_cli.errors import InputError
from opis_cli.io import read_curves, read_dataset, read_result, write_curves
from opis_cli.io.output import write_text
from opis_cli.render.report import curves_from_table, plots, write_report
from opis_cli.render.report.html import json_for_script

from report_helpers import (BIG_CLASSES, NASTY, NASTY_SINGLETON, WEAK, assert_same,
                            collections, figure_data, lines, many_result, nasty_result)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- fixtures -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def nasty():
    return nasty_result()


@pytest.fixture(scope="module")
def many():
    return many_result()


@pytest.fixture(scope="module")
def weak():
    ds = read_dataset(str(WEAK), group_column="group")
    return evaluate(ds.embeddings, ds.labels, groups=ds.groups, is_query=ds.is_query,
                    is_gallery=ds.is_gallery, group_column="group", timestamp=False)


@pytest.fixture(scope="module")
def weak_report(weak, tmp_path_factory):
    out = tmp_path_factory.mktemp("weak_report")
    page = write_report(weak, out)
    return out, page.read_text(encoding="utf-8")


def saved(result, folder: Path, suffix: str = ".parquet"):
    """The result as `opis report` sees it: JSON and curves table read back from disk."""
    write_text(folder / "r.json", result.to_json())
    write_curves(folder / f"c{suffix}", result)
    return read_result(folder / "r.json"), read_curves(folder / f"c{suffix}")


class Tags(HTMLParser):
    """Start tags with their attributes, and the text inside elements."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._stack.append(tag)

    def handle_endtag(self, tag):
        if self._stack and self._stack[-1] == tag:
            self._stack.pop()

    def handle_data(self, data):
        if not self._stack or self._stack[-1] not in ("script", "style"):
            self.text.append(data)


def parse(page: str) -> Tags:
    p = Tags()
    p.feed(page)
    return p


def blob(page: str, ident: str):
    m = re.search(rf'<script type="application/json" id="{ident}">(.*?)</script>', page, re.S)
    assert m, ident
    return json.loads(m.group(1))


# -- 1. utility curves ----------------------------------------------------------------
def test_utility_figure_one_line_per_class_with_mean_worst_and_threshold(nasty):
    fig = plots.utility_figure(nasty, nasty.curves)
    block = nasty.classes
    drawn = lines(fig, "class-curve")
    assert len(drawn) == block.evaluated == len(NASTY)
    # the drawn class curves are exactly the computed ones
    got = sorted(tuple(ln.get_ydata()) for ln in drawn)
    want = sorted(tuple(row) for row in nasty.curves.utility)
    assert got == want
    (mean,) = lines(fig, "mean-curve")
    # the mean curve is the mean of the class curves drawn beside it
    np.testing.assert_allclose(mean.get_ydata(),
                               np.mean([ln.get_ydata() for ln in drawn], axis=0), atol=1e-12)
    np.testing.assert_array_equal(mean.get_xdata(), nasty.thresholds)
    (worst,) = lines(fig, "worst-curve")
    n_worst = sum(c.worst for c in block.per_class)
    red = [ln for ln in drawn if ln.get_color() == plots.C_WORST_LIGHT]
    assert len(red) == n_worst >= 1
    np.testing.assert_allclose(worst.get_ydata(),
                               np.mean([ln.get_ydata() for ln in red], axis=0), atol=1e-12)
    (thr,) = lines(fig, "recommended-threshold")
    assert list(thr.get_xdata()) == [nasty.recommended_threshold.value] * 2
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert lo < nasty.thresholds[0] and hi > nasty.thresholds[-1]  # ends stay visible
    assert fig._suptitle.get_text() == "Per-class utility across the calibration range"
    assert "cosine distance" in ax.get_xlabel()
    assert "utility" in ax.get_ylabel()
    assert f"{nasty.opis:.4g}" in ax.get_title(loc="left")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("recommended threshold" in t for t in legend)
    assert any("worst 10%" in t for t in legend)


def test_utility_figure_l2_unit():
    fig = plots.utility_figure(nasty_result(metric="l2"))
    assert "L2 distance" in fig.axes[0].get_xlabel()


def test_utility_figure_many_classes_uses_density_and_a_sample(many):
    assert many.classes.evaluated > plots.MAX_LINES
    fig = plots.utility_figure(many, many.curves)
    (mesh,) = collections(fig, "class-density")
    K = len(many.thresholds)
    shares = np.ma.filled(mesh.get_array(), 0.0).reshape(plots.DENSITY_BINS, K)
    # each threshold column holds every class whose utility is within the drawn range once
    bottom = mesh.get_coordinates()[0, 0, 1]
    assert bottom == pytest.approx(fig.axes[0].get_ylim()[0] + 0.01)
    U = many.curves.utility
    np.testing.assert_allclose(shares.sum(axis=0), np.mean(U >= bottom, axis=0))
    assert np.mean(U >= bottom) > 0.95  # the view leaves out at most the lowest few
    assert mesh.get_rasterized()
    drawn = lines(fig, "class-curve")
    assert len(drawn) == plots.SAMPLE_LINES
    # the sample spans the ranking: it includes the worst and the best class
    by_label = dict(zip(many.curves.labels, map(tuple, many.curves.utility)))
    ranked = [by_label[c.label] for c in many.classes.per_class]
    got = [tuple(ln.get_ydata()) for ln in drawn]
    assert got[0] == ranked[0] and got[-1] == ranked[-1]
    assert len(lines(fig, "class-p5")) == len(lines(fig, "class-p95")) == 1
    assert len(lines(fig, "mean-curve")) == len(lines(fig, "recommended-threshold")) == 1


def test_utility_figure_without_curves_says_how_to_get_them(nasty):
    fig = plots.utility_figure(nasty, None)
    assert lines(fig, "class-curve") == []
    assert "--curves" in fig.axes[0].get_title(loc="left")
    assert len(lines(fig, "mean-curve")) == len(lines(fig, "worst-curve")) == 1
    assert len(lines(fig, "recommended-threshold")) == 1


def test_group_utility_figure(weak):
    fig = plots.utility_figure(weak, weak.groups.curves, level="group")
    assert len(lines(fig, "class-curve")) == weak.groups.evaluated == 3
    assert fig._suptitle.get_text() == "Per-group utility across the calibration range"


# -- 2. FAR / FRR --------------------------------------------------------------------
def test_far_frr_scatter_marks_every_class_and_the_global_point(nasty):
    fig = plots.far_frr_figure(nasty)
    per = nasty.classes.per_class
    rt = nasty.recommended_threshold
    (pts,) = collections(fig, "class-points")
    (wpts,) = collections(fig, "worst-points")
    got = sorted(map(tuple, np.vstack([pts.get_offsets(), wpts.get_offsets()])))
    assert got == sorted((c.far_at_threshold, c.frr_at_threshold) for c in per)
    assert sorted(map(tuple, wpts.get_offsets())) == sorted(
        (c.far_at_threshold, c.frr_at_threshold) for c in per if c.worst)
    (star,) = lines(fig, "global-point")
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (rt.far, rt.frr)
    (twice,) = lines(fig, "far-2x")
    assert twice.get_xdata()[0] == 2 * rt.far
    ax = fig.axes[0]
    assert "FAR" in ax.get_xlabel() and "FRR" in ax.get_ylabel()
    assert f"{rt.value:.4g}" in fig._suptitle.get_text()
    # with few classes every point is named, drawn literally (no mathtext)
    names = [t for t in ax.texts if t.get_gid() == "point-label"]
    assert sorted(t.get_text() for t in names) == sorted(plots.short_label(c.label, 24)
                                                        for c in per)
    assert all(t.get_parse_math() is False for t in names)


def test_far_frr_density_when_there_are_many_classes(many, monkeypatch):
    monkeypatch.setattr(plots, "MAX_POINTS", 10)
    fig = plots.far_frr_figure(many)
    assert collections(fig, "class-points") == []
    (hb,) = collections(fig, "class-density")
    assert hb.get_array().sum() == many.classes.evaluated
    assert len(lines(fig, "global-point")) == 1


# -- 3. best thresholds ----------------------------------------------------------------
def test_best_threshold_dots_one_per_class(nasty):
    fig = plots.best_threshold_figure(nasty)
    per = nasty.classes.per_class
    pts = np.vstack([c.get_offsets() for c in fig.axes[0].collections
                     if c.get_gid().startswith("best-threshold-dots")])
    assert sorted(pts[:, 0]) == sorted(c.best_threshold for c in per)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(ticks) == sorted(plots.short_label(c.label) for c in per)
    (thr,) = lines(fig, "recommended-threshold")
    assert thr.get_xdata()[0] == nasty.recommended_threshold.value
    assert len(lines(fig, "calibration-range-end")) == 2
    assert "own best threshold" in fig._suptitle.get_text()
    assert "cosine distance" in fig.axes[0].get_xlabel()


def test_best_threshold_histogram_counts_every_class(many):
    fig = plots.best_threshold_figure(many)
    bars = [p for p in fig.axes[0].patches if p.get_gid() == "best-threshold-hist"]
    assert sum(p.get_height() for p in bars) == many.classes.evaluated
    # bins are centred on grid thresholds: every best threshold falls inside one bin
    for c in many.classes.per_class:
        assert any(p.get_x() <= c.best_threshold < p.get_x() + p.get_width() for p in bars)


# -- 4. distances ------------------------------------------------------------------------
def test_distance_figure_densities_and_calibration_range(weak):
    fig = plots.distance_figure(weak)
    ax = fig.axes[0]
    hist = weak.distance_histogram
    for gid, counts in (("positive-density", hist.positive), ("negative-density", hist.negative)):
        (patch,) = [p for p in ax.patches if p.get_gid() == gid]
        values, edges, _ = patch.get_data()
        assert np.sum(values * np.diff(edges)) == pytest.approx(1.0)  # a density
        assert set(np.round(edges, 12)) <= set(np.round(hist.edges, 12))  # merged bins only
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert f"{sum(hist.positive):,}" in legend and f"{sum(hist.negative):,}" in legend
    (span,) = [p for p in ax.patches if p.get_gid() == "calibration-range"]
    cr = weak.calibration_range
    x0, x1 = span.get_x(), span.get_x() + span.get_width()
    assert (x0, x1) == pytest.approx((cr.lower, cr.upper))
    lo, hi = ax.get_xlim()
    assert lo <= cr.lower and hi >= cr.upper
    assert len(lines(fig, "recommended-threshold")) == 1
    assert "cosine distance" in ax.get_xlabel() and "density" in ax.get_ylabel()
    assert fig._suptitle.get_text() == "Distances of positive and negative pairs"


# -- 5. contributions ----------------------------------------------------------------------
def test_contribution_figure_top_classes_labelled(many):
    fig = plots.contribution_figure(many)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_gid() == "contribution-bars"]
    assert len(bars) == plots.TOP_CONTRIBUTIONS
    top = sorted(many.classes.per_class, key=lambda c: -c.opis_contribution)[:len(bars)]
    widths = [b.get_width() for b in sorted(bars, key=lambda b: -b.get_y())]  # top bar first
    np.testing.assert_allclose(widths, [c.opis_contribution / many.opis for c in top])
    assert widths == sorted(widths, reverse=True)
    ticks = sorted(ax.yaxis.get_major_ticks(), key=lambda t: -t.get_loc())  # top first
    assert [t.label1.get_text() for t in ticks] == [c.label for c in top]
    assert fig._suptitle.get_text() == (
        f"The {len(bars)} classes contributing most to OPIS (of {many.classes.evaluated:,})")


def test_contribution_shares_of_all_classes_sum_to_one(nasty):
    fig = plots.contribution_figure(nasty)
    bars = [p for p in fig.axes[0].patches if p.get_gid() == "contribution-bars"]
    assert len(bars) == nasty.classes.evaluated
    assert sum(b.get_width() for b in bars) == pytest.approx(1.0)


# -- the same figures from a saved result -------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_saved_result_and_curves_give_the_same_figures(weak, tmp_path, suffix):
    again, table = saved(weak, tmp_path, suffix)
    assert again.curves is None  # the JSON has no curves: they come from the table
    cc = curves_from_table(table, again, level="class", source="c")
    gc = curves_from_table(table, again, level="group", source="c")
    live = plots.all_figures(weak, weak.curves, weak.groups.curves)
    loaded = plots.all_figures(again, cc, gc)
    assert list(live) == list(loaded) == list(plots.FIGURES) + list(plots.GROUP_FIGURES)
    for name in live:
        assert_same(figure_data(live[name]), figure_data(loaded[name]), name)


def test_saved_result_same_figures_in_density_mode(many, tmp_path):
    again, table = saved(many, tmp_path)
    a = figure_data(plots.utility_figure(many, many.curves))
    b = figure_data(plots.utility_figure(again, curves_from_table(table, again)))
    assert_same(a, b)


def test_figures_do_not_depend_on_curve_row_order(many, tmp_path):
    _, table = saved(many, tmp_path)
    perm = np.random.default_rng(3).permutation(len(table["label"]))
    shuffled = {k: v[perm] for k, v in table.items()}
    a = figure_data(plots.utility_figure(many, curves_from_table(table, many)))
    b = figure_data(plots.utility_figure(many, curves_from_table(shuffled, many)))
    assert_same(a, b)


def test_curves_from_another_run_are_rejected(weak, nasty):
    with pytest.raises(InputError, match="different run"):
        curves_from_table(nasty.curves_table(), weak, source="other.parquet")
    table = weak.curves_table()
    keep = table["label"] != weak.classes.per_class[0].label
    with pytest.raises(InputError, match="rows for threshold_index"):
        curves_from_table({k: v[keep] for k, v in table.items()}, weak)


# -- write_report and the HTML ------------------------------------------------------------
def test_write_report_writes_the_page_and_every_figure(weak_report):
    out, page = weak_report
    names = list(plots.FIGURES) + list(plots.GROUP_FIGURES)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}.png" for n in names] + ["report.html"])
    for n in names:
        png = (out / f"{n}.png").read_bytes()
        assert png.startswith(PNG_MAGIC)
        assert len(png) < 400_000
        # the page embeds exactly the PNG written beside it
        assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page


def test_html_sections_cards_and_tables(weak, weak_report):
    _, page = weak_report
    doc = parse(page)
    ids = {a.get("id") for _, a in doc.tags}
    for section in ("summary", "figures", "classes", "groups", "excluded", "options",
                    "provenance"):
        assert section in ids, section
    text = " ".join(doc.text)
    for card, value in (("OPIS", f"{weak.opis:.4g}"), ("10%-OPIS", f"{weak.epsilon_opis:.4g}"),
                        ("R@1", f"{100 * weak.retrieval.recall_at_k['1']:.2f}%"),
                        ("MAP@R", f"{weak.retrieval.map_at_r:.4f}"),
                        ("Recommended threshold", f"{weak.recommended_threshold.value:.4g}")):
        assert re.search(rf'<div class="k">{re.escape(htmllib.escape(card))}</div>'
                         rf'<div class="v">{re.escape(value)}', page), card
    assert "cosine distance" in text
    # the options used and the provenance
    assert "max-mean-utility" in text and "tpr-tnr" in text
    assert weak.provenance["versions"]["numpy"] in text
    # the per-class table: every evaluated class once, worst first
    data = blob(page, "classes-data")
    labels = [r[data["columns"].index(next(c for c in data["columns"] if c["key"] == "label"))]
              for r in data["rows"]]
    assert labels == [c.label for c in weak.classes.per_class]
    assert len(blob(page, "groups-data")["rows"]) == weak.groups.evaluated
    # each figure is captioned
    assert len([t for t, a in doc.tags if t == "figcaption"]) == len(plots.FIGURES) + 1


def test_html_escapes_labels_everywhere(nasty, tmp_path):
    # (rendering the PNGs also proves labels are not parsed as mathtext: r"$\frac{$" would raise)
    page = write_report(nasty, tmp_path).read_text(encoding="utf-8")
    doc = parse(page)
    # no label became markup: the only scripts are the page's own
    scripts = [a for t, a in doc.tags if t == "script"]
    # the class finder's and the table's data blobs, the page script and the finder's
    assert len(scripts) == 4
    assert [(a.get("type"), a.get("id")) for a in scripts] == [
        ("application/json", "drill-data"), ("application/json", "classes-data"),
        (None, None), (None, None)]
    assert [t for t, a in doc.tags if t == "img" and not a["src"].startswith("data:")] == []
    for raw in NASTY[:2] + [NASTY_SINGLETON]:
        assert raw not in page  # only ever escaped
    # the JSON blob gives the labels back exactly, and cannot be closed early
    data = blob(page, "classes-data")
    assert {r[1] for r in data["rows"]} == set(NASTY)
    m = re.search(r'id="classes-data">(.*?)</script>', page, re.S)
    assert "<" not in m.group(1) and ">" not in m.group(1)
    # the excluded singleton is listed as text
    text = " ".join(doc.text)
    assert NASTY_SINGLETON in text
    assert htmllib.escape(NASTY_SINGLETON) in page
    # the worst class named in the summary is escaped too
    assert nasty.classes.per_class[0].label in text


def test_json_for_script_round_trips_and_hides_markup():
    value = {"a": "</script><!-- & \u2028", "b": [1.5, None]}
    text = json_for_script(value)
    assert json.loads(text) == value
    assert not re.search(r"[<>&\u2028]", text)


def test_html_has_no_external_urls(weak_report):
    _, page = weak_report
    assert not re.search(r"(?i)\b(?:https?|ftp|wss?):", page)
    assert not re.search(r"(?i)url\(", page)
    for tag, attrs in parse(page).tags:
        for key in ("src", "href", "action", "data", "poster", "srcset"):
            if key in attrs:
                v = attrs[key]
                assert v.startswith("data:") or (key == "href" and v.startswith("#")), (tag, v)
        assert tag not in ("link", "iframe", "object", "embed", "base")
    # the browser is told to refuse any request anyway
    assert "default-src 'none'" in page


def test_report_into_a_file_is_an_error(nasty, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_report(nasty, blocker)
    assert blocker.read_text() == "x"


def test_ten_thousand_classes_report_stays_small(big_report):
    out = big_report  # opis report RESULT.json --curves CURVES --out DIR
    page = (out / "report.html").read_text(encoding="utf-8")
    assert len(page.encode()) < 10 * 2**20
    data = blob(page, "classes-data")
    assert len(data["rows"]) == BIG_CLASSES
    # the page draws rows itself, a page at a time: none are in the markup
    assert page.count("<tr>") < 50
    for png in out.glob("*.png"):
        assert png.stat().st_size < 400_000, png.name


# -- the CLI ----------------------------------------------------------------------------------
def test_evaluate_report_and_report_command_write_the_same_files(tmp_path, capsys):
    r, c = tmp_path / "r.json", tmp_path / "c.parquet"
    d1, d2 = tmp_path / "from_evaluate", tmp_path / "from_json"
    assert main(["evaluate", str(WEAK), "--group-column", "group", "--json", str(r),
                 "--curves", str(c), "--report", str(d1), "-q"]) == 0
    assert main(["report", str(r), "--curves", str(c), "--out", str(d2)]) == 0
    err = capsys.readouterr().err
    assert "report.html" in err
    files = sorted(p.name for p in d1.iterdir())
    assert files == sorted(p.name for p in d2.iterdir())
    for name in files:
        assert (d1 / name).read_bytes() == (d2 / name).read_bytes(), name


def test_report_command_without_curves(tmp_path, nasty):
    r = tmp_path / "r.json"
    r.write_text(nasty.to_json())
    out = tmp_path / "new" / "deeper"  # missing parents are created
    assert main(["report", str(r), "--out", str(out), "-q"]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "rendered without the per-class curves" in page
    assert len(list(out.glob("*.png"))) == len(plots.FIGURES)


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error:") and "\n" not in err and "Traceback" not in err
    return err


def test_report_command_errors(tmp_path, capsys, weak, nasty):
    r = tmp_path / "r.json"
    r.write_text(weak.to_json())
    out = tmp_path / "out"
    missing = tmp_path / "missing.json"
    assert str(missing) in _error(capsys, ["report", str(missing), "--out", str(out)])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "not valid JSON" in _error(capsys, ["report", str(bad), "--out", str(out)])
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"schema_version": 99}))
    assert "schema_version" in _error(capsys, ["report", str(wrong), "--out", str(out)])
    # curves of another run: the message names the curves file
    other = tmp_path / "other.parquet"
    write_curves(other, nasty)
    err = _error(capsys, ["report", str(r), "--curves", str(other), "--out", str(out)])
    assert str(other) in err and "different run" in err
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("label,utility\na,1\n")
    assert "no column 'level'" in _error(capsys, ["report", str(r), "--curves", str(nocol),
                                                  "--out", str(out)])
    assert "--out" in _error(capsys, ["report", str(r)])
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert "not a folder" in _error(capsys, ["report", str(r), "--out", str(blocker)])
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_read_curves_keeps_csv_labels_as_text(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("level,label,threshold_index,threshold,utility\n"
                    "class,007,0,0.5,1.0\nclass,007,1,0.6,0.5\n")
    table = read_curves(path)
    assert list(table["label"]) == ["007", "007"]
    assert table["threshold_index"].dtype == np.int64
    assert table["utility"].dtype == np.float64


def test_report_help_documents_the_command(capsys):
    assert main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--curves" in out and "--out" in out and "RESULT.json" in out


# -- fairness (SPEC 13) ---------------------------------------------------------------------
def test_fairness_figure_draws_the_result_curves_and_the_threshold(weak):
    fig = plots.fairness_figure(weak)
    th = np.asarray(weak.thresholds)
    for level, blk in (("class", weak.classes), ("group", weak.groups)):
        (fdr,) = lines(fig, f"fdr-{level}")
        (garbe,) = lines(fig, f"garbe-{level}")
        assert np.array_equal(fdr.get_xdata(), th) and np.array_equal(garbe.get_xdata(), th)
        assert np.array_equal(fdr.get_ydata(), blk.fairness.fdr)  # read, not recomputed
        assert np.array_equal(garbe.get_ydata(), blk.fairness.garbe)
        assert f"{blk.fairness.fdr_mean:.4f}" in fdr.get_label()
    (mark,) = lines(fig, "recommended-threshold")
    assert list(mark.get_xdata()) == [weak.recommended_threshold.value] * 2
    lo, hi = fig.axes[0].get_xlim()
    assert lo <= th[0] and hi >= th[-1]
    assert fig._suptitle.get_text() == "Fairness of the threshold across the calibration range"
    f = weak.recommended_threshold.fairness
    assert f"FDR {f.fdr:.4f}, GARBE {f.garbe:.4f}" in fig.axes[0].get_title(loc="left")


def test_fairness_figure_of_a_single_group_has_no_group_garbe():
    x = np.random.default_rng(0).normal(size=(60, 4))
    y = [f"c{i % 6}" for i in range(60)]
    r = evaluate(x, y, metric="l2", groups=["all"] * 60, num_thresholds=5)
    fig = plots.fairness_figure(r)
    assert len(lines(fig, "fdr-group")) == 1 and lines(fig, "garbe-group") == []
    assert len(lines(fig, "garbe-class")) == 1


def test_fairness_figure_and_block_of_a_result_without_fairness(weak):
    d = json.loads(weak.to_json())
    for blk in (d, d["groups"]):
        del blk["fairness"]
        del blk["recommended_threshold"]["fairness"]
    old = type(weak).from_dict(d)
    fig = plots.fairness_figure(old)
    assert [t.get_gid() for t in fig.axes[0].texts] == ["no-fairness-note"]
    from opis_cli.render.report.html import render_report

    page = render_report(old, {})
    assert 'id="fairness"' not in page


def test_html_fairness_block_at_the_recommended_threshold(weak, weak_report):
    _, page = weak_report
    m = re.search(r'<h3 id="fairness".*?</table>', page, re.S)
    assert m, "no fairness block"
    block = m.group(0)
    assert "alpha 0.5" in block
    rows = re.findall(r"<tr><td>(.*?)</td>(.*?)</tr>", block)
    assert [r[0] for r in rows] == ["classes", "groups (group)"]
    for (_, cells), blk in zip(rows, (weak.classes, weak.groups)):
        f, c = blk.recommended_threshold.fairness, blk.fairness
        got = re.findall(r"<td>(.*?)</td>", cells)
        assert got == [f"{f.far_ratio:.3g}x", f"{f.frr_ratio:.3g}x", f"{f.fdr:.4f}",
                       f"{f.garbe:.4f}", f"{f.inequity_rate:.4g}", f"{c.fdr_mean:.4f}",
                       f"{c.garbe_mean:.4f}"]
    # the figure is there, captioned
    assert 'id="fig-fairness"' in page


def test_html_fairness_block_nulls_and_a_hostile_group_column(weak):
    from dataclasses import replace

    from opis_cli.render.report.html import render_report

    bad = '<b onmouseover="x">\x1b[31mcol\u202e'
    rt = weak.recommended_threshold
    nulls = replace(rt.fairness, far_ratio=None, inequity_rate=None)
    r = replace(weak, group_column=bad,
                classes=replace(weak.classes, recommended_threshold=replace(rt, fairness=nulls)))
    page = render_report(r, {})
    block = re.search(r'<h3 id="fairness".*?</table>', page, re.S).group(0)
    assert "<b onmouseover" not in page and "\x1b" not in block and "\u202e" not in block
    assert htmllib.escape('<b onmouseover="x">', quote=True) in block
    assert "\\x1b[31mcol\\u202e" in block
    first = re.findall(r"<td>(.*?)</td>", re.search(r"<tr><td>classes</td>.*?</tr>",
                                                    block).group(0))
    assert first[1] == "n/a" and first[5] == "n/a"
