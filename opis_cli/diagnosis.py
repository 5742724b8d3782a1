"""Where a threshold fails (SPEC 16): the typed, frozen result of a diagnosis.

Computed by ``opis_cli.engines.diagnose`` (one pass over every pair at one
threshold); this module only holds and serialises it (no numba, no I/O).
The JSON shape is SPEC 16's ``diagnosis`` key; the whole sparse class-pair
table (``Diagnosis.pairs``) is kept in memory only (``--pairs`` writes it),
like the curves of a consistency block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: columns of the class-pair table (``--pairs``, ``Diagnosis.pairs_frame``)
PAIRS_COLUMNS = ("label", "impostor", "accepts", "pairs", "far")


def _f(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class Impostor:
    """One impostor class ``c'`` of a class ``c``: ``accepts = A(c, c')``,
    ``far = A / N(c, c')``, ``share = A / FP_c(t)``."""

    label: str
    accepts: int
    far: float
    share: float

    def to_dict(self) -> dict:
        return {"label": self.label, "accepts": self.accepts, "far": _f(self.far),
                "share": _f(self.share)}

    @classmethod
    def from_dict(cls, d: dict) -> "Impostor":
        return cls(str(d["label"]), int(d["accepts"]), float(d["far"]), float(d["share"]))


@dataclass(frozen=True)
class OverlapPair:
    """An overlapping unordered pair of labels ``a < b`` (string order)."""

    a: str
    b: str
    overlap: float
    accepts_ab: int
    accepts_ba: int
    pairs_ab: int
    pairs_ba: int

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "overlap": _f(self.overlap),
                "accepts_ab": self.accepts_ab, "accepts_ba": self.accepts_ba,
                "pairs_ab": self.pairs_ab, "pairs_ba": self.pairs_ba}

    @classmethod
    def from_dict(cls, d: dict) -> "OverlapPair":
        return cls(str(d["a"]), str(d["b"]), float(d["overlap"]), int(d["accepts_ab"]),
                   int(d["accepts_ba"]), int(d["pairs_ab"]), int(d["pairs_ba"]))


@dataclass(frozen=True)
class SharedDuplicates:
    """Two labels ``a < b`` and the number of conflicting duplicate groups holding both."""

    a: str
    b: str
    shared: int

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "shared": self.shared}

    @classmethod
    def from_dict(cls, d: dict) -> "SharedDuplicates":
        return cls(str(d["a"]), str(d["b"]), int(d["shared"]))


@dataclass(frozen=True)
class RejectedRow:
    """A query row (input numbering) and its rejected genuine pairs at ``t``."""

    row: int
    rejected: int
    frr: float

    def to_dict(self) -> dict:
        return {"row": self.row, "rejected": self.rejected, "frr": _f(self.frr)}

    @classmethod
    def from_dict(cls, d: dict) -> "RejectedRow":
        return cls(int(d["row"]), int(d["rejected"]), float(d["frr"]))


@dataclass(frozen=True)
class Suspect:
    """A query row whose 3 nearest gallery rows all carry ``looks_like`` and
    none of whose positive pairs is accepted; ``nearest_positive`` is the
    distance to its nearest positive."""

    row: int
    label: str
    looks_like: str
    nearest_positive: float

    def to_dict(self) -> dict:
        return {"row": self.row, "label": self.label, "looks_like": self.looks_like,
                "nearest_positive": _f(self.nearest_positive)}

    @classmethod
    def from_dict(cls, d: dict) -> "Suspect":
        return cls(int(d["row"]), str(d["label"]), str(d["looks_like"]),
                   float("nan") if d.get("nearest_positive") is None
                   else float(d["nearest_positive"]))


