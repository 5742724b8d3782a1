"""The NumPy readers: ``.npy`` (memory-mapped or owned embeddings) and ``.npz`` (named arrays).

A ``.npy`` file holds only the embeddings; the labels come from a separate
labels file. A ``.npz`` file holds an ``embeddings`` array (or exactly one
array besides the known ones), optionally ``labels``, a group array and the
``is_query``/``is_gallery`` flags.
"""

from __future__ import annotations

import zipfile

import numpy as np

from opis_cli.errors import InputError

from ._columns import (
    AUTO_GALLERY,
    AUTO_QUERY,
    Columns,
    ColumnSpec,
    MemoryCheck,
    ProgressCallback,
    check_embeddings,
    flags_from_numpy,
    strings_from_numpy,
)
from ._files import list_names, one_line

__all__ = ["read_npy", "read_npz"]

NPZ_EMBEDDINGS = "embeddings"
NPZ_LABELS = "labels"



def read_npy(
    path: str,
    spec: ColumnSpec,
    *,
    progress: ProgressCallback | None = None,
    memory_check: MemoryCheck | None = None,
    owned: bool = False,
) -> Columns:
    """Memory-map the embeddings of a ``.npy`` file, or read them into a buffer of their own.

    ``progress`` is not called (``read_dataset`` reports once at the end).
    ``memory_check`` gets a stored itemsize of 0 for a memory map, since the
    file's pages are cache the system can drop, and 4 for an owned read.

    With ``owned``, a C-ordered float32 array is read straight into one
    freshly allocated, writeable, C-contiguous array (chunk by chunk, no
    second copy) that the caller may hand over to ``opis_cli.evaluate(...,
    copy=False)``; other dtypes stay memory-mapped (``prepare()`` makes the
    float32 copy the engines need, so reading them first would only add one),
    and integers become an owned float32 array as always.

    Raises
    ------
    InputError
        Group, query or gallery columns asked for; not a valid ``.npy``; not a
        2-D numeric array with rows and dimensions.
    """
    if spec.group_column or spec.query_column or spec.gallery_column:
        raise InputError(
            f"{path}: a .npy file holds only embeddings; group, query and "
            "gallery columns need Parquet or .npz input"
        )
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a valid .npy array of numbers ({one_line(exc)})") from exc
    # integers become float32 in memory; as a plain array (astype of a map
    # would be a memmap object mapping nothing) when it is to be handed over
    as_read = arr.view(np.ndarray) if owned and arr.dtype.kind in "iu" else arr
    embeddings = check_embeddings(as_read, path, "embeddings")
    direct = (owned and isinstance(arr, np.memmap) and arr.dtype == np.dtype(np.float32)
              and arr.flags.c_contiguous)
    if memory_check is not None:
        memory_check(embeddings.shape[0], embeddings.shape[1], 4 if direct else 0)
    if direct:
        rows, dim, offset = embeddings.shape[0], embeddings.shape[1], arr.offset
        del arr, embeddings  # the bytes are read below; the map is closed
        embeddings = _read_float32(path, offset, rows, dim)
    return Columns(embeddings=embeddings, labels=None, groups=None, is_query=None,
                   is_gallery=None, files=(path,))


def _read_float32(path: str, offset: int, rows: int, dim: int) -> np.ndarray:
    """The ``rows x dim`` native-order float32 values at byte ``offset`` of
    ``path``, read straight into one new C-contiguous, writeable array."""
    count = rows * dim
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            flat = np.fromfile(fh, dtype=np.float32, count=count)
    except OSError as exc:
        raise InputError(f"{path}: not readable ({exc.strerror or exc})") from exc
    if flat.size != count:
        raise InputError(f"{path}: the file holds {flat.size} of the {count} values its header "
                         "announces (truncated .npy?)")
    return flat.reshape(rows, dim)


def read_npz(
    path: str,
    spec: ColumnSpec,
    *,
    progress: ProgressCallback | None = None,
    memory_check: MemoryCheck | None = None,
) -> Columns:
    """Read the arrays of a ``.npz`` file.

    The embeddings are the array ``embeddings``, or else the only array that
    is not ``labels``, a flag or a named column. Labels (the array
    ``labels``) are read only when ``spec.label_column`` is not None (no
    separate labels file); the array name does not follow ``label_column``.
    ``memory_check`` runs after loading (a ``.npz`` cannot be mapped).

    Raises
    ------
    InputError
        Not a valid ``.npz``; no embeddings array; a missing labels, group or
        flag array; an array of the wrong shape or type.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            emb_name = _embeddings_name(path, names, spec)
            embeddings = check_embeddings(z[emb_name], path, f"array '{emb_name}'")
            n = embeddings.shape[0]

            def column(name: str, required: bool) -> np.ndarray | None:
                if name not in names:
                    if required:
                        raise InputError(
                            f"{path}: no array '{name}'; arrays are: {list_names(names)}")
                    return None
                arr = z[name]
                if arr.ndim != 1 or arr.shape[0] != n:
                    raise InputError(
                        f"{path}: array '{name}' has shape {arr.shape}; "
                        f"expected ({n},), one value per embedding"
                    )
                return arr

            labels = None
            if spec.label_column is not None:
                raw = column(NPZ_LABELS, required=False)
                if raw is None:
                    raise InputError(
                        f"{path}: no 'labels' array (arrays are: {list_names(names)}); "
                        "--labels FILE is required"
                    )
                labels = strings_from_numpy(raw, path, "array 'labels'")
            groups = None
            if spec.group_column is not None:
                raw = column(spec.group_column, required=True)
                groups = strings_from_numpy(raw, path, f"array '{spec.group_column}'")
            flags: list[np.ndarray | None] = []
            for given, auto in ((spec.query_column, AUTO_QUERY),
                                (spec.gallery_column, AUTO_GALLERY)):
                name = given if given is not None else auto
                raw = column(name, required=given is not None)
                flags.append(
                    None if raw is None else flags_from_numpy(raw, path, f"array '{name}'")
                )
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a valid .npz file of arrays ({one_line(exc)})") from exc
    if memory_check is not None:
        memory_check(embeddings.shape[0], embeddings.shape[1], embeddings.itemsize)
    return Columns(embeddings=embeddings, labels=labels, groups=groups, is_query=flags[0],
                   is_gallery=flags[1], files=(path,))


def _embeddings_name(path: str, names: list[str], spec: ColumnSpec) -> str:
    """``embeddings``, or the one array that is not labels, a flag or a named column."""
    if NPZ_EMBEDDINGS in names:
        return NPZ_EMBEDDINGS
    not_embeddings = {NPZ_LABELS, AUTO_QUERY, AUTO_GALLERY}
    not_embeddings |= {spec.group_column, spec.query_column, spec.gallery_column} - {None}
    others = [n for n in names if n not in not_embeddings]
    if len(others) != 1:
        raise InputError(
            f"{path}: no array named 'embeddings' and not exactly one other array; "
            f"arrays are: {list_names(names) or 'none'}"
        )
    return others[0]
