"""One self-contained HTML page for a finished result.

The page needs nothing but itself: figures are PNGs embedded as ``data:``
URIs, the style sheet and the script are inline, a Content-Security-Policy
forbids every network request, so it opens the same from disk, from a CI
artifact store or as a mail attachment.

Every string that can come from user data (labels, paths, option values) is
shown by the rule of :mod:`opis_cli.render.escape` (control and bidi characters as
escapes), then escaped with :func:`html.escape`; the per-row tables are drawn by the inline
script from a JSON blob (escaped so that ``</script>`` inside a label cannot
end the block), one page of rows at a time, so 10k+ classes stay responsive.

Reads the result only; computes nothing but display shares and formats.
"""

from __future__ import annotations

import base64
import html
import json
import re
from typing import TYPE_CHECKING, Any, Mapping

from ...results import ConsistencyBlock, Curves, EvaluationResult
from . import drilldown
from ..escape import hidden, visible
from ..format import MISSING, finite, num, pct, rounded
from ..verdict_text import ANSWER_WORD, gate_headline, gate_rows
from .plots import distance_unit

if TYPE_CHECKING:  # pragma: no cover
    from ...gate.rules import GateOutcome
    from ...verdict import Verdict

__all__ = ["render_report", "FIGURE_TEXT", "verdict_html", "VERDICT_CSS"]

#: heading and "how to read it" caption of each figure, by file stem
FIGURE_TEXT: dict[str, tuple[str, str]] = {
    "utility": (
        "Utility of each class across the calibration range",
        "Each line is one class's utility as the distance threshold sweeps the calibration range "
        "(with many classes, blue shading shows the share of classes at each utility, with "
        "sampled classes on top). Black: the mean over classes; red dashed: the mean of the worst "
        "classes; green: the recommended threshold. OPIS measures how far the class curves stray "
        "from the mean: a consistent model keeps them bunched together."),
    "far_frr": (
        "False accepts and false rejects per class at the recommended threshold",
        "Each point is one class at the one global threshold: how often it accepts pairs it "
        "should reject (FAR, right) and rejects pairs it should accept (FRR, up). The star is "
        "the global operating point. Classes far to the right get too loose a threshold, classes "
        "far up too strict a one; the dotted line marks twice the global FAR."),
    "best_thresholds": (
        "Each class's own best threshold",
        "Where each class's own utility peaks, against the recommended global threshold (green). "
        "If one threshold suited every class, all of them would sit on the green line. A class "
        "whose best threshold is at an end of the calibration range may want one outside it; a "
        "class whose utility is flat across the range counts at the lower end (ties go to the "
        "smallest threshold)."),
    "distances": (
        "Distances of positive and negative pairs",
        "Distances of same-label (positive) and different-label (negative) pairs, from the "
        "histogram the result stores, each scaled to area 1 so both are visible. The shaded "
        "band is the "
        "calibration range over which OPIS is measured; pairs left of the green threshold are "
        "accepted. Where the two overlap, no threshold separates them."),
    "contributions": (
        "Classes that contribute most to OPIS",
        "OPIS is the sum of the per-class shares shown here: a class contributes by being far "
        "from the mean utility curve, either way. Red: classes below the average utility, which "
        "the shared threshold serves badly; blue: classes above it. The full list is in the "
        "table below (column \u201cOPIS share\u201d)."),
    "fairness": (
        "Fairness of the threshold across the calibration range",
        "How evenly each threshold of the calibration range treats the classes, in the terms of "
        "biometric fairness audits: the fairness discrepancy rate FDR (blue, 1 = every "
        "class has the same FAR and FRR) and the Gini aggregation rate GARBE (red, 0 = no "
        "inequality). Solid: classes; dashed: groups. Green: the recommended threshold."),
    "det": (
        "DET curve: false rejects against false accepts",
        "The verification view over all pairs: each point is one threshold, with its "
        "false accept rate (right) and false reject rate (up) on normal-deviate axes, as "
        "biometric evaluations draw them; lower left is better. Thin lines: the groups with "
        "the highest EER (red) and the lowest (blue). The shaded band is the calibration "
        "range's FAR, the star the recommended threshold, the dot the EER on the diagonal "
        "FAR = FRR."),
    "group_utility": (
        "Utility of each group across the calibration range",
        "The same view with groups (customers, domains) in place of classes: the utility over "
        "all pairs whose query is in the group."),
}

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")

_CSS = """
:root{--fg:#111827;--muted:#4b5563;--line:#e5e7eb;--bg:#f9fafb;--card:#fff;--accent:#059669;
--bad:#dc2626;--badbg:#fef2f2;--warnbg:#fffbeb;--warn:#92400e}
*{box-sizing:border-box}
body{margin:0;
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:24px 20px 48px}
header h1{margin:0;font-size:26px}
header .sub{margin:4px 0 0;color:var(--muted);font-size:14px;overflow-wrap:break-word}
nav{margin:14px 0 6px;font-size:14px}
nav a{color:var(--accent);margin-right:14px;text-decoration:none}
nav a:hover{text-decoration:underline}
h2{font-size:20px;margin:34px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:16px;margin:0 0 6px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:12px;margin:18px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card .k{font-size:13px;color:var(--muted);font-weight:600;text-transform:uppercase;
letter-spacing:.03em}
.card .v{font-size:28px;font-weight:700;margin:2px 0;font-variant-numeric:tabular-nums}
.card .v small{font-size:14px;font-weight:500;color:var(--muted)}
.card .h{font-size:12.5px;color:var(--muted);line-height:1.35}
.story{background:var(--card);border-left:4px solid var(--accent);padding:10px 14px;margin:8px 0;
border-radius:0 8px 8px 0}
.story p{margin:6px 0}
.flag{background:var(--warnbg);border-left-color:#f59e0b;color:var(--warn)}
figure{margin:0 0 22px;background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:14px}
figure img{display:block;max-width:100%;height:auto;margin:6px auto 0}
figcaption{color:var(--muted);font-size:14px}
table{border-collapse:collapse;font-size:13.5px;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{white-space:normal}
.nb{white-space:nowrap}
th:first-child,td:first-child{text-align:left}
table.kv td,table.kv th{text-align:left;white-space:normal;overflow-wrap:break-word}
th.text{text-align:left}
table.kv td:first-child{color:var(--muted);white-space:nowrap}
.box{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px;
overflow-x:auto}
.cards.pairs .v{font-size:21px}
.controls{display:flex;flex-wrap:wrap;gap:10px 18px;align-items:center;margin-bottom:8px;
font-size:14px}
.controls input[type=search]{font:inherit;padding:4px 8px;border:1px solid #d1d5db;
border-radius:6px;
min-width:240px}
.controls select,.controls button{font:inherit;padding:3px 8px;border:1px solid #d1d5db;
border-radius:6px;background:#fff;cursor:pointer}
.controls button:disabled{opacity:.45;cursor:default}
.status{color:var(--muted)}
.scroll{max-height:75vh;overflow:auto;border:1px solid var(--line);border-radius:8px;
background:#fff}
.scroll table{width:100%}
.scroll thead th{position:sticky;top:0;background:#f3f4f6;z-index:1}
thead th button{font:inherit;font-weight:600;border:0;background:none;cursor:pointer;padding:0;
color:var(--fg)}
thead th[aria-sort=ascending] button::after{content:" \\25B2";font-size:10px}
thead th[aria-sort=descending] button::after{content:" \\25BC";font-size:10px}
td.label{text-align:left;white-space:normal;overflow-wrap:break-word;min-width:9em;max-width:340px}
tr.worst td.label{color:var(--bad);font-weight:600}
td.hot{background:var(--badbg);color:var(--bad)}
td.text{text-align:left}
.labels{max-height:220px;overflow:auto;background:#fff;border:1px solid var(--line);
border-radius:6px;
padding:8px;font-size:13px;overflow-wrap:break-word}
details summary{cursor:pointer;color:var(--accent)}
footer{margin-top:40px;color:var(--muted);font-size:13px}
"""

