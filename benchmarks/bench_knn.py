"""Error, time and memory of the approximate engine (``--engine knn``) against the exact one.

Three parts (``--parts``, default all):

* ``sample``: the two sample datasets. The exact engine picks the default
  FAR-defined range; the knn engine then runs with that range given
  explicitly, so both count on the same thresholds. Printed per index and K:
  OPIS and 10%-OPIS of each engine, the global FAR at the upper threshold
  (exact, reported by knn, knn's upper bound), queries truncated inside the
  range, the index's recall on knn's sampled check, and the time ratio
  knn / exact measured in the same run.
* ``synthetic``: the same on synthetic data (default 50k x 128) at a low FAR
  range that a K-nearest search can reach: ``lowrank`` (classes clustered in
  16 latent dimensions embedded in 128, like real embeddings) and
  ``isotropic`` (high-dimensional noise around the class centres: the hard
  case for any approximate index).
* ``large``: the knn engine alone at 1M x 128 (``--large-rows``) in a child
  process: time per stage, peak memory, the truncation and FAR bounds it
  reports, and its sampled check (256 queries searched exhaustively: exact vs
  reported FAR of those queries). The exact engine at this size needs about
  2.6e14 multiply-adds, well past a benchmark's budget on a small machine.

    python benchmarks/bench_knn.py
    python benchmarks/bench_knn.py --parts large --large-rows 1000000 --large-index ivf
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import low_rank, machine, peak_mib, run_child, synthetic  # noqa: E402

import opis_cli  # noqa: E402
from opis_cli.engines.knn import ApproximationWarning, KnnEngine  # noqa: E402
from opis_cli.io import read_dataset  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTERED = (0.8, 2.5)  # per-class noise relative to the class centres


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def compare(name: str, x, y, far_range, indexes, ks) -> None:
    exact, t_exact = _timed(lambda: opis_cli.evaluate(x, y, far_range=far_range))
    cr = exact.calibration_range
    P = exact.classes
    m_total = sum(c.negatives for c in P.per_class)
    fp_exact = int(exact.classes.curves.fp[:, -1].sum())
    print(f"\n{name}: {len(y)} x {x.shape[1]}, FAR range {far_range[0]:g}:{far_range[1]:g} -> "
          f"distances {cr.lower:.5g}..{cr.upper:.5g}; exact engine {t_exact:.1f} s, "
          f"OPIS {exact.opis:.5f}, 10%-OPIS {exact.epsilon_opis:.5f}")
    print(f"{'index':>5} {'K':>5} {'OPIS':>8} {'dOPIS':>8} {'d10%':>8} {'FAR exact':>10} "
          f"{'reported':>9} {'upper':>9} {'trunc@hi':>9} {'recall':>7} {'t/exact':>8}")
    for index in indexes:
        for k in ks:
            eng = KnnEngine(k=k, index=index)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ApproximationWarning)
                res, t = _timed(lambda: opis_cli.evaluate(
                    x, y, engine=eng, calibration_range=(cr.lower, cr.upper)))
            # the engine's notes, for the bounds (the result's provenance)
            n = res.provenance["engine_notes"]
            fp_rep = int(res.classes.curves.fp[:, -1].sum())
            smp = n.get("sample", {})
            print(f"{index:>5} {k:>5} {res.opis:8.5f} {res.opis - exact.opis:+8.5f} "
                  f"{res.epsilon_opis - exact.epsilon_opis:+8.5f} {fp_exact / m_total:10.5f} "
                  f"{fp_rep / m_total:9.5f} {n['far_upper_bound_at_upper']:9.5f} "
                  f"{n['queries_truncated_at_upper']:>9} "
                  f"{smp.get('index_recall', 1.0):7.3f} {t / t_exact:8.2f}", flush=True)


def part_sample(args) -> None:
    for f in ("digits_weak.parquet", "digits_strong.parquet"):
        ds = read_dataset(os.path.join(REPO, "sample_data", f))
        compare(f, ds.embeddings, ds.labels, (0.01, 0.1), ("flat", "hnsw", "ivf"),
                (100, 300, 1000))


def _data(kind: str, n: int, d: int, seed: int):
    if kind == "lowrank":
        return low_rank(n, d, seed=seed), "low-rank synthetic (16 latent dimensions)"
    return synthetic(n, d, spread=CLUSTERED, seed=seed), \
        f"isotropic synthetic (noise {CLUSTERED[0]}-{CLUSTERED[1]} x the centres)"


def part_synthetic(args) -> None:
    n, d = (int(v) for v in args.synthetic.lower().split("x"))
    for kind in args.data.split(","):
        (x, y), name = _data(kind, n, d, seed=1)
        compare(name, x, y, (1e-4, 1e-3), ("flat", "hnsw", "ivf"),
                tuple(int(k) for k in args.ks.split(",")))


def child_large(args) -> None:
    (x, y), _ = _data(args.data, args.large_rows, 128, seed=2)
    base = peak_mib()
    stages: dict[str, list[float]] = {}

    def progress(stage, done, total):
        now = time.perf_counter()
        stages.setdefault(stage, [now, now])[1] = now

    eng = KnnEngine(k=args.large_k, index=args.large_index, nprobe=args.large_nprobe)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ApproximationWarning)
        res, t = _timed(lambda: opis_cli.evaluate(x, y, engine=eng, far_range=args.large_far,
                                                  progress=progress))
    n = res.provenance["engine_notes"]
    print(json.dumps({
        "seconds": t, "peak_mib": peak_mib(), "data_peak_mib": base,
        "stages": {k: v[1] - v[0] for k, v in stages.items()},
        "opis": res.opis, "epsilon_opis": res.epsilon_opis,
        "range": [res.calibration_range.lower, res.calibration_range.upper],
        "notes": {k: v for k, v in n.items() if k != "delta"},
        "warnings": [str(w.message) for w in caught],
    }))


def part_large(args) -> None:
    for kind in args.data.split(","):
        _large(args, kind)


def _large(args, kind: str) -> None:
    print(f"\nknn engine at {args.large_rows} x 128 ({kind} synthetic), index "
          f"{args.large_index}, K={args.large_k}, FAR range {args.large_far}:", flush=True)
    extra = ["--large-nprobe", str(args.large_nprobe)] if args.large_nprobe else []
    r = run_child(os.path.abspath(__file__), [
        "--child-large", "--large-rows", str(args.large_rows), "--large-k", str(args.large_k),
        "--large-index", args.large_index, "--large-far", args.large_far, "--data", kind,
        *extra])
    data = args.large_rows * 128 * 4 / 2**20
    print(f"  total {r['seconds']:.0f} s; by stage: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in r["stages"].items()))
    print(f"  peak memory {r['peak_mib']:.0f} MiB (embeddings {data:.0f} MiB; "
          f"{r['data_peak_mib']:.0f} MiB after generating them)")
    n = r["notes"]
    print(f"  OPIS {r['opis']:.5f}, 10%-OPIS {r['epsilon_opis']:.5f}, range "
          f"{r['range'][0]:.5g}..{r['range'][1]:.5g} ({n['index']})")
    print(f"  queries truncated inside the range: {n['queries_truncated_at_upper']} of "
          f"{n['queries']}; global FAR at the upper threshold {n['far_at_upper']:.3g} "
          f"(bounds {n['far_lower_bound_at_upper']:.3g}..{n['far_upper_bound_at_upper']:.3g})")
    s = n.get("sample")
    if s:
        print(f"  check on {s['rows']} queries searched exhaustively: index recall "
              f"{s['index_recall']:.3f}, negatives missed nearer than the K-th "
              f"{s['missed_nearer_than_kth']}; FAR at the upper threshold exact "
              f"{s['far_exact_at_upper']:.3g} vs reported {s['far_reported_at_upper']:.3g}, "
              f"at the lower exact {s['far_exact_at_lower']:.3g} vs reported "
              f"{s['far_reported_at_lower']:.3g}")
    for w in r["warnings"]:
        print("  warning:", w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="sample,synthetic,large")
    ap.add_argument("--synthetic", default="50000x128")
    ap.add_argument("--data", default="lowrank,isotropic",
                    help="synthetic data: lowrank (16 latent dimensions), isotropic, or both")
    ap.add_argument("--ks", default="100,300", help="K values of the synthetic part")
    ap.add_argument("--large-nprobe", type=int, default=None)
    ap.add_argument("--large-rows", type=int, default=1_000_000)
    ap.add_argument("--large-k", type=int, default=100)
    ap.add_argument("--large-index", default="ivf")
    ap.add_argument("--large-far", default="1e-5:5e-5")
    ap.add_argument("--child-large", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_large:
        child_large(args)
        return
    print(machine())
    # warm the compiled kernels once (cached on disk)
    xw, yw = synthetic(500, 16, seed=3)
    opis_cli.evaluate(xw, yw)
    parts = {"sample": part_sample, "synthetic": part_synthetic, "large": part_large}
    for p in args.parts.split(","):
        parts[p](args)


if __name__ == "__main__":
    main()
