"""The FAISS index reader (``.faiss``/``.index``): the vectors an index stores exactly.

The index is read with ``faiss.read_index`` and its vectors are
reconstructed, in id order (ids ``0 .. ntotal - 1``, the order they were
added in), into a float32 matrix in memory. Only index types that keep the
vectors as they were added can give them back exactly: flat indexes
(``IndexFlatL2``, ``IndexFlatIP``), ``IndexHNSWFlat`` (a flat storage) and
``IndexIVFFlat`` (through a direct map, built here). Compressing indexes
(PQ, scalar quantizers, ...) hold only approximations and are refused. The
index holds no labels: ``--labels FILE`` gives one per vector, in id order.

faiss is a core dependency; it is imported when an index is read.
"""

from __future__ import annotations

from opis_cli.errors import InputError

from ._columns import Columns, ColumnSpec, MemoryCheck, ProgressCallback, check_embeddings
from ._files import one_line

__all__ = ["read", "SUPPORTED"]

#: The index types whose vectors are reconstructed, for messages.
SUPPORTED = "IndexFlatL2, IndexFlatIP, IndexHNSWFlat or IndexIVFFlat"


def read(
    path: str,
    spec: ColumnSpec,
    *,
    progress: ProgressCallback | None = None,
    memory_check: MemoryCheck | None = None,
) -> Columns:
    """Reconstruct the vectors of a FAISS index file (the format reader of ``read_dataset``).

    Raises
    ------
    InputError
        Group, query or gallery columns asked for; not a FAISS index; an
        index type that cannot give back its vectors exactly; an empty index.
    """
    if spec.group_column or spec.query_column or spec.gallery_column:
        raise InputError(f"{path}: a FAISS index holds only vectors; group, query and gallery "
                         "columns need Parquet, Hugging Face, Lance, .npz, tensor or HDF5 input")
    import faiss

    try:
        raw = faiss.read_index(path)
        index = faiss.downcast_index(raw)  # a view: ``raw`` owns the index and must live on
    except Exception as exc:  # faiss raises RuntimeError for anything it cannot read
        raise InputError(f"{path}: not a FAISS index file ({one_line(exc)})") from exc
    kind = type(index).__name__
    if not isinstance(index, (faiss.IndexFlat, faiss.IndexHNSWFlat, faiss.IndexIVFFlat)):
        raise InputError(f"{path}: a FAISS {kind} does not keep its vectors exactly; expected "
                         f"{SUPPORTED} (or give the embeddings themselves)")
    n, dim = int(index.ntotal), int(index.d)
    if n == 0:
        raise InputError(f"{path}: the {kind} holds 0 vectors; expected at least one")
    if memory_check is not None:
        memory_check(n, dim, 4)
    try:
        if isinstance(index, faiss.IndexIVFFlat):
            index.make_direct_map()
        vectors = index.reconstruct_n(0, n)
    except Exception as exc:  # ids not 0..n-1, or a broken index
        raise InputError(f"{path}: cannot reconstruct the vectors of the {kind} "
                         f"({one_line(exc)})") from exc
    del index, raw
    embeddings = check_embeddings(vectors, path, f"the vectors of the {kind}")
    return Columns(embeddings=embeddings, labels=None, groups=None, is_query=None,
                   is_gallery=None, files=(path,))
