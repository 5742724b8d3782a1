"""The report's class finder: search any class by name and open its view.

Every evaluated class gets a view drawn in the page by the inline script:
its utility curve against the population's band (10th to 90th percentile of
the class utilities at each threshold, and their mean), its FAR and FRR
across the calibration range, its rank and evidence, and, when the result
carries a diagnosis (SPEC 16), its impostor classes, its rejected rows and
its suspect rows. A scatter of every class's FAR and FRR at the recommended
threshold identifies the class under the pointer and opens it on a click.

The curves travel as base64 of little-endian ``uint16`` (a rate ``r`` in
[0, 1] as ``round(r * 65535)``, so 1.5e-5 resolution), on at most
:data:`MAX_POINTS_BYTES` bytes: with many classes the grid is thinned to
evenly spaced thresholds (both range ends and the recommended threshold
always kept), so a 20k-class page stays a few MB. The JSON blob is escaped
by the page's ``json_for_script`` and every label is
drawn as text by the script (the rule of :mod:`opis_cli.render.escape`), so
a label can never become markup.

Reads the result only; computes nothing but display rates and percentiles.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, Mapping

import numpy as np

from ...results import Curves, EvaluationResult

__all__ = ["drilldown_data", "grid_points", "MAX_POINTS_BYTES", "SCALE"]

#: bytes of the quantised curves (3 curves x classes x points x 2 bytes) at most
MAX_POINTS_BYTES = 2_000_000
#: the fewest thresholds a class view shows when the budget thins the grid
MIN_POINTS = 11
#: a rate r in [0, 1] is stored as round(r * SCALE) in a uint16
SCALE = 65535


def grid_points(n_thresholds: int, n_classes: int, keep: int | None = None) -> np.ndarray:
    """Indices of the grid thresholds the class views show (increasing).

    All of them when ``3 * 2 * n_classes * n_thresholds <= MAX_POINTS_BYTES``;
    otherwise evenly spaced ones (at least :data:`MIN_POINTS`), always with
    both ends and ``keep`` (the recommended threshold's index).
    """
    k = int(n_thresholds)
    budget = MAX_POINTS_BYTES // (6 * max(int(n_classes), 1))
    p = min(k, max(MIN_POINTS, budget))
    idx = set(np.rint(np.linspace(0, k - 1, p)).astype(np.int64).tolist())
    if keep is not None and 0 <= keep < k:
        idx.add(int(keep))
    return np.array(sorted(idx), dtype=np.int64)


def _pack(values: np.ndarray) -> str:
    """Rates in [0, 1] (NaN as 0) as base64 of little-endian uint16."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    q = np.rint(np.clip(v, 0.0, 1.0) * SCALE).astype("<u2")
    return base64.b64encode(q.tobytes()).decode("ascii")


def _rounded(v: Any, digits: int = 6) -> Any:
    if v is None:
        return None
    f = float(v)
    return None if not np.isfinite(f) else float(f"{f:.{digits}g}")


def _diagnosis_dict(result: EvaluationResult) -> Mapping | None:
    d = getattr(result, "diagnosis", None)
    if d is None:
        return None
    return d.to_dict() if hasattr(d, "to_dict") else d


def _diagnosis_note(result: EvaluationResult) -> str | None:
    """The note of a diagnosis not counted over every pair (knn candidates,
    sampled estimate); None when it is."""
    d = _diagnosis_dict(result) or {}
    for key in ("coverage", "estimate"):
        if d.get(key):
            return str(d[key]["note"])
    return None


def _diagnosis_by_class(result: EvaluationResult) -> tuple[dict, dict, dict]:
    """Impostors, rejected rows and suspects of each class label (SPEC 16 keys)."""
    d = _diagnosis_dict(result)
    if not d:
        return {}, {}, {}
    imp = {str(k): v for k, v in (d.get("impostors") or {}).items()}
    rej = {str(k): v for k, v in (d.get("rejected_rows") or {}).items()}
    sus: dict[str, list] = {}
    for r in (d.get("suspects") or {}).get("rows") or []:
        sus.setdefault(str(r.get("label")), []).append(r)
    return imp, rej, sus


def drilldown_data(result: EvaluationResult, curves: Curves | None) -> dict:
    """What the page's class finder reads: one entry per evaluated class.

    Classes are those of ``result.classes.per_class``, by position (worst
    first): their numbers are read from the per-class table's own data
    (``table``, the id of its JSON blob), so they are not stored twice;
    ``diagnosis`` maps a position to its impostors, rejected rows and
    suspects (SPEC 16) and ``low_evidence`` lists the positions flagged so.
    With ``curves`` (the per-class curves,
    in any order; matched by label), ``points`` are the shown grid indices,
    ``band`` the population's 10th/50th/90th percentile and mean utility at
    each, and ``utility`` / ``far`` / ``frr`` the packed per-class curves
    (class-major, ``len(points)`` values per class).
    """
    block = result.classes
    rt = block.recommended_threshold
    per = block.per_class
    imp, rej, sus = _diagnosis_by_class(result)
    labels = [str(c.label) for c in per]
    diagnosis: dict[str, dict] = {}
    for i, lab in enumerate(labels):
        entry = {k: v for k, v in (("impostors", imp.get(lab)), ("rejected_rows", rej.get(lab)),
                                   ("suspects", sus.get(lab))) if v}
        if entry:
            diagnosis[str(i)] = entry
    low = [i for i, c in enumerate(per) if getattr(c, "low_evidence", False)]
    th = np.asarray(result.thresholds, dtype=np.float64)
    index = int(rt.index) if 0 <= rt.index < len(th) else None
    data: dict[str, Any] = {
        "table": "classes-data", "n_classes": len(per), "diagnosis": diagnosis,
        "low_evidence": low,
        "threshold": _rounded(rt.value, 8), "global_far": _rounded(rt.far),
        "global_frr": _rounded(rt.frr),
        "evaluated": block.evaluated, "has_diagnosis": bool(imp or rej or sus),
        # a diagnosis from candidates says so beside every class's impostors
        "diagnosis_note": _diagnosis_note(result),
        "worst_label": f"{100 * result.epsilon:g}%",
        "curves": None,
    }
    if curves is None or len(th) == 0:
        return data
    pos = {str(lab): i for i, lab in enumerate(curves.labels)}
    order = [pos.get(lab) for lab in labels]
    if any(o is None for o in order):  # curves of another result: show no curves
        return data
    order = np.asarray(order, dtype=np.int64)
    pts = grid_points(len(th), len(per), index)
    U = np.asarray(curves.utility, dtype=np.float64)[order][:, pts]
    tp = np.asarray(curves.tp, dtype=np.float64)[order][:, pts]
    fp = np.asarray(curves.fp, dtype=np.float64)[order][:, pts]
    P = np.asarray(curves.positives, dtype=np.float64)[order][:, None]
    M = np.asarray(curves.negatives, dtype=np.float64)[order][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        far = np.where(M > 0, fp / M, np.nan)
        frr = np.where(P > 0, 1.0 - tp / P, np.nan)
    q10, q50, q90 = np.percentile(U, [10, 50, 90], axis=0)
    mean = np.asarray(block.mean_utility, dtype=np.float64)[pts]
    data["curves"] = {
        "points": [_rounded(v, 8) for v in th[pts]],
        "recommended_point": int(np.searchsorted(pts, index)) if index is not None else None,
        "band": {"p10": [_rounded(v, 5) for v in q10], "p50": [_rounded(v, 5) for v in q50],
                 "p90": [_rounded(v, 5) for v in q90], "mean": [_rounded(v, 5) for v in mean]},
        "scale": SCALE, "utility": _pack(U), "far": _pack(far), "frr": _pack(frr),
    }
    return data


def unpack(text: str, n_classes: int, n_points: int) -> np.ndarray:
    """The inverse of the packing (for tests and notebooks): (classes, points) rates."""
    q = np.frombuffer(base64.b64decode(text), dtype="<u2").astype(np.float64)
    return (q / SCALE).reshape(n_classes, n_points)


# -- the page section ---------------------------------------------------------------

CSS = """
.finder{display:grid;grid-template-columns:minmax(260px,1fr) 2fr;gap:16px;align-items:start}
@media (max-width:900px){.finder{grid-template-columns:1fr}}
.finder input[type=search]{font:inherit;padding:6px 10px;border:1px solid #d1d5db;
border-radius:6px;width:100%}
.matches{list-style:none;margin:8px 0 0;padding:0;max-height:320px;overflow:auto}
.matches li button{font:inherit;text-align:left;width:100%;border:0;background:none;
padding:4px 6px;cursor:pointer;border-radius:4px;overflow-wrap:break-word}
.matches li button:hover,.matches li button:focus{background:#ecfdf5}
.matches .r{color:var(--muted);font-size:12px;margin-left:6px}
#drill-view h3{font-size:18px;overflow-wrap:break-word}
.badge{display:inline-block;font-size:12px;font-weight:600;padding:1px 7px;border-radius:9px;
margin-left:6px;vertical-align:middle}
.badge.low{background:var(--warnbg);color:var(--warn)}
.badge.bad{background:var(--badbg);color:var(--bad)}
.charts{display:flex;flex-wrap:wrap;gap:12px;margin:10px 0}
.charts svg{background:#fff;border:1px solid var(--line);border-radius:8px}
.charts svg text{font:11px system-ui,sans-serif;fill:#4b5563}
.charts figure.chart{margin:0;padding:0;border:0;background:none}
.legend{display:flex;flex-wrap:wrap;gap:4px 12px;font-size:12px;color:var(--muted);
margin-top:4px;max-width:340px}
.legend span{padding-top:2px}
.scatter-wrap{position:relative;display:inline-block}
.scatter-wrap canvas{background:#fff;border:1px solid var(--line);border-radius:8px;
cursor:crosshair}
.tip{position:absolute;pointer-events:none;background:#111827;color:#fff;font-size:12px;
padding:3px 7px;border-radius:5px;white-space:nowrap;display:none;z-index:2}
#classes-table tr[data-row]{cursor:pointer}
"""


def section(result: EvaluationResult, curves: Curves | None,
            json_for_script: Callable[[Any], str]) -> str:
    """The "Find a class" section: search box, class view, FAR/FRR scatter, data
    (``json_for_script``: the page's escaping of a JSON blob inside ``<script>``)."""
    blob = json_for_script(drilldown_data(result, curves))
    n = result.classes.evaluated
    no_curves = ("" if curves is not None else
                 "<p class=\"status\">This report was rendered without the per-class curves, so "
                 "a class view shows its numbers but no curves: pass --curves CURVES (written by "
                 "opis evaluate --curves) to draw them.</p>")
    return (
        '<section id="find"><h2>Find a class</h2>'
        f"<p>Search any of the {n:,} evaluated classes by name, or click a row of the table "
        "below or a point of the scatter, to open the class: its utility against the other "
        "classes, its false accepts and rejects across the calibration range, and where its "
        "errors come from.</p>" + no_curves +
        '<div class="finder"><div class="box">'
        '<label for="drill-search">Class label</label>'
        f'<input type="search" id="drill-search" placeholder="part of a class label" '
        f'autocomplete="off" aria-label="Search {n:,} classes by label">'
        '<ul class="matches" id="drill-matches" aria-live="polite"></ul>'
        '<h3 style="margin-top:14px">FAR and FRR of every class</h3>'
        '<p class="status">At the recommended threshold; hover a point to identify it, '
        "click to open it.</p>"
        '<div class="scatter-wrap"><canvas id="drill-scatter" width="330" height="260" '
        'aria-label="False accept against false reject rate of every class"></canvas>'
        '<div class="tip" id="drill-tip"></div></div></div>'
        '<div class="box" id="drill-view"><p class="status">No class open yet: search one, or '
        "click a row of the per-class table.</p></div></div>"
        f'<script type="application/json" id="drill-data">{blob}</script></section>')


JS = r"""
(function () {
  "use strict";
  var blob = document.getElementById("drill-data");
  if (!blob) { return; }
  var D = JSON.parse(blob.textContent);
  var T = JSON.parse(document.getElementById(D.table).textContent);
  var col = {};
  T.columns.forEach(function (c, k) { col[c.key] = k; });
  var classes = T.rows.map(function (r, i) {
    var c = {rank: i + 1, label: String(r[col.label])};
    ["n", "queries", "positives", "negatives", "mean_utility", "far", "frr", "best_threshold",
     "worst", "recall_at_1"].forEach(function (k) { c[k] = r[col[k]]; });
    var dg = D.diagnosis[String(i)] || {};
    c.impostors = dg.impostors; c.rejected_rows = dg.rejected_rows; c.suspects = dg.suspects;
    return c;
  });
  D.low_evidence.forEach(function (i) { classes[i].low_evidence = true; });
  var C = classes.length, CV = D.curves;
  // the SVG namespace, from the parser itself (the page holds no URL at all)
  var SVGNS = (function () {
    var d = document.createElement("div");
    d.innerHTML = "<svg></svg>";
    return d.firstChild.namespaceURI;
  })();
  var lower = classes.map(function (c) { return c.label.toLowerCase(); });
  var byLabel = new Map();
  classes.forEach(function (c, i) { byLabel.set(c.label, i); });
  // the rule of opis_cli.render.escape.visible, from the page script (html.py)
  var show = window.opisVisible;
  function visible(s) { return show(String(s)); }
  function pct(v) { return (v === null || v === undefined) ? "n/a" : (100 * v).toFixed(2) + "%"; }
  function num(v, d) { return (v === null || v === undefined) ? "n/a" : Number(v).toFixed(d); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }
  var cache = {};
  function curve(key, i) {
    if (!CV) { return null; }
    if (!cache[key]) {
      var s = atob(CV[key]), n = s.length >> 1, a = new Float64Array(n);
      for (var j = 0; j < n; j++) {
        a[j] = (s.charCodeAt(2 * j) | (s.charCodeAt(2 * j + 1) << 8)) / CV.scale;
      }
      cache[key] = a;
    }
    var p = CV.points.length;
    return cache[key].subarray(i * p, (i + 1) * p);
  }
  // -- search -------------------------------------------------------------------------
  var box = document.getElementById("drill-search");
  var list = document.getElementById("drill-matches");
  var view = document.getElementById("drill-view");
  function find(q) {
    q = q.trim().toLowerCase();
    if (!q) { return []; }
    var exact = [], prefix = [], inside = [];
    for (var i = 0; i < C && exact.length + prefix.length + inside.length < 400; i++) {
      var at = lower[i].indexOf(q);
      if (at < 0) { continue; }
      if (lower[i] === q) { exact.push(i); } else if (at === 0) { prefix.push(i); }
      else { inside.push(i); }
    }
    return exact.concat(prefix, inside).slice(0, 30);
  }
  function showMatches() {
    var hits = find(box.value), frag = document.createDocumentFragment();
    hits.forEach(function (i) {
      var li = el("li"), b = el("button");
      b.type = "button";
      b.setAttribute("data-row", String(i));
      b.appendChild(el("span", visible(classes[i].label)));
      b.appendChild(el("span", "#" + classes[i].rank, "r"));
      b.addEventListener("click", function () { open(i); });
      li.appendChild(b);
      frag.appendChild(li);
    });
    if (box.value.trim() && !hits.length) { frag.appendChild(el("li", "No class matches.")); }
    list.replaceChildren(frag);
  }
  var timer = null;
  box.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(showMatches, 80); });
  box.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter") {
      var hits = find(box.value);
      if (hits.length) { open(hits[0]); }
    }
  });
  // -- charts -------------------------------------------------------------------------
  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    return e;
  }
  function chart(title, series, band, yLabel) {
    var W = 340, H = 210, L = 44, R = 10, T = 22, B = 32;
    var xs = CV.points, x0 = xs[0], x1 = xs[xs.length - 1];
    var s = svgEl("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img"});
    s.setAttribute("aria-label", title);
    function X(v) { return L + (x1 > x0 ? (v - x0) / (x1 - x0) : 0.5) * (W - L - R); }
    function Y(v) { return T + (1 - v) * (H - T - B); }
    var t = svgEl("text", {x: L, y: 14}); t.textContent = title; s.appendChild(t);
    [0, 0.5, 1].forEach(function (v) {
      s.appendChild(svgEl("line", {x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: "#e5e7eb"}));
      var tt = svgEl("text", {x: L - 6, y: Y(v) + 4, "text-anchor": "end"});
      tt.textContent = yLabel === "%" ? (100 * v) + "%" : String(v); s.appendChild(tt);
    });
    [x0, (x0 + x1) / 2, x1].forEach(function (v, k) {
      var tt = svgEl("text", {x: X(v), y: H - 12, "text-anchor": ["start", "middle", "end"][k]});
      tt.textContent = String(Number(v.toPrecision(4))); s.appendChild(tt);
    });
    var xl = svgEl("text", {x: (L + W - R) / 2, y: H - 1, "text-anchor": "middle"});
    xl.textContent = "distance threshold"; s.appendChild(xl);
    if (band) {
      var pts = [];
      for (var i = 0; i < xs.length; i++) { pts.push(X(xs[i]) + "," + Y(band.hi[i])); }
      for (var j = xs.length - 1; j >= 0; j--) { pts.push(X(xs[j]) + "," + Y(band.lo[j])); }
      s.appendChild(svgEl("polygon", {points: pts.join(" "), fill: "#dbeafe", stroke: "none",
                                      "data-series": "band"}));
    }
    if (CV.recommended_point !== null) {
      var xr = X(xs[CV.recommended_point]);
      s.appendChild(svgEl("line", {x1: xr, x2: xr, y1: T, y2: H - B, stroke: "#059669",
                                   "stroke-dasharray": "4 3"}));
    }
    series.forEach(function (sr) {
      var d = "";
      for (var i = 0; i < xs.length; i++) {
        var v = sr.values[i];
        if (v === null || v === undefined || isNaN(v)) { continue; }
        d += (d ? " L" : "M") + X(xs[i]).toFixed(1) + " " + Y(v).toFixed(1);
      }
      s.appendChild(svgEl("path", {d: d, fill: "none", stroke: sr.color, "stroke-width": sr.width || 2,
                                   "stroke-dasharray": sr.dash || "", "data-series": sr.name}));
    });
    var wrap = el("figure", null, "chart"), leg = el("div", null, "legend");
    series.forEach(function (sr) {
      var item = el("span", sr.name);
      item.style.borderTop = "3px " + (sr.dash ? "dashed " : "solid ") + sr.color;
      leg.appendChild(item);
    });
    if (band) { var bi = el("span", "middle 80% of classes"); bi.style.borderTop = "6px solid #dbeafe"; leg.appendChild(bi); }
    wrap.appendChild(s);
    wrap.appendChild(leg);
    s = wrap;
    return s;
  }
  // -- the class view -----------------------------------------------------------------
  function kv(rows) {
    var tb = el("tbody");
    rows.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", r[0]));
      tr.appendChild(el("td", r[1]));
      tb.appendChild(tr);
    });
    var t = el("table", null, "kv"); t.appendChild(tb); return t;
  }
  function table(head, rows) {
    var t = el("table"), th = el("thead"), tr = el("tr");
    head.forEach(function (h) { tr.appendChild(el("th", h)); });
    th.appendChild(tr); t.appendChild(th);
    var tb = el("tbody");
    rows.forEach(function (r) {
      var row = el("tr");
      r.forEach(function (v, k) { row.appendChild(el("td", v, k === 0 ? "label" : "")); });
      tb.appendChild(row);
    });
    t.appendChild(tb);
    return t;
  }
  function open(i) {
    var c = classes[i];
    if (!c) { return; }
    var frag = document.createDocumentFragment();
    var h = el("h3", visible(c.label));
    if (c.low_evidence) { h.appendChild(el("span", "low evidence", "badge low")); }
    if (c.worst) { h.appendChild(el("span", "in the worst " + D.worst_label, "badge bad")); }
    frag.appendChild(h);
    var hot = (D.global_far !== null && c.far !== null && c.far > 2 * D.global_far);
    frag.appendChild(el("p", "Rank " + c.rank + " of " + C + " by mean utility (1 = worst). At the "
      + "recommended threshold " + D.threshold + " it accepts " + pct(c.far) + " of its negative "
      + "pairs (global " + pct(D.global_far) + (hot ? ", more than twice the global rate" : "")
      + ") and rejects " + pct(c.frr) + " of its positive pairs (global " + pct(D.global_frr)
      + ")."));
    frag.appendChild(kv([
      ["rows", c.n.toLocaleString("en-US")], ["query rows", c.queries.toLocaleString("en-US")],
      ["positive pairs", c.positives.toLocaleString("en-US")],
      ["negative pairs", c.negatives.toLocaleString("en-US")],
      ["mean utility", num(c.mean_utility, 4)], ["FAR at the threshold", pct(c.far)],
      ["FRR at the threshold", pct(c.frr)], ["own best threshold", String(c.best_threshold)],
      ["R@1", num(c.recall_at_1, 4)]
    ]));
    if (CV) {
      var charts = el("div", null, "charts");
      var u = curve("utility", i), b = CV.band;
      charts.appendChild(chart("Utility against the other classes", [
        {name: "this class", values: u, color: "#dc2626", width: 2.5},
        {name: "mean of classes", values: b.mean, color: "#111827", width: 1.5},
        {name: "median", values: b.p50, color: "#2563eb", width: 1, dash: "3 3"}
      ], {lo: b.p10, hi: b.p90}, ""));
      charts.appendChild(chart("FAR and FRR across the range", [
        {name: "FAR", values: curve("far", i), color: "#dc2626"},
        {name: "FRR", values: curve("frr", i), color: "#2563eb"}
      ], null, "%"));
      frag.appendChild(charts);
      frag.appendChild(el("p", "Blue band: the middle 80% of the classes' utilities at each "
        + "threshold. Green dashed line: the recommended threshold.", "status"));
    }
    if (c.impostors && c.impostors.length) {
      frag.appendChild(el("h4", "Where its false accepts come from"));
      frag.appendChild(table(["impostor class", "accepts", "FAR", "share"], c.impostors.map(
        function (r) { return [visible(r.label), r.accepts.toLocaleString("en-US"), pct(r.far), pct(r.share)]; })));
    }
    if (D.diagnosis_note && (c.impostors || c.rejected_rows || c.suspects)) {
      frag.appendChild(el("p", "Diagnosis " + D.diagnosis_note + ".", "status"));
    }
    if (c.rejected_rows && c.rejected_rows.length) {
      frag.appendChild(el("h4", "Rows that take its false rejects"));
      frag.appendChild(table(["row", "rejected pairs", "FRR of the row"], c.rejected_rows.map(
        function (r) { return [String(r.row), r.rejected.toLocaleString("en-US"), pct(r.frr)]; })));
    }
    if (c.suspects && c.suspects.length) {
      frag.appendChild(el("h4", "Suspect labels among its rows"));
      frag.appendChild(table(["row", "looks like", "nearest positive"], c.suspects.map(
        function (r) { return [String(r.row), visible(r.looks_like), String(r.nearest_positive)]; })));
    } else if (D.has_diagnosis) {
      frag.appendChild(el("p", "No suspect rows in this class.", "status"));
    }
    view.replaceChildren(frag);
    view.setAttribute("data-open", c.label);
    view.setAttribute("data-row", String(i));
    if (history.replaceState) {
      history.replaceState(null, "", "#class=" + encodeURIComponent(c.label));
    }
    view.scrollIntoView({block: "nearest"});
  }
  // -- table rows open their class --------------------------------------------------------
  var tableRoot = document.getElementById("classes-table");
  if (tableRoot) {
    tableRoot.addEventListener("click", function (ev) {
      var tr = ev.target.closest("tr[data-row]");
      if (tr && !ev.target.closest("thead")) { open(parseInt(tr.getAttribute("data-row"), 10)); }
    });
  }
  // -- the scatter ----------------------------------------------------------------------
  var cv = document.getElementById("drill-scatter"), tip = document.getElementById("drill-tip");
  if (cv && cv.getContext) {
    var ctx = cv.getContext("2d"), W = cv.width, H = cv.height, L = 40, R = 10, T = 10, B = 30;
    var fmax = 0;
    classes.forEach(function (c) { if (c.far !== null && c.far > fmax) { fmax = c.far; } });
    fmax = fmax > 0 ? fmax * 1.05 : 1;
    var px = new Float64Array(C), py = new Float64Array(C);
    function X(v) { return L + v / fmax * (W - L - R); }
    function Y(v) { return T + (1 - v) * (H - T - B); }
    ctx.strokeStyle = "#e5e7eb"; ctx.fillStyle = "#4b5563"; ctx.font = "11px system-ui,sans-serif";
    ctx.textAlign = "right";
    [0, 0.5, 1].forEach(function (v) {
      ctx.beginPath(); ctx.moveTo(L, Y(v)); ctx.lineTo(W - R, Y(v)); ctx.stroke();
      ctx.fillText((100 * v) + "%", L - 4, Y(v) + 4);
    });
    ctx.textAlign = "center";
    [0, fmax / 2, fmax].forEach(function (v, k) {
      ctx.textAlign = ["left", "center", "right"][k];
      ctx.fillText((100 * v).toFixed(1) + "%", X(v), H - 16);
    });
    ctx.textAlign = "center";
    ctx.fillText("FAR of the class (FRR up)", (L + W - R) / 2, H - 3);
    for (var i = 0; i < C; i++) {
      var c = classes[i];
      px[i] = X(c.far === null ? 0 : c.far); py[i] = Y(c.frr === null ? 0 : c.frr);
      ctx.fillStyle = c.worst ? "rgba(220,38,38,.55)" : "rgba(37,99,235,.45)";
      ctx.beginPath(); ctx.arc(px[i], py[i], 2.5, 0, 6.2832); ctx.fill();
    }
    if (D.global_far !== null && D.global_frr !== null) {
      ctx.fillStyle = "#059669"; ctx.beginPath();
      ctx.arc(X(D.global_far), Y(D.global_frr), 5, 0, 6.2832); ctx.fill();
    }
    var CELL = 8, grid = new Map();
    for (var k = 0; k < C; k++) {
      var key = Math.floor(px[k] / CELL) + "," + Math.floor(py[k] / CELL);
      if (!grid.has(key)) { grid.set(key, []); }
      grid.get(key).push(k);
    }
    function nearest(x, y) {
      var best = -1, bd = 49, gx = Math.floor(x / CELL), gy = Math.floor(y / CELL);
      for (var a = gx - 1; a <= gx + 1; a++) {
        for (var b = gy - 1; b <= gy + 1; b++) {
          var cell = grid.get(a + "," + b);
          if (!cell) { continue; }
          cell.forEach(function (j) {
            var d = (px[j] - x) * (px[j] - x) + (py[j] - y) * (py[j] - y);
            if (d < bd) { bd = d; best = j; }
          });
        }
      }
      return best;
    }
    function at(ev) {
      var r = cv.getBoundingClientRect();
      return nearest((ev.clientX - r.left) * W / r.width, (ev.clientY - r.top) * H / r.height);
    }
    cv.addEventListener("mousemove", function (ev) {
      var j = at(ev);
      if (j < 0) { tip.style.display = "none"; cv.removeAttribute("data-hover"); return; }
      tip.textContent = visible(classes[j].label) + ": FAR " + pct(classes[j].far) + ", FRR "
        + pct(classes[j].frr);
      tip.style.left = (px[j] + 8) + "px"; tip.style.top = (py[j] - 24) + "px";
      tip.style.display = "block";
      cv.setAttribute("data-hover", String(j));
    });
    cv.addEventListener("mouseleave", function () { tip.style.display = "none"; });
    cv.addEventListener("click", function (ev) { var j = at(ev); if (j >= 0) { open(j); } });
    cv.opisPoints = {x: px, y: py};
  }
  window.opisOpenClass = function (label) {
    var i = byLabel.get(label);
    if (i !== undefined) { open(i); }
    return i !== undefined;
  };
  var m = /^#class=(.*)$/.exec(location.hash);
  if (m) {
    var i0 = byLabel.get(decodeURIComponent(m[1]));
    if (i0 !== undefined) { open(i0); }
  }
  document.documentElement.setAttribute("data-drill-ready", "1");
})();
"""
