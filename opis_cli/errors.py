"""Exceptions raised by the library; the CLI maps them to exit codes.

This module imports nothing heavy so that every layer can raise these.
"""

from __future__ import annotations


class OpisError(Exception):
    """Base class for every error opis reports to a user (exit code 2)."""


class InputError(OpisError):
    """The input data is unusable: missing file, bad column, NaN, ...

    The message is one line naming the file, column or row and what was
    expected.
    """


class ConfigError(OpisError):
    """An option or option combination is invalid (bad range, bad policy)."""
