"""The Typer application, the error boundary and the options every command shares.

Command modules do ``from ._app import app, command`` and decorate their function with
``@command()``. The decorator is the one place where library errors become ``error: ...`` on stderr
and exit code 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Optional

import typer

from .._version import __version__
from .._visible import one_line
from ..errors import SpectraError
from ._console import progress_bar, progress_callback, stderr_console, stdout_console  # noqa: F401 (re-exported)
from ._help import HelpGroup, SpectraCommand

app = typer.Typer(
    name="spectra",
    help="Spectral diagnostics for neural networks: which layers are under- or over-trained, "
    "and what learning rate each layer should get.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=HelpGroup,
)

_state = {"debug": False}

# Shared option types, defined once.
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda (auto picks cuda when available).")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="Precision of the eigen-solver: float64 (exact, default) or float32.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table; errors still go to stderr.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice (bootstrap, shuffles, data).")]
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


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def guard(fn: Callable) -> Callable:
    """The error boundary: SpectraError and OSError become one ``error: ...`` line and exit 2."""

    @functools.wraps(fn)
    def run(*a, **kw):
        try:
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


def check_output(out: Path | None, suffixes: tuple[str, ...] = ()) -> None:
    """Fail before any work when an output file cannot be written (nothing computed is lost)."""
    from ..errors import ConfigError

    if out is None or is_stdout(out):
        return
    if suffixes and out.suffix.lower() not in suffixes:
        raise ConfigError(f"unknown output extension {out.suffix!r} for {out}: use {', '.join(suffixes)}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"cannot write {out}: directory {parent} does not exist")


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
