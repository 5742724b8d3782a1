"""Exceptions raised by the library, and the exit codes the CLI maps them to.

This module imports nothing heavy so that every layer can raise these.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit codes of ``opis`` (and of the GitHub Action's script step)."""

    OK = 0
    #: every command ran, but a gate rule does not hold
    GATE_FAILED = 1
    #: a usage or input error (any :class:`OpisError`): one ``Error: ...`` line
    USAGE = 2
    #: interrupted (Ctrl-C, a closed pipe)
    INTERRUPTED = 130


class OpisError(Exception):
    """Base class for every error opis reports to a user (exit code 2)."""


class InputError(OpisError):
    """The input data is unusable: missing file, bad column, NaN, ...

    The message is one line naming the file, column or row and what was
    expected.
    """


class ConfigError(OpisError):
    """An option or option combination is invalid (bad range, bad policy)."""
