"""The Typer application, the error boundary and the options every command shares.

Command modules do ``from ._app import app, command`` and decorate their function with
``@command()``. The decorator is the one place where library errors become ``error: ...`` on stderr
and exit code 2 (``--debug`` shows the traceback instead); :class:`SpectraGroup` does the same for
Typer's own usage errors (a missing argument, a value that is not a number), which click would
print as a five-line box. Every such message is one line: newlines are folded and control and
bidi characters are shown as escapes. Warnings from the library go to stderr as ``warning: ...``,
also with ``--quiet`` (they say the result is not what was asked for).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Mapping, Optional

import typer

from .._version import __version__
from .._visible import one_line
from ..errors import SpectraError
from ._console import progress_bar, progress_callback, stderr_console, stdout_console  # noqa: F401 (re-exported)
from ._help import HelpGroup, SpectraCommand

#: Largest integer an option takes: torch and numpy work in int64.
INT_LIMIT = 2**63 - 1
# click's exceptions: the click package's, or those of the copy typer >= 0.20 vendors (typer._click)
_CLICK_EXC = sys.modules[typer.BadParameter.__module__]


class SpectraGroup(HelpGroup):
    """The root command: click's usage errors become one ``error:`` line (exit 2), not a box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _setup_logging()
        no_args = getattr(_CLICK_EXC, "NoArgsIsHelpError", ())
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except no_args as exc:  # bare `spectra` or `spectra bench`: the help (rich prints it itself)
            text = exc.ctx.get_help()
            if text:
                typer.echo(text)
            sys.exit(2)
        except _CLICK_EXC.ClickException as exc:
            where = getattr(getattr(exc, "ctx", None), "command_path", None)
            hint = f" (see '{where} --help')" if isinstance(exc, _CLICK_EXC.UsageError) and where else ""
            typer.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except (typer.Abort, getattr(_CLICK_EXC, "Abort", typer.Abort)):
            typer.echo("interrupted", err=True)
            sys.exit(130)
        if isinstance(code, int) and not isinstance(code, bool):  # an Exit raised inside a command
            sys.exit(code)
        return code


app = typer.Typer(
    name="spectra",
    help="Spectral diagnostics for neural networks: which layers are under- or over-trained, "
    "and what learning rate each layer should get.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=SpectraGroup,
)

_state = {"debug": False}

