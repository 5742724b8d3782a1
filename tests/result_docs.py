"""Comparing results between engines: the JSON document without provenance
(which names the engine, its options and the time)."""

from __future__ import annotations

import json


def without_provenance(result) -> str:
    """``result``'s document without ``provenance``, as canonical JSON."""
    d = result.to_dict()
    d.pop("provenance")
    return json.dumps(d, sort_keys=True)
