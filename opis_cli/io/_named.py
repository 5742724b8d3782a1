"""Columns from a file of named arrays: safetensors, PyTorch and HDF5 readers share this.

Such a file holds arrays by name (tensors, HDF5 datasets) rather than the
columns of a table. The embeddings are one 2-D array, named by an option
(``--tensor-key``, ``--dataset-key``) or else the only 2-D float array; the
labels another array, named by an option (``--tensor-labels-key``,
``--dataset-labels-key``) or else the array ``labels`` when there is one;
the group, query and gallery columns are arrays of those names, as for
``.npz`` input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from opis_cli.errors import InputError

from ._columns import (
    AUTO_GALLERY,
    AUTO_QUERY,
    Columns,
    ColumnSpec,
    MemoryCheck,
    check_embeddings,
    flags_from_numpy,
    strings_from_numpy,
)
from ._files import MAX_LISTED_NAMES

__all__ = ["ArrayInfo", "Naming", "columns_from_named"]

#: The labels array used when no option names one.
DEFAULT_LABELS = "labels"


@dataclass(frozen=True)
class ArrayInfo:
    """What the file says about one array before it is loaded.

    Attributes
    ----------
    shape : tuple of int
    dtype : str
        As the format names it (``float32``, ``F32``, ``torch.bfloat16``).
    is_float : bool
        A floating-point array (a candidate for the embeddings).
    itemsize : int
        Bytes per value (0 when unknown).
    """

    shape: tuple[int, ...]
    dtype: str
    is_float: bool
    itemsize: int


@dataclass(frozen=True)
class Naming:
    """How one format names its arrays, and the options that choose them.

    Attributes
    ----------
    noun, plural : str
        ``"tensor"``/``"tensors"``, ``"dataset"``/``"datasets"``.
    key_option, labels_option : str
        The options naming the embeddings and labels arrays.
    embedding_key, labels_key : str or None
        Their values.
    """

    noun: str
    plural: str
    key_option: str
    labels_option: str
    embedding_key: str | None
    labels_key: str | None


def columns_from_named(
    path: str,
    arrays: Mapping[str, ArrayInfo],
    load: Callable[[str], np.ndarray],
    spec: ColumnSpec,
    naming: Naming,
    *,
    mapped: Callable[[str], bool],
    memory_check: MemoryCheck | None,
) -> Columns:
    """Read the role arrays of one file of named arrays.

    Parameters
    ----------
    path : str
        The file, for messages and provenance.
    arrays : mapping of str to ArrayInfo
        Every array of the file, in file order.
    load : callable
        ``load(name)`` returns the array as NumPy (a memory map where the
        format allows); it may raise ``InputError``.
    spec : ColumnSpec
        Labels are read only when ``spec.label_column`` is not None (no
        separate labels file).
    naming : Naming
        The format's words and the options' values.
    mapped : callable
        ``mapped(name)``: whether ``load`` memory-maps that array (the memory
        check's stored itemsize is then 0).
    memory_check : callable, optional
        Called with the embeddings' shape before they are loaded.

    Raises
    ------
    InputError
        A missing array; no (or no single) 2-D float array when no key is
        given; an array of the wrong shape or type; no labels.
    """
    noun = naming.noun
    names = list(arrays)

    def listing() -> str:
        shown = [f"{n} {arrays[n].shape} {arrays[n].dtype}" for n in names[:MAX_LISTED_NAMES]]
        more = f", ... ({len(names)} in all)" if len(names) > MAX_LISTED_NAMES else ""
        return (", ".join(shown) + more) or "none"

    def need(name: str, option: str) -> str:
        if name not in arrays:
            raise InputError(f"{path}: no {noun} '{name}'; {naming.plural} are: {listing()} "
                             f"(check {option})")
        return name

    if naming.embedding_key is not None:
        emb_name = need(naming.embedding_key, naming.key_option)
    else:
        candidates = [n for n, a in arrays.items() if len(a.shape) == 2 and a.is_float]
        if len(candidates) != 1:
            found = "no 2-D float" if not candidates else f"{len(candidates)} 2-D float"
            raise InputError(f"{path}: {found} {naming.plural} to take as the embeddings; "
                             f"{naming.plural} are: {listing()} (use {naming.key_option} NAME)")
        emb_name = candidates[0]
    info = arrays[emb_name]
    what = f"{noun} '{emb_name}'"
    if len(info.shape) != 2:
        raise InputError(f"{path}: {what} has shape {info.shape}; expected a 2-D array "
                         "(rows x dimensions)")
    if memory_check is not None and min(info.shape) > 0:
        memory_check(info.shape[0], info.shape[1], 0 if mapped(emb_name) else info.itemsize)
    embeddings = check_embeddings(load(emb_name), path, what)
    n = embeddings.shape[0]

    def column(name: str) -> np.ndarray:
        arr = load(name)
        if arr.ndim != 1 or arr.shape[0] != n:
            raise InputError(f"{path}: {noun} '{name}' has shape {tuple(arr.shape)}; "
                             f"expected ({n},), one value per embedding")
        return arr

    labels = None
    if spec.label_column is not None:
        if naming.labels_key is not None:
            lab_name = need(naming.labels_key, naming.labels_option)
        elif DEFAULT_LABELS in arrays:
            lab_name = DEFAULT_LABELS
        else:
            raise InputError(f"{path}: no {noun} '{DEFAULT_LABELS}'; {naming.plural} are: "
                             f"{listing()} (name one with {naming.labels_option} NAME, or "
                             "give --labels FILE)")
        labels = strings_from_numpy(column(lab_name), path, f"{noun} '{lab_name}'")
    groups = None
    if spec.group_column is not None:
        name = need(spec.group_column, "--group-column")
        groups = strings_from_numpy(column(name), path, f"{noun} '{name}'")
    flags: list[np.ndarray | None] = []
    for given, auto, option in ((spec.query_column, AUTO_QUERY, "--query-column"),
                                (spec.gallery_column, AUTO_GALLERY, "--gallery-column")):
        if given is not None:
            name = need(given, option)
        elif auto in arrays:
            name = auto
        else:
            flags.append(None)
            continue
        flags.append(flags_from_numpy(column(name), path, f"{noun} '{name}'"))
    return Columns(embeddings=embeddings, labels=labels, groups=groups, is_query=flags[0],
                   is_gallery=flags[1], files=(path,))
