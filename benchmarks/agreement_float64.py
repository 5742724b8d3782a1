"""How far ``opis evaluate`` is from an independent float64 implementation.

Runs the engine and the naive float64 reference of SPEC 2-7
(``tests/reference.py``: distances from the rows normalised in float64) on
the many-class sample and prints, per option set, the largest difference of
a class's mean utility, and the differences of R@1, MAP@R and the range's
lower end. The reference holds the N x N matrix: a few thousand rows only.

    python benchmarks/agreement_float64.py
    PYTHONPATH=/path/to/older/checkout python benchmarks/agreement_float64.py   # before/after
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import opis_cli  # noqa: E402
import reference as ref  # noqa: E402

OPTIONS = [dict(), dict(calibration_range=(0.6, 0.9)),
           dict(calibration_range=(0.7, 0.8), num_thresholds=1001)]


def main() -> None:
    t = pq.read_table(ROOT / "sample_data" / "wordnet_hyponyms.parquet")
    x = np.asarray(t.column("embedding").to_pylist(), dtype=np.float32)
    y = t.column("label").to_pylist()
    print(f"opis_cli from {opis_cli.__file__}")
    print(f"{'options':<52} {'class mean utility':>18} {'R@1':>9} {'MAP@R':>9} {'lower end':>9}")
    for opts in OPTIONS:
        res = opis_cli.evaluate(x, y, timestamp=False, **opts)
        r = ref.evaluate(x.astype(np.float64), y, **opts)
        eng = {c.label: c.mean_utility for c in res.classes.per_class}
        diff = max(abs(eng[k] - r.classes.mean_utility[k]) for k in r.classes.labels)
        r1 = abs(res.retrieval.recall_at_k["1"] - r.retrieval["recall_at_k"]["1"])
        mp = abs(res.retrieval.map_at_r - r.retrieval["map_at_r"])
        lo = abs(res.calibration_range.lower - r.lower)
        print(f"{str(opts) or 'defaults':<52} {diff:18.2e} {r1:9.1e} {mp:9.1e} {lo:9.1e}")


if __name__ == "__main__":
    main()
