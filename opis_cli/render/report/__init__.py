"""Reports of a finished result: PNG figures and one self-contained HTML file.

``write_report(result, out_dir)`` is what ``opis evaluate --report DIR`` and
``opis report RESULT.json --out DIR`` call. It only reads the result (and the
per-class curves, which are not part of the JSON); nothing is recomputed, so
a report rendered from a saved result shows the same figures as the one
written by the run itself.

``plots`` imports matplotlib (lazily); ``html`` writes the page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ...errors import InputError
from ...results import ConsistencyBlock, Curves, EvaluationResult

__all__ = ["write_report", "curves_from_table", "REPORT_FILE"]

REPORT_FILE = "report.html"
_REQUIRED = ("level", "label", "threshold_index", "threshold", "utility")


def curves_from_table(table: Mapping[str, np.ndarray], result: EvaluationResult, *,
                      level: str = "class", source: str = "curves table") -> Curves | None:
    """Per-row curves of one level from a ``--curves`` table, checked against ``result``.

    Parameters
    ----------
    table : columns as written by ``EvaluationResult.curves_table()`` (and read
        back by ``opis_cli.io.read_curves``): level, label, threshold_index,
        threshold, utility, and optionally tp, fp, positives, negatives.
    result : the result the curves belong to.
    level : ``"class"`` or ``"group"``.
    source : how to name the table in error messages (its path).

    Returns
    -------
    Curves with one row per evaluated row of ``level``, in ``per_class`` order,
    or None when the table has no rows of that level (or the result no such
    block).

    Raises
    ------
    InputError
        The table does not belong to ``result``: unknown or missing labels,
        a wrong number of rows per label, or other thresholds.
    """
    block: ConsistencyBlock | None = result.classes if level == "class" else result.groups
    missing = [c for c in _REQUIRED if c not in table]
    if missing:
        raise InputError(f"{source}: no column {missing[0]!r}; expected the table written by "
                         "`opis evaluate --curves` (columns " + ", ".join(_REQUIRED) + ", ...)")
    levels = np.asarray(table["level"]).astype(str)
    rows = np.flatnonzero(levels == level)
    if block is None or rows.size == 0:
        if level == "class":
            raise InputError(f"{source}: no rows with level 'class'; expected the table "
                             "written by `opis evaluate --curves`")
        return None
    labels = [c.label for c in block.per_class]
    K = len(result.thresholds)
    pos = {lab: i for i, lab in enumerate(labels)}
    tab_labels = np.asarray(table["label"], dtype=object)[rows]
    idx = np.fromiter((pos.get(str(v), -1) for v in tab_labels), dtype=np.int64,
                      count=rows.size)
    noun = "class" if level == "class" else "group"
    if (idx < 0).any():
        bad = str(tab_labels[int(np.flatnonzero(idx < 0)[0])])
        raise InputError(f"{source}: {noun} {bad!r} is not an evaluated {noun} of the result; "
                         "the curves and the result JSON come from different runs")
    ti = np.asarray(table["threshold_index"])[rows]
    bad_index = (ti < 0) | (ti >= K) | (ti != np.floor(ti)) if ti.dtype.kind in "iuf" else True
    if np.any(bad_index):
        raise InputError(f"{source}: threshold_index outside 0..{K - 1}; the result has {K} "
                         "thresholds (the curves come from a different run)")
    ti = ti.astype(np.int64)
    cell = np.bincount(idx * K + ti, minlength=len(labels) * K).reshape(len(labels), K)
    if (cell != 1).any():
        i, k = (int(v[0]) for v in np.nonzero(cell != 1))
        raise InputError(f"{source}: {noun} {labels[i]!r} has {int(cell[i, k])} rows for "
                         f"threshold_index {k}; expected exactly one (the curves and the result "
                         "JSON come from different runs)")
    th_tab = np.asarray(table["threshold"], dtype=np.float64)[rows]
    th_res = np.asarray(result.thresholds, dtype=np.float64)[ti]
    if not np.allclose(th_tab, th_res, rtol=1e-9, atol=1e-12):
        j = int(np.flatnonzero(~np.isclose(th_tab, th_res, rtol=1e-9, atol=1e-12))[0])
        raise InputError(f"{source}: threshold {th_tab[j]:.9g} at threshold_index {ti[j]} but the "
                         f"result has {th_res[j]:.9g}; the curves come from a different run")

    def grid(name: str) -> np.ndarray:
        out = np.full((len(labels), K), np.nan)
        if name in table:
            out[idx, ti] = np.asarray(table[name], dtype=np.float64)[rows]
        return out

    def per_row(name: str) -> np.ndarray:
        out = np.full(len(labels), np.nan)
        if name in table:
            out[idx] = np.asarray(table[name], dtype=np.float64)[rows]
        return out

    return Curves(labels=tuple(labels), utility=grid("utility"), tp=grid("tp"), fp=grid("fp"),
                  positives=per_row("positives"), negatives=per_row("negatives"))


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
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; the report needs a folder to "
                         "write report.html and the PNG figures into")
    return out


def _out_dir(out_dir: str | os.PathLike) -> Path:
    out = _check_out_dir(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create the report folder ({e.strerror or e})") from e
    return out


def write_report(result: EvaluationResult, out_dir: str | os.PathLike, *,
                 curves: Curves | Mapping[str, np.ndarray] | None = None,
                 group_curves: Curves | None = None) -> Path:
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
                              group_curves=group_curves is not None)
    out = _out_dir(out_dir)
    target = out / REPORT_FILE
    with staged() as stage:  # all files appear together, or none
        for name, png in images.items():
            stage.temp_for(out / f"{name}.png").write_bytes(png)
        stage.text(target, page)
    return target
