"""The lowest-versions CI step tests what pyproject.toml promises.

``ci/lowest-constraints.txt`` pins every core dependency and the ``test``
extra at exactly its floor in pyproject.toml; ``.ci/run`` installs under it
and runs the quick tests. When a floor moves, the pin must move with it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "ci" / "lowest-constraints.txt"


def floors() -> dict[str, Version]:
    """``name -> X`` for every ``name>=X`` of the core dependencies and the test extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    out = {}
    for text in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(text)
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{text!r}: expected one '>=' floor"
        out[canonicalize_name(req.name)] = Version(lower[0])
    return out


def pins() -> dict[str, Version]:
    out = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{line!r}: pin with '=='"
        out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def test_lowest_constraints_pin_exactly_the_floors():
    assert pins() == floors()


def test_ci_installs_under_the_lowest_constraints():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "ci/lowest-constraints.txt" in ci
