"""The click command behind the Typer app, for mkdocs-click (``docs/reference/cli.md``)."""

from __future__ import annotations

import typer.main

from . import app

#: ``opis`` as a click group: every command, option and help text.
command = typer.main.get_command(app)
