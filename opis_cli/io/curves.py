"""The per-class curves table (``--curves PATH``): its columns, writing, reading, checking.

The curves are not part of the result JSON; ``opis evaluate --curves`` writes
them as a table (Parquet or CSV) with one row per (level, label, threshold):

=================  ===============================================  ========
column             meaning                                          required
=================  ===============================================  ========
level              ``"class"`` or ``"group"`` (and the block-level  yes
                   ``"class-fairness"``/``"group-fairness"``)
label              the class (or group) label, as ``str``           yes
                   (``""`` on block-level rows)
threshold_index    0 .. K-1, the position on the result's grid      yes
threshold          the distance threshold at that index             yes
utility            the row's utility at that threshold              yes
tp, fp             true / false positive counts                     no
positives          the row's positive pairs (same on every row)     no
negatives          the row's negative pairs (same on every row)     no
tpr, far           tp / positives, fp / negatives                   no
fdr, garbe         SPEC 13 at the threshold, block-level rows only  no
                   (empty elsewhere, and ``garbe`` for one group)
=================  ===============================================  ========

After each block's per-row curves come its K block-level rows (level
``class-fairness`` or ``group-fairness``, label ``""``, one per threshold):
``utility`` is the block's mean utility, ``tp``/``fp``/``positives``/
``negatives`` are summed over the block's rows (so ``tpr``/``far`` are the
global rates) and ``fdr``/``garbe`` are the fairness discrepancy and Gini
aggregation rates of SPEC 13 at that threshold, the per-threshold values of
the JSON's ``fairness.fdr``/``fairness.garbe``. Tables written before these
rows existed (no ``fdr``/``garbe`` columns) are read as before.

This module is the single owner of that format:

- :func:`curves_table` -- the table of a result's in-process curves (built by
  :meth:`~opis_cli.results.EvaluationResult.curves_table`, next to the data);
- :func:`write_curves` -- the table written atomically to a file;
- :func:`read_curves` -- a table read back, with its columns checked;
- :func:`curves_from_table` -- a table turned back into
  :class:`~opis_cli.results.Curves`, checked against the result it belongs to;
- :func:`fairness_from_table` -- the block-level FDR and GARBE per threshold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from opis_cli.errors import InputError
from opis_cli.results import (CURVES_COLUMNS, FAIRNESS_LEVELS, ConsistencyBlock, Curves,
                              EvaluationResult)

from ._columns import strings_from_arrow
from ._files import PARQUET_SUFFIXES, arrow_errors, check_suffix, list_names, suffix

__all__ = ["COLUMNS", "REQUIRED", "curves_table", "write_curves", "read_curves",
           "curves_from_table", "fairness_from_table"]

#: Every column, in the order written (the result builds the table: ``EvaluationResult.curves_table``).
COLUMNS = CURVES_COLUMNS
#: The columns a table must have to be read back.
REQUIRED = COLUMNS[:5]
#: Suffixes accepted when reading (writing takes ``output.TABLE_SUFFIXES``).
READ_SUFFIXES = (".csv", ".txt") + PARQUET_SUFFIXES


def curves_table(result: EvaluationResult) -> dict[str, np.ndarray]:
    """The per-row curves of ``result`` as the table's columns (see
    :meth:`~opis_cli.results.EvaluationResult.curves_table`)."""
    return result.curves_table()


def write_curves(path: str | os.PathLike[str], result: EvaluationResult) -> None:
    """Write :func:`curves_table` of ``result`` atomically, Parquet or CSV by suffix.

    ``opis evaluate --curves`` stages the same table with the run's other
    outputs (:meth:`opis_cli.io.output.Staged.table`).
    """
    from .output import staged

    with staged() as stage:
        stage.table(path, curves_table(result))


def read_curves(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a per-class curves table written by ``opis evaluate --curves``.

    Parameters
    ----------
    path : str or os.PathLike
        ``.parquet``/``.pq`` or ``.csv`` (as written by the ``--curves``
        option: one row per class (and group) and threshold).

    Returns
    -------
    dict of str to numpy.ndarray
        Every column of the table. ``level`` and ``label`` are object arrays
        of ``str`` (a CSV label such as ``007`` stays ``"007"``); the numeric
        columns (``threshold_index``, ``threshold``, ``utility``, and
        ``tp``, ``fp``, ``positives``, ``negatives``, ``tpr``, ``far`` when
        present) are int64 or float64.

    Raises
    ------
    InputError
        Missing file, unknown type, unreadable table, a missing or
        non-numeric column, or an empty cell in a required column.
    """
    path_str = os.fspath(path)
    check_suffix(path_str, READ_SUFFIXES, "curves table", allow_dir=False)
    if suffix(path_str) in PARQUET_SUFFIXES:
        with arrow_errors(path_str, "not a Parquet file or corrupt"):
            table = pq.read_table(path_str)
    else:
        import pyarrow.csv as pacsv

        with arrow_errors(path_str, "not a readable CSV file"):
            table = pacsv.read_csv(
                path_str,
                # a label may hold a newline: the writer quotes it, the reader must accept it
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={"level": pa.string(), "label": pa.string()},
                    strings_can_be_null=False,
                ),
            )
    names = list(table.column_names)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputError(
            f"{path_str}: no column '{missing[0]}'; columns are: {list_names(names) or 'none'} "
            "(expected the table written by opis evaluate --curves)"
        )
    out: dict[str, np.ndarray] = {}
    for name in names:
        col = table.column(name)
        if name in ("level", "label"):
            out[name] = strings_from_arrow(col, path_str, name, 0)
            continue
        if col.null_count and name in REQUIRED:
            bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{path_str}: column '{name}' row {bad} is empty; expected a number")
        t = col.type
        if pa.types.is_integer(t) and not col.null_count:
            out[name] = col.to_numpy().astype(np.int64, copy=False)
        elif pa.types.is_integer(t) or pa.types.is_floating(t):
            out[name] = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        elif name in REQUIRED:
            raise InputError(f"{path_str}: column '{name}' has type {t}; expected numbers")
    return out


