"""The two suites of tests/conftest.py: the quick one (README) deselects the slow
tests and skips, with the extra to install, the tests of a missing extra;
``--slow --no-skips`` (.ci/run) runs everything and fails on any skip.

Each case runs pytest in a subprocess on a tiny suite beside a copy of the
conftest in which the ``hdf5`` extra names a module that does not exist.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

SUITE = '''
import pytest

def test_hdf5_wrong_dtype():          # slow and needs the hdf5 extra (conftest SLOW, NEEDS)
    pass

def test_plain():
    pass
'''
MODULE_SKIP = '''
import pytest
pytest.importorskip("no_such_module_opis", reason="needs the dask extra")

def test_never():
    pass
'''


@pytest.fixture
def suite(tmp_path):
    conftest = (TESTS / "conftest.py").read_text(encoding="utf-8")
    missing = conftest.replace('"hdf5": ("h5py",)', '"hdf5": ("no_such_module_opis",)')
    assert missing != conftest
    (tmp_path / "conftest.py").write_text(missing, encoding="utf-8")
    (tmp_path / "test_formats.py").write_text(SUITE, encoding="utf-8")
    return tmp_path


def pytest_in(folder: Path, *args: str) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO / "examples"),
                                                       str(REPO)]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "--rootdir", str(folder), str(folder), *args],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_quick_suite_deselects_the_slow_tests(suite):
    code, out = pytest_in(suite)
    assert code == 0, out
    assert "1 passed, 1 deselected" in out


def test_slow_suite_skips_a_missing_extra_with_its_reason(suite):
    code, out = pytest_in(suite, "--slow")
    assert code == 0, out
    assert "1 passed, 1 skipped" in out
    assert "needs the optional extra(s) hdf5: pip install '.[hdf5]'" in out


def test_no_skips_turns_the_skip_into_a_failure(suite):
    code, out = pytest_in(suite, "--slow", "--no-skips")
    assert code == 1, out  # the skip happens at setup: pytest counts it as an error
    assert "1 passed" in out and "1 error" in out
    assert "skipped under --no-skips: needs the optional extra(s) hdf5" in out


def test_no_skips_fails_a_module_skipped_as_a_whole(suite):
    (suite / "test_dask_like.py").write_text(MODULE_SKIP, encoding="utf-8")
    code, out = pytest_in(suite, "--slow")
    assert code == 0 and "needs the dask extra" in out, out
    code, out = pytest_in(suite, "--slow", "--no-skips")
    assert code != 0 and "skipped under --no-skips: " in out, out
