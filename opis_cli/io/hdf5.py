"""The HDF5 reader (``.h5``/``.hdf5``), through ``h5py``.

The file's datasets (at any depth, named by their path such as
``val/embeddings``) are the named arrays of :mod:`opis_cli.io._named`: the
embeddings are ``--dataset-key`` (or the only 2-D float dataset), the labels
``--dataset-labels-key`` (or ``labels``) unless ``--labels FILE`` is given.
String datasets are read as text.

A contiguous, uncompressed embeddings dataset (h5py's default layout) is
memory-mapped at its offset in the file; a chunked or compressed one is read
into memory.

``h5py`` is an optional dependency (the ``hdf5`` extra), imported when a file
is read.
"""

from __future__ import annotations

import numpy as np

from opis_cli.errors import InputError

from ._columns import Columns, ColumnSpec, MemoryCheck, ProgressCallback
from ._files import one_line, require
from ._named import ArrayInfo, Naming, columns_from_named

__all__ = ["read"]


def read(
    path: str,
    spec: ColumnSpec,
    *,
    progress: ProgressCallback | None = None,
    memory_check: MemoryCheck | None = None,
) -> Columns:
    """Read an HDF5 file (the format reader of ``read_dataset``).

    Raises
    ------
    InputError
        ``h5py`` not installed; not an HDF5 file; the errors of
        :func:`~opis_cli.io._named.columns_from_named`.
    """
    h5py = require("h5py", path, "an HDF5 file", "hdf5")
    try:
        handle = h5py.File(path, "r")
    except Exception as exc:  # OSError for a file that is not HDF5
        raise InputError(f"{path}: not a valid HDF5 file ({one_line(exc)})") from exc
    with handle as f:
        datasets: dict = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                datasets[name] = obj

        try:
            f.visititems(visit)
        except Exception as exc:  # a corrupt group structure
            raise InputError(f"{path}: cannot list the HDF5 datasets ({one_line(exc)})") from exc
        arrays = {k: ArrayInfo(tuple(d.shape), str(d.dtype), d.dtype.kind == "f",
                               d.dtype.itemsize) for k, d in datasets.items()}
        def mappable(name: str) -> bool:
            d = datasets[name]
            return (d.ndim == 2 and d.chunks is None and d.compression is None and d.size > 0
                    and d.dtype.kind in "fiu" and d.id.get_offset() is not None)

        def load(name: str) -> np.ndarray:
            d = datasets[name]
            try:
                if h5py.check_string_dtype(d.dtype) is not None:
                    return np.asarray(d.asstr()[()], dtype=str)
                if mappable(name):
                    return np.memmap(path, dtype=d.dtype, mode="r", offset=d.id.get_offset(),
                                     shape=d.shape)
                return np.asarray(d[()])
            except Exception as exc:  # h5py raises OSError/TypeError for unreadable data
                raise InputError(f"{path}: cannot read dataset '{name}' "
                                 f"({one_line(exc)})") from exc

        naming = Naming("dataset", "datasets", "--dataset-key", "--dataset-labels-key",
                        spec.option("dataset_key"), spec.option("dataset_labels_key"))
        return columns_from_named(path, arrays, load, spec, naming, mapped=mappable,
                                  memory_check=memory_check)
