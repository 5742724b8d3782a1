"""Validate inputs once and arrange them for the engines (pure numpy).

The engines see queries and gallery sorted by (class, original row), so that
the positives of a query are one contiguous slice of the gallery and ties in
retrieval are broken by original row (SPEC 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import options
from .errors import InputError



#: rows converted to float32 at a time (bounded extra memory: CHUNK x D x 8 bytes;
#: at D = 384 a 6 MiB block that stays in the cache between numpy's passes over
#: it: 26.7k x 384 rows normalise in 0.03 s, against 0.06-0.13 s by 16,384 rows)
_CHUNK = 2048


@dataclass(frozen=True)
class Prepared:
    """Embeddings and labels arranged for the engines.

    Attributes
    ----------
    metric : "cosine" or "l2"
    xq, xg : float32 arrays (nq, D) and (ng, D); L2-normalised for cosine.
        For l2, rows far from the origin (compared with their spread) are
        moved by a common translation, the gallery mean rounded to 8
        significant bits (see ``_l2_centre``): distances are unchanged, the
        float32 products lose fewer digits, and inputs with few significant
        bits (integers) stay exact, so their ties do too. Rows near the
        origin are as given.
    qn2, gn2 : float64 squared norms of ``xq``/``xg`` (zeros for cosine).
    q_rows, g_rows : original row of every query / gallery item.
    q_class, g_class : class id (index into ``class_labels``).
    q_group : group id of every query (index into ``group_labels``) or None.
    self_col : gallery column of the query's own row, or -1.
    class_start, class_end : gallery slice ``[start, end)`` of every class.
    class_labels : sorted label strings; ``group_labels`` likewise.
    class_rows : number of input rows with each label (``group_rows``: in
        each group).
    """

    metric: str
    xq: np.ndarray
    xg: np.ndarray
    qn2: np.ndarray
    gn2: np.ndarray
    q_rows: np.ndarray
    g_rows: np.ndarray
    q_class: np.ndarray
    g_class: np.ndarray
    q_group: np.ndarray | None
    self_col: np.ndarray
    class_start: np.ndarray
    class_end: np.ndarray
    class_labels: tuple[str, ...]
    class_rows: np.ndarray
    group_labels: tuple[str, ...] | None
    group_rows: np.ndarray | None
    n_samples: int
    dim: int
    #: per-row distance offsets of a calibration (SPEC 11), in query / gallery
    #: order: the engines compare ``d - q_off[q] - g_off[g]``; None: none
    q_off: np.ndarray | None = None
    g_off: np.ndarray | None = None

    @property
    def symmetric(self) -> bool:
        """Every row is both a query and a gallery item, in the same order,
        with the same offset either way (so the adjusted distances are a
        symmetric matrix)."""
        if len(self.q_rows) != len(self.g_rows) or not np.array_equal(self.q_rows, self.g_rows):
            return False
        return self.q_off is None or bool(np.array_equal(self.q_off, self.g_off))

    @property
    def squared_keys(self) -> bool:
        """The engines' keys are squared distances (l2 without offsets); else
        they are the (adjusted) distances themselves."""
        return self.metric == "l2" and self.q_off is None

    def with_offsets(self, a: np.ndarray, b: np.ndarray) -> "Prepared":
        """This arrangement with the offsets ``a`` (as query) and ``b`` (as
        gallery item) of every input row, in input row order."""
        from dataclasses import replace

        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        if a.shape != (self.n_samples,) or b.shape != (self.n_samples,):
            raise InputError(f"offsets must have one value per row ({self.n_samples})")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise InputError("offsets must be finite numbers")
        return replace(self, q_off=np.ascontiguousarray(a[self.q_rows]),
                       g_off=np.ascontiguousarray(b[self.g_rows]))

    @property
    def n_classes(self) -> int:
        return len(self.class_labels)

    def class_pair_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """``P_c`` and ``M_c`` of every class (SPEC 3), as int64."""
        return self._pair_counts(self.q_class, self.n_classes)

    def group_pair_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """``P_g`` and ``M_g`` of every group (SPEC 7)."""
        assert self.q_group is not None and self.group_labels is not None
        return self._pair_counts(self.q_group, len(self.group_labels))

    def _pair_counts(self, ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        gal = (self.class_end - self.class_start)[self.q_class]
        pos = gal - (self.self_col >= 0)
        neg = len(self.g_rows) - gal
        P = np.bincount(ids, weights=pos, minlength=n).astype(np.int64)
        M = np.bincount(ids, weights=neg, minlength=n).astype(np.int64)
        return P, M


def _as_labels(values, name: str, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if len(arr) != n:
        raise InputError(f"{len(arr)} {name} for {n} embeddings")
    out = np.empty(n, dtype=object)
    for i, v in enumerate(arr):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            raise InputError(f"{name}: row {i} is null; every row needs a value")
        out[i] = v if isinstance(v, str) else str(v)
    return out


def _as_mask(values, name: str, n: int) -> np.ndarray:
    if values is None:
        return np.ones(n, dtype=bool)
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise InputError(f"{name} has shape {arr.shape}, expected ({n},)")
    if arr.dtype != bool:
        if arr.dtype.kind not in "iu" or not np.isin(arr, (0, 1)).all():
            raise InputError(f"{name} must be boolean (or 0/1)")
        arr = arr.astype(bool)
    return arr


def _float32_rows(emb: np.ndarray, metric: str, dest: np.ndarray | None = None,
                  inplace: bool = False) -> np.ndarray:
    """Checked float32 copy, rows L2-normalised (in float64) for cosine; row
    ``i`` goes to ``out[dest[i]]`` when ``dest`` (a permutation) is given.

    ``inplace`` (``emb`` a writeable C-contiguous float32 array, ``dest``
    None): the rows are written back into ``emb``, which is returned; the
    values are those of the copy, bit for bit (each chunk is read into a
    float64 block before it is overwritten)."""
    n, d = emb.shape
    if inplace:
        assert dest is None and emb.dtype == np.float32 and emb.flags.c_contiguous
        out = emb
    else:
        out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, _CHUNK):
        block = np.asarray(emb[s:s + _CHUNK], dtype=np.float64)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = s + int(np.argmin(finite))
            raise InputError(f"embeddings: row {row} contains NaN or infinity; expected finite numbers")
        if metric == "cosine":
            nrm = np.sqrt(np.einsum("ij,ij->i", block, block))
            if (nrm == 0).any():
                row = s + int(np.argmax(nrm == 0))
                raise InputError(
                    f"embeddings: row {row} is a zero vector, which has no cosine "
                    "distance (use --metric l2 or drop the row)")
            block = block / nrm[:, None]
        elif inplace:
            continue  # float32 -> float64 -> float32 is the identity
        if dest is None:
            out[s:s + _CHUNK] = block
        else:
            out[dest[s:s + _CHUNK]] = block
    return out


def _consumable(emb) -> bool:
    """Whether ``prepare(..., consume=True)`` may reuse ``emb``'s buffer: a
    writeable, C-contiguous float32 ndarray that is not a memory map (whose
    writes would reach a file)."""
    return (type(emb) is np.ndarray and emb.dtype == np.float32 and emb.ndim == 2
            and emb.flags.c_contiguous and emb.flags.writeable)


def _permute_rows(x: np.ndarray, src: np.ndarray) -> np.ndarray:
    """``x[:] = x[src]`` for a permutation ``src``, in place, by following its
    cycles: one spare row instead of a second copy of ``x``. Returns ``x``."""
    n = len(src)
    moved = bytearray(np.equal(src, np.arange(n)).tobytes())  # rows already in place
    nxt = src.tolist()
    spare = np.empty(x.shape[1], dtype=x.dtype)
    for first in range(n):
        if moved[first]:
            continue
        # the cycle: row first takes row src[first], which takes its src, ...
        spare[:] = x[first]
        j, k = first, nxt[first]
        while k != first:
            x[j] = x[k]
            moved[j] = 1
            j, k = k, nxt[k]
        x[j] = spare
        moved[j] = 1
    return x


def _sq_norms(x: np.ndarray) -> np.ndarray:
    """float64 squared norm of every row of ``x``, in chunks of rows (no
    float64 copy of the whole array; each row's sum is the same as over the
    whole array at once)."""
    out = np.empty(len(x))
    for s in range(0, len(x), _CHUNK):
        b = x[s:s + _CHUNK].astype(np.float64)
        out[s:s + _CHUNK] = np.einsum("ij,ij->i", b, b)
    return out


def _l2_centre(xg: np.ndarray) -> np.ndarray | None:
    """A translation that makes l2 distances accurate in float32, or None.

    ``|q|^2 + |g|^2 - 2<q, g>`` loses digits to cancellation when the rows
    sit far from the origin compared with their spread; l2 distances do not
    change under a common translation, so the rows are then moved to their
    mean. The mean is rounded to 8 significant bits so that subtracting it
    stays exact for inputs with few significant bits (integer data keep
    their exact ties). Rows near the origin are left as they are.
    """
    mean = xg.mean(axis=0, dtype=np.float64)
    sq = float(np.einsum("ij,ij->", xg, xg, dtype=np.float64)) / len(xg)
    spread = max(sq - float(mean @ mean), 0.0)
    if float(mean @ mean) <= spread:
        return None
    mant, expo = np.frexp(mean)
    return np.ldexp(np.round(mant * 256) / 256, expo).astype(np.float32)


def _rows_in_order(emb, metric: str, own: bool, q_rows, g_rows, col_of_row, self_col):
    """The query and gallery rows of ``prepare`` (float32, normalised for
    cosine, centred for l2) in class order, and their squared norms (zeros
    for cosine): ``(xq, xg, qn2, gn2)``. ``own``: ``emb``'s buffer may be
    reused (``prepare``'s ``consume``)."""
    if len(g_rows) == len(emb):
        # every row a gallery item (the usual case, and the usual split): the
        # gallery written straight in class order (no second copy of the rows;
        # an array handed over is normalised and put in class order in place),
        # the queries the same array or a copy of their rows of it
        if own:
            xg = _permute_rows(_float32_rows(emb, metric, inplace=True), g_rows)
        else:
            xg = _float32_rows(emb, metric, dest=col_of_row)
        xq = xg if np.array_equal(q_rows, g_rows) else xg[self_col]
    else:
        x = _float32_rows(emb, metric, inplace=own)
        xg = x[g_rows]
        xq = xg if np.array_equal(q_rows, g_rows) else x[q_rows]
        del x
    if metric != "l2":
        return xq, xg, np.zeros(len(q_rows)), np.zeros(len(g_rows))
    centre = _l2_centre(xg)
    if centre is not None:
        xg -= centre
        if xq is not xg:
            xq -= centre
    gn2 = _sq_norms(xg)
    return xq, xg, (gn2.copy() if xq is xg else _sq_norms(xq)), gn2


def prepare(embeddings, labels, *, metric: str = "cosine", groups=None,
            is_query=None, is_gallery=None, consume: bool = False) -> Prepared:
    """Validate the inputs and arrange them for the engines.

    Parameters
    ----------
    embeddings : array-like (N, D) of float16/32/64 (may be a memmap)
    labels : sequence of N hashable labels (compared as strings)
    metric : "cosine" (rows L2-normalised, d = 1 - <a, b>) or "l2"
    groups : optional sequence of N group values (SPEC 7)
    is_query, is_gallery : optional boolean masks (default: every row is both)
    consume : internal, for callers that own ``embeddings`` and hand it over
        (a reader's freshly built array; never a user's array): when it is a
        writeable C-contiguous float32 ndarray (not a memmap), its buffer is
        normalised in place and, when every row is both query and gallery,
        permuted into class order in place, so that it becomes
        ``Prepared.xq``/``xg`` without a second copy of the rows (the values
        are those of the copying path, bit for bit). Its contents are
        unspecified afterwards, also when an error is raised. Other arrays
        are copied as usual.

    Memory: the float32 rows once (``N x D x 4`` bytes; none with ``consume``
    when every row is a gallery item), the query rows again where they are
    not every gallery row (a split: ``nq x D x 4``), ``N x 16`` bytes of
    64-bit indices and norms, the labels as strings, and chunks of ``2048 x
    D`` float64 while converting; with ``consume``, the permutation in place
    adds ``N x ~45`` bytes. Where some rows are not gallery items, the rows
    are also copied once in input order while their subsets are taken.

    Raises
    ------
    InputError
        One line naming what is wrong and where.
    """
    options.check("metric", metric)
    emb = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
    if emb.ndim != 2:
        raise InputError(f"embeddings must be a 2-D array (rows x dimensions), got shape {emb.shape}")
    if emb.dtype.kind not in "fiu":
        raise InputError(f"embeddings must be numeric, got dtype {emb.dtype}")
    n, dim = emb.shape
    if n == 0 or dim == 0:
        raise InputError(f"embeddings are empty (shape {emb.shape})")
    lab = _as_labels(labels, "labels", n)
    grp = _as_labels(groups, "groups", n) if groups is not None else None
    qmask = _as_mask(is_query, "is_query", n)
    gmask = _as_mask(is_gallery, "is_gallery", n)
    if not qmask.any():
        raise InputError("no row is a query (is_query is false everywhere)")
    if not gmask.any():
        raise InputError("no row is in the gallery (is_gallery is false everywhere)")

    class_labels, class_of_row = np.unique(lab.astype(str), return_inverse=True)
    class_of_row = class_of_row.astype(np.int64)
    rows = np.arange(n, dtype=np.int64)
    g_rows = rows[gmask]
    g_rows = g_rows[np.lexsort((g_rows, class_of_row[g_rows]))]
    q_rows = rows[qmask]
    q_rows = q_rows[np.lexsort((q_rows, class_of_row[q_rows]))]
    g_class = class_of_row[g_rows]
    q_class = class_of_row[q_rows]
    C = len(class_labels)
    counts = np.bincount(g_class, minlength=C)
    class_end = np.cumsum(counts).astype(np.int64)
    class_start = class_end - counts
    col_of_row = np.full(n, -1, dtype=np.int64)
    col_of_row[g_rows] = np.arange(len(g_rows))
    self_col = col_of_row[q_rows]

    xq, xg, qn2, gn2 = _rows_in_order(emb, metric, consume and _consumable(emb), q_rows,
                                      g_rows, col_of_row, self_col)

    q_group = None
    group_labels = None
    group_rows = None
    if grp is not None:
        group_labels, group_of_row = np.unique(grp.astype(str), return_inverse=True)
        q_group = group_of_row.astype(np.int64)[q_rows]
        group_rows = np.bincount(group_of_row, minlength=len(group_labels)).astype(np.int64)
        group_labels = tuple(str(g) for g in group_labels)

    return Prepared(
        metric=metric, xq=np.ascontiguousarray(xq), xg=np.ascontiguousarray(xg),
        qn2=qn2, gn2=gn2, q_rows=q_rows, g_rows=g_rows, q_class=q_class,
        g_class=g_class, q_group=q_group, self_col=self_col,
        class_start=class_start, class_end=class_end,
        class_labels=tuple(str(c) for c in class_labels),
        class_rows=np.bincount(class_of_row, minlength=C).astype(np.int64),
        group_labels=group_labels, group_rows=group_rows, n_samples=n, dim=dim)
