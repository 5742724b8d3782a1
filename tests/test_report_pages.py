"""What the evaluate, compare and calibrate pages say, read from their HTML.

* a rate read at two different thresholds (FAR, FRR, TPR) is not called
  "better" (terminal, Markdown, HTML): the row names the operating point's change;
* numbers and short codes never wrap inside a token (the page CSS);
* the verification table (EER, minDCF with its parameters, FNMR at each FMR);
* the issue's defect list: no SPEC numbers or internal fields in user text,
  options listed once, ``100%`` not ``1e+02%``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from gating_samples import run
from opis_cli.gate.compare import compare_results
from opis_cli.io import read_result
from opis_cli.render.format import POINT_WORDS, change_word


def _cmp(b, c, **kw):
    return compare_results(b, c, baseline_name="base.json", candidate_name="cand.json", **kw)


class _Rows(HTMLParser):
    """Table rows of a page as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.rows, self._row, self._cell = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def rows_of(page: str) -> list[list[str]]:
    p = _Rows()
    p.feed(page)
    return p.rows


# ------------------------------------------------- FAR is not "better" across thresholds


def _naive_word(name, verdict, bt, ct):
    """From the brief: FAR/FRR/TPR at two different thresholds is a change of
    operating point, named by what the (FAR, FRR) point did; else the verdict."""
    if name in ("far", "frr", "tpr") and bt != ct:
        return {"better": "lower FAR and FRR", "worse": "higher FAR and FRR",
                "": "trade-off", "same": "same"}[verdict]
    return verdict


def test_change_words_against_the_rule(samples):
    w, s = read_result(samples.weak_json), read_result(samples.strong_json)
    seen = set()
    for b, c, mode in ((w, s, "own-range"), (s, w, "own-range"), (w, w, "same-thresholds")):
        cmp = _cmp(b, c, mode=mode)
        th = cmp.metric("threshold")
        for m in cmp.metrics:
            word = change_word(cmp, m)
            assert word == _naive_word(m.name, m.verdict, th.baseline, th.candidate), m.name
            seen.add(word)
            if m.name == "far" and th.baseline != th.candidate:
                assert word not in ("better", "worse")
    # a trade-off (one rate up, the other down) has its own word
    cmp = _cmp(w, s)
    far = cmp.metric("far")
    traded = replace(cmp, metrics=tuple(replace(m, verdict="") if m.name == "far" else m
                                        for m in cmp.metrics))
    assert far.verdict == "better" and change_word(traded, traded.metric("far")) == "trade-off"
    assert {"lower FAR and FRR", "higher FAR and FRR", "better"} <= seen
    assert set(POINT_WORDS) == {"better", "worse", "", "same"}
    from opis_cli.gate import compare as gate_compare
    from opis_cli.render import format as render_format

    assert render_format.AT_OWN_THRESHOLD == gate_compare.AT_OWN_THRESHOLD


def test_compare_outputs_do_not_call_far_better(samples, capsys, isolated, monkeypatch):
    from opis_cli.render.terminal import PIPE_WIDTH, console

    # the table as a pipe lays it out (COLUMNS unset): an 80-column one wraps the
    # last column's phrase onto a second line
    monkeypatch.setattr(console, "width", PIPE_WIDTH)
    code, out, err = run(capsys, "compare", samples.weak_json, samples.strong_json,
                         "--report", "rep", "--markdown", "cmp.md")
    assert code == 0, err
    term = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.count("│") > 3}
    assert "lower FAR and FRR" in term["FAR"] and "better" not in term["FAR"]
    assert "better" in term["OPIS"]  # the metrics registry's names
    md = {ln.split("|")[1].strip(): ln for ln in (isolated / "cmp.md").read_text().splitlines()
          if ln.startswith("| ")}
    assert md["FAR"].endswith("| lower FAR and FRR |")
    page = (isolated / "rep" / "compare.html").read_text()
    rows = {r[0]: r for r in rows_of(page) if r}
    far = next(r for k, r in rows.items() if k.startswith("global FAR"))
    assert far[-1] == "lower FAR and FRR"
    assert next(r for k, r in rows.items() if k.startswith("OPIS"))[-1] == "better"


# ------------------------------------------------- the verification table


def _verification_rows(page: str) -> list[list[str]]:
    i = page.index('<section id="verification">')
    j = page.index("</section>", i)
    return rows_of(page[i:j])


