"""opis: can one distance threshold serve every class of an embedding model?

Public API::

    from opis_cli import evaluate
    result = evaluate(embeddings, labels)        # -> EvaluationResult
    result.opis, result.epsilon_opis, result.recommended_threshold.value
    result.verdict.sentence                      # can one threshold serve every class?
    result.plot_utility(ax=ax)                   # the report's figures, in your axes
    write_report(result, "report/")              # the HTML report, from Python

SPEC.md defines every number. The heavy parts (numba kernels, faiss) load on
first use, so ``import opis_cli`` and ``opis --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from pathlib import Path

from .errors import ConfigError, InputError, OpisError

from ._version import __version__

__all__ = ["evaluate", "EvaluationResult", "Verdict", "write_report", "OpisError", "InputError",
           "ConfigError", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .api import evaluate
    from .results import EvaluationResult
    from .verdict import Verdict


def __getattr__(name: str):
    if name == "evaluate":
        from .api import evaluate

        return evaluate
    if name == "EvaluationResult":
        from .results import EvaluationResult

        return EvaluationResult
    if name == "Verdict":
        from .verdict import Verdict

        return Verdict
    raise AttributeError(f"module 'opis_cli' has no attribute {name!r}")


def write_report(result, folder) -> "Path":
    """Write the HTML report of ``result`` (``report.html`` and one PNG per figure)
    into ``folder`` (created if missing) and return the path of ``report.html``.

    The same report as ``opis evaluate --report FOLDER``: the verdict first,
    then the cards, the figures and the per-class table. An in-process result
    brings its per-class curves; for a result read from JSON use
    :func:`opis_cli.render.report.write_report` with ``curves=``.

    Examples
    --------
    >>> import opis_cli
    >>> result = opis_cli.evaluate(X, y)                       # doctest: +SKIP
    >>> opis_cli.write_report(result, "report")                # doctest: +SKIP
    PosixPath('report/report.html')
    """
    from .render.report import write_report as _write

    return _write(result, folder)
