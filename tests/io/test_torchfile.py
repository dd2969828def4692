"""torch files: weights-only loading, refusal of full pickles, legacy format, optimizer state."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from spectra.errors import CheckpointError, UnsafeCheckpointError
from spectra.io import open_checkpoint
from spectra.io.torchfile import load_torch_file, unsafe_globals


class _Payload:
    """Unpickling this runs ``os.system`` to create a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 2)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_plain_state_dict_round_trip(tmp_path, tiny_state_dict, suffix):
    path = tmp_path / f"weights{suffix}"
    torch.save(tiny_state_dict, path)
    with open_checkpoint(path) as ckpt:
        assert ckpt.format == "torch"
        assert ckpt.keys() == list(tiny_state_dict)  # stored (module) order is kept
        for key, tensor in ckpt:
            assert torch.equal(tensor, tiny_state_dict[key])
        assert ckpt.info("embeddings.position_ids").dtype == "int64"
        assert ckpt.optimizer_state() is None


def test_tiny_pt_fixture(tiny_pt, tiny_state_dict):
    with open_checkpoint(tiny_pt) as ckpt:
        assert ckpt.info("head.weight").shape == (4, 16)
        assert torch.equal(ckpt.get("head.weight"), tiny_state_dict["head.weight"])


def test_legacy_non_zip_format(tmp_path, tiny_state_dict):
    path = tmp_path / "legacy.pt"
    torch.save(tiny_state_dict, path, _use_new_zipfile_serialization=False)
    with open_checkpoint(path) as ckpt:
        assert torch.equal(ckpt.get("encoder.layers.1.mlp.fc2.weight"), tiny_state_dict["encoder.layers.1.mlp.fc2.weight"])


def test_loads_with_mmap_and_weights_only(tmp_path, tiny_state_dict, monkeypatch):
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    path = tmp_path / "w.pt"
    torch.save(tiny_state_dict, path)
    open_checkpoint(path).close()
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]


def test_malicious_pickle_in_torch_zip_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2, 2), "x": _Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt: is a full pickle.*posix\.system.*--trust-pickle"):
        open_checkpoint(path)
    assert not marker.exists()


def test_malicious_raw_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    with open(path, "wb") as fh:
        pickle.dump({"w": _Payload(str(marker))}, fh, protocol=4)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.bin: is a full pickle.*posix\.system"):
        open_checkpoint(path)
    assert not marker.exists()
    assert unsafe_globals(path, is_zip=False) == ["posix.system"]