# Shared option types, defined once.
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda (auto picks cuda when available).")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Precision of the eigen-solver: float64 (exact, default) or float32.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table; errors still go to stderr.")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=INT_LIMIT, help="Seed for every random choice (bootstrap, shuffles, data).")]
TrustPickleOpt = Annotated[
    bool,
    typer.Option("--trust-pickle", help="Allow full pickle loading of torch files. Only for checkpoints you made yourself: unpickling can run code."),
]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spectra {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    _state["debug"] = debug
    if debug:
        logger = logging.getLogger("spectra")
        logger.setLevel(logging.DEBUG)
        for handler in logger.handlers:
            if isinstance(handler, _StderrLines):
                handler.setLevel(logging.DEBUG)


class _StderrLines(logging.Handler):
    """``warning: message`` on the current ``sys.stderr`` (looked up per record: click swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower() if record.levelno >= logging.WARNING else record.name
            sys.stderr.write(f"{level}: {one_line(record.getMessage())}\n")
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _setup_logging() -> None:
    """One ``_StderrLines`` handler on the ``spectra`` logger, at WARNING (``--debug``: DEBUG)."""
    logger = logging.getLogger("spectra")
    handler = next((h for h in logger.handlers if isinstance(h, _StderrLines)), None)
    if handler is None:
        handler = _StderrLines()
        logger.addHandler(handler)
    handler.setLevel(logging.WARNING)
    logger.setLevel(logging.NOTSET)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` (one line) on stderr and exit with ``code``."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


@functools.lru_cache(maxsize=None)
def _option_names(fn: Callable) -> dict[str, str]:
    """Parameter name -> its ``--flag``, read from the ``typer.Option`` in each annotation."""
    import typing

    names = {}
    for name, hint in typing.get_type_hints(fn, include_extras=True).items():
        for meta in getattr(hint, "__metadata__", ()):
            first = getattr(meta, "default", None)  # typer.Option("--lr", ...) keeps the flag here
            decls = [first] if isinstance(first, str) else []
            flags = [d for d in decls + list(getattr(meta, "param_decls", None) or ()) if d.startswith("--")]
            if flags:
                names[name] = flags[0]
    return names


def _check_numbers(fn: Callable, kwargs: Mapping[str, Any]) -> None:
    """Every float option finite, every int option within int64 (torch raises bare errors past it)."""
    from ..errors import ConfigError

    names = _option_names(fn)
    for key, value in kwargs.items():
        option = names.get(key) or key
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{option} must be a finite number, got {value}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_LIMIT:
            raise ConfigError(f"{option} {value} is out of range (at most {INT_LIMIT} in absolute value)")


def guard(fn: Callable) -> Callable:
    """The error boundary: SpectraError and OSError become one ``error: ...`` line and exit 2."""

    @functools.wraps(fn)
    def run(*a, **kw):
        try:
            _check_numbers(fn, kw)
            return fn(*a, **kw)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)
        except SpectraError as exc:
            if _state["debug"]:
                raise
            fail(str(exc))
        except OSError as exc:
            if _state["debug"]:
                raise
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            fail(f"{exc.strerror or exc}{where}")
        except MemoryError:
            if _state["debug"]:
                raise
            fail("out of memory; try --dtype float32, --device cuda or a narrower --include")

    return run


def command(*args, typer_app: typer.Typer | None = None, **kwargs) -> Callable:
    """``app.command`` (or ``typer_app.command`` for a sub-group) wrapped in :func:`guard`."""

    def wrap(fn: Callable) -> Callable:
        return (typer_app or app).command(*args, cls=SpectraCommand, **kwargs)(guard(fn))

    return wrap


def parse_pairs(items: Iterable[str] | None, what: str) -> dict[str, Any]:
    """``["decay=0.65", "exclude-first=false"]`` -> ``{"decay": 0.65, "exclude_first": False}``.

    Values are read as JSON when they parse (numbers, lists, ``true``/``false``/``null`` in any case,
    ``none`` too), otherwise kept as text; dashes in keys become underscores.
    """
    from ..errors import ConfigError

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} takes KEY=VALUE, got {item!r}")
        text = text.strip()
        word = {"true": "true", "false": "false", "none": "null", "null": "null"}.get(text.lower(), text)
        try:
            value = json.loads(word)
        except json.JSONDecodeError:
            value = text
        out[key.strip().replace("-", "_")] = value
    return out


def fmt(value: Any, spec: str = ".3g") -> str:
    """A table cell: ``-`` for a missing or non-finite number, ints as they are, floats by ``spec``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def is_stdout(out: Path | None) -> bool:
    """``-o -`` means: JSON on stdout and nothing else there."""
    return out is not None and str(out) == "-"


def input_files(*sources: Any) -> list[Path]:
    """Every file the given inputs read: a file itself (a ``.json`` also its ``.esd.npz`` sibling), a
    checkpoint directory's weight files, index and optimizer state."""
    from ..errors import CheckpointError
    from ..io.directory import resolve_directory

    files: list[Path] = []
    for source in sources:
        if source is None or not isinstance(source, (str, Path)):
            continue
        path = Path(source)
        if path.is_dir():
            try:
                layout = resolve_directory(path)
            except CheckpointError:
                continue  # the command itself will say what is wrong with it
            files += list(layout.files) + ([layout.optimizer] if layout.optimizer else [])
            files += list(path.glob("*.index.json"))
        else:
            files.append(path)
            if path.suffix.lower() == ".json":
                files.append(path.with_suffix(".esd.npz"))
    return files


def check_outputs(outputs: Mapping[str, tuple[Path | None, tuple[str, ...]]], inputs: Iterable[Any] = ()) -> None:
    """Fail before any work when an output cannot be written, would overwrite an input or has a
    suffix the command does not write: ``{"--out": (path, (".json",))}`` (see :mod:`spectra._files`)."""
    from .._files import check_outputs as check

    check({k: p for k, (p, _) in outputs.items()}, inputs=input_files(*inputs),
          suffixes={k: sfx for k, (_, sfx) in outputs.items() if sfx})


def emit(result: Any, out: Path | None, *, quiet: bool, render: Callable[[Any], None],
         save: Callable[[Any, Path], Any] | None = None) -> None:
    """Write ``result`` (JSON to stdout for ``-o -``, else ``save`` or ``to_json``), then render the table."""
    if is_stdout(out):
        typer.echo(result.to_json())
        return
    if out is not None:
        (save or (lambda r, p: r.to_json(p)))(result, out)
    if not quiet:
        render(result)
        if out is not None:
            typer.echo(f"wrote {out}", err=True)
