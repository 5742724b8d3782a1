"""The ``opis`` Typer app and its entry point :func:`main`.

Every ``OpisError`` becomes one ``Error: ...`` line on stderr and exit code 2
(a traceback only with ``--debug``); a gate that fails exits 1 (see
:class:`opis_cli.errors.ExitCode`). SIGINT (Ctrl-C) exits 130 and SIGTERM (a
CI timeout, ``kill``) 143: both interrupt the run like ``KeyboardInterrupt``,
so the staged output files are removed and earlier files stay as they were
(``opis_cli.io.output``). Data goes to files or stdout; messages
for people go to stderr. The commands live in their own modules
(``evaluate``, ``compare``, ``gate``, ``report``), which register on
:data:`app` when imported (``opis_cli.cli`` imports them all).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Iterable

import typer

from .._version import __version__
from ..errors import ExitCode, OpisError

app = typer.Typer(
    name="opis",
    help="Can one distance threshold serve every class of an embedding model? "
         "Measures OPIS and 10%-OPIS (Zhang et al., ICLR 2024), recommends a global threshold "
         "and shows the per-class false accept / false reject spread at it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opis {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """opis: threshold consistency of embedding models."""


def check_outputs(*paths: tuple[str | Path | None, str]) -> None:
    """Fail before any work when an output file cannot be written: ``(path, option)`` pairs."""
    from ..io.output import check_output_path

    for path, option in paths:
        if path:
            check_output_path(path, option)


def write_gate_outputs(outcome, *, json_out: str | None = None, junit: Path | None = None,
                       markdown: str | None = None, headline=None, comparison=None,
                       top: int = 5, json_doc: dict | None = None) -> None:
    """Write the requested gate outputs together (all or none, see ``io.output.staged``).

    ``--json`` holds ``outcome.to_dict()``, or ``json_doc`` plus a ``"gate"``
    key when ``json_doc`` is given (compare).
    """
    import json

    from ..io.output import staged
    from ..render.junit import junit_xml
    from ..render.markdown import summary

    with staged() as out:
        if json_out:
            if json_doc is None:
                doc = outcome.to_dict()
            else:
                doc = dict(json_doc)
                doc["gate"] = outcome.to_dict() if outcome is not None else None
            out.text(json_out, json.dumps(doc, indent=2, allow_nan=False) + "\n")
        if junit and outcome is not None:
            out.text(junit, junit_xml(outcome))
        if markdown:
            out.text(markdown, summary(outcome, headline, comparison, top))


def exit_with(outcome) -> "typer.Exit":
    """The exit of a command that may have gated: ``ExitCode.OK`` without an outcome."""
    return typer.Exit(int(outcome.exit_code if outcome is not None else ExitCode.OK))


#: Exit code after SIGTERM (128 + 15, as a shell reports a process it ended).
TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so that it unwinds like Ctrl-C."""


#: The signal number of the SIGTERM received during this ``main()``, if any
#: (Typer turns any ``KeyboardInterrupt`` into exit code 130; this tells 143).
_received: int | None = None


def _on_sigterm(signum, frame) -> None:
    global _received
    _received = signum
    raise Terminated()


def _interrupted(exc: BaseException | None = None) -> int:
    """143 after SIGTERM, else 130 (Ctrl-C, a closed pipe)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, Terminated):
            return int(TERMINATED)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return int(TERMINATED) if _received is not None else int(ExitCode.INTERRUPTED)


def main(argv: Iterable[str] | None = None) -> int:
    """Entry point of the ``opis`` console script; returns the exit code.

    While it runs, SIGTERM raises :class:`Terminated` (in the main thread;
    the previous handler is restored on return).
    """
    global _received
    _received = None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Iterable[str] | None) -> int:
    from ..render.terminal import print_error

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rc = app(args=args, prog_name="opis", standalone_mode=False)
        if rc == ExitCode.INTERRUPTED:  # Typer's exit code for a KeyboardInterrupt
            return _interrupted()
        return int(rc or ExitCode.OK)
    except typer.Exit as e:
        if e.exit_code == ExitCode.INTERRUPTED:
            return _interrupted(e)
        return int(e.exit_code)
    except OpisError as e:
        if debug:
            raise
        print_error(str(e))
        return int(ExitCode.USAGE)
    except (KeyboardInterrupt, BrokenPipeError, typer.Abort) as e:
        return _interrupted(e)
    except typer.TyperException as e:  # usage errors from the option parser
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            return int(ExitCode.USAGE)
        if debug:
            raise
        print_error(e.format_message())
        return int(ExitCode.USAGE)
    except Exception as e:  # anything unexpected: still one line unless --debug
        if debug:
            raise
        print_error(f"unexpected {type(e).__name__}: {e} (run again with --debug for a traceback)")
        return int(ExitCode.USAGE)
