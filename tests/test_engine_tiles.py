"""The exact engine over many tiles: workers, the upper-triangle pass, compaction.

The reference tests run on inputs that fit in one BLAS tile (1024 rows). Here
``base.TILE_BYTES`` is shrunk so that tiles are 64 rows and a few hundred
rows make many tiles: several workers share them, and the FAR pass over the
upper triangle sees strips that start past the diagonal of later tiles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reference as ref
from data_gen import gaussian, integer_rows
from opis_cli import evaluate
from opis_cli.engines import _kernels, base, tiles, workers
from opis_cli.prepare import Prepared
from ref_compare import compare, options_for, well_conditioned


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(base, "TILE_BYTES", 1)
    assert base.tile_rows(500) == 64


@pytest.fixture
def threads():
    """Set numba's thread count (the engine's number of workers) for one test."""
    import numba

    before = numba.get_num_threads()

    def set_(n: int) -> None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))

    yield set_
    numba.set_num_threads(before)


def _json(res) -> dict:
    d = json.loads(res.to_json())
    d["provenance"].pop("timestamp", None)
    return d


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_many_tiles_match_the_reference(small_tiles, threads, seed, metric):
    threads(2)
    opts = dict(options_for(seed), metric=metric)
    # few thresholds: with tens of thousands of pairs, 101 thresholds almost
    # always have a pair within float32 rounding of one (an ambiguous input)
    opts["num_thresholds"] = min(opts["num_thresholds"], 11)
    if seed % 3 == 2:
        opts["calibration_range"] = (0.6, 1.2) if metric == "cosine" else (1.0, 4.0)

    def make(s):
        return gaussian(s, n=200 + 23 * seed, dim=8, n_classes=9, singletons=s % 3)

    (x, y), r = well_conditioned(make, 500 + seed, lambda case: ref.evaluate(*case, **opts))
    compare(evaluate(x, y, timestamp=False, **opts), r, rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_many_tiles_exact_integer_rows(small_tiles, threads, seed):
    """Exact distances with ties and duplicates, groups, a query/gallery split."""
    threads(2)
    x, y = integer_rows(seed, n=260, n_classes=7)
    groups = [f"g{i % 3}" for i in range(len(y))]
    opts = dict(options_for(seed), metric="l2", groups=groups)
    if seed % 2:
        opts["is_query"] = np.arange(len(y)) % 4 != 1
    res = evaluate(x, y, timestamp=False, **opts)
    compare(res, ref.evaluate(x, y, **opts), rel=1e-9)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_workers_do_not_change_the_result(small_tiles, threads, metric):
    """One worker (one thread, or a block of one tile) vs two: same JSON bytes."""
    x, y = gaussian(41, n=700, dim=12, n_classes=15, singletons=4)
    groups = [f"g{i % 4}" for i in range(len(y))]
    threads(1)
    one = evaluate(x, y, groups=groups, metric=metric, timestamp=False).to_json()
    threads(2)
    two = evaluate(x, y, groups=groups, metric=metric, timestamp=False).to_json()
    one_tile = evaluate(x, y, groups=groups, metric=metric, block_bytes=1,
                        timestamp=False).to_json()
    assert one == two == one_tile


def test_upper_triangle_pass_is_used_and_changes_nothing(small_tiles, threads, monkeypatch):
    """Every row both query and gallery: pass 1 reads strips of the upper
    triangle; forcing full rows gives the same JSON."""
    threads(2)
    x, y = gaussian(42, n=500, dim=8, n_classes=11, singletons=3)
    calls = []
    real = _kernels.process_strip

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(_kernels, "process_strip", spy)
    sym = evaluate(x, y, timestamp=False)
    assert calls and sym.provenance["passes"] == 2
    widths = {shape[1] for shape in calls}
    assert max(widths) == 500 and min(widths) < 500  # strips start at their tile
    calls.clear()
    monkeypatch.setattr(Prepared, "symmetric", property(lambda self: False))
    monkeypatch.setattr(tiles, "_SPLIT", False)
    full = evaluate(x, y, timestamp=False)
    assert not calls
    assert full.to_json() == sym.to_json()


def test_strips_that_round_differently_fall_back_to_full_rows(small_tiles, threads, monkeypatch):
    """If the strips' products disagreed with the full rows' (other BLAS), the
    ranks would not check out in pass 2: pass 1 runs again on full rows and
    the result is the same as without the strips."""
    threads(2)
    x, y = gaussian(43, n=450, dim=8, n_classes=10)
    real = _kernels.process_strip

    def skewed(S, *rest):
        return real(S * np.float32(0.98), *rest)  # every product off by 2%

    monkeypatch.setattr(_kernels, "process_strip", skewed)
    fallback = _json(evaluate(x, y, timestamp=False))
    monkeypatch.setattr(Prepared, "symmetric", property(lambda self: False))
    monkeypatch.setattr(tiles, "_SPLIT", False)
    full = _json(evaluate(x, y, timestamp=False))
    assert fallback["provenance"].pop("passes") == 4
    assert full["provenance"].pop("passes") == 2
    assert fallback == full


@pytest.mark.parametrize("limit", [0.5, 0.0, -1.0, 2.0])
def test_compaction_keeps_the_keys_at_or_below_the_limit(limit):
    """The compactions (AVX-512 where the CPU has it; the portable loops are
    held to the same JSON by the test below) keep exactly the keys, and
    columns, at or below the limit, in order."""
    rng = np.random.default_rng(5)
    kb = np.round(rng.uniform(-1, 1, 1000), 1)  # many keys equal to the limit
    kb[[3, 500, 999]] = np.inf
    for j0, j1 in [(0, 1000), (3, 998), (7, 8), (5, 5), (0, 13)]:
        vals = np.full(1000 + 8, np.nan)
        n = _kernels._compact(kb, j0, j1, limit, vals, 2)
        expect = kb[j0:j1][kb[j0:j1] <= limit]
        assert n == 2 + len(expect)
        np.testing.assert_array_equal(vals[2:n], expect)
        lims = np.where(np.arange(1000) % 3 == 0, limit, -np.inf)
        n = _kernels._compact_each(kb, j0, j1, lims, vals, 0)
        keep = kb[j0:j1] <= lims[j0:j1]
        np.testing.assert_array_equal(vals[:n], kb[j0:j1][keep])
        idx = np.full(1000 + 8, -1, np.int64)
        n = _kernels._compact_idx(kb, j0, j1, limit, vals, idx, 2, 40)
        cols = np.nonzero(kb[j0:j1] <= limit)[0] + j0
        assert n == 2 + len(cols)
        np.testing.assert_array_equal(vals[2:n], kb[cols])
        np.testing.assert_array_equal(idx[2:n], cols + 40)
        n = _kernels._compact_idx_each(kb, j0, j1, lims, vals, idx, 0, 7)
        cols = np.nonzero(kb[j0:j1] <= lims[j0:j1])[0] + j0
        assert n == len(cols)
        np.testing.assert_array_equal(vals[:n], kb[cols])
        np.testing.assert_array_equal(idx[:n], cols + 7)


def test_portable_kernels_give_the_same_json(tmp_path):
    """OPIS_NO_AVX512=1 compiles the portable compaction: same JSON bytes
    (every row a query, two splits: the symmetric strips, the split's upper
    triangle and full rows).

    (On a CPU without AVX-512 both runs take the portable code.)
    """
    script = (
        "from data_gen import gaussian; from opis_cli import evaluate; from opis_cli.engines import _kernels;"
        "x, y = gaussian(44, n=600, dim=16, n_classes=12, singletons=2);"
        "print(_kernels.AVX512);"
        "print(evaluate(x, y, timestamp=False).to_json());"
        "print(evaluate(x, y, metric='l2', calibration_range=(0.5, 3.0), timestamp=False).to_json());"
        # a split whose queries are gallery items (the split's upper triangle)
        # and one whose are not (full rows)
        "import numpy as np; q = np.arange(600) % 2 == 0;"
        "print(evaluate(x, y, is_query=q, timestamp=False).to_json());"
        "print(evaluate(x, y, is_query=q, is_gallery=~q, timestamp=False).to_json())"
    )
    tests = str(Path(__file__).parent)  # data_gen's folder, for the child's imports
    outs = []
    for flag in ("", "1"):
        # the default build loads the suite's cached kernels; the portable build
        # compiles into a cache of its own (a cache entry does not record the flag)
        cache = {"NUMBA_CACHE_DIR": str(tmp_path / "nb")} if flag else {}
        env = dict(os.environ, OPIS_NO_AVX512=flag, **cache,
                   PYTHONPATH=os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
        p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        outs.append(p.stdout.splitlines())
    assert outs[1][0] == "False"
    assert outs[0][1:] == outs[1][1:]


def test_an_error_in_one_worker_stops_the_others(threads):
    """An exception (or Ctrl-C) while waiting for the workers empties the tile
    queue: the other workers finish their tile and stop instead of running
    the whole pass in the background."""
    import threading
    import time

    threads(2)
    tiles = workers.TileQueue(range(200))
    done = []
    started = threading.Event()

    def work(slot):
        for t in tiles:
            if slot == 0:
                started.wait(5)
                raise RuntimeError("worker 0 failed")
            started.set()
            time.sleep(0.005)
            done.append(t)

    with pytest.raises(RuntimeError, match="worker 0 failed"):
        workers.in_workers(2, work, tiles)
    time.sleep(0.2)  # worker 1 finishes its tile and finds the queue empty
    assert 0 < len(done) < 50
    assert list(tiles) == []


@pytest.mark.parametrize("two", [False, True])
@pytest.mark.parametrize("groups", [False, True])
def test_deferred_elements_are_counted_for_each_of_their_rows(two, groups):
    """``tiles._add_cells`` (``_kernels.add_cells``) against a plain loop: cells
    above the grid not counted, a second row of -1 counted for none, rows
    without a group (or outside the table) for no group."""
    from types import SimpleNamespace

    from opis_cli.engines.partial import Part

    rng = np.random.default_rng(7 + 2 * two + groups)
    C, G, K, nq, n = 5, 3, 6, 40, 3000
    q_class = rng.integers(0, C, nq)
    q_group = rng.integers(-1, G + 1, nq) if groups else None  # -1 and G: no group
    prep = SimpleNamespace(q_class=q_class, q_group=q_group)
    cells = rng.integers(0, K + 2, n)  # K and above: above the grid
    pos = rng.random(n) < 0.3
    q = rng.integers(0, nq, n).astype(np.int32)
    q2 = np.where(rng.random(n) < 0.5, -1, rng.integers(0, nq, n)).astype(np.int32)
    res = Part.empty(C, G, K)
    start = rng.integers(0, 9, (4, max(C, G), K))  # counts already there are kept
    for a, s in zip((res.class_all, res.class_pos, res.group_all, res.group_pos), start):
        a[...] = s[:a.shape[0]]
    want = [a.copy() for a in (res.class_all, res.class_pos, res.group_all, res.group_pos)]
    for e in range(n):
        if cells[e] >= K:
            continue
        for r in ([q[e], q2[e]] if two else [q[e]]):
            if r < 0:
                continue
            want[0][q_class[r], cells[e]] += 1
            want[1][q_class[r], cells[e]] += pos[e]
            if groups and 0 <= q_group[r] < G:
                want[2][q_group[r], cells[e]] += 1
                want[3][q_group[r], cells[e]] += pos[e]
    tiles._add_cells(res, prep, cells, pos, q, q2 if two else None)
    for got, w in zip((res.class_all, res.class_pos, res.group_all, res.group_pos), want):
        np.testing.assert_array_equal(got, w)
