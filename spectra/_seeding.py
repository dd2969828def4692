"""Random streams derived from a seed and names, so results do not depend on processing order.

A layer's bootstrap draws and shuffles come from ``stream(seed, purpose, layer_name)``: the same
weights give the same numbers whether they are read from a ``.bin`` or a ``.safetensors`` file, in
any order, in one process or split across torch.distributed ranks. The seed of the stream is a
stable hash (BLAKE2b of the labels; Python's ``hash`` of a string changes between processes).
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "stream"]


def derive_seed(seed: int, *labels: str) -> int:
    """A 63-bit seed from ``seed`` and ``labels``, the same in every process and on every platform.

    >>> derive_seed(0, "bootstrap", "encoder.layer.0.attention.self.query")
    953809642649630850
    """
    text = "\0".join([str(int(seed)), *labels]).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & (2**63 - 1)


def stream(seed: int, *labels: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, *labels))
