"""The ``spectra`` command line: a thin Typer layer over the library (one module per command)."""

from __future__ import annotations

import importlib

from ._app import app

#: Command modules, in the order ``spectra --help`` lists them.
COMMAND_MODULES = ("analyze", "prescribe", "noise", "diff", "retrain", "bench", "report", "demo")

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def main() -> None:
    """Console-script entry point: the process-level memory policy, then the app."""
    from .._memory import limit_heap_growth

    limit_heap_growth()
    app()


__all__ = ["app", "main"]
