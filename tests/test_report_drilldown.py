"""The report's class finder (issue 25, item 5): data, size, and a real browser.

The data tests compare what the page embeds with rates computed here from
the curves, naively. The browser tests drive Debian's Chromium with
Playwright for Python (no browser download): open the page from disk, search
a class, open its view, sort the table, click a row, hover a point of the
scatter, follow a deep link, on a page with hostile labels and on the
10k-class page of ``big_report``; every request other than the page itself
and ``data:`` URLs, every page error and console error fails the test.
"""

from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace
from urllib.parse import quote

import numpy as np
import pytest

from opis_cli.render.escape import visible
from opis_cli.render.report import drilldown, write_report

from report_helpers import BIG_CLASSES, NASTY, nasty_result


def _blob(page: str, ident: str) -> dict:
    m = re.search(rf'<script type="application/json" id="{ident}">(.*?)</script>', page, re.S)
    assert m, ident
    return json.loads(m.group(1))


# -- data -----------------------------------------------------------------------------
def test_grid_points_keep_everything_when_small_and_thin_within_budget():
    assert drilldown.grid_points(101, 1300, 37).tolist() == list(range(101))
    pts = drilldown.grid_points(101, 20_000, 37)
    assert pts[0] == 0 and pts[-1] == 100 and 37 in pts
    assert len(pts) >= drilldown.MIN_POINTS
    assert 3 * 2 * 20_000 * (len(pts) - 1) <= drilldown.MAX_POINTS_BYTES  # the budget (+ keep)
    assert np.all(np.diff(pts) > 0)


def test_class_views_match_rates_computed_from_the_curves():
    result = nasty_result()
    data = drilldown.drilldown_data(result, result.curves)
    per = result.classes.per_class
    assert data["n_classes"] == len(per) and data["table"] == "classes-data"
    cv = data["curves"]
    pts = drilldown.grid_points(len(result.thresholds), len(per), result.recommended_threshold.index)
    assert cv["points"] == pytest.approx([result.thresholds[i] for i in pts], rel=1e-7)
    assert cv["points"][cv["recommended_point"]] == pytest.approx(
        result.recommended_threshold.value, rel=1e-7)
    C, p = len(per), len(pts)
    U = drilldown.unpack(cv["utility"], C, p)
    far = drilldown.unpack(cv["far"], C, p)
    frr = drilldown.unpack(cv["frr"], C, p)
    curves = result.curves
    for i, c in enumerate(per):
        j = list(curves.labels).index(c.label)
        want_far = [curves.fp[j, k] / curves.negatives[j] for k in pts]
        want_frr = [1 - curves.tp[j, k] / curves.positives[j] for k in pts]
        assert U[i] == pytest.approx(curves.utility[j, pts], abs=0.6 / 65535)
        assert far[i] == pytest.approx(want_far, abs=0.6 / 65535)
        assert frr[i] == pytest.approx(want_frr, abs=0.6 / 65535)
    # the band: percentiles of the class utilities at each shown threshold
    Ufull = np.array([curves.utility[list(curves.labels).index(c.label)] for c in per])
    for k, idx in enumerate(pts):
        col = sorted(Ufull[:, idx])
        assert cv["band"]["p50"][k] == pytest.approx(float(np.median(col)), abs=1e-5)
        assert cv["band"]["mean"][k] == pytest.approx(result.classes.mean_utility[idx], abs=1e-5)


def test_without_curves_the_views_carry_numbers_only():
    result = nasty_result()
    data = drilldown.drilldown_data(result, None)
    assert data["curves"] is None
    assert data["n_classes"] == result.classes.evaluated


def test_diagnosis_entries_reach_their_class():
    result = nasty_result()
    lab = result.classes.per_class[0].label
    diag = {"impostors": {lab: [{"label": "x", "accepts": 3, "far": 0.5, "share": 1.0}]},
            "rejected_rows": {lab: [{"row": 4, "rejected": 2, "frr": 0.5}]},
            "suspects": {"count": 1, "rows": [{"row": 4, "label": lab, "looks_like": "x",
                                               "nearest_positive": 0.3}]}}
    stub = SimpleNamespace(**{k: getattr(result, k) for k in
                              ("classes", "thresholds", "epsilon", "recommended_threshold")},
                           diagnosis=diag)
    data = drilldown.drilldown_data(stub, None)
    first = data["diagnosis"]["0"]
    assert data["has_diagnosis"]
    assert first["impostors"][0]["accepts"] == 3
    assert first["rejected_rows"][0]["row"] == 4
    assert first["suspects"][0]["looks_like"] == "x"
    assert set(data["diagnosis"]) == {"0"}


def test_a_20k_class_page_stays_small():
    """The class finder's data for 20k classes x 101 thresholds: under 3.5 MB (the
    numbers of each class are read from the table's data, not stored twice)."""
    C, K = 20_000, 101
    rng = np.random.default_rng(0)
    th = np.linspace(0.2, 0.6, K)
    per = tuple(SimpleNamespace(label=f"c{i}", n=3, queries=3, positives=6, negatives=60_000,
                                mean_utility=0.5, far_at_threshold=0.1, frr_at_threshold=0.3,
                                best_threshold=0.4, worst=False, recall_at_1=0.5)
                for i in range(C))
    tp = np.sort(rng.integers(0, 7, size=(C, K)), axis=1)
    fp = np.sort(rng.integers(0, 60_000, size=(C, K)), axis=1)
    curves = SimpleNamespace(labels=tuple(c.label for c in per), utility=rng.random((C, K)),
                             tp=tp, fp=fp, positives=np.full(C, 6), negatives=np.full(C, 60_000))
    rt = SimpleNamespace(value=th[50], index=50, far=0.1, frr=0.3)
    block = SimpleNamespace(per_class=per, recommended_threshold=rt, evaluated=C,
                            mean_utility=tuple(np.full(K, 0.5)))
    stub = SimpleNamespace(classes=block, thresholds=tuple(th), epsilon=0.1,
                           recommended_threshold=rt)
    text = json.dumps(drilldown.drilldown_data(stub, curves))
    assert len(text) < 3_500_000, len(text)


