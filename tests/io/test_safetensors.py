"""Safetensors header validation, dtype names, natural order and per-tensor reads."""

from __future__ import annotations

import json
from pathlib import Path
import struct

import pytest
import torch
from safetensors.torch import save_file

from spectra.errors import CheckpointError
from spectra.io import open_checkpoint
from spectra.io.safetensors import SafetensorsShard, read_header


def _write_raw(path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_round_trip_values_and_infos(tiny_safetensors, tiny_state_dict):
    with open_checkpoint(tiny_safetensors) as ckpt:
        assert ckpt.format == "safetensors"
        assert sorted(ckpt.keys()) == sorted(tiny_state_dict)
        for key, tensor in ckpt:
            assert torch.equal(tensor, tiny_state_dict[key])
            info = ckpt.info(key)
            assert info.shape == tuple(tiny_state_dict[key].shape)
        assert ckpt.info("embeddings.position_ids").dtype == "int64"
        assert ckpt.info("head.weight").dtype == "float32"


def test_natural_order_not_alphabetical(tmp_path):
    tensors = {f"layers.{i}.weight": torch.full((2, 2), float(i)) for i in (10, 2, 1, 0)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path))
    with open_checkpoint(path) as ckpt:
        assert ckpt.keys() == ["layers.0.weight", "layers.1.weight", "layers.2.weight", "layers.10.weight"]
    # the file itself stores them alphabetically (10 before 2): the re-sort is ours
    assert list(read_header(path)[0]) == ["layers.0.weight", "layers.1.weight", "layers.10.weight", "layers.2.weight"]


@pytest.mark.parametrize(
    "dtype, name",
    [(torch.bfloat16, "bfloat16"), (torch.float16, "float16"), (torch.int64, "int64"),
     (torch.float8_e4m3fn, "float8_e4m3fn"), (torch.bool, "bool"), (torch.uint8, "uint8")],
)
def test_dtype_names(tmp_path, dtype, name):
    path = tmp_path / "d.safetensors"
    save_file({"w": torch.zeros(3, 2).to(dtype)}, str(path))
    with open_checkpoint(path) as ckpt:
        assert ckpt.info("w").dtype == name
        assert ckpt.get("w").dtype == dtype


def test_metadata_is_kept(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(path), metadata={"format": "pt"})
    assert SafetensorsShard(path).metadata == {"format": "pt"}


def test_get_slice_reads_rows(tiny_safetensors, tiny_state_dict):
    shard = SafetensorsShard(tiny_safetensors)
    rows = shard.get_slice("embeddings.word_embeddings.weight")[2:5]
    assert torch.equal(rows, tiny_state_dict["embeddings.word_embeddings.weight"][2:5])


def test_tensor_outlives_close(tiny_safetensors, tiny_state_dict):
    ckpt = open_checkpoint(tiny_safetensors)
    t = ckpt.get("head.weight")
    ckpt.close()
    assert torch.equal(t, tiny_state_dict["head.weight"])


def test_empty_file(tmp_path):
    path = tmp_path / "e.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"e\.safetensors: file is empty"):
        open_checkpoint(path)


def test_header_length_past_end(tmp_path):
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b'{"a": 1}')
    with pytest.raises(CheckpointError, match=r"t\.safetensors: truncated or not a safetensors file"):
        open_checkpoint(path)


def test_truncated_data(tmp_path, tiny_safetensors):
    data = tiny_safetensors.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors: truncated safetensors file \(tensor "):
        open_checkpoint(path)


def test_corrupt_json(tmp_path):
    path = tmp_path / "j.safetensors"
    raw = b'{"w": {"dtype": "F32", '  # cut in the middle of the JSON
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
    with pytest.raises(CheckpointError, match=r"j\.safetensors: corrupt safetensors header \(invalid JSON"):
        open_checkpoint(path)


def test_entry_without_offsets(tmp_path):
    path = tmp_path / "o.safetensors"
    _write_raw(path, {"w": {"dtype": "F32", "shape": [2]}}, b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"tensor 'w' has no 'data_offsets'"):
        open_checkpoint(path)


def test_offsets_disagree_with_shape(tmp_path):
    path = tmp_path / "s.safetensors"
    _write_raw(path, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"shape \[4\] and dtype F32 \(16 bytes\) but spans 8 bytes"):
        open_checkpoint(path)


def test_random_bytes_with_unknown_suffix(tmp_path):
    path = tmp_path / "weights.dat"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match=r"weights\.dat: not a checkpoint"):
        open_checkpoint(path)


def test_safetensors_sniffed_without_suffix(tmp_path, tiny_state_dict):
    path = tmp_path / "weights.data"
    save_file(dict(tiny_state_dict), str(path))
    with open_checkpoint(path) as ckpt:
        assert ckpt.format == "safetensors"
        assert len(ckpt) == len(tiny_state_dict)


_STREAM_PROBE = r"""
import sys, torch
from spectra.io import open_checkpoint

def anon():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return -1

path = sys.argv[1]
base = anon()
peak = 0
with open_checkpoint(path) as ckpt:
    for key, tensor in ckpt:
        assert tensor.sum().item() == float(key.split(".")[1]) * tensor.numel()
        peak = max(peak, anon() - base)
        del tensor
base = anon()
import safetensors.torch
with open(path, "rb") as fh:
    everything = safetensors.torch.load(fh.read())  # control: the whole file in memory
print(peak, anon() - base)
"""


def test_streaming_does_not_load_the_whole_file(tmp_path):
    """64 MB in 32 tensors of 2 MB: reading tensor by tensor must stay far below the file size in
    anonymous memory (file-backed pages of a memory map are the page cache, not an allocation); a
    whole-file read is the control that shows the measurement sees such a load. Measured in a fresh
    interpreter so memory freed by earlier tests cannot hide either number."""
    import subprocess
    import sys

    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc/self/status")
    path = tmp_path / "big.safetensors"
    save_file({f"layers.{i}.weight": torch.full((512, 1024), float(i)) for i in range(32)}, str(path))
    size = path.stat().st_size
    out = subprocess.run([sys.executable, "-c", _STREAM_PROBE, str(path)], capture_output=True, text=True, check=True)
    peak, control = (int(v) for v in out.stdout.split())
    assert peak < size / 4, f"anonymous memory grew by {peak / 2**20:.1f} MB for a {size / 2**20:.0f} MB file"
    assert control > size / 2, f"control read grew only {control / 2**20:.1f} MB: the probe is blind"
