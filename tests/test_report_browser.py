"""The HTML report in a real browser: headless Chromium, no console errors.

Chromium is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: file descriptors 3 and 4, NUL-separated JSON),
so no websocket library is needed. Every page load collects

* uncaught exceptions, ``console.error``/``console.assert`` calls and error
  log entries (which include Content-Security-Policy violations),
* every request other than the page itself and ``data:`` URLs,
* JavaScript dialogs (an ``alert`` injected through a label would show up),

and the tests fail on any of them. Negative controls prove that the
collector does catch a deliberate JS error, a ``console.error`` and an
external request.

Chromium is a system prerequisite (Debian: ``apt-get install -y chromium``,
done by ``.ci/run``); when it is missing these tests FAIL, they never skip.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from opis_cli.cli import main

from report_helpers import BIG_CLASSES, NASTY, WEAK

INSTALL = "apt-get update && apt-get install -y chromium"
TIMEOUT = 60.0


def chromium_executable() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"Chromium is required for the browser test of the HTML report and was not "
                f"found on PATH; install it with: {INSTALL}")


class Chromium:
    """A headless Chromium and a minimal DevTools-protocol client over a pipe."""

    def __init__(self, executable: str, profile: Path):
        to_browser_r, self._w = os.pipe()
        self._r, from_browser_w = os.pipe()
        args = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--disable-extensions", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", "--window-size=1280,2000", "about:blank"]
        # The protocol pipe must be fds 3 (commands in) and 4 (answers out) of the browser.
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null'] + args,
            stdin=to_browser_r, stdout=from_browser_w, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def _write(self, msg: dict) -> None:
        os.write(self._w, json.dumps(msg).encode() + b"\0")

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe (exit code {self.proc.poll()})")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg = json.loads(raw)
        if msg.get("method") == "Page.javascriptDialogOpening":
            # a dialog blocks the page: record it (as an event) and dismiss it
            self._id += 1
            self._write({"id": self._id, "method": "Page.handleJavaScriptDialog",
                         "params": {"accept": True}, "sessionId": msg.get("sessionId")})
        return msg

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        my_id = self._id
        msg = {"id": my_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._write(msg)
        deadline = time.monotonic() + TIMEOUT
        while True:
            m = self._read(deadline)
            if m.get("id") == my_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def wait_for(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + TIMEOUT
        for m in self.events:
            if m.get("method") == method and m.get("sessionId") == session:
                return m
        while True:
            m = self._read(deadline)
            if "method" in m:
                self.events.append(m)
                if m["method"] == method and m.get("sessionId") == session:
                    return m

    def open(self, path: Path) -> "Tab":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 2000, "deviceScaleFactor": 1, "mobile": False},
                  session=session)
        url = path.resolve().as_uri()
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        tab = Tab(self, session, url)
        tab.settle()
        return tab

    def close(self) -> None:
        try:
            self._write({"id": 0, "method": "Browser.close", "params": {}})
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._w)
            os.close(self._r)


class Tab:
    def __init__(self, browser: Chromium, session: str, url: str):
        self.browser, self.session, self.url = browser, session, url

    def js(self, expression: str):
        """Evaluate in the page (promises are awaited) and return the value."""
        res = self.browser.send("Runtime.evaluate",
                                {"expression": expression, "returnByValue": True,
                                 "awaitPromise": True}, session=self.session)
        if "exceptionDetails" in res:
            raise AssertionError(f"test script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def settle(self) -> None:
        """Two animation frames and a timer tick: the page's own script has run."""
        self.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame("
                "() => setTimeout(r, 50))))")

    def problems(self) -> list[str]:
        """Console errors, exceptions, dialogs and outside requests of this page so far."""
        out = []
        for m in self.browser.events:
            if m.get("sessionId") != self.session:
                continue
            method, p = m["method"], m.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append("exception: " + (d.get("exception", {}).get("description")
                                            or d.get("text", "")))
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: "
                           + " ".join(str(a.get("value", a.get("description", "")))
                                      for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Network.requestWillBeSent":
                u = p["request"]["url"]
                if not (u == self.url or u.startswith("data:")):
                    out.append(f"request: {u}")
            elif method == "Page.javascriptDialogOpening":
                out.append(f"dialog: {p.get('type')} {p.get('message')}")
        return out

    def screenshot(self, path: Path) -> tuple[int, int]:
        data = self.browser.send("Page.captureScreenshot", {"format": "png"},
                                 session=self.session)["data"]
        png = base64.b64decode(data)
        path.write_bytes(png)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        return struct.unpack(">II", png[16:24])  # width, height from the IHDR chunk


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Chromium(chromium_executable(), tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def weak_report(tmp_path_factory) -> Path:
    """What a user runs: opis evaluate ... --report DIR."""
    out = tmp_path_factory.mktemp("weak") / "report"
    assert main(["evaluate", str(WEAK), "--group-column", "group", "--report", str(out),
                 "-q"]) == 0
    return out / "report.html"


# -- the collector catches what it must (negative controls) --------------------------
@pytest.mark.parametrize("body, expected", [
    ("<script>window.noSuchFunction();</script>", "exception: TypeError"),
    ("<script>console.error('boom');</script>", "console.error: boom"),
    ('<img src="http://127.0.0.1:9/x.png" alt="">', "request: http://127.0.0.1:9/x.png"),
    ("<script>alert('hi');</script>", "dialog: alert hi"),
])
def test_collector_catches_broken_pages(browser, tmp_path, body, expected):
    page = tmp_path / "broken.html"
    page.write_text(f"<!DOCTYPE html><html><body><p>x</p>{body}</body></html>")
    problems = browser.open(page).problems()
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize("inject, expected", [
    ("null.broken;", "exception: TypeError"),
    ("document.body.appendChild(Object.assign(document.createElement('img'), "
     "{src: 'https://example.invalid/x.png'}));", "log: "),
])
def test_collector_catches_a_broken_copy_of_the_report(browser, weak_report, tmp_path, inject,
                                                      expected):
    page = weak_report.read_text(encoding="utf-8")
    marker = 'document.documentElement.setAttribute("data-opis-ready", "1");'
    assert marker in page
    broken = tmp_path / "report.html"
    broken.write_text(page.replace(marker, marker + inject), encoding="utf-8")
    problems = browser.open(broken).problems()
    # the external image is refused by the page's Content-Security-Policy, which logs an error
    assert any(p.startswith(expected) for p in problems), problems


def test_collector_passes_a_clean_page(browser, tmp_path):
    page = tmp_path / "clean.html"
    page.write_text("<!DOCTYPE html><html><body><p>fine</p>"
                    "<script>console.log('ok')</script></body></html>")
    assert browser.open(page).problems() == []


# -- the sample report ------------------------------------------------------------------
def test_sample_report_loads_cleanly_and_works(browser, weak_report, tmp_path):
    tab = browser.open(weak_report)
    assert tab.js("document.documentElement.getAttribute('data-opis-ready')") == "1"
    # every figure decoded
    imgs = tab.js("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
    assert len(imgs) == 7 and all(imgs)  # FIGURES (with the fairness figure) + group utility
    assert tab.js("document.querySelectorAll('#classes-table tbody tr').length") == 10
    width, height = tab.screenshot(tmp_path / "report.png")
    assert (width, height) == (1280, 2000)

    # filter by label
    rows = tab.js("""new Promise(r => {
        const box = document.querySelector('#classes-table input.filter');
        box.value = 'DIGIT_8'; box.dispatchEvent(new Event('input'));
        setTimeout(() => r([...document.querySelectorAll('#classes-table tbody td.label')]
                           .map(td => td.textContent)), 400); })""")
    assert rows == ["digit_8"]
    tab.js("""new Promise(r => {
        const box = document.querySelector('#classes-table input.filter');
        box.value = ''; box.dispatchEvent(new Event('input')); setTimeout(r, 400); })""")
    # sort by FAR: the first click sorts the largest first
    far = json.loads(tab.js("document.getElementById('classes-data').textContent"))
    cols = [c["key"] for c in far["columns"]]
    rows_data = far["rows"]
    most = max(rows_data, key=lambda r: r[cols.index("far")])[cols.index("label")]
    least = min(rows_data, key=lambda r: r[cols.index("far")])[cols.index("label")]
    first = ("(() => { document.querySelectorAll('#classes-table thead th button')[%d].click();"
             " return document.querySelector('#classes-table tbody td.label').textContent })()"
             % cols.index("far"))
    assert tab.js(first) == most
    assert tab.js(first) == least  # a second click reverses
    # only the worst epsilon
    n_worst = sum(1 for r in rows_data if r[cols.index("worst")])
    got = tab.js("""(() => { const c = document.querySelector('#classes-table input.worst-only');
        c.click(); return document.querySelectorAll('#classes-table tbody tr').length })()""")
    assert got == n_worst >= 1
    tab.settle()
    assert tab.problems() == []


# -- 10k classes ------------------------------------------------------------------------
def test_ten_thousand_classes_load_cleanly_and_labels_stay_text(browser, big_report, tmp_path):
    page = big_report / "report.html"
    tab = browser.open(page)
    assert tab.js("document.documentElement.getAttribute('data-opis-ready')") == "1"
    status = tab.js("document.querySelector('#classes-table .status').textContent")
    assert status == f"Showing 1\u2013100 of {BIG_CLASSES:,} classes"
    assert tab.js("document.querySelectorAll('#classes-table tbody tr').length") == 100
    # paging
    tab.js("document.querySelector('#classes-table button.next').click()")
    assert tab.js("document.querySelector('#classes-table .status').textContent").startswith(
        "Showing 101\u2013200")
    # a label that is markup shows as text, and never runs
    for label in NASTY[:2]:
        shown = tab.js("""new Promise(r => {
            const box = document.querySelector('#classes-table input.filter');
            box.value = %s; box.dispatchEvent(new Event('input'));
            setTimeout(() => r([...document.querySelectorAll('#classes-table tbody td.label')]
                               .map(td => td.textContent)), 400); })""" % json.dumps(label))
        assert shown == [label]
    assert tab.js("document.scripts.length") == 4  # two data blobs, two page scripts
    assert tab.js("document.querySelectorAll('#classes-table tbody img').length") == 0
    # sorting all 10k rows by every column works
    n_cols = tab.js("document.querySelectorAll('#classes-table thead th').length")
    tab.js("""(() => { const box = document.querySelector('#classes-table input.filter');
        box.value = ''; box.dispatchEvent(new Event('input')); })()""")
    tab.settle()
    for i in range(n_cols):
        tab.js("document.querySelectorAll('#classes-table thead th button')[%d].click()" % i)
    tab.screenshot(tmp_path / "big.png")
    tab.settle()
    assert tab.problems() == []


# -- the calibrate report ---------------------------------------------------------------
def test_calibrate_report_loads_cleanly(browser, tmp_path):
    """``opis calibrate --report``: self-contained (no request), every figure decodes,
    one table row per fold."""
    out = tmp_path / "cal"
    assert main(["calibrate", str(WEAK), "--folds", "3", "--report", str(out), "-q"]) == 0
    tab = browser.open(out / "calibrate.html")
    imgs = tab.js("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
    assert len(imgs) == 3 and all(imgs)
    assert tab.js("document.querySelectorAll('table')[0].querySelectorAll('tr').length") == 4
    tab.settle()
    assert tab.problems() == []


# -- the verification view ----------------------------------------------------------------
def test_verification_report_loads_cleanly_with_the_det_curve(browser, tmp_path):
    """``--verification``: the DET figure decodes beside the others and the group
    table gains a sortable EER column."""
    out = tmp_path / "ver"
    assert main(["evaluate", str(WEAK), "--group-column", "group", "--verification",
                 "--report", str(out), "-q"]) == 0
    tab = browser.open(out / "report.html")
    assert tab.js("document.documentElement.getAttribute('data-opis-ready')") == "1"
    imgs = tab.js("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
    assert len(imgs) == 8 and all(imgs)
    assert tab.js("document.querySelector('#fig-det h3').textContent").startswith("DET curve")
    heads = tab.js("[...document.querySelectorAll('#groups-table thead th')]"
                   ".map(t => t.textContent)")
    assert heads[-1].startswith("EER")
    tab.js("document.querySelectorAll('#groups-table thead th button')[%d].click()"
           % (len(heads) - 1))
    tab.settle()
    assert tab.problems() == []


# -- the verdict, first, with the gate beside it ---------------------------------------------
def test_verdict_is_on_the_first_screen_with_the_failing_gate(browser, tmp_path):
    """``evaluate --max opis=0.01 --report``: the page answers the question on its first
    screen, and the broken rule is there beside the answer (exit 1 is not the only trace)."""
    out = tmp_path / "gated"
    assert main(["evaluate", str(WEAK), "--group-column", "group", "--max", "opis=0.01",
                 "--report", str(out), "-q"]) == 1
    tab = browser.open(out / "report.html")
    assert tab.js("document.documentElement.getAttribute('data-opis-ready')") == "1"
    answer = tab.js("document.querySelector('#verdict .answer').innerText")
    assert answer.startswith("Partly: at global FAR 10% (threshold 0.6053)"), answer
    notes = tab.js("[...document.querySelectorAll('#verdict li')].map(li => li.innerText)")
    assert any("--far-range 0.01:0.3" in n for n in notes)
    assert any("class block's threshold" in n for n in notes)       # with groups: which one
    gate = tab.js("document.querySelector('#gate').innerText")
    assert "Gate FAILED: 1 of 1 rule broken" in gate and "FAIL" in gate
    # both on the first screen (the viewport the screenshot uses), side by side
    boxes = tab.js("""[document.getElementById('verdict'), document.getElementById('gate')]
        .map(e => { const b = e.getBoundingClientRect();
                    return [b.top, b.bottom, b.left, b.right, window.innerHeight]; })""")
    (vt, vb, vl, vr, h), (gt, gb, gl, gr, _) = boxes
    assert 0 <= vt < vb <= h and 0 <= gt < gb <= h, boxes
    assert gl >= vr - 1, boxes                                       # beside, not under
    strict = tab.js("[...document.querySelectorAll('#verdict table.points th')]"
                    ".map(t => t.innerText)")
    assert strict[1:] == ["recommended (max-mean-utility)", "strict (far:0.01)"]
    tab.settle()
    assert tab.problems() == []


def test_calibrate_page_opens_with_its_verdict(browser, tmp_path):
    out = tmp_path / "cal"
    assert main(["calibrate", str(WEAK), "--folds", "3", "--report", str(out), "-q"]) == 0
    tab = browser.open(out / "calibrate.html")
    first = tab.js("document.querySelector('main header').nextElementSibling.id")
    assert first == "verdict"                                     # right under the title
    assert tab.js("document.querySelector('h1').innerText") == \
        "Does the threshold transfer to unseen classes?"
    text = tab.js("document.querySelector('#verdict .answer').innerText")
    assert text.split(":")[0] in ("Yes", "Partly", "No")
    # the evaluate page's look: cards and navigation
    assert tab.js("document.querySelectorAll('#summary .card').length") == 4
    assert tab.js("document.querySelectorAll('nav a').length") >= 4
    assert tab.js("document.querySelector('#verdict').getAttribute('data-answer')") in (
        "yes", "partly", "no")
    tab.settle()
    assert tab.problems() == []
