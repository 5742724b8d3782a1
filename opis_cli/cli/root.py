"""The ``opis`` Typer app and its entry point :func:`main`.

Every ``OpisError`` becomes one ``Error: ...`` line on stderr and exit code 2
(a traceback only with ``--debug``); a gate that fails exits 1 (see
:class:`opis_cli.errors.ExitCode`). The result (tables, verdict) goes to
stdout, or the JSON alone with ``--json -``; progress, warnings, errors and
one ``wrote PATH`` line per file written (:func:`wrote`) go to stderr.
Options sit in the help panels of :data:`PANELS`; those of the "Advanced"
panel are shown by ``--help-all`` only. SIGINT (Ctrl-C) exits 130 and SIGTERM (a
CI timeout, ``kill``) 143: both interrupt the run like ``KeyboardInterrupt``,
so the staged output files are removed and earlier files stay as they were
(``opis_cli.io.output``). The commands live in their own modules
(``evaluate``, ``compare``, ``gate``, ``report``), which register on
:data:`app` when imported (``opis_cli.cli`` imports them all).
"""

from __future__ import annotations

import atexit
import enum
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Iterable, NoReturn

import typer
import typer.main

from .._version import __version__
from .options import ADVANCED, PANELS  # noqa: F401  (the help panels, in order)
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


def wrote(*paths: str | Path | None, quiet: bool = False) -> None:
    """Name each file written on stderr (``wrote PATH``): the one place every command
    reports its outputs; ``None`` and ``-`` (stdout) are skipped, as is everything
    with ``--quiet``."""
    if quiet:
        return
    from ..render.terminal import print_wrote

    for path in paths:
        if path is not None and str(path) != "-":
            print_wrote(path)


def stdout_taken(*outputs: str | Path | None) -> bool:
    """Whether one of the outputs is ``-`` (data on stdout): the tables then go to stderr."""
    return any(p is not None and str(p) == "-" for p in outputs)


def check_inputs(*paths: str | Path | None) -> None:
    """Fail fast when an input path is missing or unreadable: before the heavy
    imports (numpy, pyarrow, numba, faiss), with the readers' own message."""
    from ..io._files import check_exists

    for path in paths:
        if path is not None:
            check_exists(str(path))


def check_outputs(*paths: tuple[str | Path | None, str]) -> None:
    """Fail before any work when an output file cannot be written: ``(path, option)`` pairs."""
    from ..io.output import check_output_path

    for path, option in paths:
        if path:
            check_output_path(path, option)


def check_report(report: str | Path | None) -> None:
    """Fail before any work when ``--report`` (if given) is not a folder or
    cannot take new files."""
    if report:
        from .. import options as opt
        from ..io.output import check_output_folder

        opt.check_report_folder(report, "--report")
        check_output_folder(report, "--report")


