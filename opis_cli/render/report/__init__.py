"""Reports of a finished result: PNG figures and one self-contained HTML file.

``write_report(result, out_dir)`` is what ``opis evaluate --report DIR`` and
``opis report RESULT.json --out DIR`` call. It only reads the result (and the
per-class curves, which are not part of the JSON); nothing is recomputed, so
a report rendered from a saved result shows the same figures as the one
written by the run itself.

``plots`` imports matplotlib (lazily); ``html`` writes the page.
``curves_from_table`` is re-exported from :mod:`opis_cli.io.curves`, which
owns the ``--curves`` table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ...errors import InputError
from ...io.curves import curves_from_table
from ...results import Curves, EvaluationResult

if TYPE_CHECKING:  # pragma: no cover
    from ...gate.rules import GateOutcome

__all__ = ["write_report", "curves_from_table", "REPORT_FILE"]

REPORT_FILE = "report.html"


def _resolve(result: EvaluationResult, curves,
             group_curves: Curves | None) -> tuple[Curves | None, Curves | None]:
    """(class curves, group curves) from whatever the caller has."""
    if curves is None:
        return result.curves, (result.groups.curves if result.groups is not None else None)
    if isinstance(curves, Curves):
        return curves, group_curves
    return (curves_from_table(curves, result, level="class"),
            curves_from_table(curves, result, level="group"))


def _check_out_dir(out_dir: str | os.PathLike) -> Path:
    from ...options import check_report_folder

    check_report_folder(out_dir)
    return Path(out_dir)


def _out_dir(out_dir: str | os.PathLike) -> Path:
    out = _check_out_dir(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create the report folder ({e.strerror or e})") from e
    return out


def write_report(result: EvaluationResult, out_dir: str | os.PathLike, *,
                 curves: Curves | Mapping[str, np.ndarray] | None = None,
                 group_curves: Curves | None = None,
                 gate: "GateOutcome | None" = None) -> Path:
    """Write ``report.html`` and one PNG per figure into ``out_dir``.

    Parameters
    ----------
    result : the evaluation to report.
    out_dir : folder (created if missing). Existing files of the same names
        are replaced; all files are renamed into place together at the end.
    curves : the per-row utility curves: a ``Curves`` (classes), the column
        dict of a ``--curves`` table (classes and groups; checked against the
        result), or None to use the curves of an in-process result (a result
        read from JSON has none: the utility figure then says so).
    group_curves : the per-group curves when ``curves`` is a ``Curves``.
    gate : a :class:`~opis_cli.gate.rules.GateOutcome` to show beside the verdict
        (pass/fail per rule), e.g. that of ``opis evaluate --max ...``.

    Returns
    -------
    Path of ``report.html``.
    """
    from ...io.output import staged
    from . import html
    from . import plots

    _check_out_dir(out_dir)  # before the work
    class_curves, group_curves = _resolve(result, curves, group_curves)
    figures = plots.all_figures(result, class_curves, group_curves)
    images = {name: plots.to_png(fig) for name, fig in figures.items()}
    page = html.render_report(result, images, class_curves=class_curves is not None,
                              group_curves=group_curves is not None, gate=gate,
                              curves=class_curves)
    out = _out_dir(out_dir)
    target = out / REPORT_FILE
    with staged() as stage:  # all files appear together, or none
        for name, png in images.items():
            stage.temp_for(out / f"{name}.png").write_bytes(png)
        stage.text(target, page)
    return target
