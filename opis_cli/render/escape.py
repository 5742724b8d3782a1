"""User text in every text output: one rule, one function per output kind.

User text is whatever comes from the user's data or command line: labels,
group names, file names, column names, rule text, values quoted in messages.
The rule (:func:`visible`):

* every character of Unicode category ``Cc`` (C0 controls with ESC, BEL,
  TAB, NEWLINE, CR; DEL; C1 controls), ``Cf`` (format characters: the bidi
  embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069, the
  marks U+200E, U+200F and U+061C, zero-width characters, ...), ``Cs``
  (lone surrogates), ``Zl``/``Zp`` (U+2028, U+2029) and the non-characters
  U+FFFE/U+FFFF is shown as its Python escape: ``\\t``, ``\\n``, ``\\r``,
  ``\\x1b``, ``\\u202e``, ``\\U000e0001``;
* a backslash is shown doubled (``\\\\``), so that a label holding the four
  characters ``\\x1b`` and a label holding ESC never look the same;
* everything else (letters of any script, emoji, spaces) is unchanged.

A *message* (our prose, which may quote user text) is shown through
:func:`controls`: the same escapes, but its backslashes are left alone
(messages quote odd names with ``repr``, which already doubles them).

Per output kind:

* terminal: :func:`terminal_text` / :func:`terminal_message` return a
  :class:`rich.text.Text` (never parsed as rich markup or emoji codes);
* Markdown: :func:`md_text` (table cells, prose) and :func:`md_code` (code
  spans) add Markdown's own escaping on top, so that a label cannot end a
  table cell, start emphasis, a link, an autolink or inline HTML;
* JUnit XML: :func:`xml_text`, after which ElementTree escapes ``<>&"``;
  the result is valid XML 1.0 whatever the label;
* error lines: :func:`one_line` (no raw control byte, never more than one line);
* CSV/Parquet/JSON are data, not display: they hold the raw label (CSV
  quoted by pyarrow's writer, JSON escaped by :mod:`json`).
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from rich.text import Text

#: Unicode categories shown as escapes.
ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
#: Markdown syntax escaped with a backslash wherever it occurs.
_MD_ALWAYS = frozenset("\\`*[]<&|~$")  # no ">": with "<" escaped it starts no tag


def hidden(ch: str) -> bool:
    """Whether the rule shows the character ``ch`` as an escape."""
    return (unicodedata.category(ch) in ESCAPED_CATEGORIES) or ch in "\ufffe\uffff"


def _escape_char(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    o = ord(ch)
    if o < 0x100:
        return f"\\x{o:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def _emoji_joiner(s: str, i: int) -> bool:
    """Whether ``s[i]`` is a zero-width joiner inside an emoji sequence (a
    pictograph, optionally with a variation selector or skin tone, on both
    sides: 👩‍💻). It is kept there: escaping it would break the emoji, and it
    moves no text and controls no terminal."""
    j = i - 1
    while j >= 0 and (s[j] == "\ufe0f" or "\U0001f3fb" <= s[j] <= "\U0001f3ff"):
        j -= 1
    return (j >= 0 and i + 1 < len(s) and unicodedata.category(s[j]) == "So"
            and unicodedata.category(s[i + 1]) == "So")


def _escape(text: object, backslash: bool) -> str:
    s = str(text)
    if s.isascii() and s.isprintable() and not (backslash and "\\" in s):
        return s  # the common case: nothing to escape
    out = []
    for i, ch in enumerate(s):
        if ch == "\\" and backslash:
            out.append("\\\\")
        elif hidden(ch) and not (ch == "\u200d" and _emoji_joiner(s, i)):
            out.append(_escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


def visible(text: object) -> str:
    """User text as shown to people: control/format characters escaped, ``\\`` doubled."""
    return _escape(text, backslash=True)


def controls(text: object) -> str:
    """A message (prose quoting user text): control/format characters escaped only."""
    return _escape(text, backslash=False)


def one_line(message: object) -> str:
    """An error or warning message as one line with no raw control character."""
    return controls(message)


def terminal_text(text: object, style: str = "") -> Text:
    """User text for rich: :func:`visible`, as ``Text`` (never markup)."""
    from rich.text import Text

    return Text(visible(text), style=style)


def terminal_message(text: object, style: str = "") -> Text:
    """A message for rich: :func:`controls`, as ``Text`` (never markup)."""
    from rich.text import Text

    return Text(controls(text), style=style)


def _md_escape(s: str) -> str:
    out = []
    n = len(s)
    for i, ch in enumerate(s):
        if ch in _MD_ALWAYS:
            out.append("\\" + ch)
        elif ch == "_" and not (0 < i < n - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()):
            out.append("\\_")  # intraword '_' (digit_8) never starts emphasis: left alone
        elif ch == ":" and s.startswith("//", i + 1):
            out.append("\\:")  # no extended autolink (https://...)
        elif ch == "@" or (ch == "." and i >= 3 and s[i - 3:i].lower() == "www"):
            out.append("\\" + ch)  # no email or www. autolink (GFM's extended autolinks)
        else:
            out.append(ch)
    return "".join(out)


def md_text(text: object) -> str:
    """User text in Markdown (table cell or prose): :func:`visible`, then Markdown escapes.

    Rendered, it reads exactly as :func:`visible` shows it in a terminal.
    """
    return _md_escape(visible(text))


def md_message(text: object) -> str:
    """A message in Markdown: :func:`controls`, then Markdown escapes."""
    return _md_escape(controls(text))


def md_code(text: object, table: bool = True) -> str:
    """User text as a Markdown code span (backticks included).

    The fence is one backtick longer than the longest run inside, so no label
    can close it; inside a table ``|`` is written ``\\|`` (GFM splits cells
    before it parses code spans).
    """
    s = visible(text)
    if table:
        s = s.replace("|", "\\|")
    run = longest = 0
    for ch in s:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    if s.startswith("`") or s.endswith("`") or (s.startswith(" ") and s.endswith(" ") and s.strip()):
        s = f" {s} "
    return f"{fence}{s}{fence}"


def xml_text(text: object) -> str:
    """User text for XML (attribute or element): :func:`visible`; ElementTree escapes ``<>&``."""
    return visible(text)


def xml_message(text: object) -> str:
    """A message for XML: :func:`controls`."""
    return controls(text)
