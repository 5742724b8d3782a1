"""Hostile labels, group names and file names through every command and output.

Labels come from data nobody on the team wrote. Every command
(``evaluate``, ``compare``, ``gate``, ``report``) and every output format
(terminal, JSON, curves CSV/Parquet, HTML report, Markdown, JUnit, error
lines) runs over a data set whose labels hold ANSI escapes, rich markup, BEL,
tabs, newlines, CR, a right-to-left override, Markdown/HTML syntax, a
backslash and an emoji, and the bytes written are checked:

* terminal, Markdown, JUnit, error lines: no raw control or format character
  (only the output's own newlines), the markup label shown literally, every
  label shown as :func:`opis_cli.render.escape.visible` writes it;
* Markdown: every table row keeps its column count; no raw HTML or link;
* JUnit: parses with ElementTree;
* JSON, curves CSV/Parquet: the raw labels round-trip exactly (data, not display);
* HTML: no raw control character anywhere, no label's ``<script>``.

The assertion helper is checked on a raw ESC too (negative control).
"""

from __future__ import annotations

import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opis_cli.cli import main
from opis_cli.io import read_curves
from opis_cli.render import terminal
from opis_cli.render.escape import md_code, md_text, visible

pytestmark = pytest.mark.filterwarnings("ignore:Glyph .* missing from font")

HOSTILE = ["\x1b[31mred\x1b[0m", "[bold red]markup[/]", "bell\x07", "tab\there", "new\nline",
           "cr\rreturn", "\u202eevil", "pipe|and`tick`", "<script>alert(1)</script>",
           "back\\slash", "emoji 🙂", "esc\x1b]0;title\x07", "*star* _under_ [link](http://x)",
           "iso\u2066late\u2069 mark\u200f del\x7f c1\x85", "plain", "digit_8"]
GROUPS = ["grp\x1b[1m", "[red]g[/red]", "g|2\n"]
ONLY_BASE = "bell\x07"  # not in the candidate: listed as "only in the baseline"
SINGLETON = "lone\x1b[5m"  # one row: excluded, listed by name
# a file name as hostile as a label (no "/" and no NUL: not allowed in a name)
BAD_NAME = "ev\x1b[31mil|`n`\u202e"

#: characters no display output may hold raw (its own "\n" excepted)
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def raw_controls(text: str) -> list[str]:
    """The control/format characters of ``text`` other than newline."""
    return [ch for ch in text if ch != "\n" and unicodedata.category(ch) in _HIDDEN]


def assert_clean(text: str, what: str) -> None:
    bad = raw_controls(text)
    assert not bad, f"{what}: raw {sorted(set(map(repr, bad)))} in output"


def test_the_assertion_helper_catches_raw_control_characters():
    """Negative control: the helper fails on what the outputs must not hold."""
    for raw in ("a\x1bb", "bell\x07", "t\tb", "c\rr", "\u202eevil", "x\x85", "\u2066i"):
        with pytest.raises(AssertionError):
            assert_clean(raw, "control")
    assert_clean("plain\nemoji 🙂 Ünïcode \\x1b", "clean")