@dataclass(frozen=True)
class PairTable:
    """The sparse class-pair table at ``t``: one entry per ``(c, c')``,
    ``c != c'``, with ``A(c, c') > 0``, sorted by ``(c, c')`` (label order).

    Held as ``key = c * C + c'`` (E,) int64 and ``accepts`` (E,) int64 ``A``,
    with the per-class numbers of query and gallery rows (C,): 16 bytes an
    entry. ``query`` / ``gallery`` (label indices) and ``pairs`` (``N(c,
    c')``) are computed when asked.
    """

    labels: tuple[str, ...]
    key: np.ndarray
    accepts: np.ndarray
    class_queries: np.ndarray
    class_gallery: np.ndarray

    def __len__(self) -> int:
        return int(len(self.key))

    @property
    def query(self) -> np.ndarray:
        return self.key // max(len(self.labels), 1)

    @property
    def gallery(self) -> np.ndarray:
        return self.key % max(len(self.labels), 1)

    @property
    def pairs(self) -> np.ndarray:
        return self.class_queries[self.query] * self.class_gallery[self.gallery]

    def columns(self) -> dict[str, np.ndarray]:
        """The table as columns :data:`PAIRS_COLUMNS` (labels as object arrays)."""
        lab = np.asarray(self.labels, dtype=object)
        q, g = self.query, self.gallery
        n = self.class_queries[q] * self.class_gallery[g]
        return {"label": lab[q], "impostor": lab[g],
                "accepts": self.accepts.astype(np.int64), "pairs": n.astype(np.int64),
                "far": self.accepts / np.maximum(n, 1)}


@dataclass(frozen=True)
class Coverage:
    """What a diagnosis from candidates (the knn engine) could see.

    ``queries`` query rows; ``complete`` of them had every pair with
    ``d <= t`` among their K candidates (their accepted negatives are all
    counted); ``nearest_known`` of them had their 3 nearest decided (only
    those can be suspects). Elsewhere the counts of accepted negatives are
    lower bounds (``engines/diagnose_knn.py``). ``exact_search``: the index
    searched exhaustively (``flat``, or K covering the gallery); otherwise
    "complete" assumes the search found the true K nearest.
    ``complete_rows`` (input rows of the complete queries) is in memory only.
    """

    method: str
    k: int
    index: str
    exact_search: bool
    queries: int
    complete: int
    nearest_known: int
    complete_rows: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def incomplete(self) -> int:
        return self.queries - self.complete

    def note(self) -> str:
        """One line for every output: where the numbers come from and what they miss."""
        if self.incomplete == 0 and self.nearest_known == self.queries:
            return (f"from the {self.k} nearest candidates: every accepted pair was seen "
                    "(the counts are exact)")
        assume = "" if self.exact_search else " (assuming the approximate search found them)"
        return (f"from the {self.k} nearest candidates: counts are lower bounds for "
                f"{self.incomplete:,} of {self.queries:,} queries{assume}; suspects only "
                f"among the {self.nearest_known:,} whose 3 nearest are known")

    def to_dict(self) -> dict:
        return {"method": self.method, "k": self.k, "index": self.index,
                "exact_search": self.exact_search, "queries": self.queries,
                "complete_queries": self.complete, "incomplete_queries": self.incomplete,
                "nearest_known": self.nearest_known, "note": self.note()}

    @classmethod
    def from_dict(cls, d: dict) -> "Coverage":
        return cls(str(d["method"]), int(d["k"]), str(d["index"]), bool(d["exact_search"]),
                   int(d["queries"]), int(d["complete_queries"]), int(d["nearest_known"]))


