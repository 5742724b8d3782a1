"""``opis report``: render the HTML report and PNG figures from a saved result.

Nothing is recomputed and no embeddings are needed: the figures come from the
result JSON (``opis evaluate --json``) and, for the per-class utility curves,
the curves table (``opis evaluate --curves``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as o
from .options import ADVANCED_OPTION, ENGINE, GATE, INPUT, OUTPUTS, RANGE, TRACKERS  # noqa: F401
from .root import app, check_inputs, examples, wrote


@app.command(epilog=examples(
    "opis report weak.json --out weak-report",
    "opis report weak.json --curves weak-curves.parquet --out weak-report"))
def report(
    result_json: Annotated[Path, typer.Argument(
        metavar="RESULT.json", show_default=False,
        help="Result written by `opis evaluate --json`.")],
    out: Annotated[Path, typer.Option(
        "--out", show_default=False,
        help="Folder for report.html and the PNG figures (created if missing; files of the "
             "same names are replaced).", rich_help_panel=OUTPUTS)],
    curves: Annotated[Optional[Path], typer.Option(
        help="Per-class curves written by `opis evaluate --curves` (.parquet or .csv) for "
             "the same run; without it the utility figure shows only the mean curves.",
             rich_help_panel=INPUT)] = None,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Render the HTML report and PNG figures from a saved result (no embeddings needed)."""
    check_inputs(result_json)
    from ..io import read_curves, read_result
    from ..render.report import curves_from_table, write_report

    result = read_result(result_json)
    class_curves = group_curves = None
    if curves is not None:
        columns = read_curves(curves)
        class_curves = curves_from_table(columns, result, level="class", source=str(curves))
        group_curves = curves_from_table(columns, result, level="group", source=str(curves))
    page = write_report(result, out, curves=class_curves, group_curves=group_curves)
    wrote(page, quiet=quiet)
