"""Property-based fuzzing of the three doors untrusted input comes through: the safetensors header
parser (against the reference ``safetensors`` library), the JSON readers of spectra's own files, and
the CLI's numeric options. Every outcome is a result or one ``error:`` line, never a traceback."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spectra.errors import CheckpointError, FormatError
from spectra.io.safetensors import SAFETENSORS_DTYPES, SafetensorsShard

from .conftest import assert_one_error, invoke

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --------------------------------------------------------------------------- safetensors vs the reference

ITEM_BITS = {code: round(size * 8) for code, (_, size) in SAFETENSORS_DTYPES.items()}
dtype_code = st.one_of(st.sampled_from(sorted(SAFETENSORS_DTYPES)), st.sampled_from(["f32", "float32", "F31", "", "I128"]))
dim = st.one_of(st.integers(0, 4), st.integers(-2, -1), st.sampled_from([2.0, "2", True, None, 2**64]))


@st.composite
def safetensors_file(draw):
    """Header text and data section: mostly well formed, each field sometimes broken."""
    n = draw(st.integers(0, 4))
    header: dict = {}
    position = 0
    for i in range(n):
        code = draw(dtype_code)
        shape = draw(st.lists(dim, max_size=3))
        try:
            numel = math.prod(int(s) for s in shape)
            size = numel * ITEM_BITS.get(code, 32) // 8
        except (TypeError, ValueError):
            size = 4
        begin = position + draw(st.sampled_from([0, 0, 0, 1, -1, -4]))
        end = begin + size + draw(st.sampled_from([0, 0, 0, 1, -1]))
        offsets = draw(st.sampled_from([[begin, end], [begin, end], [begin], [begin, end, end], [str(begin), end]]))
        header[f"t{draw(st.integers(0, 5))}"] = {"dtype": code, "shape": shape, "data_offsets": offsets}
        position = max(position, end if isinstance(end, int) else position)
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.sampled_from([{"format": "pt"}, {"x": 1}, "meta", None, {"a": None}]))
    text = json.dumps(header)
    text = draw(st.sampled_from([text, text, text, text + " ", " " + text, text + "\0", text.replace("]", "]]", 1)]))
    data = bytes(min(max(position, 0), 1 << 20) + draw(st.sampled_from([0, 0, 0, 1, 7])))
    return text.encode(), data


def reference_reads(path):
    """The reference library's tensors, or None when it refuses the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception:  # noqa: BLE001 - any refusal counts
        return None


@FUZZ
@given(safetensors_file())
def test_header_parser_is_at_least_as_strict_as_the_reference(tmp_path, case):
    header, data = case
    path = tmp_path / "f.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    reference = reference_reads(path)
    try:
        shard = SafetensorsShard(path)
        ours = {key: shard.get(key) for key in shard.keys()}
    except CheckpointError:
        ours = None
    if reference is None:
        assert ours is None, f"spectra read a file the reference refuses: {header!r}"
    if ours is not None:
        assert set(ours) == set(reference)
        for key, tensor in ours.items():
            assert tensor.dtype == reference[key].dtype and tensor.shape == reference[key].shape
            as_bytes = [t.reshape(-1).contiguous().view(torch.uint8) for t in (tensor, reference[key])]
            assert torch.equal(*as_bytes)


@settings(FUZZ, max_examples=40)
@given(safetensors_file())
def test_header_errors_through_the_cli_are_one_line(tmp_path, case):
    header, data = case
    path = tmp_path / "f.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    result = invoke("analyze", path, "-q")
    if result.exit_code != 0:
        assert_one_error(result)


# --------------------------------------------------------------------------- spectra JSON readers


def _valid_files():
    from spectra.diff import DiffResult, LayerDiff
    from spectra.noise import LayerNoise, NoiseResult
    from spectra.prescribe import LayerEntry, LRMap
    from spectra.results import Analysis, LayerResult

    rec = LayerResult(name="h.0.fc", param="h.0.fc.weight", kind="linear", shape=(8, 4), depth=1, N=8, M=4, Q=2.0,
                      num_evals=4, alpha=3.0, alpha_ci=(2.5, 3.5), attached=("h.0.fc.bias",))
    return [
        Analysis(layers=(rec,), summary={"alpha": 3.0}, config={"fit": "ww"}, checkpoint="m", created="now"),
        LRMap(method="m", params={"h.0.fc.weight": 2.0},
              layers=(LayerEntry("h.0.fc", "h.0.fc.weight", 1, "alpha", 3.0, 2.0),)),
        NoiseResult(layers=(LayerNoise("h.0.fc", ("h.0.fc.weight",), 1, 32, b_simple=4.0),), summary={}, config={},
                    source="gradients"),
        DiffResult(layers=(LayerDiff("h.0.fc", "h.0.fc.weight", 1, "linear", (8, 4), rel_update=1e-3),)),
    ]