def test_verification_table_shows_what_the_terminal_shows():
    """EER, minDCF with its parameters and FNMR at every FMR level, each read from
    the result (formatted as a person reads it: 10%, 0.1%), with a direction and
    a meaning; group labels escaped."""
    from opis_cli import evaluate
    from opis_cli.render.report.html import render_report
    from report_helpers import NASTY, clustered

    X, y = clustered([f"c{i}" for i in range(8)], rows=12, seed=3)
    groups = [NASTY[i % 3] for i in range(len(y))]            # hostile group labels
    res = evaluate(X, y, groups=groups, verification=True, dcf=(0.05, 2.0, 1.0),
                   num_thresholds=21, timestamp=False)
    v = res.verification
    page = render_report(res, {})
    rows = _verification_rows(page)
    head, body = rows[0], rows[1:]
    assert head == ["measure", "value", "at distance", "direction", "what it means"]
    by = {r[0]: r for r in body}
    assert by["Equal error rate (EER)"][1] == f"{100 * v.eer:.2f}%"
    assert by["Equal error rate (EER)"][2] == f"{v.eer_threshold:.6g}"
    dcf = by["Minimum detection cost (minDCF; p_target 0.05, c_miss 2, c_fa 1)"]
    assert dcf[1] == f"{v.min_dcf:.4f}" and dcf[3] == "lower is better"
    fnmr = [r for r in body if r[0].startswith("False non-match rate at FMR")]
    assert len(fnmr) == len(v.fnmr_at_fmr) >= 1
    for r, (k, x) in zip(fnmr, v.fnmr_at_fmr.items()):
        level = 100 * float(k)                          # "1e-01" -> 10 (%)
        assert r[0] == f"False non-match rate at FMR {level:g}% (FNMR@FMR)"
        assert r[1] == f"{100 * x:.2f}%" and "e+" not in r[0] and "e-" not in r[0]
    assert all(r[3] and r[4] for r in body)             # every row: direction and meaning
    g = [r for r in body if r[0].startswith("EER of the groups")]
    assert len(g) == 1
    section = page[page.index('id="verification"'):].split("</section>")[0]
    assert "&lt;/script&gt;&lt;img" in section and "</script><img" not in page
    assert "<script>alert(1)" not in page
    assert 'href="#verification"' in page


def test_no_verification_table_unless_asked():
    from opis_cli.render.report.html import render_report
    from report_helpers import nasty_result

    assert 'id="verification"' not in render_report(nasty_result(), {})


def test_fmr_level_names():
    from opis_cli.render.report.html import fmr_level

    assert [fmr_level(k) for k in ("1e-01", "1e-02", "1e-03", "1e-06")] == \
        ["10%", "1%", "0.1%", "0.0001%"]


# ------------------------------------------------- the docs' images


def test_every_image_the_docs_show_exists():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    image = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
    shown = []
    for md in pages:
        for ref in image.findall(md.read_text(encoding="utf-8")):
            if ref.startswith(("http://", "https://", "data:")):
                continue
            path = (md.parent / ref).resolve()
            assert path.is_file(), f"{md.relative_to(root)}: {ref} does not exist"
            assert path.stat().st_size > 1000, ref
            shown.append(path.name)
    # the three pages, each shown where its command is explained, made by docs/screenshots.py
    shots = {"report-screenshot.png", "compare-screenshot.png", "calibrate-screenshot.png"}
    assert shots <= set(shown)
    script = (root / "docs" / "screenshots.py").read_text(encoding="utf-8")
    assert all(f'"{s}"' in script for s in shots)


def test_the_image_check_sees_a_missing_file(tmp_path):
    image = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
    md = tmp_path / "x.md"
    md.write_text("text ![a figure](img/none.png) and `fig.savefig(\"x.png\")`\n")
    refs = image.findall(md.read_text())
    assert refs == ["img/none.png"] and not (tmp_path / refs[0]).exists()


# ------------------------------------------------- the defect list, on all three pages

#: raw result keys and internal fields that must not reach a reader (tooltips may hold them)
RAW = ("epsilon_opis", "fdr_mean", "garbe_mean", "far_range", "calibration_range",
       "recall_at_1", "map_at_r", "engine_notes", "report_histogram_rows", "num_thresholds",
       "threshold_policy", "fraction_far_above_2x")


def visible_text(page: str) -> str:
    """What a reader sees: no scripts, styles, tags or attribute values."""
    import html as _html

    body = re.sub(r"<script.*?</script>|<style.*?</style>|<title>.*?</title>", " ", page,
                  flags=re.S)
    return _html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


