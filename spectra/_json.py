"""Strict JSON for files spectra did not write itself: one parser for every reader.

Safetensors headers, shard indexes and spectra's own result files all come from other people, so
they are parsed by :func:`loads`, which accepts only what RFC 8259 calls JSON and refuses what
Python's ``json`` module lets through or turns into a crash:

* ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON; Python accepts them);
* numbers that do not fit a float (``1e400`` would become ``inf``) and integers longer than
  :data:`MAX_INT_DIGITS` digits (Python raises a bare ``ValueError`` past 4300 digits and spends
  quadratic time below that);
* an object with a repeated key (Python keeps the last one silently, so two readers of the same
  file could see different content);
* nesting deeper than :data:`MAX_DEPTH` (Python's parser recurses and a 100,000-deep file ends in
  ``RecursionError``; every later walk over the value would recurse too);
* more than ``max_objects`` objects, checked while parsing, so a header of a million tiny entries
  is refused before it has cost a million dicts.

Every refusal is a :class:`JSONError` whose message names the problem; callers add the path and
turn it into their own error type (``CheckpointError`` for checkpoints, ``FormatError`` for
results).
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["JSONError", "TooManyObjects", "loads", "check_depth", "MAX_DEPTH", "MAX_INT_DIGITS"]

#: Deepest nesting accepted. spectra's own files nest 4 levels; safetensors headers 3.
MAX_DEPTH = 64
#: Longest integer accepted, in digits (int64 has 19).
MAX_INT_DIGITS = 40


class JSONError(ValueError):
    """The text is not JSON spectra accepts; the message says why (without the path)."""


class TooManyObjects(JSONError):
    """The text holds more objects than ``max_objects`` (parsing stopped there)."""


def _constant(name: str) -> Any:
    raise JSONError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONError(f"number {text[:40]} is out of range")
    return value


def _int(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > MAX_INT_DIGITS:
        raise JSONError(f"integer with {digits} digits (at most {MAX_INT_DIGITS} are accepted)")
    return int(text)


def loads(text: str | bytes, *, max_objects: int | None = None, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``text`` strictly (see the module docstring); raise :class:`JSONError` on any problem.

    >>> loads('{"a": [1, 2.5, null]}')
    {'a': [1, 2.5, None]}
    >>> loads('{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    spectra._json.JSONError: duplicate key 'a'
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONError(f"not UTF-8 text (byte {exc.start})") from None
    count = 0

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal count
        count += 1
        if max_objects is not None and count > max_objects:
            raise TooManyObjects(f"more than {max_objects:,} objects")
        out = dict(items)
        if len(out) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    raise JSONError(f"duplicate key {key[:80]!r}")
                seen.add(key)
        return out

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=_constant, parse_float=_float,
                           parse_int=_int)
    except TooManyObjects:
        raise
    except RecursionError:
        raise JSONError(f"nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise JSONError(f"invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
    except ValueError as exc:  # JSONError from a hook, or int() refusing a number
        raise JSONError(str(exc)) from None
    check_depth(value, max_depth)
    return value


def check_depth(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`JSONError` when ``value`` nests lists/dicts deeper than ``max_depth`` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise JSONError(f"nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
