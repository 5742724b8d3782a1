"""The ``opis`` command line: a thin Typer layer over the Python API.

``root`` holds the app and :func:`main`; each command is a module that
registers itself on the app when imported (``evaluate``, ``calibrate``,
``compare``, ``gate``, ``report``); ``options`` declares the options they share.
"""

from __future__ import annotations

# Importing a command module registers it; this order is the order of `opis --help`.
from . import evaluate, calibrate, report, gate, compare  # noqa: F401, I001
from .root import app, main, run

__all__ = ["app", "main", "run"]
