"""opis: can one distance threshold serve every class of an embedding model?

Public API::

    from opis_cli import evaluate
    result = evaluate(embeddings, labels)        # -> EvaluationResult
    result.opis, result.epsilon_opis, result.recommended_threshold.value

See SPEC.md (shipped as the README's "What is computed") for every number.
"""

__version__ = "0.1.0"

from .api import evaluate  # noqa: E402
from .errors import ConfigError, InputError, OpisError  # noqa: E402
from .results import EvaluationResult  # noqa: E402

__all__ = ["evaluate", "EvaluationResult", "OpisError", "InputError", "ConfigError",
           "__version__"]
