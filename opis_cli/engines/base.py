"""What every engine shares: the contract, the grid, the tile shape.

An engine turns prepared rows (``opis_cli.prepare.Prepared``) and a
:class:`GridSpec` into an :class:`EngineOutput`: per-class (and per-group)
pair counts on the threshold grid and the per-query retrieval results.
Everything downstream (curves, metrics, the result) is computed from that
output alone. This module imports no compiled code, so the memory model
(``memory.py``) and the readers can use it without loading numba.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from ..counts import ceil_rank as order_rank  # noqa: F401 (the rank of t(F), SPEC 5)
from ..errors import ConfigError
from ..prepare import Prepared

Progress = Callable[[str, int, int], None]

#: default bytes of one block of inner products
DEFAULT_BLOCK_BYTES = 512 * 2**20
#: bytes of one tile of inner products (one BLAS call), see tile_rows()
TILE_BYTES = 256 * 2**20
#: bins of the distance histogram kept in the result
REPORT_BINS = 512
#: query rows sampled for the report histogram
REPORT_ROWS = 1024


@dataclass(frozen=True)
class GridSpec:
    """How the calibration range is chosen (SPEC 5)."""

    num_thresholds: int = 101
    far_range: tuple[float, float] = (0.01, 0.1)
    calibration_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class EngineOutput:
    """What an engine measured; everything downstream is computed from this.

    ``class_tp[c, k]`` / ``class_pp[c, k]`` are the numbers of positive / all
    pairs of class ``c`` with distance ``<= thresholds[k]`` (so
    ``FP = class_pp - class_tp``); likewise for groups. Per-query arrays are
    in the prepared (class-sorted) query order. ``notes`` carries
    engine-specific facts for provenance (e.g. truncation of the knn engine).
    """

    thresholds: np.ndarray
    range_source: str
    class_tp: np.ndarray
    class_pp: np.ndarray
    group_tp: np.ndarray | None
    group_pp: np.ndarray | None
    first_rank: np.ndarray
    ap_at_r: np.ndarray
    n_relevant: np.ndarray
    hist_edges: np.ndarray
    hist_pos: np.ndarray
    hist_neg: np.ndarray
    passes: int
    deferred: int
    notes: dict = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """What ``opis_cli.evaluate`` needs of an engine (exact, knn, dask, ...)."""

    name: str

    def run(self, prep: Prepared, spec: GridSpec,
            progress: Progress | None = None) -> EngineOutput:
        """Count the pairs of ``prep`` on the grid that ``spec`` defines."""
        ...


def tile_rows(ng: int) -> int:
    """Query rows of every BLAS product: a power of two in [64, 1024] with
    ``rows * ng * 4 <= TILE_BYTES`` where possible.

    Large products amortise BLAS's packing of the gallery (a 64-row product
    costs about twice as much per element as a 512-row one); the size depends
    on the gallery size only, never on the block size, so that results do not
    either (see ``inner_products``).
    """
    rows = TILE_BYTES // (4 * max(ng, 1))
    return int(min(1024, max(64, 2 ** int(math.floor(math.log2(max(rows, 1)))))))


def inner_products(xq, s, e, xgT, S, pad_q) -> None:
    """``S[:e-s] = xq[s:e] @ xgT``, always as products of exactly ``tile`` rows.

    BLAS may round differently for differently shaped products (a one-row
    product is a matrix-vector call, for one); using one shape for every
    call makes each inner product, hence every result, independent of the
    block size and of how the work is split into chunks.
    """
    tile = pad_q.shape[0]
    for t in range(s, e, tile):
        u = min(e, t + tile)
        if u - t == tile:
            np.matmul(xq[t:u], xgT, out=S[t - s:u - s])
        else:
            pad_q[:u - t] = xq[t:u]
            pad_q[u - t:] = 0
            np.matmul(pad_q, xgT, out=S[t - s:t - s + tile])


def check_range(lo: float, hi: float, option: str, what: str) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ConfigError(f"{option} {what}: bounds must be finite numbers")
    if not lo < hi:
        raise ConfigError(
            f"{option} {what} is degenerate: the lower threshold must be below the upper "
            f"(got {lo:.6g} and {hi:.6g}); widen the range")
