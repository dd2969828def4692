"""Consoles and progress bars on stderr; labels (layer names from the checkpoint) are made visible.

Progress labels are checkpoint keys: they are shown through :func:`spectra._visible.visible` in a
column that does not parse rich markup, so a key cannot restyle the bar, inject escape sequences
or raise a ``MarkupError``.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from .._visible import visible

__all__ = ["stderr_console", "stdout_console", "progress_bar", "progress_callback"]


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, emoji=False, highlight=False)


def stdout_console():
    """A console on stdout that never interprets emoji codes (tables go through :class:`._tables.Screen`)."""
    from rich.console import Console

    return Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 160)


def _columns():
    """Description, bar, done/total, elapsed, eta, label: the numbers never wrap or shrink; the label
    (a layer name) takes what is left and is cut from the left by :func:`_label`."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Column

    fixed = lambda: Column(no_wrap=True)  # noqa: E731
    return (TextColumn("{task.description}", markup=False, table_column=fixed()), BarColumn(bar_width=20),
            MofNCompleteColumn(table_column=fixed()), TimeElapsedColumn(table_column=fixed()),
            TextColumn("eta", table_column=fixed()), TimeRemainingColumn(table_column=fixed()),
            TextColumn("{task.fields[label]}", style="dim", markup=False,
                       table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)))


def _label(text: str, console) -> str:
    """A layer name made visible and cut from the left to what the bar leaves free on this terminal."""
    from ._tables import shorten_left

    return shorten_left(visible(text), max(8, console.width - 62))


@contextmanager
def progress_bar(total: int, description: str, *, quiet: bool = False) -> Iterator[Callable[..., None]]:
    """A rich progress bar with ETA on stderr; yields ``advance(n=1, label=None)``.

    Silent when ``quiet`` or when stderr is not a terminal.
    """
    if quiet or total <= 0:
        yield lambda n=1, label=None: None
        return
    from rich.progress import Progress

    console = stderr_console()
    with Progress(*_columns(), console=console, transient=True, disable=not sys.stderr.isatty()) as progress:
        task_id = progress.add_task(visible(description), total=total, label="")

        def advance(n: int = 1, label: str | None = None) -> None:
            progress.update(task_id, advance=n, label=_label(label or "", console))

        yield advance


@contextmanager
def progress_callback(description: str, *, quiet: bool = False) -> Iterator[Callable[[int, int, str], None]]:
    """A rich progress bar on stderr driven by ``callback(done, total, label)`` (library style).

    The total can be unknown until the first call; nothing is drawn when ``quiet`` or when stderr
    is not a terminal.
    """
    if quiet or not sys.stderr.isatty():
        yield lambda done, total, label="": None
        return
    from rich.progress import Progress

    console = stderr_console()
    with Progress(*_columns(), console=console, transient=True) as progress:
        task_id = progress.add_task(visible(description), total=None, label="")

        def callback(done: int, total: int, label: str = "") -> None:
            progress.update(task_id, completed=done, total=total, label=_label(label, console))

        yield callback
