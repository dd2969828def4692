"""The one table mechanism behind every terminal table (analyze, prescribe, noise, diff, bench, retrain).

A table declares its columns once, each with a *role* and a *priority*:

* ``number``: never truncated; the column is as wide as its widest value;
* ``name``: a layer or tensor name, shortened from the LEFT so the distinguishing tail stays
  (``…layer.5.attention.self.value``), cut at a dot where that loses little;
* ``note``: free text (the verdict, or why a layer failed or was skipped), word-wrapped onto
  continuation lines, never cut;
* ``text``: short labels (kind, shape), kept whole.

Priority 0 marks what the user came for (the name, the headline number, the note): those columns
are never dropped. When the table is wider than the terminal, it first switches to the columns'
short headers, then drops secondary columns, highest priority number first, then narrows names and
notes to their hard minimum. With no terminal (stdout is a pipe or a file) nothing is shortened,
dropped or wrapped, unless ``COLUMNS`` asks for a width.

Every cell passes through :func:`spectra._visible.visible` and is rendered as plain
:class:`rich.text.Text`, never parsed as markup, so a checkpoint key such as ``[/].weight`` or one
holding escape sequences or bidi overrides shows as the literal text it is.
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any, Sequence

from rich.cells import cell_len

from .._visible import visible

__all__ = ["Column", "Table", "Screen", "num", "layout", "render_rows", "render_lines", "shorten_left", "wrap_note"]

ELLIPSIS = "…"
GAP = 2
#: Names keep at least this many cells while secondary columns can still be dropped ...
NAME_COMFORT = 30
#: ... and never fewer than this many.
NAME_MIN = 14
NOTE_COMFORT = 24
NOTE_MIN = 12


def num(value: Any, spec: str = ".3g") -> str:
    """A number cell: ``-`` for missing or non-finite, ints as they are, floats by ``spec``."""
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value).lower()
    if isinstance(value, int):
        return str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return visible(value)
    return format(x, spec) if math.isfinite(x) else "-"


@dataclass(frozen=True)
class Column:
    """One column: its header, what it holds (``role``) and how readily it goes (``priority``)."""

    header: str
    role: str = "number"  # number | name | note | text
    priority: int = 0  # 0: never dropped; higher numbers are dropped first
    short: str | None = None  # header used when space is tight
    justify: str = ""  # default: right for numbers, left otherwise

    @property
    def align(self) -> str:
        return self.justify or ("right" if self.role == "number" else "left")


@dataclass
class Table:
    """Rows of strings under declared :class:`Column` s; cells are made visible on the way in."""

    columns: Sequence[Column]
    rows: list[tuple[list[str], str]] = field(default_factory=list)
    title: str = ""

    def add(self, *cells: Any, style: str = "") -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"row has {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(([visible("" if c is None else c) for c in cells], style))


@dataclass(frozen=True)
class Layout:
    """Which columns are shown (indices), their widths and headers."""

    keep: tuple[int, ...]
    widths: tuple[int, ...]
    headers: tuple[str, ...]

    @property
    def width(self) -> int:
        return sum(self.widths) + GAP * max(0, len(self.widths) - 1)


def _bounds(col: Column, natural: int, header: str) -> tuple[int, int]:
    """(comfortable, hard) minimum widths of a column (numbers and text: their natural width)."""
    head = cell_len(header)
    if col.role == "name":
        return max(head, min(natural, NAME_COMFORT)), max(head, min(natural, NAME_MIN))
    if col.role == "note":
        return max(head, min(natural, NOTE_COMFORT)), max(head, min(natural, NOTE_MIN))
    return natural, natural


def layout(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None) -> Layout:
    """Fit the columns into ``width`` cells (None: no limit), as described in the module docstring."""
    widest = [max([cell_len(r[i]) for r in rows] or [0]) for i in range(len(columns))]
    headers = [c.header for c in columns]
    natural = [max(w, cell_len(h)) for w, h in zip(widest, headers)]
    everything = tuple(range(len(columns)))
    if width is None or sum(natural) + GAP * (len(columns) - 1) <= width:
        return Layout(everything, tuple(natural), tuple(headers))
    headers = [c.short or c.header for c in columns]
    natural = [max(w, cell_len(h)) for w, h in zip(widest, headers)]
    bounds = [_bounds(c, n, h) for c, n, h in zip(columns, natural, headers)]

    def need(keep: Sequence[int], level: int) -> int:
        return sum(bounds[i][level] for i in keep) + GAP * (len(keep) - 1)

    keep = list(everything)
    # drop secondary columns (highest priority number first, rightmost first among equals)
    droppable = sorted((i for i in keep if columns[i].priority > 0), key=lambda i: (columns[i].priority, i))
    while need(keep, 0) > width and droppable:
        keep.remove(droppable.pop())
    level = 0 if need(keep, 0) <= width else 1
    widths = {i: bounds[i][level] for i in keep}
    slack = width - need(keep, level)
    for role in ("name", "note"):  # give what is left back to names, then notes
        for i in keep:
            if columns[i].role == role and slack > 0:
                grow = min(slack, natural[i] - widths[i])
                widths[i] += grow
                slack -= grow
    return Layout(tuple(keep), tuple(widths[i] for i in keep), tuple(headers[i] for i in keep))


def _tail(text: str, cells: int) -> str:
    """The longest suffix of ``text`` that fits in ``cells`` terminal cells."""
    out, used = [], 0
    for ch in reversed(text):
        w = cell_len(ch)
        if used + w > cells:
            break
        out.append(ch)
        used += w
    return "".join(reversed(out))


def shorten_left(text: str, width: int) -> str:
    """``text`` cut from the left to ``width`` cells, keeping the distinguishing tail.

    >>> shorten_left("encoder.layer.5.attention.self.value", 29)
    '…layer.5.attention.self.value'
    """
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return _tail(text, width)
    tail = _tail(text, width - 1)
    dot = tail.find(".")
    if 0 <= dot and cell_len(tail[dot + 1:]) >= 0.6 * (width - 1):
        tail = tail[dot + 1:]  # start at a path component when that costs little
    return ELLIPSIS + tail


def _head(text: str, cells: int) -> tuple[str, str]:
    """Split ``text`` after at most ``cells`` cells (at least one character)."""
    used = 0
    for i, ch in enumerate(text):
        used += cell_len(ch)
        if used > cells:
            return text[:max(i, 1)], text[max(i, 1):]
    return text, ""


def wrap_note(text: str, width: int) -> list[str]:
    """Word-wrap ``text`` to ``width`` cells; long words are split, nothing is dropped."""
    if cell_len(text) <= width:
        return [text]
    lines = []
    for line in textwrap.wrap(text, width=max(width, 1), break_long_words=False, break_on_hyphens=False) or [""]:
        while cell_len(line) > width:  # a word longer than the column, or wide characters
            head, line = _head(line, width)
            lines.append(head)
        lines.append(line)
    return lines


def _pad(text: str, width: int, align: str) -> str:
    space = " " * max(0, width - cell_len(text))
    return space + text if align == "right" else text + space


def render_rows(table: Table, width: int | None) -> tuple[str, list[list[str]]]:
    """The header line and, per row, its lines (one, or more when the note wraps)."""
    cols = table.columns
    lay = layout(cols, [cells for cells, _ in table.rows], width)
    sep = " " * GAP
    shown = [cols[i] for i in lay.keep]
    header = sep.join(_pad(h, w, c.align) for h, w, c in zip(lay.headers, lay.widths, shown)).rstrip()
    rows = []
    for cells, _ in table.rows:
        parts: list[list[str]] = []
        for i, w, col in zip(lay.keep, lay.widths, shown):
            value = cells[i]
            if col.role == "name":
                parts.append([shorten_left(value, w)])
            elif col.role == "note":
                parts.append(wrap_note(value, w))
            else:
                parts.append([value])  # numbers and labels are never cut
        rows.append([sep.join(_pad(p[k] if k < len(p) else "", w, c.align)
                              for p, w, c in zip(parts, lay.widths, shown)).rstrip()
                     for k in range(max(len(p) for p in parts))])
    return header, rows


def render_lines(table: Table, width: int | None) -> list[tuple[str, str]]:
    """The table as ``(line, style)`` pairs: the bold header, then each row's lines in its style."""
    header, rows = render_rows(table, width)
    out = [(header, "bold")]
    for lines, (_, style) in zip(rows, table.rows):
        out.extend((line, style) for line in lines)
    return out


