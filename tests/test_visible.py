"""spectra._visible: untrusted text shown with every control, bidi and separator character escaped."""

from hypothesis import given
from hypothesis import strategies as st

from spectra._visible import UNSAFE_CHARS, is_unsafe, visible


@given(st.text(alphabet=st.characters(codec=None)))
def test_output_is_always_safe_and_stable(text):
    out = visible(text)
    assert not is_unsafe(out)
    assert visible(out) == out  # escaping twice changes nothing
    assert (out == text) == (not is_unsafe(text))  # safe text passes through untouched


def test_each_dangerous_class_is_shown():
    assert visible("\x1b[2J") == "\\x1b[2J"  # C0: ESC starts terminal escape sequences
    assert visible("a\u009bb") == "a\\x9bb"  # C1: a one-byte CSI on some terminals
    assert visible("\u202eabc\u2066") == "\\u202eabc\\u2066"  # bidi override and isolate
    assert visible("\u200e\u200f\u061c") == "\\u200e\\u200f\\u061c"  # bidi marks
    assert visible("x\u2028y") == "x\\u2028y" and visible("\ud800") == "\\ud800"
    assert visible("Ünïcödé 层 ✓") == "Ünïcödé 层 ✓"
    assert UNSAFE_CHARS.pattern


def test_one_line_folds_whitespace_then_escapes():
    from spectra._visible import one_line

    assert one_line("a\nb\r\n  c\x1b[0m\u200b") == "a b c\\x1b[0m\\u200b"
    assert "\n" not in one_line("x\n" * 5)
