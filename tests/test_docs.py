"""Every shell and Python example in README.md and docs/ runs, and shown output is checked.

The rules for a fenced block (the docs follow them; ``docs/index.md`` of the
development page says so too):

- ``console``: lines starting with ``$ `` are commands; the lines after a
  command, up to the next command, are its expected output (stdout and
  stderr together). A line ``...`` stands for any number of lines; a last
  line ``[exit code N]`` says the command exits with N (otherwise it must
  exit 0). A command with no lines after it only has to exit 0.
- ``bash``: the block runs with ``bash -euo pipefail`` and must exit 0.
- ``python``: the blocks of one page run in order in one namespace; a
  ``text`` block right after a ``python`` block is its expected stdout.
- Lines starting with ``pip install`` are not run: installing is what
  ``.ci/run`` does, from a fresh virtual environment, with the README's
  commands.
- A ``bash`` or ``python`` block whose first line is ``# not run: REASON``
  is shown but not run (a cluster address, a GitHub workflow); the reason is
  required, and this module lists every such block in one test so that they
  stay few and visible.

Every page runs in its own temporary folder holding a link to the shipped
``sample_data`` and ``examples``. ``OPIS_DOCS_UPDATE=1 pytest
tests/test_docs.py`` rewrites the expected outputs from the actual ones (then
read the diff).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
NOT_RUN = "# not run:"
UPDATE = os.environ.get("OPIS_DOCS_UPDATE") == "1"
#: the first line of a run whose kernels are not compiled yet (cli/firstrun.py)
COMPILE_NOTE = "compiling kernels (first run only"
EXIT_LINE = re.compile(r"^\[exit code (\d+)\]$")
FENCE = re.compile(r"^(\s*)```(\w*)[^\n]*$")


@dataclass
class Block:
    lang: str
    start: int  # line index of the first content line
    lines: list[str]
    follows_python: bool = False
    expected_for: "Block | None" = field(default=None, repr=False)


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, in order."""
    text = path.read_text(encoding="utf-8").split("\n")
    out: list[Block] = []
    i = 0
    while i < len(text):
        m = FENCE.match(text[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2)
        j = i + 1
        while j < len(text) and text[j].strip() != "```":
            j += 1
        out.append(Block(lang, i + 1, [ln[len(indent):] for ln in text[i + 1:j]]))
        i = j + 1
    for prev, cur in zip(out, out[1:]):
        if prev.lang == "python" and cur.lang == "text":
            cur.expected_for = prev
    return out


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(COLUMNS="120", NO_COLOR="1", TERM="dumb", PYTHONHASHSEED="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("FORCE_COLOR", None)
    # the commands run as a user's do: the exact engine's small-input route on
    # (conftest turns it off for the rest of the session)
    env.pop("_OPIS_SMALL_TERMS", None)
    return env


def _workdir(tmp: Path) -> Path:
    for name in ("sample_data", "examples", "SPEC.md"):
        (tmp / name).symlink_to(REPO / name)
    return tmp


def _matches(expected: list[str], actual: list[str]) -> bool:
    """``expected`` against ``actual``, lines compared without trailing blanks;
    a line ``...`` matches any number of lines."""
    exp = [ln.rstrip() for ln in expected]
    act = [ln.rstrip() for ln in actual]

    def go(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i] == "...":
            return any(go(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and exp[i] == act[j] and go(i + 1, j + 1)

    return go(0, 0)


def _run_shell(cmd: str, cwd: Path) -> tuple[int, list[str]]:
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", cmd], cwd=cwd, env=_env(cwd),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=600)
    lines = p.stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return p.returncode, lines


def _is_pip(line: str) -> bool:
    return line.strip().startswith("pip install")


def _console(block: Block, cwd: Path, where: str) -> list[str] | None:
    """Run a console block; return its rewritten lines in update mode."""
    cmds: list[tuple[str, list[str]]] = []
    for ln in block.lines:
        if ln.startswith("$ "):
            cmds.append((ln[2:], []))
        else:
            assert cmds, f"{where}: output before the first '$ ' command"
            cmds[-1][1].append(ln)
    new: list[str] = []
    for cmd, expected in cmds:
        new.append(f"$ {cmd}")
        if _is_pip(cmd):
            new.extend(expected)
            continue
        want_rc = 0
        if expected and EXIT_LINE.match(expected[-1].strip()):
            want_rc = int(EXIT_LINE.match(expected[-1].strip()).group(1))
            expected = expected[:-1]
        rc, out = _run_shell(cmd, cwd)
        # the compile note depends on the machine's numba cache, not on the
        # command: never part of a page's shown output
        out = [ln for ln in out if not ln.startswith(COMPILE_NOTE)]
        shown = out + ([f"[exit code {rc}]"] if rc else [])
        if UPDATE:
            if expected or rc:
                new.extend(shown)
            continue
        assert rc == want_rc, f"{where}: `{cmd}` exited {rc}, expected {want_rc}:\n" + "\n".join(out)
        if expected:
            assert _matches(expected, out), (
                f"{where}: output of `{cmd}` differs from the docs.\n--- docs\n"
                + "\n".join(expected) + "\n--- actual\n" + "\n".join(out))
    return new if UPDATE else None


def _python(block: Block, ns: dict, cwd: Path, where: str) -> list[str]:
    src = "\n".join(block.lines)
    buf = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(src, where, "exec"), ns)  # noqa: S102 - the docs' own examples
    finally:
        os.chdir(old)
    return buf.getvalue().rstrip("\n").split("\n") if buf.getvalue() else []


def _not_run(block: Block) -> bool:
    return bool(block.lines) and block.lines[0].startswith(NOT_RUN)


def _page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_examples_of_page_run(page: Path, tmp_path: Path):
    cwd = _workdir(tmp_path)
    ns: dict = {"__name__": "__docs__"}
    text = page.read_text(encoding="utf-8").split("\n")
    edits: list[tuple[Block, list[str]]] = []
    last_stdout: list[str] = []
    for b in blocks(page):
        where = f"{_page_id(page)}:{b.start}"
        if b.lang == "console":
            new = _console(b, cwd, where)
            if new is not None and new != b.lines:
                edits.append((b, new))
        elif b.lang == "bash" and not _not_run(b):
            script = "\n".join(ln for ln in b.lines if not _is_pip(ln))
            if script.strip():
                rc, out = _run_shell(script, cwd)
                assert rc == 0, f"{where}: block exited {rc}:\n" + "\n".join(out)
        elif b.lang == "python" and not _not_run(b):
            last_stdout = _python(b, ns, cwd, where)
        elif b.lang == "text" and b.expected_for is not None and not _not_run(b.expected_for):
            if UPDATE:
                if last_stdout != b.lines:
                    edits.append((b, last_stdout))
            else:
                assert _matches(b.lines, last_stdout), (
                    f"{where}: printed output differs from the docs.\n--- docs\n"
                    + "\n".join(b.lines) + "\n--- actual\n" + "\n".join(last_stdout))
    if UPDATE and edits:
        for b, new in sorted(edits, key=lambda e: -e[0].start):
            indent = re.match(r"\s*", text[b.start - 1]).group(0)
            text[b.start:b.start + len(b.lines)] = [indent + ln if ln else ln for ln in new]
        page.write_text("\n".join(text), encoding="utf-8")


def test_blocks_not_run_are_few_and_say_why():
    shown = []
    for page in PAGES:
        for b in blocks(page):
            if b.lang in ("bash", "python") and _not_run(b):
                reason = b.lines[0][len(NOT_RUN):].strip()
                assert reason, f"{_page_id(page)}:{b.start}: '# not run:' needs a reason"
                shown.append((_page_id(page), b.start, reason))
    # every page's examples run except these; a new one must be added here on purpose
    # (9: performance.md's float64-decision cost, two checkouts timed against each other)
    assert len(shown) <= 9, "\n".join(f"{p}:{s} {r}" for p, s, r in shown)


def test_readme_links_every_docs_page():
    """The README is the landing page (issue 26): at most 300 lines, and every
    page of docs/ one link away, by its path relative to the repository."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = set(re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)", readme))
    pages = {p.relative_to(REPO).as_posix() for p in PAGES[1:]}
    assert pages - links == set(), "README.md does not link these pages"
    assert links - pages == set(), "README.md links pages that do not exist"
    assert len(readme.splitlines()) <= 300, "the landing page is at most 300 lines"


def test_console_commands_are_opis_or_shell_tools():
    """Console blocks show commands a user types: opis itself, or a few shell tools."""
    allowed = {"opis", "python", "ls", "cat", "head", "jq", "pip", "cp", "echo"}
    for page in PAGES:
        for b in blocks(page):
            if b.lang != "console":
                continue
            for ln in b.lines:
                if ln.startswith("$ "):
                    first = shlex.split(ln[2:])[0]
                    assert first in allowed, f"{_page_id(page)}:{b.start}: {first}"