@dataclass(frozen=True)
class Estimate:
    """A diagnosis estimated from the sampled engine's draws (``engines/diagnose_sampled.py``).

    ``A(c, c')`` (impostors, overlap, the class-pair table) is the
    Horvitz-Thompson estimate ``scale * (drawn accepted negatives)``,
    ``scale = ng / S``, rounded to whole pairs; rejected rows, suspects and
    duplicates are exact. ``every_pair``: ``S >= ng``, so nothing is estimated.
    """

    method: str
    seed: int
    negatives_per_query: int
    every_pair: bool
    pairs_drawn: int
    accepted_pairs_drawn: int
    scale: float

    def note(self) -> str:
        """One line for every output: an estimate, how, and what is exact."""
        if self.every_pair:
            return (f"from sampled negatives with every pair drawn (all "
                    f"{self.negatives_per_query:,} gallery rows per query): every count is exact")
        return (f"estimated from sampled negatives ({self.negatives_per_query} per query, seed "
                f"{self.seed}, {self.accepted_pairs_drawn:,} accepted of {self.pairs_drawn:,} "
                f"pairs drawn, each counting {self.scale:.4g}): impostor accepts, overlap and "
                "the class-pair table are estimates; rejected rows, suspects and duplicates "
                "are exact")

    def to_dict(self) -> dict:
        return {"method": self.method, "seed": self.seed,
                "negatives_per_query": self.negatives_per_query, "every_pair": self.every_pair,
                "pairs_drawn": self.pairs_drawn,
                "accepted_pairs_drawn": self.accepted_pairs_drawn, "scale": _f(self.scale),
                "estimated": [] if self.every_pair else ["impostors", "overlap", "pairs"],
                "note": self.note()}

    @classmethod
    def from_dict(cls, d: dict) -> "Estimate":
        return cls(str(d["method"]), int(d["seed"]), int(d["negatives_per_query"]),
                   bool(d["every_pair"]), int(d["pairs_drawn"]), int(d["accepted_pairs_drawn"]),
                   float(d["scale"]))


