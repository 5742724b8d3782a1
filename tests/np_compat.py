"""NumPy names that differ across the supported versions (not a test module).

pyproject.toml allows NumPy 1.26, and the lowest-versions step of ``.ci/run``
runs the quick tests there: tests use these names, never NumPy-2-only ones.
"""

from __future__ import annotations

import numpy as np

#: ``np.trapezoid`` (NumPy >= 2.0) is ``np.trapz`` of NumPy 1.x: the same formula
trapezoid = getattr(np, "trapezoid", None) or np.trapz
