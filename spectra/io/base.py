"""Shared pieces of the loaders: the tensor description, dtype names and the shard contract.

A checkpoint is one or more *shards* (a safetensors file, a torch file, an in-memory state dict).
Each shard lists its keys and reads one tensor on request; :class:`~spectra.io.checkpoint.Checkpoint`
stitches shards together, orders the keys and renames them (prefix stripping). Nothing here does
math: the loaders only turn bytes into named tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ..errors import CheckpointError

__all__ = ["TensorInfo", "dtype_name", "Shard", "check_file", "unreadable_reason"]


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and dtype of one stored tensor, known without reading its data.

    ``dtype`` is the torch dtype name without the ``torch.`` prefix: ``'float32'``, ``'bfloat16'``,
    ``'int64'``, ``'float8_e4m3fn'``.
    """

    key: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.bfloat16`` -> ``'bfloat16'``.

    >>> dtype_name(torch.float8_e4m3fn)
    'float8_e4m3fn'
    """
    return str(dtype).removeprefix("torch.")


class Shard(Protocol):
    """One file (or in-memory dict) of a checkpoint. Keys are the names as stored in the shard."""

    name: str

    def keys(self) -> list[str]: ...

    def info(self, key: str) -> TensorInfo: ...

    def get(self, key: str) -> torch.Tensor: ...

    def release(self) -> None:
        """Drop cached tensors (the shard can still be read again later)."""

    def close(self) -> None: ...


def unreadable_reason(tensor: torch.Tensor) -> str | None:
    """Why ``tensor`` must not be handed out as weights, or None when it is a dense tensor whose
    elements are all stored.

    A checkpoint can hold a tensor whose logical size dwarfs the bytes behind it: a stride-0
    ``expand()`` of one element saved in a 1.9 KB file is 20000 x 20000 floats (1.6 GB) as soon as
    anything copies it. Peak memory must stay bounded by what is stored, so such views are refused
    before they are materialised, as are tensors without data (``meta``) and sparse layouts.
    """
    if tensor.layout != torch.strided:
        return f"a {str(tensor.layout).removeprefix('torch.')} tensor (only dense tensors are read)"
    if tensor.device.type == "meta":
        return "a meta tensor: it holds no data"
    needed = tensor.numel() * tensor.element_size()
    try:
        stored = tensor.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return "a tensor without readable storage"
    if needed > stored:
        return (f"{tensor.numel():,} elements backed by {stored:,} stored bytes (a stride-0 or overlapping "
                "view); refused instead of expanding it")
    return None


def check_file(path: Path) -> int:
    """Size in bytes of ``path``; CheckpointError if it is missing, unreadable or empty."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied")
    if size == 0:
        raise CheckpointError(f"{path}: file is empty (0 bytes)")
    return size
