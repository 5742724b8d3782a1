"""The first run (issue 26): a note while the kernels compile, numba's cache
folder on a read-only install, and fast failures before the heavy imports.

The note depends on numba's on-disk cache, so the tests set "cold" or "warm"
through ``firstrun.kernels_cold`` (conftest makes every other test warm), and
check the cache probe itself against index files they create.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from opis_cli import _numba_cache
from opis_cli.cli import firstrun, main

REPO = Path(__file__).resolve().parents[1]
WEAK = REPO / "sample_data" / "digits_weak.parquet"
NOTE = f"compiling kernels (first run only, about {firstrun.COMPILE_SECONDS} s)"


def run(capsys, *args):
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [["evaluate", WEAK], ["calibrate", WEAK, "--folds", "2"]])
def test_cold_cache_note_on_stderr_once_results_on_stdout(capsys, monkeypatch, command):
    monkeypatch.setattr(firstrun, "kernels_cold", lambda: True)
    code, out, err = run(capsys, *command)
    assert code == 0, err
    assert err.splitlines() == [NOTE]
    assert NOTE not in out and out.strip()


def test_compare_of_two_embeddings_says_it_once(capsys, monkeypatch):
    monkeypatch.setattr(firstrun, "kernels_cold", lambda: True)
    code, out, err = run(capsys, "compare", WEAK, WEAK)
    assert code == 0, err
    assert err.splitlines() == [NOTE, NOTE]  # each side's run asks; both see a cold probe


@pytest.mark.parametrize("args", [["-q"], ["--engine", "knn", "--far-range", "0.001:0.01"],
                                  ["--json", "-", "-q"]])
def test_no_note_when_quiet_or_no_compiled_kernels(capsys, monkeypatch, args):
    monkeypatch.setattr(firstrun, "kernels_cold", lambda: True)
    code, out, err = run(capsys, "evaluate", WEAK, *args)
    assert code == 0 and NOTE not in err


def test_no_note_on_a_warm_cache_or_before_a_bad_input(capsys, monkeypatch, tmp_path):
    code, _, err = run(capsys, "evaluate", WEAK)  # conftest: warm
    assert code == 0 and err == ""
    monkeypatch.setattr(firstrun, "kernels_cold", lambda: True)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    code, _, err = run(capsys, "evaluate", bad)
    assert code == 2 and err.startswith("Error: ") and NOTE not in err  # failed while reading


def test_the_probe_reads_numbas_index_file(tmp_path):
    index = tmp_path / "k.process_block-1.py311.nbi"
    disp = SimpleNamespace(_cache=SimpleNamespace(_cache_file=SimpleNamespace(_index_path=str(index))))
    assert _numba_cache.cached(disp) is False
    index.write_bytes(b"")
    assert _numba_cache.cached(disp) is True
    assert _numba_cache.cached(object()) is False  # a numba without these attributes


def test_the_real_kernel_is_cached_after_a_run(capsys):
    from opis_cli.engines import _kernels

    assert run(capsys, "evaluate", WEAK, "-q")[0] == 0
    index = Path(_kernels.process_block._cache._cache_file._index_path)
    assert index.is_file() and _numba_cache.cached(_kernels.process_block)


def test_read_only_package_uses_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(_numba_cache, "writable", lambda folder: False)
    monkeypatch.setitem(sys.modules, "numba", SimpleNamespace(
        core=SimpleNamespace(config=SimpleNamespace(reload_config=lambda: None))))
    got = _numba_cache.use_user_cache_if_read_only(tmp_path / "pkg")
    assert got == str(tmp_path / "xdg" / "opis" / "numba") == os.environ["NUMBA_CACHE_DIR"]
    assert Path(got).is_dir()


def test_writable_package_or_explicit_cache_dir_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert _numba_cache.use_user_cache_if_read_only(tmp_path) is None  # tmp_path is writable
    assert "NUMBA_CACHE_DIR" not in os.environ
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere/else")
    monkeypatch.setattr(_numba_cache, "writable", lambda folder: False)
    assert _numba_cache.use_user_cache_if_read_only(tmp_path) is None
    assert os.environ["NUMBA_CACHE_DIR"] == "/somewhere/else"


def test_writable_looks_at_pycache_when_it_exists(tmp_path):
    (tmp_path / "__pycache__").mkdir()
    assert _numba_cache.writable(tmp_path)
    assert not _numba_cache.writable(tmp_path / "missing")


def _imports(*args: str) -> set[str]:
    code = ("import sys, runpy; sys.argv = ['opis', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('opis_cli.cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('loaded:', *sorted(m for m in ('numpy', 'pyarrow', 'numba', 'faiss', 'pandas', "
            "'matplotlib') if m in sys.modules), file=sys.stderr)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=60, cwd=REPO)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("loaded:"), proc.stderr
    return set(last.split()[1:])


@pytest.mark.parametrize("args", [["--version"], ["evaluate", "no-such.parquet"],
                                  ["compare", "a.json", "b.json"], ["gate", "no.json"],
                                  ["report", "no.json", "--out", "r"],
                                  ["calibrate", "no-such.parquet"],
                                  ["evaluate", "--help"]])
def test_version_help_and_missing_files_load_no_heavy_library(args):
    heavy = _imports(*args)
    assert not heavy & {"pyarrow", "numba", "faiss", "pandas", "matplotlib"}, heavy
    if args[0] != "evaluate" or args[-1] != "no-such.parquet":
        # numpy too: the path is checked before the gate's modules, and the error line
        # is printed without render.terminal (which imports the result types); evaluate
        # checks its rules first (tests/test_gate.py), and gate.rules imports numpy
        assert "numpy" not in heavy, heavy


def test_a_bad_column_loads_no_kernels_plotting_or_faiss():
    """A column that is not there is found in the Parquet footer before the reader
    loads (tests/test_startup.py): no pyarrow, numpy, numba, matplotlib, pandas or faiss."""
    heavy = _imports("evaluate", "sample_data/digits_weak.parquet", "--label-column", "nope")
    assert not heavy & {"pyarrow", "numpy", "numba", "faiss", "pandas", "matplotlib"}, heavy


def test_a_kernel_compiles_once_for_constant_and_variable_arguments():
    """engines._jit.kernel: a helper called by another kernel with a constant (numba
    types it ``Literal[int](0)``), with a variable, and with an int32 scalar has one
    compiled version (int64), and each call gives what plain Python gives."""
    import numpy as np
    from numba import njit, types

    from opis_cli.engines._jit import kernel

    def add_scaled(x, k, w):
        s = 0.0
        for i in range(k, x.shape[0]):
            s += w * x[i]
        return s

    helper = kernel(add_scaled)
    plain_helper = njit(add_scaled)  # numba's default: one version per literal

    def caller(h):
        @njit
        def call(x, k, k32):
            return h(x, 0, 2) + h(x, k, 1) + h(x, k32, 2)
        return call

    x = np.arange(5.0)
    expected = add_scaled(x, 0, 2) + add_scaled(x, 3, 1) + add_scaled(x, 1, 2)
    assert caller(helper)(x, 3, np.int32(1)) == expected
    assert len(helper.signatures) == 1, helper.signatures
    assert helper.signatures[0] == (types.float64[::1], types.int64, types.int64)
    # the premise: without the decorator, the same calls compile several versions
    assert caller(plain_helper)(x, 3, np.int32(1)) == expected
    assert len(plain_helper.signatures) > 1, plain_helper.signatures
