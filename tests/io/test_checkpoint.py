"""open_checkpoint over in-memory sources, the Checkpoint interface and iter_tensors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from spectra.errors import CheckpointError
from spectra.io import Checkpoint, TensorInfo, iter_tensors, open_checkpoint
from spectra.layers import natural_key


class TiedLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(12, 6)
        self.block = torch.nn.Linear(6, 6)
        self.lm_head = torch.nn.Linear(6, 12, bias=False)
        self.lm_head.weight = self.embed.weight  # tied


def test_state_dict_source(tiny_state_dict):
    with open_checkpoint(tiny_state_dict) as ckpt:
        assert isinstance(ckpt, Checkpoint)
        assert ckpt.format == "state_dict"
        assert ckpt.path == "<state dict>"
        assert ckpt.keys() == list(tiny_state_dict)
        assert len(ckpt) == len(tiny_state_dict)
        assert "head.weight" in ckpt
        assert ckpt.info("encoder.layers.0.mlp.fc1.weight") == TensorInfo("encoder.layers.0.mlp.fc1.weight", (32, 16), "float32")
        assert [i.key for i in ckpt.infos()] == ckpt.keys()


def test_module_with_tied_weights_counted_once():
    model = TiedLM()
    with open_checkpoint(model) as ckpt:
        assert ckpt.format == "module"
        assert ckpt.path == "<module TiedLM>"
        assert ckpt.keys() == ["embed.weight", "block.weight", "block.bias"]
        assert ckpt.aliases == {"lm_head.weight": "embed.weight"}
        weight = ckpt.get("embed.weight")
        assert not weight.requires_grad
        assert torch.equal(weight, model.embed.weight.detach())


def test_module_keeps_its_own_names_but_state_dict_is_stripped():
    outer = torch.nn.Module()
    outer.model = torch.nn.Linear(2, 2)
    with open_checkpoint(outer) as ckpt:
        assert ckpt.keys() == ["model.weight", "model.bias"]
    with open_checkpoint(outer.state_dict()) as ckpt:
        assert ckpt.keys() == ["weight", "bias"]
    with open_checkpoint(outer, strip_prefix=True) as ckpt:
        assert ckpt.keys() == ["weight", "bias"]


def test_aliases_follow_prefix_stripping():
    w = torch.randn(4, 4)
    with open_checkpoint({"module.emb.weight": w, "module.head.weight": w, "module.fc.weight": torch.randn(4, 4)}) as ckpt:
        assert ckpt.keys() == ["emb.weight", "fc.weight"]
        assert ckpt.aliases == {"head.weight": "emb.weight"}


def test_lightning_dict_in_memory_with_optimizer():
    opt = {"state": {}, "param_groups": [{"lr": 0.5, "params": [0]}]}
    with open_checkpoint({"state_dict": {"net.w": torch.zeros(2, 2)}, "optimizer_states": [opt], "epoch": 2}) as ckpt:
        assert ckpt.keys() == ["net.w"]
        assert ckpt.optimizer_state() == opt


def test_iter_tensors_streams_in_order(tiny_safetensors, tiny_state_dict):
    pairs = list(iter_tensors(tiny_safetensors))
    assert [k for k, _ in pairs] == sorted(tiny_state_dict, key=natural_key)
    assert all(torch.equal(t, tiny_state_dict[k]) for k, t in pairs)


def test_unknown_key_and_bad_source(tiny_state_dict):
    with open_checkpoint(tiny_state_dict) as ckpt:
        with pytest.raises(CheckpointError, match=r"<state dict>: no tensor named 'nope'"):
            ckpt.get("nope")
    with pytest.raises(CheckpointError, match=r"cannot open a int as a checkpoint"):
        open_checkpoint(3)


def test_empty_state_dict():
    with pytest.raises(CheckpointError, match=r"<state dict>: holds no tensors"):
        open_checkpoint({})


def test_every_format_gives_the_same_tensors(tmp_path, tiny_state_dict, tiny_safetensors, tiny_pt):
    """Round trip: the same weights through every entry point read back identically."""
    hf = tmp_path / "hf"
    hf.mkdir()
    save_file(dict(tiny_state_dict), str(hf / "model.safetensors"))
    bins = tmp_path / "bins"
    bins.mkdir()
    torch.save(tiny_state_dict, bins / "pytorch_model.bin")
    sources = [tiny_safetensors, tiny_pt, hf, bins, str(tiny_pt), tiny_state_dict]
    for source in sources:
        with open_checkpoint(source) as ckpt:
            got = dict(ckpt)
        assert set(got) == set(tiny_state_dict), source
        for key, tensor in got.items():
            assert tensor.dtype == tiny_state_dict[key].dtype
            assert torch.equal(tensor, tiny_state_dict[key]), (source, key)


def test_bfloat16_and_float8_dtype_names_from_torch_file(tmp_path):
    path = tmp_path / "mixed.pt"
    torch.save({"a": torch.zeros(2, 2, dtype=torch.bfloat16), "b": torch.zeros(2, 2).to(torch.float8_e4m3fn)}, path)
    with open_checkpoint(path) as ckpt:
        assert [ckpt.info(k).dtype for k in ckpt.keys()] == ["bfloat16", "float8_e4m3fn"]


def test_safetensors_data_under_a_bin_name(tmp_path, tiny_state_dict):
    path = tmp_path / "pytorch_model.bin"
    save_file(dict(tiny_state_dict), str(path))
    with open_checkpoint(path) as ckpt:
        assert ckpt.format == "safetensors"
        assert torch.equal(ckpt.get("head.weight"), tiny_state_dict["head.weight"])
