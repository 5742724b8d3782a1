"""``read_dataset``: embeddings, labels and per-row flags from any supported input.

Owns :class:`Dataset`, :class:`SourceFile` and the steps around the format
readers: check the paths, detect the input's kind, dispatch to its reader
(:data:`_FORMATS`), attach a separate labels file, and record the sha256 of
every file read for provenance.

Adding a format is one module with a reader that returns
:class:`~opis_cli.io._columns.Columns` (see that module), plus its entry in
:data:`_FORMATS` (and its name in :func:`_input_kind`'s message).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from opis_cli.errors import InputError

from ..options import INPUT_FORMATS
from . import arrays, faiss_index, hdf5, hf, lance_dataset, parquet, tensors
from ._columns import Columns, ColumnSpec, MemoryCheck, ProgressCallback
from ._files import PARQUET_SUFFIXES, check_exists, check_suffix, suffix
from .labels import LABEL_SUFFIXES, label_files, read_labels

__all__ = ["Dataset", "SourceFile", "read_dataset"]

_HASH_CHUNK = 1 << 20  # 1 MiB


@dataclass(frozen=True)
class SourceFile:
    """One file that was read, for provenance.

    Attributes
    ----------
    path : str
        The path as given (for a directory input, the directory joined with
        the file name).
    sha256 : str
        Hex digest of the file's bytes.
    size_bytes : int
        File size in bytes.
    """

    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Dataset:
    """Embeddings with their labels and optional per-row columns.

    Attributes
    ----------
    embeddings : numpy.ndarray, shape (N, D)
        float16, float32 or float64 as stored (integer inputs become
        float32). For ``.npy`` (unless read with ``owned=True``),
        safetensors and contiguous HDF5 input this is a read-only
        ``numpy.memmap``.
    labels : numpy.ndarray, shape (N,), dtype object
        Python ``str`` labels; SPEC section 1 compares labels as strings.
    groups : numpy.ndarray of str (object dtype), shape (N,), or None
        The group of each row, only when a group column was asked for.
    is_query : numpy.ndarray of bool, shape (N,), or None
        None means every row is a query.
    is_gallery : numpy.ndarray of bool, shape (N,), or None
        None means every row is in the gallery.
    sources : tuple of SourceFile
        Every file read, in reading order (inputs first, then labels).
    """

    embeddings: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    is_query: np.ndarray | None
    is_gallery: np.ndarray | None
    sources: tuple[SourceFile, ...]

    @property
    def n_samples(self) -> int:
        """Number of rows ``N``."""
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return int(self.embeddings.shape[1])


@dataclass(frozen=True)
class _Format:
    """How ``read_dataset`` uses one format reader.

    Attributes
    ----------
    suffixes : tuple of str
        The file suffixes of the format (lower case, with the dot).
    read : callable
        ``read(path, spec, *, progress, memory_check) -> Columns``.
    reports_progress : bool
        The reader calls ``progress`` itself; otherwise ``read_dataset`` calls
        it once at the end.
    arrow_buffers : bool
        Reading goes through Arrow buffers as large as the matrix (the
        memory model's ``parquet`` term).
    options : tuple of str
        The format's own options (:data:`_FORMAT_OPTIONS` keys) it reads;
        giving another format's option is an error.
    maps : bool
        The reader memory-maps the embeddings unless called with
        ``owned=True`` (``read_dataset(..., owned=True)``).
    """

    suffixes: tuple[str, ...]
    read: Callable[..., Columns]
    reports_progress: bool
    arrow_buffers: bool
    options: tuple[str, ...] = ()
    maps: bool = False


#: The input formats (their names are ``opis_cli.options.INPUT_FORMATS``, the
#: choices of ``--format``); a directory is a Hugging Face dataset, a Lance
#: dataset or a folder of Parquet files (see :func:`_input_kind`).
_FORMATS: dict[str, _Format] = {
    "parquet": _Format(PARQUET_SUFFIXES, parquet.read, reports_progress=True,
                       arrow_buffers=True),
    "npy": _Format((".npy",), arrays.read_npy, reports_progress=False, arrow_buffers=False,
                   maps=True),
    "npz": _Format((".npz",), arrays.read_npz, reports_progress=False, arrow_buffers=False),
    "hf": _Format((".arrow",), hf.read, reports_progress=True, arrow_buffers=False,
                  options=("hf_split",)),
    "lance": _Format((".lance",), lance_dataset.read, reports_progress=True,
                     arrow_buffers=False),
    "safetensors": _Format((".safetensors",), tensors.read_safetensors, reports_progress=False,
                           arrow_buffers=False, options=("tensor_key", "tensor_labels_key")),
    "pt": _Format((".pt", ".pth"), tensors.read_pt, reports_progress=False,
                  arrow_buffers=False, options=("tensor_key", "tensor_labels_key")),
    "hdf5": _Format((".h5", ".hdf5"), hdf5.read, reports_progress=False, arrow_buffers=False,
                    options=("dataset_key", "dataset_labels_key")),
    "faiss": _Format((".faiss", ".index"), faiss_index.read, reports_progress=False,
                     arrow_buffers=False),
}
assert tuple(_FORMATS) == INPUT_FORMATS

#: The format-specific options: ``read_dataset`` keyword -> command-line option.
_FORMAT_OPTIONS = {
    "hf_split": "--hf-split",
    "tensor_key": "--tensor-key",
    "tensor_labels_key": "--tensor-labels-key",
    "dataset_key": "--dataset-key",
    "dataset_labels_key": "--dataset-labels-key",
}


def read_dataset(
    path: str | os.PathLike[str],
    *,
    labels_path: str | os.PathLike[str] | None = None,
    embedding_column: str = "embedding",
    embedding_columns: str | None = None,
    label_column: str = "label",
    group_column: str | None = None,
    query_column: str | None = None,
    gallery_column: str | None = None,
    progress: ProgressCallback | None = None,
    check_memory_fits: bool = True,
    memory_available: int | None = None,
    format: str | None = None,
    hf_split: str | None = None,
    tensor_key: str | None = None,
    tensor_labels_key: str | None = None,
    dataset_key: str | None = None,
    dataset_labels_key: str | None = None,
    owned: bool = False,
) -> Dataset:
    """Read a dataset of embeddings and labels.

    Parameters
    ----------
    path : str or os.PathLike
        A Parquet file (``.parquet``/``.pq``), a directory whose ``*.parquet``
        files are read in name order as one dataset, a ``.npy`` file
        (memory-mapped), a ``.npz`` file, a Hugging Face dataset folder
        (``save_to_disk``) or ``.arrow`` file, a Lance dataset (``.lance``
        folder), a ``.safetensors`` or PyTorch ``.pt``/``.pth`` tensor file,
        an HDF5 file (``.h5``/``.hdf5``) or a FAISS index (``.faiss``/
        ``.index``). The formats after ``.npz`` need optional libraries
        (docs/how-to/input-formats.md).
    labels_path : str or os.PathLike, optional
        Labels in a separate file: ``.npy`` (1-D array), ``.txt`` (one label
        per line), ``.csv`` or Parquet (column ``label_column``). Required for
        ``.npy`` input and for ``.npz`` input without a ``labels`` array. When
        given, it takes precedence over labels stored with the embeddings.
    embedding_column : str, default "embedding"
        Parquet column holding one list (list, large_list or fixed_size_list)
        of numbers per row.
    embedding_columns : str, optional
        An ``fnmatch`` pattern (e.g. ``"emb_*"``) selecting one numeric scalar
        column per dimension, kept in file order. Columns used as label,
        group, query or gallery columns are never matched. Overrides
        ``embedding_column``.
    label_column : str, default "label"
        Label column (any type; converted to ``str``).
    group_column : str, optional
        Column (or ``.npz`` array) with each row's group; read only if given.
    query_column, gallery_column : str, optional
        Boolean (or 0/1 integer) columns marking query and gallery rows.
        When not given, columns (or ``.npz`` arrays) literally named
        ``is_query`` / ``is_gallery`` are used if present.
    progress : callable, optional
        Called as ``progress(rows_done, rows_total)`` after each Parquet row
        group (once at the end for NumPy inputs).
    check_memory_fits : bool, default True
        Before the embeddings are read (Parquet, .npy) or right after
        (.npz), compare :func:`opis_cli.memory.memory_needed` for their shape with
        ``memory_available`` and raise ``InputError`` if it will not fit.
    memory_available : int, optional
        Bytes available; default :func:`opis_cli.memory.available_memory` (the check is
        skipped when that is unknown).
    format : str, optional
        One of ``opis_cli.options.INPUT_FORMATS``: read ``path`` as this
        format whatever its name (default: detected from the path).
    hf_split : str, optional
        The split of a Hugging Face ``DatasetDict`` folder (required when it
        has several).
    tensor_key, tensor_labels_key : str, optional
        The embeddings tensor (default: the only 2-D float tensor) and the
        labels tensor (default: ``labels``) of a safetensors or PyTorch file.
    dataset_key, dataset_labels_key : str, optional
        The same for the datasets of an HDF5 file (paths such as ``val/emb``).
    owned : bool, default False
        Read a float32 ``.npy`` file into one writeable array of its own
        instead of memory-mapping it. The embeddings are then, for ``.npy``,
        Parquet, ``.npz``, Hugging Face and Lance input, a fresh writeable
        C-contiguous array (float32 when stored as float32 or integers) that
        nothing else refers to, which the caller may hand over to
        ``opis_cli.evaluate(..., copy=False)`` (the CLI does, so that the
        rows are held once); the memory check then counts that array as the
        float32 rows of the run, not as a copy beside them.

    Returns
    -------
    Dataset

    Raises
    ------
    InputError
        One line naming the file (and column/row) and what was expected:
        missing or unreadable file, unknown file type, corrupt file, missing
        or mistyped column, nulls, ragged embedding rows, label count
        mismatch, empty dataset, embeddings not 2-D.
    """
    path_str = os.fspath(path)
    label_str = os.fspath(labels_path) if labels_path is not None else None
    if label_str is not None:
        check_suffix(label_str, LABEL_SUFFIXES, "labels file", allow_dir=True)

    kind = _input_kind(path_str, format)
    fmt = _FORMATS[kind]
    own = {"hf_split": hf_split, "tensor_key": tensor_key,
           "tensor_labels_key": tensor_labels_key, "dataset_key": dataset_key,
           "dataset_labels_key": dataset_labels_key}
    for name, value in own.items():
        if value is not None and name not in fmt.options:
            takers = [k for k, f in _FORMATS.items() if name in f.options]
            raise InputError(f"{path_str}: {_FORMAT_OPTIONS[name]} applies to "
                             f"{' and '.join(takers)} input; this input is {kind}")
    spec = ColumnSpec(
        embedding_column=embedding_column,
        embedding_pattern=embedding_columns,
        label_column=None if label_str is not None else label_column,
        group_column=group_column,
        query_column=query_column,
        gallery_column=gallery_column,
        **own,
    )
    memory_check = _memory_check(path_str, available=memory_available,
                                 arrow_buffers=fmt.arrow_buffers,
                                 groups=group_column is not None,
                                 owned=owned) if check_memory_fits else None
    extra = {"owned": True} if owned and fmt.maps else {}
    cols = fmt.read(path_str, spec, progress=progress, memory_check=memory_check, **extra)

    n = cols.embeddings.shape[0]
    labels = cols.labels
    if label_str is not None:
        labels = read_labels(label_str, label_column)
        if labels.shape[0] != n:
            raise InputError(f"{label_str}: {labels.shape[0]} labels for {n} embeddings")
    elif labels is None:
        raise InputError(
            f"{path_str}: this file holds no labels; --labels FILE is required "
            "(a .npy, .txt, .csv or .parquet file with one label per embedding)"
        )

    if progress is not None and not fmt.reports_progress:
        progress(n, n)

    sources = [_source_file(f) for f in cols.files]
    if label_str is not None:
        sources.extend(_source_file(f) for f in label_files(label_str))

    return Dataset(
        embeddings=cols.embeddings,
        labels=labels,
        groups=cols.groups,
        is_query=cols.is_query,
        is_gallery=cols.is_gallery,
        sources=tuple(sources),
    )


def _input_kind(path: str, forced: str | None = None) -> str:
    """The key of ``path``'s reader in :data:`_FORMATS`: ``forced``, else from the path.

    A directory is a Hugging Face dataset when it holds ``dataset_dict.json``
    or ``dataset_info.json`` and ``state.json``, a Lance dataset when it is
    named ``*.lance`` or holds ``_versions``, else a folder of Parquet files;
    a file is known by its suffix.
    """
    check_exists(path)
    if forced is not None:
        if forced not in _FORMATS:
            raise InputError(f"{path}: unknown format '{forced}'; expected one of "
                             + ", ".join(_FORMATS))
        return forced
    if os.path.isdir(path):
        if hf.is_dataset_folder(path):
            return "hf"
        if lance_dataset.is_lance_folder(path):
            return "lance"
        return "parquet"
    ext = suffix(path)
    for kind, fmt in _FORMATS.items():
        if ext in fmt.suffixes and kind != "lance":
            return kind
    shown = ext or "(none)"
    raise InputError(
        f"{path}: unknown input file type '{shown}'; expected .parquet (or a folder of them), "
        ".npy, .npz, a Hugging Face dataset folder or .arrow, a .lance folder, .safetensors, "
        ".pt/.pth, .h5/.hdf5 or .faiss/.index (or name the format with --format)"
    )


def _memory_check(where: str, *, available: int | None, arrow_buffers: bool,
                  groups: bool, owned: bool = False) -> MemoryCheck:
    """The readers' ``memory_check``: the memory model's verdict for the shape read.

    The memory model (``opis_cli.memory``, no numba) is imported on first
    use. When ``available`` is None the system's available memory
    is asked for, and the check is skipped if that is unknown. With
    ``owned``, float32 embeddings as read are handed over and become the
    float32 rows the model counts, so they cost nothing more as stored.
    """

    def check(rows: int, dim: int, stored_itemsize: int) -> None:
        from ..memory import available_memory, check_memory  # no numba

        if owned and stored_itemsize == 4:
            stored_itemsize = 0
        avail = available if available is not None else available_memory()
        if avail is not None:
            check_memory(where, rows, dim, available=avail, stored_itemsize=stored_itemsize,
                         parquet=arrow_buffers, groups=groups)

    return check


def _source_file(path: str) -> SourceFile:
    """Hash and size of one file read."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InputError(f"{path}: not readable ({exc.strerror or exc})") from exc
    return SourceFile(path=path, sha256=digest.hexdigest(), size_bytes=size)
