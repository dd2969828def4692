"""The results base (spectra.records): typed reading from the field types, atomic save, load by schema."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import pytest

from spectra.errors import FormatError
from spectra.records import NAN, Record, ResultFile, checked, internal, load


@dataclass(frozen=True)
class Step(Record):
    step: int = checked(ge=0)
    loss: float = NAN
    lrs: tuple[float, ...] = ()
    pair: tuple[int, str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Trajectory(ResultFile):
    """A new file type is this much code (what spectra.trajectory/1 will look like)."""

    schema = "spectra.test-trajectory/1"

    steps: tuple[Step, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    note: str | None = checked(None, omit_none=True)
    cache: Mapping[str, Any] = internal()


def test_a_new_file_type_round_trips_and_loads_by_schema(tmp_path):
    t = Trajectory(steps=(Step(0, 1.5, (0.1, 0.2), (3, "x"), {"a": "b"}), Step(1)), config={"k": [1, 2]})
    text = t.save(tmp_path / "t.json").read_text()
    data = json.loads(text)
    assert list(data) == ["schema", "config", "steps"]  # schema first, records last, None omitted, no cache
    assert data["steps"][1] == {"step": 1, "loss": None, "lrs": [], "pair": None, "tags": {}}
    back = load(tmp_path / "t.json")
    assert type(back) is Trajectory and back == t
    assert ResultFile.load(tmp_path / "t.json") == Trajectory.load(tmp_path / "t.json") == t


def test_to_json_serialises_once_and_writes_the_same_text(tmp_path):
    t = Trajectory(steps=(Step(2, float("inf")),))
    text = t.to_json(tmp_path / "t.json")
    assert (tmp_path / "t.json").read_text() == text + "\n" and '"loss": null' in text


@pytest.mark.parametrize("change, message", [
    ({"steps": [{"step": True}]}, r"steps\[0\]\.step must be an integer, got a boolean"),
    ({"steps": [{"step": 1.0}]}, r"steps\[0\]\.step must be an integer, got the number 1\.0"),
    ({"steps": [{"step": -1}]}, r"steps\[0\]\.step must be >= 0, got -1"),
    ({"steps": [{}]}, r"steps\[0\]\.step is missing"),
    ({"steps": [{"step": 0, "loss": "1"}]}, r"steps\[0\]\.loss must be a number or null, got a string '1'"),
    ({"steps": [{"step": 0, "lrs": [0.1, None, "x"]}]}, r"steps\[0\]\.lrs\[2\] must be a number"),
    ({"steps": [{"step": 0, "pair": [1]}]}, r"steps\[0\]\.pair must be a list of 2 items, got 1 items"),
    ({"steps": [{"step": 0, "pair": [1, 2]}]}, r"must be a string, got the number 2"),
    ({"steps": [{"step": 0, "tags": {"a": 1}}]}, r"steps\[0\]\.tags\['a'\] must be a string"),
    ({"steps": {"0": {}}}, r"steps must be a list, got an object"),
    ({"steps": [], "note": 3}, r"note must be a string"),
    ({"schema": "spectra.test-trajectory/2", "steps": []}, r"schema spectra.test-trajectory/2 is not supported"),
])
def test_every_problem_names_file_and_field(change, message):
    data = {"schema": Trajectory.schema, **change}
    with pytest.raises(FormatError, match=rf"^t\.json: .*{message}"):
        Trajectory.from_dict(data, origin="t.json")


def test_unknown_fields_are_ignored_and_nan_stays_missing():
    t = Trajectory.from_dict({"schema": Trajectory.schema, "steps": [{"step": 0, "future": 1}], "future": {}})
    assert math.isnan(t.steps[0].loss) and t.steps[0] == Step(0)


def test_record_from_dict_names_the_field_without_a_file():
    with pytest.raises(FormatError, match=r"^Step loss must be a number or null, got a list"):
        Step.from_dict({"step": 0, "loss": [1]})


def test_load_refuses_unknown_or_missing_schema(tmp_path):
    (tmp_path / "x.json").write_text('{"schema": "other.thing/1"}')
    with pytest.raises(FormatError, match="is a 'other.thing/1' file, which spectra does not read"):
        load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"layers": []}')
    with pytest.raises(FormatError, match="no 'schema' field"):
        load(tmp_path / "y.json")


def test_load_dispatches_to_every_spectra_file_type(tmp_path):
    from spectra.diff import DiffResult, LayerDiff
    from spectra.noise import LayerNoise, NoiseResult
    from spectra.prescribe import LRMap
    from spectra.results import Analysis, LayerResult
    from spectra.train.runfiles import RunInfo

    files = [Analysis(layers=(LayerResult("a", "a.weight", "linear", (4, 2), 1, alpha=3.0),)),
             LRMap(method="m", params={"a.weight": 1.5}),
             NoiseResult(layers=(LayerNoise("a", ("a.weight",), 1, 8),)),
             DiffResult(layers=(LayerDiff("a", "a.weight", 1, "linear", (4, 2)),)),
             RunInfo(config={"epochs": 3})]
    for i, obj in enumerate(files):
        path = obj.save(tmp_path / f"{i}.json")
        assert load(path) == obj