def test_visible_is_the_documented_rule():
    assert visible("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert visible("tab\there\nnew\rcr\x07\x7f\x85") == "tab\\there\\nnew\\rcr\\x07\\x7f\\x85"
    assert visible("\u202eevil\u2066\u200f\u061c") == "\\u202eevil\\u2066\\u200f\\u061c"
    assert visible("back\\slash") == "back\\\\slash"
    assert visible("\\x1b") != visible("\x1b")  # unambiguous
    for same in ("plain", "digit_8", "emoji 🙂", "Ünïcode ñ 日本", "[bold red]markup[/]"):
        assert visible(same) == same
    assert visible("\U000e0001") == "\\U000e0001"
    # a zero-width joiner inside an emoji sequence stays (family, technologist with skin tone);
    # anywhere else it is shown
    for emoji in ("\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f469\U0001f3fd\u200d\U0001f4bb",
                  "\u2764\ufe0f\u200d\U0001f525"):
        assert visible(emoji) == emoji
    assert visible("a\u200db") == "a\\u200db"
    assert visible("\U0001f468\u200d") == "\U0001f468\\u200d"


def test_markdown_code_span_cannot_be_closed():
    assert md_code("a`b``c") == "```a`b``c```"
    assert md_code("`x`", table=False) == "`` `x` ``"
    assert md_code("p|q") == "`p\\|q`"
    assert md_text("digit_8") == "digit_8"  # intraword '_' left alone (golden output)
    assert md_text("_u_ *s* [l](http://x) <b> & $m$ ~s~") == (
        "\\_u\\_ \\*s\\* \\[l\\](http\\://x) \\<b> \\& \\$m\\$ \\~s\\~")
    # GFM's extended autolinks: an escaped "@" or "." is its own text node, never linked
    assert md_text("a@b.org www.x.com WWW.Y.io") == "a\\@b.org www\\.x.com WWW\\.Y.io"


# ------------------------------------------------------------------ data and runs
def write_set(path: Path, seed: int, spread: float, drop: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    labels, groups, rows = [], [], []
    names = [n for n in HOSTILE + [SINGLETON] if n != drop]
    centres = rng.normal(size=(len(names), 8))
    for i, name in enumerate(names):
        n = 1 if name == SINGLETON else 5
        for j in range(n):
            rows.append(centres[i] + spread * rng.normal(size=8))
            labels.append(name)
            groups.append(GROUPS[i % len(GROUPS)])
    emb = np.asarray(rows, dtype=np.float32)
    table = pa.table({"embedding": pa.array([list(map(float, r)) for r in emb],
                                            type=pa.list_(pa.float32())),
                      "label": pa.array(labels), "group": pa.array(groups)})
    pq.write_table(table, str(path))
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("hostile")
    return {"base": write_set(d / f"{BAD_NAME}base.parquet", 1, 0.6),
            "cand": write_set(d / "cand.parquet", 2, 0.4, drop=ONLY_BASE), "dir": d}


@pytest.fixture
def opis(capsys, monkeypatch):
    """``opis(*args)``: (exit code, stdout, stderr) of an in-process run, 200 columns wide."""
    monkeypatch.setattr(terminal.console, "_width", 200)
    monkeypatch.setattr(terminal, "WORST_SHOWN", 100)

    def run(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def evaluated(sets, tmp_path_factory) -> dict:
    """``opis evaluate`` with every file output, once."""
    d = tmp_path_factory.mktemp("hostile_eval")
    out = {"json": d / "r.json", "csv": d / "c.csv", "parquet": d / "c.parquet",
           "report": d / "report", "base_json": d / "base.json"}
    assert main(["evaluate", str(sets["base"]), "--group-column", "group", "--json",
                 str(out["json"]), "--curves", str(out["csv"]), "--report", str(out["report"]),
                 "--bootstrap", "20", "-q"]) == 0
    assert main(["evaluate", str(sets["base"]), "--group-column", "group", "--curves",
                 str(out["parquet"]), "-q"]) == 0
    assert main(["evaluate", str(sets["cand"]), "--json", str(out["base_json"]),
                 "--bootstrap", "20", "-q"]) == 0
    return out


def labels_shown(text: str, labels, what: str) -> None:
    for lab in labels:
        assert visible(lab) in text, f"{what}: {visible(lab)!r} not shown"


def test_evaluate_terminal_escapes_every_label(opis, sets):
    code, out, err = opis("evaluate", sets["base"], "--group-column", "group")
    assert code == 0, err
    assert err == ""  # the tables go to stdout
    assert_clean(out, "evaluate terminal")
    labels_shown(out, HOSTILE + GROUPS + [SINGLETON, str(sets["base"])], "evaluate terminal")
    assert "[bold red]markup[/]" in out  # shown literally, not as rich markup


def test_evaluate_json_round_trips_labels_exactly(opis, sets):
    code, out, err = opis("evaluate", sets["base"], "--group-column", "group", "--json", "-",
                          "-q")
    assert code == 0, err
    doc = json.loads(out)
    assert {c["label"] for c in doc["per_class"]} == set(HOSTILE)
    assert doc["classes"]["excluded_labels"] == [SINGLETON]
    assert {c["label"] for c in doc["groups"]["per_class"]} == set(GROUPS)
    assert_clean(out, "JSON text")  # json escapes control characters; U+202E is \u202e


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_curves_round_trip_labels_exactly(evaluated, kind):
    cols = read_curves(evaluated[kind])
    classes = {lab for lab, lev in zip(cols["label"], cols["level"]) if lev == "class"}
    groups = {lab for lab, lev in zip(cols["label"], cols["level"]) if lev == "group"}
    assert classes == set(HOSTILE) and groups == set(GROUPS)


def assert_html_safe(folder: Path, page: str = "report.html") -> None:
    html = (folder / page).read_text(encoding="utf-8")
    assert_clean(html.replace("\r\n", "\n"), "HTML report")
    assert "<script>alert(1)</script>" not in html
    assert "[bold red]markup[/]" in html  # markup means nothing in HTML: shown as is


def test_evaluate_and_report_html_escape_labels(opis, evaluated, tmp_path):
    assert_html_safe(evaluated["report"])
    code, _, err = opis("report", evaluated["json"], "--out", tmp_path / "rep", "--curves",
                          evaluated["csv"])
    assert code == 0, err
    assert_clean(err, "report terminal")
    assert_html_safe(tmp_path / "rep")


def unescaped(text: str, needle: str) -> bool:
    """Whether ``needle`` occurs in ``text`` not preceded by a Markdown backslash escape."""
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(needle, i):
            return True
        i += 1
    return False


def cells(row: str) -> int:
    """Cells of a GFM table row: ``|`` not escaped by a backslash splits cells."""
    n, i = 0, 0
    while i < len(row):
        if row[i] == "\\":
            i += 2
            continue
        n += row[i] == "|"
        i += 1
    return n - 1


def assert_markdown_safe(md: str, labels) -> None:
    assert_clean(md, "Markdown")
    prose = re.sub(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", "CODE", md)  # code spans are inert
    for syntax in ("<script", "[link]", "](http", "*star*", "_under_", "`tick`"):
        assert not unescaped(prose, syntax), f"raw Markdown syntax {syntax!r} from a label"
    widths = None
    for line in md.splitlines():
        if line.startswith("|"):
            widths = widths or cells(line)
            assert cells(line) == widths, f"row has {cells(line)} cells, header {widths}: {line!r}"
        else:
            widths = None
    for lab in labels:
        assert md_text(lab) in md, f"{md_text(lab)!r} not in the Markdown"


def test_compare_every_output(opis, sets, evaluated, tmp_path):
    j = tmp_path / "cmp.json"
    code, out, err = opis("compare", sets["base"], sets["cand"], "--markdown", "-", "--json", j,
                          "--report", tmp_path / "crep", "--top", "50", "--max", "opis=0",
                          "--junit", tmp_path / "j.xml")
    assert code == 1, err  # the rule opis <= 0 fails
    assert_clean(err, "compare terminal")
    labels_shown(err, HOSTILE + [str(sets["base"])], "compare terminal")
    assert "[bold red]markup[/]" in err
    assert_markdown_safe(out, set(HOSTILE) - {ONLY_BASE})
    assert md_code(str(sets["base"]), table=False) in out
    doc = json.loads(j.read_text(encoding="utf-8"))
    classes = doc["comparison"]["classes"]
    assert {c["label"] for c in classes["changes"]} == set(HOSTILE) - {ONLY_BASE}
    assert classes["only_baseline"] == [ONLY_BASE]
    assert_html_safe(tmp_path / "crep", "compare.html")
    ET.parse(tmp_path / "j.xml")


def test_gate_terminal_junit_markdown(opis, evaluated, tmp_path):
    junit, md = tmp_path / "g.xml", tmp_path / "g.md"
    code, out, err = opis("gate", evaluated["json"], "--baseline", evaluated["base_json"],
                          "--max", "opis=0", "--max-increase", "epsilon_opis=ci", "--junit",
                          junit, "--markdown", md, "--no-config")
    assert code == 1, err
    assert_clean(out, "gate terminal")
    assert_clean(err, "gate wrote lines")
    raw = junit.read_text(encoding="utf-8")
    assert_clean(raw, "JUnit")
    root = ET.fromstring(junit.read_bytes())
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["candidate"] == visible(str(evaluated["json"]))
    assert_markdown_safe(md.read_text(encoding="utf-8"), [])


def test_junit_and_markdown_of_a_hostile_candidate_name(tmp_path, evaluated):
    """The gate outputs name the candidate by its path: a hostile path stays inert."""
    from opis_cli.gate.rules import GateOutcome, RuleResult, parse_rule
    from opis_cli.render.junit import junit_xml
    from opis_cli.render.markdown import gate_markdown

    rule = parse_rule("max", "opis=0.1")
    for name in HOSTILE + [BAD_NAME]:
        res = RuleResult(rule, 0.2, 0.1, None, False, f"opis 0.2 > 0.1 for {name}")
        outcome = GateOutcome((res,), candidate=name, baseline=name)
        xml = junit_xml(outcome)
        assert_clean(xml, "JUnit")
        root = ET.fromstring(xml.encode("utf-8"))
        assert {p.get("value") for p in root.iter("property")} == {visible(name)}
        md = gate_markdown(outcome)
        assert_markdown_safe(md, [])
        assert md_code(name, table=False) in md


@pytest.mark.parametrize("args", [
    ["evaluate", "no\nsuch\x1b[31m\u202e.parquet"],
    ["evaluate", "BASE", "--label-column", "lab\x1b[2Jel\n"],
    ["evaluate", "BASE", "--group-column", "\x07g\rroup"],
    ["gate", "no\x1bsuch.json", "--max", "opis=1"],
    ["gate", "JSON", "--max", "op\x1b[31mis\n=1", "--no-config"],
])
def test_error_line_is_one_line_without_raw_controls(opis, sets, evaluated, args):
    args = [str(sets["base"]) if a == "BASE" else str(evaluated["json"]) if a == "JSON" else a
            for a in args]
    code, out, err = opis(*args)
    assert code == 2, err
    assert out == ""
    assert err.startswith("Error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert_clean(err, "error line")
    assert "\\x1b" in err or "\\x07" in err


def test_calibrate_terminal_json_and_report(opis, sets, tmp_path):
    """``opis calibrate``: the hostile path in the terminal, labels in the JSON
    exactly and escaped in the report's table of unseen classes."""
    j, rep = tmp_path / "cal.json", tmp_path / "calrep"
    code, out, err = opis("calibrate", sets["base"], "--folds", "2", "--json", j, "--report", rep)
    assert code == 0, err
    assert err.splitlines() == [f"wrote {j}", f"wrote {rep / 'calibrate.html'}"]
    assert_clean(out, "calibrate terminal")
    assert visible(str(sets["base"])) in out.replace("\n", "")
    d = json.loads(j.read_text(encoding="utf-8"))
    shown = {c["label"] for f in d["transfer"]["folds"] for c in f["test"]["per_class"]}
    assert shown == set(HOSTILE)  # the singleton is not evaluated; the rest round-trip
    assert_html_safe(rep, "calibrate.html")
    code, out, err = opis("calibrate", sets["base"], "--group-column", "group", "--folds", "3")
    assert code == 0, err
    assert_clean(out, "calibrate by group terminal")
