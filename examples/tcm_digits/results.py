"""Embeddings to Parquet, per-run scores, and the Markdown results tables.

No torch here: this is the part of the example that turns embeddings into
numbers, and it is tested without the ``train`` extra.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import opis_cli
from opis_cli.io.output import atomic_path

#: Display names of the base losses, in table order.
LOSS_NAMES = {"arcface": "ArcFace", "ms": "Multi-Similarity"}


def run_name(loss: str, tcm: bool, seed: int) -> str:
    """File stem of one run, e.g. ``arcface-tcm-seed0`` or ``ms-seed3``."""
    return f"{loss}{'-tcm' if tcm else ''}-seed{seed}"


def write_embeddings(path: str | os.PathLike, embeddings: np.ndarray, labels: Sequence[str]) -> None:
    """Write one run's embeddings as Parquet, atomically.

    Columns: ``embedding`` ``fixed_size_list<float32>[D]`` and ``label``
    ``string`` -- what ``opis evaluate PATH`` reads by default.
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(labels):
        raise ValueError(f"expected (N, D) embeddings for {len(labels)} labels, got {emb.shape}")
    table = pa.table({
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1]),
        "label": pa.array([str(v) for v in labels], type=pa.string()),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


@dataclass(frozen=True)
class RunScore:
    """The headline numbers of one trained model on the test classes."""

    loss: str
    tcm: bool
    seed: int
    recall_at_1: float
    opis: float
    epsilon_opis: float

    @classmethod
    def from_result(cls, loss: str, tcm: bool, seed: int,
                    result: opis_cli.EvaluationResult) -> "RunScore":
        return cls(loss=loss, tcm=tcm, seed=seed,
                   recall_at_1=float(result.retrieval.recall_at_k["1"]),
                   opis=float(result.opis), epsilon_opis=float(result.epsilon_opis))


def score_file(path: str | os.PathLike, loss: str, tcm: bool, seed: int) -> RunScore:
    """Read a run's Parquet back with ``opis_cli.io`` and evaluate it (SPEC defaults)."""
    from opis_cli.io import read_dataset

    ds = read_dataset(path)
    return RunScore.from_result(loss, tcm, seed,
                                opis_cli.evaluate(ds.embeddings, ds.labels, timestamp=False))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def fmt(mean: float, std: float, digits: int) -> str:
    """``mean ± std`` with ``digits`` decimals."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


_METRICS = (("R@1", "recall_at_1", 3), ("OPIS", "opis", 4), ("10%-OPIS", "epsilon_opis", 4))


def _ordered_losses(scores: Iterable[RunScore]) -> list[str]:
    present = {s.loss for s in scores}
    return [k for k in LOSS_NAMES if k in present] + sorted(present - set(LOSS_NAMES))


def results_table(scores: Sequence[RunScore]) -> str:
    """Markdown table: per base loss, without and with TCM, mean ± std over seeds."""
    lines = ["| base loss | TCM | seeds | R@1 | OPIS | 10%-OPIS |",
             "|---|---|---|---|---|---|"]
    for loss in _ordered_losses(scores):
        for tcm in (False, True):
            runs = [s for s in scores if s.loss == loss and s.tcm == tcm]
            if not runs:
                continue
            cells = [fmt(*mean_std([getattr(s, attr) for s in runs]), digits)
                     for _, attr, digits in _METRICS]
            lines.append(f"| {LOSS_NAMES.get(loss, loss)} | {'yes' if tcm else 'no'} | "
                         f"{len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_table(scores: Sequence[RunScore]) -> str:
    """Markdown table of the paired effect of TCM (same base loss, same seed).

    For each metric: the mean ± std over seeds of ``with TCM - without TCM``,
    and in how many seeds the metric went down (lower is better for OPIS,
    higher for R@1).
    """
    lines = ["| base loss | pairs | Δ R@1 | Δ OPIS | Δ 10%-OPIS | R@1 up | OPIS down | 10%-OPIS down |",
             "|---|---|---|---|---|---|---|---|"]
    for loss in _ordered_losses(scores):
        base = {s.seed: s for s in scores if s.loss == loss and not s.tcm}
        tcm = {s.seed: s for s in scores if s.loss == loss and s.tcm}
        seeds = sorted(set(base) & set(tcm))
        if not seeds:
            continue
        deltas, counts = [], []
        for _, attr, digits in _METRICS:
            d = [getattr(tcm[k], attr) - getattr(base[k], attr) for k in seeds]
            deltas.append(_signed(*mean_std(d), digits))
            better = [x > 0 for x in d] if attr == "recall_at_1" else [x < 0 for x in d]
            counts.append(f"{sum(better)}/{len(seeds)}")
        lines.append(f"| {LOSS_NAMES.get(loss, loss)} | {len(seeds)} | " + " | ".join(deltas)
                     + " | " + " | ".join(counts) + " |")
    return "\n".join(lines) + "\n"


def _signed(mean: float, std: float, digits: int) -> str:
    return f"{mean:+.{digits}f} ± {std:.{digits}f}"


def scores_json(scores: Sequence[RunScore]) -> str:
    """Every run's scores as a JSON list (sorted keys, stable order)."""
    rows = sorted((asdict(s) for s in scores), key=lambda r: (r["loss"], r["tcm"], r["seed"]))
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and not math.isfinite(v):
                r[k] = None
    return json.dumps(rows, indent=2, sort_keys=True) + "\n"