def write_gate_outputs(outcome, *, json_out: str | None = None, junit: Path | None = None,
                       markdown: str | None = None, headline=None, comparison=None,
                       top: int = 5, json_doc: dict | None = None, verdict=None,
                       quiet: bool = False) -> None:
    """Write the requested gate outputs together (all or none, see ``io.output.staged``).

    ``--json`` holds ``outcome.to_dict()``, or ``json_doc`` plus a ``"gate"``
    key when ``json_doc`` is given (compare). ``verdict`` opens the Markdown summary.
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
            out.text(markdown, summary(outcome, headline, comparison, top, verdict=verdict))
    wrote(json_out, junit if outcome is not None else None, markdown, quiet=quiet)


def exit_with(outcome) -> "typer.Exit":
    """The exit of a command that may have gated: ``ExitCode.OK`` without an outcome."""
    return typer.Exit(int(outcome.exit_code if outcome is not None else ExitCode.OK))


def examples(*commands: str) -> str:
    """A command's examples (its epilog, moved to the top of its help by
    :func:`build_command`): real example commands, one a line."""
    return "Examples:\n\n" + "\n".join(f"  $ {c}" for c in commands) + (
        "\n\nMore options (input formats, engine tuning): --help-all")


def _type_name(param, ctx) -> str:
    """The parameter's type as typer's help shows it (``path``, ``int``, ``a|b``); from
    the click type on typer releases without ``display_type_rich`` (0.28)."""
    show = getattr(param, "display_type_rich", None)
    if show is not None:
        return (show(ctx) or "").strip("<>")
    t = getattr(param, "type", None)
    if t is None:
        return ""
    choices = getattr(t, "choices", None)
    if choices:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    name = getattr(t, "name", "") or ""
    return {"text": "str", "integer": "int"}.get(name, name)


def _metavar(param, ctx) -> str:
    """One metavar style: UPPERCASE placeholders (PATH, TEXT, INT, FLOAT), choices
    as a|b|c; flags show none."""
    bare = _type_name(param, ctx)
    if "|" in bare and len(bare) > 16:  # long choice lists: the help text names them
        return (param.name or "").upper()
    if (param.name or "").endswith("_column"):
        return "COLUMN"
    return {"path": "PATH", "str": "TEXT", "int": "INT", "float": "FLOAT"}.get(bare, bare)


def _no_type(ctx=None) -> str:
    return ""


def _no_type_metavar(*args, **kwargs) -> str:
    return ""


_UNSET = object()


class _Coercion:
    """Typer's coercion of one parameter's value, without pydantic where it adds nothing.

    Typer (0.29 and later) coerces every value, defaults included, through a
    pydantic ``TypeAdapter`` built per parameter on first use: with pydantic's
    import that is 0.2-0.4 s of every ``opis`` command on 2 cores, before an input
    error can be said. The values that need no conversion are returned here as
    the adapter would return them (None, a default of the annotated type, a string
    for ``str``, strings for ``list[str]``, a path without typer's path checks);
    any other value goes to typer's own coercion, built on first need.
    ``tests/test_startup.py`` compares the two for every parameter of every command.
    """

    def __init__(self, param) -> None:
        self.param = param
        self.full = None

    def _fast(self, value):
        d = self.param.type_descriptor
        ann, info = d.annotation, d.parameter_info
        if info.parser is not None or d.file_annotation is not None:
            return _UNSET
        multi = self.param.multiple or self.param.nargs == -1
        if value is None:
            return () if multi else None
        if multi:
            if ann == list[str] and isinstance(value, (list, tuple)) and all(
                    type(v) is str for v in value):
                return list(value)
            return _UNSET
        if ann is str and type(value) is str:
            return value
        if ann in (bool, int, float) and type(value) is ann and info.min is None and \
                info.max is None:
            return value
        if isinstance(ann, type) and issubclass(ann, enum.Enum) and isinstance(value, ann):
            return value
        if ann is Path and type(value) is str and value not in ("", "-") and not (
                info.exists or info.resolve_path or info.writable or info.path_type
                or not info.file_okay or not info.dir_okay):
            try:  # typer's checks of an existing path: readable (by default)
                os.stat(value)
            except (OSError, ValueError):
                return Path(value)
            if not info.readable or os.access(value, os.R_OK):
                return Path(value)
        return _UNSET

    def coerce(self, value, param=None, ctx=None):
        out = self._fast(value)
        if out is not _UNSET:
            return out
        if self.full is None:
            from typer._coercion import build_runtime_param

            self.full = build_runtime_param(self.param.type_descriptor)
        return self.full.coerce(value, param=param, ctx=ctx)


def _fast_coercion(param) -> None:
    """Give ``param`` a :class:`_Coercion` when this typer coerces through pydantic
    (a ``type_descriptor`` and a lazily built ``_runtime_param``); else leave it."""
    if getattr(param, "_runtime_param", _UNSET) is None and hasattr(param, "type_descriptor"):
        param._runtime_param = _Coercion(param)


#: The commands built, by (show_all, commands registered): one build per process.
_BUILT: dict[tuple, object] = {}


def build_command(show_all: bool = False, examples_first: bool = True):
    """The click command behind :data:`app`, tidied for help: flags without a metavar,
    one metavar style, (``show_all``) the options of the "Advanced" panel shown, and
    (``examples_first``) each command's examples moved from its epilog to the top of
    its help (the docs site keeps them out of the help text: ``cli/docs.py``).

    Built once per process and reused (35 ms a build on 2 cores: in-process runs,
    the tests' hundreds of them, pay it once); a command registered later builds anew.
    """
    key = (show_all, examples_first, len(app.registered_commands), len(app.registered_groups))
    command = _BUILT.get(key)
    if command is None:
        command = _BUILT[key] = _build_command(show_all, examples_first)
    return command


def _build_command(show_all: bool, examples_first: bool):
    """:func:`build_command`, built."""
    from typer.core import TyperArgument

    command = typer.main.get_command(app)
    subs = list(getattr(command, "commands", {}).values())
    order = {name: i for i, name in enumerate(PANELS)}
    for cmd in [command, *subs]:
        # panels in the order of PANELS, whatever the order of the parameters
        cmd.params.sort(key=lambda p: order.get(getattr(p, "rich_help_panel", None), -1))
        if examples_first and cmd.epilog and cmd.epilog.startswith("Examples:"):
            # the examples at the top, under the command's summary (the epilog
            # would print them below every panel)
            cmd.help = f"{(cmd.help or '').rstrip()}\n\n{cmd.epilog}"
            cmd.epilog = None
        ctx = typer.Context(cmd, info_name=cmd.name)
        help_option = cmd.get_help_option(ctx)
        for param in [*cmd.params, *([help_option] if help_option is not None else [])]:
            _fast_coercion(param)
            if show_all and getattr(param, "rich_help_panel", None) == ADVANCED:
                param.hidden = False
            if isinstance(param, TyperArgument):
                if param.metavar is None:
                    param.metavar = (param.name or "").upper()
                param.display_type_rich = _no_type  # the name says it: no <path> beside it
                if not hasattr(type(param), "display_type_rich"):  # typer 0.28 reads the type
                    param.type.get_metavar = _no_type_metavar
            elif getattr(param, "is_flag", False) or getattr(param, "count", False):
                param.metavar = ""
            elif param.metavar is None:
                param.metavar = _metavar(param, ctx)
    return command


_NOT_ONE_OF = re.compile(r"'(?P<value>[^']*)' is not one of (?P<choices>'[^']*'(?:, '[^']*')*)")


def usage_message(message: str) -> str:
    """The option parser's message, kinder: without pydantic's "Value error, " and with
    the nearest choice ("did you mean 'cosine'?") for a value that is not one of them."""
    message = message.replace("Value error, ", "")
    m = _NOT_ONE_OF.search(message)
    if m:
        import difflib

        value, choices = m.group("value"), re.findall(r"'([^']*)'", m.group("choices"))
        near = ([c for c in choices if value and c.startswith(value)]
                or difflib.get_close_matches(value, choices, n=1, cutoff=0.5))
        if near:
            message = f"{message.rstrip('.')}; did you mean {near[0]!r}?"
    return message


def _print_error(message: str) -> None:
    """``render.terminal.print_error``; before that module is loaded (an input error
    found before any work: it imports numpy) the same line from a console of its own."""
    term = sys.modules.get("opis_cli.render.terminal")
    if term is not None:
        term.print_error(message)
        return
    from rich.console import Console
    from rich.text import Text

    from ..render.escape import one_line

    Console(stderr=True, highlight=False).print(
        Text.assemble(("Error:", "bold red"), " ", one_line(message)), highlight=False,
        soft_wrap=True)


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


def run() -> NoReturn:
    """The ``opis`` console script: :func:`main`, then the process ends
    without the interpreter's teardown.

    Everything the command writes is closed (and renamed into place) before
    :func:`main` returns; what is left is the interpreter freeing every
    object one by one, about 0.5 s after a run that loaded numba (its type
    and implementation registries; measured in docs/performance.md). So:
    other threads are waited for and the ``atexit`` handlers run (logging,
    MLflow, Dask, temporary folders), as at a normal exit; then
    ``os._exit``. ``python -m opis_cli.cli`` keeps the normal exit (for
    profilers and coverage), and an exception that escapes :func:`main`
    (``--debug``) is raised as usual.
    """
    rc = main()
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls first:
    if shutdown is not None:  # wakes idle executor threads, waits for non-daemon threads
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
            if rc == ExitCode.OK:
                rc = int(ExitCode.INTERRUPTED)
    os._exit(rc)


def _main(argv: Iterable[str] | None) -> int:
    """The command line proper (``main`` holds the SIGTERM handler around it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    show_all = "--help-all" in args
    if show_all:
        args = [("--help" if a == "--help-all" else a) for a in args]
    command = build_command(show_all)
    try:
        try:
            rc = command.main(args=args, prog_name="opis", standalone_mode=False)
            if rc == ExitCode.INTERRUPTED:  # Typer's exit code for a KeyboardInterrupt
                return _interrupted()
        finally:
            term = sys.modules.get("opis_cli.render.terminal")
            if term is not None:
                term.console._file = None  # results back on stdout (in-process runs)
        return int(rc or ExitCode.OK)
    except typer.Exit as e:
        if e.exit_code == ExitCode.INTERRUPTED:
            return _interrupted(e)
        return int(e.exit_code)
    except OpisError as e:
        if debug:
            raise
        _print_error(str(e))
        return int(ExitCode.USAGE)
    except (KeyboardInterrupt, BrokenPipeError, typer.Abort) as e:
        return _interrupted(e)
    except typer.TyperException as e:  # usage errors from the option parser
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            return int(ExitCode.USAGE)
        if debug:
            raise
        _print_error(usage_message(e.format_message()))
        return int(ExitCode.USAGE)
    except Exception as e:  # anything unexpected: still one line unless --debug
        if debug:
            raise
        _print_error(f"unexpected {type(e).__name__}: {e} (run again with --debug for a traceback)")
        return int(ExitCode.USAGE)
