"""The click command behind the Typer app, for mkdocs-click (``docs/reference/cli.md``)."""

from __future__ import annotations

from .root import build_command

#: ``opis`` as a click group: every command, option and help text (the
#: "Advanced" panel included: cli.md shows hidden options too; the examples stay
#: in the epilog, which mkdocs-click does not render as a paragraph of the help).
command = build_command(show_all=True, examples_first=False)
