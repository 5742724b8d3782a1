"""Check a built documentation site: the pages the docs promise are there.

    python ci/check_site.py SITE_DIR

The CLI reference must name every ``opis`` command and every option of each
(it is generated from the Typer app by mkdocs-click, so a command missing
from it means the generation broke); the tutorial and the API reference
(mkdocstrings) must exist and hold what they are for. Exit 1 with one line
per problem.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import typer

from opis_cli.cli import app


def text_of(path: Path) -> str:
    raw = path.read_text(encoding="utf-8")
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", raw)))


def main(site: Path) -> int:
    problems = []
    cli_page = site / "reference" / "cli" / "index.html"
    cli = text_of(cli_page) if cli_page.exists() else ""
    if not cli:
        problems.append(f"{cli_page}: missing")
    root = typer.main.get_command(app)
    for name, cmd in root.commands.items():
        if f"opis {name}" not in cli:
            problems.append(f"CLI reference: command 'opis {name}' missing")
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-") and opt not in cli:
                    problems.append(f"CLI reference: option {opt} of 'opis {name}' missing")
    for page, needles in {
        "tutorial/index.html": ["opis evaluate", "opis gate"],
        "reference/api/index.html": ["opis_cli.evaluate", "EvaluationResult", "read_dataset"],
        "reference/spec/index.html": ["Calibration range and threshold grid"],
    }.items():
        path = site / page
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        text = text_of(path)
        problems += [f"{path}: does not mention {n!r}" for n in needles if n not in text]
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
