"""Shared inputs of the gating tests (test_gate, test_compare, test_action); not a test module.

``evaluate_samples`` evaluates the two sample models through the real command
(``opis evaluate --json --curves --bootstrap``); the session fixture
``samples`` in conftest.py calls it once and hands out the paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def evaluate_samples(folder: Path) -> Samples:
    """``opis evaluate`` of both sample models into ``folder``."""
    for name, src in (("weak", WEAK), ("strong", STRONG)):
        code = main(["evaluate", str(src), "--json", str(folder / f"{name}.json"),
                     "--curves", str(folder / f"{name}_curves.parquet"),
                     "--bootstrap", str(RESAMPLES), "--seed", "7", "-q"])
        assert code == 0, f"opis evaluate {src} failed with exit code {code}"
    return Samples(folder / "weak.json", folder / "strong.json", folder / "weak_curves.parquet",
                   folder / "strong_curves.parquet", folder)


def run(capsys, *args):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err
