"""The early memory check of ``read_dataset``: estimate, compare, fail before reading.

The estimate's terms are checked against the formula written in
``memory_needed``'s docstring (worked by hand below); whether the formula
matches real peaks is measured by ``benchmarks/bench_scale.py``, which prints
both.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opis_cli.cli import main
from opis_cli.engines.base import tile_rows
from opis_cli.errors import InputError
from opis_cli.engines import memory
from opis_cli.engines.memory import available_memory, check_memory, memory_needed
from opis_cli.io import read_dataset

MiB = 2**20


def test_terms_follow_the_documented_formula():
    t = memory_needed(1000, 10, stored_itemsize=2, parquet=True, queries=600, gallery=800,
                      groups=True, block_bytes=3 * 4 * 800, threads=3)
    assert t["stored"] == 1000 * 10 * 2
    assert t["reading"] == 1000 * 10 * 2
    assert t["labels"] == 1000 * 72 * 2
    assert t["rows"] == 1000 * 200
    assert t["float32"] == (600 + 800) * 10 * 4
    # a block of 3 query rows holds less than one tile: one worker, one tile;
    # the working copy (40 kB) is smaller than tile + pilot + the worker's keys
    tile = tile_rows(800)
    assert tile >= 3
    assert t["working"] == tile * 800 * 4 + 64 * MiB + 3 * 800 * 8
    # a block of two tiles: two of the three threads work at once
    t2 = memory_needed(5000, 10, queries=5000, gallery=800, block_bytes=2 * tile * 800 * 4,
                       threads=3)
    assert 5000 > 2 * tile
    assert t2["working"] == 2 * (tile * 800 * 4 + 3 * 800 * 8) + 64 * MiB
    assert t["base"] == 400 * MiB
    assert t["total"] == sum(v for k, v in t.items() if k != "total")


def test_working_copy_dominates_for_wide_embeddings():
    t = memory_needed(10_000, 4096, block_bytes=MiB, threads=2)
    assert t["working"] == 10_000 * 4096 * 4
    assert t["float32"] == 2 * 10_000 * 4096 * 4  # every row is query and gallery
    assert t["reading"] == 0  # not Parquet


def test_memory_mapped_input_costs_nothing_as_stored():
    assert memory_needed(500, 8, stored_itemsize=0)["stored"] == 0


def test_check_passes_at_the_estimate_and_fails_one_byte_below():
    need = memory_needed(50_000, 256, threads=2)["total"]
    check_memory("x.parquet", 50_000, 256, available=need, threads=2)
    with pytest.raises(InputError) as e:
        check_memory("x.parquet", 50_000, 256, available=need - 1, threads=2)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("x.parquet: 50000 x 256 embeddings need about ")
    assert f"{need / 2**30:.1f} GiB" in msg
    assert f"but {(need - 1) / 2**30:.1f} GiB is available" in msg


def _parquet(path, n=300, d=6, groups=3, fixed=True):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    flat = pa.array(x.ravel())
    emb = pa.FixedSizeListArray.from_arrays(flat, d) if fixed else \
        pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), flat)
    table = pa.table({"embedding": emb, "label": rng.integers(0, 5, n)})
    pq.write_table(table, path, row_group_size=n // groups)
    return path


@pytest.mark.parametrize("fixed", [True, False])
def test_parquet_fails_before_reading_rows(tmp_path, fixed):
    path = str(_parquet(tmp_path / "e.parquet", fixed=fixed))
    calls = []
    with pytest.raises(InputError, match=r"e\.parquet: 300 x 6 embeddings need about"):
        read_dataset(path, memory_available=1000, progress=lambda d, t: calls.append(d))
    assert calls == []  # not one row group was delivered


def test_parquet_reads_when_it_fits_or_check_is_off(tmp_path):
    path = str(_parquet(tmp_path / "e.parquet"))
    big = memory_needed(300, 6, parquet=True)["total"]
    assert read_dataset(path, memory_available=big).n_samples == 300
    assert read_dataset(path, memory_available=1, check_memory_fits=False).n_samples == 300


def test_numpy_inputs_are_checked(tmp_path):
    x = np.zeros((40, 3), np.float32)
    npy, npz = tmp_path / "e.npy", tmp_path / "e.npz"
    np.save(npy, x)
    np.savez(npz, embeddings=x, labels=np.arange(40) % 2)
    with pytest.raises(InputError, match=r"e\.npy: 40 x 3 embeddings need about"):
        read_dataset(str(npy), labels_path=None, memory_available=1)
    with pytest.raises(InputError, match=r"e\.npz: 40 x 3 embeddings need about"):
        read_dataset(str(npz), memory_available=1)


def test_available_memory_is_known_here():
    avail = available_memory()
    assert isinstance(avail, int) and 0 < avail
    with open("/proc/meminfo") as fh:
        total = int(next(line for line in fh if line.startswith("MemTotal:")).split()[1]) * 1024
    assert avail <= total


def test_cli_reports_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    path = str(_parquet(tmp_path / "big.parquet"))
    monkeypatch.setattr(memory, "available_memory", lambda: 10 * MiB)
    out = tmp_path / "r.json"
    assert main(["evaluate", path, "--json", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {path}: 300 x 6 embeddings need about")
    assert "0.0 GiB is available" in err and err.count("\n") == 1
    assert not os.path.exists(out)
