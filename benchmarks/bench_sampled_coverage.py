"""Honesty of ``--engine sampled``: coverage of its 95% intervals and its error against exact.

On data where the exact engine is affordable, the exact result is computed
once; the sampled engine then runs with seeds ``0 .. --seeds - 1``. Printed
per dataset and ``--negatives-per-query`` S (SPEC 15 quantities):

* ``cover``: the share of seeds whose interval holds the exact value (95%
  is the stated rate; with 40 seeds a true 95% lands in 88-100% nine times
  in ten);
* ``width``: the mean interval width relative to the exact value (for the
  threshold and the range ends: in distance units);
* ``|err|``: the mean absolute error of the estimate relative to the exact
  value (distances: absolute);
* for OPIS and epsilon-OPIS also ``bias``: the mean signed error of the
  reported (bias-corrected) estimate and of the plug-in one, in units of
  the mean jackknife standard error, which shows what the correction does.

Datasets: the shipped many-class sample (``sample_data/wordnet_hyponyms.parquet``:
8,047 rows, 1,300 classes) and synthetic clustered data from ``_common``
(``low_rank``: classes in 16 latent dimensions; ``synthetic``: isotropic
noise around class centres), with few rows per class as in large
open-set evaluations.

    python benchmarks/bench_sampled_coverage.py
    python benchmarks/bench_sampled_coverage.py --seeds 100 --negatives 250,1000,4000 --data wordnet
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import low_rank, machine, synthetic

import opis_cli
from opis_cli.engines.sampled import SampledEngine
from opis_cli.io import read_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("opis", "epsilon_opis", "calibration_range.lower", "calibration_range.upper",
         "recommended_threshold.value", "recall_at_k.1", "map_at_r")
DISTANCES = ("calibration_range.lower", "calibration_range.upper", "recommended_threshold.value")


def datasets(which: list[str]):
    if "wordnet" in which:
        ds = read_dataset(os.path.join(REPO, "sample_data", "wordnet_hyponyms.parquet"))
        yield "wordnet 8047 x 256, 1300 classes", ds.embeddings, ds.labels
    if "lowrank" in which:
        x, y = low_rank(30000, 128, rows_per_class=3, seed=1)
        yield "low-rank synthetic 30000 x 128, 3 rows/class", x, y
    if "isotropic" in which:
        x, y = synthetic(20000, 128, rows_per_class=10, spread=(0.8, 2.5), seed=2)
        yield "isotropic synthetic 20000 x 128, 10 rows/class", x, y


def values(r) -> dict:
    cr = r.calibration_range
    return {"opis": r.opis, "epsilon_opis": r.epsilon_opis, "calibration_range.lower": cr.lower,
            "calibration_range.upper": cr.upper,
            "recommended_threshold.value": r.recommended_threshold.value,
            "recall_at_k.1": r.retrieval.recall_at_k["1"], "map_at_r": r.retrieval.map_at_r}


def run(name, x, y, negatives, seeds, queries) -> None:
    t = time.perf_counter()
    exact = values(opis_cli.evaluate(x, y, timestamp=False))
    t_exact = time.perf_counter() - t
    print(f"\n{name}: exact {t_exact:.1f} s; OPIS {exact['opis']:.5f}, 10%-OPIS "
          f"{exact['epsilon_opis']:.5f}, range {exact['calibration_range.lower']:.5f}.."
          f"{exact['calibration_range.upper']:.5f}, R@1 {exact['recall_at_k.1']:.4f}, "
          f"MAP@R {exact['map_at_r']:.4f}")
    for S in negatives:
        hits = {k: 0 for k in NAMES}
        width = {k: [] for k in NAMES}
        err = {k: [] for k in NAMES}
        bias = {k: [] for k in ("opis", "epsilon_opis", "plug_opis", "plug_epsilon_opis")}
        ses = {k: [] for k in ("opis", "epsilon_opis")}
        secs = []
        for seed in range(seeds):
            eng = SampledEngine(negatives_per_query=S, retrieval_queries=queries, seed=seed)
            t = time.perf_counter()
            r = opis_cli.evaluate(x, y, engine=eng, timestamp=False)
            secs.append(time.perf_counter() - t)
            got = values(r)
            iv = r.estimate.intervals
            for k in NAMES:
                lo, hi = iv[k]
                hits[k] += lo <= exact[k] <= hi
                scale = 1.0 if k in DISTANCES else abs(exact[k])
                width[k].append((hi - lo) / scale)
                err[k].append(abs(got[k] - exact[k]) / scale)
            for k in ("opis", "epsilon_opis"):
                lo, hi = iv[k]
                ses[k].append((hi - lo) / (2 * 2.262))
                bias[k].append(got[k] - exact[k])
                bias["plug_" + k].append(r.estimate.plug_in[k] - exact[k])
        print(f"  S={S} ({seeds} seeds, {np.mean(secs):.1f} s each, "
              f"{np.mean(secs) / t_exact:.2f} x exact):")
        print(f"    {'quantity':<28} {'cover':>6} {'width':>9} {'|err|':>9}")
        for k in NAMES:
            unit = "" if k in DISTANCES else "%"
            f = (lambda v: f"{v:9.5f}") if k in DISTANCES else (lambda v: f"{100 * v:8.2f}%")
            print(f"    {k:<28} {100 * hits[k] / seeds:5.0f}% {f(np.mean(width[k]))} "
                  f"{f(np.mean(err[k]))}{unit and ''}")
        for k in ("opis", "epsilon_opis"):
            se = float(np.mean(ses[k]))
            print(f"    bias of {k}: reported {np.mean(bias[k]) / se:+.2f} se, plug-in "
                  f"{np.mean(bias['plug_' + k]) / se:+.2f} se (se {se:.2g})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--negatives", default="1000", help="values of --negatives-per-query")
    ap.add_argument("--queries", type=int, default=1000, help="--retrieval-queries")
    ap.add_argument("--data", default="wordnet,lowrank,isotropic")
    args = ap.parse_args()
    print(machine())
    negatives = [int(v) for v in args.negatives.split(",")]
    for name, x, y in datasets(args.data.split(",")):
        run(name, x, y, negatives, args.seeds, args.queries)


if __name__ == "__main__":
    main()
