"""Cost of the float64 decisions of ``--verification`` and ``opis calibrate`` (issue 23).

Runs two commands of the CLI on the many-class sample (8,047 x 256, cosine),
each as a fresh child process (start-up, numba cache load and reading
included), with float64 decisions (the default) and with float32 decisions
(the private ``_OPIS_BENCH_FLOAT32_DECISIONS=1`` of ``base.key_margins``:
every margin 0, so no key is recomputed for its nearness to a bin edge, the
verification gather keeps float32 keys, and calibrate's brackets shrink to
one bin each side; the results are then not machine-independent),
alternating, best of ``--repeat`` after one warm-up each, and prints the
ratio of wall and of CPU time (user + system of the child, from ``wait4``):

    opis evaluate sample_data/wordnet_hyponyms.parquet --verification --json OUT -q
    opis calibrate sample_data/wordnet_hyponyms.parquet --folds 5 --json OUT -q

With ``--in-process`` the same two computations run through the Python API
in this one process (the sample read once, the switch flipped between calls:
``key_margins`` reads it at each call), alternating, best of ``--repeat`` of
the process CPU time: no start-up in either side, so the ratio is that of
the computations alone, and steadier on a busy machine.

With ``--baseline TREE`` the baseline is another source tree with float64
decisions (e.g. ``git archive af90d71 opis_cli | tar -x -C /tmp/base``), each
tree with its own numba cache. The machine may be shared: read the ratios,
the CPU ratio is the steadier one.

    python benchmarks/bench_verify_f64.py --repeat 3
    python benchmarks/bench_verify_f64.py --in-process --repeat 5
    python benchmarks/bench_verify_f64.py --cases verification --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import timed_child  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
SAMPLE = HERE / "sample_data" / "wordnet_hyponyms.parquet"

CASES = {
    "evaluate": ["evaluate", str(SAMPLE)],  # the same without the view: its share
    "verification": ["evaluate", str(SAMPLE), "--verification"],
    "calibrate": ["calibrate", str(SAMPLE), "--folds", "5"],
}


def _child(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child process, which must succeed."""
    return timed_child(cmd, env, cwd=tempfile.gettempdir())


def _env(src: Path, float32: bool, cache: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("_OPIS_BENCH_FLOAT32_DECISIONS", None)
    if float32:
        env["_OPIS_BENCH_FLOAT32_DECISIONS"] = "1"
    if cache:
        env["NUMBA_CACHE_DIR"] = cache
    return env


def in_process(cases: list[str], repeat: int) -> None:
    """Both decisions in this process, through the API (``--in-process``)."""
    import numpy as np
    import pyarrow.parquet as pq

    import opis_cli
    from opis_cli.engines import base
    from opis_cli.transfer import Data, calibrate

    t = pq.read_table(SAMPLE, columns=["embedding", "label"])
    x = np.asarray(t.column("embedding").to_pylist(), np.float32)
    y = t.column("label").to_pylist()
    run = {"evaluate": lambda: opis_cli.evaluate(x, y),
           "verification": lambda: opis_cli.evaluate(x, y, verification=True),
           "calibrate": lambda: calibrate(Data(x, y), folds=5)}
    print(f"in process, best of {repeat} after a warm-up, alternating")
    print(f"{'case':>13} {'float32 cpu':>11} {'float64 cpu':>11} {'cpu ratio':>9}")
    for case in cases:
        best = {True: float("inf"), False: float("inf")}
        for i in range(repeat + 1):
            for f32 in (True, False):
                base._FLOAT32_DECISIONS = f32
                c = time.process_time()
                run[case]()
                if i:  # the first round warms the kernels and caches
                    best[f32] = min(best[f32], time.process_time() - c)
        base._FLOAT32_DECISIONS = False
        print(f"{case:>13} {best[True]:11.2f} {best[False]:11.2f} {best[False] / best[True]:9.3f}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="evaluate,verification,calibrate",
                    help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="source tree of the baseline (default: this tree, float32 decisions)")
    ap.add_argument("--baseline-cache", default=None,
                    help="NUMBA_CACHE_DIR of the baseline tree (default: as this process)")
    ap.add_argument("--in-process", action="store_true",
                    help="time the API calls in this process instead (no start-up)")
    args = ap.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.in_process:
        in_process(cases, args.repeat)
        return
    print("baseline: " + ("this tree, float32 decisions" if args.baseline is None
                          else f"{args.baseline}, float64 decisions"))
    print(f"best of {args.repeat} after a warm-up, fresh processes, alternating")
    print(f"{'case':>13} {'base s':>7} {'new s':>7} {'ratio':>6} {'base cpu':>8} {'new cpu':>8}"
          f" {'cpu ratio':>9}")
    if args.baseline is None:
        base_env = _env(HERE, True, None)
    else:
        base_env = _env(args.baseline, False, args.baseline_cache)
    new_env = _env(HERE, False, None)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        for case in cases:
            cmd = [sys.executable, "-m", "opis_cli.cli", *CASES[case], "--json", out, "-q"]
            _child(cmd, base_env)
            _child(cmd, new_env)
            base = new = (float("inf"), float("inf"))
            for _ in range(args.repeat):
                b = _child(cmd, base_env)
                n = _child(cmd, new_env)
                base = (min(base[0], b[0]), min(base[1], b[1]))
                new = (min(new[0], n[0]), min(new[1], n[1]))
            print(f"{case:>13} {base[0]:7.2f} {new[0]:7.2f} {new[0] / base[0]:6.3f}"
                  f" {base[1]:8.2f} {new[1]:8.2f} {new[1] / base[1]:9.3f}", flush=True)


if __name__ == "__main__":
    main()