def curves_from_table(table: Mapping[str, np.ndarray], result: EvaluationResult, *,
                      level: str = "class", source: str = "curves table") -> Curves | None:
    """Per-row curves of one level from a ``--curves`` table, checked against ``result``.

    Parameters
    ----------
    table : mapping of str to numpy.ndarray
        Columns as made by :func:`curves_table` (and read back by
        :func:`read_curves`): the :data:`REQUIRED` ones, and optionally tp,
        fp, positives, negatives.
    result : EvaluationResult
        The result the curves belong to.
    level : {"class", "group"}
    source : str
        How to name the table in error messages (its path).

    Returns
    -------
    Curves or None
        One row per evaluated row of ``level``, in ``per_class`` order; None
        when the table has no rows of that level (or the result no such
        block). Missing optional columns become NaN.

    Raises
    ------
    InputError
        The table does not belong to ``result``: unknown or missing labels,
        a wrong number of rows per label, or other thresholds.
    """
    block: ConsistencyBlock | None = result.classes if level == "class" else result.groups
    missing = [c for c in REQUIRED if c not in table]
    if missing:
        raise InputError(f"{source}: no column {missing[0]!r}; expected the table written by "
                         "`opis evaluate --curves` (columns " + ", ".join(REQUIRED) + ", ...)")
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


def fairness_from_table(table: Mapping[str, np.ndarray], result: EvaluationResult, *,
                        level: str = "class", source: str = "curves table"
                        ) -> dict[str, np.ndarray] | None:
    """FDR and GARBE per threshold of one block from a ``--curves`` table.

    Parameters
    ----------
    table : mapping of str to numpy.ndarray
        Columns as made by :func:`curves_table` (or read by :func:`read_curves`).
    result : EvaluationResult
        The result the table belongs to (its grid).
    level : {"class", "group"}
        The block; its rows have level ``class-fairness``/``group-fairness``.
    source : str
        How to name the table in error messages.

    Returns
    -------
    dict or None
        ``{"fdr": (K,), "garbe": (K,)}`` float64 in grid order (``garbe``
        NaN where null); None when the table has no such rows (one written
        before them, or a block without fairness).

    Raises
    ------
    InputError
        The rows do not cover the result's K thresholds exactly once each.
    """
    if "fdr" not in table or "garbe" not in table:
        return None
    rows = np.flatnonzero(np.asarray(table["level"]).astype(str) == FAIRNESS_LEVELS[level])
    if rows.size == 0:
        return None
    K = len(result.thresholds)
    ti = np.asarray(table["threshold_index"], dtype=np.float64)[rows]
    if (ti.size != K or np.any((ti < 0) | (ti >= K) | (ti != np.floor(ti)))
            or np.unique(ti).size != K):
        raise InputError(f"{source}: the {FAIRNESS_LEVELS[level]} rows do not hold each of the "
                         f"result's {K} threshold indices once; the curves come from a "
                         "different run")
    order = ti.astype(np.int64)
    out = {}
    for name in ("fdr", "garbe"):
        v = np.full(K, np.nan)
        v[order] = np.asarray(table[name], dtype=np.float64)[rows]
        out[name] = v
    return out