@dataclass(frozen=True)
class Diagnosis:
    """SPEC 16 at one threshold: impostors, overlap, duplicates, rejected rows, suspects.

    ``impostors`` / ``rejected_rows`` map every evaluated class's label (in
    label order) to its (possibly empty) list. ``queries_with_positives`` is
    the number of query rows with ``P_q > 0`` (the denominator of
    ``suspect_fraction``). ``pairs`` (not part of the JSON) is the whole
    sparse class-pair table; None for a diagnosis read from JSON.
    ``coverage``: None for an exact diagnosis; for one from candidates (the
    knn engine) what they could see: its counts of accepted negatives are
    lower bounds (:class:`Coverage`). ``estimate``: for one from the sampled
    engine's draws, how it is estimated (:class:`Estimate`).
    """

    threshold: float
    k: int
    level: float
    impostors: dict[str, tuple[Impostor, ...]]
    overlap_count: int
    overlap_tied: int
    overlap_top: tuple[OverlapPair, ...]
    duplicate_groups: int
    duplicate_rows: int
    duplicate_top: tuple[SharedDuplicates, ...]
    rejected_rows: dict[str, tuple[RejectedRow, ...]]
    suspects: tuple[Suspect, ...]
    queries_with_positives: int
    pairs: PairTable | None = field(default=None, repr=False, compare=False)
    #: None: exact (every pair counted); else what the candidates could see
    coverage: Coverage | None = None
    #: None: counted; else how the sampled draws estimate it
    estimate: Estimate | None = None

    @property
    def source_note(self) -> str | None:
        """The line every output shows when the diagnosis is not counted over
        every pair (knn candidates, sampled estimate); None when it is."""
        for part in (self.coverage, self.estimate):
            if part is not None:
                return part.note()
        return None

    # -- flat numbers ------------------------------------------------------
    @property
    def suspect_fraction(self) -> float:
        """Suspects / query rows with ``P_q > 0`` (NaN when there are none)."""
        q = self.queries_with_positives
        return len(self.suspects) / q if q else float("nan")

    def gate_metrics(self) -> dict[str, float]:
        """``overlapping_pairs``, ``suspect_rows``, ``suspect_fraction``,
        ``conflicting_duplicate_groups``."""
        return {"overlapping_pairs": float(self.overlap_count),
                "suspect_rows": float(len(self.suspects)),
                "suspect_fraction": self.suspect_fraction,
                "conflicting_duplicate_groups": float(self.duplicate_groups)}

    # -- JSON ----------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "threshold": _f(self.threshold), "k": self.k, "level": _f(self.level),
            "impostors": {c: [i.to_dict() for i in v] for c, v in self.impostors.items()},
            "overlap": {"count": self.overlap_count, "tied": self.overlap_tied,
                        "top": [p.to_dict() for p in self.overlap_top]},
            "duplicates": {"groups": self.duplicate_groups, "rows": self.duplicate_rows,
                           "top": [p.to_dict() for p in self.duplicate_top]},
            "rejected_rows": {c: [r.to_dict() for r in v] for c, v in self.rejected_rows.items()},
            "suspects": {"count": len(self.suspects),
                         "queries_with_positives": self.queries_with_positives,
                         "fraction": _f(self.suspect_fraction),
                         "rows": [s.to_dict() for s in self.suspects]},
            **({"coverage": self.coverage.to_dict()} if self.coverage is not None else {}),
            **({"estimate": self.estimate.to_dict()} if self.estimate is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Diagnosis":
        ov, du, su = d["overlap"], d["duplicates"], d["suspects"]
        return cls(
            threshold=float(d["threshold"]), k=int(d["k"]), level=float(d["level"]),
            impostors={str(c): tuple(Impostor.from_dict(i) for i in v)
                       for c, v in d["impostors"].items()},
            overlap_count=int(ov["count"]), overlap_tied=int(ov["tied"]),
            overlap_top=tuple(OverlapPair.from_dict(p) for p in ov["top"]),
            duplicate_groups=int(du["groups"]), duplicate_rows=int(du["rows"]),
            duplicate_top=tuple(SharedDuplicates.from_dict(p) for p in du["top"]),
            rejected_rows={str(c): tuple(RejectedRow.from_dict(r) for r in v)
                           for c, v in d["rejected_rows"].items()},
            suspects=tuple(Suspect.from_dict(s) for s in su["rows"]),
            queries_with_positives=int(su.get("queries_with_positives", 0)),
            coverage=Coverage.from_dict(d["coverage"]) if d.get("coverage") else None,
            estimate=Estimate.from_dict(d["estimate"]) if d.get("estimate") else None)

    # -- data frames -----------------------------------------------------------
    def impostors_frame(self):
        """One row per (class, impostor): label, impostor, rank, accepts, far, share."""
        import pandas as pd

        rows = [{"label": c, "impostor": i.label, "rank": r + 1, "accepts": i.accepts,
                 "far": i.far, "share": i.share}
                for c, v in self.impostors.items() for r, i in enumerate(v)]
        return pd.DataFrame(rows, columns=["label", "impostor", "rank", "accepts", "far", "share"])

    def pairs_frame(self):
        """The whole sparse class-pair table (:data:`PAIRS_COLUMNS`); in-process only."""
        import pandas as pd

        if self.pairs is None:
            raise ValueError("this diagnosis has no class-pair table (it was read from JSON); "
                             "run evaluate(..., diagnose=True) or write it with --pairs")
        return pd.DataFrame(self.pairs.columns(), columns=list(PAIRS_COLUMNS))

    def overlap_frame(self):
        """The (at most 20) most overlapping pairs."""
        import pandas as pd

        cols = ["a", "b", "overlap", "accepts_ab", "accepts_ba", "pairs_ab", "pairs_ba"]
        return pd.DataFrame([p.to_dict() for p in self.overlap_top], columns=cols)

    def suspects_frame(self):
        """Every suspect row: row, label, looks_like, nearest_positive."""
        import pandas as pd

        return pd.DataFrame([s.to_dict() for s in self.suspects],
                            columns=["row", "label", "looks_like", "nearest_positive"])

    def rejected_frame(self):
        """One row per (class, rejected row): label, row, rejected, frr."""
        import pandas as pd

        rows = [{"label": c, **r.to_dict()} for c, v in self.rejected_rows.items() for r in v]
        return pd.DataFrame(rows, columns=["label", "row", "rejected", "frr"])

    def to_frames(self) -> dict:
        """``{"impostors", "pairs", "overlap", "rejected", "suspects"}`` data frames
        (``pairs`` only when the table is held)."""
        out = {"impostors": self.impostors_frame(), "overlap": self.overlap_frame(),
               "rejected": self.rejected_frame(), "suspects": self.suspects_frame()}
        if self.pairs is not None:
            out["pairs"] = self.pairs_frame()
        return out