def test_full_module_pickle_needs_trust(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    path = tmp_path / "model.pt"
    torch.save(net, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        open_checkpoint(path)
    message = str(info.value)
    assert "TinyNet" in message and "--trust-pickle" in message and str(path) in message
    with open_checkpoint(path, trust_pickle=True) as ckpt:
        assert ckpt.keys() == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
        assert torch.equal(ckpt.get("fc2.weight"), net.fc2.weight.detach())


def test_legacy_full_pickle_refused_then_trusted(tmp_path):
    net = TinyNet()
    path = tmp_path / "legacy_model.pt"
    torch.save(net, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match=r"legacy_model\.pt: is a full pickle.*TinyNet"):
        open_checkpoint(path)
    with open_checkpoint(path, trust_pickle=True) as ckpt:
        assert torch.equal(ckpt.get("fc1.weight"), net.fc1.weight.detach())


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n" * 20)
    with pytest.raises(CheckpointError, match=r"notes\.pt: not a torch checkpoint or safetensors file \(it looks like a text file\)") as info:
        open_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "noise.bin"
    path.write_bytes(bytes((i * 7919 + 13) % 256 for i in range(4096)))
    with pytest.raises(CheckpointError, match=r"noise\.bin: not a torch checkpoint or safetensors file \(neither a zip archive nor a pickle\)") as info:
        open_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_truncated_zip(tmp_path, tiny_pt):
    data = tiny_pt.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt: a corrupt or truncated torch file \("):
        open_checkpoint(path)


def test_empty_torch_file(tmp_path):
    path = tmp_path / "empty.ckpt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.ckpt: file is empty"):
        open_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such file or directory"):
        open_checkpoint(tmp_path / "nope.pt")


def test_no_tensors(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "hyper_parameters": {"lr": 0.1}}, path)
    with pytest.raises(CheckpointError, match=r"meta\.pt: holds no tensors \(top-level keys: epoch, hyper_parameters\)"):
        open_checkpoint(path)


def test_single_tensor_is_not_a_state_dict(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match=r"t\.pt: holds a single tensor"):
        open_checkpoint(path)


def test_lightning_ckpt_unwrapped_with_optimizer_state(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = net.fc2(net.fc1(torch.randn(3, 4))).sum()
    loss.backward()
    opt.step()
    state = {f"net.{k}": v for k, v in net.state_dict().items()}  # LightningModule with self.net
    path = tmp_path / "epoch=1-step=10.ckpt"
    torch.save({
        "epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.4.0",
        "state_dict": state, "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
        "hyper_parameters": {"lr": 1e-3},
    }, path)
    with open_checkpoint(path) as ckpt:
        assert ckpt.keys() == list(state)  # 'net.' is part of the module path: kept
        assert ckpt.stripped_prefix == ""
        opt_state = ckpt.optimizer_state()
    assert opt_state is not None
    assert opt_state["param_groups"][0]["lr"] == 1e-3
    assert torch.equal(opt_state["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_lightning_model_prefix_stripped_when_on_every_key(tmp_path, tiny_state_dict):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in tiny_state_dict.items()}, "epoch": 0}, path)
    with open_checkpoint(path) as ckpt:
        assert ckpt.keys() == list(tiny_state_dict)
        assert ckpt.stripped_prefix == "model."
    with open_checkpoint(path, strip_prefix=False) as ckpt:
        assert ckpt.keys()[0] == "model.embeddings.word_embeddings.weight"


@pytest.mark.parametrize("wrapper", ["model", "model_state_dict", "module", "network"])
def test_training_script_wrappers(tmp_path, tiny_state_dict, wrapper):
    path = tmp_path / "ck.pt"
    torch.save({wrapper: tiny_state_dict, "epoch": 4, "optimizer": {"state": {}, "param_groups": []}}, path)
    with open_checkpoint(path) as ckpt:
        assert ckpt.keys() == list(tiny_state_dict)
        assert ckpt.optimizer_state() == {"state": {}, "param_groups": []}


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_ddp_and_compile_prefixes_stripped(tmp_path, tiny_state_dict, prefix):
    path = tmp_path / "ddp.pt"
    torch.save({f"{prefix}{k}": v for k, v in tiny_state_dict.items()}, path)
    with open_checkpoint(path) as ckpt:
        assert ckpt.keys() == list(tiny_state_dict)
        assert ckpt.stripped_prefix == prefix
        assert torch.equal(ckpt.get("head.weight"), tiny_state_dict["head.weight"])


def test_tied_weights_in_file_counted_once(tmp_path):
    emb = torch.randn(10, 4)
    path = tmp_path / "tied.pt"
    torch.save({"embed.weight": emb, "mid.weight": torch.randn(4, 4), "lm_head.weight": emb}, path)
    with open_checkpoint(path) as ckpt:
        assert ckpt.keys() == ["embed.weight", "mid.weight"]
        assert ckpt.aliases == {"lm_head.weight": "embed.weight"}


def test_load_torch_file_refuses_and_trusts(tmp_path):
    path = tmp_path / "net.pt"
    torch.save(TinyNet(), path)
    with pytest.raises(UnsafeCheckpointError):
        load_torch_file(path)
    assert isinstance(load_torch_file(path, trust_pickle=True), TinyNet)


# -- memory-mapped files: pages leave RSS once a tensor is dropped ---------------------------------
def _resident_kib(path) -> int:
    """Resident KiB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    target, total, inside = os.path.realpath(path), 0, False
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            head = line.split(None, 5)
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):  # a mapping's first line
                inside = len(head) == 6 and head[5].strip() == target
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


linux_only = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")


@linux_only
def test_streaming_a_torch_file_does_not_keep_it_resident(tmp_path):
    gen = torch.Generator().manual_seed(0)
    state = {f"layers.{i}.weight": torch.randn(1024, 1024, generator=gen) for i in range(16)}  # 64 MiB
    path = tmp_path / "big.pt"
    torch.save(state, path)
    expected = {k: float(v.double().sum()) for k, v in state.items()}
    del state
    with open_checkpoint(path) as ckpt:
        peak = 0
        for key, tensor in ckpt:
            assert float(tensor.double().sum()) == expected[key]  # every page read
            del tensor
            peak = max(peak, _resident_kib(path))
        grown = _resident_kib(path)
        again = ckpt.get("layers.0.weight")  # released pages fault in again from the file
        assert float(again.double().sum()) == expected["layers.0.weight"]
    assert peak < 8 * 1024 and grown < 8 * 1024, f"{peak} KiB of a 64 MiB file stayed resident while streaming it"


@linux_only
def test_only_tensors_inside_the_file_mapping_are_wrapped(tmp_path):
    from spectra._memory import file_mappings, release_pages_when_dropped

    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(512, 1024)}, path)
    loaded = torch.load(path, mmap=True, weights_only=True)
    ranges = file_mappings(path)
    assert ranges
    inside = release_pages_when_dropped(loaded["w"], ranges)
    assert inside is not loaded["w"] and inside.data_ptr() == loaded["w"].data_ptr()
    anonymous = torch.ones(512, 1024)  # the same call on anonymous memory would zero it: never wrapped
    assert release_pages_when_dropped(anonymous, ranges) is anonymous
    del inside
    assert float(loaded["w"].sum()) == 512 * 1024  # the mapping still reads the file
