"""The Markdown tables of the example: mean ± std over seeds, and paired effects.

No torch and no opis_cli here: plain arithmetic on :class:`~.scoring.ArmScore` rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from .scoring import ArmScore

#: Arm key -> display name, in table order. ``base`` is the Multi-Similarity
#: head; ``frozen`` the sentence embeddings without any head (a reference).
ARMS = {
    "frozen": "frozen embeddings, no head",
    "frozen+cluster": "frozen + cluster normalisation",
    "base": "Multi-Similarity (base)",
    "base+tcm": "base + TCM",
    "base+cluster": "base + cluster normalisation",
    "base+tcm+cluster": "base + TCM + cluster normalisation",
}

#: (header, ArmScore attribute, scale, decimals); FAR and TPR shown in percent.
COLUMNS = (("OPIS", "opis", 1.0, 4), ("10%-OPIS", "epsilon_opis", 1.0, 4),
           ("R@1", "recall_at_1", 1.0, 3), ("FAR %", "far", 100.0, 2),
           ("TPR %", "tpr", 100.0, 1))

#: (arm, the arm it is compared with) for the paired table.
PAIRS = (("base+tcm", "base"), ("base+cluster", "base"), ("base+tcm+cluster", "base"),
         ("frozen+cluster", "frozen"), ("base", "frozen"))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _ordered(scores: Sequence[ArmScore]) -> list[str]:
    present = {s.arm for s in scores}
    return [a for a in ARMS if a in present] + sorted(present - set(ARMS))


def results_table(scores: Sequence[ArmScore], target_far: float = 0.01) -> str:
    """One row per arm: mean ± std over its seeds of every column."""
    head = [h if h != "FAR %" else f"FAR % (target {100 * target_far:g}%)" for h, *_ in COLUMNS]
    lines = ["| arm | seeds | " + " | ".join(head) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for arm in _ordered(scores):
        runs = [s for s in scores if s.arm == arm]
        cells = []
        for _, attr, scale, digits in COLUMNS:
            m, sd = mean_std([scale * getattr(s, attr) for s in runs])
            cells.append(f"{m:.{digits}f} ± {sd:.{digits}f}")
        lines.append(f"| {ARMS.get(arm, arm)} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_table(scores: Sequence[ArmScore], target_far: float = 0.01) -> str:
    """Each fix against what it changes, seed by seed (same seed, same unseen classes).

    Δ is ``arm - reference`` (mean ± std over seeds); the counts say in how
    many seeds OPIS and 10%-OPIS went down, R@1 went up, and the achieved
    FAR came nearer the target.
    """
    lines = ["| arm | vs | seeds | Δ OPIS | Δ 10%-OPIS | Δ R@1 | OPIS down | 10%-OPIS down "
             "| R@1 up | FAR nearer target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    by = {(s.arm, s.seed): s for s in scores}
    for arm, ref in PAIRS:
        seeds = sorted(k for a, k in by if a == arm and (ref, k) in by)
        if not seeds:
            continue
        d = {attr: [getattr(by[arm, k], attr) - getattr(by[ref, k], attr) for k in seeds]
             for attr in ("opis", "epsilon_opis", "recall_at_1")}
        nearer = sum(abs(by[arm, k].far - target_far) < abs(by[ref, k].far - target_far)
                     for k in seeds)
        n = len(seeds)
        cells = [_signed(d["opis"], 4), _signed(d["epsilon_opis"], 4),
                 _signed(d["recall_at_1"], 3),
                 f"{sum(x < 0 for x in d['opis'])}/{n}",
                 f"{sum(x < 0 for x in d['epsilon_opis'])}/{n}",
                 f"{sum(x > 0 for x in d['recall_at_1'])}/{n}", f"{nearer}/{n}"]
        lines.append(f"| {ARMS.get(arm, arm)} | {ARMS.get(ref, ref)} | {n} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _signed(values: Sequence[float], digits: int) -> str:
    m, sd = mean_std(values)
    return f"{m:+.{digits}f} ± {sd:.{digits}f}"


def scores_json(scores: Sequence[ArmScore]) -> str:
    """Every (arm, seed) row as JSON, in table order."""
    order = {a: i for i, a in enumerate(_ordered(scores))}
    rows = sorted(scores, key=lambda s: (order[s.arm], s.seed))
    return json.dumps([s.to_dict() for s in rows], indent=1, sort_keys=True) + "\n"
