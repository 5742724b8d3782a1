"""Layout of the three pages (evaluate, compare, calibrate) in a real browser.

Headless Chromium (Debian's, driven by Playwright; the ``browser`` extra) at
two widths: a number, a percentage or a short code in a table cell renders on
one line (its text's client rectangles share one line), and a label no longer
than a cell's width is never broken inside a word. The page CSS never allows a
break anywhere in a word (``overflow-wrap: anywhere``, ``word-break:
break-all``). The static CSS checks run in the quick suite; the browser ones are
slow (conftest.SLOW).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from gating_samples import STRONG
from report_helpers import NASTY, clustered
from test_report_drilldown import browser  # noqa: F401  (headless Chromium, per module)

#: a label with no space: may break only when it cannot fit (never below the cell)
LONG = "n02084071_dog_domestic_dog_Canis_familiaris_" * 3
#: labels that fit a cell: never broken
SHORT = ("digit_8_with_suffix", "n01234567.dog.n.01", "customer-0042")
NUMBER = re.compile(r"^[-+]?(\d[\d,]*(\.\d+)?|\.\d+)(e[-+]?\d+)?(%|x)?$")


@pytest.fixture(scope="module")
def pages(tmp_path_factory, samples):
    """The three pages, written by the report writers from real results."""
    from opis_cli import evaluate
    from opis_cli.gate.compare import compare_results
    from opis_cli.gate.sides import load_result
    from opis_cli.render.report import write_report
    from opis_cli.render.report.compare import write_comparison_report
    from opis_cli.render.report.transfer import write_transfer_report
    from opis_cli.transfer import Data, calibrate

    d = tmp_path_factory.mktemp("layout")
    names = [*NASTY, LONG, *SHORT]
    X, y = clustered(names, rows=6, seed=2)
    groups = [("grp " + SHORT[i % 3]) for i in range(len(y))]
    res = evaluate(X, y, groups=groups, verification=True, num_thresholds=21, timestamp=False)
    out = {"evaluate": write_report(res, d / "evaluate", curves=res.curves)}
    b = load_result(samples.weak_json, samples.weak_curves)
    c = load_result(samples.strong_json, samples.strong_curves)
    cmp = compare_results(b.result, c.result, baseline_name=str(samples.weak_json),
                          candidate_name=str(samples.strong_json))
    out["compare"] = write_comparison_report(cmp, b.result, c.result, d / "compare",
                                             base_curves=b.curves, cand_curves=c.curves)
    import pyarrow.parquet as pq

    t = pq.read_table(STRONG).to_pydict()
    tr = calibrate(Data(np.asarray(t["embedding"], np.float32), t["label"]), folds=3, seed=0,
                   timestamp=False)
    out["calibrate"] = write_transfer_report(tr, d / "calibrate", source=str(STRONG))
    return out


def test_page_css_never_breaks_inside_a_word(pages):
    for name, path in pages.items():
        css = " ".join(re.findall(r"<style>(.*?)</style>", path.read_text(), re.S))
        assert css, name
        assert "anywhere" not in css and "break-all" not in css, name
        # numbers and short codes: no wrapping at all in table cells
        assert re.search(r"th,td\{[^}]*white-space:nowrap", css), name
        # long labels in their own cell: broken only when a word cannot fit
        assert re.search(r"td\.label\{[^}]*overflow-wrap:break-word", css), name


# -- the browser ------------------------------------------------------------------------
_LINES = """el => {
  const r = document.createRange(); r.selectNodeContents(el);
  const tops = new Set();
  for (const q of r.getClientRects()) { if (q.width > 0.5) tops.add(Math.round(q.top)); }
  return tops.size;
}"""


@pytest.mark.parametrize("width", [1200, 760])
def test_numbers_and_labels_do_not_wrap_inside_a_token(browser, pages, width):
    checked = {"number": 0, "label": 0, "code": 0}
    for name, path in pages.items():
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        if name == "evaluate":
            page.wait_for_selector("#classes-table tbody tr")
        for cell in page.locator("td").all():
            text = cell.inner_text().strip()
            if not text or not cell.is_visible():
                continue
            lines = cell.evaluate(_LINES)
            cls = cell.get_attribute("class") or ""
            if NUMBER.match(text):
                checked["number"] += 1
                assert lines == 1, (name, width, text)
            elif "label" in cls and text in (*SHORT, "digit_8"):
                checked["label"] += 1
                assert lines == 1, (name, width, text)
            elif "label" not in cls and "text" not in cls and "rule" not in cls \
                    and cell.evaluate("el => getComputedStyle(el).whiteSpace") == "nowrap":
                assert lines == 1, (name, width, text)
        # options, hyphenated codes and dates in prose and in the header: one line each
        for span in page.locator(".nb").all():
            if span.is_visible():
                checked["code"] += 1
                assert span.evaluate(_LINES) == 1, (name, width, span.inner_text())
        page.close()
    assert checked["number"] > 100 and checked["label"] >= 3 and checked["code"] >= 5, checked


def test_the_line_count_sees_a_wrapped_cell(browser, tmp_path):
    """The check above can fail: a cell forced narrow does report two lines."""
    f = tmp_path / "x.html"
    f.write_text('<table><tr><td style="width:30px;max-width:30px;overflow-wrap:anywhere">'
                 "0.123456789</td></tr></table>")
    page = browser.new_page(viewport={"width": 400, "height": 300})
    page.goto(f.as_uri())
    assert page.locator("td").evaluate(_LINES) > 1
    page.close()
