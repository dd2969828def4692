"""Safetensors files: the header is validated here, tensors are read one at a time by offset.

Layout (https://github.com/huggingface/safetensors, "Format"): 8 bytes little-endian unsigned
header length ``n``, ``n`` bytes of JSON ``{key: {"dtype", "shape", "data_offsets": [begin, end]},
"__metadata__": {str: str}}``, then the raw tensor bytes; offsets are relative to the end of the
header. No code runs when a safetensors file is read.

The header is parsed by spectra itself (so a truncated or corrupt file gets a message that names the
problem, and :meth:`SafetensorsShard.info` never touches tensor data). Each tensor is read with one
positioned read of its byte range into a fresh buffer. ``safe_open`` would memory-map the file
instead, and every page a read touches then stays resident in the process (RSS grew with the
checkpoint: 138 MiB of file pages for a 48 MiB checkpoint, 476 MiB for 386 MiB, in
reports/bench/analyze.md); with plain reads the page cache is the kernel's, and peak memory is
bounded by the largest tensor. ``safe_open`` remains the fallback for dtypes torch cannot build
from raw bytes (sub-byte formats) and serves :meth:`SafetensorsShard.get_slice`.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import torch

from .._json import JSONError, TooManyObjects, loads
from ..errors import CheckpointError
from .base import TensorInfo, check_file

__all__ = ["read_header", "SafetensorsShard", "SAFETENSORS_DTYPES", "MAX_TENSORS", "MAX_HEADER_BYTES",
           "looks_like_safetensors"]

log = logging.getLogger(__name__)

#: safetensors dtype codes -> torch dtype names, with the item size in bytes (fractional: sub-byte).
#: The codes are those the reference ``safetensors`` library accepts; any other code is refused.
SAFETENSORS_DTYPES: dict[str, tuple[str, float]] = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1),
    "U64": ("uint64", 8), "U32": ("uint32", 4), "U16": ("uint16", 2), "U8": ("uint8", 1),
    "BOOL": ("bool", 1), "C64": ("complex64", 8),
    "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1), "F8_E8M0": ("float8_e8m0fnu", 1),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 1), "F8_E5M2FNUZ": ("float8_e5m2fnuz", 1),
    "F6_E2M3": ("float6_e2m3", 0.75), "F6_E3M2": ("float6_e3m2", 0.75), "F4": ("float4_e2m1fn_x2", 0.5),
}
_INT64_MAX = 2**63 - 1
#: The format caps the header at 100 MB; anything larger is corruption, not a model.
MAX_HEADER_BYTES = 100_000_000
#: Most tensors one file may hold. Published checkpoints keep far fewer per file (large models are
#: sharded into files of a few thousand tensors); a 100 MB header of 1.3 M tiny tensors cost 13 GB
#: and minutes before this cap, and a file at the cap with 400-character names analyses in under 1 GB.
MAX_TENSORS = 100_000


def looks_like_safetensors(head: bytes) -> bool:
    """True when the first bytes of a file look like a safetensors header (length, then ``{``)."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= MAX_HEADER_BYTES and head[8:9] == b"{"


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """``({key: TensorInfo}, metadata)`` of a safetensors file (see :func:`read_layout`)."""
    infos, metadata, _, _ = read_layout(path)
    return infos, metadata


def read_layout(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str], dict[str, tuple[int, int, str]], int]:
    """Parse and validate the header of a safetensors file, at least as strictly as the reference library.

    Returns ``({key: TensorInfo}, metadata, {key: (begin, end, dtype code)}, data_start)`` with keys in
    file order (safetensors writers sort them alphabetically); offsets are relative to ``data_start``.
    Raises CheckpointError naming the file and the problem: a header length past the end of the file
    or over 100 MB, text that is not strict JSON (:func:`spectra._json.loads`: no ``Infinity``, no
    ``1e400``, no repeated key, bounded nesting), more than :data:`MAX_TENSORS` entries, an entry
    without a known dtype code, a shape of non-negative integers or two integer offsets, a byte span
    that does not match shape x dtype size, and data sections that overlap, alias each other, leave
    a gap or leave bytes after the last tensor (the data must be covered exactly, as the reference
    requires).
    """
    size = check_file(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: too short for a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: not a safetensors file (header length {n:,} bytes is over the "
                                  f"format's limit of {MAX_HEADER_BYTES:,})")
        if n > size - 8:
            raise CheckpointError(
                f"{path}: truncated or not a safetensors file (header says {n} bytes, "
                f"file has {size - 8} after the length field)"
            )
        raw = fh.read(n)
    too_many = f"{path}: holds more than {MAX_TENSORS:,} tensors, the most spectra reads from one file"
    try:
        header = loads(raw, max_objects=MAX_TENSORS + 2, max_depth=8)
    except TooManyObjects:
        raise CheckpointError(too_many) from None
    except JSONError as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (expected a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: corrupt safetensors header (__metadata__ must map strings to strings)")
    if len(header) > MAX_TENSORS:
        raise CheckpointError(too_many)
    data_len = size - 8 - n
    infos: dict[str, TensorInfo] = {}
    layout: dict[str, tuple[int, int, str]] = {}
    for key, entry in header.items():
        infos[key], layout[key] = _entry(path, key, entry)
    _check_coverage(path, layout, data_len)
    return infos, metadata, layout, 8 + n


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(path: Path, key: str, entry: object) -> tuple[TensorInfo, tuple[int, int, str]]:
    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: corrupt safetensors header (tensor {key[:200]!r} {problem})")

    if not isinstance(entry, dict):
        raise bad("is not an object with dtype, shape and data_offsets")
    for name in ("dtype", "shape", "data_offsets"):
        if name not in entry:
            raise bad(f"has no {name!r}")
    code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(code, str) or code not in SAFETENSORS_DTYPES:
        raise bad(f"has unknown dtype {code!r}; safetensors dtypes are {', '.join(SAFETENSORS_DTYPES)}")
    if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
        raise bad(f"has shape {shape!r}; a shape is a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise bad(f"has data_offsets {offsets!r}; they are two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise bad(f"ends (byte {end}) before it begins (byte {begin})")
    name, itemsize = SAFETENSORS_DTYPES[code]
    numel = 1
    for size in shape:  # as the reference: every partial product must fit (and, for torch, int64)
        numel *= size
        if size > _INT64_MAX or numel > _INT64_MAX:
            raise bad(f"has shape {shape}, whose size overflows a 64-bit integer")
    bits = numel * round(itemsize * 8)
    if bits // 8 > _INT64_MAX:
        raise bad(f"has shape {shape} and dtype {code}, whose byte size overflows a 64-bit integer")
    if bits % 8 or end - begin != bits // 8:
        raise bad(f"has shape {shape} and dtype {code} ({bits / 8:g} bytes) but spans {end - begin} bytes")
    return TensorInfo(key, tuple(shape), name), (begin, end, code)


def _check_coverage(path: Path, layout: dict[str, tuple[int, int, str]], data_len: int) -> None:
    """The tensors' byte ranges must tile the data section: no overlap, no alias, no gap, nothing after."""
    position, previous = 0, None
    for key, (begin, end, _) in sorted(layout.items(), key=lambda item: item[1][:2]):
        if begin != position:
            if begin > position:
                why = f"leaves bytes {position}-{begin} unused before tensor {key[:200]!r}"
            else:
                why = f"tensor {key[:200]!r} (bytes {begin}-{end}) overlaps {previous[:200]!r}"
            raise CheckpointError(f"{path}: corrupt safetensors file ({why})")
        position, previous = end, key
    if position > data_len:
        raise CheckpointError(f"{path}: truncated safetensors file (tensor {previous[:200]!r} ends at byte "
                              f"{position} of the data section, which has only {data_len} bytes)")
    if position < data_len:
        raise CheckpointError(f"{path}: corrupt safetensors file ({data_len - position} bytes after the last "
                              "tensor that no header entry describes)")


class SafetensorsShard:
    """One safetensors file, opened lazily (the first :meth:`get`) and read tensor by tensor."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self._infos, self.metadata, self._layout, self._data_start = read_layout(self.path)
        self._handle = None

    def keys(self) -> list[str]:
        return list(self._infos)

    def info(self, key: str) -> TensorInfo:
        return self._infos[key]

    def _open(self):
        if self._handle is None:
            from safetensors import safe_open

            try:
                self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(f"{self.path}: cannot open safetensors file ({exc})") from None
            log.debug("opened %s", self.path)
        return self._handle

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor: a positioned read of its bytes, no memory map (see the module docstring)."""
        info = self._infos[key]
        begin, end, code = self._layout[key]
        dtype = getattr(torch, info.dtype, None)
        if not isinstance(dtype, torch.dtype) or code == "F4":
            return self._get_mapped(key)
        if end == begin:
            return torch.empty(info.shape, dtype=dtype)
        raw = torch.empty(end - begin, dtype=torch.uint8)  # uninitialised: the read fills it once
        try:
            with open(self.path, "rb", buffering=0) as fh:
                fh.seek(self._data_start + begin)
                view, got = memoryview(raw.numpy()), 0
                while got < len(view):
                    n = fh.readinto(view[got:])
                    if not n:
                        raise CheckpointError(f"{self.path}: truncated while reading tensor {key!r}")
                    got += n
        except OSError as exc:
            raise CheckpointError(f"{self.path}: cannot read tensor {key!r} ({exc.strerror or exc})") from None
        return raw.view(dtype).reshape(info.shape)

    def _get_mapped(self, key: str) -> torch.Tensor:
        handle = self._open()
        try:
            return handle.get_tensor(key)
        except Exception as exc:
            raise CheckpointError(f"{self.path}: cannot read tensor {key!r} ({exc})") from None

    def get_slice(self, key: str):
        """safetensors' lazy slice object: ``shard.get_slice(key)[0:128]`` reads only those rows."""
        return self._open().get_slice(key)

    def release(self) -> None:
        """Nothing is cached: each tensor is read from disk when asked for."""

    def close(self) -> None:
        self._handle = None