_JS = r"""
(function () {
  "use strict";
  var MISSING = @MISSING@;
  var FORMAT = {
    text: function (v) { return visible(String(v)); },
    int: function (v) { return v.toLocaleString("en-US"); },
    num: function (v) { return v.toFixed(4); },
    pct: function (v) { return (100 * v).toFixed(2) + "%"; },
    dist: function (v) { return String(Number(v.toPrecision(5))); },
    bool: function (v) { return v ? "yes" : ""; }
  };
  // the rule of opis_cli.render.escape.visible: control and format characters as escapes
  function visible(s) {
    return s.replace(/[\\\p{Cc}\p{Cf}\p{Zl}\p{Zp}\uFFFE\uFFFF]/gu, function (ch) {
      if (ch === "\\") { return "\\\\"; }
      if (ch === "\t") { return "\\t"; }
      if (ch === "\n") { return "\\n"; }
      if (ch === "\r") { return "\\r"; }
      var o = ch.codePointAt(0), h = o.toString(16);
      if (o < 0x100) { return "\\x" + ("0" + h).slice(-2); }
      if (o < 0x10000) { return "\\u" + ("000" + h).slice(-4); }
      return "\\U" + ("0000000" + h).slice(-8);
    });
  }
  function fmt(v, kind) {
    return (v === null || v === undefined) ? MISSING : FORMAT[kind](v);
  }
  function setup(root) {
    var data = JSON.parse(document.getElementById(root.getAttribute("data-source")).textContent);
    var cols = data.columns, rows = data.rows;
    var labelIdx = cols.findIndex(function (c) { return c.key === "label"; });
    var worstIdx = cols.findIndex(function (c) { return c.key === "worst"; });
    var farIdx = cols.findIndex(function (c) { return c.key === "far"; });
    var lower = rows.map(function (r) { return String(r[labelIdx]).toLowerCase(); });
    var st = { col: data.sort_column, desc: false, filter: "", worstOnly: false, page: 0,
               size: 100, view: [] };
    var filterBox = root.querySelector("input.filter");
    var worstBox = root.querySelector("input.worst-only");
    var sizeBox = root.querySelector("select.page-size");
    var prev = root.querySelector("button.prev"), next = root.querySelector("button.next");
    var status = root.querySelector(".status"), pageInfo = root.querySelector(".page");
    var thead = root.querySelector("thead tr"), tbody = root.querySelector("tbody");
    var ths = cols.map(function (c, i) {
      var th = document.createElement("th");
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = c.label;
      if (c.title) { th.title = c.title; }
      if (c.kind === "text") { th.className = "text"; }
      b.addEventListener("click", function () {
        if (st.col === i) { st.desc = !st.desc; } else { st.col = i; st.desc = !!c.desc_first; }
        st.page = 0;
        refresh();
      });
      th.appendChild(b);
      thead.appendChild(th);
      return th;
    });
    function compare(a, b) {
      var x = rows[a][st.col], y = rows[b][st.col];
      if (x === null || x === undefined) { return (y === null || y === undefined) ? a - b : 1; }
      if (y === null || y === undefined) { return -1; }
      var r;
      if (typeof x === "string") { r = x < y ? -1 : (x > y ? 1 : 0); }
      else { r = (x === y) ? 0 : (x < y ? -1 : 1); }
      if (st.desc) { r = -r; }
      return r !== 0 ? r : a - b;
    }
    function refresh() {
      var f = st.filter, view = [];
      for (var i = 0; i < rows.length; i++) {
        if (f && lower[i].indexOf(f) < 0) { continue; }
        if (st.worstOnly && !rows[i][worstIdx]) { continue; }
        view.push(i);
      }
      view.sort(compare);
      st.view = view;
      ths.forEach(function (th, i) {
        if (i === st.col) { th.setAttribute("aria-sort", st.desc ? "descending" : "ascending"); }
        else { th.removeAttribute("aria-sort"); }
      });
      render();
    }
    function render() {
      var n = st.view.length, pages = Math.max(1, Math.ceil(n / st.size));
      if (st.page >= pages) { st.page = pages - 1; }
      var start = st.page * st.size, end = Math.min(n, start + st.size);
      var frag = document.createDocumentFragment();
      for (var j = start; j < end; j++) {
        var r = rows[st.view[j]], tr = document.createElement("tr");
        tr.setAttribute("data-row", String(st.view[j]));
        if (worstIdx >= 0 && r[worstIdx]) { tr.className = "worst"; }
        for (var c = 0; c < cols.length; c++) {
          var td = document.createElement("td");
          td.textContent = fmt(r[c], cols[c].kind);
          if (c === labelIdx) { td.className = "label"; }
          else if (c === farIdx && r[c] !== null && data.far_hot !== null && r[c] > data.far_hot) {
            td.className = "hot";
          }
          tr.appendChild(td);
        }
        frag.appendChild(tr);
      }
      tbody.replaceChildren(frag);
      status.textContent = (n === 0 ? "No " + data.noun_plural + " match"
        : "Showing " + (start + 1).toLocaleString("en-US") + "\u2013" + end.toLocaleString("en-US")
          + " of " + n.toLocaleString("en-US") + " " + (n === 1 ? data.noun : data.noun_plural))
        + (n < rows.length ? " (" + rows.length.toLocaleString("en-US") + " in all)" : "");
      pageInfo.textContent = "page " + (st.page + 1) + " of " + pages;
      prev.disabled = st.page === 0;
      next.disabled = st.page >= pages - 1;
    }
    var timer = null;
    filterBox.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        st.filter = filterBox.value.trim().toLowerCase();
        st.page = 0;
        refresh();
      }, 120);
    });
    worstBox.addEventListener("change", function () {
      st.worstOnly = worstBox.checked; st.page = 0; refresh();
    });
    sizeBox.addEventListener("change", function () {
      st.size = parseInt(sizeBox.value, 10); st.page = 0; render();
    });
    prev.addEventListener("click", function () { st.page -= 1; render(); });
    next.addEventListener("click", function () { st.page += 1; render(); });
    root.opisTable = { state: st, refresh: refresh };
    refresh();
    root.setAttribute("data-ready", "1");
  }
  window.opisVisible = visible;  // the escaping rule, shared with the class finder
  document.querySelectorAll("[data-opis-table]").forEach(setup);
  document.documentElement.setAttribute("data-opis-ready", "1");
})();
"""
# a missing value (JSON null) shows as in every other output
_JS = _JS.replace("@MISSING@", json.dumps(MISSING))


