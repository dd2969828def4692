"""Hostile and faulty inputs, built byte by byte in ``tmp_path`` (nothing here is downloaded).

Each builder writes one file (or directory) and returns its path. They reproduce the classes of
input from issue 11: safetensors headers that break the format in one place, torch files whose
tensors claim more memory than they store or nest without end, eigenvalue files that inflate,
spectra JSON files with the wrong shapes, and run directories in every corrupt state.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

# ---------------------------------------------------------------------------------- safetensors


def entry(dtype: str = "F32", shape=(2,), offsets=(0, 8), **extra) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets), **extra}


def raw_safetensors(path: Path, header: str | bytes | dict, data: bytes = b"", *, length: int | None = None) -> Path:
    """A safetensors file with exactly this header text (a dict is dumped as JSON) and data section."""
    if isinstance(header, dict):
        header = json.dumps(header)
    raw = header.encode() if isinstance(header, str) else header
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


#: name -> (header text, data section): each breaks the format in exactly one way.
BAD_SAFETENSORS: dict[str, tuple[str, bytes]] = {
    "Infinity in a shape": ('{"w": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 8]}}', b"\0" * 8),
    "1e400 in the metadata": ('{"__metadata__": {"x": 1e400}, "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}',
                              b"\0" * 8),
    "100k-deep JSON": ('{"w": ' + "[" * 100_000 + "]" * 100_000 + "}", b""),
    "lower-case dtype, wrong size": (json.dumps({"w": entry("float32", (4,), (0, 8))}), b"\0" * 8),
    "lower-case dtype code": (json.dumps({"w": entry("f32")}), b"\0" * 8),
    "unknown dtype": (json.dumps({"w": entry("F31")}), b"\0" * 8),
    "float shape": (json.dumps({"w": entry(shape=(2.0,))}), b"\0" * 8),
    "string shape": (json.dumps({"w": entry(shape=("2",))}), b"\0" * 8),
    "negative shape": (json.dumps({"w": entry(shape=(-2,))}), b"\0" * 8),
    "boolean shape": (json.dumps({"w": entry(shape=(True, 2))}), b"\0" * 8),
    "three offsets": (json.dumps({"w": entry(offsets=(0, 8, 8))}), b"\0" * 8),
    "overlapping offsets": (json.dumps({"a": entry(offsets=(0, 8)), "b": entry(offsets=(4, 12))}), b"\0" * 12),
    "aliased offsets": (json.dumps({"a": entry(), "b": entry()}), b"\0" * 8),
    "gap before a tensor": (json.dumps({"w": entry(offsets=(4, 12))}), b"\0" * 12),
    "trailing bytes": (json.dumps({"w": entry()}), b"\0" * 12),
    "duplicate key": ('{"w": ' + json.dumps(entry()) + ', "w": ' + json.dumps(entry()) + "}", b"\0" * 8),
    "duplicate field": ('{"w": {"dtype": "F32", "dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', b"\0" * 8),
    "non-string metadata": ('{"__metadata__": {"x": 1}, "w": ' + json.dumps(entry()) + "}", b"\0" * 8),
    "header is a list": ("[]", b""),
    "NUL after the header": (json.dumps({"w": entry()}) + "\0\0", b"\0" * 8),
    "not UTF-8": (b'{"w\xff": ' + json.dumps(entry()).encode() + b"}", b"\0" * 8),
    "offsets past the end": (json.dumps({"w": entry(shape=(4,), offsets=(0, 16))}), b"\0" * 8),
    "shape overflows": (json.dumps({"w": entry(shape=(2**40, 2**40))}), b"\0" * 8),
}


def many_tensors_header(path: Path, count: int) -> Path:
    """A safetensors file whose header lists ``count`` one-byte tensors (a header-size bomb)."""
    parts = [f'"t{i}": {{"dtype": "U8", "shape": [1], "data_offsets": [{i}, {i + 1}]}}' for i in range(count)]
    return raw_safetensors(path, "{" + ",".join(parts) + "}", b"\0" * count)


def shard_index(directory: Path, shard: str) -> Path:
    """A sharded-checkpoint directory whose index names ``shard`` (``../x``, ``/etc/passwd``, ...)."""
    directory.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4, 4)}, str(directory / "model-00001-of-00001.safetensors"))
    index = {"metadata": {}, "weight_map": {"w": shard}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return directory


# ---------------------------------------------------------------------------------- torch files


def torch_file(path: Path, obj: Any) -> Path:
    torch.save(obj, path)
    return path


def expanded_pt(path: Path, n: int = 20_000) -> Path:
    """1.9 KB on disk, an (n, n) float32 tensor in memory: one element expanded with stride 0."""
    return torch_file(path, {"w": torch.zeros(1).expand(n, n), "ok.weight": torch.randn(16, 8)})


def deep_pt(path: Path, depth: int) -> Path:
    """A torch zip file whose pickle is a dict nested ``depth`` levels (written opcode by opcode,
    since ``torch.save`` itself recurses)."""
    torch.save({"w": torch.zeros(2, 2)}, path)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    pickle_name = next(name for name in members if name.endswith("data.pkl"))
    ops = bytearray(b"\x80\x02")
    for _ in range(depth):
        ops += b"}" + b"X" + struct.pack("<I", 1) + b"a"  # EMPTY_DICT, BINUNICODE 'a'
    ops += b"}" + b"s" * depth + b"."  # innermost dict, SETITEM x depth, STOP
    members[pickle_name] = bytes(ops)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def self_referencing_pt(path: Path) -> Path:
    d: dict[str, Any] = {"w": torch.randn(8, 4)}
    d["self"] = d
    return torch_file(path, d)


def meta_pt(path: Path) -> Path:
    return torch_file(path, {"w": torch.empty(64, 32, device="meta")})


def sparse_pt(path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparse = torch.sparse_coo_tensor(torch.tensor([[0], [0]]), torch.tensor([1.0]), (64, 32))
    return torch_file(path, {"w": sparse})


# ---------------------------------------------------------------------------------- eigenvalue files


def _deflated(prefix: bytes, zeros: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``prefix`` followed by ``zeros`` zero bytes, and its CRC-32, built in
    about a second per GB: after a full flush the compressor forgets the past, so the compressed
    form of each further 1 MiB of zeros is the same bytes, repeated."""
    chunk = bytes(1 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(zeros, len(chunk))
    tail = comp.compress(bytes(rest)) + comp.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(bytes(rest), crc)
    return first + block * count + tail, crc


def deflate_bomb_npz(path: Path, members: int = 2, each: int = 1 << 30) -> Path:
    """An .esd.npz of ``members`` zero-filled float64 arrays of ``each`` bytes: ``members * each``
    bytes once inflated, about one thousandth of that on disk (a hand-written zip)."""
    out, central = bytearray(), bytearray()
    for m in range(members):
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (each // 8,)})
        data, crc = _deflated(header.getvalue(), each)
        name = f"layer{m}.npy".encode()
        size = len(header.getvalue()) + each
        fields = struct.pack("<HHHHHIII", 20, 0, 8, 0, 33, crc, len(data), size)
        central += b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0,
                                                                                     len(out)) + name
        out += b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, members, members, len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))
    return path


def string_npz(path: Path, name: str = "fc") -> Path:
    with open(path, "wb") as fh:
        np.savez(fh, **{name: np.array(["a", "b"])})
    return path


# ---------------------------------------------------------------------------------- spectra JSON


def deep_json(depth: int = 100_000) -> str:
    return '{"schema": "spectra.analysis/1", "layers": ' + "[" * depth + "]" * depth + "}"
