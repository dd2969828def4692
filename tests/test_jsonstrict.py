"""spectra._json.loads: strict JSON for untrusted files."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spectra._json import JSONError, TooManyObjects, loads


@pytest.mark.parametrize("text, message", [
    ('{"a": NaN}', "NaN is not a JSON number"),
    ('[-Infinity]', "-Infinity is not a JSON number"),
    ('[1e400]', "number 1e400 is out of range"),
    ('[' + "1" * 41 + ']', "integer with 41 digits"),
    ('{"a": 1, "b": 2, "a": 3}', "duplicate key 'a'"),
    ('[' * 65 + ']' * 65, "nested deeper than 64 levels"),
    ('[' * 100_000 + ']' * 100_000, "nested deeper than 64 levels"),
    (b'{"\xff": 1}', "not UTF-8"),
    ('{"a": }', "invalid JSON at line 1 column 7"),
])
def test_refusals(text, message):
    with pytest.raises(JSONError, match=message):
        loads(text)


def test_object_count_stops_the_parse():
    with pytest.raises(TooManyObjects, match="more than 3 objects"):
        loads("[" + ",".join(["{}"] * 10) + "]", max_objects=3)
    assert loads("[{}, {}]", max_objects=3) == [{}, {}]


json_values = st.recursive(st.none() | st.booleans() | st.integers(-(10**18), 10**18) | st.floats(allow_nan=False, allow_infinity=False)
                           | st.text(), lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=20)


@given(json_values)
def test_accepts_what_json_writes(value):
    assert loads(json.dumps(value)) == value