junk = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=8), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                        st.integers(), max_size=2))


def _mutate(data, draw):
    """Replace one value somewhere in ``data`` (a nested dict/list) by junk, or delete one key."""
    node = data
    while True:
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if not children:
            return data
        key, value = draw(st.sampled_from(children))
        if isinstance(value, (dict, list)) and value and draw(st.booleans()):
            node = value
            continue
        if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
            del node[key]
        else:
            node[key] = draw(junk)
        return data


@FUZZ
@given(st.data())
def test_json_readers_give_a_result_or_a_format_error(tmp_path, data):
    from spectra.results import load

    obj = data.draw(st.sampled_from(_valid_files()))
    content = _mutate(obj.to_dict(), data.draw)
    path = tmp_path / "f.json"
    path.write_text(json.dumps(content))  # json.dumps writes NaN/Infinity for non-finite floats: refused too
    try:
        back = load(path)
    except FormatError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert type(back) is type(obj)
    assert json.loads(back.to_json())  # whatever was accepted writes valid JSON again


@FUZZ
@given(st.text(max_size=60))
def test_json_reader_on_arbitrary_text(tmp_path, text):
    from spectra.results import load

    path = tmp_path / "f.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with pytest.raises(FormatError):
        load(path)


# --------------------------------------------------------------------------- numeric options

NOT_A_NUMBER = st.one_of(st.text(alphabet="abcxyz-+.eE,[] ", min_size=1, max_size=6), st.just("1.5.2"))
NON_FINITE = st.sampled_from(["nan", "inf", "-inf", "NaN", "1e999"])
HUGE_INT = st.integers(2**63, 2**200).map(str)

# option -> strategies of values it must refuse (each: exit 2, one error line)
OPTIONS = {
    ("analyze", "{ckpt}"): {"--bootstrap": st.one_of(NOT_A_NUMBER, HUGE_INT, st.integers(-(10**6), -1).map(str),
                                                       st.integers(10_001, 10**12).map(str)),
                            "--min-evals": st.one_of(NOT_A_NUMBER, st.integers(-(10**9), 1).map(str), HUGE_INT),
                            "--max-evals": st.one_of(NOT_A_NUMBER, st.integers(-(10**9), 7).map(str)),
                            "--seed": st.one_of(NOT_A_NUMBER, HUGE_INT, st.integers(-(10**9), -1).map(str))},
    ("prescribe", "{ckpt}", "-m", "llr"): {"--min-ratio": st.one_of(NOT_A_NUMBER, NON_FINITE),
                                            "--max-ratio": st.one_of(NOT_A_NUMBER, NON_FINITE)},
    ("diff", "{ckpt}", "{ckpt}", "--no-alpha"): {"--topk": st.one_of(NOT_A_NUMBER, HUGE_INT,
                                                                     st.integers(-(10**9), 0).map(str))},
    ("retrain", "--task", "synthetic", "--out", "{tmp}/run"): {
        "--lr": st.one_of(NOT_A_NUMBER, NON_FINITE, st.floats(-1e9, -1e-9).map(repr)),
        "--epochs": st.one_of(NOT_A_NUMBER, HUGE_INT, st.integers(-(10**9), 0).map(str)),
        "--weight-decay": st.one_of(NOT_A_NUMBER, NON_FINITE),
        "--refit-until": st.one_of(NON_FINITE, st.floats(1.0001, 1e9).map(repr))},
    ("bench", "strategies", "--tasks", "synthetic", "--out", "{tmp}/b.md"): {
        "--threads": st.integers(-(10**6), -1).map(str), "--seeds": st.integers(-(10**6), 0).map(str),
        "--target": NON_FINITE},
    ("noise", "--task", "synthetic"): {"--batches": st.one_of(NOT_A_NUMBER, HUGE_INT, st.integers(-(10**9), 0).map(str)),
                                       "--micro-batch": st.one_of(NOT_A_NUMBER, HUGE_INT,
                                                                  st.integers(-(10**9), 0).map(str))},
}
CASES = [(cmd, opt) for cmd, opts in OPTIONS.items() for opt in opts]


@pytest.mark.parametrize("command, option", CASES, ids=[f"{c[0]} {o}" for c, o in CASES])
def test_bad_numeric_options_are_one_line_errors(tmp_path, small_ckpt, command, option):
    @settings(max_examples=12, deadline=None)
    @given(OPTIONS[command][option])
    def check(value):
        assume(not value.startswith("-") or value[1:2].isdigit())  # "-x" parses as an option, not a value
        args = [a.format(ckpt=small_ckpt, tmp=tmp_path) for a in command]
        assert_one_error(invoke(*args, f"{option}={value}"))
        assert not (tmp_path / "run").exists()

    check()
