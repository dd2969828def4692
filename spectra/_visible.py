"""Make untrusted text safe to show: every invisible or reordering character becomes a visible escape.

Checkpoint keys, file names and JSON fields are untrusted strings that end up in terminal tables,
``error: ...`` lines, progress labels and the HTML report. Three kinds of characters in them are
dangerous to show as they are:

* C0 and C1 control characters (U+0000-U+001F, U+007F-U+009F): ``ESC`` starts terminal escape
  sequences (``\\x1b]0;TITLE\\x07`` retitles the terminal, CSI sequences move the cursor and erase
  lines), ``CR``/``LF`` forge extra output lines, and U+009B is a one-byte CSI on some terminals;
* Unicode bidirectional formatting characters (U+202A-U+202E embeddings and overrides, U+2066-U+2069
  isolates, U+200E/U+200F marks, U+061C): they reorder how the rest of the line is displayed, so a
  name can read differently from what it is (CVE-2021-42574, "Trojan Source");
* invisible characters that make two different names look the same (zero-width space, non-joiner
  and joiner U+200B-U+200D, word joiner U+2060, byte-order mark U+FEFF), line and paragraph
  separators (U+2028, U+2029) and lone surrogates (which cannot be encoded and would crash the
  output stream).

:func:`visible` replaces each one with a Python-style escape (``\\x1b``, ``\\u202e``), so the reader
sees that the character is there and the text shows in logical order. Everything else, including
ordinary non-ASCII letters, passes through unchanged. HTML and rich-markup escaping are separate
steps on top of this (the report's template autoescapes, the terminal tables render plain
:class:`rich.text.Text`).

>>> visible("layer\\x1b]0;pwned\\x07.weight")
'layer\\\\x1b]0;pwned\\\\x07.weight'
>>> visible("evil\\u202etxt.exe")
'evil\\\\u202etxt.exe'
>>> visible("encoder.layer.5.attention.self.value")
'encoder.layer.5.attention.self.value'
"""

from __future__ import annotations

import re

__all__ = ["visible", "one_line", "UNSAFE_CHARS", "is_unsafe"]

#: Bidirectional formatting characters (Unicode UAX #9): marks, embeddings, overrides, isolates.
BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"

#: One character class for everything :func:`visible` escapes.
UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f" + BIDI + "\u200b-\u200d\u2060\ufeff\u2028\u2029\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object) -> str:
    """``text`` as a string with control, bidi and separator characters shown as escapes."""
    return UNSAFE_CHARS.sub(_escape, text if isinstance(text, str) else str(text))


def one_line(text: object) -> str:
    """``text`` as one visible line (for ``error: ...`` and ``warning: ...``): whitespace runs,
    newlines included, fold to one space, then :func:`visible`.

    >>> one_line("bad\\nkey \\x1b]0;t\\u202e")
    'bad key \\\\x1b]0;t\\\\u202e'
    """
    return visible(" ".join(str(text).split()))


def is_unsafe(text: str) -> bool:
    """Whether ``text`` holds any character that :func:`visible` would escape."""
    return UNSAFE_CHARS.search(text) is not None
