"""``opis compare`` and ``opis gate`` (filled in by the gating work)."""

from __future__ import annotations


def register(app) -> None:
    """Add the compare and gate commands to ``app``."""
