"""Shared inputs of the gating tests (test_gate, test_compare, test_action).

``samples`` evaluates the two sample models once per test session through the
real command (``opis evaluate --json --curves --bootstrap``) and hands out the
paths. Import the fixture into a test module with
``from gating_samples import samples  # noqa: F401``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from opis_cli.cli import main

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
WEAK = SAMPLE / "digits_weak.parquet"
STRONG = SAMPLE / "digits_strong.parquet"
#: bootstrap resamples stored in the sample results (small, to keep the tests quick)
RESAMPLES = 200


@dataclass(frozen=True)
class Samples:
    weak_json: Path
    strong_json: Path
    weak_curves: Path
    strong_curves: Path
    folder: Path


_CACHE: dict[str, Samples] = {}


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> Samples:
    # Each test module imports this fixture, which makes pytest see one fixture per
    # module; the cache keeps it to one evaluation per session all the same.
    key = str(tmp_path_factory.getbasetemp())
    if key in _CACHE:
        return _CACHE[key]
    d = tmp_path_factory.mktemp("gating_samples")
    for name, src in (("weak", WEAK), ("strong", STRONG)):
        code = main(["evaluate", str(src), "--json", str(d / f"{name}.json"),
                     "--curves", str(d / f"{name}_curves.parquet"),
                     "--bootstrap", str(RESAMPLES), "--seed", "7", "-q"])
        assert code == 0, f"opis evaluate {src} failed with exit code {code}"
    _CACHE[key] = Samples(d / "weak.json", d / "strong.json", d / "weak_curves.parquet",
                          d / "strong_curves.parquet", d)
    return _CACHE[key]


def run(capsys, *args):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A working folder that is its own repository root (no config above it is read)."""
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path