# -- formatting helpers ---------------------------------------------------------
def esc(value: Any) -> str:
    """Escape any value for HTML text or attributes: control and bidi characters shown
    as escapes (:func:`~opis_cli.render.escape.visible`), then HTML-escaped."""
    return html.escape(visible(value), quote=True)


#: tokens of user-facing prose kept on one line: an option with its value
#: (``--far-range 0.01:0.3``) and hyphenated codes, policies and dates
#: (``max-mean-utility``, ``2026-12-07T01:42:57+00:00``); browsers would break after
#: their hyphens otherwise
_TOKEN = re.compile(r"--[A-Za-z][\w-]*(?: [\w.:%]+)?|\w+(?:[:.]\w+)*(?:-[\w.:+]+)+")


def prose(value: Any) -> str:
    """:func:`esc`, with every option, hyphenated code and date kept whole
    (``<span class="nb">``); for text between tags, never attributes."""
    return _TOKEN.sub(lambda m: f'<span class="nb">{m.group(0)}</span>', esc(value))


def json_for_script(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c`` etc., so no label can close the
    script element (``</script>``) or open a comment; ``JSON.parse`` reads
    them back unchanged.
    """
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    # no raw control or bidi character in the page, even inside the data blob
    return _NON_ASCII.sub(_json_escape, text)


def _json_escape(m: "re.Match") -> str:
    ch = m.group()
    if not hidden(ch):
        return ch
    o = ord(ch)
    if o < 0x10000:
        return f"\\u{o:04x}"
    o -= 0x10000  # a UTF-16 surrogate pair, as JSON writes astral characters
    return f"\\u{0xd800 + (o >> 10):04x}\\u{0xdc00 + (o & 0x3ff):04x}"


_NON_ASCII = re.compile("[^\\x00-\\x7e]")


# -- the verdict (first on every page) ---------------------------------------------
VERDICT_CSS = """
.verdict-row{display:grid;grid-template-columns:minmax(0,2fr) minmax(0,1fr);gap:12px;margin:16px 0}
@media (max-width:800px){.verdict-row{grid-template-columns:1fr}}
.verdict{background:var(--card);border:1px solid var(--line);border-left:6px solid #f59e0b;
border-radius:10px;padding:12px 16px}
.verdict.answer-yes{border-left-color:var(--accent)}
.verdict.answer-no{border-left-color:var(--bad)}
.verdict .answer{font-size:18px;margin:0 0 6px;line-height:1.4}
.verdict .answer b{font-size:20px}
.verdict ul{margin:6px 0 0;padding-left:20px;color:var(--muted);font-size:14px}
.verdict table{margin-top:8px}
.gate{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.gate.failed{border-color:var(--bad);background:var(--badbg)}
.gate h3{margin:0 0 6px}
.gate.failed h3{color:var(--bad)}
.gate.passed h3{color:var(--accent)}
.gate td.fail{color:var(--bad);font-weight:700}
.gate td.rule{text-align:left;white-space:normal;overflow-wrap:break-word}
.better{color:#1d4ed8}.worse{color:var(--bad);font-weight:600}.pass{color:var(--accent)}
.fail{color:var(--bad);font-weight:700}
.warn{background:#fffbeb;color:#92400e;padding:.4rem .7rem;border-left:4px solid #f59e0b;
border-radius:0 8px 8px 0}
.muted{color:var(--muted);font-size:13px}
section .box{overflow-x:auto}
"""


def card(key: str, value: str, hint: str) -> str:
    """One headline card (the evaluate page's look), for the other pages too."""
    return _card(key, value, hint)


def page(title: str, heading: str, sub: str, nav: list[tuple[str, str]], verdict: str,
         body: str, footer: str = "") -> str:
    """A whole self-contained page in the evaluate report's look: the same style sheet,
    Content-Security-Policy, header, verdict first, navigation and footer; ``verdict``
    and ``body`` are trusted HTML, every other argument is text (escaped here)."""
    nav_html = "".join(f'<a href="#{esc(k)}">{esc(v)}</a>' for k, v in nav)
    foot = f"<footer>{esc(footer)}</footer>" if footer else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="opis">
<title>{esc(title)}</title>
<style>{_CSS}{VERDICT_CSS}</style>
</head>
<body>
<main>
<header><h1>{esc(heading)}</h1>
<p class="sub">{esc(sub)}</p></header>
{verdict}
<nav>{nav_html}</nav>
{body}
{foot}
</main>
</body>
</html>
"""


def _verdict_points(result: EvaluationResult) -> str:
    """The recommended threshold and the strict point side by side (rates only)."""
    v = result.verdict
    s = v.strict
    if s is None or s.index == v.index:
        return ""
    from ...verdict import rate_text, share_text

    rows = [("threshold", num(v.threshold, ".4g"), num(s.threshold, ".4g")),
            ("global false accept rate", rate_text(v.far), rate_text(s.far)),
            ("global false reject rate", rate_text(v.frr), rate_text(s.frr)),
            ("classes with FAR > 2x global", share_text(v.fraction_far_above_2x),
             share_text(s.fraction_far_above_2x)),
            ("classes with FRR > 50%", share_text(v.fraction_frr_above_half),
             share_text(s.fraction_frr_above_half))]
    body = "".join(f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td></tr>"
                   for a, b, c in rows)
    return (f'<table class="points"><thead><tr><th></th><th>recommended ({esc(v.policy)})</th>'
            f"<th>strict ({esc(s.policy)})</th></tr></thead><tbody>{body}</tbody></table>")


def gate_html(outcome: "GateOutcome") -> str:
    """The gate outcome: its headline and pass/fail per rule (rule text escaped; a broken
    rule's message as its tooltip; the baseline's value when a rule has one)."""
    with_base = any(r.baseline is not None for r in outcome.results)
    rows = ""
    for r, (rule, value, limit, ok) in zip(outcome.results, gate_rows(outcome)):
        base = f"<td>{esc(num(r.baseline))}</td>" if with_base else ""
        tip = "" if ok else f' title="{esc(r.message)}"'
        rows += (f'<tr><td class="rule">{esc(rule)}</td><td>{esc(value)}</td>{base}'
                 f'<td>{esc(limit)}</td><td class="{"pass" if ok else "fail"}"{tip}>'
                 f'{"pass" if ok else "FAIL"}</td></tr>')
    state = "passed" if outcome.passed else "failed"
    head = "<th>rule</th><th>value</th>" + ("<th>baseline</th>" if with_base else "") + \
        "<th>limit</th><th></th>"
    return (f'<div class="gate {state}" id="gate" data-gate="{state}">'
            f"<h3>{esc(gate_headline(outcome))}</h3>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")


def verdict_html(verdict: "Verdict", outcome: "GateOutcome | None" = None, *,
                 extra: str = "", question: str = "") -> str:
    """The verdict block that opens a page: the answer in one sentence, its notes,
    ``extra`` HTML under them, and the gate outcome beside it when given."""
    word = ANSWER_WORD.get(verdict.answer, verdict.answer)
    rest = verdict.sentence[len(word):] if verdict.sentence.startswith(word) else \
        ": " + verdict.sentence
    notes = "".join(f"<li>{prose(n)}</li>" for n in verdict.notes)
    q = f'<p class="status">{esc(question)}</p>' if question else ""
    box = (f'<section id="verdict" class="verdict answer-{esc(verdict.answer)}" '
           f'data-answer="{esc(verdict.answer)}">{q}'
           f'<p class="answer"><b>{esc(word)}</b>{prose(rest)}</p>'
           + (f"<ul>{notes}</ul>" if notes else "") + extra + "</section>")
    side = gate_html(outcome) if outcome is not None else ""
    return f'<div class="verdict-row">{box}{side}</div>' if side else box


# -- page parts -------------------------------------------------------------------
def _card(key: str, value: str, hint: str, unit: str = "") -> str:
    unit_html = f" <small>{esc(unit)}</small>" if unit else ""
    return (f'<div class="card"><div class="k">{esc(key)}</div>'
            f'<div class="v">{esc(value)}{unit_html}</div><div class="h">{prose(hint)}</div></div>')


def _cards(result: EvaluationResult) -> str:
    rt = result.recommended_threshold
    eps = f"{100 * result.epsilon:g}%"
    head = result.headline()  # NaN where retrieval was not computed
    r1 = head["recall_at_1"]
    n_queries = result.retrieval.queries if result.retrieval is not None else 0
    return '<section id="summary" class="cards">' + "".join([
        _card("OPIS", num(result.opis, ".4g"),
              "How much per-class utility varies around the mean over the calibration range. "
              "0 = every class alike; lower is better."),
        _card(f"{eps}-OPIS", num(result.epsilon_opis, ".4g"),
              f"Squared gap between the worst {eps} of classes and the rest. Lower is better."),
        _card("R@1", pct(r1),
              f"Queries whose nearest neighbour has their label ({n_queries:,} "
              "queries)."),
        _card("MAP@R", num(head["map_at_r"], ".4f"),
              "Mean average precision at R (R = the query's number of same-label items)."),
        _card("Recommended threshold", num(rt.value, ".4g"),
              f"{distance_unit(result.metric)} ({rt.policy}); accept a pair when its distance "
              f"is at most this. Global FAR {pct(rt.far)}, FRR {pct(rt.frr)}."),
    ]) + "</section>"


def _story(result: EvaluationResult) -> str:
    """The key facts in plain sentences (all numbers from the result)."""
    rt = result.recommended_threshold
    cls = result.classes
    unit = distance_unit(result.metric)
    fs, rs = rt.far_spread, rt.frr_spread
    per = cls.per_class
    avg = sum(c.mean_utility for c in per) / len(per) if per else float("nan")
    parts = [
        f"At the recommended threshold of <b>{esc(num(rt.value, '.4g'))}</b> ({esc(unit)}), the "
        f"model falsely accepts <b>{pct(rt.far)}</b> of different-label pairs and falsely "
        f"rejects <b>{pct(rt.frr)}</b> of same-label pairs overall.",
        f"Across the {cls.evaluated:,} classes, the false accept rate runs from {pct(fs.min)} "
        f"to {pct(fs.max)} (5th to 95th percentile {pct(fs.p5)} to {pct(fs.p95)}) and the "
        f"false reject rate from {pct(rs.min)} to {pct(rs.max)} ({pct(rs.p5)} to "
        f"{pct(rs.p95)}); {pct(rt.fraction_far_above_2x, '.1f')} of classes have more than twice "
        "the global false accept rate.",
    ]
    if per:
        w = per[0]
        parts.append(f"The worst-served class is <b>{esc(w.label)}</b> (mean utility "
                     f"{num(w.mean_utility, '.3f')} against an average of {num(avg, '.3f')}).")
    out = '<div class="story">' + "<p>" + " ".join(parts) + "</p></div>"
    flags = []
    K = len(result.thresholds)
    if K and rt.index in (0, K - 1):
        end = "lower" if rt.index == 0 else "upper"
        widen = result.verdict.widen
        flags.append(f"The recommended threshold sits at the {end} end of the calibration range: "
                     "the best global threshold may lie outside it ("
                     + (f"widen it: <code>{esc(widen)}</code>" if widen else
                        "try a wider --far-range or --calibration-range") + ").")
    if cls.excluded:
        few = (f", or fewer than {result.min_class_rows} rows (--min-class-rows)"
               if result.min_class_rows > 2 else "")
        flags.append(f"{cls.excluded:,} class(es) were excluded because they have no positive or "
                     f"no negative pair (e.g. a single sample){few}; see <a href=\"#excluded\">Excluded "
                     "classes</a>.")
    if flags:
        out += '<div class="story flag">' + "".join(f"<p>{f}</p>" for f in flags) + "</div>"
    return out


def _spread_table(block: ConsistencyBlock, noun: str) -> str:
    rt = block.recommended_threshold
    head = "".join(f"<th>{k}</th>" for k in ("min", "5th pct", "median", "95th pct", "max"))
    body = ""
    for name, sp, glob in (("FAR", rt.far_spread, rt.far), ("FRR", rt.frr_spread, rt.frr)):
        cells = "".join(f"<td>{pct(getattr(sp, k))}</td>"
                        for k in ("min", "p5", "p50", "p95", "max"))
        body += f"<tr><td>{name} per {esc(noun)}</td>{cells}<td>{pct(glob)}</td></tr>"
    return (f'<div class="box"><table><thead><tr><th>at threshold {esc(num(rt.value, ".4g"))}</th>'
            f"{head}<th>global</th></tr></thead><tbody>{body}</tbody></table></div>")


def fmr_level(key: str) -> str:
    """An FMR level of ``fnmr_at_fmr`` (``"1e-03"``) as people read it: ``0.1%``."""
    try:
        return f"{100 * float(key):g}%"
    except ValueError:
        return key


def _verification(result: EvaluationResult) -> str:
    """The verification view over all pairs as a table (what the terminal shows):
    EER, minDCF with its parameters, FNMR at each FMR level, the groups' EER range;
    each with its human name, direction and a one-line meaning. "" when not asked."""
    v = result.verification
    if v is None:
        if not result.verification_asked:
            return ""
        return ('<section id="verification"><h3 style="margin-top:16px">Verification view'
                f"</h3><p>Not measured by the {esc(result.provenance.get('engine', ''))} engine "
                "(it does not see every pair).</p></section>")

    def at(t) -> str:
        return "rejecting every pair" if t is None else num(t, ".6g")

    low = "lower is better"
    rows = [("Equal error rate (EER)", pct(v.eer), at(v.eer_threshold), low,
             "Where the false accept rate equals the false reject rate, over all pairs."),
            (f"Minimum detection cost (minDCF; p_target {num(v.p_target, 'g')}, c_miss "
             f"{num(v.c_miss, 'g')}, c_fa {num(v.c_fa, 'g')})", num(v.min_dcf, ".4f"),
             at(v.min_dcf_threshold), low,
             "The lowest cost of misses and false accepts over all thresholds, weighted by "
             "the prior p_target and the two costs; 1 is no better than rejecting (or "
             "accepting) every pair.")]
    for k, x in v.fnmr_at_fmr.items():
        rows.append((f"False non-match rate at FMR {fmr_level(k)} (FNMR@FMR)", pct(x), "", low,
                     f"Genuine pairs rejected at the threshold that accepts {fmr_level(k)} of "
                     "impostor pairs."))
    g = result.groups
    eers = [(c.eer, c.label) for c in g.per_class if c.eer is not None] if g is not None else []
    if eers:
        lo, hi = min(eers), max(eers)
        rows.append(("EER of the groups, lowest to highest",
                     f"{pct(lo[0])} .. {pct(hi[0])}", "", "closer is fairer",
                     f"Lowest: {lo[1]}; highest: {hi[1]}."))
    body = "".join(f'<tr><td class="label">{esc(n)}</td><td>{esc(val)}</td><td>{esc(d)}</td>'
                   f'<td class="text">{esc(way)}</td><td class="label">{esc(m)}</td></tr>'
                   for n, val, d, way, m in rows)
    return ('<section id="verification"><h3 style="margin-top:16px">Verification view '
            "(all pairs)</h3>"
            '<div class="box"><table class="verification"><thead><tr><th>measure</th>'
            "<th>value</th><th>at distance</th><th class=\"text\">direction</th>"
            '<th class="text">what it means</th></tr></thead>'
            f"<tbody>{body}</tbody></table></div></section>")


def _fairness(result: EvaluationResult) -> str:
    """SPEC 13 at the recommended threshold, one row per block ("" for results
    written before it existed); read from the result, nothing recomputed."""
    blocks = [("classes", result.classes)]
    if result.groups is not None:
        blocks.append((f"groups ({result.group_column or 'group'})", result.groups))
    rows = ""
    alpha = None
    for name, b in blocks:
        f, c = b.recommended_threshold.fairness, b.fairness
        if f is None:
            continue
        alpha = f.alpha if alpha is None else alpha
        means = (num(c.fdr_mean, ".4f"), num(c.garbe_mean, ".4f")) if c is not None \
            else (MISSING, MISSING)
        cells = [num(f.far_ratio, ".3g") + ("x" if finite(f.far_ratio) else ""),
                 num(f.frr_ratio, ".3g") + ("x" if finite(f.frr_ratio) else ""),
                 num(f.fdr, ".4f"), num(f.garbe, ".4f"), num(f.inequity_rate, ".4g"), *means]
        rows += f"<tr><td>{esc(name)}</td>" + "".join(f"<td>{esc(v)}</td>" for v in cells) \
            + "</tr>"
    if not rows:
        return ""
    heads = [("worst FAR / global", "max FAR_i / FAR (best 1)"),
             ("worst FRR / global", "max FRR_i / FRR (best 1)"),
             ("FDR", "fairness discrepancy rate (best 1)"),
             ("GARBE", "Gini aggregation rate (best 0)"),
             ("inequity rate", "(max/min FAR)^alpha (max/min FRR)^(1-alpha) (best 1)"),
             ("range mean FDR", "FDR averaged over the calibration range"),
             ("range mean GARBE", "GARBE averaged over the calibration range")]
    head = "".join(f'<th title="{esc(t)}">{esc(h)}</th>' for h, t in heads)
    return (f'<h3 id="fairness" style="margin-top:16px">Fairness at the recommended threshold '
            f"(alpha {esc(num(alpha, 'g'))})</h3>"
            f'<div class="box"><table><thead><tr><th>over</th>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table>"
            "<p class=\"status\">Alpha weighs false accepts against false rejects; "
            "n/a where a rate the ratio divides by is 0.</p></div>")


def _figure(name: str, png: bytes, note: str = "") -> str:
    heading, caption = FIGURE_TEXT.get(name, (name, ""))
    data = base64.b64encode(png).decode("ascii")
    extra = f" <b>{esc(note)}</b>" if note else ""
    return (f'<figure id="fig-{esc(name)}"><h3>{esc(heading)}</h3>'
            f"<figcaption>{esc(caption)}{extra}</figcaption>"
            f'<img src="data:image/png;base64,{data}" alt="{esc(heading)}"></figure>')


_COLUMNS = [
    {"key": "rank", "label": "#", "kind": "int",
     "title": "Rank by mean utility (1 = worst)"},
    {"key": "label", "label": "label", "kind": "text", "title": "Label (as in the input)"},
    {"key": "n", "label": "rows", "kind": "int", "desc_first": True,
     "title": "Rows with this label"},
    {"key": "queries", "label": "queries", "kind": "int", "desc_first": True,
     "title": "Query rows with this label"},
    {"key": "positives", "label": "pos. pairs", "kind": "int", "desc_first": True,
     "title": "Pairs whose query has this label and whose gallery item has it too"},
    {"key": "negatives", "label": "neg. pairs", "kind": "int", "desc_first": True,
     "title": "Pairs whose query has this label and whose gallery item has another"},
    {"key": "mean_utility", "label": "mean utility", "kind": "num",
     "title": "Utility averaged over the calibration range"},
    {"key": "far", "label": "FAR", "kind": "pct", "desc_first": True,
     "title": "False accept rate at the recommended threshold (red: above twice the global FAR)"},
    {"key": "frr", "label": "FRR", "kind": "pct", "desc_first": True,
     "title": "False reject rate at the recommended threshold"},
    {"key": "best_threshold", "label": "best threshold", "kind": "dist",
     "title": "Grid threshold maximising this row's utility"},
    {"key": "opis_share", "label": "OPIS share", "kind": "pct", "desc_first": True,
     "title": "This row's share of OPIS"},
    {"key": "worst", "label": "worst", "kind": "bool", "desc_first": True,
     "title": "In the worst-epsilon set used by epsilon-OPIS"},
    {"key": "recall_at_1", "label": "R@1", "kind": "num",
     "title": "Recall at 1 over this row's queries"},
]


_EER_COLUMN = {"key": "eer", "label": "EER", "kind": "pct", "desc_first": True,
               "title": "Equal error rate over this row's pairs (verification view)"}


def table_data(block: ConsistencyBlock, noun: str, noun_plural: str) -> dict:
    """The JSON the page's table script draws from (one array per row)."""
    rt = block.recommended_threshold
    opis = block.opis if finite(block.opis) and block.opis > 0 else None
    rows = []
    # the group entries' own EER, with the verification view (SPEC 14)
    with_eer = any(c.eer is not None for c in block.per_class)
    for i, c in enumerate(block.per_class, start=1):
        share = c.opis_contribution / opis if opis and finite(c.opis_contribution) else None
        rows.append([i, c.label, c.n, c.queries, c.positives, c.negatives, rounded(c.mean_utility),
                     rounded(c.far_at_threshold), rounded(c.frr_at_threshold), rounded(c.best_threshold),
                     rounded(share), bool(c.worst), rounded(c.recall_at_1)]
                    + ([rounded(c.eer)] if with_eer else []))
    columns = _COLUMNS + ([_EER_COLUMN] if with_eer else [])
    return {"noun": noun, "noun_plural": noun_plural, "columns": columns, "rows": rows,
            "sort_column": 0, "far_hot": rounded(2 * rt.far) if finite(rt.far) else None}


def _table(block: ConsistencyBlock, ident: str, noun: str, noun_plural: str,
           epsilon: float) -> str:
    blob = json_for_script(table_data(block, noun, noun_plural))
    return (
        f'<div class="table-widget" data-opis-table data-source="{ident}-data" id="{ident}-table">'
        '<div class="controls">'
        f'<label>Filter by label <input type="search" class="filter" '
        f'placeholder="part of a {esc(noun)} label" '
        f'aria-label="Filter {esc(noun_plural)} by label">'
        "</label>"
        '<label><input type="checkbox" class="worst-only"> '
        f"only the worst {100 * epsilon:g}%</label>"
        '<label>rows per page <select class="page-size"><option>25</option>'
        '<option selected>100</option><option>500</option></select></label>'
        '<span class="pager"><button type="button" class="prev">&#8249; previous</button> '
        '<span class="page"></span> <button type="button" class="next">next &#8250;</button></span>'
        '<span class="status" aria-live="polite"></span></div>'
        '<div class="scroll"><table class="data"><thead><tr></tr></thead><tbody></tbody></table>'
        "</div><noscript>The table needs JavaScript; the same numbers are in the result JSON."
        "</noscript></div>"
        f'<script type="application/json" id="{ident}-data">{blob}</script>')


def _kv(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(_show(v))}</td></tr>" for k, v in rows)
    return f'<div class="box"><table class="kv"><tbody>{body}</tbody></table></div>'


def _show(v: Any) -> str:
    if v is None:
        return MISSING
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, ensure_ascii=False, sort_keys=True)
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _options(result: EvaluationResult) -> str:
    cr = result.calibration_range
    rows: list[tuple[str, Any]] = [
        ("metric", f"{result.metric} ({distance_unit(result.metric)}; smaller = more similar)"),
        ("utility", f"{result.utility} (beta {result.beta:g})"),
        ("epsilon", f"{result.epsilon:g} (worst {100 * result.epsilon:g}% of classes)"),
        ("calibration range", f"{cr.lower:.6g} to {cr.upper:.6g} (global FAR "
                              f"{pct(cr.far_lower)} to {pct(cr.far_upper)}; "
                              + (f"--far-range {_option_value(cr.far_requested)}"
                                 if cr.source == "far" and cr.far_requested else
                                 "--far-range" if cr.source == "far" else
                                 f"--calibration-range, {cr.source}") + ")"),
        ("thresholds in the grid", len(result.thresholds)),
        ("recommended threshold policy", result.recommended_threshold.policy),
        ("rows", f"{result.n_samples:,} x {result.dim} dimensions"),
    ]
    # each option once: those above are shown with their meaning; the others by
    # their command-line name, unset ones left off
    shown = {"metric", "utility", "beta", "epsilon", "num_thresholds", "threshold_policy",
             "far_range", "calibration_range"}
    rows += [("--" + k.replace("_", "-"), _option_value(v)) for k, v in _flatten(result.options)
             if k not in shown and v is not None]
    return _kv(rows)


def _option_value(v: Any) -> str:
    """An option's value as it is typed: ``0.01:0.1``, ``0.01:1:1``, ``yes``."""
    if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
        return ":".join(f"{x:g}" for x in v)
    return _show(v)


#: provenance fields for the tool itself, not for readers (left off the page; in the JSON)
INTERNAL_PROVENANCE = ("engine_notes.report_histogram_rows",)


def _provenance(result: EvaluationResult) -> str:
    prov = dict(result.provenance)
    inputs = prov.pop("inputs", None) or []
    prov.pop("options", None)  # listed once, under Options
    rows = [(k, v) for k, v in _flatten(prov) if k not in INTERNAL_PROVENANCE]
    out = _kv(rows) if rows else "<p>No provenance recorded.</p>"
    if inputs:
        body = ""
        for s in inputs:
            s = s if isinstance(s, Mapping) else {"path": s}
            size = s.get("size_bytes")
            body += (f"<tr><td>{esc(s.get('path', ''))}</td><td>{esc(s.get('sha256', ''))}</td>"
                     f"<td>{esc(f'{size:,}' if isinstance(size, int) else _show(size))}</td></tr>")
        out += ('<h3 style="margin-top:14px">Input files</h3><div class="box"><table class="kv">'
                "<thead><tr><th>path</th><th>sha256</th><th>bytes</th></tr></thead>"
                f"<tbody>{body}</tbody></table></div>")
    return out


def _excluded(block: ConsistencyBlock, noun: str, noun_plural: str, min_rows: int = 2) -> str:
    if not block.excluded:
        return (f"<p>None: every {esc(noun)} has at least one positive and one negative "
                "pair.</p>")
    labels = ", ".join(esc(v) for v in block.excluded_labels)
    return (f"<p>{block.excluded:,} {esc(noun_plural)} were left out of every average because they "
            "have no positive pair (e.g. a single sample) or no negative pair"
            + (f", or fewer than {min_rows} rows (--min-class-rows)" if min_rows > 2 else "")
            + ".</p>"
            f'<details open><summary>show the labels</summary><div class="labels">{labels}'
            "</div></details>")


def _source_line(result: EvaluationResult) -> str:
    inputs = result.provenance.get("inputs") or []
    paths = [s.get("path", "") if isinstance(s, Mapping) else str(s) for s in inputs]
    bits = []
    if paths:
        bits.append(", ".join(paths))
    bits.append(f"{result.n_samples:,} rows x {result.dim} dims")
    bits.append(f"{distance_unit(result.metric)}, utility {result.utility}")
    bits.append(f"{result.classes.evaluated:,} classes evaluated, {result.classes.excluded:,} "
                "excluded")
    t = result.provenance.get("time")
    if t:
        bits.append(f"evaluated {t}")
    # each part kept whole (a date or a count never breaks at its hyphen); the
    # line breaks between parts, and inside the input paths only
    return " \u00b7 ".join(esc(b) if i == 0 and paths else f'<span class="nb">{esc(b)}</span>'
                           for i, b in enumerate(bits))


# -- the page ---------------------------------------------------------------------
#: worst classes whose impostors and rejected rows the "Where it fails" section lists
FAILS_CLASSES = 20
#: suspect rows listed there
FAILS_SUSPECTS = 50


def _where_it_fails(result: EvaluationResult) -> str:
    """SPEC 16 (``--diagnose``): overlapping pairs, suspects, duplicates, and for each
    of the worst classes its impostors and rejected rows; "" without a diagnosis.
    Every label escaped (:func:`esc`); read from the result, nothing recomputed."""
    d = result.diagnosis
    if d is None:
        return ""

    def table(heads, rows) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in heads)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
        return (f'<div class="box"><table><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table></div>")

    parts = [f'<section id="where-it-fails"><h2>Where it fails</h2>'
             f"<p>At distance {esc(num(d.threshold, '.6g'))}: {d.overlap_count:,} "
             f"overlapping class pairs (level {esc(num(d.level, 'g'))}), {len(d.suspects):,} "
             f"suspect rows of {d.queries_with_positives:,} queries with a positive, "
             f"{d.duplicate_groups:,} duplicate groups across labels ({d.duplicate_rows:,} "
             "rows).</p>"]
    if d.source_note:  # not counted over every pair (knn candidates, sampled estimate)
        parts.append(f'<p class="status diagnosis-source">{esc(d.source_note)}.</p>')
    if d.overlap_top:
        tied = f"; {d.overlap_tied:,} tied with the last shown" if d.overlap_tied else ""
        parts.append(f"<h3>Overlapping class pairs ({d.overlap_count:,} in all{tied})</h3>")
        parts.append(table(("a", "b", "overlap", "a\u2192b accepts", "b\u2192a accepts",
                            "a\u2192b pairs", "b\u2192a pairs"),
                           [(p.a, p.b, pct(p.overlap), p.accepts_ab, p.accepts_ba, p.pairs_ab,
                             p.pairs_ba) for p in d.overlap_top]))
    if d.suspects:
        parts.append(f"<h3>Suspect labels ({len(d.suspects):,} rows"
                     + (f"; the first {FAILS_SUSPECTS}" if len(d.suspects) > FAILS_SUSPECTS
                        else "") + ")</h3>")
        parts.append(table(("row", "label", "looks like", "nearest positive"),
                           [(s.row, s.label, s.looks_like, num(s.nearest_positive, ".4g"))
                            for s in d.suspects[:FAILS_SUSPECTS]]))
    if d.duplicate_top:
        parts.append("<h3>Duplicate rows across labels</h3>")
        parts.append(table(("a", "b", "shared groups"),
                           [(p.a, p.b, p.shared) for p in d.duplicate_top]))
    rows = []
    for c in result.classes.per_class[:FAILS_CLASSES]:
        imps = ", ".join(f"{i.label} ({i.accepts}, {pct(i.share)})"
                         for i in d.impostors.get(c.label, ())) or "-"
        rej = ", ".join(f"row {r.row} ({pct(r.frr)})" for r in d.rejected_rows.get(c.label, ())) \
            or "-"
        rows.append((c.label, pct(c.far_at_threshold), pct(c.frr_at_threshold), imps, rej))
    parts.append(f"<h3>The worst {len(rows)} classes: impostors (accepts, share) and rejected "
                 "rows (FRR)</h3>")
    parts.append(table(("class", "FAR", "FRR", "impostors", "rejected rows"), rows))
    parts.append("</section>")
    return "".join(parts)


def _groups_section(result: EvaluationResult, images: Mapping[str, bytes], caption: str) -> str:
    """The Groups section: its cards, spread, figures (``caption`` under
    each) and table."""
    g = result.groups
    gfig = "".join(_figure(n, p, caption) for n, p in images.items() if n.startswith("group_"))
    return ('<section id="groups"><h2>Groups'
            + (f" (column {esc(result.group_column)})" if result.group_column else "")
            + "</h2>"
            '<div class="cards">'
            + _card("group OPIS", num(g.opis, ".4g"), "OPIS with groups in place of classes.")
            + _card(f"group {100 * result.epsilon:g}%-OPIS", num(g.epsilon_opis, ".4g"),
                    "Gap between the worst groups and the rest.")
            + _card("groups", f"{g.evaluated:,}", f"evaluated; {g.excluded:,} excluded")
            + "</div>" + _spread_table(g, "group") + "<br>" + gfig
            + _table(g, "groups", "group", "groups", result.epsilon) + "</section>")


def render_report(result: EvaluationResult, images: Mapping[str, bytes], *,
                  class_curves: bool = True, group_curves: bool = True,
                  gate: "GateOutcome | None" = None,
                  curves: Curves | None = None) -> str:
    """The whole page as a string.

    Parameters
    ----------
    result : the evaluation.
    images : PNG bytes by figure name (``plots.FIGURES`` and ``GROUP_FIGURES``).
    class_curves, group_curves : whether the utility figures had per-row
        curves (otherwise their captions say how to add them).
    gate : the gate outcome, shown beside the verdict (pass/fail per rule).
    curves : the per-class curves, for the class views of the class finder
        (:mod:`.drilldown`); without them a class view shows no curves.
    """
    no_curves = ("This report was rendered without the per-class curves: pass --curves CURVES "
                 "(written by opis evaluate --curves) to draw them.")
    figs = "".join(_figure(name, png, "" if class_curves or name != "utility" else no_curves)
                   for name, png in images.items() if not name.startswith("group_"))
    nav = [("summary", "Summary")]
    if result.verification is not None or result.verification_asked:
        nav.append(("verification", "Verification"))
    nav += [("figures", "Figures"), ("find", "Find a class"), ("classes", "Per-class table")]
    groups_html = ""
    if result.groups is not None:
        nav.append(("groups", "Groups"))
        groups_html = _groups_section(result, images,
                                      "" if group_curves else no_curves.replace("class", "group"))
    if result.diagnosis is not None:
        nav.append(("where-it-fails", "Where it fails"))
    nav += [("excluded", "Excluded classes"), ("options", "Options"),
            ("provenance", "Provenance")]
    nav_html = "".join(f'<a href="#{k}">{esc(v)}</a>' for k, v in nav)
    tool = result.provenance.get("tool_version", "")
    title = (f"opis report: OPIS {num(result.opis, '.4g')}, threshold "
             f"{num(result.recommended_threshold.value, '.4g')}")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="opis">
<title>{esc(title)}</title>
<style>{_CSS}{VERDICT_CSS}{drilldown.CSS}</style>
</head>
<body>
<main>
<header><h1>Can one threshold serve every class?</h1>
<p class="sub">{_source_line(result)}</p></header>
{verdict_html(result.verdict, gate, extra=_verdict_points(result))}
<nav>{nav_html}</nav>
{_cards(result)}
{_story(result)}
<h3 style="margin-top:16px">Per-class spread at the recommended threshold</h3>
{_spread_table(result.classes, "class")}
{_fairness(result)}
{_verification(result)}
<section id="figures"><h2>Figures</h2>
{figs}
</section>
{drilldown.section(result, curves, json_for_script)}
<section id="classes"><h2>Per-class table</h2>
<p>One row per evaluated class, worst first. Click a column to sort, type to filter by label,
click a row to open its class.</p>
{_table(result.classes, "classes", "class", "classes", result.epsilon)}
</section>
{groups_html}
{_where_it_fails(result)}
<section id="excluded"><h2>Excluded classes</h2>
{_excluded(result.classes, "class", "classes", result.min_class_rows)}
</section>
<section id="options"><h2>Options</h2>
{_options(result)}
</section>
<section id="provenance"><h2>Provenance</h2>
{_provenance(result)}
</section>
<footer>Made by opis {esc(tool)} from the result document (schema version {result.schema_version}).
OPIS and 10%-OPIS follow Zhang et al., \u201cThreshold-Consistent Margin Loss for Open-World Deep
Metric Learning\u201d, ICLR 2024.</footer>
</main>
<script>{_JS}</script>
<script>{drilldown.JS}</script>
</body>
</html>
"""
