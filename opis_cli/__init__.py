"""opis: can one distance threshold serve every class of an embedding model?

Public API::

    from opis_cli import evaluate
    result = evaluate(embeddings, labels)        # -> EvaluationResult
    result.opis, result.epsilon_opis, result.recommended_threshold.value

SPEC.md defines every number. The heavy parts (numba kernels, faiss) load on
first use, so ``import opis_cli`` and ``opis --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError, InputError, OpisError

from ._version import __version__

__all__ = ["evaluate", "EvaluationResult", "OpisError", "InputError", "ConfigError",
           "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .api import evaluate
    from .results import EvaluationResult


def __getattr__(name: str):
    if name == "evaluate":
        from .api import evaluate

        return evaluate
    if name == "EvaluationResult":
        from .results import EvaluationResult

        return EvaluationResult
    raise AttributeError(f"module 'opis_cli' has no attribute {name!r}")