# -- the browser ------------------------------------------------------------------------
def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is required for the browser tests of the report; install it with: "
                "apt-get update && apt-get install -y chromium")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser extra: pip install '.[browser]'")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage"])
        yield b
        b.close()


class Page:
    """One page load, with every outside request, page error and console error kept."""

    def __init__(self, browser, path):
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("request", lambda r: None if r.url.startswith(("file:", "data:"))
                     else self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text)
                     if m.type in ("error", "assert") else None)

        def dialog(d):
            self.dialogs.append(d.message)
            d.dismiss()

        self.page.on("dialog", dialog)
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("html[data-drill-ready]", state="attached")

    def clean(self):
        assert self.requests == [], self.requests
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs
        self.page.close()


@pytest.fixture(scope="module")
def nasty_report(tmp_path_factory):
    result = nasty_result()
    return write_report(result, tmp_path_factory.mktemp("drill"))


def test_search_open_sort_click_hover_on_hostile_labels(browser, nasty_report):
    pg = Page(browser, nasty_report)
    page = pg.page
    target = NASTY[1]  # "</script><img src=x onerror=alert(2)>"
    page.fill("#drill-search", "onerror")
    page.wait_for_selector("#drill-matches li button")
    texts = page.locator("#drill-matches li button span:first-child").all_text_contents()
    assert texts == [visible(target)]
    page.click("#drill-matches li button")
    view = page.locator("#drill-view")
    assert view.get_attribute("data-open") == target
    assert page.inner_text("#drill-view h3").startswith(visible(target))
    # its utility is drawn against the band, with its FAR and FRR across the range
    d = page.get_attribute('#drill-view path[data-series="this class"]', "d")
    assert d and d.count("L") >= 1
    assert page.locator('#drill-view polygon[data-series="band"]').count() == 1
    assert page.locator('#drill-view path[data-series="FAR"]').count() == 1
    # sort the table by FAR, highest first: the first row is the class with the highest FAR
    far_head = '#classes-table thead th:has(button:text-is("FAR"))'
    page.click(far_head + " button")  # FAR sorts highest first
    assert page.get_attribute(far_head, "aria-sort") == "descending"
    first_row = page.locator("#classes-table tbody tr").first
    row = int(first_row.get_attribute("data-row"))
    result = nasty_result()
    fars = [c.far_at_threshold for c in result.classes.per_class]
    assert fars[row] == max(fars)
    # a click on a row opens that class
    first_row.click()
    assert view.get_attribute("data-open") == result.classes.per_class[row].label
    # hovering a point of the scatter names its class
    pts = page.evaluate("() => { var c = document.getElementById('drill-scatter');"
                        " return [Array.from(c.opisPoints.x), Array.from(c.opisPoints.y),"
                        " c.width, c.height]; }")
    box = page.locator("#drill-scatter").bounding_box()
    j = 2
    page.mouse.move(box["x"] + pts[0][j] * box["width"] / pts[2],
                    box["y"] + pts[1][j] * box["height"] / pts[3])
    tip = page.inner_text("#drill-tip")
    hovered = int(page.get_attribute("#drill-scatter", "data-hover"))
    assert tip.startswith(visible(result.classes.per_class[hovered].label) + ":")
    # the point under the pointer is the one hovered (or one drawn on the same spot)
    assert abs(pts[0][hovered] - pts[0][j]) < 1e-9 and abs(pts[1][hovered] - pts[1][j]) < 1e-9
    pg.clean()


def test_deep_link_opens_a_class(browser, nasty_report):
    label = NASTY[0]
    pg = Page(browser, nasty_report)
    pg.page.goto(nasty_report.as_uri() + "#class=" + quote(label))
    pg.page.reload()
    pg.page.wait_for_selector("#drill-view[data-open]")
    assert pg.page.get_attribute("#drill-view", "data-open") == label
    pg.clean()


def test_the_10k_class_report(browser, big_report):
    page_path = big_report / "report.html"
    assert page_path.stat().st_size < 10 * 2**20
    pg = Page(browser, page_path)
    page = pg.page
    assert page.evaluate("() => JSON.parse(document.getElementById('drill-data').textContent)"
                         ".n_classes") == BIG_CLASSES
    page.fill("#drill-search", "class_09999")
    page.wait_for_selector("#drill-matches li button")
    page.press("#drill-search", "Enter")
    assert page.get_attribute("#drill-view", "data-open") == "class_09999"
    assert page.locator('#drill-view path[data-series="this class"]').count() == 1
    # a hostile label among 10k is found and shown as text
    assert page.evaluate("(l) => window.opisOpenClass(l)", NASTY[0])
    assert page.inner_text("#drill-view h3").startswith(visible(NASTY[0]))
    pg.clean()
