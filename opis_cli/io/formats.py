"""The input formats, each declared once: name, suffixes, options, help, reader.

A declaration (:class:`InputFormat`) is all that ``read_dataset`` and the
command line know of a format: ``read_dataset`` detects a path's format and
dispatches to its reader from :data:`FORMATS`; the CLI's ``--format``
choices and help, its format options (``--hf-split``, ...), and the
"unknown format", "unknown input file type" and "option X applies to
format Y" errors are generated from the declarations.

Adding a format is one reader module (``read(path, spec, *, progress,
memory_check) -> Columns``, see ``_columns.py``) plus its declaration in
:data:`FORMATS`. A format option is one :class:`FormatOption` in the
format's ``options``; its reader reads it as ``spec.option(name)``.

This module imports nothing heavy (the command line reads it to build its
options); a reader module is imported when it first reads.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError
from ._files import PARQUET_SUFFIXES, check_exists, suffix

if TYPE_CHECKING:  # pragma: no cover
    from ._columns import Columns

__all__ = ["FORMATS", "FORMAT_OPTIONS", "FormatOption", "InputFormat", "detect",
           "check_format_options"]


@dataclass(frozen=True)
class FormatOption:
    """An option that only some formats read (e.g. the split of a Hugging Face folder).

    Attributes
    ----------
    name : str
        The ``read_dataset`` keyword and the key of ``ReadOptions.format_options``
        (``hf_split``); the command line's option is ``--`` + name with dashes
        (``--hf-split``).
    metavar : str
        What the command line's help shows as its value (``NAME``).
    help : str
        One line of ``--help``.
    """

    name: str
    metavar: str
    help: str

    @property
    def flag(self) -> str:
        """The command-line option: ``--hf-split`` for ``hf_split``."""
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class InputFormat:
    """One input format, as ``read_dataset`` and the command line use it.

    Attributes
    ----------
    name : str
        The ``--format`` choice.
    suffixes : tuple of str
        The suffixes that name the format (lower case, with the dot).
    reader : str
        ``"module:function"`` in ``opis_cli.io``: ``read(path, spec, *,
        progress, memory_check[, owned]) -> Columns``, imported on first use.
    choice : str
        How ``--format``'s help lists it (``hf (Hugging Face)``).
    expected : str
        How the "unknown input file type" error names it (``.npy``).
    options : tuple of FormatOption
        The format's own options; giving one to another format is an error.
    reports_progress : bool
        The reader calls ``progress`` itself; otherwise ``read_dataset`` calls
        it once at the end.
    arrow_buffers : bool
        Reading goes through Arrow buffers as large as the matrix (the
        memory model's ``parquet`` term).
    maps : bool
        The reader memory-maps the embeddings unless called with
        ``owned=True``.
    folder : str or None
        ``"module:function"``: ``is_folder(path) -> bool``, whether a
        directory is of this format (tried in declaration order; a
        directory no format claims is read as a folder of Parquet files).
    folder_suffixes : bool
        The suffixes name folders (``.lance``), never files.
    noun : str
        How the help of the commands' PATH names it (``Hugging Face
        dataset``; default: ``expected``).
    """

    name: str
    suffixes: tuple[str, ...]
    reader: str
    choice: str
    expected: str
    options: tuple[FormatOption, ...] = ()
    reports_progress: bool = False
    arrow_buffers: bool = False
    maps: bool = False
    folder: str | None = None
    folder_suffixes: bool = False
    noun: str = ""

    @property
    def read(self) -> Callable[..., "Columns"]:
        """The reader function (its module imported now)."""
        return _load(self.reader)

    def is_folder(self, path: str) -> bool:
        """Whether directory ``path`` is of this format (False without a ``folder`` test)."""
        return self.folder is not None and bool(_load(self.folder)(path))

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)


def _load(ref: str) -> Callable:
    module, func = ref.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), func)


_HF_SPLIT = FormatOption(
    "hf_split", "NAME",
    "Split of a Hugging Face DatasetDict folder (required when it has several).")
_TENSOR_KEY = FormatOption(
    "tensor_key", "NAME",
    "safetensors/PyTorch: tensor holding the embeddings (default: the only 2-D float tensor).")
_TENSOR_LABELS_KEY = FormatOption(
    "tensor_labels_key", "NAME",
    "safetensors/PyTorch: tensor holding the labels (default: 'labels'; or --labels).")
_DATASET_KEY = FormatOption(
    "dataset_key", "PATH",
    "HDF5: dataset holding the embeddings, e.g. val/emb (default: the only 2-D float "
    "dataset).")
_DATASET_LABELS_KEY = FormatOption(
    "dataset_labels_key", "PATH",
    "HDF5: dataset holding the labels (default: 'labels'; or --labels).")

#: Every input format, in the order ``--format`` lists them and detection tries
#: their suffixes.
FORMATS: dict[str, InputFormat] = {f.name: f for f in (
    InputFormat("parquet", PARQUET_SUFFIXES, "parquet:read", "parquet",
                ".parquet (or a folder of them)", reports_progress=True, arrow_buffers=True,
                noun="Parquet file or folder"),
    InputFormat("npy", (".npy",), "arrays:read_npy", "npy", ".npy", maps=True),
    InputFormat("npz", (".npz",), "arrays:read_npz", "npz", ".npz"),
    InputFormat("hf", (".arrow",), "hf:read", "hf (Hugging Face)",
                "a Hugging Face dataset folder or .arrow", options=(_HF_SPLIT,),
                reports_progress=True, folder="hf:is_dataset_folder",
                noun="Hugging Face dataset"),
    InputFormat("lance", (".lance",), "lance_dataset:read", "lance", "a .lance folder",
                reports_progress=True, folder="lance_dataset:is_lance_folder",
                folder_suffixes=True, noun="Lance"),
    InputFormat("safetensors", (".safetensors",), "tensors:read_safetensors", "safetensors",
                ".safetensors", options=(_TENSOR_KEY, _TENSOR_LABELS_KEY), noun="safetensors"),
    InputFormat("pt", (".pt", ".pth"), "tensors:read_pt", "pt", ".pt/.pth",
                options=(_TENSOR_KEY, _TENSOR_LABELS_KEY), noun=".pt"),
    InputFormat("hdf5", (".h5", ".hdf5"), "hdf5:read", "hdf5", ".h5/.hdf5",
                options=(_DATASET_KEY, _DATASET_LABELS_KEY), noun="HDF5"),
    InputFormat("faiss", (".faiss", ".index"), "faiss_index:read", "faiss (an index file)",
                ".faiss/.index", noun="FAISS index"),
)}

#: Every format option once, in the order of the formats that take them.
FORMAT_OPTIONS: dict[str, FormatOption] = {
    o.name: o for f in FORMATS.values() for o in f.options}

#: The folder read when no format claims a directory.
FOLDER_DEFAULT = "parquet"


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def format_help() -> str:
    """The help of ``--format``."""
    return ("Input format (default: from the path): "
            + _either([f.choice for f in FORMATS.values()]) + ".")


def path_formats() -> str:
    """What a command's PATH may be, for its help: every format's noun."""
    return _either([f.noun or f.expected for f in FORMATS.values()])


def detect(path: str, forced: str | None = None) -> InputFormat:
    """The format of ``path``: ``forced``, else detected from the path.

    A directory is of the first format whose ``folder`` test claims it,
    else a folder of Parquet files; a file is known by its suffix. Raises
    ``InputError`` for an unknown format name or file suffix (and
    ``check_exists``'s error for a missing path).
    """
    check_exists(path)
    if forced is not None:
        if forced not in FORMATS:
            raise InputError(f"{path}: unknown format '{forced}'; expected one of "
                             + ", ".join(FORMATS))
        return FORMATS[forced]
    if os.path.isdir(path):
        for fmt in FORMATS.values():
            if fmt.is_folder(path):
                return fmt
        return FORMATS[FOLDER_DEFAULT]
    ext = suffix(path)
    for fmt in FORMATS.values():
        if ext in fmt.suffixes and not fmt.folder_suffixes:
            return fmt
    shown = ext or "(none)"
    raise InputError(
        f"{path}: unknown input file type '{shown}'; expected "
        + _either([f.expected for f in FORMATS.values()])
        + " (or name the format with --format)"
    )


def check_format_options(path: str, fmt: InputFormat, given: dict[str, str]) -> None:
    """Raise ``InputError`` when an option of ``given`` is not one of ``fmt``'s."""
    for name in given:
        if name not in fmt.option_names:
            if name not in FORMAT_OPTIONS:
                raise InputError(f"{path}: unknown format option '{name}'; expected one of "
                                 + ", ".join(FORMAT_OPTIONS))
            takers = [f.name for f in FORMATS.values() if name in f.option_names]
            raise InputError(f"{path}: {FORMAT_OPTIONS[name].flag} applies to "
                             f"{' and '.join(takers)} input; this input is {fmt.name}")
