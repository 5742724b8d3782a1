"""The ``opis`` command line: a thin Typer layer over the Python API."""

from __future__ import annotations

from .root import app, main

__all__ = ["app", "main"]