@pytest.fixture(scope="module")
def three_pages(samples, tmp_path_factory):
    import numpy as np
    import pyarrow.parquet as pq

    from gating_samples import STRONG, WEAK
    from opis_cli import evaluate
    from opis_cli.gate.sides import load_result
    from opis_cli.render.report import write_report
    from opis_cli.render.report.compare import write_comparison_report
    from opis_cli.render.report.transfer import write_transfer_report
    from opis_cli.transfer import Data, calibrate

    d = tmp_path_factory.mktemp("three_pages")
    t = pq.read_table(WEAK).to_pydict()
    X = np.asarray(t["embedding"], np.float32)
    res = evaluate(X, t["label"], groups=t["group"], group_column="group", verification=True,
                   diagnose=True, timestamp=False)
    b = load_result(samples.weak_json, samples.weak_curves)
    c = load_result(samples.strong_json, samples.strong_curves)
    cmp = _cmp(b.result, c.result)
    s = pq.read_table(STRONG).to_pydict()
    tr = calibrate(Data(np.asarray(s["embedding"], np.float32), s["label"]), folds=3,
                   timestamp=False)
    return {"evaluate": (write_report(res, d / "e", curves=res.curves).read_text(), res),
            "compare": (write_comparison_report(cmp, b.result, c.result, d / "c",
                                                base_curves=b.curves,
                                                cand_curves=c.curves).read_text(), None),
            "calibrate": (write_transfer_report(tr, d / "t", source="strong").read_text(), None)}


def test_no_spec_numbers_internal_fields_or_exponents_in_user_text(three_pages):
    for name, (page, _) in three_pages.items():
        text = visible_text(page)
        assert len(text) > 1000, name
        assert not re.search(r"SPEC \d", text), (name, re.findall(r".{40}SPEC \d.{20}", text))
        for key in RAW:
            assert key not in text, (name, key)
        # shares as 100%, never 1e+02%; no positive exponent anywhere (a tiny OPIS may
        # read 8.494e-06)
        assert not re.search(r"\d(\.\d+)?e[+-]\d+ ?%", text), name
        assert not re.search(r"\d(\.\d+)?e\+\d", text), (name, re.findall(
            r".{30}\d(?:\.\d+)?e\+\d.{10}", text))
        assert "(column )" not in text


def test_compare_names_every_headline_metric(samples):
    """No raw key as a row name of the compare page's headline table."""
    from opis_cli.render.report.compare import render_page

    w, s = read_result(samples.weak_json), read_result(samples.strong_json)
    cmp = _cmp(w, s)
    rows = rows_of(render_page(cmp, {}))
    names = [r[0] for r in rows if len(r) == 7][1:]
    assert len(names) == len(cmp.metrics) >= 20
    for m, shown in zip(cmp.metrics, names):
        assert "_" not in shown, (m.name, shown)


def test_options_are_listed_once(three_pages):
    page, res = three_pages["evaluate"]
    i, j = page.index('<section id="options">'), page.index('<section id="provenance">')
    opts = visible_text(page[i:j])
    prov = visible_text(page[j:])
    assert "option " not in opts
    # every option set: once under Options (by its meaning or its command-line name),
    # never again under Provenance
    assert opts.count("--far-range 0.01:0.1") == 1 and "--group-column group" in opts
    assert opts.count("--verification yes") == 1 and opts.count("--dcf 0.01:1:1") == 1
    for flag in ("--far-range", "--group-column", "--verification", "--dcf", "--metric"):
        assert flag not in prov
    for word in ("metric", "utility", "epsilon", "calibration range",
                 "recommended threshold policy"):
        assert len(re.findall(rf"(?<![\w-]){word} ", opts)) == 1, word


def test_prose_keeps_options_codes_and_dates_whole():
    from opis_cli.render.report.html import prose

    out = prose("widen it with --far-range 0.01:0.3 to see (max-mean-utility) at "
                "2026-12-07T01:42:57+00:00; <b>a-b</b>")
    assert '<span class="nb">--far-range 0.01:0.3</span>' in out
    assert '<span class="nb">max-mean-utility</span>' in out
    assert '<span class="nb">2026-12-07T01:42:57+00:00</span>' in out
    assert "<b>" not in out and "&lt;b&gt;" in out
    assert re.sub(r"<[^>]+>", "", out) == ("widen it with --far-range 0.01:0.3 to see "
                                           "(max-mean-utility) at 2026-12-07T01:42:57+00:00; "
                                           "&lt;b&gt;a-b&lt;/b&gt;")
