"""Reading inputs and saved results, and writing outputs: the only package that opens files.

Modules
-------
dataset
    :func:`read_dataset`, :class:`ReadOptions`, :class:`Dataset`,
    :class:`SourceFile`: check the paths, detect the input's format, dispatch
    to the format reader, attach a separate labels file, record a sha256 of
    every file read.
formats
    Every input format declared once (name, suffixes, options, help, reader):
    what ``read_dataset`` dispatches on and the command line's ``--format``
    and format options are built from.
parquet
    The Parquet reader (a file, or a directory of ``*.parquet`` files).
arrays
    The NumPy readers: ``.npy`` (memory-mapped) and ``.npz``.
hf, lance_dataset, tensors, hdf5, faiss_index
    The readers of a Hugging Face ``save_to_disk`` folder or ``.arrow`` file,
    a Lance dataset, safetensors and PyTorch tensor files, HDF5 files and
    FAISS index files; each imports its optional library only when it reads
    (``_files.require`` names the pip extra when it is missing).
labels
    Separate labels files: ``.npy``, ``.txt``, ``.csv``, Parquet.
_columns
    The contract of a format reader (:class:`~._columns.ColumnSpec` in,
    :class:`~._columns.Columns` out) and the Arrow/NumPy column conversions
    and checks every reader shares. A new format is one new module with a
    reader of that shape, declared in ``formats``.
_named
    Columns from a file of named arrays (tensor files, HDF5): which array is
    the embeddings, the labels, the group and the flags.
_files
    Path and suffix checks, pyarrow/OS errors as one-line messages, the
    import of a format's optional library.
curves
    The per-class curves table (``--curves``): columns, writing, reading,
    conversion back to :class:`~opis_cli.results.Curves`.
saved
    :func:`read_result`: a result JSON written by ``opis evaluate --json``.
output
    Atomic, staged output files.

Every problem with an input raises :class:`~opis_cli.errors.InputError` with
a one-line message naming the file (and column and row where there is one) and
what was expected. Row numbers in messages are 0-based and count rows within
the named file. Only the shape and type of the data are checked here; value
checks (NaN or infinite entries, zero vectors) belong to later stages.

Importing this package loads nothing heavy: the public names load their
modules (numpy and pyarrow, never numba, faiss or the CLI and plotting
libraries) on first use (the memory model, ``opis_cli.memory``, is imported
when the first check runs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["Dataset", "ReadOptions", "SourceFile", "read_dataset", "read_curves", "read_result",
           "curves_table", "curves_from_table", "fairness_from_table", "write_curves",
           "ProgressCallback"]

if TYPE_CHECKING:  # pragma: no cover
    from ._columns import ProgressCallback
    from .curves import (curves_from_table, curves_table, fairness_from_table, read_curves,
                         write_curves)
    from .dataset import Dataset, ReadOptions, SourceFile, read_dataset
    from .saved import read_result

#: public name -> its module; loaded on first use, so that ``opis_cli.io.output``
#: (the CLI's output checks) and ``opis_cli.io._files`` load no numpy or pyarrow
_LAZY = {"ProgressCallback": "._columns", "Dataset": ".dataset", "ReadOptions": ".dataset",
         "SourceFile": ".dataset",
         "read_dataset": ".dataset", "read_result": ".saved", "read_curves": ".curves",
         "curves_table": ".curves", "curves_from_table": ".curves",
         "fairness_from_table": ".curves", "write_curves": ".curves"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
