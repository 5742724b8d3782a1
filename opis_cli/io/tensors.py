"""The tensor-file readers: safetensors (``.safetensors``) and PyTorch (``.pt``/``.pth``).

Both hold named tensors; the embeddings are the tensor ``--tensor-key`` (or
the only 2-D float tensor), the labels the tensor ``--tensor-labels-key`` (or
``labels``) unless ``--labels FILE`` is given, as laid out in
:mod:`opis_cli.io._named`.

- safetensors: the header is read by the ``safetensors`` library (the
  ``safetensors`` extra); the embedding tensor is then memory-mapped at the
  offsets the header gives (the format's layout: an 8-byte little-endian
  header length, the JSON header, the raw little-endian data).
- PyTorch: ``torch.load(path, weights_only=True, mmap=True)`` and nothing
  else, so that a file holding arbitrary pickled objects is refused rather
  than run; the file holds one tensor or a dict of tensors. Files written by
  ``torch.save`` (zip format) are memory-mapped; older ones are read into
  memory. torch comes with the ``train`` extra.
"""

from __future__ import annotations

import json
import os
import re
import struct

import numpy as np

from opis_cli.errors import InputError

from ._columns import Columns, ColumnSpec, MemoryCheck, ProgressCallback
from ._files import one_line, require
from ._named import ArrayInfo, Naming, columns_from_named

__all__ = ["read_safetensors", "read_pt"]

#: safetensors dtype names -> NumPy (little-endian, as the format stores them)
_SAFETENSORS_DTYPES = {
    "F16": "<f2", "F32": "<f4", "F64": "<f8",
    "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8",
    "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?",
}

#: The single tensor of a PyTorch file that holds no dict.
PT_SINGLE = "tensor"


def _naming(spec: ColumnSpec) -> Naming:
    """The words and options of tensor files, for :func:`columns_from_named`."""
    return Naming("tensor", "tensors", "--tensor-key", "--tensor-labels-key",
                  spec.option("tensor_key"), spec.option("tensor_labels_key"))


def read_safetensors(
    path: str,
    spec: ColumnSpec,
    *,
    progress: ProgressCallback | None = None,
    memory_check: MemoryCheck | None = None,
) -> Columns:
    """Read a ``.safetensors`` file (the format reader of ``read_dataset``).

    Raises
    ------
    InputError
        ``safetensors`` not installed; not a safetensors file; a tensor of a
        type NumPy cannot hold (bfloat16, float8); the errors of
        :func:`~opis_cli.io._named.columns_from_named`.
    """
    safetensors = require("safetensors", path, "a safetensors file", "safetensors")
    try:
        handle = safetensors.safe_open(path, framework="numpy")
    except Exception as exc:  # SafetensorError, OSError: the file is not one
        raise InputError(f"{path}: not a valid safetensors file ({one_line(exc)})") from exc
    with handle as f:
        arrays = {}
        for k in f.keys():
            sl = f.get_slice(k)
            dt = sl.get_dtype()
            np_dt = _SAFETENSORS_DTYPES.get(dt)
            arrays[k] = ArrayInfo(tuple(sl.get_shape()), dt, dt.startswith("F") or dt == "BF16",
                                  np.dtype(np_dt).itemsize if np_dt else 0)
        header = _header(path)

        def load(name: str) -> np.ndarray:
            info = arrays[name]
            np_dt = _SAFETENSORS_DTYPES.get(info.dtype)
            if np_dt is None:
                raise InputError(f"{path}: tensor '{name}' has type {info.dtype}; expected "
                                 "float16/32/64, integers or bool (convert it, e.g. "
                                 "tensor.float(), before saving)")
            if len(info.shape) == 2 and min(info.shape) > 0:
                start = header["offset"] + header["entries"][name]["data_offsets"][0]
                return np.memmap(path, dtype=np_dt, mode="r", offset=start, shape=info.shape)
            try:
                return f.get_tensor(name)
            except Exception as exc:  # a truncated or corrupt data section
                raise InputError(f"{path}: cannot read tensor '{name}' ({one_line(exc)})") from exc

        return columns_from_named(path, arrays, load, spec, _naming(spec),
                                  mapped=lambda _: True, memory_check=memory_check)


def _header(path: str) -> dict:
    """The safetensors header (already validated by the library) and where the data starts."""
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            entries = json.loads(fh.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise InputError(f"{path}: not a valid safetensors file ({one_line(exc)})") from exc
    return {"offset": 8 + length, "entries": entries}


def read_pt(
    path: str,
    spec: ColumnSpec,
    *,
    progress: ProgressCallback | None = None,
    memory_check: MemoryCheck | None = None,
) -> Columns:
    """Read a PyTorch ``.pt``/``.pth`` tensor file with ``weights_only=True`` (the format
    reader of ``read_dataset``).

    Raises
    ------
    InputError
        torch not installed; a file that ``weights_only`` loading refuses
        (arbitrary pickled objects: nothing of it is run); not a tensor or a
        dict of tensors; the errors of
        :func:`~opis_cli.io._named.columns_from_named`.
    """
    torch = require("torch", path, "a PyTorch file", "train")
    obj, mapped = _load_pt(torch, path)
    if isinstance(obj, torch.Tensor):
        obj = {PT_SINGLE: obj}
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path}: holds {type(obj).__name__}; expected a tensor or a dict of "
                         "tensors (name -> tensor)")
    tensors = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue  # other entries (an epoch number, a config) are not columns
        tensors[str(k)] = v
    arrays = {k: ArrayInfo(tuple(v.shape), str(v.dtype).removeprefix("torch."),
                           v.dtype.is_floating_point, v.element_size())
              for k, v in tensors.items()}

    def load(name: str) -> np.ndarray:
        t = tensors[name]
        try:
            return t.detach().cpu().numpy()
        except (TypeError, RuntimeError) as exc:
            raise InputError(f"{path}: tensor '{name}' has type {arrays[name].dtype}; expected "
                             "float16/32/64, integers or bool (convert it, e.g. "
                             "tensor.float(), before saving)") from exc

    return columns_from_named(path, arrays, load, spec, _naming(spec),
                              mapped=lambda _: mapped,
                              memory_check=memory_check)


def _load_pt(torch, path: str):
    """``(object, memory-mapped)``: ``torch.load`` with ``weights_only=True``, mapped if it can."""
    import pickle

    def refuse(exc: BaseException) -> InputError:
        if isinstance(exc, pickle.UnpicklingError):
            # torch's message is long and suggests loading unsafely; name the object only
            found = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(exc),
                              re.IGNORECASE)
            named = f" ({found.group(1)})" if found else ""
            return InputError(
                f"{path}: refused: the file holds pickled objects other than tensors{named}; "
                "it is loaded only with torch.load(weights_only=True), which runs nothing")
        return InputError(f"{path}: not a PyTorch tensor file ({one_line(exc)})")

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True), True
    except pickle.UnpicklingError as exc:
        raise refuse(exc) from exc
    except Exception as first:  # a legacy (non-zip) file cannot be mapped: read it
        if os.path.getsize(path) == 0:
            raise refuse(first) from first
    try:
        return torch.load(path, map_location="cpu", weights_only=True), False
    except Exception as exc:  # torch raises many types for a file it cannot read
        raise refuse(exc) from exc
