"""Shared fixtures: tiny checkpoints written to ``tmp_path``, and the ``gpu`` marker's skip.

``tiny_state_dict`` is a small transformer-like state dict (seeded, float32 unless noted):

* ``embeddings.word_embeddings.weight`` (64, 16), ``embeddings.position_embeddings.weight``
  (16, 16), ``embeddings.LayerNorm.{weight,bias}`` (16,), ``embeddings.position_ids`` int64 (1, 16)
* ``encoder.layers.{0,1}.attention.{q,k,v,o}.{weight (16, 16), bias (16,)}``,
  ``encoder.layers.{i}.mlp.fc1`` (32, 16) + bias, ``mlp.fc2`` (16, 32) + bias,
  ``encoder.layers.{i}.ln1/ln2.{weight,bias}`` (16,)
* ``head.weight`` (4, 16), ``head.bias`` (4,)

``tiny_safetensors`` and ``tiny_pt`` are that dict written as ``model.safetensors`` and
``model.pt`` (plain ``torch.save`` of the dict) and return the path.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

HIDDEN, FFN, VOCAB, POSITIONS, CLASSES, BLOCKS = 16, 32, 64, 16, 4, 2


def _tiny_state_dict(seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) / shape[-1] ** 0.5

    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    sd["embeddings.word_embeddings.weight"] = randn(VOCAB, HIDDEN)
    sd["embeddings.position_embeddings.weight"] = randn(POSITIONS, HIDDEN)
    sd["embeddings.LayerNorm.weight"] = torch.ones(HIDDEN)
    sd["embeddings.LayerNorm.bias"] = torch.zeros(HIDDEN)
    sd["embeddings.position_ids"] = torch.arange(POSITIONS, dtype=torch.int64).unsqueeze(0)
    for i in range(BLOCKS):
        p = f"encoder.layers.{i}"
        for proj in ("q", "k", "v", "o"):
            sd[f"{p}.attention.{proj}.weight"] = randn(HIDDEN, HIDDEN)
            sd[f"{p}.attention.{proj}.bias"] = randn(HIDDEN)
        sd[f"{p}.ln1.weight"] = torch.ones(HIDDEN)
        sd[f"{p}.ln1.bias"] = torch.zeros(HIDDEN)
        sd[f"{p}.mlp.fc1.weight"] = randn(FFN, HIDDEN)
        sd[f"{p}.mlp.fc1.bias"] = randn(FFN)
        sd[f"{p}.mlp.fc2.weight"] = randn(HIDDEN, FFN)
        sd[f"{p}.mlp.fc2.bias"] = randn(HIDDEN)
        sd[f"{p}.ln2.weight"] = torch.ones(HIDDEN)
        sd[f"{p}.ln2.bias"] = torch.zeros(HIDDEN)
    sd["head.weight"] = randn(CLASSES, HIDDEN)
    sd["head.bias"] = torch.zeros(CLASSES)
    return sd


@pytest.fixture
def tiny_state_dict() -> "OrderedDict[str, torch.Tensor]":
    """A fresh, seeded, transformer-like state dict (see the module docstring for its keys)."""
    return _tiny_state_dict()


@pytest.fixture
def tiny_safetensors(tmp_path, tiny_state_dict):
    """``tiny_state_dict`` saved as ``tmp_path/model.safetensors``; returns the path."""
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(dict(tiny_state_dict), str(path))
    return path


@pytest.fixture
def tiny_pt(tmp_path, tiny_state_dict):
    """``tiny_state_dict`` saved with ``torch.save`` as ``tmp_path/model.pt``; returns the path."""
    path = tmp_path / "model.pt"
    torch.save(tiny_state_dict, path)
    return path


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
