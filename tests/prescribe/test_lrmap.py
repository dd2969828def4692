"""The spectra.lrmap/1 file: round trip, schema checks and validation."""

from __future__ import annotations

import json

import pytest

from spectra.errors import FormatError
from spectra.prescribe import LRMAP_SCHEMA, LayerEntry, LRMap, prescribe


@pytest.mark.parametrize("method", ["llr", "tempbalance", "alphadecay", "layer-decay", "lines"])
def test_json_round_trip(analysis, tmp_path, method):
    lrmap = prescribe(analysis, method)
    path = tmp_path / "lrmap.json"
    lrmap.to_json(path)
    data = json.loads(path.read_text())
    assert data["schema"] == LRMAP_SCHEMA and data["method"] == method
    assert set(data) >= {"schema", "spectra_version", "method", "options", "source", "default", "params", "layers"}
    assert set(data["layers"][0]) >= {"name", "param", "depth", "metric", "value", "multiplier", "reason"}
    back = LRMap.from_json(path)
    assert back.to_dict() == lrmap.to_dict()
    assert back.multiplier("layers.1.mlp.weight") == lrmap.multiplier("layers.1.mlp.weight")
    assert ("wd_params" in data) == (method == "alphadecay")


def test_nan_value_is_null_and_reads_back_as_nan(make_analysis, tmp_path):
    analysis = make_analysis(**{"layers.0.mlp": {"status": "failed", "alpha": float("nan")}})
    lrmap = prescribe(analysis, "tempbalance")
    text = lrmap.to_json()
    assert "NaN" not in text
    entry = json.loads(text)["layers"][2]
    assert entry["name"] == "layers.0.mlp" and entry["value"] is None and entry["prescribed"] is False
    back = LRMap.from_dict(json.loads(text))
    assert back.layer("layers.0.mlp").value != back.layer("layers.0.mlp").value  # NaN


def base_dict():
    return LRMap(method="m", params={"a.weight": 2.0}).to_dict()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"schema": "spectra.analysis/1"}, "expected spectra.lrmap/1"),
        ({"schema": "spectra.lrmap/2"}, "not supported"),
        ({"params": {"a.weight": -1.0}}, ">= 0"),
        ({"params": {"a.weight": "fast"}}, "must be a number"),
        ({"params": {"a.weight": None}}, "must be a number"),
        ({"params": [1, 2]}, "x.json: params must be an object, got a list"),
        ({"layers": [{"name": "a"}]}, r"layers\[0\] \(.a.\)\.param is missing"),
        ({"layers": [dict(name="a", param="a.w", depth=-1, metric="alpha", value=2.0, multiplier=1.0)]},
         r"layers\[0\] \(.a.\)\.depth must be >= 0, got -1"),
        ({"target": "momentum"}, "target"),
        ({"wd_params": {"a.weight": float("inf")}}, "finite"),
    ],
)
def test_invalid_files_are_format_errors(change, message):
    data = base_dict() | change
    with pytest.raises(FormatError, match=message):
        LRMap.from_dict(data, origin="x.json")


def test_missing_schema_and_file(tmp_path):
    data = base_dict()
    del data["schema"]
    with pytest.raises(FormatError, match="no 'schema'"):
        LRMap.from_dict(data)
    with pytest.raises(FormatError, match="no such file"):
        LRMap.from_json(tmp_path / "none.json")


def test_accessors_and_by_depth(analysis):
    lrmap = prescribe(analysis, "layer-decay", decay=0.5)
    assert lrmap.by_depth() == [(0, 0.125, 0.125, 0.125, 1), (1, 0.25, 0.25, 0.25, 2), (2, 0.5, 0.5, 0.5, 2),
                                (3, 1.0, 1.0, 1.0, 1)]
    assert lrmap.multiplier("not.in.map") == 1.0 and lrmap.wd_multiplier("embed.weight") == 1.0
    assert lrmap.covers("norm.weight") and not lrmap.covers("x")
    with pytest.raises(KeyError):
        lrmap.layer("nope")
    assert isinstance(lrmap.layers[0], LayerEntry)