def terminal_width() -> int | None:
    """Columns to fit tables into: ``$COLUMNS`` when set, the terminal's width, or None (a pipe)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    stream = sys.stdout
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        pass
    return None


class Screen:
    """Where tables and summary lines go: stdout, fitted to :func:`terminal_width`.

    Nothing printed here is parsed as rich markup or emoji codes; every string is made visible.
    """

    def __init__(self, console=None, width: int | None = None, *, detect: bool = True):
        from rich.console import Console

        self.width = width if width is not None or not detect else terminal_width()
        self.console = console or Console(width=self.width or 10_000, emoji=False, highlight=False,
                                          soft_wrap=self.width is None)

    def line(self, *parts: Any) -> None:
        """One line built from plain strings and ``(text, style)`` pairs; wraps to the width."""
        from rich.text import Text

        text = Text()
        for part in parts:
            if isinstance(part, tuple):
                text.append(visible(part[0]), style=part[1] or None)
            else:
                text.append(visible(part))
        self.console.print(text, soft_wrap=self.width is None)

    def fields(self, *chunks: Any, sep: str = "   ") -> None:
        """Chunks (strings or ``(text, style)``) on one line, broken between chunks, not inside them."""
        from rich.text import Text

        lines: list[Text] = [Text()]
        for chunk in chunks:
            text, style = chunk if isinstance(chunk, tuple) else (chunk, "")
            text = visible(text)
            if not text:
                continue
            cur = lines[-1]
            if cur.cell_len and self.width is not None and cur.cell_len + len(sep) + cell_len(text) > self.width:
                lines.append(cur := Text())
            if cur.cell_len:
                cur.append(sep)
            cur.append(text, style=style or None)
        for line in lines:
            self.console.print(line, soft_wrap=self.width is None)

    def table(self, table: Table) -> None:
        from rich.text import Text

        if table.title:
            self.line((table.title, "bold"))
        for line, style in render_lines(table, self.width):
            self.console.print(Text(line, style=style or None), soft_wrap=True)

    def blank(self) -> None:
        self.console.print()
