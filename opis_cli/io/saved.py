"""Saved results: the result JSON written by ``opis evaluate --json``, read back.

Owns :func:`read_result`, which turns every problem with the document into
one :class:`~opis_cli.errors.InputError` line naming the file. The curves
that go with a result live in their own table (:mod:`opis_cli.io.curves`).
"""

from __future__ import annotations

import json
import os

from opis_cli.errors import InputError
from opis_cli.results import EvaluationResult

from ._files import check_suffix, one_line

__all__ = ["read_result"]


def read_result(path: str | os.PathLike[str]) -> EvaluationResult:
    """Read a result document written by ``opis evaluate --json``.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.json`` file.

    Returns
    -------
    EvaluationResult
        Without per-class curves (they are not part of the JSON; see
        :func:`opis_cli.io.curves.read_curves`).

    Raises
    ------
    InputError
        Missing or unreadable file, invalid JSON, or not an opis result
        document of a supported ``schema_version``.
    """
    path_str = os.fspath(path)
    check_suffix(path_str, (".json",), "result file", allow_dir=False)
    try:
        with open(path_str, encoding="utf-8") as fh:
            doc = json.load(fh)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path_str}: not UTF-8 text (byte {exc.start}); expected the JSON "
                         "written by opis evaluate --json") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path_str}: not valid JSON (line {exc.lineno} column {exc.colno}: "
                         f"{exc.msg})") from exc
    except OSError as exc:
        raise InputError(f"{path_str}: not readable ({exc.strerror or exc})") from exc
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise InputError(f"{path_str}: not an opis result document (no 'schema_version'); "
                         "expected the JSON written by opis evaluate --json")
    try:
        return EvaluationResult.from_dict(doc)
    except ValueError as exc:
        raise InputError(f"{path_str}: {one_line(exc)}") from exc
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        what = f"key {exc.args[0]!r} is missing" if isinstance(exc, KeyError) else one_line(exc)
        raise InputError(f"{path_str}: not a complete opis result document ({what})") from exc
