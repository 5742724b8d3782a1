"""The Hugging Face ``datasets`` reader: a ``save_to_disk`` folder, or its ``.arrow`` files.

A ``Dataset`` folder (``dataset_info.json`` + ``state.json`` + ``*.arrow``)
or a single ``.arrow`` file is read as one table; a ``DatasetDict`` folder
(``dataset_dict.json``) is read one split at a time, chosen with
``--hf-split`` (the option is not ``--split``: that name belongs to the fold
option of another command). The columns are read with the Parquet reader's
rules (:func:`~opis_cli.io.parquet.read_arrow`), from the memory-mapped Arrow
files that ``datasets`` opens; a ``ClassLabel`` label or group column is read
as its class names.

``datasets`` is an optional dependency (the ``hf`` extra), imported when a
file is read.
"""

from __future__ import annotations

import os

import pyarrow as pa

from opis_cli.errors import InputError

from ._columns import Columns, ColumnSpec, MemoryCheck, ProgressCallback
from ._files import list_names, one_line, require
from .parquet import read_arrow

__all__ = ["read", "is_dataset_folder", "DICT_FILE"]

#: The file marking a ``DatasetDict`` folder, and those marking a ``Dataset`` folder.
DICT_FILE = "dataset_dict.json"
DATASET_FILES = ("dataset_info.json", "state.json")

_BATCH_ROWS = 65536
_EXTRA = "hf"


def is_dataset_folder(path: str) -> bool:
    """Whether ``path`` is a folder written by ``Dataset(Dict).save_to_disk``."""
    return os.path.isdir(path) and (
        os.path.isfile(os.path.join(path, DICT_FILE))
        or all(os.path.isfile(os.path.join(path, f)) for f in DATASET_FILES))


def read(
    path: str,
    spec: ColumnSpec,
    *,
    progress: ProgressCallback | None = None,
    memory_check: MemoryCheck | None = None,
) -> Columns:
    """Read a ``save_to_disk`` folder or a ``.arrow`` file (the format reader of ``read_dataset``).

    Raises
    ------
    InputError
        ``datasets`` not installed; not a dataset; a ``DatasetDict`` with
        several splits and no ``hf_split`` option, or an unknown split; the
        column errors of the Parquet reader.
    """
    datasets = require("datasets", path, "a Hugging Face dataset", _EXTRA)
    ds, folder, marker = _open(datasets, path, spec.option("hf_split"))
    files = [marker] if marker else []
    files += _folder_files(folder) if folder else [path]
    names = _class_names(datasets, ds, spec)

    def batches(columns: list[str]):
        view = ds.select_columns(columns).with_format("arrow")
        for tbl in view.iter(batch_size=_BATCH_ROWS):
            yield _decode_class_labels(tbl, names)

    try:
        return read_arrow(path, ds.data.schema, ds.num_rows, batches, spec, files=files,
                          progress=progress, memory_check=memory_check)
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # any failure of the library while reading is the file's
        raise InputError(f"{path}: cannot read the dataset's data ({one_line(exc)})") from exc


def _open(datasets, path: str, split: str | None):
    """``(dataset, folder of its files or None, dataset_dict.json or None)``."""
    try:
        if not os.path.isdir(path):
            if split is not None:
                raise InputError(f"{path}: --hf-split needs a DatasetDict folder; this is one "
                                 ".arrow file")
            return datasets.Dataset.from_file(path), None, None
        loaded = datasets.load_from_disk(path)
    except InputError:
        raise
    except Exception as exc:  # datasets raises many types for a broken folder or file
        raise InputError(
            f"{path}: not a Hugging Face dataset saved with save_to_disk ({one_line(exc)})"
        ) from exc
    if isinstance(loaded, datasets.Dataset):
        if split is not None:
            raise InputError(f"{path}: --hf-split '{split}' given, but this folder holds one "
                             "Dataset, not a DatasetDict with splits")
        return loaded, path, None
    splits = list(loaded.keys())
    if split is None:
        if len(splits) != 1:
            raise InputError(f"{path}: a DatasetDict with splits {list_names(splits) or 'none'}; "
                             "choose one with --hf-split NAME")
        split = splits[0]
    elif split not in splits:
        raise InputError(f"{path}: no split '{split}'; splits are: {list_names(splits)} "
                         "(check --hf-split)")
    return loaded[split], os.path.join(path, split), os.path.join(path, DICT_FILE)


def _folder_files(folder: str) -> list[str]:
    """The regular files of one dataset folder, by name (its Arrow and JSON files)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise InputError(f"{folder}: cannot list directory ({exc.strerror or exc})") from exc
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def _class_names(datasets, ds, spec: ColumnSpec) -> dict[str, list[str]]:
    """Label and group columns of ``ClassLabel`` type -> their class names."""
    out = {}
    for col in (spec.label_column, spec.group_column):
        feature = ds.features.get(col) if col is not None else None
        if isinstance(feature, datasets.ClassLabel):
            out[col] = list(feature.names)
    return out


def _decode_class_labels(tbl: pa.Table, names: dict[str, list[str]]) -> pa.Table:
    """Class indices -> class names, as a dictionary column (read as strings)."""
    for col, classes in names.items():
        i = tbl.schema.get_field_index(col)
        if i < 0:
            continue
        dictionary = pa.array(classes, type=pa.string())
        chunks = [pa.DictionaryArray.from_arrays(chunk.cast(pa.int32()), dictionary)
                  for chunk in tbl.column(i).chunks]
        tbl = tbl.set_column(i, col, pa.chunked_array(chunks, type=pa.dictionary(
            pa.int32(), pa.string())))
    return tbl

