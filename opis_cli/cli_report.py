"""``opis report``: render HTML/PNG from a saved result (filled in by the report work)."""

from __future__ import annotations


def register(app) -> None:
    """Add the report command to ``app``."""
